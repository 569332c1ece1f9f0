//! CI baselines: recorded figures of a few cases, compared within a tolerance.
//!
//! Owns: the baseline file (TOML, `[[case]]` tables with an `expect` table),
//! its validation (errors name the file and field), the comparison of fresh
//! figures against it, the Markdown diff table and the updated baseline text
//! ([`Baseline::updated_text`]: the figures set in place with `toml_edit`, so
//! the user's comments and layout survive, and `[case.expect]` tables made
//! for cases that have none yet — a baseline can start as a list of cases).
//! Must not: run the cases (the CLI does) or write files.

use crate::sweep::WafersSpec;
use crate::table::Table;
use crate::ReportError;
use serde::{Deserialize, Serialize};
use wafer_ir::limits::{MAX_BATCH, MAX_CONTEXT, MAX_WAFERS};

/// Default tolerance, percent, when neither the file nor `--tolerance` gives one.
pub const DEFAULT_TOLERANCE_PCT: f64 = 1.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Allowed relative change of every figure, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_pct: Option<f64>,
    #[serde(default)]
    pub case: Vec<Case>,
}

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub model: String,
    #[serde(default = "default_arch")]
    pub arch: String,
    pub context: u64,
    #[serde(default = "one")]
    pub batch: u64,
    /// A number, `auto` or `arch`.
    #[serde(default = "default_wafers")]
    pub wafers: WafersSpec,
    #[serde(default = "default_engine")]
    pub engine: String,
    /// With a prompt, the case also records the time to first token of
    /// `prompt` tokens streamed through the mapping (`ttft_us`); `context`
    /// stays the decode step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<u64>,
    /// Absent (empty) until `--update` records it.
    #[serde(default)]
    pub expect: Figures,
}

fn default_arch() -> String {
    "wse3".into()
}
fn one() -> u64 {
    1
}
fn default_wafers() -> WafersSpec {
    WafersSpec::Word("auto".into())
}
fn default_engine() -> String {
    "analytical".into()
}

/// The figures a case records; absent ones are not checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pes_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wafers_used: Option<u32>,
    /// Time to first token, µs (cases with a `prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<f64>,
}

/// Whether a larger value of a figure is better.
fn higher_is_better(figure: &str) -> bool {
    figure == "tokens_per_s"
}

impl Figures {
    /// (name, value) of the figures present, in a fixed order.
    pub fn list(&self) -> Vec<(&'static str, f64)> {
        let mut v = Vec::new();
        if let Some(x) = self.tpot_us {
            v.push(("tpot_us", x));
        }
        if let Some(x) = self.tokens_per_s {
            v.push(("tokens_per_s", x));
        }
        if let Some(x) = self.cycles {
            v.push(("cycles", x));
        }
        if let Some(x) = self.pes_used {
            v.push(("pes_used", x as f64));
        }
        if let Some(x) = self.wafers_used {
            v.push(("wafers_used", x as f64));
        }
        if let Some(x) = self.ttft_us {
            v.push(("ttft_us", x));
        }
        v
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.list().into_iter().find(|(n, _)| *n == name).map(|p| p.1)
    }
}

fn bad(source: &str, message: String) -> ReportError {
    ReportError::Spec { source_name: source.into(), message }
}

impl Case {
    /// `name`, or `model@context` when unnamed.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("{} @ {} on {}", self.model, self.context, self.arch)
        } else {
            self.name.clone()
        }
    }
}

impl Baseline {
    pub fn from_toml(text: &str, source: &str) -> Result<Baseline, ReportError> {
        let b: Baseline = toml::from_str(text)
            .map_err(|e| bad(source, format!("not a valid baseline: {}", e.to_string().trim_end())))?;
        if let Some(t) = b.tolerance_pct {
            if !(t.is_finite() && (0.0..=100.0).contains(&t)) {
                return Err(bad(source, format!("field `tolerance_pct` is {t}; allowed: 0..=100")));
            }
        }
        if b.case.is_empty() {
            return Err(bad(source, "no `[[case]]` tables: a baseline needs at least one case".into()));
        }
        for (i, c) in b.case.iter().enumerate() {
            let at = |f: &str| format!("case[{i}] ({}): field `{f}`", c.label());
            if !(1..=MAX_CONTEXT).contains(&c.context) {
                return Err(bad(source, format!("{} is {}; allowed: 1..={MAX_CONTEXT}", at("context"), c.context)));
            }
            if !(1..=MAX_BATCH).contains(&c.batch) {
                return Err(bad(source, format!("{} is {}; allowed: 1..={MAX_BATCH}", at("batch"), c.batch)));
            }
            if let Some(n) = c.prompt {
                if !(1..=MAX_CONTEXT).contains(&n) {
                    return Err(bad(source, format!("{} is {n}; allowed: 1..={MAX_CONTEXT}", at("prompt"))));
                }
            }
            match &c.wafers {
                WafersSpec::Count(n) if !(1..=MAX_WAFERS).contains(n) => {
                    return Err(bad(
                        source,
                        format!("{} is {n}; allowed: 1..={MAX_WAFERS}, \"auto\" or \"arch\"", at("wafers")),
                    ))
                }
                WafersSpec::Word(w) if w != "auto" && w != "arch" => {
                    return Err(bad(
                        source,
                        format!("{} is \"{w}\"; allowed: 1..={MAX_WAFERS}, \"auto\" or \"arch\"", at("wafers")),
                    ))
                }
                _ => {}
            }
            if let Some((f, v)) = c.expect.list().into_iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
                return Err(bad(source, format!("{} is {v}; allowed: a number >= 0", at(&format!("expect.{f}")))));
            }
        }
        Ok(b)
    }

    /// Fails for a case that records no figure (checking needs one; `--update` does not).
    pub fn require_figures(&self, source: &str) -> Result<(), ReportError> {
        for (i, c) in self.case.iter().enumerate() {
            if c.expect.list().is_empty() {
                return Err(bad(
                    source,
                    format!(
                        "case[{i}] ({}): field `expect` records no figure; give tpot_us, tokens_per_s, cycles, \
                         pes_used, wafers_used or ttft_us, or record them with `wafer check --baseline {source} --update`",
                        c.label()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `text` (the file this baseline was parsed from) with every case's
    /// `[case.expect]` set to its `current` figures (all of them), made where
    /// absent; comments, order and layout are kept, as are a value's trailing comment.
    pub fn updated_text(&self, text: &str, current: &[Result<Figures, String>]) -> Result<String, String> {
        use toml_edit::{value, DocumentMut, Item, Table, Value};
        let mut doc: DocumentMut = text.parse().map_err(|e| format!("not a valid baseline: {e}"))?;
        let cases = doc
            .get_mut("case")
            .and_then(Item::as_array_of_tables_mut)
            .filter(|c| c.len() == self.case.len())
            .ok_or("the baseline's `[[case]]` tables changed while it ran")?;
        for ((t, c), r) in cases.iter_mut().zip(&self.case).zip(current) {
            let f = r
                .as_ref()
                .map_err(|e| format!("case `{}` failed, so the baseline cannot record it: {e}", c.label()))?;
            if !t.contains_key("expect") {
                t.insert("expect", Item::Table(Table::new()));
            }
            let e = t
                .get_mut("expect")
                .and_then(Item::as_table_like_mut)
                .ok_or_else(|| format!("case `{}`: field `expect` is not a table", c.label()))?;
            let figures: [(&str, Option<Value>); 6] = [
                ("tpot_us", f.tpot_us.map(Value::from)),
                ("tokens_per_s", f.tokens_per_s.map(Value::from)),
                ("cycles", f.cycles.map(Value::from)),
                ("pes_used", f.pes_used.map(|x| Value::from(x as i64))),
                ("wafers_used", f.wafers_used.map(|x| Value::from(x as i64))),
                ("ttft_us", f.ttft_us.map(Value::from)),
            ];
            for (k, v) in figures {
                let Some(v) = v else { continue };
                match e.get_mut(k).and_then(Item::as_value_mut) {
                    Some(old) => {
                        let decor = old.decor().clone();
                        *old = v;
                        *old.decor_mut() = decor;
                    }
                    None => {
                        e.insert(k, value(v));
                    }
                }
            }
        }
        Ok(doc.to_string())
    }

    /// The file text: a header saying what it is, then the cases.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("baselines serialise");
        format!(
            "# wafer check baseline: re-run with `wafer check --baseline FILE`; record new figures with `--update`.\n\
             # Each [[case]] is one run; [case.expect] holds the figures it must reproduce within tolerance_pct.\n\n{body}"
        )
    }

    /// This baseline with every case's figures replaced by `current` (all five recorded).
    pub fn updated(&self, current: &[Result<Figures, String>]) -> Result<Baseline, String> {
        let mut b = self.clone();
        for (c, r) in b.case.iter_mut().zip(current) {
            match r {
                Ok(f) => c.expect = f.clone(),
                Err(e) => return Err(format!("case `{}` failed, so the baseline cannot record it: {e}", c.label())),
            }
        }
        Ok(b)
    }
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    pub case: String,
    pub figure: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// Relative change, percent (None when the case failed).
    pub change_pct: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Beyond tolerance in the bad direction.
    Worse,
    /// Beyond tolerance in the good direction: record it with `--update`.
    Better,
    /// The case no longer runs.
    Failed,
}

impl Verdict {
    pub fn passes(self) -> bool {
        self == Verdict::Ok
    }
    fn text(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Worse => "REGRESSED",
            Verdict::Better => "improved (run --update)",
            Verdict::Failed => "FAILED",
        }
    }
}

/// Compares each case's `current` figures with the recorded ones.
pub fn compare(b: &Baseline, current: &[Result<Figures, String>], tolerance_pct: f64) -> Vec<Diff> {
    let mut out = Vec::new();
    for (c, r) in b.case.iter().zip(current) {
        for (figure, old) in c.expect.list() {
            let d = match r {
                Err(e) => Diff {
                    case: c.label(),
                    figure: format!("{figure} ({e})"),
                    baseline: Some(old),
                    current: None,
                    change_pct: None,
                    verdict: Verdict::Failed,
                },
                Ok(f) => {
                    let new = f.get(figure).unwrap_or(f64::NAN);
                    let change = if old == 0.0 {
                        if new == 0.0 {
                            0.0
                        } else {
                            f64::INFINITY * new.signum()
                        }
                    } else {
                        100.0 * (new - old) / old.abs()
                    };
                    let verdict = if change.abs() <= tolerance_pct {
                        Verdict::Ok
                    } else if (change > 0.0) == higher_is_better(figure) {
                        Verdict::Better
                    } else {
                        Verdict::Worse
                    };
                    let verdict = if new.is_nan() { Verdict::Failed } else { verdict };
                    Diff {
                        case: c.label(),
                        figure: figure.into(),
                        baseline: Some(old),
                        current: Some(new),
                        change_pct: Some(change),
                        verdict,
                    }
                }
            };
            out.push(d);
        }
    }
    out
}

/// The diff as a Markdown report: a verdict line and one row per figure.
pub fn diff_markdown(diffs: &[Diff], tolerance_pct: f64, source: &str) -> String {
    let failing = diffs.iter().filter(|d| !d.verdict.passes()).count();
    let mut out = if failing == 0 {
        format!("### wafer check: all {} figures within {tolerance_pct}% of `{source}`\n\n", diffs.len())
    } else {
        format!("### wafer check: {failing} of {} figures outside {tolerance_pct}% of `{source}`\n\n", diffs.len())
    };
    let mut t = Table::new(&["case", "figure", ">baseline", ">current", ">change", "verdict"]);
    let fmt = |x: Option<f64>| {
        x.map_or("-".to_string(), |v| {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{v:.0}")
            } else {
                format!("{v:.3}")
            }
        })
    };
    for d in diffs {
        t.row([
            d.case.clone(),
            d.figure.clone(),
            fmt(d.baseline),
            fmt(d.current),
            d.change_pct.map_or("-".into(), |c| format!("{c:+.2}%")),
            d.verdict.text().to_string(),
        ]);
    }
    out += &t.to_markdown();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
tolerance_pct = 2.0
[[case]]
model = "gpt2"
context = 128
[case.expect]
tpot_us = 100.0
tokens_per_s = 10000.0
pes_used = 50
"#;

    fn figs(tpot: f64, pes: u64) -> Figures {
        Figures {
            tpot_us: Some(tpot),
            tokens_per_s: Some(1e6 / tpot),
            cycles: Some(1.0),
            pes_used: Some(pes),
            wafers_used: Some(1),
            ttft_us: None,
        }
    }

    #[test]
    fn within_tolerance_passes_and_beyond_fails_by_direction() {
        let b = Baseline::from_toml(GOOD, "b.toml").unwrap();
        assert_eq!(b.case[0].arch, "wse3");
        let d = compare(&b, &[Ok(figs(101.0, 50))], 2.0);
        assert!(d.iter().all(|x| x.verdict.passes()), "{d:?}");
        let d = compare(&b, &[Ok(figs(110.0, 50))], 2.0);
        assert_eq!(d[0].verdict, Verdict::Worse);
        assert_eq!(d[1].verdict, Verdict::Worse); // fewer tokens/s
        let d = compare(&b, &[Ok(figs(90.0, 40))], 2.0);
        assert_eq!(d[0].verdict, Verdict::Better);
        assert_eq!(d[2].verdict, Verdict::Better);
        let d = compare(&b, &[Err("does not fit".into())], 2.0);
        assert!(d.iter().all(|x| x.verdict == Verdict::Failed));
        let md = diff_markdown(&compare(&b, &[Ok(figs(110.0, 50))], 2.0), 2.0, "b.toml");
        assert!(md.contains("REGRESSED") && md.contains("+10.00%") && md.contains("| case |"), "{md}");
    }

    #[test]
    fn malformed_baselines_name_file_and_field() {
        for (text, needle) in [
            ("[[case]]\nmodel = \"gpt2\"\ncontext = 1\n[case.expect]\ntpot = 1.0\n", "tpot"),
            ("[[case]]\nmodel = \"gpt2\"\ncontext = 0\n[case.expect]\ntpot_us = 1.0\n", "context"),
            ("[[case]]\nmodel = \"gpt2\"\ncontext = 5\n[case.expect]\ntpot_us = \"fast\"\n", "tpot_us"),
            (
                "tolerance_pct = -1\n[[case]]\nmodel = \"gpt2\"\ncontext = 5\n[case.expect]\ntpot_us = 1.0\n",
                "tolerance_pct",
            ),
            ("", "case"),
        ] {
            let e = Baseline::from_toml(text, "base.toml").unwrap_err().to_string();
            assert!(e.contains("base.toml") && e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn update_round_trips() {
        let b = Baseline::from_toml(GOOD, "b.toml").unwrap();
        let u = b.updated(&[Ok(figs(120.0, 60))]).unwrap();
        let again = Baseline::from_toml(&u.to_toml(), "u.toml").unwrap();
        assert_eq!(again, u);
        assert_eq!(again.case[0].expect.pes_used, Some(60));
        assert!(b.updated(&[Err("x".into())]).is_err());
    }

    #[test]
    fn a_case_without_figures_parses_but_cannot_be_checked() {
        for text in
            ["[[case]]\nmodel = \"gpt2\"\ncontext = 1\n[case.expect]\n", "[[case]]\nmodel = \"gpt2\"\ncontext = 1\n"]
        {
            let b = Baseline::from_toml(text, "base.toml").unwrap();
            let e = b.require_figures("base.toml").unwrap_err().to_string();
            assert!(
                e.contains("base.toml") && e.contains("`expect` records no figure") && e.contains("--update"),
                "{e}"
            );
        }
    }

    #[test]
    fn updating_keeps_comments_and_layout_and_records_cases_that_had_no_figures() {
        let text = "# my baseline: keep this\ntolerance_pct = 2.0 # loose on purpose\n\n\
                    [[case]] # first\nmodel = \"gpt2\"\ncontext = 64\n[case.expect]\ntpot_us = 1.0 # was a guess\n\n\
                    # a new case, no figures yet\n[[case]]\nmodel = \"gpt2\"\ncontext = 128\n\n\
                    [[case]]\nname = \"third\"\nmodel = \"gpt2\"\ncontext = 256\n";
        let b = Baseline::from_toml(text, "b.toml").unwrap();
        let out = b.updated_text(text, &[Ok(figs(120.0, 60)), Ok(figs(130.0, 70)), Ok(figs(140.0, 80))]).unwrap();
        for kept in [
            "# my baseline: keep this",
            "# loose on purpose",
            "[[case]] # first",
            "# was a guess",
            "# a new case, no figures yet",
        ] {
            assert!(out.contains(kept), "lost `{kept}`:\n{out}");
        }
        assert!(out.contains("tpot_us = 120.0 # was a guess"), "{out}");
        let again = Baseline::from_toml(&out, "b.toml").unwrap();
        let got: Vec<(u64, Option<f64>, Option<u64>)> =
            again.case.iter().map(|c| (c.context, c.expect.tpot_us, c.expect.pes_used)).collect();
        assert_eq!(got, vec![(64, Some(120.0), Some(60)), (128, Some(130.0), Some(70)), (256, Some(140.0), Some(80))]);
        assert_eq!(again.case[2].name, "third");
        assert!(b
            .updated_text(text, &[Ok(figs(1.0, 1)), Err("boom".into()), Ok(figs(1.0, 1))])
            .unwrap_err()
            .contains("boom"));
    }
}

//! CI baselines: recorded figures of a few cases, compared within a tolerance.
//!
//! Owns: the baseline file (TOML, `[[case]]` tables with an `expect` table),
//! its validation (errors name the file and field), the comparison of fresh
//! figures against it, the Markdown diff table and the updated baseline.
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
            if c.expect.list().is_empty() {
                return Err(bad(
                    source,
                    format!(
                        "{} records no figure; give tpot_us, tokens_per_s, cycles, pes_used or wafers_used",
                        at("expect")
                    ),
                ));
            }
            if let Some((f, v)) = c.expect.list().into_iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
                return Err(bad(source, format!("{} is {v}; allowed: a number >= 0", at(&format!("expect.{f}")))));
            }
        }
        Ok(b)
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
            ("[[case]]\nmodel = \"gpt2\"\ncontext = 1\n[case.expect]\n", "expect"),
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
}

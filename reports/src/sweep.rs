//! Sweeps: a grid of design points, its shards, its result rows and their files.
//!
//! Owns: the spec (TOML), its expansion into points in one fixed order,
//! arch-field overrides by dotted path (`pe.sram_bytes`, `router.link_bytes_per_cycle`, …),
//! shard selection (`I/N`: points whose index is `I` mod `N`), the row of figures
//! per point, merging shards, and the output files (CSV, JSON, Markdown, HTML,
//! curves). Must not: compile or simulate points (the CLI evaluates them) or
//! write files.
//!
//! Determinism: rows are keyed by point index and always emitted in index
//! order; nothing depends on threads or time, so shards merged give the same
//! bytes as one unsharded run.

use crate::charts::Curves;
use crate::doc::Doc;
use crate::folder::OutFile;
use crate::table::Table;
use crate::ReportError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use wafer_ir::limits::{MAX_BATCH, MAX_CONTEXT, MAX_WAFERS};
use wafer_ir::ArchSpec;

/// Bumped whenever a field of `sweep.json` changes meaning or disappears.
pub const SWEEP_SCHEMA_VERSION: u32 = 1;

/// `[plot]`: which figure against which swept dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotSpec {
    /// A numeric swept dimension: an arch field path, `context`, `batch` or `wafers`.
    pub x: Option<String>,
    /// Figures to plot, one chart each (default: tokens_per_s and tpot_us).
    #[serde(default)]
    pub y: Vec<String>,
}

/// A sweep spec, as written in TOML. Every list is a dimension of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    #[serde(default)]
    pub name: String,
    /// `analytical` (the sweep default) or another engine `wafer run --engine` knows; `--engine` overrides.
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    /// Base machines: presets (`wse3`, `mesh:64x64`) or TOML files.
    #[serde(default = "default_archs")]
    pub archs: Vec<String>,
    #[serde(default = "default_contexts")]
    pub contexts: Vec<u64>,
    #[serde(default = "default_batches")]
    pub batches: Vec<u64>,
    /// Wafer counts: numbers, `auto` (the fewest that hold the model) or `arch` (the arch's `system.wafers`).
    #[serde(default = "default_wafers")]
    pub wafers: Vec<WafersSpec>,
    /// GPU baselines: `PRESET` (fewest GPUs that hold the model), `PRESET:N`, or a TOML path; empty for none.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// Arch fields to sweep, by dotted path, each with its values.
    #[serde(default)]
    pub arch: BTreeMap<String, Vec<toml::Value>>,
    /// Prompt lengths: each point also times the first answer token's wait,
    /// the prompt being the last N of the point's `context − 1` positions
    /// (the rest cached), as `wafer run --prompt N --cached context−N−1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<u64>,
    #[serde(default)]
    pub plot: Option<PlotSpec>,
}

fn default_models() -> Vec<String> {
    vec!["llama-3.1-8b".into()]
}
fn default_archs() -> Vec<String> {
    vec!["wse3".into()]
}
fn default_contexts() -> Vec<u64> {
    vec![4096]
}
fn default_batches() -> Vec<u64> {
    vec![1]
}
fn default_wafers() -> Vec<WafersSpec> {
    vec![WafersSpec::Word("arch".into())]
}

/// A wafer count in a spec: a number or a word (`auto`, `arch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WafersSpec {
    Count(u32),
    Word(String),
}

impl std::fmt::Display for WafersSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WafersSpec::Count(n) => write!(f, "{n}"),
            WafersSpec::Word(w) => write!(f, "{w}"),
        }
    }
}

/// One design point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub index: usize,
    pub model: String,
    pub arch: String,
    pub context: u64,
    pub batch: u64,
    pub wafers: WafersSpec,
    pub gpu: Option<String>,
    /// Arch overrides in path order.
    pub params: Vec<(String, toml::Value)>,
    /// Prompt length, when the spec sweeps `prompts`.
    pub prompt: Option<u64>,
}

/// `I/N`: this run computes the points whose index is `I` mod `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard is `{s}`; expected I/N with 0 <= I < N, e.g. 3/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse::<u32>().map_err(|_| bad())?, n.trim().parse::<u32>().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub fn holds(&self, index: usize) -> bool {
        index % self.count as usize == self.index as usize
    }
}

fn spec_err(source: &str, message: impl Into<String>) -> ReportError {
    ReportError::Spec { source_name: source.into(), message: message.into() }
}

impl SweepSpec {
    /// Parses and checks a spec; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<SweepSpec, ReportError> {
        let s: SweepSpec =
            toml::from_str(text).map_err(|e| spec_err(source, format!("not a valid sweep spec: {e}")))?;
        for (field, empty) in [
            ("models", s.models.is_empty()),
            ("archs", s.archs.is_empty()),
            ("contexts", s.contexts.is_empty()),
            ("batches", s.batches.is_empty()),
            ("wafers", s.wafers.is_empty()),
        ] {
            if empty {
                return Err(spec_err(source, format!("field `{field}` is empty; give at least one value")));
            }
        }
        if let Some(c) = s.contexts.iter().find(|c| !(1..=MAX_CONTEXT).contains(*c)) {
            return Err(spec_err(source, format!("field `contexts` holds {c}; allowed: 1..={MAX_CONTEXT}")));
        }
        if let Some(b) = s.batches.iter().find(|b| !(1..=MAX_BATCH).contains(*b)) {
            return Err(spec_err(source, format!("field `batches` holds {b}; allowed: 1..={MAX_BATCH}")));
        }
        if let Some(n) = s.prompts.iter().find(|n| !(1..MAX_CONTEXT).contains(*n)) {
            return Err(spec_err(
                source,
                format!("field `prompts` holds {n}; allowed: 1..={} (and below each point's context)", MAX_CONTEXT - 1),
            ));
        }
        for w in &s.wafers {
            match w {
                WafersSpec::Count(n) if !(1..=MAX_WAFERS).contains(n) => {
                    return Err(spec_err(
                        source,
                        format!("field `wafers` holds {n}; allowed: 1..={MAX_WAFERS}, \"auto\" or \"arch\""),
                    ))
                }
                WafersSpec::Word(x) if x != "auto" && x != "arch" => {
                    return Err(spec_err(
                        source,
                        format!("field `wafers` holds \"{x}\"; allowed: 1..={MAX_WAFERS}, \"auto\" or \"arch\""),
                    ))
                }
                _ => {}
            }
        }
        for (k, v) in &s.arch {
            if v.is_empty() {
                return Err(spec_err(source, format!("field `arch.\"{k}\"` is empty; give at least one value")));
            }
            if v.iter().any(|x| !(x.is_integer() || x.is_float() || x.is_bool() || x.is_str())) {
                return Err(spec_err(
                    source,
                    format!("field `arch.\"{k}\"`: values must be numbers, booleans or strings"),
                ));
            }
        }
        if let Some(x) = s.plot.as_ref().and_then(|p| p.x.as_ref()) {
            if !(s.arch.contains_key(x) || ["context", "batch", "wafers", "prompt"].contains(&x.as_str())) {
                return Err(spec_err(
                    source,
                    format!("field `plot.x` is `{x}`; allowed: context, batch, wafers, prompt or a swept arch field"),
                ));
            }
        }
        for y in s.plot.iter().flat_map(|p| &p.y) {
            if !Figures::NAMES.contains(&y.as_str()) {
                return Err(spec_err(
                    source,
                    format!("field `plot.y` holds `{y}`; allowed: {}", Figures::NAMES.join(", ")),
                ));
            }
        }
        // A spec that names no dimension would silently run the default point.
        let dims = ["models", "archs", "contexts", "batches", "wafers", "gpus", "arch", "prompts"];
        let given: toml::Table = toml::from_str(text).unwrap_or_default();
        if !dims.iter().any(|d| given.contains_key(*d)) {
            return Err(spec_err(
                source,
                "names nothing to sweep: give at least one of `models`, `archs`, `contexts`, `batches`, \
                 `wafers`, `gpus`, `prompts` or an `[arch]` field (the others default to models = [\"llama-3.1-8b\"], \
                 archs = [\"wse3\"], contexts = [4096], batches = [1], wafers = [\"arch\"])",
            ));
        }
        Ok(s)
    }

    /// The size of each dimension of the grid, slowest first: model, context,
    /// batch, arch, each swept arch field (in path order), wafers, GPU, prompt.
    fn radices(&self) -> Vec<usize> {
        let mut r = vec![self.models.len(), self.contexts.len(), self.batches.len(), self.archs.len()];
        r.extend(self.arch.values().map(Vec::len));
        r.push(self.wafers.len());
        r.push(self.gpus.len().max(1));
        r.push(self.prompts.len().max(1));
        r
    }

    /// Points in the whole grid, or `None` when the count does not fit in 64 bits.
    pub fn grid_len(&self) -> Option<u64> {
        self.radices().iter().try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
    }

    /// Checks the grid's size: above [`MAX_GRID_POINTS`] only with `allow_large`
    /// (`--allow-large`), and never above what an index can address.
    pub fn check_grid(&self, source: &str, allow_large: bool) -> Result<u64, ReportError> {
        let dims: Vec<String> = self.radices().iter().map(usize::to_string).collect();
        let Some(n) = self.grid_len().filter(|&n| n <= usize::MAX as u64 && n <= MAX_GRID_POINTS_EVER) else {
            return Err(spec_err(
                source,
                format!(
                    "the grid has {} points, more than can be addressed (at most {MAX_GRID_POINTS_EVER})",
                    dims.join(" x ")
                ),
            ));
        };
        if n > MAX_GRID_POINTS && !allow_large {
            return Err(spec_err(
                source,
                format!(
                    "the grid has {n} points ({}); more than {MAX_GRID_POINTS} needs --allow-large (or shrink a list)",
                    dims.join(" x ")
                ),
            ));
        }
        Ok(n)
    }

    /// The point at `index` in grid order (mixed radix over the dimensions,
    /// the last varying fastest), computed without building the grid.
    /// `index` must be below [`SweepSpec::grid_len`].
    pub fn point(&self, index: usize) -> Point {
        let radices = self.radices();
        let mut digits = vec![0usize; radices.len()];
        let mut rest = index;
        for (d, &n) in digits.iter_mut().zip(&radices).rev() {
            *d = rest % n.max(1);
            rest /= n.max(1);
        }
        let keys: Vec<&String> = self.arch.keys().collect();
        let k = keys.len();
        Point {
            index,
            model: self.models[digits[0]].clone(),
            context: self.contexts[digits[1]],
            batch: self.batches[digits[2]],
            arch: self.archs[digits[3]].clone(),
            params: keys
                .iter()
                .enumerate()
                .map(|(j, key)| ((*key).clone(), self.arch[*key][digits[4 + j]].clone()))
                .collect(),
            wafers: self.wafers[digits[4 + k]].clone(),
            gpu: self.gpus.get(digits[5 + k]).cloned(),
            prompt: self.prompts.get(digits[6 + k]).copied(),
        }
    }

    /// The indices `shard` computes (all of them without one), in order.
    pub fn indices(&self, shard: Option<Shard>) -> std::iter::StepBy<std::ops::Range<usize>> {
        let n = self.grid_len().unwrap_or(0).min(usize::MAX as u64) as usize;
        let (start, step) = shard.map_or((0, 1), |s| (s.index as usize, s.count as usize));
        (start..n).step_by(step)
    }

    /// Every point in grid order (for small grids and tests; a run walks [`SweepSpec::indices`]).
    pub fn points(&self) -> Vec<Point> {
        self.indices(None).map(|i| self.point(i)).collect()
    }
}

/// Points a sweep may have without `--allow-large`: 100,000 (the 100-point
/// example takes 1.5 s; 100,000 analytical points take about half an hour on 2 cores).
pub const MAX_GRID_POINTS: u64 = 100_000;
/// Points any grid may have: 2^40 (indices are exact in JSON and CSV).
pub const MAX_GRID_POINTS_EVER: u64 = 1 << 40;

/// `base` with the fields at dotted `path`s set, validated, and named
/// `base[path=value,...]`. Unknown paths and out-of-range values are errors.
pub fn apply_overrides(base: &ArchSpec, params: &[(String, toml::Value)]) -> Result<ArchSpec, String> {
    if params.is_empty() {
        return Ok(base.clone());
    }
    let mut t: toml::Table = toml::from_str(&base.to_toml()).map_err(|e| e.to_string())?;
    for (path, v) in params {
        let missing = || {
            format!(
                "arch field `{path}` does not exist (see the arch TOML, e.g. `wafer compile` inputs, for field names)"
            )
        };
        let parts: Vec<&str> = path.split('.').collect();
        let (last, parents) = parts.split_last().ok_or_else(missing)?;
        let mut cur = &mut t;
        for part in parents {
            cur = cur.get_mut(*part).and_then(toml::Value::as_table_mut).ok_or_else(missing)?;
        }
        let slot = cur.get_mut(*last).ok_or_else(missing)?;
        if slot.is_table() {
            return Err(format!("arch field `{path}` is a table; name one of its fields"));
        }
        // Integers given for float fields (clock_ghz = [1, 2]) are accepted.
        *slot = match (&*slot, v) {
            (toml::Value::Float(_), toml::Value::Integer(n)) => toml::Value::Float(*n as f64),
            _ => v.clone(),
        };
    }
    let label: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect();
    t.insert("name".into(), toml::Value::String(format!("{}[{}]", base.name, label.join(","))));
    let text = toml::to_string(&t).map_err(|e| e.to_string())?;
    ArchSpec::from_toml(&text, "sweep point").map_err(|e| e.to_string())
}

/// A TOML scalar as plain text (`49152`, `1.1`, `true`, `abc`).
pub fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn value_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        other => Value::from(value_text(other)),
    }
}

/// What one point produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub tpot_us: f64,
    pub tokens_per_s: f64,
    pub cycles: f64,
    pub wafers_used: u32,
    pub pes_used: u64,
    pub sram_mean_bytes: f64,
    pub compute_us: f64,
    pub comm_us: f64,
    pub inter_wafer_us: f64,
    pub wait_us: f64,
    pub bound: String,
    /// The machine's limit (a lower bound for any mapping, µs), the latency
    /// over it (×), and which of its floors binds (`compute`, `memory`, `communication`).
    pub bound_us: f64,
    pub bound_ratio: f64,
    pub binding_floor: String,
    pub gpu_tpot_us: Option<f64>,
    pub gpu_tokens_per_s: Option<f64>,
    pub gpus_used: Option<u32>,
    /// GPU time per token over wafer time per token.
    pub speedup: Option<f64>,
    /// Why the GPU side has no figures (the wafer side still does).
    pub gpu_error: Option<String>,
    /// With a prompt: the wait for the first answer token on the wafer (the
    /// faster way, `prefill_way`: `stream` in the fastest chunk that fits or
    /// `gemm` in the fastest block, `prefill_chunk` tokens) and on the GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_way: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_chunk: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_ttft_us: Option<f64>,
}

impl Figures {
    /// Numeric figures a curve or a CSV column can show.
    pub const NAMES: [&'static str; 14] = [
        "tpot_us",
        "tokens_per_s",
        "cycles",
        "wafers_used",
        "pes_used",
        "sram_mean_bytes",
        "compute_us",
        "comm_us",
        "bound_us",
        "bound_ratio",
        "gpu_tpot_us",
        "speedup",
        "ttft_us",
        "gpu_ttft_us",
    ];

    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "tpot_us" => self.tpot_us,
            "tokens_per_s" => self.tokens_per_s,
            "cycles" => self.cycles,
            "wafers_used" => self.wafers_used as f64,
            "pes_used" => self.pes_used as f64,
            "sram_mean_bytes" => self.sram_mean_bytes,
            "compute_us" => self.compute_us,
            "comm_us" => self.comm_us,
            "bound_us" => self.bound_us,
            "bound_ratio" => self.bound_ratio,
            "gpu_tpot_us" => self.gpu_tpot_us?,
            "speedup" => self.speedup?,
            "ttft_us" => self.ttft_us?,
            "gpu_ttft_us" => self.gpu_ttft_us?,
            _ => return None,
        })
    }
}

/// One row of the results: the point and its figures or its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub index: usize,
    pub model: String,
    pub arch: String,
    pub context: u64,
    pub batch: u64,
    pub wafers: String,
    pub gpu: Option<String>,
    pub params: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<u64>,
    pub engine: String,
    pub figures: Option<Figures>,
    /// Why the point has no figures (it does not fit, a bad value, ...).
    pub error: Option<String>,
}

impl Row {
    pub fn new(p: &Point, engine: &str, result: Result<Figures, String>) -> Row {
        let (figures, error) = match result {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        Row {
            index: p.index,
            model: p.model.clone(),
            arch: p.arch.clone(),
            context: p.context,
            batch: p.batch,
            wafers: p.wafers.to_string(),
            gpu: p.gpu.clone(),
            params: p.params.iter().map(|(k, v)| (k.clone(), value_json(v))).collect(),
            prompt: p.prompt,
            engine: engine.into(),
            figures,
            error,
        }
    }
}

/// `sweep.json`: the spec, which shard (none once merged) and the rows in index order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepOutput {
    pub schema_version: u32,
    pub name: String,
    pub engine: String,
    /// Points in the whole grid.
    pub points: usize,
    pub shard: Option<Shard>,
    pub spec: SweepSpec,
    pub rows: Vec<Row>,
}

impl SweepOutput {
    /// Rows sorted by index.
    pub fn new(spec: &SweepSpec, engine: &str, shard: Option<Shard>, mut rows: Vec<Row>) -> SweepOutput {
        rows.sort_by_key(|r| r.index);
        SweepOutput {
            schema_version: SWEEP_SCHEMA_VERSION,
            name: spec.name.clone(),
            engine: engine.into(),
            points: spec.grid_len().unwrap_or(0) as usize,
            shard,
            spec: spec.clone(),
            rows,
        }
    }

    pub fn from_json(text: &str, source: &str) -> Result<SweepOutput, ReportError> {
        let o: SweepOutput =
            serde_json::from_str(text).map_err(|e| spec_err(source, format!("not a sweep.json: {e}")))?;
        if o.schema_version != SWEEP_SCHEMA_VERSION {
            return Err(spec_err(
                source,
                format!("schema_version is {}; this wafer reads {SWEEP_SCHEMA_VERSION}", o.schema_version),
            ));
        }
        Ok(o)
    }
}

/// Joins shards of one sweep into the unsharded result. All parts must come
/// from the same spec and engine; together they must hold every point once.
pub fn merge(parts: &[(String, SweepOutput)]) -> Result<SweepOutput, ReportError> {
    let Some((first_name, first)) = parts.first() else {
        return Err(ReportError::Merge("nothing to merge: name at least one sweep folder".into()));
    };
    let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
    for (name, p) in parts {
        if p.spec != first.spec || p.engine != first.engine || p.points != first.points {
            return Err(ReportError::Merge(format!(
                "{name} is not from the same sweep as {first_name} (spec, engine or point count differ)"
            )));
        }
        for r in &p.rows {
            if r.index >= p.points {
                return Err(ReportError::Merge(format!("{name}: row {} is outside the grid of {}", r.index, p.points)));
            }
            if let Some(prev) = rows.insert(r.index, r.clone()) {
                if &prev != r {
                    return Err(ReportError::Merge(format!(
                        "{name}: point {} appears twice with different results",
                        r.index
                    )));
                }
            }
        }
    }
    let missing: Vec<usize> = (0..first.points).filter(|i| !rows.contains_key(i)).collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
        return Err(ReportError::Merge(format!(
            "{} of {} points are missing (e.g. {}): is a shard absent?",
            missing.len(),
            first.points,
            shown.join(", ")
        )));
    }
    Ok(SweepOutput::new(&first.spec, &first.engine, None, rows.into_values().collect()))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(x: f64) -> String {
    // Shortest text that reads back to the same f64.
    format!("{x}")
}

/// The rows as CSV: point columns, one column per swept arch field, the figures, the error.
pub fn to_csv(o: &SweepOutput) -> String {
    let keys: Vec<&String> = o.spec.arch.keys().collect();
    let mut head: Vec<String> =
        ["index", "model", "arch", "context", "batch", "wafers", "gpu"].iter().map(|s| s.to_string()).collect();
    head.extend(keys.iter().map(|k| k.to_string()));
    // Prompt columns only when the spec sweeps prompts (other CSVs unchanged).
    let prompts = !o.spec.prompts.is_empty();
    if prompts {
        head.push("prompt".into());
    }
    head.extend(
        [
            "engine",
            "status",
            "tpot_us",
            "tokens_per_s",
            "cycles",
            "wafers_used",
            "pes_used",
            "sram_mean_bytes",
            "compute_us",
            "comm_us",
            "inter_wafer_us",
            "wait_us",
            "bound",
            "bound_us",
            "bound_ratio",
            "binding_floor",
            "gpu_tpot_us",
            "gpu_tokens_per_s",
            "gpus_used",
            "speedup",
            "error",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    if prompts {
        head.extend(["ttft_us", "prefill_way", "prefill_chunk", "gpu_ttft_us"].map(String::from));
    }
    let mut out = head.join(",") + "\n";
    for r in &o.rows {
        let mut c: Vec<String> = vec![
            r.index.to_string(),
            csv_field(&r.model),
            csv_field(&r.arch),
            r.context.to_string(),
            r.batch.to_string(),
            r.wafers.clone(),
            csv_field(r.gpu.as_deref().unwrap_or("")),
        ];
        for k in &keys {
            c.push(csv_field(&r.params.get(*k).map_or(String::new(), |v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })));
        }
        if prompts {
            c.push(r.prompt.map_or(String::new(), |n| n.to_string()));
        }
        c.push(r.engine.clone());
        let opt = |x: Option<f64>| x.map_or(String::new(), num);
        match &r.figures {
            Some(f) => {
                c.push("ok".into());
                c.extend([
                    num(f.tpot_us),
                    num(f.tokens_per_s),
                    num(f.cycles),
                    f.wafers_used.to_string(),
                    f.pes_used.to_string(),
                    num(f.sram_mean_bytes),
                    num(f.compute_us),
                    num(f.comm_us),
                    num(f.inter_wafer_us),
                    num(f.wait_us),
                    csv_field(&f.bound),
                    num(f.bound_us),
                    num(f.bound_ratio),
                    csv_field(&f.binding_floor),
                    opt(f.gpu_tpot_us),
                    opt(f.gpu_tokens_per_s),
                    f.gpus_used.map_or(String::new(), |n| n.to_string()),
                    opt(f.speedup),
                    csv_field(f.gpu_error.as_deref().unwrap_or("")),
                ]);
                if prompts {
                    c.extend([
                        opt(f.ttft_us),
                        csv_field(f.prefill_way.as_deref().unwrap_or("")),
                        f.prefill_chunk.map_or(String::new(), |n| n.to_string()),
                        opt(f.gpu_ttft_us),
                    ]);
                }
            }
            None => {
                c.push("error".into());
                c.extend(std::iter::repeat_n(String::new(), 18));
                c.push(csv_field(r.error.as_deref().unwrap_or("")));
                if prompts {
                    c.extend(std::iter::repeat_n(String::new(), 3));
                }
            }
        }
        out += &c.join(",");
        out.push('\n');
    }
    out
}

/// The swept dimension a curve runs along: the spec's `plot.x`, else the
/// first swept arch field with several values, else context, batch, wafers.
fn x_dimension(s: &SweepSpec) -> Option<String> {
    if let Some(x) = s.plot.as_ref().and_then(|p| p.x.clone()) {
        return Some(x);
    }
    if let Some((k, _)) = s.arch.iter().find(|(_, v)| v.len() > 1 && v.iter().all(|x| x.is_integer() || x.is_float())) {
        return Some(k.clone());
    }
    if s.contexts.len() > 1 {
        return Some("context".into());
    }
    if s.batches.len() > 1 {
        return Some("batch".into());
    }
    if s.wafers.iter().filter(|w| matches!(w, WafersSpec::Count(_))).count() > 1 {
        return Some("wafers".into());
    }
    None
}

fn x_of(r: &Row, dim: &str) -> Option<f64> {
    match dim {
        "context" => Some(r.context as f64),
        "batch" => Some(r.batch as f64),
        "prompt" => r.prompt.map(|n| n as f64),
        "wafers" => r.wafers.parse::<f64>().ok(),
        k => r.params.get(k).and_then(Value::as_f64),
    }
}

/// The label of the series a row belongs to: every other dimension that varies.
fn series_of(s: &SweepSpec, r: &Row, x: &str) -> String {
    let mut parts = Vec::new();
    if s.models.len() > 1 {
        parts.push(r.model.clone());
    }
    if s.archs.len() > 1 {
        parts.push(r.arch.clone());
    }
    if s.contexts.len() > 1 && x != "context" {
        parts.push(format!("context {}", r.context));
    }
    if s.batches.len() > 1 && x != "batch" {
        parts.push(format!("batch {}", r.batch));
    }
    if s.wafers.len() > 1 && x != "wafers" {
        parts.push(format!("wafers {}", r.wafers));
    }
    if s.gpus.len() > 1 {
        parts.push(r.gpu.clone().unwrap_or_default());
    }
    for (k, v) in &r.params {
        if k != x && s.arch.get(k).is_some_and(|vals| vals.len() > 1) {
            parts.push(format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)));
        }
    }
    if parts.is_empty() {
        r.model.clone()
    } else {
        parts.join(", ")
    }
}

fn y_desc(y: &str) -> &'static str {
    match y {
        "tpot_us" => "time per output token (µs)",
        "tokens_per_s" => "tokens per second (whole batch)",
        "cycles" => "cycles per decode step",
        "wafers_used" => "wafers",
        "pes_used" => "PEs used",
        "sram_mean_bytes" => "mean SRAM per PE (bytes)",
        "compute_us" => "critical-path compute (µs)",
        "comm_us" => "critical-path communication (µs)",
        "bound_us" => "machine limit: lower bound on the time per token (µs)",
        "bound_ratio" => "time per token over the machine limit (×)",
        "gpu_tpot_us" => "GPU time per output token (µs)",
        "speedup" => "speed-up over the GPU baseline (×)",
        "ttft_us" => "time to first token (µs)",
        "gpu_ttft_us" => "GPU time to first token (µs)",
        _ => "",
    }
}

/// Curves of the sweep (none when no numeric dimension varies).
pub fn curves(o: &SweepOutput) -> Result<Vec<crate::charts::Chart>, ReportError> {
    let Some(x) = x_dimension(&o.spec) else { return Ok(vec![]) };
    let mut ys: Vec<String> = o.spec.plot.as_ref().map(|p| p.y.clone()).unwrap_or_default();
    if ys.is_empty() {
        ys = vec!["tokens_per_s".into(), "tpot_us".into()];
        if !o.spec.gpus.is_empty() {
            ys.push("speedup".into());
        }
    }
    let mut out = Vec::new();
    for y in ys {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in &o.rows {
            let (Some(f), Some(xv)) = (&r.figures, x_of(r, &x)) else { continue };
            let Some(yv) = f.get(&y) else { continue };
            let name = series_of(&o.spec, r, &x);
            match series.iter_mut().find(|s| s.0 == name) {
                Some(s) => s.1.push((xv, yv)),
                None => series.push((name, vec![(xv, yv)])),
            }
        }
        for s in &mut series {
            s.1.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        // Byte sizes that are whole KiB read better in KiB.
        let kib = x.ends_with("_bytes") && series.iter().all(|s| s.1.iter().all(|p| p.0 % 1024.0 == 0.0));
        if kib {
            for s in &mut series {
                for p in &mut s.1 {
                    p.0 /= 1024.0;
                }
            }
        }
        let marks = mark_wafer_changes(o, &x, &y, &mut series);
        let xs: Vec<f64> = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).collect();
        let (lo, hi) = xs.iter().fold((f64::INFINITY, 0f64), |a, &v| (a.0.min(v), a.1.max(v)));
        let title = if o.name.is_empty() {
            format!("{} vs {x}", y_desc(&y))
        } else {
            format!("{}: {} vs {x}", o.name, y_desc(&y))
        };
        out.push(
            Curves {
                name: format!("curve-{y}"),
                title,
                x_desc: if kib { format!("{x} (KiB)") } else { x_desc(&x) },
                y_desc: y_desc(&y).into(),
                integer_x: matches!(x.as_str(), "wafers" | "batch" | "context")
                    || xs.iter().all(|v| v.fract() == 0.0) && hi - lo <= 20.0,
                integer_y: matches!(y.as_str(), "wafers_used" | "pes_used" | "cycles"),
                marks,
                series,
                log_x: lo > 0.0 && hi / lo >= 16.0,
            }
            .render()?,
        );
    }
    Ok(out)
}

/// Where the wafer count changes: `(series, x, "N wafers", true)` at each point of a
/// series whose count differs from the point before, and at each such series'
/// first point; a series whose count never changes gets " · N wafers" in its
/// name instead, when the counts differ between series. Nothing when the wafer
/// count is the x axis itself or one count holds everywhere.
fn mark_wafer_changes(
    o: &SweepOutput,
    x: &str,
    y: &str,
    series: &mut [(String, Vec<(f64, f64)>)],
) -> Vec<(usize, f64, String, bool)> {
    if x == "wafers" {
        return vec![];
    }
    let label = |n: u32| format!("{n} wafer{}", if n == 1 { "" } else { "s" });
    // The wafer count of each point of each series, in x order (the order of its points).
    let counts: Vec<Vec<u32>> = series
        .iter()
        .map(|(name, _)| {
            let mut c: Vec<(f64, u32)> = o
                .rows
                .iter()
                .filter(|r| series_of(&o.spec, r, x) == *name)
                .filter_map(|r| {
                    let f = r.figures.as_ref()?;
                    f.get(y)?;
                    Some((x_of(r, x)?, f.wafers_used))
                })
                .collect();
            c.sort_by(|a, b| a.0.total_cmp(&b.0));
            c.into_iter().map(|p| p.1).collect()
        })
        .collect();
    let all: std::collections::BTreeSet<u32> = counts.iter().flatten().copied().collect();
    if all.len() < 2 {
        return vec![];
    }
    let mut marks = Vec::new();
    for (si, c) in counts.iter().enumerate() {
        let pts = &series[si].1;
        if c.len() != pts.len() || c.is_empty() {
            continue;
        }
        if c.windows(2).all(|w| w[0] == w[1]) {
            series[si].0 += &format!(" · {}", label(c[0]));
            continue;
        }
        marks.push((si, pts[0].0, label(c[0]), false));
        for k in 1..c.len() {
            if c[k] != c[k - 1] {
                marks.push((si, pts[k].0, label(c[k]), true));
            }
        }
    }
    marks
}

fn x_desc(x: &str) -> String {
    match x {
        "context" => "context (positions attended)".into(),
        "batch" => "batch (sequences)".into(),
        "prompt" => "prompt (new tokens)".into(),
        "wafers" => "wafers".into(),
        k if k.ends_with("_bytes") => format!("{k} (bytes)"),
        k if k.ends_with("_bytes_per_cycle") => format!("{k} (bytes/cycle)"),
        k if k.ends_with("_cycles") => format!("{k} (cycles)"),
        k if k.ends_with("_ghz") => format!("{k} (GHz)"),
        k if k.ends_with("_ns") => format!("{k} (ns)"),
        k if k.ends_with("_per_s") => format!("{k} (bytes/s)"),
        k => k.to_string(),
    }
}

/// All files of a sweep folder: sweep.json, sweep.csv, summary.md, report.html, curves.
pub fn sweep_files(o: &SweepOutput) -> Result<Vec<OutFile>, ReportError> {
    let charts = curves(o)?;
    let mut files = vec![OutFile::new("sweep.json", crate::to_json_pretty(o)), OutFile::new("sweep.csv", to_csv(o))];
    let chart_files = crate::folder::chart_files(&charts);
    let mut d = Doc::new(if o.name.is_empty() { "Sweep".to_string() } else { format!("Sweep: {}", o.name) });
    let ok = o.rows.iter().filter(|r| r.figures.is_some()).count();
    let shard = o.shard.map_or(String::new(), |s| {
        format!(" This is shard {}/{}; merge the shards with `wafer merge`.", s.index, s.count)
    });
    d.p(format!(
        "{} of {} points ({} engine): {} with results, {} that do not fit or failed.{}",
        o.rows.len(),
        o.points,
        o.engine,
        ok,
        o.rows.len() - ok,
        shard
    ));
    for c in charts {
        d.chart(c);
    }
    d.h("Points");
    let keys: Vec<&String> = o.spec.arch.keys().collect();
    let mut cols: Vec<String> =
        vec!["#".into(), "model".into(), "arch".into(), ">context".into(), ">batch".into(), "wafers".into()];
    cols.extend(keys.iter().map(|k| format!(">{k}")));
    let prompts = !o.spec.prompts.is_empty();
    if prompts {
        cols.push(">prompt".into());
    }
    cols.extend([
        ">µs/token".into(),
        ">× machine limit".into(),
        ">tokens/s".into(),
        ">wafers used".into(),
        "bound".into(),
        "GPUs".into(),
        ">GPU µs/token".into(),
        ">speed-up (system vs system)".into(),
    ]);
    if prompts {
        cols.extend([">TTFT ms".into(), "prefill".into(), ">chunk".into(), ">GPU TTFT ms".into()]);
    }
    let cols_ref: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut t = Table::new(&cols_ref);
    let mut errors = Table::new(&["#", "error"]);
    for r in &o.rows {
        let mut c = vec![
            r.index.to_string(),
            r.model.clone(),
            r.arch.clone(),
            r.context.to_string(),
            r.batch.to_string(),
            r.wafers.clone(),
        ];
        c.extend(keys.iter().map(|k| {
            r.params.get(*k).map_or(String::new(), |v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        }));
        if prompts {
            c.push(r.prompt.map_or("-".into(), |n| n.to_string()));
        }
        match &r.figures {
            Some(f) => c.extend([
                format!("{:.1}", f.tpot_us),
                format!("{:.0}× ({})", f.bound_ratio, f.binding_floor),
                format!("{:.0}", f.tokens_per_s),
                f.wafers_used.to_string(),
                f.bound.clone(),
                match (&r.gpu, f.gpus_used) {
                    (Some(g), Some(n)) => format!("{n} × {}", g.split(':').next().unwrap_or(g)),
                    _ => "-".into(),
                },
                f.gpu_tpot_us.map_or("-".into(), |x| format!("{x:.1}")),
                f.speedup.map_or("-".into(), |x| format!("{x:.2}×")),
            ]),
            None => {
                c.extend([
                    "does not fit / failed".to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
                errors.row([r.index.to_string(), r.error.clone().unwrap_or_default()]);
            }
        }
        if prompts {
            let f = r.figures.as_ref();
            c.extend([
                f.and_then(|f| f.ttft_us).map_or("-".into(), |x| format!("{:.1}", x / 1e3)),
                f.and_then(|f| f.prefill_way.clone()).unwrap_or_else(|| "-".into()),
                f.and_then(|f| f.prefill_chunk).map_or("-".into(), |n| n.to_string()),
                f.and_then(|f| f.gpu_ttft_us).map_or("-".into(), |x| format!("{:.1}", x / 1e3)),
            ]);
        }
        t.row(c);
    }
    d.table(t);
    if !errors.is_empty() {
        d.h("Points without results");
        d.table(errors);
    }
    files.push(OutFile::new("summary.md", d.to_markdown()));
    files.push(OutFile::new("report.html", d.to_html()));
    files.extend(chart_files);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name = "t"
models = ["gpt2", "llama-3.2-1b"]
contexts = [128, 1024]
wafers = [1, "auto"]
[arch]
"pe.sram_bytes" = [32768, 49152, 65536]
"#;

    #[test]
    fn grid_order_is_fixed_and_complete() {
        let s = SweepSpec::from_toml(SPEC, "s.toml").unwrap();
        let p = s.points();
        assert_eq!(p.len(), 2 * 2 * 3 * 2);
        assert_eq!((p[0].model.as_str(), p[0].context, p[0].wafers.to_string()), ("gpt2", 128, "1".into()));
        assert_eq!(p[1].wafers, WafersSpec::Word("auto".into()));
        assert_eq!(p[2].params[0].1, toml::Value::Integer(49152));
        assert_eq!(p[23].model, "llama-3.2-1b");
        assert!(p.iter().enumerate().all(|(i, x)| x.index == i));
    }

    /// A point's coordinates: model, context, batch, arch, swept values, wafers, GPU.
    type Coords = (String, u64, u64, String, Vec<toml::Value>, String, Option<String>);

    /// The nested loops the grid order is defined by, to check the index arithmetic against.
    fn nested(s: &SweepSpec) -> Vec<Coords> {
        let mut combos: Vec<Vec<toml::Value>> = vec![vec![]];
        for vals in s.arch.values() {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    vals.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push(v.clone());
                        c
                    })
                })
                .collect();
        }
        let gpus: Vec<Option<String>> =
            if s.gpus.is_empty() { vec![None] } else { s.gpus.iter().cloned().map(Some).collect() };
        let mut out = Vec::new();
        for m in &s.models {
            for &c in &s.contexts {
                for &b in &s.batches {
                    for a in &s.archs {
                        for params in &combos {
                            for w in &s.wafers {
                                for g in &gpus {
                                    out.push((m.clone(), c, b, a.clone(), params.clone(), w.to_string(), g.clone()));
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_point_is_computed_from_its_index_in_nested_loop_order() {
        let text =
            format!("gpus = [\"H100-SXM\", \"A100-SXM:2\"]\nbatches = [1, 4]\n{SPEC}\"router.colors\" = [16, 24]\n");
        let s = SweepSpec::from_toml(&text, "s.toml").unwrap();
        let want = nested(&s);
        assert_eq!(s.grid_len(), Some(want.len() as u64));
        for (i, w) in want.iter().enumerate() {
            let p = s.point(i);
            let got = (
                p.model,
                p.context,
                p.batch,
                p.arch,
                p.params.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
                p.wafers.to_string(),
                p.gpu,
            );
            assert_eq!(&got, w, "point {i}");
        }
        let shard: Vec<usize> = s.indices(Some(Shard { index: 5, count: 7 })).collect();
        assert_eq!(shard, (0..want.len()).filter(|i| i % 7 == 5).collect::<Vec<_>>());
    }

    #[test]
    fn a_huge_grid_needs_allow_large_and_a_shard_of_it_costs_only_its_points() {
        let hundred: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        let list = hundred.join(", ");
        let text = format!("contexts = [{list}]\nbatches = [{list}]\n[arch]\n\"pe.simd_f32\" = [{list}]\n\"pe.simd_mixed\" = [{list}]\n");
        let s = SweepSpec::from_toml(&text, "big.toml").unwrap();
        assert_eq!(s.grid_len(), Some(100_000_000));
        let e = s.check_grid("big.toml", false).unwrap_err().to_string();
        assert!(e.contains("big.toml") && e.contains("100000000 points") && e.contains("--allow-large"), "{e}");
        assert_eq!(s.check_grid("big.toml", true).unwrap(), 100_000_000);
        let t = std::time::Instant::now();
        let mine: Vec<usize> = s.indices(Some(Shard { index: 5, count: 100_000_000 })).collect();
        assert_eq!(mine, vec![5]);
        let p = s.point(99_999_999);
        assert_eq!((p.context, p.batch), (100, 100));
        assert!(t.elapsed().as_secs() < 5, "budget guard");
    }

    #[test]
    fn shards_partition_the_grid() {
        let s: Shard = "1/3".parse().unwrap();
        assert!(s.holds(4) && !s.holds(3));
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_specs_name_the_file_and_field() {
        for (text, needle) in [
            ("models = []", "models"),
            ("wafers = [\"some\"]", "wafers"),
            ("contexts = [0]", "contexts"),
            ("colour = 3", "colour"),
            ("[plot]\nx = \"pe.sram_bytes\"", "plot.x"),
            ("", "names nothing to sweep"),
            ("name = \"only a name\"\n[plot]\ny = [\"tpot_us\"]", "at least one of `models`"),
            ("contexts = [1099511627776]", "contexts` holds 1099511627776; allowed: 1..=16777216"),
            ("batches = [100000]", "batches` holds 100000; allowed: 1..=65536"),
            ("wafers = [100000]", "wafers` holds 100000; allowed: 1..=10000"),
        ] {
            let e = SweepSpec::from_toml(text, "bad.toml").unwrap_err().to_string();
            assert!(e.contains("bad.toml") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn overrides_set_nested_fields_and_validate() {
        let base = wafer_ir::arch_preset("mesh:16x16").unwrap();
        let a = apply_overrides(&base, &[("pe.sram_bytes".into(), toml::Value::Integer(65536))]).unwrap();
        assert_eq!(a.pe.sram_bytes, 65536);
        assert_eq!(a.name, "mesh:16x16[pe.sram_bytes=65536]");
        let a = apply_overrides(&base, &[("clock_ghz".into(), toml::Value::Integer(2))]).unwrap();
        assert_eq!(a.clock_ghz, 2.0);
        let e = apply_overrides(&base, &[("pe.sram_kb".into(), toml::Value::Integer(1))]).unwrap_err();
        assert!(e.contains("pe.sram_kb"), "{e}");
        let e = apply_overrides(&base, &[("pe.sram_bytes".into(), toml::Value::Integer(1024))]).unwrap_err();
        assert!(e.contains("sram_reserved_bytes"), "{e}");
    }

    fn row(i: usize, tps: f64) -> Row {
        let p = Point {
            index: i,
            model: "m".into(),
            arch: "a".into(),
            context: 1,
            batch: 1,
            wafers: WafersSpec::Count(1),
            gpu: None,
            params: vec![],
            prompt: None,
        };
        let f = Figures {
            tpot_us: 1e6 / tps,
            tokens_per_s: tps,
            cycles: 1.0,
            wafers_used: 1,
            pes_used: 1,
            sram_mean_bytes: 1.0,
            compute_us: 1.0,
            comm_us: 0.0,
            inter_wafer_us: 0.0,
            wait_us: 0.0,
            bound: "compute".into(),
            bound_us: 1.0,
            bound_ratio: 1e6 / tps,
            binding_floor: "memory".into(),
            gpu_tpot_us: None,
            gpu_tokens_per_s: None,
            gpus_used: None,
            speedup: None,
            gpu_error: None,
            ttft_us: None,
            prefill_way: None,
            prefill_chunk: None,
            gpu_ttft_us: None,
        };
        Row::new(&p, "analytical", if i == 1 { Err("does not fit, no".into()) } else { Ok(f) })
    }

    #[test]
    fn merge_needs_every_point_once_from_one_spec() {
        let s = SweepSpec::from_toml("contexts = [1, 2, 3]", "s").unwrap();
        let all = SweepOutput::new(&s, "analytical", None, (0..3).map(|i| row(i, 10.0 + i as f64)).collect());
        let a =
            SweepOutput::new(&s, "analytical", Some(Shard { index: 0, count: 2 }), vec![row(0, 10.0), row(2, 12.0)]);
        let b = SweepOutput::new(&s, "analytical", Some(Shard { index: 1, count: 2 }), vec![row(1, 11.0)]);
        let m = merge(&[("b".into(), b.clone()), ("a".into(), a.clone())]).unwrap();
        assert_eq!(m, all);
        assert!(merge(&[("a".into(), a.clone())]).unwrap_err().to_string().contains("missing"));
        let other =
            SweepOutput::new(&SweepSpec::from_toml("contexts = [1, 2, 4]", "s").unwrap(), "analytical", None, vec![]);
        assert!(merge(&[("a".into(), a), ("o".into(), other)]).unwrap_err().to_string().contains("same sweep"));
        let csv = to_csv(&all);
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.lines().nth(2).unwrap().contains(",error,") && csv.contains("\"does not fit, no\""));
    }
}

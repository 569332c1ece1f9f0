//! The latency–throughput frontier: operating points of one model on a wafer
//! machine and on a GPU baseline, each side's Pareto frontier of per-user
//! tokens/s against aggregate tokens/s, and its tables, JSON and chart.
//!
//! Owns: the operating-point rows ([`OperatingPoint`]), Pareto dominance
//! ([`pareto`]: a point is on its side's frontier when no other point of that
//! side is at least as good on both axes and better on one), the
//! [`FrontierReport`] (the JSON source of truth, `frontier.json`), its CSV,
//! its text form and the chart (`frontier.svg/.png`, drawn by
//! [`crate::charts::FrontierChart`]), and the assembly of a report from its
//! units of work ([`BatchUnit`]: one batch of one side's sweep) so that
//! shards ([`FrontierShard`], `wafer frontier --shard I/N`) merge into the
//! report an unsharded run gives, byte for byte ([`assemble`],
//! [`merge_shards`]). Must not: compile, simulate, estimate or write files
//! (the CLI sweeps the points and writes what this renders).

use crate::charts::{FrontierChart, FrontierSide};
use crate::energy::{Power, Price};
use crate::folder::OutFile;
use crate::sweep::Shard;
use crate::table::Table;
use crate::ReportError;
use serde::{Deserialize, Serialize};

/// Version of `frontier.json`'s layout.
/// 2: speculative-decoding points (`speculative` on points and report,
/// `speculative_bound` on limits).
pub const FRONTIER_SCHEMA_VERSION: u32 = 2;

/// Version of `frontier-shard.json`'s layout.
pub const FRONTIER_SHARD_SCHEMA_VERSION: u32 = 1;

/// `--draft M --spec-k K --accept A`: what the speculative points assume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecInputs {
    pub draft: String,
    pub k: u32,
    pub accept: f64,
    /// Tokens per verify round on average, `(1 − α^(k+1)) / (1 − α)`.
    pub expected_tokens_per_step: f64,
}

/// A speculative point's round: `k` draft steps and one `(k + 1)`-token verify step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecStep {
    /// One decode step of the draft at this batch, µs.
    pub draft_step_us: f64,
    /// The target's `(k + 1)`-token verify step at this batch, µs.
    pub verify_step_us: f64,
    /// `k × draft + verify`, µs.
    pub round_us: f64,
    /// Machines the draft runs on (wafer: the wafers it was compiled on —
    /// the target's when shared, its own beside them otherwise, counted in
    /// `machines`; GPU: the target's GPUs, which it shares).
    pub draft_machines: u32,
    /// Wafer only: `shared` (on the target's wafers) or `own wafers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_placement: Option<String>,
}

/// One way to run the model: a mapping (or GPU layout), a batch and users in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// `wafer` or `gpu`.
    pub side: String,
    /// Wafer: the mapping strategy (`pipeline`, `spread`, `hybrid:4`); GPU:
    /// `tp N` (`× pp P` with pipeline stages).
    pub strategy: String,
    /// Sequences in one step.
    pub batch: u64,
    /// Steps in flight at once (wafer: users pipelined through the mapping,
    /// each a batch of `batch` sequences; GPU: 1).
    pub users: u32,
    /// Sequences served at once: `users × batch`. Each is one user of the
    /// service, so per-user tokens/s is per sequence.
    pub sequences: u64,
    /// Tokens per second each sequence sees: `aggregate / sequences`.
    pub per_user_tokens_per_s: f64,
    /// Tokens per second over all sequences.
    pub aggregate_tokens_per_s: f64,
    /// Wafers or GPUs.
    pub machines: u32,
    /// One step of one batch, µs (wafer: the simulated step `T`; GPU: TPOT).
    pub step_us: f64,
    /// Machines × power ÷ aggregate tokens/s; null without a power figure.
    pub joules_per_token: Option<f64>,
    /// Machines × price per hour ÷ tokens per hour × 10⁶; null without a price.
    pub usd_per_mtok: Option<f64>,
    /// The machine holds the KV cache of all `sequences`: on the wafer, a
    /// mapping of this strategy compiled at a batch of at least `sequences`
    /// (the closed form for users in flight does not model their KV cache, so
    /// this is its check); on the GPU, always (the estimate checks memory).
    pub kv_fits: bool,
    /// On its side's Pareto frontier.
    pub frontier: bool,
    /// Speculative decoding's round at this point (one user in flight; the
    /// point's rates are the effective ones); null for plain decoding.
    pub speculative: Option<SpecStep>,
}

impl OperatingPoint {
    /// The strategy as tables and the CSV show it: `+spec` on speculative points.
    pub fn label(&self) -> String {
        if self.speculative.is_some() {
            format!("{} +spec", self.strategy)
        } else {
            self.strategy.clone()
        }
    }
}

/// Why a side's batch sweep stopped: the largest batch that fitted and the
/// first one's error (or the sweep's own cap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    pub side: String,
    pub strategy: String,
    /// Largest batch that mapped; null when not even batch 1 did.
    pub largest_batch: Option<u64>,
    /// The error of the next batch, or that the sweep ends there.
    pub bound: String,
    /// Wafer: where aggregate tokens/s (one user in flight) stops rising
    /// before `largest_batch`, and why ([`saturation`]); null where it rises
    /// to the last batch that mapped (then `bound`, SRAM, is what stops it).
    pub saturation: Option<Saturation>,
    /// With `--draft`: the first batch that has no speculative point, and why
    /// (the draft does not map or fit, or the verify step's buffers do not fit).
    pub speculative_bound: Option<String>,
}

/// A batch sweep's aggregate tokens/s has stopped rising.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saturation {
    /// The last batch before the gain falls below [`SATURATION_GAIN`].
    pub batch: u64,
    /// The next batch swept.
    pub next_batch: u64,
    /// Aggregate tokens/s at `next_batch` over that at `batch`.
    pub gain: f64,
    /// Share of `next_batch`'s critical path spent computing.
    pub compute_share: f64,
    /// `compute`, `communication` or `wafers` (the next batch needs more of them).
    pub bound: String,
    pub why: String,
}

/// Doubling the batch must raise aggregate tokens/s by at least this factor
/// to count as still rising (below, the step grows about as fast as the batch).
pub const SATURATION_GAIN: f64 = 1.1;

/// One batch of a sweep: `(batch, machines, step µs, compute share of the critical path)`.
pub type BatchStep = (u64, u32, f64, f64);

/// The first batch of `steps` (in batch order) after which aggregate tokens/s
/// (`batch / step`) rises by less than [`SATURATION_GAIN`], and what binds:
/// more wafers at the next batch (`wafers`), else the larger of compute and
/// communication on the next batch's critical path.
pub fn saturation(steps: &[BatchStep]) -> Option<Saturation> {
    steps.windows(2).find_map(|w| {
        let ((b0, m0, t0, _), (b1, m1, t1, share)) = (w[0], w[1]);
        let gain = (b1 as f64 / t1) / (b0 as f64 / t0);
        if gain.is_nan() || gain >= SATURATION_GAIN {
            return None;
        }
        let (bound, why) = if m1 > m0 {
            (
                "wafers",
                format!(
                    "more wafers: batch {b1} needs {m1} (its KV cache) where batch {b0} needed {m0}, and a token \
                     crosses them all: aggregate tokens/s ×{gain:.2}"
                ),
            )
        } else if share >= 0.5 {
            (
                "compute",
                format!(
                    "compute-bound: from batch {b0} to {b1} the step grows ×{:.2} (every PE multiplies its \
                     tile once per sequence; compute is {:.0}% of the critical path), aggregate tokens/s ×{gain:.2}",
                    t1 / t0,
                    100.0 * share
                ),
            )
        } else {
            (
                "communication",
                format!(
                    "communication-bound: from batch {b0} to {b1} the step grows ×{:.2} (the batch's bytes on the fabric; compute is \
                     {:.0}% of the critical path), aggregate tokens/s ×{gain:.2}",
                    t1 / t0,
                    100.0 * share
                ),
            )
        };
        Some(Saturation { batch: b0, next_batch: b1, gain, compute_share: share, bound: bound.into(), why })
    })
}

/// Everything `wafer frontier` found: the JSON source of truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontierReport {
    pub schema_version: u32,
    pub model: String,
    pub context: u64,
    pub arch: String,
    /// `--wafers` as given (`1`, `auto`, …); each point names the wafers it used.
    pub wafers: String,
    /// The engine that timed the wafer steps.
    pub engine: String,
    pub gpu: String,
    pub gpus: u32,
    pub gpu_pipeline_stages: u32,
    /// Wafer operating points in sweep order (strategy, batch, users).
    pub wafer_points: Vec<OperatingPoint>,
    /// GPU operating points in batch order.
    pub gpu_points: Vec<OperatingPoint>,
    /// Where each wafer strategy's and the GPU's batch sweep stopped.
    pub limits: Vec<Limit>,
    pub wafer_power: Option<Power>,
    pub wafer_price: Option<Price>,
    pub gpu_power: Option<Power>,
    pub gpu_price: Option<Price>,
    /// The frontier leaves out points whose KV cache does not fit
    /// (`kv_fits: false`); false with `--ignore-kv`.
    pub frontier_needs_kv_fit: bool,
    /// With `--draft`: what the speculative points (`speculative` not null) assume.
    pub speculative: Option<SpecInputs>,
}

/// `frontier[i]`: no other point is at least as good on both coordinates
/// (larger is better) and strictly better on one. Points with a non-finite
/// coordinate are never on the frontier and dominate nothing.
pub fn pareto(points: &[(f64, f64)]) -> Vec<bool> {
    let ok = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    points
        .iter()
        .map(|a| ok(a) && !points.iter().any(|b| ok(b) && b.0 >= a.0 && b.1 >= a.1 && (b.0 > a.0 || b.1 > a.1)))
        .collect()
}

/// Sets `frontier` on every point of one side; with `needs_kv_fit`, points
/// whose KV cache does not fit are left out (never on it, dominating nothing).
pub fn mark_frontier(points: &mut [OperatingPoint], needs_kv_fit: bool) {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .map(|p| {
            if needs_kv_fit && !p.kv_fits {
                (f64::NAN, f64::NAN)
            } else {
                (p.per_user_tokens_per_s, p.aggregate_tokens_per_s)
            }
        })
        .collect();
    for (p, f) in points.iter_mut().zip(pareto(&xy)) {
        p.frontier = f;
    }
}

/// One side's frontier, fastest per user first.
pub fn frontier_of(points: &[OperatingPoint]) -> Vec<&OperatingPoint> {
    let mut f: Vec<&OperatingPoint> = points.iter().filter(|p| p.frontier).collect();
    f.sort_by(|a, b| {
        b.per_user_tokens_per_s
            .total_cmp(&a.per_user_tokens_per_s)
            .then(a.aggregate_tokens_per_s.total_cmp(&b.aggregate_tokens_per_s))
    });
    f
}

fn num(x: f64) -> String {
    format!("{x}")
}

fn opt(x: Option<f64>) -> String {
    x.map(num).unwrap_or_default()
}

/// Every point of both sides as CSV (wafer first), with the frontier marked.
pub fn to_csv(r: &FrontierReport) -> String {
    let mut s = String::from(
        "side,strategy,batch,users,sequences,per_user_tokens_per_s,aggregate_tokens_per_s,machines,step_us,\
         joules_per_token,usd_per_mtok,kv_fits,frontier,speculative\n",
    );
    for p in r.wafer_points.iter().chain(&r.gpu_points) {
        s += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            p.side,
            p.strategy,
            p.batch,
            p.users,
            p.sequences,
            num(p.per_user_tokens_per_s),
            num(p.aggregate_tokens_per_s),
            p.machines,
            num(p.step_us),
            opt(p.joules_per_token),
            opt(p.usd_per_mtok),
            p.kv_fits,
            p.frontier,
            p.speculative.is_some()
        );
    }
    s
}

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        crate::table::thousands(x.round() as u64)
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn frontier_table(points: &[&OperatingPoint], machines: &str) -> String {
    let mut t = Table::new(&[
        "strategy",
        ">batch",
        ">users",
        ">per-user tokens/s",
        ">aggregate tokens/s",
        &format!(">{machines}"),
        ">J/token",
        ">$/Mtok",
    ]);
    for p in points {
        t.row(vec![
            p.label(),
            p.batch.to_string(),
            p.users.to_string(),
            fmt_rate(p.per_user_tokens_per_s),
            fmt_rate(p.aggregate_tokens_per_s),
            p.machines.to_string(),
            p.joules_per_token.map_or("-".into(), |j| format!("{j:.3}")),
            p.usd_per_mtok.map_or("-".into(), |c| format!("{c:.2}")),
        ]);
    }
    t.to_text()
}

/// The best frontier point of a side by `key` (the first, fastest per user first, among equals).
fn best<'a>(f: &[&'a OperatingPoint], key: impl Fn(&OperatingPoint) -> f64) -> Option<&'a OperatingPoint> {
    f.iter().copied().fold(None, |b: Option<&OperatingPoint>, p| match b {
        Some(q) if key(q) >= key(p) => Some(q),
        _ => Some(p),
    })
}

fn describe(p: &OperatingPoint) -> String {
    let who = if p.side == "wafer" {
        format!("{}, batch {}, {} user(s) in flight", p.label(), p.batch, p.users)
    } else {
        format!("{}, batch {}", p.label(), p.batch)
    };
    format!("{} per user, {} in all ({who})", fmt_rate(p.per_user_tokens_per_s), fmt_rate(p.aggregate_tokens_per_s))
}

impl FrontierReport {
    /// Sets every point's `frontier` flag, per side.
    pub fn mark(&mut self) {
        mark_frontier(&mut self.wafer_points, self.frontier_needs_kv_fit);
        mark_frontier(&mut self.gpu_points, self.frontier_needs_kv_fit);
    }

    /// The two frontiers as tables, the limits, the best points and what the figures assume.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} at context {}: per-user against aggregate tokens/s, wafer ({}, --wafers {}, {} engine) \
             and GPU ({} × {})\n\n",
            self.model, self.context, self.arch, self.wafers, self.engine, self.gpus, self.gpu
        );
        for (name, points, machines) in [("Wafer", &self.wafer_points, "wafers"), ("GPU", &self.gpu_points, "GPUs")] {
            let f = frontier_of(points);
            let left_out = points.iter().filter(|p| !p.kv_fits).count();
            s += &format!("{name} frontier ({} of {} operating points", f.len(), points.len());
            if left_out > 0 && self.frontier_needs_kv_fit {
                s += &format!("; {left_out} left out: their KV cache does not fit");
            } else if left_out > 0 {
                s += &format!("; {left_out} of them with a KV cache that does not fit, kept by --ignore-kv");
            }
            s += "):\n";
            s += &frontier_table(&f, machines);
            if let (Some(u), Some(a)) = (best(&f, |p| p.per_user_tokens_per_s), best(&f, |p| p.aggregate_tokens_per_s))
            {
                s += &format!("best per user: {}\nbest aggregate: {}\n", describe(u), describe(a));
            }
            s.push('\n');
        }
        s += "Where each batch sweep stopped:\n";
        for l in &self.limits {
            let side = if l.side == "wafer" { "wafer" } else { "GPU" };
            match l.largest_batch {
                Some(b) => s += &format!("  {side} {}: batch ≤ {b}; {}\n", l.strategy, l.bound),
                None => s += &format!("  {side} {}: does not map at batch 1: {}\n", l.strategy, l.bound),
            }
            if let Some(sat) = &l.saturation {
                s += &format!("    aggregate tokens/s stops rising after batch {}: {}\n", sat.batch, sat.why);
            }
            if let Some(b) = &l.speculative_bound {
                s += &format!("    first batch without a speculative point: {b}\n");
            }
        }
        s += "\nPer-user tokens/s is per sequence (each sequence of a batch is a user). Wafer users in flight \
              are pipelined through the mapping in closed form from the simulated step (aggregate = batch · \
              min(U / T, 1 / B)); contention between their messages and the KV cache of more than one user \
              per batch slot are not modelled, so the wafer's aggregate is an upper bound. A wafer point \
              counts only where the KV cache of all its sequences fits: where the same strategy compiles \
              at a batch of at least users × batch (--ignore-kv keeps the others). GPU: the calibrated \
              decode model at each batch, on the GPU count of batch 1.\n";
        if let Some(sp) = &self.speculative {
            s += &format!(
                "\nSpeculative points (+spec, one user in flight): draft {} proposes k = {} tokens per round, each \
                 accepted with probability {} ({:.3} tokens per round on average); a round is k draft steps and one \
                 (k + 1)-token verify step of the target, at the point's batch. Wafer: the draft is compiled with \
                 the same strategy, on the target's wafers when both fit (shared), else on its own (counted in \
                 the point's wafers); the verify step is the target's mapping (compiled again with room for it \
                 where needed) restated for k + 1 tokens per sequence; each step timed as its own program by \
                 the sweep's engine. GPU: the draft shares the \
                 target's GPUs (it must fit in the memory they leave free), both steps by the decode model.\n",
                sp.draft, sp.k, sp.accept, sp.expected_tokens_per_step
            );
        }
        s
    }

    /// The chart: both sides on log–log axes, frontier points joined, the others faint.
    pub fn chart(&self) -> Result<crate::charts::Chart, ReportError> {
        let side = |label: String, points: &[OperatingPoint]| FrontierSide {
            label,
            frontier: {
                let mut f: Vec<(f64, f64)> =
                    frontier_of(points).iter().map(|p| (p.per_user_tokens_per_s, p.aggregate_tokens_per_s)).collect();
                f.reverse();
                f
            },
            frontier_labels: {
                let mut l: Vec<String> = frontier_of(points)
                    .iter()
                    .map(|p| {
                        let spec = if p.speculative.is_some() { " spec" } else { "" };
                        if p.side == "wafer" {
                            format!("{} B{} U{}{spec}", p.strategy, p.batch, p.users)
                        } else {
                            format!("B{}{spec}", p.batch)
                        }
                    })
                    .collect();
                l.reverse();
                l
            },
            over_memory: points
                .iter()
                .filter(|p| !p.frontier && !p.kv_fits)
                .map(|p| (p.per_user_tokens_per_s, p.aggregate_tokens_per_s))
                .collect(),
            others: points
                .iter()
                .filter(|p| !p.frontier && p.kv_fits)
                .map(|p| (p.per_user_tokens_per_s, p.aggregate_tokens_per_s))
                .collect(),
        };
        let wafers = {
            let mut w: Vec<u32> = self.wafer_points.iter().map(|p| p.machines).collect();
            w.sort_unstable();
            w.dedup();
            match (w.first(), w.last()) {
                (Some(a), Some(b)) if a != b => format!("{a}–{b}"),
                (Some(a), _) => a.to_string(),
                _ => "0".into(),
            }
        };
        FrontierChart {
            name: "frontier".into(),
            title: format!("{} at context {}: latency–throughput frontier", self.model, self.context),
            x_desc: "per-user tokens/s (each sequence)".into(),
            y_desc: "aggregate tokens/s (all sequences)".into(),
            sides: vec![
                side(format!("wafer: {wafers} × {}", self.arch), &self.wafer_points),
                side(format!("GPU: {} × {}", self.gpus, self.gpu), &self.gpu_points),
            ],
        }
        .render()
    }

    /// The files of `--out DIR`: frontier.json, frontier.csv, frontier.svg, frontier.png.
    pub fn files(&self) -> Result<Vec<OutFile>, ReportError> {
        let c = self.chart()?;
        Ok(vec![
            OutFile::new("frontier.json", crate::to_json_pretty(self)),
            OutFile::new("frontier.csv", to_csv(self)),
            OutFile::new("frontier.svg", c.svg),
            OutFile::new("frontier.png", c.png),
        ])
    }
}

/// One side's batch sweep, as the header of a report names it: the batches
/// it tries in order and what to say where it maps at all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepGroup {
    /// `wafer` or `gpu`.
    pub side: String,
    pub strategy: String,
    pub batches: Vec<u64>,
    /// The bound where every batch maps (the sweep's own cap).
    pub cap_bound: String,
}

/// What one batch of one side's sweep gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BatchOutcome {
    Mapped(MappedBatch),
    /// It did not map (compile or GPU memory error); the sweep of its side stops here.
    Failed(String),
}

/// A batch that mapped: its operating points and its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappedBatch {
    /// Plain points (users in flight in order), then the speculative one.
    pub points: Vec<OperatingPoint>,
    pub machines: u32,
    pub step_us: f64,
    /// Share of the step's critical path spent computing (wafer; 0 on the GPU).
    pub compute_share: f64,
    /// The engine that timed it (wafer).
    pub engine: Option<String>,
    /// Why this batch has no speculative point (with `--draft`).
    pub speculative_bound: Option<String>,
}

/// One unit of `wafer frontier`'s work: batch `batch` of group `group`.
/// Units are numbered in group order, then batch order ([`FrontierHeader::units`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchUnit {
    pub index: usize,
    pub group: usize,
    pub batch: u64,
    pub outcome: BatchOutcome,
}

/// Everything of a report but its points: every shard computes the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierHeader {
    pub model: String,
    pub context: u64,
    pub arch: String,
    pub wafers: String,
    /// The engine named when no wafer batch mapped.
    pub engine: String,
    pub gpu: String,
    pub gpus: u32,
    pub gpu_pipeline_stages: u32,
    /// Wafer strategies first, then the GPU.
    pub groups: Vec<SweepGroup>,
    pub wafer_power: Option<Power>,
    pub wafer_price: Option<Price>,
    pub gpu_power: Option<Power>,
    pub gpu_price: Option<Price>,
    pub frontier_needs_kv_fit: bool,
    pub speculative: Option<SpecInputs>,
}

impl FrontierHeader {
    /// Every unit `(index, group, batch)` in order.
    pub fn units(&self) -> Vec<(usize, usize, u64)> {
        let mut v = Vec::new();
        for (g, grp) in self.groups.iter().enumerate() {
            for &b in &grp.batches {
                v.push((v.len(), g, b));
            }
        }
        v
    }
}

/// `frontier-shard.json`: the units of `wafer frontier --shard I/N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierShard {
    pub schema_version: u32,
    pub shard: Shard,
    pub header: FrontierHeader,
    pub units: Vec<BatchUnit>,
}

impl FrontierShard {
    pub fn from_json(text: &str, source: &str) -> Result<FrontierShard, ReportError> {
        let err = |m: String| ReportError::Spec { source_name: source.into(), message: m };
        let s: FrontierShard =
            serde_json::from_str(text).map_err(|e| err(format!("not a frontier-shard.json: {e}")))?;
        if s.schema_version != FRONTIER_SHARD_SCHEMA_VERSION {
            return Err(err(format!(
                "schema_version is {}; this wafer reads {FRONTIER_SHARD_SCHEMA_VERSION}",
                s.schema_version
            )));
        }
        Ok(s)
    }
}

/// The report from its units (any order; each at most once). Each group's
/// sweep runs in batch order to its first failed batch (that batch's error is
/// the bound; later units are ignored); every unit before it must be present.
/// Wafer points fit their KV cache where the group mapped a batch of at least
/// their sequences. Marks the frontier. An error where no wafer batch mapped,
/// or a unit is missing.
pub fn assemble(h: &FrontierHeader, units: &[BatchUnit]) -> Result<FrontierReport, ReportError> {
    let mut wafer_points = Vec::new();
    let mut gpu_points = Vec::new();
    let mut limits = Vec::new();
    let mut engine = None;
    for (gi, g) in h.groups.iter().enumerate() {
        let mut points = Vec::new();
        let (mut largest, mut bound, mut spec_bound) = (None, g.cap_bound.clone(), None);
        let mut steps: Vec<BatchStep> = Vec::new();
        for &b in &g.batches {
            let u = units.iter().find(|u| u.group == gi && u.batch == b).ok_or_else(|| {
                ReportError::Merge(format!(
                    "no shard holds batch {b} of the {} {} sweep: merge every shard of the run",
                    g.side, g.strategy
                ))
            })?;
            match &u.outcome {
                BatchOutcome::Failed(e) => {
                    bound = format!("batch {b}: {e}");
                    break;
                }
                BatchOutcome::Mapped(m) => {
                    points.extend(m.points.iter().cloned());
                    steps.push((b, m.machines, m.step_us, m.compute_share));
                    if g.side == "wafer" && engine.is_none() {
                        engine = m.engine.clone();
                    }
                    if spec_bound.is_none() {
                        spec_bound = m.speculative_bound.as_ref().map(|w| format!("batch {b}: {w}"));
                    }
                    largest = Some(b);
                }
            }
        }
        let wafer = g.side == "wafer";
        if wafer {
            for p in &mut points {
                p.kv_fits = largest.is_some_and(|l| p.sequences <= l);
            }
        }
        limits.push(Limit {
            side: g.side.clone(),
            strategy: g.strategy.clone(),
            largest_batch: largest,
            bound,
            saturation: if wafer { saturation(&steps) } else { None },
            speculative_bound: spec_bound,
        });
        if wafer {
            wafer_points.extend(points);
        } else {
            gpu_points.extend(points);
        }
    }
    if wafer_points.is_empty() {
        let why: Vec<String> =
            limits.iter().filter(|l| l.side == "wafer").map(|l| format!("{}: {}", l.strategy, l.bound)).collect();
        return Err(ReportError::Merge(format!(
            "{} does not map onto {} with any strategy: {}",
            h.model,
            h.arch,
            why.join("; ")
        )));
    }
    let mut r = FrontierReport {
        schema_version: FRONTIER_SCHEMA_VERSION,
        model: h.model.clone(),
        context: h.context,
        arch: h.arch.clone(),
        wafers: h.wafers.clone(),
        engine: engine.unwrap_or_else(|| h.engine.clone()),
        gpu: h.gpu.clone(),
        gpus: h.gpus,
        gpu_pipeline_stages: h.gpu_pipeline_stages,
        wafer_points,
        gpu_points,
        limits,
        wafer_power: h.wafer_power.clone(),
        wafer_price: h.wafer_price.clone(),
        gpu_power: h.gpu_power.clone(),
        gpu_price: h.gpu_price.clone(),
        frontier_needs_kv_fit: h.frontier_needs_kv_fit,
        speculative: h.speculative.clone(),
    };
    r.mark();
    Ok(r)
}

/// Joins the shards `(name, shard)` of one run: all of the same header and
/// count, each index once, every index present; then [`assemble`].
pub fn merge_shards(parts: &[(String, FrontierShard)]) -> Result<FrontierReport, ReportError> {
    let Some((first_name, first)) = parts.first() else {
        return Err(ReportError::Merge("no frontier shards to merge".into()));
    };
    let n = first.shard.count;
    let mut seen = vec![false; n as usize];
    for (name, s) in parts {
        if s.header != first.header || s.shard.count != n {
            return Err(ReportError::Merge(format!(
                "{name} is a shard of another frontier run than {first_name} (its inputs or shard count differ)"
            )));
        }
        let i = s.shard.index as usize;
        if i >= seen.len() || seen[i] {
            return Err(ReportError::Merge(format!("{name}: shard {}/{n} is given twice or out of range", i)));
        }
        seen[i] = true;
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(ReportError::Merge(format!("shard {i}/{n} is missing")));
    }
    let units: Vec<BatchUnit> = parts.iter().flat_map(|(_, s)| s.units.iter().cloned()).collect();
    assemble(&first.header, &units)
}

#[cfg(test)]
mod tests {
    use super::{pareto, saturation};

    #[test]
    fn aggregate_tokens_per_s_stops_rising_where_the_step_grows_with_the_batch_and_says_why() {
        // (batch, wafers, step µs, compute share): the step is flat to batch 4,
        // then grows ×1.9 per doubling, compute dominating.
        let steps =
            [(1, 1, 100.0, 0.2), (2, 1, 110.0, 0.3), (4, 1, 130.0, 0.4), (8, 1, 247.0, 0.7), (16, 1, 480.0, 0.8)];
        let s = saturation(&steps).unwrap();
        assert_eq!((s.batch, s.next_batch, s.bound.as_str()), (4, 8, "compute"));
        assert!(s.gain < 1.1 && s.why.contains("compute-bound"), "{s:?}");
        // More wafers at the next batch is named as such.
        let s = saturation(&[(1, 1, 100.0, 0.2), (2, 3, 190.0, 0.2)]).unwrap();
        assert_eq!(s.bound, "wafers");
        // A step that stays flat keeps rising: no saturation.
        assert!(saturation(&[(1, 1, 100.0, 0.2), (2, 1, 120.0, 0.2), (4, 1, 150.0, 0.2)]).is_none());
    }

    #[test]
    fn a_point_beaten_on_both_axes_or_tied_on_one_is_off_the_frontier() {
        let f = pareto(&[(1.0, 10.0), (2.0, 5.0), (0.5, 9.0), (2.0, 4.0), (f64::NAN, 100.0)]);
        assert_eq!(f, vec![true, true, false, false, false]);
    }

    #[test]
    fn equal_points_do_not_dominate_each_other() {
        assert_eq!(pareto(&[(1.0, 1.0), (1.0, 1.0)]), vec![true, true]);
    }
}

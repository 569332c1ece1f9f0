//! What a simulation reports: plain serialisable data shared by every engine.
//!
//! Owns: `SimResult` and its parts, and [`FinishedSim`], the only form in
//! which a result's latency reaches a report: [`SimResult::finished`] turns a
//! run that did not finish (deadlock, cycle limit) into a [`SimError`] naming
//! what was blocked, so no caller can print a latency it forgot to check.
//! Must not: compute anything beyond the derived figures (µs, tokens/s) from cycles.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::AddAssign;

/// Where cycles of the critical path go. In JSON each key carries its unit
/// (`compute_cycles`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// PE arithmetic (local GEMV, attention, epilogues, adds inside reductions).
    #[serde(rename = "compute_cycles")]
    pub compute: f64,
    /// Moving data across the mesh (forwards, multicasts, reduction messages).
    #[serde(rename = "comm_cycles")]
    pub comm: f64,
    /// Crossing between wafers.
    #[serde(rename = "inter_wafer_cycles")]
    pub inter_wafer: f64,
    /// Waiting: link contention and imbalance beyond the above.
    #[serde(rename = "wait_cycles")]
    pub wait: f64,
}

impl Breakdown {
    pub fn total(&self) -> f64 {
        self.compute + self.comm + self.inter_wafer + self.wait
    }
}

impl AddAssign for Breakdown {
    fn add_assign(&mut self, o: Breakdown) {
        self.compute += o.compute;
        self.comm += o.comm;
        self.inter_wafer += o.inter_wafer;
        self.wait += o.wait;
    }
}

/// One region's timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionTiming {
    pub region: String,
    pub layer: Option<u32>,
    /// Role within its layer (`qkv`, `attention`, `o_proj`, `mlp_up`, `mlp_down`, …).
    pub role: String,
    pub pes: u64,
    /// Cycle its first input arrived / its output was complete
    /// (`start_cycle`, `end_cycle` in JSON).
    #[serde(rename = "start_cycle")]
    pub start: f64,
    #[serde(rename = "end_cycle")]
    pub end: f64,
    /// Its contribution to the critical path.
    pub breakdown: Breakdown,
    /// Mean over its PEs of the fraction of the step they compute.
    pub busy_fraction: f64,
}

/// Per-layer totals of the critical path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerTiming {
    /// `None` for the embedding and the LM head.
    pub layer: Option<u32>,
    pub breakdown: Breakdown,
}

/// How the simulation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    Finished,
    CycleLimit { limit: u64 },
    Deadlock { blocked: Vec<String> },
}

/// Why a simulation has no latency: it did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error(
        "the {engine} simulation of {model} on {arch} deadlocked at cycle {at}: no latency. {} region(s) blocked: {}",
        blocked.len(),
        list(blocked)
    )]
    Deadlock { engine: String, model: String, arch: String, at: u64, blocked: Vec<String> },
    #[error(
        "the {engine} simulation of {model} on {arch} passed its cycle limit ({limit} cycles) without finishing: no latency"
    )]
    CycleLimit { engine: String, model: String, arch: String, limit: u64 },
}

/// The first few blocked regions (each names its waiting PE and the routes it
/// waits on, cut to a few hundred characters), then a count.
fn list(blocked: &[String]) -> String {
    const SHOWN: usize = 6;
    const CHARS: usize = 300;
    let cut = |b: &String| match b.char_indices().nth(CHARS) {
        Some((i, _)) => format!("{}…", &b[..i]),
        None => b.clone(),
    };
    let mut s = blocked.iter().take(SHOWN).map(cut).collect::<Vec<_>>().join(" | ");
    if blocked.len() > SHOWN {
        s += &format!(" | … and {} more", blocked.len() - SHOWN);
    }
    s
}

/// A [`SimResult`] whose outcome is [`Outcome::Finished`]: made only by
/// [`SimResult::finished`] (or by deserialising a finished result), read
/// through `Deref`. Reports take this type, so a latency from a run that did
/// not finish cannot be shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SimResult")]
pub struct FinishedSim(SimResult);

impl std::ops::Deref for FinishedSim {
    type Target = SimResult;
    fn deref(&self) -> &SimResult {
        &self.0
    }
}

impl FinishedSim {
    pub fn into_inner(self) -> SimResult {
        self.0
    }
}

impl TryFrom<SimResult> for FinishedSim {
    type Error = SimError;
    fn try_from(s: SimResult) -> Result<FinishedSim, SimError> {
        s.finished()
    }
}

/// Link traffic over the step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkLoad {
    /// Busiest link's busy cycles over the step's cycles.
    pub max: f64,
    /// Mean over links that carried anything.
    pub mean: f64,
    pub links_used: u64,
}

/// The result of simulating one decode step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimResult {
    pub engine: String,
    pub model: String,
    pub arch: String,
    pub wafers: u32,
    pub batch: u64,
    pub context: u64,
    pub outcome: Outcome,
    pub cycles: f64,
    pub clock_ghz: f64,
    /// Time per output token, µs (one step; every sequence of the batch gets a token).
    pub tpot_us: f64,
    /// Tokens per second across the batch: `batch / tpot`.
    pub tokens_per_s: f64,
    /// Critical-path totals.
    pub breakdown: Breakdown,
    pub by_layer: Vec<LayerTiming>,
    pub by_kind: BTreeMap<String, Breakdown>,
    /// Region names along the critical path, in order.
    pub critical_path: Vec<String>,
    pub pe_busy_mean: f64,
    pub link_load: LinkLoad,
    pub regions: Vec<RegionTiming>,
}

impl SimResult {
    /// An empty result for `p` from `engine`: identity fields from the program,
    /// figures zero until the engine fills them and calls [`SimResult::finish`].
    pub fn for_program(engine: &str, p: &wafer_ir::Program) -> SimResult {
        SimResult {
            engine: engine.into(),
            model: p.model.clone(),
            arch: p.arch.name.clone(),
            wafers: p.wafers,
            batch: p.batch,
            context: p.context,
            outcome: Outcome::Finished,
            cycles: 0.0,
            clock_ghz: p.arch.clock_ghz,
            tpot_us: 0.0,
            tokens_per_s: 0.0,
            breakdown: Breakdown::default(),
            by_layer: Vec::new(),
            by_kind: BTreeMap::new(),
            critical_path: Vec::new(),
            pe_busy_mean: 0.0,
            link_load: LinkLoad::default(),
            regions: Vec::new(),
        }
    }

    /// The result as a [`FinishedSim`] when the run finished, else the error
    /// naming why not (the blocked regions and the routes they wait on).
    pub fn finished(self) -> Result<FinishedSim, SimError> {
        let (engine, model, arch) = (self.engine.clone(), self.model.clone(), self.arch.clone());
        match &self.outcome {
            Outcome::Finished => Ok(FinishedSim(self)),
            Outcome::CycleLimit { limit } => Err(SimError::CycleLimit { engine, model, arch, limit: *limit }),
            Outcome::Deadlock { blocked } => {
                Err(SimError::Deadlock { engine, model, arch, at: self.cycles as u64, blocked: blocked.clone() })
            }
        }
    }

    /// Derives the totals (per layer, per kind, overall) and the rates.
    pub fn finish(mut self) -> SimResult {
        self.aggregate();
        self.derive_rates();
        self
    }

    /// Fills `tpot_us` and `tokens_per_s` from `cycles`, `clock_ghz` and `batch`.
    pub fn derive_rates(&mut self) {
        self.tpot_us = self.cycles / (self.clock_ghz * 1e3);
        self.tokens_per_s = if self.tpot_us > 0.0 { self.batch as f64 * 1e6 / self.tpot_us } else { 0.0 };
    }

    /// Per-layer and per-kind totals from `regions` (their critical-path shares).
    pub fn aggregate(&mut self) {
        let mut by_layer: BTreeMap<Option<u32>, Breakdown> = BTreeMap::new();
        let mut by_kind: BTreeMap<String, Breakdown> = BTreeMap::new();
        let mut total = Breakdown::default();
        for r in &self.regions {
            *by_layer.entry(r.layer).or_default() += r.breakdown;
            *by_kind.entry(r.role.clone()).or_default() += r.breakdown;
            total += r.breakdown;
        }
        self.by_layer = by_layer.into_iter().map(|(layer, breakdown)| LayerTiming { layer, breakdown }).collect();
        self.by_kind = by_kind;
        self.breakdown = total;
    }
}

/// Role of a region from its name `l{i}.{role}` (or the name itself).
pub fn role_of(name: &str) -> String {
    match name.split_once('.') {
        Some((l, role)) if l.starts_with('l') && l[1..].chars().all(|c| c.is_ascii_digit()) => {
            // experts are named l{i}.expert{e}.{part}
            if let Some(rest) = role.strip_prefix("expert") {
                return format!("expert_{}", rest.split_once('.').map_or(rest, |x| x.1));
            }
            role.to_string()
        }
        _ => name.to_string(),
    }
}

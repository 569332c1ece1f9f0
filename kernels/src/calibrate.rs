//! Calibration against silicon: the measured MeshGEMV rows, the model's error
//! on them, and the fit of the one constant they pin down.
//!
//! Owns: parsing the embedded `meshgemv_wse3.csv`, replaying every row as the
//! measured kernel ran (local multiply-accumulate off, see below), the error
//! statistics, and [`fit_ramp`]. Must not: read files or print.
//!
//! What the rows can and cannot constrain. Every row has `group_num = 8`, and
//! `P = 16 + 64·j`, so the reduction's chain lengths, hop counts and relay
//! counts all grow in the same proportion with `P`: the rows pin the cost of
//! the dependent path's growth (`2·ramp + 1` per relay plus one cycle per hop)
//! but cannot separate the hop latency from the ramp. The hop stays at its
//! sourced 1 cycle and the ramp is fitted. The intercept (P = 16: 241 cycles)
//! is then a check, not a fit: it follows from the ramp, the hop and the
//! existing 43-cycle memory-operand vector overhead (the per-iteration zeroing
//! of the partials). The local multiply-accumulate is commented out in the
//! published kernel source, so the rows carry no information on it: the
//! replay turns it off (`mac = false`) and its constants stay tied to their
//! own sources. The measured cycles still grow by 18–31 cycles from 1×1 to
//! 8×8 tiles, which nothing in that source explains: it is left in the error.

use crate::{time_kernel, Engine, KernelError, MeshGemv};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use wafer_ir::ArchSpec;
use wafer_simulator::EventLimits;

/// The embedded MeshGEMV measurements (a verbatim copy of `shared/reference/kernels/meshgemv_wse3.csv`).
pub const MESHGEMV_CSV: &str = include_str!("../data/meshgemv_wse3.csv");
const MESHGEMV_FILE: &str = "meshgemv_wse3.csv";

/// Ramp latencies the fit evaluates every row at: the model is affine in the
/// ramp along a fixed critical path, so two points give each row's line.
const FIT_POINTS: [u32; 2] = [0, 20];

/// One measured MeshGEMV configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GemvRow {
    pub grid: u32,
    pub m: u64,
    pub n: u64,
    pub groups: u32,
    /// Mean cycles per repetition over all PEs, measured.
    pub measured_cycles: f64,
}

impl GemvRow {
    /// The kernel as it was measured (multiply-accumulate commented out).
    pub fn kernel(&self) -> MeshGemv {
        MeshGemv { grid: self.grid, m: self.m, n: self.n, groups: self.groups, mac: false }
    }
}

/// The rows of the embedded CSV, in file order.
pub fn gemv_rows() -> Result<Vec<GemvRow>, KernelError> {
    let mut lines = MESHGEMV_CSV.lines().enumerate();
    let header = lines.next().map(|(_, l)| l).unwrap_or("");
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| {
        cols.iter().position(|c| *c == name).ok_or_else(|| KernelError::Data {
            file: MESHGEMV_FILE,
            line: 1,
            message: format!("no `{name}` column"),
        })
    };
    let (cp, cm, cn, cg, cc) = (col("P")?, col("M")?, col("N")?, col("group_num")?, col("mean_cycles")?);
    let mut rows = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let err = |what: &str| KernelError::Data { file: MESHGEMV_FILE, line: i + 1, message: format!("bad {what}") };
        let get = |c: usize| f.get(c).copied().unwrap_or("");
        rows.push(GemvRow {
            grid: get(cp).parse().map_err(|_| err("P"))?,
            m: get(cm).parse().map_err(|_| err("M"))?,
            n: get(cn).parse().map_err(|_| err("N"))?,
            groups: get(cg).parse().map_err(|_| err("group_num"))?,
            measured_cycles: get(cc).parse().map_err(|_| err("mean_cycles"))?,
        });
    }
    Ok(rows)
}

/// One row, measured against predicted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RowResult {
    #[serde(flatten)]
    pub row: GemvRow,
    pub predicted_cycles: f64,
    /// `predicted / measured − 1`.
    pub error: f64,
}

/// The model against every row, with one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub kernel: String,
    pub engine: Engine,
    pub arch: String,
    pub ramp_latency_cycles: u32,
    pub rows: Vec<RowResult>,
    pub median_abs_error: f64,
    pub max_abs_error: f64,
    /// Mean of the signed errors (bias).
    pub mean_error: f64,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn replay(arch: &ArchSpec, rows: &[GemvRow], engine: Engine) -> Result<Vec<f64>, KernelError> {
    // In row order whatever the thread count.
    let limits = EventLimits::default();
    rows.par_iter().map(|r| Ok(time_kernel(&r.kernel().program(arch)?, engine, &limits)?.1.cycles)).collect()
}

fn summarise(arch: &ArchSpec, engine: Engine, rows: &[GemvRow], predicted: &[f64]) -> Calibration {
    let rows: Vec<RowResult> = rows
        .iter()
        .zip(predicted)
        .map(|(r, &p)| RowResult { row: *r, predicted_cycles: p, error: p / r.measured_cycles - 1.0 })
        .collect();
    let abs: Vec<f64> = rows.iter().map(|r| r.error.abs()).collect();
    Calibration {
        kernel: "meshgemv".into(),
        engine,
        arch: arch.name.clone(),
        ramp_latency_cycles: arch.router.ramp_latency_cycles,
        median_abs_error: median(abs.clone()),
        max_abs_error: abs.iter().copied().fold(0.0, f64::max),
        mean_error: if rows.is_empty() { 0.0 } else { rows.iter().map(|r| r.error).sum::<f64>() / rows.len() as f64 },
        rows,
    }
}

/// Every MeshGEMV row replayed on `arch` (normally `wse3`) with `engine`.
pub fn calibrate_gemv(arch: &ArchSpec, engine: Engine) -> Result<Calibration, KernelError> {
    let rows = gemv_rows()?;
    let predicted = replay(arch, &rows, engine)?;
    Ok(summarise(arch, engine, &rows, &predicted))
}

/// One fold of leave-one-P-out cross-validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LooFold {
    /// The grid left out.
    pub grid: u32,
    /// The ramp fitted without it (real-valued) and as the model would use it.
    pub ramp_fit: f64,
    pub ramp_used: u32,
    /// Median |error| on the left-out rows with that ramp.
    pub median_abs_error: f64,
}

/// The fit of `router.ramp_latency_cycles` to the MeshGEMV rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampFit {
    pub engine: Engine,
    pub rows: usize,
    /// Least squares on the relative error, real-valued.
    pub value: f64,
    /// The integer the presets use.
    pub rounded: u32,
    /// Median and max |error| over all rows at `rounded`.
    pub median_abs_error: f64,
    pub max_abs_error: f64,
    pub folds: Vec<LooFold>,
    /// Median |error| over every row, each predicted by the fold that left its grid out.
    pub loo_median_abs_error: f64,
    pub loo_max_abs_error: f64,
}

/// Least-squares ramp over rows `(a, b, y)` with prediction `a + b·ramp`,
/// minimising `Σ ((a + b·ramp) / y − 1)²`.
fn lsq(lines: &[(f64, f64, f64)]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for &(a, b, y) in lines {
        num += (b / y) * (1.0 - a / y);
        den += (b / y) * (b / y);
    }
    if den > 0.0 {
        (num / den).max(0.0)
    } else {
        0.0
    }
}

/// Fits the ramp latency on `arch`'s other parameters: each row is replayed at
/// two ramp values (the model is affine in it along a fixed critical path),
/// checked at a third (the arch's own value) to be on that line, and the
/// relative squared error is minimised in closed form. Leave-one-P-out: the fit
/// is redone without each grid size and scored on the rows it left out.
pub fn fit_ramp(arch: &ArchSpec, engine: Engine) -> Result<RampFit, KernelError> {
    let rows = gemv_rows()?;
    let at = |ramp: u32| {
        let mut a = arch.clone();
        a.router.ramp_latency_cycles = ramp;
        replay(&a, &rows, engine)
    };
    let (r0, r1) = (FIT_POINTS[0] as f64, FIT_POINTS[1] as f64);
    let (c0, c1, cp) = (at(FIT_POINTS[0])?, at(FIT_POINTS[1])?, at(arch.router.ramp_latency_cycles)?);
    let mut lines = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let b = (c1[i] - c0[i]) / (r1 - r0);
        let a = c0[i] - b * r0;
        let expected = a + b * arch.router.ramp_latency_cycles as f64;
        if (expected - cp[i]).abs() > 1.0 {
            return Err(KernelError::NotAffine {
                what: "the ramp latency",
                row: format!("P={} M={} N={}", r.grid, r.m, r.n),
                replayed: cp[i],
                expected,
            });
        }
        lines.push((a, b, r.measured_cycles));
    }
    let errs = |ramp: u32, idx: &mut dyn Iterator<Item = usize>| -> Vec<f64> {
        idx.map(|i| (lines[i].0 + lines[i].1 * ramp as f64) / lines[i].2 - 1.0).collect()
    };
    let value = lsq(&lines);
    let rounded = value.round() as u32;
    let all: Vec<f64> = errs(rounded, &mut (0..rows.len())).into_iter().map(f64::abs).collect();
    let mut grids: Vec<u32> = rows.iter().map(|r| r.grid).collect();
    grids.sort_unstable();
    grids.dedup();
    let mut folds = Vec::new();
    let mut loo = Vec::new();
    for g in grids {
        let train: Vec<(f64, f64, f64)> =
            rows.iter().zip(&lines).filter(|(r, _)| r.grid != g).map(|(_, l)| *l).collect();
        let fit = lsq(&train);
        let used = fit.round() as u32;
        let held: Vec<f64> =
            errs(used, &mut (0..rows.len()).filter(|&i| rows[i].grid == g)).into_iter().map(f64::abs).collect();
        folds.push(LooFold { grid: g, ramp_fit: fit, ramp_used: used, median_abs_error: median(held.clone()) });
        loo.extend(held);
    }
    Ok(RampFit {
        engine,
        rows: rows.len(),
        value,
        rounded,
        median_abs_error: median(all.clone()),
        max_abs_error: all.iter().copied().fold(0.0, f64::max),
        folds,
        loo_median_abs_error: median(loo.clone()),
        loo_max_abs_error: loo.iter().copied().fold(0.0, f64::max),
    })
}

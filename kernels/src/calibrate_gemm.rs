//! Calibration of the Cannon GEMM against silicon: the measured MeshGEMM
//! rows, the model's error on them, and the fit of the three constants they
//! pin down.
//!
//! Owns: parsing the embedded `meshgemm_wse3.csv`, replaying every row as a
//! [`MeshGemm`] program through the normal verifier and engines, the error
//! statistics, and [`fit_gemm`]. Must not: read files or print.
//!
//! What the rows constrain. Each row has tiles `m, k, n ∈ {1, 8}` on a square
//! of `P = 16 + 64·j` PEs, and the measured cycles are `P` steps of nearly the
//! same cost whatever `P` (159–160 cycles a step for 1×1×1 tiles from P = 80
//! to 720). Read against the kernel source (per step: start both tile moves,
//! then for each of the `tile_k` rows of B reload three DSD registers and
//! `@map` one `@fmach` over the `tile_m` elements of the A column per element
//! of the B row), a step is `S + tile_k·(L + tile_n·(O + ⌈tile_m / r⌉))`, with
//! `r` the fp16 multiply-add rate of the spec (4 a cycle on WSE-3, port
//! bound). The rows pin the three fixed costs: `S` per step
//! (`pe.gemm_step_overhead_cycles`), `L` per loop iteration
//! (`pe.loop_iteration_cycles`) and `O` per mapped op
//! (`pe.mapped_op_overhead_cycles`). The tile moves (at most 64 fp16 values
//! two hops) finish inside every row's compute, so the rows say nothing about
//! the link, which keeps its sourced figures.

use crate::calibrate::median;
use crate::{time_kernel, Engine, KernelError, MeshGemm};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use wafer_ir::ArchSpec;
use wafer_simulator::EventLimits;

/// The embedded MeshGEMM measurements (a verbatim copy of `shared/reference/kernels/meshgemm_wse3.csv`).
pub const MESHGEMM_CSV: &str = include_str!("../data/meshgemm_wse3.csv");
const MESHGEMM_FILE: &str = "meshgemm_wse3.csv";

/// One measured MeshGEMM configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GemmRow {
    pub grid: u32,
    pub m: u64,
    pub k: u64,
    pub n: u64,
    /// Mean cycles per repetition over all PEs, measured.
    pub measured_cycles: f64,
}

impl GemmRow {
    pub fn kernel(&self) -> MeshGemm {
        MeshGemm { grid: self.grid, m: self.m, k: self.k, n: self.n }
    }
}

/// The rows of the embedded CSV, in file order.
pub fn gemm_rows() -> Result<Vec<GemmRow>, KernelError> {
    let mut lines = MESHGEMM_CSV.lines().enumerate();
    let header = lines.next().map(|(_, l)| l).unwrap_or("");
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| {
        cols.iter().position(|c| *c == name).ok_or_else(|| KernelError::Data {
            file: MESHGEMM_FILE,
            line: 1,
            message: format!("no `{name}` column"),
        })
    };
    let (cp, cm, ck, cn, cc) = (col("P")?, col("M")?, col("K")?, col("N")?, col("mean_cycles")?);
    let mut rows = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let err = |what: &str| KernelError::Data { file: MESHGEMM_FILE, line: i + 1, message: format!("bad {what}") };
        let get = |c: usize| f.get(c).copied().unwrap_or("");
        rows.push(GemmRow {
            grid: get(cp).parse().map_err(|_| err("P"))?,
            m: get(cm).parse().map_err(|_| err("M"))?,
            k: get(ck).parse().map_err(|_| err("K"))?,
            n: get(cn).parse().map_err(|_| err("N"))?,
            measured_cycles: get(cc).parse().map_err(|_| err("mean_cycles"))?,
        });
    }
    Ok(rows)
}

/// One row, measured against predicted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GemmRowResult {
    #[serde(flatten)]
    pub row: GemmRow,
    pub predicted_cycles: f64,
    /// `predicted / measured − 1`.
    pub error: f64,
}

/// The three fitted constants, in cycles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GemmConstants {
    pub gemm_step_overhead_cycles: f64,
    pub loop_iteration_cycles: f64,
    pub mapped_op_overhead_cycles: f64,
}

impl GemmConstants {
    fn of(arch: &ArchSpec) -> GemmConstants {
        GemmConstants {
            gemm_step_overhead_cycles: arch.pe.gemm_step_overhead_cycles as f64,
            loop_iteration_cycles: arch.pe.loop_iteration_cycles as f64,
            mapped_op_overhead_cycles: arch.pe.mapped_op_overhead_cycles as f64,
        }
    }
    fn as_array(&self) -> [f64; 3] {
        [self.gemm_step_overhead_cycles, self.loop_iteration_cycles, self.mapped_op_overhead_cycles]
    }
    fn from_array(x: [f64; 3]) -> GemmConstants {
        GemmConstants { gemm_step_overhead_cycles: x[0], loop_iteration_cycles: x[1], mapped_op_overhead_cycles: x[2] }
    }
    /// Each rounded to the nearest whole cycle (what the presets hold).
    pub fn rounded(&self) -> GemmConstants {
        GemmConstants::from_array(self.as_array().map(f64::round))
    }
    fn apply(&self, arch: &ArchSpec) -> ArchSpec {
        let mut a = arch.clone();
        a.pe.gemm_step_overhead_cycles = self.gemm_step_overhead_cycles as u32;
        a.pe.loop_iteration_cycles = self.loop_iteration_cycles as u32;
        a.pe.mapped_op_overhead_cycles = self.mapped_op_overhead_cycles as u32;
        a
    }
}

/// The model against every MeshGEMM row, with one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmCalibration {
    pub kernel: String,
    pub engine: Engine,
    pub arch: String,
    pub constants: GemmConstants,
    pub rows: Vec<GemmRowResult>,
    pub median_abs_error: f64,
    pub max_abs_error: f64,
    /// Mean of the signed errors (bias).
    pub mean_error: f64,
}

fn replay(arch: &ArchSpec, rows: &[GemmRow], engine: Engine) -> Result<Vec<f64>, KernelError> {
    let limits = EventLimits::default();
    rows.par_iter().map(|r| Ok(time_kernel(&r.kernel().program(arch)?, engine, &limits)?.1.cycles)).collect()
}

/// Every MeshGEMM row replayed on `arch` (normally `wse3`) with `engine`.
pub fn calibrate_gemm(arch: &ArchSpec, engine: Engine) -> Result<GemmCalibration, KernelError> {
    let rows = gemm_rows()?;
    let predicted = replay(arch, &rows, engine)?;
    let rows: Vec<GemmRowResult> = rows
        .iter()
        .zip(&predicted)
        .map(|(r, &p)| GemmRowResult { row: *r, predicted_cycles: p, error: p / r.measured_cycles - 1.0 })
        .collect();
    let abs: Vec<f64> = rows.iter().map(|r| r.error.abs()).collect();
    Ok(GemmCalibration {
        kernel: "meshgemm".into(),
        engine,
        arch: arch.name.clone(),
        constants: GemmConstants::of(arch),
        median_abs_error: median(abs.clone()),
        max_abs_error: abs.iter().copied().fold(0.0, f64::max),
        mean_error: if rows.is_empty() { 0.0 } else { rows.iter().map(|r| r.error).sum::<f64>() / rows.len() as f64 },
        rows,
    })
}

/// One fold of leave-one-P-out cross-validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GemmFold {
    /// The grid left out.
    pub grid: u32,
    /// The constants fitted without it (real-valued).
    pub fit: GemmConstants,
    /// Median |error| on the left-out rows with those constants rounded.
    pub median_abs_error: f64,
}

/// The fit of the three Cannon-GEMM constants to the MeshGEMM rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmFit {
    pub engine: Engine,
    pub rows: usize,
    /// Least squares on the relative error, real-valued.
    pub value: GemmConstants,
    /// Each rounded to a whole cycle: what the presets use.
    pub rounded: GemmConstants,
    /// Median and max |error| over all rows at `rounded`.
    pub median_abs_error: f64,
    pub max_abs_error: f64,
    pub folds: Vec<GemmFold>,
    /// Over every row, each predicted by the fold that left its grid out.
    pub loo_median_abs_error: f64,
    pub loo_max_abs_error: f64,
}

/// One row's prediction `a + b·x`, its measurement `y`.
struct Line {
    a: f64,
    b: [f64; 3],
    y: f64,
}

impl Line {
    fn at(&self, x: &[f64; 3]) -> f64 {
        self.a + (0..3).map(|j| self.b[j] * x[j]).sum::<f64>()
    }
}

/// Minimises `Σ ((a + b·x) / y − 1)²` over `x` (3×3 normal equations, Gaussian
/// elimination with partial pivoting; a singular system keeps `fallback`).
fn lsq(lines: &[&Line], fallback: [f64; 3]) -> [f64; 3] {
    let mut m = [[0.0f64; 4]; 3];
    for l in lines {
        let bj: Vec<f64> = l.b.iter().map(|b| b / l.y).collect();
        let r = 1.0 - l.a / l.y;
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += bj[i] * bj[j];
            }
            m[i][3] += bj[i] * r;
        }
    }
    for c in 0..3 {
        let piv = (c..3).max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs())).unwrap_or(c);
        m.swap(c, piv);
        if m[c][c].abs() < 1e-12 {
            return fallback;
        }
        let pivot = m[c];
        for (r, row) in m.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (v, p) in row.iter_mut().zip(pivot).skip(c) {
                    *v -= f * p;
                }
            }
        }
    }
    [m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]]
}

/// Step of the finite differences the fit takes in each constant, cycles.
const DELTA: f64 = 10.0;

/// Fits the three constants on `arch`'s other parameters: every row is
/// replayed at the arch's constants and at each constant moved by
/// [`DELTA`] (the model is affine in them while the tile moves stay hidden),
/// checked on that plane at a fifth point (all moved by twice as much), and
/// the relative squared error is minimised in closed form. Leave-one-P-out:
/// the fit is redone without each grid size and scored on the rows it left out.
pub fn fit_gemm(arch: &ArchSpec, engine: Engine) -> Result<GemmFit, KernelError> {
    let rows = gemm_rows()?;
    let x0 = GemmConstants::of(arch).as_array();
    let at = |x: [f64; 3]| replay(&GemmConstants::from_array(x).apply(arch), &rows, engine);
    let c0 = at(x0)?;
    let mut slopes = Vec::new();
    for j in 0..3 {
        let mut x = x0;
        x[j] += DELTA;
        slopes.push(at(x)?);
    }
    let check = at(x0.map(|v| v + 2.0 * DELTA))?;
    let mut lines = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let b = [0, 1, 2].map(|j| (slopes[j][i] - c0[i]) / DELTA);
        let a = c0[i] - (0..3).map(|j| b[j] * x0[j]).sum::<f64>();
        let line = Line { a, b, y: r.measured_cycles };
        let expected = line.at(&x0.map(|v| v + 2.0 * DELTA));
        if (expected - check[i]).abs() > 1.0 {
            return Err(KernelError::NotAffine {
                what: "the Cannon GEMM constants",
                row: format!("P={} M={} K={} N={}", r.grid, r.m, r.k, r.n),
                replayed: check[i],
                expected,
            });
        }
        lines.push(line);
    }
    let score = |x: &[f64; 3], idx: &mut dyn Iterator<Item = usize>| -> Vec<f64> {
        idx.map(|i| (lines[i].at(x) / lines[i].y - 1.0).abs()).collect()
    };
    let all: Vec<&Line> = lines.iter().collect();
    let value = GemmConstants::from_array(lsq(&all, x0));
    let rounded = value.rounded();
    let errs = score(&rounded.as_array(), &mut (0..rows.len()));
    let mut grids: Vec<u32> = rows.iter().map(|r| r.grid).collect();
    grids.sort_unstable();
    grids.dedup();
    let (mut folds, mut loo) = (Vec::new(), Vec::new());
    for g in grids {
        let train: Vec<&Line> = rows.iter().zip(&lines).filter(|(r, _)| r.grid != g).map(|(_, l)| l).collect();
        let fit = GemmConstants::from_array(lsq(&train, x0));
        let held = score(&fit.rounded().as_array(), &mut (0..rows.len()).filter(|&i| rows[i].grid == g));
        folds.push(GemmFold { grid: g, fit, median_abs_error: median(held.clone()) });
        loo.extend(held);
    }
    Ok(GemmFit {
        engine,
        rows: rows.len(),
        value,
        rounded,
        median_abs_error: median(errs.clone()),
        max_abs_error: errs.iter().copied().fold(0.0, f64::max),
        folds,
        loo_median_abs_error: median(loo.clone()),
        loo_max_abs_error: loo.iter().copied().fold(0.0, f64::max),
    })
}

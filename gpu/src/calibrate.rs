//! Calibration: the measured GPU latencies, the model's error on them, and
//! the fit of the model's three non-datasheet constants.
//!
//! Owns: reading the embedded copy of `shared/reference/gpu_measured.csv`,
//! turning each row's conditions into a decode step (model preset, GPU
//! preset, GPU count, dtypes, context), the error report, and `fit_params`.
//! Must not: change the model (that is `model`), read files or print.
//!
//! How a row becomes a decode step:
//! * GPU: the text before any parenthesis, through the preset aliases
//!   (`A100-80GB` is `A100-80GB-SXM`). A condition in parentheses (`power-capped
//!   330 W`) is kept in the report but not modelled: batch-1 decode is
//!   memory-bound, and the capped row c01 (9.53 ms) is within 2.5% of the
//!   uncapped c11 (9.31 ms) for the same model.
//! * dtype: the word before any parenthesis is the weight dtype (`int4
//!   (q4f16_1)` is int4). Activations and KV cache are the weight dtype when
//!   it can hold activations, else fp16 (q4f16 computes in fp16).
//! * context: TPOT averages the decode steps of one request; step k of
//!   `output_len` attends over `input_len + k` positions, so the mean context
//!   is `input_len + (output_len + 1) / 2` (integer division). Without an
//!   `output_len` the row describes the first step: `input_len + 1`.
//! * model: the preset of that name (`llama-3-8b` is an alias of `llama-3.1-8b`).

use crate::csv::{opt_f64, Csv};
use crate::error::GpuError;
use crate::model::{estimate_with, Bound, ModelParams, Profile, FITTED};
use crate::spec::gpu_preset;
use serde::{Deserialize, Serialize};
use wafer_ir::{DType, Graph};
use wafer_workloads::{decode_graph, preset, DecodeParams};

/// The embedded measurements (a verbatim copy of `shared/reference/gpu_measured.csv`).
pub const MEASURED_CSV: &str = include_str!("../data/gpu_measured.csv");
const MEASURED_SOURCE: &str = "gpu_measured.csv";

/// One row of the measurements, with its conditions interpreted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredRow {
    pub id: String,
    pub model: String,
    /// As the row writes it, e.g. `A100-80GB-SXM (power-capped 330 W)`.
    pub gpu_as_listed: String,
    /// The preset it resolves to.
    pub gpu: String,
    /// The parenthesised condition, if any (not modelled).
    pub condition: Option<String>,
    pub n_gpus: u32,
    pub dtype_as_listed: String,
    pub weight_dtype: DType,
    pub act_dtype: DType,
    pub batch: u64,
    pub input_len: u64,
    pub output_len: Option<u64>,
    pub framework: String,
    pub tpot_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub source: String,
}

impl MeasuredRow {
    /// Mean context of the decode steps the row's TPOT averages (see the module docs).
    pub fn context(&self) -> u64 {
        match self.output_len {
            Some(out) if out > 0 => self.input_len + out.div_ceil(2), // (out + 1) / 2
            _ => self.input_len + 1,
        }
    }

    /// The decode graph of this row's conditions.
    pub fn graph(&self) -> Result<Graph, GpuError> {
        let err = |m: String| GpuError::Calibration { id: self.id.clone(), message: m };
        let cfg = preset(&self.model).map_err(|e| err(e.to_string()))?;
        let p = DecodeParams {
            batch: self.batch,
            context: self.context(),
            weight_dtype: self.weight_dtype,
            act_dtype: self.act_dtype,
            kv_dtype: self.act_dtype,
        };
        decode_graph(&cfg, &p).map_err(|e| err(e.to_string()))
    }
}

/// The text before a parenthesis, and the text inside it.
fn split_condition(s: &str) -> (&str, Option<String>) {
    match s.split_once('(') {
        Some((head, rest)) => (head.trim(), Some(rest.trim_end_matches(')').trim().to_string())),
        None => (s.trim(), None),
    }
}

/// Every row of the embedded measurements.
pub fn measured_rows() -> Result<Vec<MeasuredRow>, GpuError> {
    let src = MEASURED_SOURCE;
    let csv = Csv::parse(MEASURED_CSV, src)?;
    let c = |n: &str| csv.col(n, src);
    let cols = [
        c("id")?,
        c("model")?,
        c("gpu")?,
        c("n_gpu")?,
        c("dtype")?,
        c("batch")?,
        c("input_len")?,
        c("output_len")?,
        c("framework")?,
        c("tpot_ms")?,
        c("ttft_ms")?,
        c("source")?,
    ];
    let [c_id, c_model, c_gpu, c_n, c_dtype, c_batch, c_in, c_out, c_fw, c_tpot, c_ttft, c_src] = cols;
    let mut rows = Vec::new();
    for (line, f) in &csv.rows {
        let bad = |m: String| GpuError::Table { source_name: src.into(), line: *line, message: m };
        let int = |i: usize, field: &str| -> Result<Option<u64>, GpuError> {
            if f[i].is_empty() {
                return Ok(None);
            }
            f[i].parse::<u64>().map(Some).map_err(|_| bad(format!("field `{field}` is `{}`, not a count", f[i])))
        };
        let req = |i: usize, field: &str| int(i, field)?.ok_or_else(|| bad(format!("field `{field}` is empty")));
        let (gpu_name, condition) = split_condition(f[c_gpu]);
        let gpu = gpu_preset(gpu_name).map_err(|e| bad(e.to_string()))?.name;
        let (dtype_name, _) = split_condition(f[c_dtype]);
        let weight_dtype: DType = dtype_name.parse().map_err(|e| bad(format!("{e}")))?;
        let act_dtype = if weight_dtype.is_activation_legal() { weight_dtype } else { DType::F16 };
        let n_gpus = req(c_n, "n_gpu")?;
        rows.push(MeasuredRow {
            id: f[c_id].to_string(),
            model: f[c_model].to_string(),
            gpu_as_listed: f[c_gpu].to_string(),
            gpu,
            condition,
            n_gpus: u32::try_from(n_gpus).map_err(|_| bad(format!("n_gpu {n_gpus} is too large")))?,
            dtype_as_listed: f[c_dtype].to_string(),
            weight_dtype,
            act_dtype,
            batch: req(c_batch, "batch")?,
            input_len: req(c_in, "input_len")?,
            output_len: int(c_out, "output_len")?,
            framework: f[c_fw].to_string(),
            tpot_ms: opt_f64(f[c_tpot], src, *line, "tpot_ms")?,
            ttft_ms: opt_f64(f[c_ttft], src, *line, "ttft_ms")?,
            source: f[c_src].to_string(),
        });
    }
    Ok(rows)
}

/// The model against one measured TPOT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRow {
    pub id: String,
    pub model: String,
    pub gpu: String,
    pub condition: Option<String>,
    pub n_gpus: u32,
    pub dtype: String,
    pub context: u64,
    pub framework: String,
    pub measured_ms: f64,
    pub predicted_ms: f64,
    /// `(predicted - measured) / measured`: positive when the model is slow.
    pub rel_error: f64,
    pub bound: Bound,
}

/// The model's error on every measured row with a `tpot_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub params: ModelParams,
    pub rows: Vec<CalibrationRow>,
    /// Median of `|rel_error|`.
    pub median_abs_rel_error: f64,
    /// Largest `|rel_error|`, and its row.
    pub max_abs_rel_error: f64,
    pub max_row: String,
}

/// Rows with a `tpot_ms`, with the profile of their decode step.
fn tpot_cases() -> Result<Vec<(MeasuredRow, Graph, f64)>, GpuError> {
    let mut out = Vec::new();
    for r in measured_rows()? {
        let Some(t) = r.tpot_ms else { continue };
        let g = r.graph()?;
        out.push((r, g, t));
    }
    Ok(out)
}

/// The error report with the fitted constants.
pub fn calibration_report() -> Result<CalibrationReport, GpuError> {
    calibration_report_with(&FITTED)
}

/// The error report with the given constants.
pub fn calibration_report_with(p: &ModelParams) -> Result<CalibrationReport, GpuError> {
    let mut rows = Vec::new();
    for (r, g, measured) in tpot_cases()? {
        let gpu = gpu_preset(&r.gpu)?;
        let e = estimate_with(&g, &gpu, r.n_gpus, p)
            .map_err(|e| GpuError::Calibration { id: r.id.clone(), message: e.to_string() })?;
        rows.push(CalibrationRow {
            id: r.id.clone(),
            model: r.model.clone(),
            gpu: r.gpu.clone(),
            condition: r.condition.clone(),
            n_gpus: r.n_gpus,
            dtype: r.dtype_as_listed.clone(),
            context: r.context(),
            framework: r.framework.clone(),
            measured_ms: measured,
            predicted_ms: e.tpot_ms,
            rel_error: (e.tpot_ms - measured) / measured,
            bound: e.bound,
        });
    }
    let mut errs: Vec<f64> = rows.iter().map(|r| r.rel_error.abs()).collect();
    errs.sort_by(f64::total_cmp);
    let median = match errs.len() {
        0 => 0.0,
        n if n % 2 == 1 => errs[n / 2],
        n => (errs[n / 2 - 1] + errs[n / 2]) / 2.0,
    };
    let worst = rows.iter().max_by(|a, b| a.rel_error.abs().total_cmp(&b.rel_error.abs()));
    Ok(CalibrationReport {
        params: *p,
        median_abs_rel_error: median,
        max_abs_rel_error: worst.map_or(0.0, |r| r.rel_error.abs()),
        max_row: worst.map_or(String::new(), |r| r.id.clone()),
        rows,
    })
}

/// Grid of `hbm_efficiency`: 0.400, 0.401, ..., 1.000.
const EFFICIENCY_GRID: std::ops::RangeInclusive<u32> = 400..=1000;

/// Recomputes the fitted constants from the measurements: for each
/// `hbm_efficiency` on the grid, the kernel overhead and collective latency
/// (both >= 0) that minimise the sum of squared relative errors have a
/// closed form (the prediction is linear in them); the grid point with the
/// smallest sum wins. Deterministic; unrounded.
pub fn fit_params() -> Result<ModelParams, GpuError> {
    let cases = fit_cases()?;
    fit_on(&cases).ok_or_else(|| GpuError::Calibration { id: "-".into(), message: "no rows with tpot_ms".into() })
}

/// Each TPOT row as (id, profile of its step, measured seconds).
fn fit_cases() -> Result<Vec<(String, Profile, f64)>, GpuError> {
    let mut cases = Vec::new();
    for (r, g, measured) in tpot_cases()? {
        let gpu = gpu_preset(&r.gpu)?;
        let prof = Profile::new(&g, &gpu, r.n_gpus, &crate::model::GpuOptions::default())
            .map_err(|e| GpuError::Calibration { id: r.id.clone(), message: e.to_string() })?;
        cases.push((r.id, prof, measured * 1e-3));
    }
    Ok(cases)
}

/// The fit on the given cases; `None` when there are none.
fn fit_on(cases: &[(String, Profile, f64)]) -> Option<ModelParams> {
    let mut best: Option<(f64, ModelParams)> = None;
    for i in EFFICIENCY_GRID {
        let eta = i as f64 / 1000.0;
        // Residual of case j: a_j + x_j * kernel_s + y_j * collective_s.
        let terms: Vec<(f64, f64, f64)> = cases
            .iter()
            .map(|(_, p, m)| {
                let (fixed, kernels, colls) = p.terms(eta);
                ((fixed - m) / m, kernels / m, colls / m)
            })
            .collect();
        for (k, c) in nnls2_candidates(&terms) {
            let e = sse2(&terms, k, c);
            if best.as_ref().is_none_or(|b| e < b.0) {
                let p =
                    ModelParams { hbm_efficiency: eta, kernel_overhead_us: k * 1e6, collective_latency_us: c * 1e6 };
                best = Some((e, p));
            }
        }
    }
    best.map(|b| b.1)
}

/// Sum of squared residuals `a + x·k + y·c` over `terms` `(a, x, y)`.
pub(crate) fn sse2(terms: &[(f64, f64, f64)], k: f64, c: f64) -> f64 {
    terms.iter().map(|&(a, x, y)| (a + x * k + y * c).powi(2)).sum()
}

/// Candidates for the non-negative least squares `min Σ (a + x·k + y·c)²`
/// with `k, c ≥ 0` over `terms` `(a, x, y)`: the unconstrained optimum when
/// it is non-negative and each one-variable optimum on the boundary (the
/// caller keeps the one with the smallest [`sse2`]). Shared by the decode and
/// prefill fits.
pub(crate) fn nnls2_candidates(terms: &[(f64, f64, f64)]) -> Vec<(f64, f64)> {
    let (sxx, sxy, syy, sxa, sya) = terms.iter().fold((0.0, 0.0, 0.0, 0.0, 0.0), |s, &(a, x, y)| {
        (s.0 + x * x, s.1 + x * y, s.2 + y * y, s.3 + x * a, s.4 + y * a)
    });
    let det = sxx * syy - sxy * sxy;
    let mut candidates = vec![(0.0, 0.0)];
    if sxx > 0.0 {
        candidates.push(((-sxa / sxx).max(0.0), 0.0));
    }
    if syy > 0.0 {
        candidates.push((0.0, (-sya / syy).max(0.0)));
    }
    if det.abs() > 0.0 {
        let k = (-sxa * syy + sya * sxy) / det;
        let c = (-sya * sxx + sxa * sxy) / det;
        if k >= 0.0 && c >= 0.0 {
            candidates.push((k, c));
        }
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_conditions_are_interpreted_as_documented() {
        let rows = measured_rows().unwrap();
        let by = |id: &str| rows.iter().find(|r| r.id == id).unwrap().clone();
        let c01 = by("c01");
        assert_eq!((c01.gpu.as_str(), c01.condition.as_deref()), ("A100-80GB-SXM", Some("power-capped 330 W")));
        assert_eq!(c01.context(), 5 + 100);
        assert_eq!(by("c13").gpu, "A100-80GB-SXM");
        let c18 = by("c18");
        assert_eq!((c18.weight_dtype, c18.act_dtype, c18.gpu.as_str()), (DType::Int4, DType::F16, "RTX-4090"));
        assert_eq!(by("c17").context(), 129, "no output_len: the first generated token");
        assert!(by("c12").graph().is_ok(), "llama-3-8b is a preset alias");
        assert_eq!(rows.iter().filter(|r| r.tpot_ms.is_some()).count(), 17);
    }

    #[test]
    fn the_median_is_the_middle_absolute_error() {
        let r = calibration_report().unwrap();
        let mut e: Vec<f64> = r.rows.iter().map(|x| x.rel_error.abs()).collect();
        e.sort_by(f64::total_cmp);
        assert_eq!(r.median_abs_rel_error, e[e.len() / 2]);
        assert_eq!(r.max_abs_rel_error, *e.last().unwrap());
    }
}

#[cfg(test)]
mod fit_tests {
    use super::*;

    #[test]
    fn fitted_constants_are_what_the_fit_recomputes() {
        let f = fit_params().unwrap();
        println!("fit: {f:?}");
        // FITTED is the fit rounded: efficiency to the grid step, overheads to 0.01 / 0.1 µs.
        assert_eq!(FITTED.hbm_efficiency, f.hbm_efficiency, "{f:?}");
        assert!((FITTED.kernel_overhead_us - f.kernel_overhead_us).abs() <= 0.005, "{f:?}");
        assert!((FITTED.collective_latency_us - f.collective_latency_us).abs() <= 0.05, "{f:?}");
    }

    /// Guard against overfitting: each row predicted by constants fitted
    /// without it stays within the acceptance bounds.
    #[test]
    fn leave_one_out_errors_stay_within_the_acceptance_bounds() {
        let cases = fit_cases().unwrap();
        let mut errs = Vec::new();
        for (i, (id, prof, measured)) in cases.iter().enumerate() {
            let rest: Vec<_> = cases.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| c.clone()).collect();
            let p = fit_on(&rest).unwrap();
            let e = (prof.evaluate(&p).tpot_ms * 1e-3 - measured) / measured;
            println!("{id}: held out, error {:+.1}% (fit {p:?})", e * 100.0);
            errs.push(e.abs());
        }
        errs.sort_by(f64::total_cmp);
        let (median, max) = (errs[errs.len() / 2], errs[errs.len() - 1]);
        println!("leave-one-out: median {:.1}%, max {:.1}%", median * 100.0, max * 100.0);
        assert!(median <= 0.10 && max <= 0.25, "median {median}, max {max}");
    }
}

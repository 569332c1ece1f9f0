//! The GPU prefill model: time to first token (TTFT) of a prompt on N
//! tensor-parallel GPUs.
//!
//! Owns: how a prefill graph's ops become kernels (attention fused, as flash
//! attention runs it), the per-kernel roofline at a fitted fraction of the
//! dense peak, the per-kernel and fixed framework overheads, and their fitted
//! values (`PREFILL_FITTED`) with the fit (`fit_prefill`) on the TTFT rows of
//! the embedded `gpu_measured.csv`. Must not: change the decode model or its
//! constants (`model::FITTED`), read files or print.
//!
//! The model, per GPU (tensor parallel exactly as the decode model splits
//! the graph, `model::Profile`):
//! * every graph op is one kernel, except that each layer's attention
//!   (scores, soft-capping, softmax, value) is one fused kernel reading Q,
//!   the KV cache and writing the output (the scores never reach HBM), with
//!   the causal-triangle FLOPs of the graph's cost model;
//! * a kernel takes `max(bytes / (hbm_efficiency × HBM bandwidth),
//!   flops / (compute_efficiency × dense peak)) + kernel_overhead`;
//!   `hbm_efficiency` is the decode model's (fitted on the TPOT rows);
//! * collectives as in decode (the decode model's collective latency plus
//!   ring bytes over the link), now of `prompt × hidden` activations;
//! * plus one `fixed_overhead` per request (scheduling, the runtime's
//!   set-up of a new sequence, the sampling of the first token's host
//!   round trip).
//!
//! `compute_efficiency`, `kernel_overhead_us` and `fixed_overhead_us` are
//! fitted to the 13 `ttft_ms` rows by `fit_prefill` (see `PREFILL_FITTED`).
//! All those rows are batch 1, cached 0, on A100s with fp16: chunked prefill
//! (`cached > 0`), other GPUs and batches are extrapolations.

use crate::calibrate::measured_rows;
use crate::error::GpuError;
use crate::model::{bound_of, Bound, GpuOptions, MemoryUse, OpLoad, Profile, FITTED};
use crate::spec::{gpu_preset, GpuSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wafer_ir::{op_cost, DType, Graph, OpKind};
use wafer_workloads::{prefill_graph, preset, PrefillParams};

/// The constants of the prefill model that are not datasheet figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrefillConstants {
    /// Fraction of the dense peak that prefill GEMMs (and fused attention) sustain.
    pub compute_efficiency: f64,
    /// Fixed time per prefill kernel (launch, wave tail), µs.
    pub kernel_overhead_us: f64,
    /// Fixed time per request besides the kernels, µs.
    pub fixed_overhead_us: f64,
}

/// Fitted to the 13 `ttft_ms` rows of `shared/reference/gpu_measured.csv`
/// (c13–c17, c20–c27) by `fit_prefill` (grid over `compute_efficiency` in
/// steps of 0.001, least squares of the relative error for the two overheads
/// at each grid point), then rounded as written. The test
/// `prefill_constants_are_what_the_fit_recomputes` re-runs the fit.
///
/// The fit puts the fixed per-request overhead at its bound, 0: the
/// short-prompt rows' excess over the roofline grows with the model's kernel
/// count (llama-2-70b on 8 GPUs has 2.5× the kernels of llama-2-7b), which the
/// per-kernel overhead explains and a per-request constant does not. The
/// term stays in the model so that a refit on other rows can use it.
pub const PREFILL_FITTED: PrefillConstants =
    PrefillConstants { compute_efficiency: 0.807, kernel_overhead_us: 15.76, fixed_overhead_us: 0.0 };

/// Where the prefill's time goes, ms; the parts add up to `ttft_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PrefillBreakdown {
    /// Reading weights: memory time not hidden under the kernel's math.
    pub weights_ms: f64,
    /// Reading and writing the KV cache: memory time not hidden under math.
    pub kv_cache_ms: f64,
    /// Activation traffic: memory time not hidden under math.
    pub activations_ms: f64,
    /// Math at `compute_efficiency` of the dense peak, in every kernel.
    pub compute_ms: f64,
    /// Fixed per-kernel time.
    pub kernel_overhead_ms: f64,
    /// Fixed per-request time.
    pub fixed_overhead_ms: f64,
    /// Collectives (latency and bytes).
    pub communication_ms: f64,
}

impl PrefillBreakdown {
    pub fn total_ms(&self) -> f64 {
        self.weights_ms
            + self.kv_cache_ms
            + self.activations_ms
            + self.compute_ms
            + self.kernel_overhead_ms
            + self.fixed_overhead_ms
            + self.communication_ms
    }
}

/// The predicted prefill of one prompt (per sequence of the batch) on N GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefillEstimate {
    pub model: String,
    pub gpu: String,
    /// All GPUs: `tensor_parallel × pipeline_stages`.
    pub n_gpus: u32,
    pub tensor_parallel: u32,
    pub pipeline_stages: u32,
    pub batch: u64,
    /// New tokens per sequence.
    pub prompt: u64,
    /// Positions already in the KV cache before the prompt.
    pub cached: u64,
    pub weight_dtype: DType,
    pub act_dtype: DType,
    pub kv_dtype: DType,
    /// Time to first token: the whole prefill step, ms.
    pub ttft_ms: f64,
    /// Prompt tokens per second of the whole batch: `batch × prompt × 1000 / ttft_ms`.
    pub prefill_tokens_per_s: f64,
    /// The largest of memory-limited kernels, math-limited kernels, overheads
    /// (per kernel and fixed) and collectives.
    pub bound: Bound,
    pub breakdown: PrefillBreakdown,
    /// Time by kernel kind (`attention` for the fused attention), plus
    /// `all_reduce`, `all_gather` and `fixed`, ms; in name order.
    pub by_kind_ms: BTreeMap<String, f64>,
    pub kernels: u64,
    pub collectives: u64,
    /// Sends between consecutive pipeline stages.
    pub stage_sends: u64,
    /// Memory per GPU with the KV cache after the prompt.
    pub memory: MemoryUse,
    pub params: PrefillConstants,
    /// HBM efficiency and collective latency, from the decode model's fit.
    pub hbm_efficiency: f64,
    pub collective_latency_us: f64,
}

/// A prefill graph laid out on N GPUs with its attention fused: what the fit evaluates.
#[derive(Debug, Clone)]
pub(crate) struct PrefillProfile {
    pub(crate) base: Profile,
    prompt: u64,
    cached: u64,
    /// The graph op each kernel of `base.ops` starts at (a fused attention
    /// kernel: its scores op), by name.
    pub(crate) kernel_ops: Vec<String>,
}

impl PrefillProfile {
    pub(crate) fn new(g: &Graph, gpu: &GpuSpec, n_gpus: u32, o: &GpuOptions) -> Result<PrefillProfile, GpuError> {
        PrefillProfile::with_stages(g, gpu, n_gpus, 1, o)
    }

    /// `n_gpus`-way tensor parallelism in each of `pp` pipeline stages.
    pub(crate) fn with_stages(
        g: &Graph,
        gpu: &GpuSpec,
        n_gpus: u32,
        pp: u32,
        o: &GpuOptions,
    ) -> Result<PrefillProfile, GpuError> {
        let mut base = Profile::with_stages(g, gpu, n_gpus, pp, o)?;
        // Fuse each run scores .. value into one kernel: its FLOPs and KV reads
        // summed, activations only Q in and the output out.
        let mut fused: Vec<OpLoad> = Vec::with_capacity(base.ops.len());
        let mut kernel_ops: Vec<String> = Vec::with_capacity(base.ops.len());
        let mut open: Option<OpLoad> = None;
        for (op, load) in g.ops.iter().zip(base.ops.iter()) {
            match (&op.kind, open.as_mut()) {
                (OpKind::AttnScores { .. }, _) => {
                    let c = op_cost(g, op);
                    // The share of this op's activation bytes that is Q, at the op's split.
                    let q = g.tensor(op.inputs[0]).bytes() as f64;
                    let split = if c.act_bytes > 0 { c.act_bytes as f64 / load.act_bytes.max(1e-30) } else { 1.0 };
                    open = Some(OpLoad { kind: "attention", act_bytes: q / split, ..load.clone() });
                    kernel_ops.push(op.name.clone());
                }
                (OpKind::AttnValue { .. }, Some(f)) => {
                    let c = op_cost(g, op);
                    let out = g.tensor(op.outputs[0]).bytes() as f64;
                    let split = if c.act_bytes > 0 { c.act_bytes as f64 / load.act_bytes.max(1e-30) } else { 1.0 };
                    f.flops += load.flops;
                    f.kv_bytes += load.kv_bytes;
                    f.act_bytes += out / split;
                    fused.push(open.take().expect("open attention kernel"));
                }
                (_, Some(f)) => f.flops += load.flops, // softcap, softmax: inside the fused kernel
                (_, None) => {
                    fused.push(load.clone());
                    kernel_ops.push(op.name.clone());
                }
            }
        }
        base.ops = fused;
        Ok(PrefillProfile { base, prompt: g.new_tokens, cached: g.cached(), kernel_ops })
    }

    /// The terms the fit needs at `compute_efficiency`: roofline time of all
    /// kernels plus the collectives (their decode-fitted latency included),
    /// s; the kernel count. Time = first + kernels × kernel overhead + fixed.
    fn terms(&self, compute_efficiency: f64) -> (f64, f64) {
        let b = &self.base;
        let bw = FITTED.hbm_efficiency * b.hbm_bytes_per_s;
        let peak = compute_efficiency * b.peak_flops;
        let roof: f64 =
            b.ops.iter().map(|o| ((o.weight_bytes + o.kv_bytes + o.act_bytes) / bw).max(o.flops / peak)).sum();
        let comm: f64 = b
            .collectives
            .iter()
            .map(|&(k, bytes)| FITTED.collective_latency_us * 1e-6 + b.collective_bytes_s(k, bytes))
            .sum();
        (roof + comm, b.ops.len() as f64)
    }

    pub(crate) fn evaluate(&self, p: &PrefillConstants) -> PrefillEstimate {
        let b = &self.base;
        let bw = FITTED.hbm_efficiency * b.hbm_bytes_per_s;
        let peak = p.compute_efficiency * b.peak_flops;
        let k_ms = p.kernel_overhead_us * 1e-3;
        let mut br = PrefillBreakdown::default();
        let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
        let (mut memory_limited, mut math_limited) = (0.0, 0.0);
        for o in &b.ops {
            let bytes = o.weight_bytes + o.kv_bytes + o.act_bytes;
            let mem = bytes / bw * 1e3;
            let math = o.flops / peak * 1e3;
            br.compute_ms += math;
            let exposed = (mem - math).max(0.0);
            if exposed > 0.0 && bytes > 0.0 {
                br.weights_ms += exposed * o.weight_bytes / bytes;
                br.kv_cache_ms += exposed * o.kv_bytes / bytes;
                br.activations_ms += exposed * o.act_bytes / bytes;
            }
            if math > mem {
                math_limited += math;
            } else {
                memory_limited += mem;
            }
            br.kernel_overhead_ms += k_ms;
            *by_kind.entry(o.kind.to_string()).or_default() += mem.max(math) + k_ms;
        }
        for &(kind, bytes) in &b.collectives {
            let t = (FITTED.collective_latency_us * 1e-6 + b.collective_bytes_s(kind, bytes)) * 1e3;
            br.communication_ms += t;
            *by_kind.entry(kind.name().to_string()).or_default() += t;
        }
        br.fixed_overhead_ms = p.fixed_overhead_us * 1e-3;
        by_kind.insert("fixed".into(), br.fixed_overhead_ms);
        let ttft_ms = br.total_ms();
        let overhead = br.kernel_overhead_ms + br.fixed_overhead_ms;
        PrefillEstimate {
            model: b.model.clone(),
            gpu: b.gpu.clone(),
            n_gpus: b.n * b.pp,
            tensor_parallel: b.n,
            pipeline_stages: b.pp,
            batch: b.batch,
            prompt: self.prompt,
            cached: self.cached,
            weight_dtype: b.dtypes[0],
            act_dtype: b.dtypes[1],
            kv_dtype: b.dtypes[2],
            ttft_ms,
            prefill_tokens_per_s: (b.batch * self.prompt) as f64 * 1e3 / ttft_ms,
            bound: bound_of(memory_limited, math_limited, overhead, br.communication_ms),
            breakdown: br,
            by_kind_ms: by_kind,
            kernels: b.ops.len() as u64,
            collectives: b.collectives().0,
            stage_sends: b.collectives().1,
            memory: b.memory,
            params: *p,
            hbm_efficiency: FITTED.hbm_efficiency,
            collective_latency_us: FITTED.collective_latency_us,
        }
    }
}

/// Predicts the prefill step `graph` (from `prefill_graph`) on `n_gpus`
/// tensor-parallel `gpu`s with the fitted constants. The graph must have
/// passed the verifier.
pub fn estimate_prefill(
    graph: &Graph,
    gpu: &GpuSpec,
    n_gpus: u32,
    o: &GpuOptions,
) -> Result<PrefillEstimate, GpuError> {
    estimate_prefill_pipeline(graph, gpu, n_gpus, 1, o)
}

/// `estimate_prefill` with `pp` pipeline stages of `n_gpus` tensor-parallel
/// GPUs each: the prompt passes the stages one after another (no
/// micro-batching), one send of its activations between consecutive stages.
pub fn estimate_prefill_pipeline(
    graph: &Graph,
    gpu: &GpuSpec,
    n_gpus: u32,
    pp: u32,
    o: &GpuOptions,
) -> Result<PrefillEstimate, GpuError> {
    Ok(PrefillProfile::with_stages(graph, gpu, n_gpus, pp, o)?.evaluate(&PREFILL_FITTED))
}

/// The model against one measured TTFT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtftRow {
    pub id: String,
    pub model: String,
    pub gpu: String,
    pub n_gpus: u32,
    pub dtype: String,
    pub prompt: u64,
    pub framework: String,
    pub measured_ms: f64,
    pub predicted_ms: f64,
    /// `(predicted - measured) / measured`: positive when the model is slow.
    pub rel_error: f64,
    /// The same row predicted by constants fitted without it.
    pub loo_rel_error: f64,
    pub bound: Bound,
}

/// The prefill model's error on every measured row with a `ttft_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtftCalibrationReport {
    pub params: PrefillConstants,
    pub rows: Vec<TtftRow>,
    pub median_abs_rel_error: f64,
    pub max_abs_rel_error: f64,
    pub max_row: String,
    /// Median and max of `|loo_rel_error|`.
    pub loo_median_abs_rel_error: f64,
    pub loo_max_abs_rel_error: f64,
}

/// A TTFT row as (row, profile of its prefill, measured s).
type Case = (crate::calibrate::MeasuredRow, PrefillProfile, f64);

/// Each row with a `ttft_ms`: a prefill of `input_len` tokens from an empty
/// cache at the row's batch, GPU and dtypes (interpreted as for TPOT, see
/// `calibrate`), its KV cache in the activation dtype.
fn ttft_cases() -> Result<Vec<Case>, GpuError> {
    let mut out = Vec::new();
    for r in measured_rows()? {
        let Some(t) = r.ttft_ms else { continue };
        let err = |m: String| GpuError::Calibration { id: r.id.clone(), message: m };
        let cfg = preset(&r.model).map_err(|e| err(e.to_string()))?;
        let p = PrefillParams {
            batch: r.batch,
            prompt: r.input_len,
            cached: 0,
            weight_dtype: r.weight_dtype,
            act_dtype: r.act_dtype,
            kv_dtype: r.act_dtype,
        };
        let g = prefill_graph(&cfg, &p).map_err(|e| err(e.to_string()))?;
        let gpu = gpu_preset(&r.gpu)?;
        let prof = PrefillProfile::new(&g, &gpu, r.n_gpus, &GpuOptions::default()).map_err(|e| err(e.to_string()))?;
        out.push((r, prof, t * 1e-3));
    }
    Ok(out)
}

/// Grid of `compute_efficiency`: 0.200, 0.201, ..., 1.000.
const COMPUTE_GRID: std::ops::RangeInclusive<u32> = 200..=1000;

/// The least-squares fit of the relative errors on `cases`: for each
/// `compute_efficiency` on the grid, the kernel and fixed overheads (both
/// at least 0) in closed form (the prediction is linear in them); the grid point
/// with the smallest sum of squares wins. Deterministic; unrounded.
fn fit_on(cases: &[&Case]) -> Option<PrefillConstants> {
    let mut best: Option<(f64, PrefillConstants)> = None;
    for i in COMPUTE_GRID {
        let phi = i as f64 / 1000.0;
        // Residual of case j: a_j + x_j * kernel_s + y_j * fixed_s.
        let terms: Vec<(f64, f64, f64)> = cases
            .iter()
            .map(|(_, p, m)| {
                let (fixed, kernels) = p.terms(phi);
                ((fixed - m) / m, kernels / m, 1.0 / m)
            })
            .collect();
        for (k, c) in crate::calibrate::nnls2_candidates(&terms) {
            let e = crate::calibrate::sse2(&terms, k, c);
            if best.as_ref().is_none_or(|b| e < b.0) {
                let p = PrefillConstants {
                    compute_efficiency: phi,
                    kernel_overhead_us: k * 1e6,
                    fixed_overhead_us: c * 1e6,
                };
                best = Some((e, p));
            }
        }
    }
    best.map(|b| b.1)
}

/// Recomputes the prefill constants from the TTFT rows (unrounded).
pub fn fit_prefill() -> Result<PrefillConstants, GpuError> {
    let cases = ttft_cases()?;
    fit_on(&cases.iter().collect::<Vec<_>>())
        .ok_or_else(|| GpuError::Calibration { id: "-".into(), message: "no rows with ttft_ms".into() })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The TTFT error report with the fitted constants, and each row's
/// leave-one-out error (the fit re-run without that row).
pub fn ttft_calibration_report() -> Result<TtftCalibrationReport, GpuError> {
    ttft_calibration_report_with(&PREFILL_FITTED)
}

/// The TTFT error report with the given constants (leave-one-out refits regardless).
pub fn ttft_calibration_report_with(p: &PrefillConstants) -> Result<TtftCalibrationReport, GpuError> {
    let cases = ttft_cases()?;
    let mut rows = Vec::new();
    for (i, (r, prof, measured)) in cases.iter().enumerate() {
        let e = prof.evaluate(p);
        let rest: Vec<&Case> = cases.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| c).collect();
        let loo = fit_on(&rest).map_or(f64::NAN, |q| prof.evaluate(&q).ttft_ms);
        let m = measured * 1e3;
        rows.push(TtftRow {
            id: r.id.clone(),
            model: r.model.clone(),
            gpu: r.gpu.clone(),
            n_gpus: r.n_gpus,
            dtype: r.dtype_as_listed.clone(),
            prompt: r.input_len,
            framework: r.framework.clone(),
            measured_ms: m,
            predicted_ms: e.ttft_ms,
            rel_error: (e.ttft_ms - m) / m,
            loo_rel_error: (loo - m) / m,
            bound: e.bound,
        });
    }
    let worst = rows.iter().max_by(|a, b| a.rel_error.abs().total_cmp(&b.rel_error.abs()));
    Ok(TtftCalibrationReport {
        params: *p,
        median_abs_rel_error: median(rows.iter().map(|r| r.rel_error.abs()).collect()),
        max_abs_rel_error: worst.map_or(0.0, |r| r.rel_error.abs()),
        max_row: worst.map_or(String::new(), |r| r.id.clone()),
        loo_median_abs_rel_error: median(rows.iter().map(|r| r.loo_rel_error.abs()).collect()),
        loo_max_abs_rel_error: rows.iter().map(|r| r.loo_rel_error.abs()).fold(0.0, f64::max),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_constants_are_what_the_fit_recomputes() {
        let f = fit_prefill().unwrap();
        println!("fit: {f:?}");
        let r = ttft_calibration_report_with(&f).unwrap();
        for row in &r.rows {
            println!(
                "{} {} {}x{} N={} {}: measured {} ms, predicted {:.1} ms ({:+.1}%), held out {:+.1}%, {:?}",
                row.id,
                row.model,
                row.n_gpus,
                row.gpu,
                row.prompt,
                row.framework,
                row.measured_ms,
                row.predicted_ms,
                row.rel_error * 100.0,
                row.loo_rel_error * 100.0,
                row.bound
            );
        }
        println!(
            "median {:.1}% max {:.1}% ({}); leave-one-out median {:.1}% max {:.1}%",
            r.median_abs_rel_error * 100.0,
            r.max_abs_rel_error * 100.0,
            r.max_row,
            r.loo_median_abs_rel_error * 100.0,
            r.loo_max_abs_rel_error * 100.0
        );
        assert_eq!(PREFILL_FITTED.compute_efficiency, f.compute_efficiency, "{f:?}");
        assert!((PREFILL_FITTED.kernel_overhead_us - f.kernel_overhead_us).abs() <= 0.05, "{f:?}");
        assert!((PREFILL_FITTED.fixed_overhead_us - f.fixed_overhead_us).abs() <= 0.05, "{f:?}");
    }

    /// The acceptance bounds, on the fitted constants and held out row by row.
    #[test]
    fn ttft_errors_and_leave_one_out_errors_stay_within_the_acceptance_bounds() {
        let r = ttft_calibration_report().unwrap();
        assert_eq!(r.rows.len(), 13, "c13-c17, c20-c27 have a ttft_ms");
        assert!(r.median_abs_rel_error <= 0.15 && r.max_abs_rel_error <= 0.35, "{r:?}");
        assert!(r.loo_median_abs_rel_error <= 0.15 && r.loo_max_abs_rel_error <= 0.35, "{r:?}");
    }

    fn llama_8b(prompt: u64, cached: u64) -> PrefillEstimate {
        let cfg = preset("llama-3.1-8b").unwrap();
        let g = prefill_graph(&cfg, &PrefillParams { prompt, cached, ..Default::default() }).unwrap();
        estimate_prefill(&g, &gpu_preset("H100-SXM").unwrap(), 1, &GpuOptions::default()).unwrap()
    }

    #[test]
    fn attention_is_fused_so_long_prompts_never_write_their_scores() {
        let e = llama_8b(32768, 0);
        // The graph's literal scores tensor alone is 32k × 32 heads × 32k × 2 B = 64 GiB per layer.
        // Unfused, scores and probabilities would each cross HBM twice: 32 layers × 4 × 64 GiB, ~3 s
        // at H100 bandwidth. Fused, the attention kernels are limited by their math alone.
        let cfg = preset("llama-3.1-8b").unwrap();
        let g = prefill_graph(&cfg, &PrefillParams { prompt: 32768, ..Default::default() }).unwrap();
        let s = wafer_ir::graph_stats(&g);
        let attn_flops =
            (s.by_kind["attn_scores"].flops + s.by_kind["attn_value"].flops + s.by_kind["softmax"].flops) as f64;
        let peak = PREFILL_FITTED.compute_efficiency * gpu_preset("H100-SXM").unwrap().peak_flops(DType::Bf16).unwrap();
        let math_ms = attn_flops / peak * 1e3 + 32.0 * PREFILL_FITTED.kernel_overhead_us * 1e-3;
        assert!((e.by_kind_ms["attention"] - math_ms).abs() < 1e-6 * math_ms, "{:?} vs {math_ms}", e.by_kind_ms);
        assert!(e.breakdown.activations_ms < 0.1 * e.ttft_ms, "{:?}", e.breakdown);
        assert_eq!(e.bound, Bound::Compute);
        assert!(e.by_kind_ms["attention"] > 0.2 * e.ttft_ms, "causal attention is a large share at 32k");
    }

    #[test]
    fn ttft_grows_with_the_prompt_and_with_what_is_cached_before_it() {
        let t: Vec<f64> = [256, 2048, 32768].iter().map(|&n| llama_8b(n, 0).ttft_ms).collect();
        assert!(t[0] < t[1] && t[1] < t[2], "{t:?}");
        let chunk = llama_8b(2048, 30000);
        assert!(chunk.ttft_ms > t[1], "the chunk attends over 30k cached positions too");
        assert_eq!((chunk.prompt, chunk.cached), (2048, 30000));
        let parts = chunk.breakdown.total_ms();
        assert!((parts - chunk.ttft_ms).abs() < 1e-9 * chunk.ttft_ms);
    }
}

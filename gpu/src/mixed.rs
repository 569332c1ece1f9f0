//! Prefill mixed into decode on the GPU baseline (chunked prefill, as vLLM
//! and Sarathi-Serve schedule it): while `B` sequences decode, a new
//! request's prompt of `N` tokens is cut into chunks of `c`, and each step
//! runs the `B` decode tokens and one chunk together.
//!
//! Owns: how one mixed step's kernels combine the decode model's and the
//! prefill model's loads, and the walk over a prompt's chunks. Must not:
//! change either model's constants, read files or print.
//!
//! The model of one mixed step (per GPU, split over the GPUs as each model
//! splits its graph):
//! * the step runs the decode graph's kernels; a kernel that the chunk's
//!   prefill graph also has (same op name; the chunk's attention is its fused
//!   kernel, paired with the decode step's scores op) processes both row
//!   sets in one launch: its weights are read **once**, its KV-cache and
//!   activation bytes are both sides', and its math is the decode FLOPs at
//!   the dense peak plus the chunk's at the prefill model's fitted fraction
//!   of it (`PREFILL_FITTED.compute_efficiency`); time = max(bytes at the
//!   decode model's HBM efficiency, math) + a per-kernel overhead;
//! * that overhead is the decode (`FITTED`) and prefill (`PREFILL_FITTED`)
//!   per-kernel overheads weighted by each side's rows (`B` and `c`), so a
//!   step with a one-token chunk is a decode step and one with no decoders a
//!   prefill chunk. **No measured mixed step is in the reference data**: this
//!   blend is an assumption, stated, not a fit;
//! * kernels only one side has run as that side's model prices them; the
//!   collectives pair one to one (one launch latency, both sides' bytes);
//! * the prompt's first token comes after its last chunk's step, plus the
//!   prefill model's fixed per-request overhead; the decoders' KV cache and
//!   the new sequence's (after its prompt) must fit beside the weights.

use crate::error::GpuError;
use crate::model::{bound_of, Bound, GpuOptions, Profile, FITTED};
use crate::prefill::{PrefillProfile, PREFILL_FITTED};
use crate::spec::GpuSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wafer_ir::Graph;
use wafer_workloads::{decode_graph, prefill_graph, DecodeParams, ModelConfig, PrefillParams};

/// Most chunks one prompt may be cut into (each is a graph built and priced).
pub const MAX_MIX_CHUNKS: u64 = 4096;

/// One mixed step: the decode batch and one chunk of the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedStep {
    /// Prompt tokens in this chunk.
    pub chunk_tokens: u64,
    /// Positions of the new sequence already cached before this chunk.
    pub cached: u64,
    pub step_ms: f64,
    pub bound: Bound,
}

/// A prompt prefilled in chunks while a batch decodes, on N GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedEstimate {
    pub model: String,
    pub gpu: String,
    pub n_gpus: u32,
    pub tensor_parallel: u32,
    pub pipeline_stages: u32,
    /// Sequences decoding beside the prompt.
    pub decode_batch: u64,
    /// Their context.
    pub decode_context: u64,
    pub prompt: u64,
    pub cached: u64,
    /// Prompt tokens per step.
    pub chunk: u64,
    pub chunks: u64,
    /// The new request's time to first token under load: every mixed step
    /// of its prompt plus the fixed per-request overhead, ms.
    pub ttft_ms: f64,
    /// The decoders' mean time per token while the prompt is in, ms.
    pub decode_tpot_ms: f64,
    /// Their time per token without the prompt, ms.
    pub decode_alone_tpot_ms: f64,
    /// The prompt prefilled alone in one step (batch 1): what the decoders
    /// would wait between two tokens if it were not mixed, ms.
    pub prefill_alone_ttft_ms: f64,
    /// Decode plus prompt tokens per second over the mixed steps.
    pub tokens_per_s: f64,
    /// The first and the last mixed step (the last attends over the most).
    pub first_step: MixedStep,
    pub last_step: MixedStep,
    /// Weights and both KV caches per GPU, and what may hold them, bytes.
    pub need_bytes_per_gpu: u64,
    pub usable_bytes_per_gpu: u64,
}

/// A prompt of `prompt.prompt` tokens over `prompt.cached` cached (its
/// `batch` must be 1: one new request) prefilled `chunk` tokens a step
/// beside the decode step `decode` (its batch and context), on `n_gpus`
/// tensor-parallel GPUs in `pp` stages.
#[allow(clippy::too_many_arguments)]
pub fn estimate_mixed(
    cfg: &ModelConfig,
    decode: &DecodeParams,
    prompt: &PrefillParams,
    chunk: u64,
    gpu: &GpuSpec,
    n_gpus: u32,
    pp: u32,
    o: &GpuOptions,
) -> Result<MixedEstimate, GpuError> {
    let bad = |field: &'static str, value: u64, allowed: String| GpuError::InvalidOption {
        field,
        value: value.to_string(),
        allowed,
    };
    if prompt.batch != 1 {
        return Err(bad(
            "batch",
            prompt.batch,
            "1 for the mixed prompt (one new request; --batch is the decoders')".into(),
        ));
    }
    let chunks = prompt.prompt.div_ceil(chunk.max(1));
    if chunk == 0 || chunks > MAX_MIX_CHUNKS {
        return Err(bad(
            "mix-chunk",
            chunk,
            format!("1..={} prompt tokens per step, at most {MAX_MIX_CHUNKS} chunks of the prompt", prompt.prompt),
        ));
    }
    let g =
        |r: Result<Graph, wafer_workloads::BuildError>| r.map_err(|e| GpuError::MixedGraph { message: e.to_string() });
    let dg = g(decode_graph(cfg, decode))?;
    let dprof = Profile::with_stages(&dg, gpu, n_gpus, pp, o)?;
    let alone = dprof.evaluate(&FITTED);
    let whole = g(prefill_graph(cfg, prompt))?;
    let prefill_alone = PrefillProfile::with_stages(&whole, gpu, n_gpus, pp, o)?.evaluate(&PREFILL_FITTED);
    // Memory: the weights once, the decoders' caches and the new sequence's after its prompt.
    let need =
        dprof.memory.weight_bytes_per_gpu + dprof.memory.kv_bytes_per_gpu + prefill_alone.memory.kv_bytes_per_gpu;
    let usable = dprof.memory.usable_bytes_per_gpu;
    if need > usable {
        return Err(GpuError::MixedDoesNotFit {
            gpu: gpu.name.clone(),
            need_gb: need as f64 / 1e9,
            usable_gb: usable as f64 / 1e9,
        });
    }
    let mut steps = Vec::with_capacity(chunks as usize);
    for j in 0..chunks {
        let tokens = chunk.min(prompt.prompt - j * chunk);
        let p = PrefillParams { prompt: tokens, cached: prompt.cached + j * chunk, ..*prompt };
        let cg = g(prefill_graph(cfg, &p))?;
        let cprof = PrefillProfile::with_stages(&cg, gpu, n_gpus, pp, o)?;
        let (step_ms, bound) = mixed_step(&dg, &dprof, &cprof, decode.batch, tokens);
        steps.push(MixedStep { chunk_tokens: tokens, cached: p.cached, step_ms, bound });
    }
    let total: f64 = steps.iter().map(|s| s.step_ms).sum();
    let mean = total / chunks as f64;
    Ok(MixedEstimate {
        model: alone.model.clone(),
        gpu: gpu.name.clone(),
        n_gpus: alone.n_gpus,
        tensor_parallel: alone.tensor_parallel,
        pipeline_stages: alone.pipeline_stages,
        decode_batch: decode.batch,
        decode_context: decode.context,
        prompt: prompt.prompt,
        cached: prompt.cached,
        chunk,
        chunks,
        ttft_ms: total + PREFILL_FITTED.fixed_overhead_us * 1e-3,
        decode_tpot_ms: mean,
        decode_alone_tpot_ms: alone.tpot_ms,
        prefill_alone_ttft_ms: prefill_alone.ttft_ms,
        tokens_per_s: (decode.batch * chunks + prompt.prompt) as f64 * 1e3 / total,
        first_step: steps[0].clone(),
        last_step: steps[steps.len() - 1].clone(),
        need_bytes_per_gpu: need,
        usable_bytes_per_gpu: usable,
    })
}

/// One mixed step of the decode profile `d` (`rows_d` tokens) and the chunk
/// profile `c` (`rows_c` tokens): its time, ms, and what bounds it.
fn mixed_step(dg: &Graph, d: &Profile, c: &PrefillProfile, rows_d: u64, rows_c: u64) -> (f64, Bound) {
    let bw = FITTED.hbm_efficiency * d.hbm_bytes_per_s;
    let peak_d = d.peak_flops;
    let peak_c = PREFILL_FITTED.compute_efficiency * c.base.peak_flops;
    let (wd, wc) = (rows_d as f64, rows_c as f64);
    let k_mixed = (wd * FITTED.kernel_overhead_us + wc * PREFILL_FITTED.kernel_overhead_us) / (wd + wc) * 1e-3;
    let chunk_kernels: BTreeMap<&str, usize> = c.kernel_ops.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut used = vec![false; c.base.ops.len()];
    let (mut memory_limited, mut math_limited, mut overhead) = (0.0f64, 0.0f64, 0.0f64);
    let mut kernel = |bytes: f64, math_ms: f64, k_ms: f64| {
        let mem = bytes / bw * 1e3;
        if math_ms > mem {
            math_limited += math_ms;
        } else {
            memory_limited += mem;
        }
        overhead += k_ms;
    };
    for (op, l) in dg.ops.iter().zip(&d.ops) {
        match chunk_kernels.get(op.name.as_str()) {
            Some(&i) => {
                used[i] = true;
                let m = &c.base.ops[i];
                let bytes = l.weight_bytes.max(m.weight_bytes) + l.kv_bytes + m.kv_bytes + l.act_bytes + m.act_bytes;
                kernel(bytes, (l.flops / peak_d + m.flops / peak_c) * 1e3, k_mixed);
            }
            None => kernel(
                l.weight_bytes + l.kv_bytes + l.act_bytes,
                l.flops / peak_d * 1e3,
                FITTED.kernel_overhead_us * 1e-3,
            ),
        }
    }
    for (m, _) in c.base.ops.iter().zip(&used).filter(|(_, u)| !**u) {
        kernel(
            m.weight_bytes + m.kv_bytes + m.act_bytes,
            m.flops / peak_c * 1e3,
            PREFILL_FITTED.kernel_overhead_us * 1e-3,
        );
    }
    // Collectives: paired one to one when both sides have the same list, else each alone.
    let lat = FITTED.collective_latency_us * 1e-3;
    let same = d.collectives.len() == c.base.collectives.len()
        && d.collectives.iter().zip(&c.base.collectives).all(|(a, b)| a.0 == b.0);
    let comm: f64 = if same {
        d.collectives
            .iter()
            .zip(&c.base.collectives)
            .map(|(a, b)| lat + d.collective_bytes_s(a.0, a.1 + b.1) * 1e3)
            .sum()
    } else {
        let one = |p: &Profile| p.collectives.iter().map(|&(k, b)| lat + p.collective_bytes_s(k, b) * 1e3).sum::<f64>();
        one(d) + one(&c.base)
    };
    let total = memory_limited + math_limited + overhead + comm;
    (total, bound_of(memory_limited, math_limited, overhead, comm))
}

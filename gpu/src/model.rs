//! The GPU baseline model: time of one decode step on N tensor-parallel GPUs
//! (in P pipeline stages).
//!
//! Owns: how the graph splits over N GPUs (Megatron-style tensor
//! parallelism), the per-op roofline time (bytes against achievable HBM
//! bandwidth, FLOPs against dense peak), the fixed per-kernel overhead, the
//! collectives and their cost, the memory-capacity check, and the fitted
//! constants (`FITTED`). Must not: read files, know the calibration data's
//! row format (that is `calibrate`), or render anything.
//!
//! The model, per GPU (all N run the same kernels in lock step):
//! * every graph op is one kernel taking
//!   `max(bytes / (hbm_efficiency x HBM bandwidth), flops / peak) + kernel_overhead`;
//! * tensor parallelism: matrices are split N ways (Q/K/V, gate/up and the LM
//!   head by output columns, attention-out, MLP-down and experts by input
//!   rows); attention heads split N ways and KV heads `min(N, kv_heads)` ways
//!   (replicated beyond that); norms, residual adds, the embedding gather,
//!   the router and sampling are replicated;
//! * a row-split matmul (attention-out, MLP-down) or the experts leave
//!   partial sums: one all-reduce of that output each, i.e. two per layer; the
//!   vocab-split logits are all-gathered once before sampling. A collective
//!   takes `collective_latency + ring bytes / link bandwidth` (ring all-reduce
//!   sends `2 (N-1)/N` of the tensor per GPU, an all-gather `(N-1)/N`);
//! * pipeline parallelism (`estimate_pipeline`): P stages of N GPUs each,
//!   contiguous runs of decoder layers (`op_stages`); for one sequence the
//!   stages run one after another, so the step is every stage's kernels and
//!   collectives in turn plus P − 1 point-to-point sends of the residual
//!   stream, each `collective_latency + bytes / link bandwidth` over the
//!   GPU's own link (the stages are taken to share its NVLink or PCIe
//!   fabric; no inter-node figure is in the reference data); memory is the
//!   heaviest stage's;
//! * the KV cache read by attention grows with the context the graph was
//!   built for; weights plus that cache must fit in the N GPUs' memory less a
//!   headroom (`GpuOptions::mem_headroom`, default 10%: what vLLM's default
//!   `gpu_memory_utilization = 0.9` leaves for the CUDA context, the
//!   runtime's workspace and activations).
//!
//! The breakdown splits each kernel's time `max(memory, math) + overhead`
//! into its math at peak (`compute`, time the tensor cores are busy, which in
//! a memory-bound kernel overlaps the traffic), the memory time not hidden
//! under that math (`weights`, `kv_cache`, `activations`, in proportion to
//! their bytes) and the overhead, so the parts sum to the step and compute
//! shows wherever it is spent. The `bound` is the roofline's verdict instead:
//! the largest of the time of kernels limited by memory, the time of kernels
//! limited by math, the overhead and the collectives.
//!
//! Only three constants are not datasheet figures; they are fitted to the
//! measured batch-1 latencies (see `calibrate::fit_params`). Compute runs at
//! the datasheet dense peak: no calibration row is compute-bound, so no
//! achievable compute fraction can be fitted, and compute-bound predictions
//! (large batches) are optimistic.

use crate::error::{DoesNotFit, GpuError};
use crate::spec::GpuSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wafer_ir::{op_cost, DType, Graph, Op, OpKind, TensorKind};

/// The constants of the model that are not datasheet figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelParams {
    /// Fraction of the datasheet memory bandwidth that decode kernels sustain.
    pub hbm_efficiency: f64,
    /// Fixed time per kernel (one per graph op): launch, ramp-up and tail, µs.
    pub kernel_overhead_us: f64,
    /// Fixed time per collective (all-reduce, all-gather) besides its bytes, µs.
    pub collective_latency_us: f64,
}

/// Fitted to the 17 `tpot_ms` rows of `shared/reference/gpu_measured.csv` by
/// `calibrate::fit_params` (grid over `hbm_efficiency` in steps of 0.001,
/// least squares of the relative error for the two overheads at each grid
/// point), then rounded as written. The test
/// `fitted_constants_are_what_the_fit_recomputes` re-runs the fit.
pub const FITTED: ModelParams =
    ModelParams { hbm_efficiency: 0.762, kernel_overhead_us: 1.56, collective_latency_us: 17.7 };

/// What limits the step: the largest of the four parts of the breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Streaming weights, KV cache and activations through HBM.
    Bandwidth,
    /// Math at the dense peak.
    Compute,
    /// Fixed per-kernel cost (launch, ramp-up, tail).
    Overhead,
    /// All-reduces and all-gathers between the GPUs.
    Communication,
}

impl Bound {
    pub fn name(self) -> &'static str {
        match self {
            Bound::Bandwidth => "bandwidth",
            Bound::Compute => "compute",
            Bound::Overhead => "overhead",
            Bound::Communication => "communication",
        }
    }
}

/// Where the step's time goes, in ms; the parts add up to `tpot_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Reading weights: memory time not hidden under the kernel's math.
    pub weights_ms: f64,
    /// Reading and appending the KV cache: memory time not hidden under math.
    pub kv_cache_ms: f64,
    /// Activation traffic: memory time not hidden under math.
    pub activations_ms: f64,
    /// Math at the dense peak, in every kernel (in memory-bound kernels it
    /// overlaps their traffic, which then counts only beyond it).
    pub compute_ms: f64,
    /// Fixed per-kernel time.
    pub kernel_overhead_ms: f64,
    /// Collectives (latency and bytes).
    pub communication_ms: f64,
}

impl Breakdown {
    pub fn bandwidth_ms(&self) -> f64 {
        self.weights_ms + self.kv_cache_ms + self.activations_ms
    }
    pub fn total_ms(&self) -> f64 {
        self.bandwidth_ms() + self.compute_ms + self.kernel_overhead_ms + self.communication_ms
    }
}

/// The largest of the four limits (ms); ties go to the earlier of bandwidth,
/// compute, overhead, communication.
pub(crate) fn bound_of(memory_limited_ms: f64, math_limited_ms: f64, overhead_ms: f64, communication_ms: f64) -> Bound {
    let parts = [
        (Bound::Bandwidth, memory_limited_ms),
        (Bound::Compute, math_limited_ms),
        (Bound::Overhead, overhead_ms),
        (Bound::Communication, communication_ms),
    ];
    parts.iter().fold(parts[0], |best, p| if p.1 > best.1 { *p } else { best }).0
}

/// Serving choices that are not properties of the GPU or fitted constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuOptions {
    /// Fraction of each GPU's memory kept free of weights and KV cache, for the
    /// CUDA context, the runtime's workspace and activations. 0 ≤ f < 1.
    pub mem_headroom: f64,
}

/// vLLM's default `gpu_memory_utilization` is 0.9 (vLLM engine arguments,
/// `--gpu-memory-utilization`): a tenth of the memory stays out of the
/// weights and KV cache.
pub const DEFAULT_MEM_HEADROOM: f64 = 0.1;

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { mem_headroom: DEFAULT_MEM_HEADROOM }
    }
}

impl GpuOptions {
    /// Options with `mem_headroom`, checked: `0 <= f < 1`.
    pub fn with_headroom(mem_headroom: f64) -> Result<GpuOptions, GpuError> {
        if !(0.0..1.0).contains(&mem_headroom) {
            return Err(GpuError::InvalidOption {
                field: "gpu-mem-headroom",
                value: mem_headroom.to_string(),
                allowed: "a fraction of each GPU's memory, 0 <= f < 1 (default 0.1)".into(),
            });
        }
        Ok(GpuOptions { mem_headroom })
    }
}

/// Memory one GPU holds for this step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryUse {
    pub weight_bytes_per_gpu: u64,
    /// The KV cache after this step, at the graph's batch and context.
    pub kv_bytes_per_gpu: u64,
    pub capacity_bytes_per_gpu: u64,
    /// Fraction of the capacity kept free (`GpuOptions::mem_headroom`).
    pub headroom_fraction: f64,
    /// What weights and KV cache may fill: capacity less the headroom.
    pub usable_bytes_per_gpu: u64,
    /// Usable bytes left after weights and KV cache (more batch or context fits there).
    pub free_bytes_per_gpu: u64,
}

/// The predicted decode step of one graph on N GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuEstimate {
    pub model: String,
    pub gpu: String,
    /// All GPUs: `tensor_parallel × pipeline_stages`.
    pub n_gpus: u32,
    /// GPUs in each stage's tensor-parallel group.
    pub tensor_parallel: u32,
    /// Pipeline stages (1: tensor parallelism alone).
    pub pipeline_stages: u32,
    pub batch: u64,
    pub context: u64,
    pub weight_dtype: DType,
    pub act_dtype: DType,
    pub kv_dtype: DType,
    /// Time per output token of each sequence (one decode step), ms.
    pub tpot_ms: f64,
    /// Tokens per second of the whole batch: `batch * 1000 / tpot_ms`.
    pub tokens_per_s: f64,
    pub bound: Bound,
    pub breakdown: Breakdown,
    /// Time by op mnemonic, plus `all_reduce` and `all_gather`, ms; in name order.
    pub by_kind_ms: BTreeMap<String, f64>,
    /// Kernels each GPU launches per step (one per graph op).
    pub kernels: u64,
    /// Collectives per step within the tensor-parallel groups (0 on one GPU per stage).
    pub collectives: u64,
    /// Sends between consecutive pipeline stages per step (`pipeline_stages − 1`).
    pub stage_sends: u64,
    pub memory: MemoryUse,
    /// The constants the estimate used.
    pub params: ModelParams,
}

/// Predicts one decode step of `graph` on `n_gpus` tensor-parallel `gpu`s
/// with the fitted constants and the default options. The graph must have
/// passed the verifier.
pub fn estimate(graph: &Graph, gpu: &GpuSpec, n_gpus: u32) -> Result<GpuEstimate, GpuError> {
    estimate_with(graph, gpu, n_gpus, &FITTED)
}

/// `estimate` with explicit options (memory headroom).
pub fn estimate_opts(graph: &Graph, gpu: &GpuSpec, n_gpus: u32, o: &GpuOptions) -> Result<GpuEstimate, GpuError> {
    Ok(Profile::new(graph, gpu, n_gpus, o)?.evaluate(&FITTED))
}

/// `estimate` with explicit constants (for fits and what-if studies).
pub fn estimate_with(graph: &Graph, gpu: &GpuSpec, n_gpus: u32, p: &ModelParams) -> Result<GpuEstimate, GpuError> {
    Ok(Profile::new(graph, gpu, n_gpus, &GpuOptions::default())?.evaluate(p))
}

/// `estimate_opts` with `pp` pipeline stages of `n_gpus` tensor-parallel GPUs
/// each (`n_gpus × pp` GPUs): a sequence's token passes the stages one after
/// another, so the step is the sum of every stage's kernels and collectives
/// plus one send of the residual stream between consecutive stages
/// (`collective_latency + bytes / link bandwidth`, over the GPU's own link:
/// the stages are taken to share its NVLink or PCIe fabric). Memory is the
/// heaviest stage's.
pub fn estimate_pipeline(
    graph: &Graph,
    gpu: &GpuSpec,
    n_gpus: u32,
    pp: u32,
    o: &GpuOptions,
) -> Result<GpuEstimate, GpuError> {
    Ok(Profile::with_stages(graph, gpu, n_gpus, pp, o)?.evaluate(&FITTED))
}

/// `estimate_pipeline` with `pp` stages, or, without one, tensor parallelism
/// alone when the model fits and else the fewest stages that hold it
/// (the error of one stage when none does).
pub fn estimate_auto(
    graph: &Graph,
    gpu: &GpuSpec,
    n_gpus: u32,
    pp: Option<u32>,
    o: &GpuOptions,
) -> Result<GpuEstimate, GpuError> {
    if let Some(p) = pp {
        return estimate_pipeline(graph, gpu, n_gpus, p, o);
    }
    let one = match estimate_pipeline(graph, gpu, n_gpus, 1, o) {
        Err(GpuError::DoesNotFit(d)) => d,
        other => return other,
    };
    match one.min_pipeline {
        Some((t, p)) if t == n_gpus && p > 1 => estimate_pipeline(graph, gpu, n_gpus, p, o),
        _ => Err(GpuError::DoesNotFit(one)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CollectiveKind {
    AllReduce,
    AllGather,
    /// A pipeline stage handing its output to the next (point to point).
    StageSend,
}

impl CollectiveKind {
    /// Its name in `by_kind_ms`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            CollectiveKind::AllReduce => "all_reduce",
            CollectiveKind::AllGather => "all_gather",
            CollectiveKind::StageSend => "stage_send",
        }
    }
}

/// One op's work on one GPU.
#[derive(Debug, Clone)]
pub(crate) struct OpLoad {
    pub(crate) kind: &'static str,
    pub(crate) weight_bytes: f64,
    pub(crate) kv_bytes: f64,
    pub(crate) act_bytes: f64,
    pub(crate) flops: f64,
}

/// A graph laid out on N GPUs, before any constant is applied: what the fit
/// evaluates many times.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) model: String,
    pub(crate) gpu: String,
    /// Tensor-parallel GPUs per stage.
    pub(crate) n: u32,
    /// Pipeline stages, run one after another for a sequence.
    pub(crate) pp: u32,
    pub(crate) batch: u64,
    pub(crate) context: u64,
    pub(crate) dtypes: [DType; 3],
    pub(crate) hbm_bytes_per_s: f64,
    pub(crate) peak_flops: f64,
    pub(crate) link_bytes_per_s: f64,
    /// One load per graph op, in graph order.
    pub(crate) ops: Vec<OpLoad>,
    pub(crate) collectives: Vec<(CollectiveKind, f64)>,
    pub(crate) memory: MemoryUse,
}

/// KV heads an op's cache holds, if it touches the cache.
fn kv_heads(g: &Graph, op: &Op) -> Option<u64> {
    match op.kind {
        OpKind::AttnScores { kv_heads, .. } | OpKind::AttnValue { kv_heads, .. } => Some(kv_heads),
        OpKind::KvAppend { .. } => Some(g.tensor(op.inputs[2]).shape[1]),
        _ => None,
    }
}

/// Attention heads of the graph (the count tensor parallelism must divide).
fn heads(g: &Graph) -> Option<u64> {
    g.ops.iter().find_map(|o| match o.kind {
        OpKind::AttnScores { heads, .. } => Some(heads),
        _ => None,
    })
}

/// The pipeline stage of each op, in graph order: decoder layer `l` of `L`
/// goes to stage `⌊l·P/L⌋` (contiguous stages, balanced to within a layer);
/// ops before the first layer (the embeddings) to stage 0, ops after the last
/// (final norm, LM head, sampling) to stage `P − 1`.
pub(crate) fn op_stages(g: &Graph, pp: u32) -> Vec<u32> {
    let layers = u64::from(g.num_layers().max(1));
    let mut seen_layer = false;
    g.ops
        .iter()
        .map(|o| match o.layer {
            Some(l) => {
                seen_layer = true;
                (u64::from(l) * u64::from(pp) / layers) as u32
            }
            None if seen_layer => pp - 1,
            None => 0,
        })
        .collect()
}

/// Weight bytes and KV-cache bytes one GPU holds with `tp`-way tensor
/// parallelism and `pp` pipeline stages: those of the heaviest stage. A
/// weight sits on every stage whose ops read it (a tied embedding on the
/// first and the last); matrices split `tp` ways, vectors are replicated;
/// the KV cache splits `min(tp, kv_heads)` ways.
fn memory_on(g: &Graph, tp: u64, pp: u32) -> (u64, u64) {
    let stages = op_stages(g, pp);
    let (mut w, mut kv) = (vec![0u64; pp as usize], vec![0u64; pp as usize]);
    // Stages are non-decreasing in graph order, so "added to this stage already" is the last stage added.
    let mut last: Vec<Option<u32>> = vec![None; g.tensors.len()];
    for (op, &st) in g.ops.iter().zip(&stages) {
        for &t in &op.inputs {
            let tt = g.tensor(t);
            if tt.kind == TensorKind::Weight && last[t.0 as usize] != Some(st) {
                last[t.0 as usize] = Some(st);
                w[st as usize] += if tt.shape.len() >= 2 { tt.bytes().div_ceil(tp) } else { tt.bytes() };
            }
        }
        if matches!(op.kind, OpKind::KvAppend { .. }) {
            let split = tp.min(kv_heads(g, op).unwrap_or(1)).max(1);
            kv[st as usize] += op.outputs.iter().map(|&t| g.tensor(t).bytes()).sum::<u64>().div_ceil(split);
        }
    }
    let heaviest = (0..pp as usize).fold(0, |b, i| if w[i] + kv[i] > w[b] + kv[b] { i } else { b });
    (w[heaviest], kv[heaviest])
}

/// Bytes one pipeline stage hands the next: the residual stream
/// (`[batch × new tokens, hidden]`, the embedding's output).
fn stage_send_bytes(g: &Graph) -> f64 {
    g.ops.iter().find(|o| matches!(o.kind, OpKind::Embedding)).map_or(0.0, |o| g.tensor(o.outputs[0]).bytes() as f64)
}

impl Profile {
    pub(crate) fn new(g: &Graph, gpu: &GpuSpec, n_gpus: u32, o: &GpuOptions) -> Result<Profile, GpuError> {
        Profile::with_stages(g, gpu, n_gpus, 1, o)
    }

    /// `tp`-way tensor parallelism in each of `pp` pipeline stages (`tp × pp` GPUs).
    pub(crate) fn with_stages(
        g: &Graph,
        gpu: &GpuSpec,
        n_gpus: u32,
        pp: u32,
        o: &GpuOptions,
    ) -> Result<Profile, GpuError> {
        let h = heads(g).unwrap_or(1);
        if n_gpus == 0 || h % n_gpus as u64 != 0 {
            return Err(GpuError::GpuCount { gpus: n_gpus, heads: h, allowed: divisors(h) });
        }
        let layers = g.num_layers().max(1);
        if pp == 0 || pp > layers {
            return Err(GpuError::InvalidOption {
                field: "pp",
                value: pp.to_string(),
                allowed: format!("1..={layers} pipeline stages (at most one per decoder layer of {})", g.name),
            });
        }
        let o = GpuOptions::with_headroom(o.mem_headroom)?;
        let n = n_gpus as u64;
        let cap = gpu.hbm_bytes();
        let usable = (cap * (1.0 - o.mem_headroom)).floor();
        let fits = |m: u64, p: u32| {
            let (w, kv) = memory_on(g, m, p);
            (w + kv) as f64 <= usable
        };
        let (w, kv) = memory_on(g, n, pp);
        if !fits(n, pp) {
            let min_gpus = (1..=1u64 << 16).find(|&m| fits(m, 1)).map(|m| m as u32);
            let min_tp_gpus = (1..=h).filter(|d| h % d == 0).find(|&d| fits(d, 1)).map(|d| d as u32);
            // The fewest stages that hold it with this tensor-parallel group, else the fewest GPUs in all.
            let stages_here = (1..=layers).find(|&p| fits(n, p));
            let fewest = (1..=h)
                .filter(|d| h % d == 0)
                .filter_map(|d| (1..=layers).find(|&p| fits(d, p)).map(|p| (d as u32, p)))
                .min_by_key(|&(d, p)| (d as u64 * p as u64, p));
            let min_pipeline = stages_here.map(|p| (n_gpus, p)).or(fewest);
            let mut advice = match (min_gpus, min_tp_gpus) {
                (Some(m), Some(d)) if m as u64 == d as u64 => format!("it needs at least {m} {}", gpu.name),
                (Some(m), Some(d)) => format!(
                    "it needs at least {m} {}s' memory, {d} for tensor parallelism (a divisor of its {h} attention heads)",
                    gpu.name
                ),
                (Some(m), None) => format!(
                    "it needs at least {m} {}s' memory, more than tensor parallelism over {h} heads allows",
                    gpu.name
                ),
                (None, _) => "no number of these GPUs holds it by tensor parallelism alone".to_string(),
            };
            match min_pipeline {
                Some((t, p)) if p > 1 => {
                    advice += &format!(
                    "; with pipeline parallelism, {} GPUs: --gpus {t} --pp {p} ({t}-way tensor parallel × {p} stages)",
                    t as u64 * p as u64
                )
                }
                None => advice += " (nor with pipeline parallelism)",
                _ => {}
            }
            return Err(GpuError::DoesNotFit(Box::new(DoesNotFit {
                model: g.name.clone(),
                gpu: gpu.name.clone(),
                gpus: n_gpus,
                pipeline_stages: pp,
                need_gb: (w + kv) as f64 / 1e9,
                have_gb: gpu.hbm_gb,
                usable_gb: usable / 1e9,
                headroom_pct: 100.0 * o.mem_headroom,
                weights_gb: memory_on(g, 1, 1).0 as f64 / 1e9,
                kv_gb: memory_on(g, 1, 1).1 as f64 / 1e9,
                min_gpus,
                min_tp_gpus,
                min_pipeline,
                advice,
            })));
        }
        let peak_flops = gpu.peak_flops(g.act_dtype)?;

        // Which activations are split over the GPUs (sharded) as the step runs.
        let mut sharded = vec![false; g.tensors.len()];
        let mut ops = Vec::with_capacity(g.ops.len());
        let mut collectives = Vec::new();
        let nf = n as f64;
        for op in &g.ops {
            let c = op_cost(g, op);
            let in_sharded = op.inputs.iter().any(|t| sharded[t.0 as usize]);
            // (this op runs on a 1/N slice, its outputs are sharded)
            let (split, out_sharded) = match op.kind {
                OpKind::MatMul if in_sharded => {
                    // Row-split: partial sums, all-reduced into a replicated output.
                    collectives.push((CollectiveKind::AllReduce, g.tensor(op.outputs[0]).bytes() as f64));
                    (true, false)
                }
                OpKind::MatMul => (true, true),
                OpKind::MoeExperts { .. } => {
                    collectives.push((CollectiveKind::AllReduce, g.tensor(op.outputs[0]).bytes() as f64));
                    (true, false)
                }
                OpKind::Sample if in_sharded => {
                    collectives.push((CollectiveKind::AllGather, g.tensor(op.inputs[0]).bytes() as f64));
                    (false, false)
                }
                OpKind::Embedding | OpKind::PosEmbedding | OpKind::MoeRouter { .. } | OpKind::Sample => (false, false),
                _ => (in_sharded, in_sharded),
            };
            for &t in &op.outputs {
                sharded[t.0 as usize] = out_sharded && n > 1;
            }
            let (s, kv_s) = if split { (nf, n.min(kv_heads(g, op).unwrap_or(n)).max(1) as f64) } else { (1.0, 1.0) };
            ops.push(OpLoad {
                kind: op.kind.mnemonic(),
                weight_bytes: c.weight_bytes as f64 / s,
                kv_bytes: (c.kv_read_bytes + c.kv_write_bytes) as f64 / kv_s,
                act_bytes: c.act_bytes as f64 / s,
                flops: c.flops as f64 / s,
            });
        }
        if n == 1 {
            collectives.clear();
        }
        // One point-to-point send of the residual stream between consecutive stages.
        for _ in 1..pp {
            collectives.push((CollectiveKind::StageSend, stage_send_bytes(g)));
        }
        Ok(Profile {
            model: g.name.clone(),
            gpu: gpu.name.clone(),
            n: n_gpus,
            pp,
            batch: g.batch,
            context: g.context,
            dtypes: [g.weight_dtype, g.act_dtype, g.kv_dtype],
            hbm_bytes_per_s: gpu.hbm_bytes_per_s(),
            peak_flops,
            link_bytes_per_s: gpu.link_bytes_per_s(),
            ops,
            collectives,
            memory: MemoryUse {
                weight_bytes_per_gpu: w,
                kv_bytes_per_gpu: kv,
                capacity_bytes_per_gpu: cap as u64,
                headroom_fraction: o.mem_headroom,
                usable_bytes_per_gpu: usable as u64,
                free_bytes_per_gpu: (usable as u64).saturating_sub(w + kv),
            },
        })
    }

    /// Collectives within the tensor-parallel groups, and sends between stages.
    pub(crate) fn collectives(&self) -> (u64, u64) {
        let sends = self.collectives.iter().filter(|c| c.0 == CollectiveKind::StageSend).count() as u64;
        (self.collectives.len() as u64 - sends, sends)
    }

    /// Bytes-only time of one collective, s (its fixed latency excluded).
    pub(crate) fn collective_bytes_s(&self, kind: CollectiveKind, bytes: f64) -> f64 {
        let n = self.n as f64;
        let share = match kind {
            CollectiveKind::AllReduce => 2.0 * (n - 1.0) / n,
            CollectiveKind::AllGather => (n - 1.0) / n,
            CollectiveKind::StageSend => 1.0,
        };
        share * bytes / self.link_bytes_per_s
    }

    /// The three terms the fit needs: roofline time of all ops at
    /// `hbm_efficiency` plus the bytes part of the collectives (s), the kernel
    /// count, and the collective count. Time = first + kernels x overhead +
    /// collectives x latency.
    pub(crate) fn terms(&self, hbm_efficiency: f64) -> (f64, f64, f64) {
        let bw = hbm_efficiency * self.hbm_bytes_per_s;
        let roof: f64 = self
            .ops
            .iter()
            .map(|o| ((o.weight_bytes + o.kv_bytes + o.act_bytes) / bw).max(o.flops / self.peak_flops))
            .sum();
        let comm: f64 = self.collectives.iter().map(|&(k, b)| self.collective_bytes_s(k, b)).sum();
        (roof + comm, self.ops.len() as f64, self.collectives.len() as f64)
    }

    pub(crate) fn evaluate(&self, p: &ModelParams) -> GpuEstimate {
        let bw = p.hbm_efficiency * self.hbm_bytes_per_s;
        let k_s = p.kernel_overhead_us * 1e-6;
        let mut b = Breakdown::default();
        let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
        // Roofline time of the kernels limited by memory and of those limited by math, ms.
        let (mut memory_limited, mut math_limited) = (0.0, 0.0);
        for o in &self.ops {
            let bytes = o.weight_bytes + o.kv_bytes + o.act_bytes;
            let mem = bytes / bw;
            let math = o.flops / self.peak_flops;
            // Math first; the memory time beyond it, shared by bytes.
            b.compute_ms += math * 1e3;
            let exposed = (mem - math).max(0.0);
            if exposed > 0.0 && bytes > 0.0 {
                b.weights_ms += exposed * o.weight_bytes / bytes * 1e3;
                b.kv_cache_ms += exposed * o.kv_bytes / bytes * 1e3;
                b.activations_ms += exposed * o.act_bytes / bytes * 1e3;
            }
            if math > mem {
                math_limited += math * 1e3;
            } else {
                memory_limited += mem * 1e3;
            }
            b.kernel_overhead_ms += k_s * 1e3;
            *by_kind.entry(o.kind.to_string()).or_default() += (mem.max(math) + k_s) * 1e3;
        }
        for &(kind, bytes) in &self.collectives {
            let t = (p.collective_latency_us * 1e-6 + self.collective_bytes_s(kind, bytes)) * 1e3;
            b.communication_ms += t;
            *by_kind.entry(kind.name().to_string()).or_default() += t;
        }
        let tpot_ms = b.total_ms();
        GpuEstimate {
            model: self.model.clone(),
            gpu: self.gpu.clone(),
            n_gpus: self.n * self.pp,
            tensor_parallel: self.n,
            pipeline_stages: self.pp,
            batch: self.batch,
            context: self.context,
            weight_dtype: self.dtypes[0],
            act_dtype: self.dtypes[1],
            kv_dtype: self.dtypes[2],
            tpot_ms,
            tokens_per_s: self.batch as f64 * 1e3 / tpot_ms,
            bound: bound_of(memory_limited, math_limited, b.kernel_overhead_ms, b.communication_ms),
            breakdown: b,
            by_kind_ms: by_kind,
            kernels: self.ops.len() as u64,
            collectives: self.collectives().0,
            stage_sends: self.collectives().1,
            memory: self.memory,
            params: *p,
        }
    }
}

/// "1, 2, 4, 8" for 8.
fn divisors(h: u64) -> String {
    (1..=h).filter(|d| h % d == 0).map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}

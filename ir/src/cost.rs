//! What each op costs: FLOPs and bytes moved, from shapes and dtypes alone.
//!
//! Owns: the one cost model of the graph level, shared by the GPU baseline,
//! the compiler's mapping search and the simulators. Must not: know about any
//! hardware (times come later, from bytes and FLOPs).
//!
//! Conventions: a multiply-accumulate is 2 FLOPs. Element-wise work is counted
//! per output element with the op counts below (they are conventions, a few
//! FLOPs either way; at decode they are < 1% of the total):
//! RMSNorm 4, LayerNorm 7, RoPE 3 per rotated element, softmax 5, SiLU 4,
//! GELU 8, ReLU 1, gated activation +1 for the product, add 1, scale 1,
//! softcap 3, router top-k selection 1 per expert score, sampling 1 per logit.
//!
//! Multi-token (prefill) steps: row-wise ops cost per row (`B·N` rows);
//! attention counts only the causal triangle: query `i` (1-based) of a
//! sequence's N sees `min(S' - N + i, window)` positions, so with C cached
//! positions and no window the scores and the value products each cost
//! `2·B·Hq·D·(N·C + N(N+1)/2)`. Activation bytes count every tensor as
//! written in the graph (scores and probabilities included), i.e. as if
//! materialised; a fused (flash) attention never writes them.

use crate::graph::{ActFn, Elementwise, Graph, NormKind, Op, OpKind, TensorKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::AddAssign;

/// Work of one op (or a sum of ops) for one decode step of the whole batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCost {
    pub flops: u64,
    /// Weight bytes this step reads (embedding: the gathered rows only; MoE:
    /// the experts the batch can touch, at most `min(experts, top_k * batch)`).
    pub weight_bytes: u64,
    /// Activation bytes read and written (inputs + outputs that are not weights or cache).
    pub act_bytes: u64,
    pub kv_read_bytes: u64,
    pub kv_write_bytes: u64,
}

impl AddAssign for OpCost {
    fn add_assign(&mut self, o: OpCost) {
        self.flops += o.flops;
        self.weight_bytes += o.weight_bytes;
        self.act_bytes += o.act_bytes;
        self.kv_read_bytes += o.kv_read_bytes;
        self.kv_write_bytes += o.kv_write_bytes;
    }
}

impl OpCost {
    /// All bytes that cross the memory interface of a machine that streams
    /// weights and cache from off-chip memory.
    pub fn total_bytes(&self) -> u64 {
        self.weight_bytes + self.act_bytes + self.kv_read_bytes + self.kv_write_bytes
    }
}

fn act_flops(f: ActFn) -> u64 {
    match f {
        ActFn::Silu => 4,
        ActFn::Gelu | ActFn::GeluTanh => 8,
        ActFn::Relu => 1,
    }
}

/// Positions the `n` queries of one sequence attend over in all, with a
/// cache of `s` positions after the append (the queries are its last `n`)
/// and the layer's `window`: `sum over i in 1..=n of min(s - n + i, window)`.
pub fn attended_positions(s: u64, n: u64, window: Option<u64>) -> u64 {
    let base = s - n; // positions before the first query
    let tri = |lo: u64, hi: u64| (lo + hi) * (hi + 1 - lo) / 2; // lo + ... + hi
    match window {
        // Queries i with base + i <= w see base + i; the rest see w.
        Some(w) if base + n > w => {
            let free = w.saturating_sub(base).min(n); // i in 1..=free see base + i
            let seen = if free == 0 { 0 } else { tri(base + 1, base + free) };
            seen + (n - free) * w
        }
        _ => tri(base + 1, base + n),
    }
}

/// The window of the `KvAppend` that produced cache tensor `t`, if any.
fn cache_window(g: &Graph, t: crate::graph::TensorId) -> Option<u64> {
    g.ops.iter().find(|o| o.outputs.contains(&t)).and_then(|o| match o.kind {
        OpKind::KvAppend { window } => window,
        _ => None,
    })
}

/// Scores (or value) FLOPs of an attention op: `2·Hq·D` per attended position.
fn attention_flops(g: &Graph, op: &Op, heads: u64, head_dim: u64) -> u64 {
    let cache = g.tensor(op.inputs[1]);
    let (b, s) = (cache.shape[0], cache.shape[2]);
    let n = g.tensor(op.inputs[0]).shape[0] / b.max(1);
    let positions = if n <= 1 { s } else { attended_positions(s, n, cache_window(g, op.inputs[1])) };
    2 * b * heads * positions * head_dim
}

/// The cost of `op` in `g`. The graph must have passed the verifier.
pub fn op_cost(g: &Graph, op: &Op) -> OpCost {
    let t = |i: usize| g.tensor(op.inputs[i]);
    let out = |i: usize| g.tensor(op.outputs[i]);
    let mut c = OpCost::default();
    for &id in op.inputs.iter().chain(op.outputs.iter()) {
        let tt = g.tensor(id);
        if matches!(tt.kind, TensorKind::Activation | TensorKind::Input) {
            c.act_bytes += tt.bytes();
        }
    }
    // Rows the op works on: batch × new tokens, or batch after `LastToken`.
    let b = t(0).shape.first().copied().unwrap_or(g.batch);
    match &op.kind {
        OpKind::Embedding => {
            let row = t(1).shape[1];
            c.weight_bytes = t(1).dtype.bytes_for(b * row);
        }
        OpKind::PosEmbedding => {
            let row = t(1).shape[1];
            c.weight_bytes = t(1).dtype.bytes_for(b * row);
            c.flops = b * row;
        }
        OpKind::Norm { kind, .. } => {
            let per = if matches!(kind, NormKind::Layer) { 7 } else { 4 };
            c.flops = per * out(0).elems();
            c.weight_bytes = op.inputs[1..].iter().map(|&w| g.tensor(w).bytes()).sum();
        }
        OpKind::MatMul => {
            let (n, k) = (t(1).shape[0], t(1).shape[1]);
            c.flops = 2 * b * k * n;
            c.weight_bytes = t(1).bytes();
            if op.inputs.len() == 3 {
                c.flops += b * n;
                c.weight_bytes += t(2).bytes();
            }
        }
        OpKind::Rope { heads, kv_heads, rotary_dim, .. } => {
            c.flops = 3 * b * (heads + kv_heads) * rotary_dim;
        }
        OpKind::KvAppend { .. } => {
            // Stored in the cache's dtype, whatever the activations' dtype.
            c.kv_write_bytes = t(2).dtype.bytes_for(t(0).elems() + t(1).elems());
        }
        OpKind::AttnScores { heads, head_dim, .. } | OpKind::AttnValue { heads, head_dim, .. } => {
            c.flops = attention_flops(g, op, *heads, *head_dim);
            c.kv_read_bytes = t(1).bytes();
        }
        OpKind::Softmax => {
            // Unmasked entries only: the causal triangle (windows not applied: a few FLOPs either way).
            let sh = &out(0).shape;
            let (rows, heads, s) = (sh[0], sh[1], sh[2]);
            let n = (rows / g.batch.max(1)).max(1);
            c.flops =
                if n <= 1 || n > s { 5 * out(0).elems() } else { 5 * g.batch * heads * attended_positions(s, n, None) };
        }
        OpKind::Act { func } => c.flops = act_flops(*func) * out(0).elems(),
        OpKind::GatedAct { func } => c.flops = (act_flops(*func) + 1) * out(0).elems(),
        OpKind::Add => c.flops = out(0).elems(),
        OpKind::Elementwise { func } => {
            let per = match func {
                Elementwise::Scale(_) => 1,
                Elementwise::Softcap(_) => 3,
            };
            c.flops = per * out(0).elems();
        }
        OpKind::MoeRouter { experts, .. } => {
            let h = t(1).shape[1];
            c.flops = 2 * b * h * experts + b * experts;
            c.weight_bytes = t(1).bytes();
        }
        OpKind::MoeExperts { experts, top_k, func } => {
            let (i, h) = (t(2).shape[1], t(2).shape[2]);
            let routed = b * top_k;
            c.flops = routed * (2 * 3 * h * i + (act_flops(*func) + 1) * i + 2 * h);
            let touched = (*top_k * b).min(*experts);
            let all: u64 = (2..5).map(|j| t(j).bytes()).sum();
            c.weight_bytes = all / experts * touched;
        }
        OpKind::Sample => c.flops = t(0).elems(),
        OpKind::LastToken { .. } => {}
    }
    c
}

/// Whole-graph figures, the ones `wafer graph` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphStats {
    /// Distinct parameters stored (a tied embedding counts once).
    pub params_total: u64,
    /// Parameters one token uses: routed experts count `top_k / experts`.
    pub params_active: u64,
    /// Bytes of all stored weights at the graph's weight dtype.
    pub weight_bytes: u64,
    /// KV-cache bytes one token adds (all layers, K and V).
    pub kv_bytes_per_token: u64,
    /// FLOPs of the whole step divided by the tokens it computes (batch × new tokens).
    pub flops_per_token: u64,
    /// Totals for the whole step.
    pub step: OpCost,
    /// Totals by op mnemonic, in name order.
    pub by_kind: BTreeMap<String, OpCost>,
}

/// Computes `GraphStats`. The graph must have passed the verifier.
pub fn graph_stats(g: &Graph) -> GraphStats {
    let mut step = OpCost::default();
    let mut by_kind: BTreeMap<String, OpCost> = BTreeMap::new();
    for op in &g.ops {
        let c = op_cost(g, op);
        step += c;
        *by_kind.entry(op.kind.mnemonic().to_string()).or_default() += c;
    }
    // Fraction of each weight a token uses: routed-expert weights k/E, others 1.
    let mut active_frac: Vec<(u64, u64)> = vec![(1, 1); g.tensors.len()];
    for op in &g.ops {
        if let OpKind::MoeExperts { experts, top_k, .. } = op.kind {
            for &w in &op.inputs[2..5] {
                active_frac[w.0 as usize] = (top_k, experts);
            }
        }
    }
    let (mut total, mut active, mut bytes) = (0u64, 0u64, 0u64);
    for (i, t) in g.tensors.iter().enumerate() {
        if t.kind == TensorKind::Weight {
            total += t.elems();
            let (n, d) = active_frac[i];
            active += t.elems() / d * n;
            bytes += t.bytes();
        }
    }
    GraphStats {
        params_total: total,
        params_active: active,
        weight_bytes: bytes,
        kv_bytes_per_token: step.kv_write_bytes / (g.batch * g.new_tokens).max(1),
        flops_per_token: step.flops / (g.batch * g.new_tokens).max(1),
        step,
        by_kind,
    }
}

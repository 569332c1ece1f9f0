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

use crate::graph::{ActFn, Elementwise, Graph, NormKind, Op, OpKind, Tensor, TensorKind};
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
        // Saturating: the verifier's `check_costs` guarantees the step's totals fit.
        self.flops = self.flops.saturating_add(o.flops);
        self.weight_bytes = self.weight_bytes.saturating_add(o.weight_bytes);
        self.act_bytes = self.act_bytes.saturating_add(o.act_bytes);
        self.kv_read_bytes = self.kv_read_bytes.saturating_add(o.kv_read_bytes);
        self.kv_write_bytes = self.kv_write_bytes.saturating_add(o.kv_write_bytes);
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
fn attention_flops(g: &Graph, op: &Op, heads: u64, head_dim: u64) -> S {
    let cache = g.tensor(op.inputs[1]);
    let (b, s) = (cache.shape[0], cache.shape[2]);
    let n = g.tensor(op.inputs[0]).shape[0] / b.max(1);
    let positions = if n <= 1 { s } else { attended_positions(s, n, cache_window(g, op.inputs[1])) };
    S(2) * w(b) * w(heads) * w(positions) * w(head_dim)
}

/// A cost figure that does not fit in 64 bits (the verifier reports it, naming the op).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("op `{op}`: its {quantity} overflow 64-bit arithmetic")]
pub struct CostOverflow {
    pub op: String,
    pub quantity: &'static str,
}

/// The cost of `op` in `g`. The graph must have passed the verifier (which
/// checks with [`try_op_cost`] that every figure fits; here an impossible
/// overflow saturates).
pub fn op_cost(g: &Graph, op: &Op) -> OpCost {
    try_op_cost(g, op).unwrap_or(OpCost {
        flops: u64::MAX,
        weight_bytes: u64::MAX,
        act_bytes: u64::MAX,
        kv_read_bytes: u64::MAX,
        kv_write_bytes: u64::MAX,
    })
}

/// A count in saturating 128-bit arithmetic: products of three 64-bit shape
/// dimensions cannot wrap, and anything beyond 64 bits is reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct S(u128);
impl std::ops::Mul for S {
    type Output = S;
    fn mul(self, o: S) -> S {
        S(self.0.saturating_mul(o.0))
    }
}
impl std::ops::Add for S {
    type Output = S;
    fn add(self, o: S) -> S {
        S(self.0.saturating_add(o.0))
    }
}
impl std::ops::AddAssign for S {
    fn add_assign(&mut self, o: S) {
        *self = *self + o;
    }
}
impl std::iter::Sum for S {
    fn sum<I: Iterator<Item = S>>(it: I) -> S {
        it.fold(S(0), |a, x| a + x)
    }
}
fn w(x: u64) -> S {
    S(x as u128)
}
fn elems(t: &Tensor) -> S {
    t.shape.iter().fold(S(1), |a, &d| a * w(d))
}
fn packed(d: crate::DType, e: S) -> S {
    S(e.0.saturating_mul(d.bits() as u128).div_ceil(8))
}
fn bytes(t: &Tensor) -> S {
    packed(t.dtype, elems(t))
}

/// [`op_cost`] computed in 128-bit arithmetic: an error names the figure that
/// does not fit in 64 bits instead of wrapping.
pub fn try_op_cost(g: &Graph, op: &Op) -> Result<OpCost, CostOverflow> {
    let t = |i: usize| g.tensor(op.inputs[i]);
    let out = |i: usize| g.tensor(op.outputs[i]);
    let (mut flops, mut weight, mut act, mut kv_read, mut kv_write) = (S(0), S(0), S(0), S(0), S(0));
    for &id in op.inputs.iter().chain(op.outputs.iter()) {
        let tt = g.tensor(id);
        if matches!(tt.kind, TensorKind::Activation | TensorKind::Input) {
            act += bytes(tt);
        }
    }
    // Rows the op works on: batch × new tokens, or batch after `LastToken`.
    let b = w(t(0).shape.first().copied().unwrap_or(g.batch));
    match &op.kind {
        OpKind::Embedding => {
            let row = w(t(1).shape[1]);
            weight = packed(t(1).dtype, b * row);
        }
        OpKind::PosEmbedding => {
            let row = w(t(1).shape[1]);
            weight = packed(t(1).dtype, b * row);
            flops = b * row;
        }
        OpKind::Norm { kind, .. } => {
            let per = if matches!(kind, NormKind::Layer) { 7 } else { 4 };
            flops = S(per) * elems(out(0));
            weight = op.inputs[1..].iter().map(|&x| bytes(g.tensor(x))).sum();
        }
        OpKind::MatMul => {
            let (n, k) = (w(t(1).shape[0]), w(t(1).shape[1]));
            flops = S(2) * b * k * n;
            weight = bytes(t(1));
            if op.inputs.len() == 3 {
                flops += b * n;
                weight += bytes(t(2));
            }
        }
        OpKind::Rope { heads, kv_heads, rotary_dim, .. } => {
            flops = S(3) * b * (w(*heads) + w(*kv_heads)) * w(*rotary_dim);
        }
        OpKind::KvAppend { .. } => {
            // Stored in the cache's dtype, whatever the activations' dtype.
            kv_write = packed(t(2).dtype, elems(t(0)) + elems(t(1)));
        }
        OpKind::AttnScores { heads, head_dim, .. } | OpKind::AttnValue { heads, head_dim, .. } => {
            flops = attention_flops(g, op, *heads, *head_dim);
            kv_read = bytes(t(1));
        }
        OpKind::Softmax => {
            // Unmasked entries only: the causal triangle (windows not applied: a few FLOPs either way).
            let sh = &out(0).shape;
            let (rows, heads, s) = (sh[0], sh[1], sh[2]);
            let n = (rows / g.batch.max(1)).max(1);
            flops = if n <= 1 || n > s {
                S(5) * elems(out(0))
            } else {
                S(5) * w(g.batch) * w(heads) * w(attended_positions(s, n, None))
            };
        }
        OpKind::Act { func } => flops = w(act_flops(*func)) * elems(out(0)),
        OpKind::GatedAct { func } => flops = (w(act_flops(*func)) + S(1)) * elems(out(0)),
        OpKind::Add => flops = elems(out(0)),
        OpKind::Elementwise { func } => {
            let per = match func {
                Elementwise::Scale(_) => 1,
                Elementwise::Softcap(_) => 3,
            };
            flops = S(per) * elems(out(0));
        }
        OpKind::MoeRouter { experts, .. } => {
            let h = w(t(1).shape[1]);
            flops = S(2) * b * h * w(*experts) + b * w(*experts);
            weight = bytes(t(1));
        }
        OpKind::MoeExperts { experts, top_k, func } => {
            let (i, h) = (w(t(2).shape[1]), w(t(2).shape[2]));
            let routed = b * w(*top_k);
            flops = routed * (S(6) * h * i + (w(act_flops(*func)) + S(1)) * i + S(2) * h);
            let touched = (w(*top_k) * b).min(w(*experts));
            let all: S = (2..5).map(|j| bytes(t(j))).sum();
            weight = S(all.0 / (*experts).max(1) as u128) * touched;
        }
        OpKind::Sample => flops = elems(t(0)),
        OpKind::LastToken { .. } => {}
    }
    let fit =
        |x: S, quantity: &'static str| u64::try_from(x.0).map_err(|_| CostOverflow { op: op.name.clone(), quantity });
    Ok(OpCost {
        flops: fit(flops, "FLOPs")?,
        weight_bytes: fit(weight, "weight bytes")?,
        act_bytes: fit(act, "activation bytes")?,
        kv_read_bytes: fit(kv_read, "KV-cache bytes read")?,
        kv_write_bytes: fit(kv_write, "KV-cache bytes written")?,
    })
}

/// Checks that every op's cost, the step's totals and the parameter count fit
/// in 64 bits: the verifier's rule, so [`graph_stats`] never wraps.
pub fn check_costs(g: &Graph) -> Result<(), CostOverflow> {
    const TOTALS: [&str; 5] =
        ["step FLOPs", "step weight bytes", "step activation bytes", "step KV bytes read", "step KV bytes written"];
    let mut total = [S(0); 5];
    for op in &g.ops {
        let c = try_op_cost(g, op)?;
        let parts = [c.flops, c.weight_bytes, c.act_bytes, c.kv_read_bytes, c.kv_write_bytes];
        for (k, (acc, x)) in total.iter_mut().zip(parts).enumerate() {
            *acc += w(x);
            if acc.0 > u64::MAX as u128 {
                return Err(CostOverflow { op: op.name.clone(), quantity: TOTALS[k] });
            }
        }
    }
    let (mut params, mut weight) = (S(0), S(0));
    for t in g.tensors.iter().filter(|t| t.kind == TensorKind::Weight) {
        params += elems(t);
        weight += bytes(t);
        if params.0 > u64::MAX as u128 || weight.0 > u64::MAX as u128 {
            return Err(CostOverflow { op: t.name.clone(), quantity: "parameter count or weight bytes" });
        }
    }
    Ok(())
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
            total = total.saturating_add(t.elems());
            let (n, d) = active_frac[i];
            active = active.saturating_add(t.elems() / d.max(1) * n);
            bytes = bytes.saturating_add(t.bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, GraphBuilder};

    #[test]
    fn counts_beyond_64_bits_are_errors_naming_the_op_and_quantity() {
        // A 2^33 x 2^33 matrix: 2^66 parameters, FLOPs beyond 2^64 (they used to wrap).
        let mut b = GraphBuilder::new("huge", 4, 1, DType::Bf16, DType::Bf16, DType::Bf16);
        let x = b.input("x", vec![4, 1 << 33], DType::Bf16, TensorKind::Activation);
        let w = b.weight("w", vec![1 << 33, 1 << 33]);
        b.one("proj", OpKind::MatMul, None, &[x, w]);
        let g = b.finish();
        let e = check_costs(&g).unwrap_err();
        assert_eq!(e.op, "proj");
        assert!(e.to_string().contains("FLOPs overflow 64-bit arithmetic"), "{e}");
        // And graph_stats saturates rather than wrapping.
        assert_eq!(graph_stats(&g).params_total, u64::MAX);
    }
}

//! Per-region closed forms: what one region costs from its input being
//! ready to its output, with no contention and each region's largest tile.
//!
//! Owns: [`RegionCost`] (the phases), [`reduce_cost`] (a reduction's critical
//! path for each [`Reduce`] shape) and [`region_cost`] — the compiler's search
//! objective, and the per-region term of [`crate::program::estimate`] (which
//! adds routes, broadcasts and the critical path on top). Prices every step with
//! [`crate::timing`]. Must not: walk a program's regions or routes.

use crate::timing::*;
use wafer_ir::{ArchSpec, DType, Rect, Reduce, Work};

/// Phases of a region's own time, in cycles, from its input being ready to its output.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RegionCost {
    /// Norm all-reduce over the column heads and the multicast down the columns.
    pub prologue_comm: f64,
    pub compute: f64,
    /// Messages of the reduction (and of the arg-max).
    pub reduce_comm: f64,
    /// Adds / combines inside the reduction, and the epilogue.
    pub reduce_compute: f64,
}

impl RegionCost {
    pub fn total(&self) -> f64 {
        self.prologue_comm + self.compute + self.reduce_comm + self.reduce_compute
    }
}

/// Critical path of a reduction along `n` PEs with `bytes` messages and `add`
/// cycles per combine: (comm, compute) cycles.
pub fn reduce_cost(arch: &ArchSpec, shape: Reduce, n: u32, bytes: u64, add: u64) -> (f64, f64) {
    if n <= 1 {
        return (0.0, 0.0);
    }
    let hop = arch.router.hop_latency_cycles as u64;
    // A chain over `len` PEs `stride` hops apart: the far end sends from memory,
    // `len - 2` relays pass the stream on, the last message lands and is added.
    let chain_over = |len: u32, stride: u32| -> (f64, f64) {
        if len <= 1 {
            return (0.0, 0.0);
        }
        let steps = (len as u64 - 2) * (stride as u64 * hop + relay(arch));
        (steps as f64 + message(arch, stride, bytes) as f64, add as f64)
    };
    let chain = |len: u32| chain_over(len, 1);
    let tree = |len: u32, stride: u32| -> (f64, f64) {
        let (mut comm, mut comp) = (0.0, 0.0);
        let mut step = 1u32;
        while step < len {
            comm += (arch.pe.task_overhead_cycles as u64 + message(arch, step * stride, bytes)) as f64;
            comp += add as f64;
            step *= 2;
        }
        (comm, comp)
    };
    match shape {
        Reduce::Chain => chain(n),
        Reduce::Tree => tree(n, 1),
        Reduce::TwoLevel { group } => {
            let g = group.max(1).min(n);
            let (c1, a1) = chain(g);
            let (c2, a2) = tree(n.div_ceil(g), g);
            (c1 + c2, a1 + a2)
        }
        Reduce::Meet { group } => {
            // Phase one: the longer of a group's two chains into its middle PE
            // (which adds both); phase two: the same over the group roots.
            let g = group.max(1).min(n);
            let both = |(c, a): (f64, f64), len: u32| if len > 1 { (c, a + add as f64) } else { (c, a) };
            let groups = n.div_ceil(g);
            let p1 = both(chain(g / 2 + 1), g);
            let centre = groups / 2;
            let p2 = both(chain_over(centre.max(groups - 1 - centre) + 1, g), groups);
            (p1.0 + p2.0, p1.1 + p2.1)
        }
    }
}

/// Closed-form cost of `work` on `rect` (its largest tile), for `batch` rows
/// of one token each (a decode step) and the program's dtypes. Shared with
/// the compiler's mapping search.
pub fn region_cost(arch: &ArchSpec, work: &Work, rect: Rect, batch: u64, weight: DType, kv: DType) -> RegionCost {
    region_cost_rows(arch, work, rect, batch, 1, weight, kv)
}

/// [`region_cost`] for `rows` rows of which `tokens` belong to each sequence
/// (`Program::rows()` and `Program::new_tokens`: a prompt chunk's queries of
/// one sequence share its keys).
pub fn region_cost_rows(
    arch: &ArchSpec,
    work: &Work,
    rect: Rect,
    rows: u64,
    tokens: u64,
    weight: DType,
    kv: DType,
) -> RegionCost {
    let batch = rows;
    let hop = arch.router.hop_latency_cycles as f64;
    let task = arch.pe.task_overhead_cycles as f64;
    match *work {
        Work::Gemv { tile_n, tile_k, reduce, glu, norm, argmax, epilogue_ops, acc, mac, .. } => {
            let mut c = RegionCost::default();
            if norm {
                let add = add_partial(arch, 2 * batch, DType::F32);
                let (comm, comp) = reduce_cost(arch, Reduce::Tree, rect.w, 8 * batch, add);
                c.prologue_comm += comm + comp + message(arch, rect.w.saturating_sub(1), 8 * batch) as f64;
            }
            // Multicast down the columns reaches the last row (rect.h - 1) hops after the head.
            c.prologue_comm += (rect.h as f64 - 1.0) * hop;
            c.compute = if mac {
                gemv_compute(arch, tile_n, tile_k, batch, weight, acc)
            } else {
                gemv_zero(arch, tile_n, batch, acc)
            } as f64;
            let part = acc.bytes_for(tile_n * batch);
            let (comm, comp) = reduce_cost(arch, reduce, rect.w, part, add_partial(arch, tile_n * batch, acc));
            c.reduce_comm = comm;
            let out = if glu { tile_n / 2 } else { tile_n };
            c.reduce_compute = comp + elementwise(arch, out * batch, epilogue_ops) as f64;
            if argmax {
                let add = add_partial(arch, batch, DType::F32);
                let (comm, comp) = reduce_cost(arch, Reduce::Tree, rect.h, 8 * batch, add);
                c.reduce_comm += comm;
                c.reduce_compute += comp;
            }
            c
        }
        Work::Attention { group, head_dim, pos_per_pe, reduce, .. } => {
            // A sub-block (the whole head block unless split by sequence)
            // serves `seqs` sequences over `rows` rows; sub-blocks run side by side.
            let seqs = work.seqs_per_pe(batch);
            let rows = work.block_rows();
            let bytes = 4 * group * (head_dim + 2) * seqs;
            let comb = attention_combine(arch, group, head_dim, seqs);
            let (rc, ra) = reduce_cost(arch, reduce, rect.w, bytes, comb);
            let (cc, ca) = reduce_cost(arch, Reduce::Chain, rows, bytes, comb);
            RegionCost {
                prologue_comm: (rect.w as f64 - 1.0 + rows as f64 - 1.0) * hop,
                compute: attention_compute(arch, group, head_dim, pos_per_pe, seqs, tokens, kv) as f64,
                reduce_comm: rc + cc,
                reduce_compute: ra + ca,
            }
        }
        Work::Embedding { .. } => RegionCost { compute: task, ..Default::default() },
        Work::Gemm { tile_m, tile_k, tile_n, acc, .. } => {
            let (compute, moves) = gemm(arch, rect.w as u64, tile_m, tile_k, tile_n, weight, acc);
            RegionCost { compute: compute as f64, reduce_comm: moves as f64, ..Default::default() }
        }
    }
}

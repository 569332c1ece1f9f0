//! The micro-timing model: cycles of each kind of step on one PE or link.
//!
//! Owns: the formulas both timing engines (analytical and event) and the
//! compiler's mapping search use, so that they price every step the same way.
//! The engines differ only in what they add on top: the event engine plays
//! every message with link contention and exact per-PE tile sizes; the
//! analytical engine takes the largest tile and a contention-free closed form.
//! Must not: walk programs.
//!
//! Conventions (all in cycles; `arch` supplies the parameters and their sources):
//! * A vector instruction over `n` elements at `r` elements/cycle costs
//!   `ceil(n / r) + vector_op_overhead_cycles`.
//! * A task (a PE reacting to data or starting a phase) costs `task_overhead_cycles`.
//! * A message of `bytes` over `hops` links costs `hops·hop_latency + ceil(bytes / link_bytes_per_cycle)`
//!   (cut-through: the head pays the hops, the body streams behind it).
//! * GEMV partial products are AXPYs (one per input element and batch row) over
//!   the PE's `tile_n` output rows, with fp32 accumulators in SRAM: each element
//!   reads a weight and an accumulator and writes the accumulator, so the rate
//!   is the SIMD width capped by the SRAM ports.

use wafer_ir::{ArchSpec, DType};

/// `ceil(a / b)` for positive rates.
fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// One vector instruction over `n` elements at `rate` per cycle.
pub fn vector_op(arch: &ArchSpec, n: u64, rate: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    div_ceil(n, rate) + arch.pe.vector_op_overhead_cycles as u64
}

/// Elements per cycle of a multiply-accumulate into fp32 accumulators in SRAM
/// with weights (or cached keys/values) of dtype `w`.
pub fn fma_rate(arch: &ArchSpec, w: DType) -> u64 {
    let simd = if w == DType::F32 { arch.pe.simd_f32 } else { arch.pe.simd_mixed } as u64;
    let wb = w.bits().div_ceil(8).max(1);
    let read = arch.pe.sram_read_bytes_per_cycle as u64 / (wb + 4);
    let write = arch.pe.sram_write_bytes_per_cycle as u64 / 4;
    simd.min(read.max(1)).min(write.max(1))
}

/// Element-wise fp32 ops per cycle.
pub fn ew_rate(arch: &ArchSpec) -> u64 {
    arch.pe.simd_elementwise as u64
}

/// Local partial GEMV on one PE: `tile_k · batch` AXPYs of `tile_n` elements.
pub fn gemv_compute(arch: &ArchSpec, tile_n: u64, tile_k: u64, batch: u64, w: DType) -> u64 {
    if tile_n == 0 || tile_k == 0 {
        return 0;
    }
    arch.pe.task_overhead_cycles as u64 + tile_k * batch * vector_op(arch, tile_n, fma_rate(arch, w))
}

/// Adding an incoming partial of `elems` fp32 values into the local one.
pub fn add_partial(arch: &ArchSpec, elems: u64) -> u64 {
    vector_op(arch, elems, ew_rate(arch))
}

/// `ops` element-wise passes over `elems` values (fused epilogues, softmax).
pub fn elementwise(arch: &ArchSpec, elems: u64, ops: u32) -> u64 {
    ops as u64 * vector_op(arch, elems, ew_rate(arch))
}

/// A message's latency: the head crosses `hops` links, the body streams behind.
pub fn message(arch: &ArchSpec, hops: u32, bytes: u64) -> u64 {
    hops as u64 * arch.router.hop_latency_cycles as u64 + serialization(arch, bytes)
}

/// Cycles a message of `bytes` occupies each link it crosses.
pub fn serialization(arch: &ArchSpec, bytes: u64) -> u64 {
    div_ceil(bytes, arch.router.link_bytes_per_cycle as u64)
}

/// A message between wafers: system-link latency plus its bytes at the link's bandwidth.
pub fn inter_wafer(arch: &ArchSpec, bytes: u64) -> u64 {
    (arch.inter_wafer_latency_cycles() + bytes as f64 / arch.inter_wafer_bytes_per_cycle()).ceil() as u64
}

/// Per-hop delay of a pipelined chain: the partial's head moves one PE on after
/// a hop, a task activation and the start of the add.
pub fn chain_step(arch: &ArchSpec) -> u64 {
    arch.router.hop_latency_cycles as u64
        + arch.pe.task_overhead_cycles as u64
        + arch.pe.vector_op_overhead_cycles as u64
}

/// Attention on one PE holding `pos` positions of each of `batch` sequences for
/// a KV head with `group` query heads of `head_dim`: scores (one dot product per
/// query head and position), softmax statistics and exponentials (5 element-wise
/// passes over the scores), and `P·V` (one AXPY of `head_dim` per query head
/// and position).
pub fn attention_compute(arch: &ArchSpec, group: u64, head_dim: u64, pos: u64, batch: u64, kv: DType) -> u64 {
    if pos == 0 {
        return 0;
    }
    let rate = fma_rate(arch, kv);
    let dots = group * pos * batch * vector_op(arch, head_dim, rate);
    let soft = elementwise(arch, group * pos * batch, 5);
    let pv = group * pos * batch * vector_op(arch, head_dim, rate);
    arch.pe.task_overhead_cycles as u64 + dots + soft + pv
}

/// Combining two partial attention states (rescale both accumulators, add, update max and sum).
pub fn attention_combine(arch: &ArchSpec, group: u64, head_dim: u64, batch: u64) -> u64 {
    elementwise(arch, group * (head_dim + 2) * batch, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_ir::arch_preset;

    #[test]
    fn gemv_rate_is_port_bound_on_wse3() {
        let a = arch_preset("wse3").unwrap();
        // bf16 weight (2 B) + fp32 accumulator (4 B) read, 4 B written per element:
        // the 8 B/cycle write port allows 2 elements/cycle, below the SIMD's 4.
        assert_eq!(fma_rate(&a, DType::Bf16), 2);
        // 16 x 16 fp32 tile: 16 AXPYs of 16 elements at 2/cycle + 43 overhead, + task.
        assert_eq!(gemv_compute(&a, 16, 16, 1, DType::F32), 20 + 16 * (8 + 43));
    }

    #[test]
    fn messages_pay_hops_then_stream() {
        let a = arch_preset("wse3").unwrap();
        assert_eq!(message(&a, 10, 400), 10 + 100);
        assert_eq!(serialization(&a, 3), 1);
    }
}

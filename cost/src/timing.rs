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
//! * A vector instruction over `n` elements of memory at `r` elements/cycle costs
//!   `ceil(n / r) + vector_op_overhead_cycles`.
//! * A task (a PE reacting to data or starting a phase) costs `task_overhead_cycles`.
//! * Data crosses the **ramp** between a PE's router and its compute engine in
//!   `ramp_latency_cycles`, each way. A message from memory to memory over `hops`
//!   links costs `ramp + hops·hop_latency + ceil(bytes / link_bytes_per_cycle) + ramp`
//!   (cut-through: the head pays the hops, the body streams behind it).
//! * A fabric-sourced DSD op (adding an incoming partial into memory) streams:
//!   it costs `ceil(n / r)` after the data lands, without the memory-operand
//!   vector overhead. A **relay** (a pipelined chain step: add the streamed partial
//!   to the local one and pass it on) sends the head on `2·ramp + 1` cycles after
//!   it reached the PE's router: down the ramp, one pass through the adder, up
//!   the ramp. This is the per-step structure of Luczynski et al.'s WSE collective
//!   model; the ramp itself is fitted to MeshGEMV silicon rows (`wafer-kernels`).
//! * GEMV partial products are AXPYs (one per input element and batch row) over
//!   the PE's `tile_n` output rows, with accumulators (fp32, or fp16 when the
//!   region says so) in SRAM: each element reads a weight and an accumulator and
//!   writes the accumulator, so the rate is the SIMD width capped by the SRAM ports.

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

/// Elements per cycle of a multiply-accumulate with weights (or cached
/// keys/values) of dtype `w` into accumulators of dtype `acc` in SRAM:
/// `@fmachs` (16-bit x 16-bit -> fp32) for fp32 accumulators, `@fmach`
/// (fp16 -> fp16, twice the `@fmachs` width on WSE-2 and WSE-3 [DOC]) for fp16,
/// fp32 weights at the fp32 width; capped by the SRAM read and write ports.
pub fn fma_rate(arch: &ArchSpec, w: DType, acc: DType) -> u64 {
    let simd = if w == DType::F32 {
        arch.pe.simd_f32
    } else if acc == DType::F16 {
        2 * arch.pe.simd_mixed
    } else {
        arch.pe.simd_mixed
    } as u64;
    let wb = w.bits().div_ceil(8).max(1);
    let ab = acc.bits().div_ceil(8).max(1);
    let read = arch.pe.sram_read_bytes_per_cycle as u64 / (wb + ab);
    let write = arch.pe.sram_write_bytes_per_cycle as u64 / ab;
    simd.min(read.max(1)).min(write.max(1))
}

/// Element-wise fp32 ops per cycle.
pub fn ew_rate(arch: &ArchSpec) -> u64 {
    arch.pe.simd_elementwise as u64
}

/// Adds per cycle of partial sums of dtype `acc`: `@fadds` for fp32, twice
/// that for fp16 (`@faddh`, as the 16-bit FMA runs at twice the 32-bit width) [DOC, I].
pub fn add_rate(arch: &ArchSpec, acc: DType) -> u64 {
    if acc == DType::F16 {
        2 * ew_rate(arch)
    } else {
        ew_rate(arch)
    }
}

/// Local partial GEMV on one PE over `batch` rows (a batch's sequences, a
/// chunk's tokens): a task, then the faster of two loops.
/// * MeshGEMV's: `tile_k · batch` AXPYs of `tile_n` elements, each a
///   memory-operand vector op (the idiom the MeshGEMV silicon rows measure,
///   all at one row);
/// * with more than one row, MeshGEMM's inner loop ([`mapped_mac`]): per
///   input column a loop iteration, per weight element one mapped
///   multiply-add over the rows (the idiom the MeshGEMM rows measure, whose
///   `A` column is here the rows' inputs and whose `B` tile the weights).
///
/// At one row the first is what the kernel measured; a skinny GEMM of a few
/// rows pays the AXPY's fixed cost per row, the mapped loop once per weight
/// element, so from two rows on a program runs whichever is cheaper.
pub fn gemv_compute(arch: &ArchSpec, tile_n: u64, tile_k: u64, batch: u64, w: DType, acc: DType) -> u64 {
    if tile_n == 0 || tile_k == 0 {
        return 0;
    }
    let axpy = tile_k.saturating_mul(batch).saturating_mul(vector_op(arch, tile_n, fma_rate(arch, w, acc)));
    let loop_ = if batch > 1 { mapped_mac(arch, batch, tile_k, tile_n, w, acc) } else { u64::MAX };
    arch.pe.task_overhead_cycles as u64 + axpy.min(loop_)
}

/// MeshGEMM's inner loop on one PE: `tile_k` loop iterations, each a `@map`
/// over `tile_n` elements issuing one fused multiply-add over `rows` values
/// (at the operand/accumulator rate). The calibrated constants are
/// `pe.loop_iteration_cycles` and `pe.mapped_op_overhead_cycles`.
pub fn mapped_mac(arch: &ArchSpec, rows: u64, tile_k: u64, tile_n: u64, w: DType, acc: DType) -> u64 {
    let pe = &arch.pe;
    let per_elem = pe.mapped_op_overhead_cycles as u64 + div_ceil(rows, fma_rate(arch, w, acc));
    tile_k.saturating_mul(pe.loop_iteration_cycles as u64 + tile_n.saturating_mul(per_elem))
}

/// A PE that skips the multiply-accumulate (a measurement harness): it zeroes
/// its `tile_n · batch` partials with one vector store.
pub fn gemv_zero(arch: &ArchSpec, tile_n: u64, batch: u64, acc: DType) -> u64 {
    vector_op(arch, tile_n * batch, add_rate(arch, acc))
}

/// Adding an incoming partial of `elems` values of dtype `acc`, streamed from
/// the fabric into the local one (a fabric-sourced DSD op: no memory-operand overhead).
pub fn add_partial(arch: &ArchSpec, elems: u64, acc: DType) -> u64 {
    div_ceil(elems, add_rate(arch, acc))
}

/// `ops` element-wise passes over `elems` values (fused epilogues, softmax).
pub fn elementwise(arch: &ArchSpec, elems: u64, ops: u32) -> u64 {
    ops as u64 * vector_op(arch, elems, ew_rate(arch))
}

/// Cycles between a PE's router and its compute engine, one way.
pub fn ramp(arch: &ArchSpec) -> u64 {
    arch.router.ramp_latency_cycles as u64
}

/// One pass of a streamed wavelet through the adder of a relay: a cycle [A,
/// the `+1` of Luczynski et al.'s `2·T_R + 1` per dependent step].
pub fn adder_pass(_arch: &ArchSpec) -> u64 {
    1
}

/// A relay's delay from the streamed partial's head reaching the PE's router
/// to the head of the sum leaving it: down the ramp, one adder pass, up the ramp.
pub fn relay(arch: &ArchSpec) -> u64 {
    2 * ramp(arch) + adder_pass(arch)
}

/// A message from memory to memory: up the ramp, the head crosses `hops`
/// links, the body streams behind, down the ramp.
pub fn message(arch: &ArchSpec, hops: u32, bytes: u64) -> u64 {
    2 * ramp(arch) + hops as u64 * arch.router.hop_latency_cycles as u64 + serialization(arch, bytes)
}

/// Cycles a message of `bytes` occupies each link it crosses.
pub fn serialization(arch: &ArchSpec, bytes: u64) -> u64 {
    div_ceil(bytes, arch.router.link_bytes_per_cycle as u64)
}

/// A message between wafers: system-link latency plus its bytes at the link's bandwidth.
pub fn inter_wafer(arch: &ArchSpec, bytes: u64) -> u64 {
    (arch.inter_wafer_latency_cycles() + bytes as f64 / arch.inter_wafer_bytes_per_cycle()).ceil() as u64
}

/// Per-hop delay of a pipelined chain: a hop, then a relay.
pub fn chain_step(arch: &ArchSpec) -> u64 {
    arch.router.hop_latency_cycles as u64 + relay(arch)
}

/// Attention on one PE holding `pos` positions of each sequence whose
/// `rows` query rows it serves (`tokens` rows per sequence: 1 in decode, a
/// chunk's tokens in prefill), for a KV head with `group` query heads of
/// `head_dim`: scores (a dot product per query head, row and position),
/// softmax statistics and exponentials (5 element-wise passes over the
/// scores), and `P·V` (an AXPY of `head_dim` per query head, row and
/// position). The `group · tokens` query vectors of one sequence share its
/// keys and values, so, as a Gemv over several rows, each of the two
/// products runs the cheaper of the vector op per (query, position) and
/// MeshGEMM's mapped loop over those queries ([`mapped_mac`]: per position
/// a loop iteration, per key or value element one multiply-add over them).
pub fn attention_compute(
    arch: &ArchSpec,
    group: u64,
    head_dim: u64,
    pos: u64,
    rows: u64,
    tokens: u64,
    kv: DType,
) -> u64 {
    if pos == 0 {
        return 0;
    }
    let rate = fma_rate(arch, kv, DType::F32);
    let tokens = tokens.clamp(1, rows.max(1));
    let (seqs, shared) = (rows.div_ceil(tokens), group * tokens);
    let per_query = shared.saturating_mul(pos).saturating_mul(vector_op(arch, head_dim, rate));
    let product =
        if shared > 1 { per_query.min(mapped_mac(arch, shared, pos, head_dim, kv, DType::F32)) } else { per_query };
    let soft = elementwise(arch, group * pos * rows, 5);
    arch.pe.task_overhead_cycles as u64 + 2 * seqs.saturating_mul(product) + soft
}

/// Combining two partial attention states (rescale both accumulators, add, update max and sum).
pub fn attention_combine(arch: &ArchSpec, group: u64, head_dim: u64, batch: u64) -> u64 {
    elementwise(arch, group * (head_dim + 2) * batch, 3)
}

/// One step of a Cannon GEMM on one PE, split as (compute, exposed tile move):
/// `tile_k` loop iterations, each a `@map` over the `tile_n` elements of the B
/// row issuing one fused multiply-add over the `tile_m` elements of the A
/// column into C (MeshGEMM's `@fmach`, at the operand/accumulator rate), plus
/// the step's fixed overhead; the A and B tiles move two hops (the
/// interleaved ring) concurrently with the compute, so only what outlasts it
/// is exposed.
pub fn gemm_step(arch: &ArchSpec, tile_m: u64, tile_k: u64, tile_n: u64, w: DType, acc: DType) -> (u64, u64) {
    let pe = &arch.pe;
    let compute = mapped_mac(arch, tile_m, tile_k, tile_n, w, acc);
    let moved = w.bytes_for(tile_m * tile_k).max(w.bytes_for(tile_k * tile_n));
    let shift = message(arch, 2, moved);
    (pe.gemm_step_overhead_cycles as u64 + compute, shift.saturating_sub(compute))
}

/// A whole Cannon GEMM on a `grid × grid` square: `grid` steps (the initial
/// skew is in the per-step overhead), as (compute, exposed tile moves).
pub fn gemm(arch: &ArchSpec, grid: u64, tile_m: u64, tile_k: u64, tile_n: u64, w: DType, acc: DType) -> (u64, u64) {
    let (c, s) = gemm_step(arch, tile_m, tile_k, tile_n, w, acc);
    (grid * c, grid * s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_ir::arch_preset;

    #[test]
    fn a_gemv_over_several_rows_runs_the_cheaper_of_the_axpy_and_the_mapped_loop() {
        let a = arch_preset("wse3").unwrap();
        let (w, acc) = (DType::Bf16, DType::F32);
        let task = a.pe.task_overhead_cycles as u64;
        // One row: MeshGEMV's idiom, 6 AXPYs of 5 elements (⌈5/2⌉ + 43 each), whatever the loop would cost.
        assert_eq!(gemv_compute(&a, 5, 6, 1, w, acc), task + 6 * (3 + 43));
        // Five rows (a 5-token verify step): the AXPYs would pay their 43 cycles 30 times;
        // MeshGEMM's loop pays 40 per input column and 1 + ⌈5/2⌉ per weight element.
        let axpy = 6 * 5 * (3 + 43);
        let mapped = 6 * (40 + 5 * (1 + 3));
        assert_eq!(mapped_mac(&a, 5, 6, 5, w, acc), mapped);
        assert_eq!(gemv_compute(&a, 5, 6, 5, w, acc), task + mapped.min(axpy));
        assert!(mapped < axpy);
        // Wide tiles keep the AXPY: 1,024 elements a row stream at the port rate.
        let wide = gemv_compute(&a, 1024, 2, 2, w, acc);
        assert_eq!(wide, task + 2 * 2 * (512 + 43));
        // More rows never cost less.
        for b in 1..64 {
            assert!(gemv_compute(&a, 5, 6, b + 1, w, acc) >= gemv_compute(&a, 5, 6, b, w, acc));
        }
    }

    #[test]
    fn queries_that_share_a_sequence_s_keys_run_the_cheaper_loop_in_attention() {
        let a = arch_preset("wse3").unwrap();
        let kv = DType::Bf16;
        let (task, soft) = (a.pe.task_overhead_cycles as u64, |n: u64| elementwise(&a, n, 5));
        // One query head, one token: a dot product and an AXPY of 64 per position (⌈64/2⌉ + 43).
        assert_eq!(attention_compute(&a, 1, 64, 10, 1, 1, kv), task + 2 * 10 * (32 + 43) + soft(10));
        // Four query heads of one KV head (GQA): per position 40 + 64 × (1 + ⌈4/2⌉) < 4 × 75.
        assert_eq!(attention_compute(&a, 4, 64, 10, 1, 1, kv), task + 2 * 10 * (40 + 64 * 3) + soft(40));
        // Four sequences of one query each share nothing: four times the per-sequence cost.
        let one = attention_compute(&a, 1, 64, 10, 1, 1, kv) - task - soft(10);
        assert_eq!(attention_compute(&a, 1, 64, 10, 4, 1, kv), task + 4 * one + soft(40));
        // A chunk of 8 tokens of one sequence: 8 queries share the keys.
        assert_eq!(attention_compute(&a, 1, 64, 10, 8, 8, kv), task + 2 * 10 * (40 + 64 * 5) + soft(80));
        // Head dim 128, group 2: the vector op (2 × 107) beats the loop (40 + 128 × 2).
        assert_eq!(attention_compute(&a, 2, 128, 10, 1, 1, kv), task + 2 * 10 * 2 * (64 + 43) + soft(20));
    }

    #[test]
    fn gemv_rate_is_port_bound_on_wse3() {
        let a = arch_preset("wse3").unwrap();
        // bf16 weight (2 B) + fp32 accumulator (4 B) read, 4 B written per element:
        // the 8 B/cycle write port allows 2 elements/cycle, below the SIMD's 4.
        assert_eq!(fma_rate(&a, DType::Bf16, DType::F32), 2);
        // fp16 accumulators halve the bytes: 4 elements/cycle (ports), below @fmach's 8.
        assert_eq!(fma_rate(&a, DType::Bf16, DType::F16), 4);
        // 16 x 16 fp32 tile: 16 AXPYs of 16 elements at 2/cycle + 43 overhead, + task.
        assert_eq!(gemv_compute(&a, 16, 16, 1, DType::F32, DType::F32), 20 + 16 * (8 + 43));
    }

    #[test]
    fn messages_pay_the_ramps_and_hops_then_stream() {
        let a = arch_preset("wse3").unwrap();
        let r = ramp(&a);
        assert_eq!(message(&a, 10, 400), r + 10 + 100 + r);
        assert_eq!(serialization(&a, 3), 1);
        // A chain step: one hop and a relay (down the ramp, one add, up the ramp).
        assert_eq!(chain_step(&a), 1 + 2 * r + 1);
        // Streamed adds pay no memory-operand overhead: 8 fp32 values at 4/cycle.
        assert_eq!(add_partial(&a, 8, DType::F32), 2);
        assert_eq!(add_partial(&a, 8, DType::F16), 1);
    }

    #[test]
    fn a_cannon_step_is_loop_iterations_of_mapped_fmas_with_the_moves_hidden() {
        let a = arch_preset("wse3").unwrap();
        let (l, o, s) = (
            a.pe.loop_iteration_cycles as u64,
            a.pe.mapped_op_overhead_cycles as u64,
            a.pe.gemm_step_overhead_cycles as u64,
        );
        // 8x8x8 fp16 tiles: 8 iterations, each 8 mapped fmach over 8 elements at 4/cycle.
        assert_eq!(gemm_step(&a, 8, 8, 8, DType::F16, DType::F16), (s + 8 * (l + 8 * (o + 2)), 0));
        // P steps.
        assert_eq!(
            gemm(&a, 16, 8, 8, 8, DType::F16, DType::F16).0,
            16 * gemm_step(&a, 8, 8, 8, DType::F16, DType::F16).0
        );
        // A move that outlasts the compute is exposed: a 1x1 B tile but a 64-row A column of 512 k.
        let (c, exposed) = gemm_step(&a, 512, 64, 1, DType::F16, DType::F16);
        assert_eq!(exposed, message(&a, 2, 2 * 512 * 64) - (c - s));
        assert!(exposed > 0);
    }
}

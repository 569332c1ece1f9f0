//! The machine's limit: a lower bound on one decode step's latency that holds
//! for **any** mapping of the step onto the wafers a design point uses.
//!
//! Owns: [`machine_bound`], three floors computed from first principles with
//! the arch's own parameters and the graph IR's cost model (no constant of
//! its own), and the largest of them, the bound. Reports show it beside the
//! achieved latency, so a user sees how far a mapping is from what the
//! machine allows and which floor binds. Must not: look at a compiled
//! program (the bound is a property of the model, the arch and the wafer
//! count, not of a mapping), or be fitted to anything.
//!
//! `N` below is every PE of the `wafers` wafers (`wafers · mesh_width ·
//! mesh_height`): a mapping may use any of them, so the bound assumes it uses
//! all of them perfectly.
//!
//! **Compute floor.** The step's FLOPs ([`wafer_ir::graph_stats`]: every op's
//! [`wafer_ir::op_cost`], the whole batch) at the PEs' peak: `N × peak ×
//! clock`, where `peak` is the most FLOPs one PE can do in a cycle in the
//! micro-timing model: `2 ×` [`timing::fma_rate`] (a multiply-accumulate is 2
//! FLOPs; the rate is taken at its best over the step's weight and KV dtypes
//! and both accumulator widths, fp16 accumulators included, so the SRAM port
//! caps are the engines'), or the element-wise and streamed-add rates if they
//! were larger. Every FLOP is priced at that peak, element-wise ones too.
//!
//! **Memory floor.** A PE reads only its own SRAM, so every byte the step
//! must read is read by the PE holding it, at `sram_read_bytes_per_cycle`.
//! Those bytes are the weights it uses ([`wafer_ir::OpCost::weight_bytes`],
//! except that the batch may share one embedding row and, of an MoE layer's
//! experts, only the `top_k` every sequence might route to) and the KV cache
//! it reads. At best they are spread evenly over all `N` PEs and read once:
//! `ceil(ceil(bytes / N) / sram_read_bytes_per_cycle)` cycles. Cache writes
//! (a separate port) and activations are left out.
//!
//! **Communication floor.** The step is a chain of *stages*, each ended by an
//! op whose every output element depends on all of its input: a norm over the
//! whole feature vector (`groups = 1`; per-head q/k norms do not end a stage)
//! or the final arg-max. Every element of a stage's end then depends on every
//! byte of the *stage set*: the weights its matmuls read (all of them; MoE
//! experts: the `top_k` one sequence routes to), the embedding row, and one
//! sequence's KV cache (its share of the batch's) — norm weights are left out.
//! Assumptions (those of every engine): weights and cache are stationary
//! (multiplied on the PE whose SRAM holds them, never moved during a step);
//! each PE holds at most `sram_bytes − sram_reserved_bytes` of them; a value
//! moving between PEs pays [`timing::message`] (a ramp out, one
//! `hop_latency_cycles` per mesh hop of Manhattan distance, at least one
//! cycle of serialisation, a ramp in). Then the stage set occupies at least
//! `B = ceil(set bytes / usable SRAM)` PEs, and a set of `B` mesh points has
//! two points `a`, `b` at Manhattan distance `D ≥ Dmin(B)`, the least `D`
//! with `ceil((D+1)² / 2) ≥ B` (in the rotated coordinates `x+y`, `x−y` a set
//! of diameter `D` lies in a `(D+1)²` box of which half the points are mesh
//! points; the bound is reached by a diamond). The stage's end, computed on
//! some PE `c`, needs a value formed on `a` and one formed on `b`, each
//! after the previous stage's end first existed anywhere (every product of a
//! stage uses a value derived from it, as in every block the workloads
//! build); one of them travels
//! `max(d(a,c), d(b,c)) ≥ ceil(D/2)` hops. So each stage adds at least
//! `message(ceil(D/2), 1 byte)` cycles to the one before (0 when its set fits
//! one PE), and the stages add up. We charge half the span, not a broadcast
//! plus a reduction across it, and no relay per hop: conservative, not clever.
//! When the stage sets do not fit one wafer (`N/wafers` PEs of usable SRAM),
//! the token's end depends on a value formed on another wafer, which crosses
//! the system link at least once: the floor is then at least
//! [`timing::inter_wafer`] of one byte, and it is the larger of that and the
//! stages' sum (not their sum: the crossing may overlap the stages). One
//! crossing, however many wafers the model needs: a pipeline pays one per
//! wafer boundary, but a mapping need not. A stage's span is counted within
//! one wafer's PEs at most, and on more than one wafer a stage is charged at
//! most one crossing: its set may be split over wafers, shortening the span
//! on each, but then some part is on another wafer than `c`.
//!
//! The floors are not added (compute may overlap reading memory and moving
//! data); the bound is the largest. Tests check that no preset's event or
//! analytical latency beats it.

use crate::timing;
use serde::{Deserialize, Serialize};
use wafer_ir::{op_cost, ArchSpec, DType, Graph, NormKind, OpKind};

/// Which floor sets the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Floor {
    Compute,
    Memory,
    Communication,
}

impl Floor {
    /// Short name for text (`compute-bound floor`, …).
    pub fn name(self) -> &'static str {
        match self {
            Floor::Compute => "compute",
            Floor::Memory => "memory",
            Floor::Communication => "communication",
        }
    }
}

/// The lower bound of one design point, with the figures it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineBound {
    /// The largest floor, µs per step.
    pub bound_us: f64,
    /// Which floor it is.
    pub binding_floor: Floor,
    pub compute_floor_us: f64,
    pub memory_floor_us: f64,
    pub communication_floor_us: f64,
    /// Every PE of the wafers used.
    pub pes: u64,
    /// FLOPs of the whole step (all sequences of the batch).
    pub step_flops: u64,
    /// The most FLOPs one PE does per cycle in the timing model.
    pub peak_flops_per_pe_cycle: u64,
    /// Bytes the step must read from SRAM (weights used + KV cache read).
    pub sram_read_bytes: u64,
    /// Stages of the dependency chain (see the module doc), and the hops charged across them.
    pub chain_stages: u64,
    pub chain_hops: u64,
    /// System-link crossings charged (0 or 1).
    pub inter_wafer_crossings: u32,
}

/// The least Manhattan diameter `D` of a set of `b` mesh points: the least
/// `D` with `ceil((D+1)² / 2) ≥ b`.
pub fn min_diameter(b: u64) -> u64 {
    if b <= 1 {
        return 0;
    }
    let holds = |d: u64| (d + 1) * (d + 1) - ((d + 1) * (d + 1)) / 2 >= b;
    // sqrt(2b) - 1 is close; walk from a safe start below it.
    let mut d = ((2.0 * b as f64).sqrt() as u64).saturating_sub(3);
    while !holds(d) {
        d += 1;
    }
    d
}

/// Bytes of `op` that every element of its stage's end depends on, for one sequence.
fn stage_bytes(g: &Graph, op: &wafer_ir::Op) -> u64 {
    let c = op_cost(g, op);
    let b = g.batch.max(1);
    match &op.kind {
        OpKind::Norm { .. } => 0,
        OpKind::Embedding | OpKind::PosEmbedding => c.weight_bytes / b,
        OpKind::MoeExperts { experts, top_k, .. } => {
            let all: u64 = op.inputs[2..5].iter().map(|&w| g.tensor(w).bytes()).sum();
            all / experts.max(&1) * top_k
        }
        _ => c.weight_bytes + c.kv_read_bytes / b,
    }
}

/// Bytes of `op` the step must read from SRAM, at the least over routings and tokens.
fn read_bytes(g: &Graph, op: &wafer_ir::Op) -> u64 {
    let c = op_cost(g, op);
    match &op.kind {
        OpKind::Embedding | OpKind::PosEmbedding => c.weight_bytes / g.batch.max(1),
        OpKind::MoeExperts { experts, top_k, .. } => {
            let all: u64 = op.inputs[2..5].iter().map(|&w| g.tensor(w).bytes()).sum();
            all / experts.max(&1) * top_k + c.kv_read_bytes
        }
        _ => c.weight_bytes + c.kv_read_bytes,
    }
}

/// Whether every element of `op`'s output depends on every element of its input.
fn ends_stage(op: &wafer_ir::Op) -> bool {
    match op.kind {
        OpKind::Norm { groups, kind, .. } => groups == 1 && matches!(kind, NormKind::Rms { .. } | NormKind::Layer),
        OpKind::Sample => true,
        _ => false,
    }
}

/// The most FLOPs a PE does per cycle for a step with weights `w` and cache `kv`.
fn peak_per_pe(arch: &ArchSpec, w: DType, kv: DType) -> u64 {
    let mut peak = timing::ew_rate(arch).max(timing::add_rate(arch, DType::F16));
    for d in [w, kv] {
        for acc in [DType::F32, DType::F16] {
            peak = peak.max(2 * timing::fma_rate(arch, d, acc));
        }
    }
    peak.max(1)
}

/// The lower bound on one decode step of `g` on `wafers` wafers of `arch`
/// (see the module doc). `g` must have passed the verifier.
pub fn machine_bound(g: &Graph, arch: &ArchSpec, wafers: u32) -> MachineBound {
    let stats = wafer_ir::graph_stats(g);
    let wafer_pes = arch.pes().max(1);
    let pes = wafer_pes * wafers.max(1) as u64;
    let us = |cycles: u64| arch.cycles_to_us(cycles as f64);

    let peak = peak_per_pe(arch, g.weight_dtype, g.kv_dtype);
    let flops = stats.step.flops;
    let compute_cycles = flops.div_ceil(pes * peak);

    let read: u64 = g.ops.iter().map(|op| read_bytes(g, op)).sum();
    let memory_cycles = read.div_ceil(pes).div_ceil(arch.pe.sram_read_bytes_per_cycle.max(1) as u64);

    let usable = arch.usable_sram().max(1);
    let crossing = timing::inter_wafer(arch, 1);
    let mut charges = Vec::new();
    let (mut hops, mut set, mut total) = (0u64, 0u64, 0u64);
    for op in &g.ops {
        set += stage_bytes(g, op);
        if ends_stage(op) {
            let b = set.div_ceil(usable).min(wafer_pes);
            let h = min_diameter(b).div_ceil(2);
            hops += h;
            let mut charge = if b > 1 { timing::message(arch, h as u32, 1) } else { 0 };
            if wafers > 1 {
                charge = charge.min(crossing);
            }
            charges.push(charge);
            total += set;
            set = 0;
        }
    }
    let mut comm_cycles: u64 = charges.iter().sum();
    let mut crossings = 0;
    if total > wafer_pes.saturating_mul(usable) {
        crossings = 1;
        comm_cycles = comm_cycles.max(crossing);
    }

    let floors =
        [(compute_cycles, Floor::Compute), (memory_cycles, Floor::Memory), (comm_cycles, Floor::Communication)];
    let (top, binding) = floors.iter().copied().max_by_key(|f| f.0).unwrap_or((0, Floor::Compute));
    MachineBound {
        bound_us: us(top),
        binding_floor: binding,
        compute_floor_us: us(compute_cycles),
        memory_floor_us: us(memory_cycles),
        communication_floor_us: us(comm_cycles),
        pes,
        step_flops: flops,
        peak_flops_per_pe_cycle: peak,
        sram_read_bytes: read,
        chain_stages: charges.len() as u64,
        chain_hops: hops,
        inter_wafer_crossings: crossings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diamond_is_the_densest_set_of_a_diameter() {
        // Diameter 0 holds 1 point, 1 holds 2, 2 holds 5 (a plus), 3 holds 8, 4 holds 13 (a diamond).
        for (b, d) in [(1, 0), (2, 1), (3, 2), (5, 2), (6, 3), (8, 3), (9, 4), (13, 4), (14, 5)] {
            assert_eq!(min_diameter(b), d, "{b} points");
        }
        // A square of s × s points has diameter 2(s − 1), at least the diamond's.
        for s in [10u64, 100, 700] {
            assert!(min_diameter(s * s) <= 2 * (s - 1));
            assert!(min_diameter(s * s) >= s - 1);
        }
    }
}

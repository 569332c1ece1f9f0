//! Analytical engine: closed-form latency of a verified program.
//!
//! Reports [`wafer_cost::estimate`] — the contention-free walk over regions
//! that the compiler's `auto` strategy also weighs programs with — as a
//! [`SimResult`]: each region's start and end, the critical path, and the
//! path's phases split into compute, on-wafer and inter-wafer cycles. It
//! agrees with the event engine up to contention and per-PE detail. A program
//! whose active regions wait on inactive ones is a deadlock, as in the event
//! engine, never a latency. Must not: time anything itself (the cost crate
//! does), or play individual messages on links.

use crate::result::{role_of, Breakdown, Outcome, RegionTiming, SimResult};
use wafer_cost::{estimate, Starved};
use wafer_ir::{Program, ProgramInfo};

/// Simulates `p` in closed form.
pub fn simulate_analytical(p: &Program, info: &ProgramInfo) -> SimResult {
    let est = match estimate(p, info) {
        Ok(e) => e,
        Err(Starved { blocked }) => {
            return SimResult { outcome: Outcome::Deadlock { blocked }, ..SimResult::for_program("analytical", p) }
                .finish()
        }
    };
    let cycles = est.cycles;
    let mut on_path = vec![false; p.regions.len()];
    for &i in &est.critical_path {
        on_path[i] = true;
    }
    let mut timings = Vec::with_capacity(p.regions.len());
    let mut busy_sum = 0.0;
    for (i, (r, e)) in p.regions.iter().zip(&est.regions).enumerate() {
        let c = e.cost;
        let bd = if on_path[i] {
            // The region's share of the critical path is end - end(predecessor); when
            // its critical input was a residual (needed only by the epilogue), part of
            // its own work overlapped the predecessor, so scale the phases to that share.
            let share = e.end - e.pred.map_or(0.0, |j| est.regions[j].end);
            let b = Breakdown {
                compute: c.compute + c.reduce_compute,
                comm: c.prologue_comm + c.reduce_comm + e.route,
                inter_wafer: e.inter_wafer,
                wait: 0.0,
            };
            let k = if b.total() > share && b.total() > 0.0 { share / b.total() } else { 1.0 };
            Breakdown { compute: b.compute * k, comm: b.comm * k, inter_wafer: b.inter_wafer * k, wait: 0.0 }
        } else {
            Breakdown::default()
        };
        let busy = if r.active && cycles > 0.0 { c.compute / cycles } else { 0.0 };
        busy_sum += busy * r.rect.pes() as f64;
        timings.push(RegionTiming {
            region: r.name.clone(),
            layer: r.layer,
            role: role_of(&r.name),
            pes: r.rect.pes(),
            start: e.start,
            end: e.end,
            breakdown: bd,
            busy_fraction: busy,
        });
    }
    SimResult {
        cycles,
        critical_path: est.critical_path.iter().map(|&i| p.regions[i].name.clone()).collect(),
        pe_busy_mean: if info.pes_used > 0 { busy_sum / info.pes_used as f64 } else { 0.0 },
        regions: timings,
        ..SimResult::for_program("analytical", p)
    }
    .finish()
}

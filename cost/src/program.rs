//! The program-level closed form: a verified program's step, contention-free.
//!
//! Owns: the walk over regions in execution order that adds route times
//! (the longest path's hops plus the largest serialised load on one port or
//! link) and row broadcasts to each region's [`region_cost`], in the order of
//! each region's task list (`wafer_ir::dataflow`: inputs listed before its
//! compute gate its start, one listed after it only its epilogue), waits for the
//! PEs a region shares with earlier turns, and follows the critical path.
//! [`estimate`] is the compiler's objective when it weighs whole programs
//! (`--strategy auto`) and the analytical engine's figures
//! (`wafer_simulator::simulate_analytical` reports exactly this walk).
//! Must not: play individual messages on links, or build reports.

use crate::region::{region_cost_rows, RegionCost};
use crate::timing::*;
use wafer_ir::{route_messages, ArchSpec, Dataflow, Dir, Program, ProgramInfo, Purpose, TaskKind, Work};

/// The closed form of one step of a program.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Cycles of the step: the latest end of an active region (0 with none).
    pub cycles: f64,
    /// Time per output token, µs, at the program's clock.
    pub us: f64,
    /// One per region, in program order.
    pub regions: Vec<RegionEstimate>,
    /// Indices of the regions along the critical path, first to last.
    pub critical_path: Vec<usize>,
}

/// One region's place in the step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionEstimate {
    /// Cycle its last needed input arrived (or its PEs were free), and its output was complete
    /// (both 0 for an inactive region).
    pub start: f64,
    pub end: f64,
    /// Its own phases: [`region_cost`] plus its row broadcast, less the
    /// column multicast of a Gemv that no forward route feeds.
    pub cost: RegionCost,
    /// The critical input route's on-wafer and inter-wafer cycles (0 when the
    /// region waited on its PEs, or had no input).
    pub route: f64,
    pub inter_wafer: f64,
    /// The region it waited on last: the source of its critical input, or the
    /// earlier turn that held its PEs.
    pub pred: Option<usize>,
}

/// Active regions waiting on routes from inactive ones: they never start
/// (the event engine deadlocks on them), so the step has no latency.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} active region(s) wait on routes no active region sends: {}", blocked.len(), blocked.join(" | "))]
pub struct Starved {
    /// One line per starved region, naming the routes it waits on.
    pub blocked: Vec<String>,
}

/// Cycles the busiest mesh link of these messages must carry: each message's
/// dimension-ordered path (X along its source row, then Y along its
/// destination column, tails excluded) loads every link it crosses for its
/// serialization time; links carry one message at a time.
fn busiest_link(a: &ArchSpec, msgs: &[wafer_ir::Message]) -> u64 {
    /// (axis, line, direction), then the span [from, to) and the cycles it holds each link.
    type Segment = ((u8, u32, bool), u32, u32, u64);
    let mut segs: Vec<Segment> = Vec::with_capacity(2 * msgs.len());
    for m in msgs {
        let ser = serialization(a, m.bytes);
        for leg in wafer_ir::xy_path(m.from, m.to).into_iter().filter(|l| l.len > 0) {
            // The span of the PEs its links leave, along its line.
            let r = leg.senders();
            segs.push(match leg.dir {
                Dir::E | Dir::W => ((0, r.y, leg.dir == Dir::E), r.x, r.x + r.w, ser),
                Dir::S | Dir::N => ((1, r.x, leg.dir == Dir::S), r.y, r.y + r.h, ser),
            });
        }
    }
    segs.sort_unstable();
    let mut best = 0u64;
    let mut i = 0;
    while i < segs.len() {
        let key = segs[i].0;
        let mut events: Vec<(u32, i64)> = Vec::new();
        while i < segs.len() && segs[i].0 == key {
            events.push((segs[i].1, segs[i].3 as i64));
            events.push((segs[i].2, -(segs[i].3 as i64)));
            i += 1;
        }
        events.sort_unstable_by_key(|e| (e.0, e.1));
        let mut load = 0i64;
        for (_, d) in events {
            load += d;
            best = best.max(load.max(0) as u64);
        }
    }
    best
}

/// Time of a route from its source's output to its last delivery (multicast
/// tails excluded: the destination's prologue counts them), split into
/// (on-wafer, inter-wafer) cycles: the longest path's hops plus the largest
/// serialised load on one port or one link (a lower bound on contention).
fn route_time(p: &Program, id: wafer_ir::RouteId) -> (f64, f64) {
    let a = &p.arch;
    let msgs = route_messages(p, id);
    let mut worst_hops = 0u32;
    let mut per_src: std::collections::BTreeMap<(u32, u32), u64> = Default::default();
    let mut per_dst: std::collections::BTreeMap<(u32, u32), u64> = Default::default();
    let mut inter = false;
    let mut bytes = 0u64;
    for m in &msgs {
        worst_hops = worst_hops.max(m.from.x.abs_diff(m.to.x) + m.from.y.abs_diff(m.to.y));
        *per_src.entry((m.from.x, m.from.y)).or_default() += serialization(a, m.bytes);
        *per_dst.entry((m.to.x, m.to.y)).or_default() += serialization(a, m.bytes);
        inter |= m.inter_wafer;
        bytes += m.bytes;
    }
    if inter {
        return (0.0, inter_wafer(a, bytes) as f64);
    }
    let backlog = per_src.values().chain(per_dst.values()).copied().max().unwrap_or(0);
    let busiest = if msgs.len() > 1 { busiest_link(a, &msgs) } else { 0 };
    let hops = worst_hops as u64 * a.router.hop_latency_cycles as u64;
    ((a.pe.task_overhead_cycles as u64 + 2 * ramp(a) + (hops + backlog).max(busiest)) as f64, 0.0)
}

/// The broadcast of region `i`'s row outputs back along its rows (a `bcast`
/// route): from the row root to the farther end of the row.
fn row_bcast(p: &Program, df: &Dataflow, i: usize) -> f64 {
    let r = &p.regions[i];
    let has =
        df.regions[i].tasks.iter().any(|t| t.kind == TaskKind::Collective && t.purposes.contains(Purpose::RowBcast));
    match r.work {
        Work::Gemv { reduce, glu, tile_n, .. } if has && r.rect.w > 1 => {
            let c = reduce.root(r.rect.w);
            let out = if glu { tile_n / 2 } else { tile_n };
            message(&p.arch, c.max(r.rect.w - 1 - c), p.act_dtype.bytes_for(out * p.rows())) as f64
        }
        _ => 0.0,
    }
}

/// Active regions that wait on a route from an inactive region: they could
/// never start (the event engine deadlocks on them), so there is no latency.
fn starved(p: &Program, df: &Dataflow) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in p.regions.iter().enumerate().filter(|(_, r)| r.active) {
        let never: Vec<String> = df.regions[i]
            .tasks
            .iter()
            .filter_map(|t| match (t.kind, t.route) {
                (TaskKind::Recv, Some(route)) if !p.region(p.route(route).src).active => {
                    let rt = p.route(route);
                    Some(format!("{route} ({} from inactive {} `{}`)", rt.kind.name(), rt.src, p.region(rt.src).name))
                }
                _ => None,
            })
            .collect();
        if !never.is_empty() {
            out.push(format!("region r{i} `{}`: never delivered: {}", r.name, never.join(", ")));
        }
    }
    out
}

/// The step of `p` in closed form: every region's start and end and the
/// critical path. Takes the verifier's witness: only verified programs are priced.
pub fn estimate(p: &Program, info: &ProgramInfo) -> Result<Estimate, Starved> {
    let df = wafer_ir::lower(p, info);
    let blocked = starved(p, &df);
    if !blocked.is_empty() {
        return Err(Starved { blocked });
    }
    let n = p.regions.len();
    let mut end = vec![0.0f64; n];
    let mut regions: Vec<RegionEstimate> = Vec::with_capacity(n);
    // Regions sharing PEs take turns: a region starts once the PEs it covers
    // have finished the earlier regions they hold (per cell of the occupancy).
    let occ = wafer_ir::Occupancy::new(&p.regions.iter().map(|r| (r.wafer, r.rect)).collect::<Vec<_>>());
    let shared = occ.pes() < p.regions.iter().map(|r| r.rect.pes()).sum::<u64>();
    let cells_of: Vec<Vec<usize>> =
        if shared { p.regions.iter().map(|r| occ.cells_of(r.wafer, r.rect)).collect() } else { vec![Vec::new(); n] };
    let mut cell_free = vec![(0.0f64, 0usize); if shared { occ.cells().len() } else { 0 }];
    for (i, r) in p.regions.iter().enumerate() {
        let mut cost = region_cost_rows(&p.arch, &r.work, r.rect, p.rows(), p.new_tokens, p.weight_dtype, p.kv_dtype);
        cost.reduce_comm += row_bcast(p, &df, i);
        // Fed when its task list receives column inputs (from any region, active or not).
        let fed =
            df.regions[i].tasks.iter().any(|t| t.kind == TaskKind::Recv && t.purposes.contains(Purpose::ColumnInput));
        if !fed {
            // No input to multicast down the columns: every PE starts with its data.
            if let Work::Gemv { .. } = r.work {
                cost.prologue_comm -= (r.rect.h as f64 - 1.0) * p.arch.router.hop_latency_cycles as f64;
            }
        }
        let (mut ready, mut via, mut rc, mut ri) = (0.0f64, None, 0.0, 0.0);
        if r.active {
            // The task list's order: inputs listed before the compute gate the
            // region's start; one listed after it (a residual, after the
            // reduction: the verifier allows no other) gates only the
            // epilogue, so it may arrive that much later.
            let tasks = &df.regions[i];
            let compute = tasks.compute();
            for (k, t) in tasks.tasks.iter().enumerate() {
                let (TaskKind::Recv, Some(route)) = (t.kind, t.route) else { continue };
                let rt = p.route(route);
                if !p.region(rt.src).active {
                    continue;
                }
                let (on, inter) = route_time(p, route);
                let t = if k > compute {
                    end[rt.src.0 as usize] + on + inter - (cost.total() - cost.reduce_compute).max(0.0)
                } else {
                    end[rt.src.0 as usize] + on + inter
                };
                if t > ready || via.is_none() {
                    (ready, via, rc, ri) = (t.max(ready), Some(rt.src.0 as usize), on, inter);
                }
            }
        }
        if r.active && shared {
            let (free, holder) =
                cells_of[i].iter().map(|&c| cell_free[c]).fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
            if free > ready {
                // The PEs, not the data, were the last to be ready: the region that held them
                // is on the critical path (no route between them: nothing to add).
                (ready, via, rc, ri) = (free, Some(holder), 0.0, 0.0);
            }
        }
        end[i] = if r.active { ready + cost.total() } else { 0.0 };
        if r.active {
            for &c in &cells_of[i] {
                cell_free[c] = (end[i], i);
            }
        }
        regions.push(RegionEstimate { start: ready, end: end[i], cost, route: rc, inter_wafer: ri, pred: via });
    }
    let last = (0..n).filter(|&i| p.regions[i].active).max_by(|&a, &b| end[a].total_cmp(&end[b]).then(a.cmp(&b)));
    let cycles = last.map_or(0.0, |l| end[l]);
    let mut critical_path = Vec::new();
    let mut cur = last;
    while let Some(i) = cur {
        critical_path.push(i);
        cur = regions[i].pred;
    }
    critical_path.reverse();
    Ok(Estimate { cycles, us: cycles / (p.arch.clock_ghz * 1e3), regions, critical_path })
}

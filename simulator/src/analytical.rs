//! Analytical engine: closed-form latency of a verified program.
//!
//! Owns: the per-region closed form ([`region_cost`], also the compiler's
//! search objective) and the walk over regions in execution order that adds
//! route times (contention-free) along the critical path. Prices every step
//! with [`crate::timing`], taking each region's largest tile, so it agrees
//! with the event engine up to contention and per-PE detail. A program whose
//! active regions wait on inactive ones is a deadlock, as in the event engine,
//! never a latency. Must not: play individual messages on links.

use crate::result::{role_of, Breakdown, Outcome, RegionTiming, SimResult};
use crate::timing::*;
use wafer_ir::{route_messages, ArchSpec, DType, Program, ProgramInfo, Rect, Reduce, RouteKind, Step, Work};

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

/// Closed-form cost of `work` on `rect` (its largest tile), for the program's
/// batch and dtypes. Shared with the compiler's mapping search.
pub fn region_cost(arch: &ArchSpec, work: &Work, rect: Rect, batch: u64, weight: DType, kv: DType) -> RegionCost {
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
        Work::Attention { group, head_dim, pos_per_pe, rows_per_head, reduce, .. } => {
            let bytes = 4 * group * (head_dim + 2) * batch;
            let comb = attention_combine(arch, group, head_dim, batch);
            let (rc, ra) = reduce_cost(arch, reduce, rect.w, bytes, comb);
            let (cc, ca) = reduce_cost(arch, Reduce::Chain, rows_per_head, bytes, comb);
            RegionCost {
                prologue_comm: (rect.w as f64 - 1.0 + rows_per_head as f64 - 1.0) * hop,
                compute: attention_compute(arch, group, head_dim, pos_per_pe, batch, kv) as f64,
                reduce_comm: rc + cc,
                reduce_compute: ra + ca,
            }
        }
        Work::Embedding { .. } => RegionCost { compute: task, ..Default::default() },
    }
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
        if m.from.x != m.to.x {
            let (lo, hi) = (m.from.x.min(m.to.x), m.from.x.max(m.to.x));
            segs.push(((0, m.from.y, m.to.x > m.from.x), lo, hi, ser));
        }
        if m.from.y != m.to.y {
            let (lo, hi) = (m.from.y.min(m.to.y), m.from.y.max(m.to.y));
            segs.push(((1, m.to.x, m.to.y > m.from.y), lo, hi, ser));
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
fn row_bcast(p: &Program, i: usize) -> f64 {
    let r = &p.regions[i];
    let has = p.routes.iter().any(|rt| rt.kind == RouteKind::Bcast && rt.src.0 as usize == i);
    match r.work {
        Work::Gemv { reduce, glu, tile_n, .. } if has && r.rect.w > 1 => {
            let c = reduce.root(r.rect.w);
            let out = if glu { tile_n / 2 } else { tile_n };
            message(&p.arch, c.max(r.rect.w - 1 - c), p.act_dtype.bytes_for(out * p.batch)) as f64
        }
        _ => 0.0,
    }
}

/// Active regions that wait on a route from an inactive region: they could
/// never start (the event engine deadlocks on them), so there is no latency.
fn starved(p: &Program) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in p.regions.iter().enumerate().filter(|(_, r)| r.active) {
        let never: Vec<String> = r
            .steps
            .iter()
            .filter_map(|st| match *st {
                Step::Recv { route, .. } if !p.region(p.route(route).src).active => {
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

/// Simulates `p` in closed form.
pub fn simulate_analytical(p: &Program, info: &ProgramInfo) -> SimResult {
    let blocked = starved(p);
    if !blocked.is_empty() {
        return SimResult { outcome: Outcome::Deadlock { blocked }, ..SimResult::for_program("analytical", p) }
            .finish();
    }
    let n = p.regions.len();
    let mut end = vec![0.0f64; n];
    let mut start = vec![0.0f64; n];
    let mut crit_pred: Vec<Option<usize>> = vec![None; n];
    let mut timings = Vec::with_capacity(n);
    let mut own: Vec<(RegionCost, f64, f64)> = Vec::with_capacity(n); // cost, route on-wafer, route inter-wafer
                                                                      // Regions sharing PEs take turns: a region starts once the PEs it covers
                                                                      // have finished the earlier regions they hold (per cell of the occupancy).
    let occ = wafer_ir::Occupancy::new(&p.regions.iter().map(|r| (r.wafer, r.rect)).collect::<Vec<_>>());
    let shared = occ.pes() < p.regions.iter().map(|r| r.rect.pes()).sum::<u64>();
    let cells_of: Vec<Vec<usize>> =
        if shared { p.regions.iter().map(|r| occ.cells_of(r.wafer, r.rect)).collect() } else { vec![Vec::new(); n] };
    let mut cell_free = vec![(0.0f64, 0usize); if shared { occ.cells().len() } else { 0 }];
    for (i, r) in p.regions.iter().enumerate() {
        let mut cost = region_cost(&p.arch, &r.work, r.rect, p.batch, p.weight_dtype, p.kv_dtype);
        cost.reduce_comm += row_bcast(p, i);
        let fed = p.routes.iter().any(|rt| rt.kind == RouteKind::Forward && rt.dst.0 as usize == i);
        if !fed {
            // No input to multicast down the columns: every PE starts with its data.
            if let Work::Gemv { .. } = r.work {
                cost.prologue_comm -= (r.rect.h as f64 - 1.0) * p.arch.router.hop_latency_cycles as f64;
            }
        }
        let (mut ready, mut via, mut rc, mut ri) = (0.0f64, None, 0.0, 0.0);
        if r.active {
            for st in &r.steps {
                if let Step::Recv { route, .. } = *st {
                    let rt = p.route(route);
                    if !p.region(rt.src).active {
                        continue;
                    }
                    let (on, inter) = route_time(p, route);
                    // Residual inputs are needed only at the epilogue.
                    let t = if rt.kind == RouteKind::Residual {
                        end[rt.src.0 as usize] + on + inter - (cost.total() - cost.reduce_compute).max(0.0)
                    } else {
                        end[rt.src.0 as usize] + on + inter
                    };
                    if t > ready || via.is_none() {
                        (ready, via, rc, ri) = (t.max(ready), Some(rt.src.0 as usize), on, inter);
                    }
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
        start[i] = ready;
        end[i] = if r.active { ready + cost.total() } else { 0.0 };
        if r.active {
            for &c in &cells_of[i] {
                cell_free[c] = (end[i], i);
            }
        }
        crit_pred[i] = via;
        own.push((cost, rc, ri));
    }
    let last = (0..n).filter(|&i| p.regions[i].active).max_by(|&a, &b| end[a].total_cmp(&end[b]).then(a.cmp(&b)));
    let cycles = last.map_or(0.0, |l| end[l]);
    let mut on_path = vec![false; n];
    let mut path = Vec::new();
    let mut cur = last;
    while let Some(i) = cur {
        on_path[i] = true;
        path.push(p.regions[i].name.clone());
        cur = crit_pred[i];
    }
    path.reverse();
    let mut busy_sum = 0.0;
    for (i, r) in p.regions.iter().enumerate() {
        let (c, rc, ri) = own[i];
        let bd = if on_path[i] {
            // The region's share of the critical path is end - end(predecessor); when
            // its critical input was a residual (needed only by the epilogue), part of
            // its own work overlapped the predecessor, so scale the phases to that share.
            let share = end[i] - crit_pred[i].map_or(0.0, |j| end[j]);
            let b = Breakdown {
                compute: c.compute + c.reduce_compute,
                comm: c.prologue_comm + c.reduce_comm + rc,
                inter_wafer: ri,
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
            start: start[i],
            end: end[i],
            breakdown: bd,
            busy_fraction: busy,
        });
    }
    // Links: each route's bytes spread over its messages' hops (a lower bound on load).
    SimResult {
        cycles,
        critical_path: path,
        pe_busy_mean: if info.pes_used > 0 { busy_sum / info.pes_used as f64 } else { 0.0 },
        regions: timings,
        ..SimResult::for_program("analytical", p)
    }
    .finish()
}

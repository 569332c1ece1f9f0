//! Event engine: a cycle-approximate discrete-event simulation of one decode step.
//!
//! Owns: playing a verified program message by message over the mesh's links
//! (X-then-Y paths, multicast tails, per-link reservations, per-PE output
//! ports, per-wafer-pair system links), the data-driven order of compute,
//! reductions and epilogues on every PE, the typed outcome (finished, cycle
//! limit, deadlock naming what is blocked), the critical-path breakdown, and
//! [`estimate_event`]: the memory and events a run needs, computed from the
//! program's shape so that [`try_simulate_event`] can refuse before allocating.
//! Every step is priced with [`crate::timing`]; geometry comes from
//! [`wafer_ir::for_each_message`], [`wafer_ir::Reduce::rounds`] and the
//! [`wafer_ir::Region`] slice functions, so this engine and the analytical one
//! differ only by contention, exact per-PE tile sizes and exact message
//! geometry. Must not: choose mappings, read or write files, or depend on
//! thread count (it is single-threaded and its event queue breaks time ties by
//! insertion order).
//!
//! # Model
//! * Only the departure of a message is an event: it reserves the links of its
//!   path in departure order. The head enters link `i` at
//!   `e_i = max(e_{i-1} + hop, free_i)` (`e_0 = max(departure, free_0)`), every
//!   link is busy `serialization(bytes)` cycles from `e_i`, and a PE reached by
//!   the head at `H` holds the whole message at `H + serialization(bytes)`.
//!   Everything a delivery sets off (compute, adds, epilogues) is arithmetic on
//!   the arrival times and ends in further departures, which are queued.
//! * A PE sends through one output port, one message after the other, in the
//!   order of its region's task list (`wafer_ir::dataflow`). The task list
//!   also says when a Gemv's row root may compute: a residual received before
//!   `Compute` holds the root's compute until it is in; one received after the
//!   reduction (the compiler's schedule) holds only the epilogue.
//! * Each time value carries its critical path split into compute, on-wafer
//!   communication, inter-wafer communication and waiting (link or system-link
//!   contention), and the output line it came from; the result's breakdown is
//!   read off these stamps, so the parts always sum to the cycle count.
//!
//! # Layout (what makes a full-wafer spread mapping fit)
//! The engine plays exactly the events described above, in exactly the order
//! of a single (time, insertion) priority queue; only where their state lives
//! changed, so the cycles do not depend on it:
//! * **Collective transfers are implicit.** A reduction, norm or argmax route
//!   (the bulk of a spread mapping: one transfer per PE of every layer's
//!   matrices) is never expanded into messages. Its transfers are
//!   [`wafer_ir::Reduce::rounds`] of one line repeated on every line, which is
//!   how [`wafer_ir::for_each_message`] generates them too, so a [`Pattern`]
//!   per line shape gives every node its target, the rank of that receive at
//!   the target, and whether it relays; a queued transfer is just
//!   (region, sending node) and its departure stamp. The message's bytes,
//!   ends and receive slot follow from the region's geometry.
//! * **Per-PE state lives only while its region runs.** A region's input
//!   stamps, node stamps and receive slots are allocated when the region is
//!   first touched (an input arrives, or it starts with no inputs) and freed
//!   once its last output line is ready: by then every transfer inside it has
//!   been delivered (each line's root needs all of them), and nothing later
//!   reads them (a residual or K/V append only updates per-line state).
//! * **Per-wafer state lives only while the wafer is in use.** A wafer's links
//!   and its PEs' output ports and compute units are allocated at first touch
//!   and freed once every active region on it has finished and every message
//!   that leaves from, or walks on, it has departed; the link-load figures are
//!   folded in before. Indices are over the PEs the regions cover
//!   ([`wafer_ir::Occupancy`]), never over wafers × mesh.
//! * **The queue is a calendar.** Events within a window of upcoming cycles
//!   sit in one FIFO bucket per cycle; later ones in a heap keyed by
//!   (time, insertion), moved into their bucket before any event of that cycle
//!   can be queued there directly; an event queued before the current cycle
//!   (possible only through stale input stamps) goes to a heap popped first.
//!   Pops come out in (time, insertion) order, exactly as from one heap.

use crate::result::{role_of, Breakdown, LinkLoad, Outcome, RegionTiming, SimResult};
use crate::timing;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use wafer_ir::{
    for_each_message, route_message_bound, DType, Dir, Occupancy, Pe, Program, ProgramInfo, Purpose, Rect, Reduce,
    Region, RouteId, RouteKind, TaskKind, Work,
};

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Stop with [`Outcome::CycleLimit`] once the clock passes this many cycles.
    pub max_cycles: u64,
    /// [`try_simulate_event`] refuses a program whose estimated memory is above this many bytes.
    pub max_memory_bytes: u64,
    /// [`try_simulate_event`] refuses a program with more events (message departures) than this.
    pub max_events: u64,
}

impl Default for EventLimits {
    fn default() -> Self {
        // About 15 minutes of simulated time at 1.1 GHz: far beyond any decode step.
        // Memory is the caller's to bound (the CLI passes `--max-memory`). 2^28
        // events (eight times llama-3.1-405b's 32 million) take about a minute.
        EventLimits { max_cycles: 1 << 40, max_memory_bytes: wafer_ir::limits::UNLIMITED, max_events: 1 << 28 }
    }
}

/// What a run of the event engine on a program will allocate and do, computed
/// from the program's shape before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventEstimate {
    /// Peak bytes, an upper bound: the link tables of every wafer in use and
    /// the ports and compute units of the PEs the regions cover (as if every
    /// wafer were in use at once), the per-node, per-PE and per-receive state
    /// of every region (as if every region ran at once), per-line state, the
    /// table of messages that are not collective transfers, and a queue
    /// holding every event at once.
    pub bytes: u64,
    /// Events the run takes off its queue: one departure per message.
    pub events: u64,
}

/// Bytes of one queued event in the heaps (time, insertion number, entry).
const HEAP_ENTRY: u64 = 64;

/// Estimates the memory and events of simulating `p` (see [`EventEstimate`]).
pub fn estimate_event(p: &Program, info: &ProgramInfo) -> EventEstimate {
    use std::mem::size_of;
    let a = &p.arch;
    let mul = |x: u64, y: u64| x.saturating_mul(y);
    let rects: Vec<(u32, Rect)> = p.regions.iter().filter(|r| r.active).map(|r| (r.wafer, r.rect)).collect();
    let mut wafers: Vec<u32> = rects.iter().map(|r| r.0).collect();
    wafers.sort_unstable();
    wafers.dedup();
    let phys = Occupancy::new(&rects).pes();
    let plane = mul(mul(4, mul(a.mesh_width as u64, a.mesh_height as u64)), size_of::<Link>() as u64);
    let fabric = mul(wafers.len() as u64, plane)
        .saturating_add(mul(phys, 16))
        .saturating_add(mul((p.wafers.max(1) as u64).pow(2), 8));
    let stamp = size_of::<Stamp>() as u64;
    // Per region while it runs: per node (PEs plus at most w + h extra) base
    // stamp, pending count, receive offset, physical PE, and one queued
    // transfer (in a heap that may have doubled); per PE its input stamp; per
    // collective receive an arrival stamp; per row add and serialization.
    let mut weight = vec![0u64; p.regions.len()];
    let mut lines = 0u64;
    for (i, r) in p.regions.iter().enumerate() {
        if !r.active {
            continue;
        }
        let (w, h) = (r.rect.w as u64, r.rect.h as u64);
        let nodes = r.rect.pes().saturating_add(w + h);
        let recvs: u64 = p
            .routes
            .iter()
            .filter(|rt| rt.src.0 as usize == i && rt.kind.is_collective() && rt.kind != RouteKind::Bcast)
            .map(|rt| route_message_bound(p, rt))
            .fold(0, u64::saturating_add);
        weight[i] = mul(nodes, stamp + 12 + 2 * HEAP_ENTRY)
            .saturating_add(mul(r.rect.pes(), stamp))
            .saturating_add(mul(recvs, stamp))
            .saturating_add(mul(3 * (w + h) + 4, 16));
        lines = lines.saturating_add(r.out_lines() as u64);
    }
    let explicit: u64 = p
        .routes
        .iter()
        .filter(|rt| p.region(rt.src).active && p.region(rt.dst).active)
        .filter(|rt| !matches!(rt.kind, RouteKind::Reduce | RouteKind::Argmax))
        .map(|rt| route_message_bound(p, rt))
        .fold(0, u64::saturating_add);
    // Per line: ~14 stamps and counters; per explicit message: its record, its
    // place in a send list, and its queued departure.
    let per_line = 8 * stamp + 48;
    let per_msg = size_of::<Msg>() as u64 + 8 + 2 * HEAP_ENTRY;
    let bytes = fabric
        .saturating_add(live_bound(p, &weight))
        .saturating_add(mul(lines, per_line))
        .saturating_add(mul(explicit, per_msg))
        .saturating_add((RING * BUCKET_KEEP) as u64 * size_of::<Entry>() as u64)
        .saturating_add(mul(p.regions.len() as u64, 1024))
        .saturating_add(mul(p.routes.len() as u64, 16));
    EventEstimate { bytes, events: info.messages }
}

/// The most per-region state alive at once (`weight` per region): a region
/// holds state from its first input until its last line is ready. Region `R`
/// gates `S` (is done before `S` holds state) when, for every forward
/// predecessor `P` of `S`, either `P` can emit only after `R` is done (`R` is
/// gated by `P`'s own gates, which were done before `P` could emit) or `P` is
/// a Gemv that emits no line before all its inputs arrived (a norm waits for
/// every column; a reduction whose every row holds outputs spans all columns)
/// and every line of `R` sends to it. Regions that can hold state from the
/// start gate on nothing and count whole. Any other set alive together is
/// some `S` with regions neither gating nor gated by `S`: the bound adds the
/// largest such sum.
fn live_bound(p: &Program, weight: &[u64]) -> u64 {
    let n = p.regions.len();
    let words = n.div_ceil(64);
    let active = |i: usize| p.regions[i].active;
    // Does Gemv `r` emit only once every input is in?
    let needs_all = |r: &Region| -> bool {
        let Work::Gemv { norm, reduce, n: rows, tile_n, .. } = r.work else { return false };
        if norm {
            return true;
        }
        let (w, h) = (r.rect.w, r.rect.h);
        if (h as u64 - 1).saturating_mul(tile_n) >= rows {
            return false; // an empty row emits on one column alone
        }
        let mut to = vec![NONE; w as usize];
        for round in reduce.rounds(w) {
            for (a, z) in round {
                if to[a as usize] == NONE {
                    to[a as usize] = z;
                }
            }
        }
        let root = reduce.root(w);
        (0..w).all(|mut i| {
            for _ in 0..=w {
                if i == root {
                    return true;
                }
                i = to[i as usize];
                if i == NONE {
                    // Stranded: the row never completes, so it never emits.
                    return true;
                }
            }
            false
        })
    };
    // Does every output line of `src` send to `dst`?
    let all_lines_send = |src: &Region, dst: &Region| -> bool {
        let k = match dst.work {
            Work::Gemv { k, .. } => k,
            Work::Attention { .. } => dst.work.in_elems(),
            Work::Embedding { .. } | Work::Gemm { .. } => return false,
        };
        (0..src.out_lines()).all(|l| {
            let (lo, hi) = src.out_slice(l);
            lo < hi && lo < k
        })
    };
    // Is `r` done only once every input is in? (An attention finishes every head block.)
    let done_needs_all = |r: &Region| matches!(r.work, Work::Attention { .. }) || needs_all(r);
    let can_start = |r: &Region| -> bool {
        match r.work {
            Work::Gemv { norm, .. } => !norm && (0..r.rect.w).any(|c| len(r.cols_of(c)) == 0),
            _ => false,
        }
    };
    let mut gates: Vec<Vec<u64>> = vec![vec![0u64; words]; n];
    // Regions done once `R` is: itself, its gates, and (when it finishes only
    // with every input in) what fully feeds it, with what those imply.
    let mut done: Vec<Vec<u64>> = vec![vec![0u64; words]; n];
    let or = |x: &mut Vec<u64>, y: &[u64]| x.iter_mut().zip(y).for_each(|(a, b)| *a |= b);
    for s in 0..n {
        if !active(s) {
            continue;
        }
        let mut acc: Option<Vec<u64>> = None;
        let start = can_start(&p.regions[s]);
        for rt in p.routes.iter().filter(|rt| !start && rt.kind == RouteKind::Forward && rt.dst.0 as usize == s) {
            let pi = rt.src.0 as usize;
            if !active(pi) {
                continue;
            }
            let mut x = gates[pi].clone();
            let pr = &p.regions[pi];
            if needs_all(pr) {
                for r2 in p.routes.iter().filter(|r2| r2.kind == RouteKind::Forward && r2.dst.0 as usize == pi) {
                    let ri = r2.src.0 as usize;
                    if active(ri) && all_lines_send(&p.regions[ri], pr) {
                        or(&mut x, &done[ri]);
                    }
                }
            }
            acc = Some(match acc {
                None => x,
                Some(mut a) => {
                    for (aw, xw) in a.iter_mut().zip(&x) {
                        *aw &= xw;
                    }
                    a
                }
            });
        }
        gates[s] = acc.unwrap_or_else(|| vec![0u64; words]);
        let mut d = gates[s].clone();
        d[s / 64] |= 1 << (s % 64);
        if done_needs_all(&p.regions[s]) {
            for rt in p.routes.iter().filter(|rt| rt.kind == RouteKind::Forward && rt.dst.0 as usize == s) {
                let ri = rt.src.0 as usize;
                if active(ri) && all_lines_send(&p.regions[ri], &p.regions[s]) {
                    let dr = done[ri].clone();
                    or(&mut d, &dr);
                }
            }
        }
        done[s] = d;
    }
    let has = |g: &[u64], i: usize| g[i / 64] >> (i % 64) & 1 == 1;
    // Regions that may hold state from the start count whole; the others
    // alive together are some `S` and regions neither gating nor gated by it.
    let from_start: Vec<bool> = (0..n).map(|i| active(i) && can_start(&p.regions[i])).collect();
    let always = (0..n).filter(|&i| from_start[i]).map(|i| weight[i]).fold(0, u64::saturating_add);
    let mut best = 0u64;
    for s in (0..n).filter(|&s| active(s) && !from_start[s]) {
        let mut sum = weight[s];
        for t in (0..n).filter(|&t| t != s && active(t) && !from_start[t]) {
            if !has(&gates[s], t) && !has(&gates[t], s) {
                sum = sum.saturating_add(weight[t]);
            }
        }
        best = best.max(sum);
    }
    always.saturating_add(best)
}

/// [`simulate_event`] after checking [`estimate_event`] against `limits`:
/// a program too large for the budget is refused before anything is allocated.
pub fn try_simulate_event(
    p: &Program,
    info: &ProgramInfo,
    limits: &EventLimits,
) -> Result<SimResult, wafer_ir::ResourceError> {
    let est = estimate_event(p, info);
    let what = format!(
        "the event simulation of {} ({} wafer(s) of {}x{} PEs, {} messages)",
        p.model, p.wafers, p.arch.mesh_width, p.arch.mesh_height, info.messages
    );
    wafer_ir::ResourceError::check_memory(&what, est.bytes, limits.max_memory_bytes)?;
    if est.events > limits.max_events {
        return Err(wafer_ir::ResourceError::Work {
            what,
            needed: est.events,
            limit: limits.max_events,
            unit: "events",
        });
    }
    Ok(simulate_event(p, info, limits))
}

/// Counters of one run (for benchmarks and progress reports; not part of the result).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events taken off the queue (message departures).
    pub events: u64,
    /// Messages of active routes.
    pub messages: u64,
    /// Link reservations made (one per link a message crossed).
    pub link_crossings: u64,
}

/// Simulates one decode step of `p` with the event engine.
pub fn simulate_event(p: &Program, info: &ProgramInfo, limits: &EventLimits) -> SimResult {
    simulate_event_with_stats(p, info, limits).0
}

/// [`simulate_event`], also returning the run's counters.
pub fn simulate_event_with_stats(p: &Program, info: &ProgramInfo, limits: &EventLimits) -> (SimResult, EventStats) {
    let mut sim = Sim::new(p, info);
    sim.start();
    let outcome = sim.run(limits);
    let res = sim.result(info, outcome, limits);
    let mut stats = sim.stats;
    stats.link_crossings = sim.fabric.crossings;
    (res, stats)
}

const NONE: u32 = u32::MAX;

/// A time with the critical path that led to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    t: u64,
    // Components as u32 (saturating): a step of 2^32 cycles is ~4 s of simulated time.
    compute: u32,
    comm: u32,
    inter: u32,
    /// Global output line whose departure this path went through last (`NONE`: none).
    from: u32,
}

impl Stamp {
    const ZERO: Stamp = Stamp { t: 0, compute: 0, comm: 0, inter: 0, from: NONE };

    /// The later of two (ties go to `o`, the newer one).
    #[inline]
    fn later(self, o: Stamp) -> Stamp {
        if o.t >= self.t {
            o
        } else {
            self
        }
    }
    #[inline]
    fn compute(mut self, c: u64) -> Stamp {
        self.t += c;
        self.compute = self.compute.saturating_add(c as u32);
        self
    }
    #[inline]
    fn comm(mut self, c: u64) -> Stamp {
        self.t += c;
        self.comm = self.comm.saturating_add(c as u32);
        self
    }
    #[inline]
    fn inter(mut self, c: u64) -> Stamp {
        self.t += c;
        self.inter = self.inter.saturating_add(c as u32);
        self
    }
    /// Waits (contention) until `t`.
    #[inline]
    fn wait_until(mut self, t: u64) -> Stamp {
        self.t = self.t.max(t);
        self
    }
    /// Waits until `t`, counted as communication (a PE's own messages serializing).
    #[inline]
    fn comm_until(mut self, t: u64) -> Stamp {
        if t > self.t {
            self.comm = self.comm.saturating_add((t - self.t) as u32);
            self.t = t;
        }
        self
    }
    fn wait(&self) -> u64 {
        self.t - self.compute as u64 - self.comm as u64 - self.inter as u64
    }
    fn breakdown_since(&self, earlier: &Stamp) -> Breakdown {
        Breakdown {
            compute: self.compute.saturating_sub(earlier.compute) as f64,
            comm: self.comm.saturating_sub(earlier.comm) as f64,
            inter_wafer: self.inter.saturating_sub(earlier.inter) as f64,
            wait: (self.wait() - earlier.wait()) as f64,
        }
    }
}

// ---- the queue ----

/// Cycles the calendar's buckets cover ahead of the current one.
const RING: usize = 1 << 14;
/// A drained bucket keeps at most this many entries' room.
const BUCKET_KEEP: usize = 16;

/// A queued departure: its stamp and what departs (see [`Key`]).
#[derive(Debug, Clone, Copy)]
struct Entry {
    st: Stamp,
    key: u64,
    /// A collective transfer's ends (x, y of sender and target, 16 bits
    /// each), its receive slot and serialization; unused for explicit messages.
    xy: u64,
    slot: u32,
    ser: u32,
}

/// What departs: an explicit message (its id), or a collective transfer
/// (`COLL | node kind << 61 | region << 32 | target node`).
const COLL: u64 = 1 << 63;

#[derive(Debug, Clone, Copy)]
struct Keyed(u64, u64, Entry);
impl PartialEq for Keyed {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Keyed {}
impl PartialOrd for Keyed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Keyed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

/// Pops in (time, insertion) order (see the module doc).
struct Queue {
    ring: Vec<Vec<Entry>>,
    /// The cycle being drained and the cursor into its bucket.
    cur: u64,
    pos: usize,
    in_ring: usize,
    far: BinaryHeap<Reverse<Keyed>>,
    late: BinaryHeap<Reverse<Keyed>>,
    seq: u64,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            ring: (0..RING).map(|_| Vec::new()).collect(),
            cur: 0,
            pos: 0,
            in_ring: 0,
            far: BinaryHeap::new(),
            late: BinaryHeap::new(),
            seq: 0,
        }
    }

    #[inline]
    fn push(&mut self, e: Entry) {
        let t = e.st.t;
        if t < self.cur {
            self.late.push(Reverse(Keyed(t, self.seq, e)));
        } else if t - self.cur < RING as u64 {
            self.ring[t as usize & (RING - 1)].push(e);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(Keyed(t, self.seq, e)));
        }
        self.seq += 1;
    }

    #[inline]
    fn pop(&mut self) -> Option<Entry> {
        if let Some(Reverse(Keyed(_, _, e))) = self.late.pop() {
            return Some(e);
        }
        loop {
            let b = &mut self.ring[self.cur as usize & (RING - 1)];
            if self.pos < b.len() {
                let e = b[self.pos];
                self.pos += 1;
                self.in_ring -= 1;
                return Some(e);
            }
            if b.capacity() > BUCKET_KEEP {
                *b = Vec::new();
            } else {
                b.clear();
            }
            self.pos = 0;
            if self.in_ring == 0 {
                let Reverse(Keyed(t, _, _)) = self.far.peek()?;
                self.cur = *t;
            } else {
                self.cur += 1;
            }
            // Far events entering the window go in first (they were queued earlier).
            while let Some(Reverse(Keyed(t, _, _))) = self.far.peek() {
                if *t - self.cur >= RING as u64 {
                    break;
                }
                let Some(Reverse(Keyed(t, _, e))) = self.far.pop() else { break };
                self.ring[t as usize & (RING - 1)].push(e);
                self.in_ring += 1;
            }
        }
    }
}

// ---- links, ports and compute units ----

/// 12 bytes: a full mesh has 3.5 M links per wafer.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(4))]
struct Link {
    free: u64,
    busy: u32,
}

/// One wafer in use: its mesh links (per direction, E/W row-major and N/S
/// column-major so that walks along a row or down a column stay local), and
/// the output port and compute unit of each PE the regions cover (wafer-local
/// dense index, [`Occupancy`] order).
struct Plane {
    east: Vec<Link>,
    west: Vec<Link>,
    north: Vec<Link>,
    south: Vec<Link>,
    port: Vec<u64>,
    free: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Reach {
    x: u32,
    y: u32,
    head: u64,
    dist: u32,
}

/// Every wafer's [`Plane`], allocated at first touch and released once the
/// wafer's last user is done (see the module doc).
struct Fabric {
    w: usize,
    h: usize,
    hop: u64,
    planes: Vec<Option<Box<Plane>>>,
    /// Per wafer: the PEs the regions cover there.
    pes: Vec<usize>,
    /// Per wafer: active regions not done plus messages not departed that use it.
    refs: Vec<u64>,
    /// Link load of released planes: (max busy, sum of busy, links used).
    folded: (u64, u64, u64),
    crossings: u64,
}

/// (max busy, sum of busy, links used) over a plane's links.
fn plane_load(p: &Plane) -> (u64, u64, u64) {
    let (mut max, mut sum, mut used) = (0u64, 0u64, 0u64);
    for l in p.east.iter().chain(&p.west).chain(&p.north).chain(&p.south) {
        let busy = l.busy as u64;
        if busy > 0 {
            max = max.max(busy);
            sum += busy;
            used += 1;
        }
    }
    (max, sum, used)
}

/// Reserves the links of `leg`'s first lane, in order, each for `ser`
/// cycles from the head's entry (`max(head, free)`, then `hop` to the next);
/// calls `at(i, head)` with the head's arrival at the PE link `i` reaches.
/// Returns the head's arrival at the leg's end.
#[inline(always)]
fn cross_leg(
    pl: &mut Plane,
    h: usize,
    hop: u64,
    ser: u64,
    leg: wafer_ir::Leg,
    mut head: u64,
    mut at: impl FnMut(u32, u64),
) -> u64 {
    if leg.len == 0 {
        return head;
    }
    let (links, stride): (&mut [Link], isize) = match leg.dir {
        Dir::E => (&mut pl.east, h as isize),
        Dir::W => (&mut pl.west, -(h as isize)),
        Dir::S => (&mut pl.south, 1),
        Dir::N => (&mut pl.north, -1),
    };
    let mut k = (leg.from.x as usize * h + leg.from.y as usize) as isize;
    for i in 0..leg.len {
        let l = &mut links[k as usize];
        let (free, busy) = (l.free, l.busy);
        let e = head.max(free);
        *l = Link { free: e + ser, busy: busy.saturating_add(ser as u32) };
        head = e + hop;
        at(i, head);
        k += stride;
    }
    head
}

impl Fabric {
    fn new(w: u32, h: u32, wafers: u32, hop: u64, pes: Vec<usize>) -> Fabric {
        Fabric {
            w: w as usize,
            h: h as usize,
            hop,
            planes: (0..wafers).map(|_| None).collect(),
            refs: vec![0; pes.len()],
            pes,
            folded: (0, 0, 0),
            crossings: 0,
        }
    }

    #[inline]
    fn plane(&mut self, wafer: u32) -> &mut Plane {
        let (n, pes) = (self.w * self.h, self.pes[wafer as usize]);
        self.planes[wafer as usize].get_or_insert_with(|| {
            Box::new(Plane {
                east: vec![Link::default(); n],
                west: vec![Link::default(); n],
                north: vec![Link::default(); n],
                south: vec![Link::default(); n],
                port: vec![0; pes],
                free: vec![0; pes],
            })
        })
    }

    /// One user of `wafer` is done; the last one releases its plane.
    fn release(&mut self, wafer: u32) {
        let r = &mut self.refs[wafer as usize];
        *r = r.saturating_sub(1);
        if *r == 0 {
            if let Some(p) = self.planes[wafer as usize].take() {
                let (m, s, u) = plane_load(&p);
                self.folded = (self.folded.0.max(m), self.folded.1 + s, self.folded.2 + u);
            }
        }
    }

    /// (max busy, sum of busy, links used) over all links.
    fn load(&self) -> (u64, u64, u64) {
        let mut acc = self.folded;
        for p in self.planes.iter().flatten() {
            let (m, s, u) = plane_load(p);
            acc = (acc.0.max(m), acc.1 + s, acc.2 + u);
        }
        acc
    }

    /// Plays a message departing `from` at `dep` along X then Y to `to`, then its
    /// multicast tail; pushes every PE it delivers to with the head's arrival.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        wafer: u32,
        from: Pe,
        to: Pe,
        fan_cols: u32,
        fan_rows: u32,
        west: bool,
        dep: u64,
        ser: u64,
        out: &mut Vec<Reach>,
    ) {
        let (h, hop) = (self.h, self.hop);
        let pl = self.plane(wafer);
        // The path and the tail are `wafer_ir`'s legs (`xy_path`, `tail_legs`).
        let (mut head, mut d) = (dep, 0u32);
        for leg in wafer_ir::xy_path(from, to) {
            head = cross_leg(pl, h, hop, ser, leg, head, |_, _| {});
            d += leg.len;
        }
        let row0 = out.len();
        out.push(Reach { x: to.x, y: to.y, head, dist: d });
        let [row, fan] = wafer_ir::tail_legs(to, fan_cols, fan_rows, west);
        cross_leg(pl, h, hop, ser, row, head, |j, hd| {
            let at = row.link(j + 1);
            out.push(Reach { x: at.x, y: at.y, head: hd, dist: d + j + 1 })
        });
        // Down every column the row reached, from the head's arrival there.
        for j in 0..=fan_cols as usize {
            let r = out[row0 + j];
            let col = wafer_ir::Leg { from: Pe { x: r.x, y: r.y }, lanes: 1, ..fan };
            cross_leg(pl, h, hop, ser, col, r.head, |i, hd| {
                out.push(Reach { x: r.x, y: r.y + i + 1, head: hd, dist: r.dist + i + 1 })
            });
        }
        let n = d as u64 + fan_cols as u64 + (fan_cols as u64 + 1) * fan_rows as u64;
        self.crossings += n;
    }

    /// A point-to-point transfer along one row or column (a collective's):
    /// the head's arrival at `to` and the hops.
    #[inline]
    fn line_walk(&mut self, wafer: u32, from: Pe, to: Pe, dep: u64, ser: u64) -> (u64, u32) {
        let (h, hop) = (self.h, self.hop);
        let pl = self.plane(wafer);
        let mut head = dep;
        let mut cross = |links: &mut [Link], i: usize| {
            let l = &mut links[i];
            let (free, busy) = (l.free, l.busy);
            let e = head.max(free);
            *l = Link { free: e + ser, busy: busy.saturating_add(ser as u32) };
            head = e + hop;
        };
        let (mut x, mut y) = (from.x as usize, from.y as usize);
        let (tx, ty) = (to.x as usize, to.y as usize);
        while x < tx {
            cross(&mut pl.east, x * h + y);
            x += 1;
        }
        while x > tx {
            cross(&mut pl.west, x * h + y);
            x -= 1;
        }
        while y < ty {
            cross(&mut pl.south, x * h + y);
            y += 1;
        }
        while y > ty {
            cross(&mut pl.north, x * h + y);
            y -= 1;
        }
        let d = from.x.abs_diff(to.x) + from.y.abs_diff(to.y);
        self.crossings += d as u64;
        (head, d)
    }
}

// ---- collective patterns ----

/// The transfers of one line of a collective shape; every line of the
/// region repeats it (see the module doc).
#[derive(Debug, Clone, Default)]
struct Pattern {
    /// Per index: the index its first transfer goes to (`NONE`: it sends none),
    /// that receive's rank among the target's receives, and whether it relays.
    to: Vec<u32>,
    rank: Vec<u32>,
    chain: Vec<bool>,
    /// Per index: where its receives start among the line's (`n + 1` entries).
    off: Vec<u32>,
    /// Transfers per line (of one route).
    pairs: u64,
    /// Routes of this kind on the region (their receives all count; only the
    /// first route's transfers are sent: a second route deadlocks, as it would
    /// with one message table).
    routes: u32,
}

impl Pattern {
    /// `routes` routes of transfers `rounds` over a line of `n`.
    fn new(n: u32, rounds: &[Vec<(u32, u32)>], relays: impl Fn(u32) -> bool, routes: u32) -> Pattern {
        let n = n as usize;
        let (mut to, mut rank, mut chain) = (vec![NONE; n], vec![0; n], vec![false; n]);
        let mut cnt = vec![0u32; n];
        let mut pairs = 0u64;
        if routes > 0 {
            for round in rounds {
                for &(a, z) in round {
                    let (a, z) = (a as usize, z as usize);
                    if to[a] == NONE {
                        to[a] = z as u32;
                        rank[a] = cnt[z];
                        chain[a] = relays(a as u32);
                    }
                    cnt[z] += 1;
                    pairs += 1;
                }
            }
        }
        let mut off = Vec::with_capacity(n + 1);
        let mut acc = 0u32;
        for c in cnt {
            off.push(acc);
            acc += c * routes;
        }
        off.push(acc);
        Pattern { to, rank, chain, off, pairs, routes }
    }
    fn recvs(&self, i: u32) -> u32 {
        self.off[i as usize + 1] - self.off[i as usize]
    }
    /// Indices other than `root` that send nothing: their partials strand.
    fn orphans(&self, root: u32) -> impl Iterator<Item = u32> + '_ {
        (0..self.to.len() as u32).filter(move |&i| i != root && self.to[i as usize] == NONE)
    }
}

/// What a delivered explicit message feeds.
#[derive(Debug, Clone, Copy)]
enum Dest {
    /// Forward into column `col` of a Gemv (multicast down the column).
    GemvCol { reg: u32, col: u32 },
    /// Query of head block `block` of an Attention (multicast over the block).
    AttnQ { reg: u32, block: u32 },
    /// The new token's K or V for head block `block`.
    AttnKv { reg: u32, block: u32 },
    /// Residual for output line `line` (region-local).
    Residual { reg: u32, line: u32 },
    /// The norm's broadcast back along row 0.
    NormBcast { reg: u32 },
    /// A Gemv row root's output broadcast back along row `line` (region-local).
    RowBcast { reg: u32, line: u32 },
    /// A sampled token fed back into an Embedding (its one line).
    Token { reg: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Msg {
    from: Pe,
    to: Pe,
    bytes: u64,
    fan_cols: u32,
    fan_rows: u32,
    west: bool,
    inter: bool,
    route: u32,
    /// Wafer and wafer-local dense index of the sender's PE (its output port).
    port_wafer: u32,
    port: u32,
    /// Wafer whose links it walks (the destination's when it crosses wafers).
    walk_wafer: u32,
    dest: Dest,
}

/// A region's per-PE and per-node state while it runs.
struct Live {
    /// Per PE (region row-major): latest input arrival.
    pe_in: Vec<Stamp>,
    /// Per node: own partial's stamp, receives outstanding (+1 for the base),
    /// receive offset (`nodes + 1`), wafer-local PE.
    base: Vec<Stamp>,
    pending: Vec<u32>,
    slot_off: Vec<u32>,
    pe: Vec<u32>,
    /// Per receive: arrival.
    slots: Vec<Stamp>,
    /// Add cost per Gemv row or attention sub-block; the norm's and the argmax's.
    row_add: Vec<u32>,
    consts: [u32; 2],
    /// Serialization of a transfer: per Gemv row or attention sub-block; norm or argmax.
    row_ser: Vec<u32>,
    ser: u32,
}

/// Pending count of a node whose partial never leaves (it never fires).
const STRANDED: u32 = u32::MAX / 2;

/// Per-region run state.
struct Reg<'p> {
    r: &'p Region,
    active: bool,
    line_base: u32,
    /// Output lines still to finish.
    lines_left: u32,
    /// Gemv: messages still to arrive per column / expected per column.
    col_pending: Vec<u32>,
    col_expected: Vec<u32>,
    cols_ready: u32,
    /// Any forward route (active or not) delivers into this region.
    has_inputs: bool,
    /// Region-local node numbering: the PEs row-major, then (Gemv) `w` norm
    /// nodes and `h` argmax nodes, or (Attention) `h` column-chain nodes.
    norm_base: u32,
    argmax_base: u32,
    col_node_base: u32,
    nodes: u32,
    /// Collective shapes: the row reduction (Gemv or Attention, over `w`), the
    /// norm's tree (over `w`), the argmax tree (over `h`), the attention
    /// column chain (over `rows_per_head`); and each one's route.
    row_pat: Pattern,
    norm_pat: Pattern,
    argmax_pat: Pattern,
    col_pat: Pattern,
    reduce_route: u32,
    norm_route: u32,
    argmax_route: u32,
    /// Nodes that send nothing, with the root of their line (applied at activation).
    orphans: Vec<(u32, u32)>,
    live: Option<Box<Live>>,
    bcast: u32,
    bc_at: Vec<Stamp>,
    busy: u64,
    start: u64,
    end: u64,
    done: bool,
    /// Structural reasons it can never finish (for the deadlock report).
    stuck: Vec<String>,
    /// Gemv whose task list receives the residual before computing: each row
    /// root computes only once its residual is in.
    res_first: bool,
}

struct Sim<'p> {
    p: &'p Program,
    /// Rows every activation carries (`Program::rows`: batch · new_tokens).
    batch: u64,
    hop: u64,
    ramp: u64,
    regs: Vec<Reg<'p>>,
    occ: Occupancy,
    cells: Vec<wafer_ir::Cell>,
    /// (first dense index, cell id), sorted.
    by_base: Vec<(u64, u32)>,
    /// Regions whose last line is ready, to free after the current event.
    finished: Vec<u32>,
    /// Per wafer: the dense index of its first covered PE.
    wafer_pe0: Vec<u64>,
    // Explicit messages (everything but collective transfers).
    msgs: Vec<Msg>,
    /// Per route: messages not yet departed.
    route_left: Vec<u64>,
    // Output lines (global index).
    line_reg: Vec<u32>,
    line_out: Vec<Stamp>,
    line_done: Vec<bool>,
    line_red: Vec<Option<Stamp>>,
    res_pending: Vec<u32>,
    res_stamp: Vec<Stamp>,
    /// Per output line of a `res_first` Gemv: the row root's compute, ready
    /// but waiting for its residual.
    res_hold: Vec<Option<Stamp>>,
    /// Per route: the position of its send in its source's task list (an
    /// output PE sends in that order).
    send_rank: Vec<u32>,
    q_pending: Vec<u32>,
    q_ready: Vec<bool>,
    kv_pending: Vec<u32>,
    kv_stamp: Vec<Stamp>,
    out_off: Vec<u32>,
    out_msgs: Vec<u32>,
    // Row broadcasts per output line (offsets into `bc_msgs`), deliveries outstanding, latest arrival.
    bc_off: Vec<u32>,
    bc_msgs: Vec<u32>,
    bc_pending: Vec<u32>,
    bc_stamp: Vec<Stamp>,
    // Links.
    fabric: Fabric,
    sys_free: Vec<u64>,
    queue: Queue,
    now: u64,
    scratch: Vec<Reach>,
    stats: EventStats,
}

/// `(line, message)` pairs grouped by line, stably: offsets (`nl + 1`) into the message list.
fn by_line(nl: usize, pairs: Vec<(u32, u32)>) -> (Vec<u32>, Vec<u32>) {
    let mut off = vec![0u32; nl + 1];
    for &(l, _) in &pairs {
        off[l as usize + 1] += 1;
    }
    for i in 0..nl {
        off[i + 1] += off[i];
    }
    let mut fill = off.clone();
    let mut msgs = vec![0; pairs.len()];
    for (l, id) in pairs {
        msgs[fill[l as usize] as usize] = id;
        fill[l as usize] += 1;
    }
    (off, msgs)
}

fn len(s: (u64, u64)) -> u64 {
    s.1.saturating_sub(s.0)
}

impl<'p> Sim<'p> {
    fn new(p: &'p Program, info: &ProgramInfo) -> Sim<'p> {
        let a = &p.arch;
        // The order each region runs its tasks in (`wafer_ir::dataflow`).
        let df = wafer_ir::lower(p, info);
        let mut regs: Vec<Reg<'p>> = Vec::with_capacity(p.regions.len());
        let (mut lines, mut line_reg) = (0u32, Vec::new());
        for (i, r) in p.regions.iter().enumerate() {
            let nlines = match r.work {
                Work::Gemv { .. } => r.rect.h,
                Work::Attention { .. } => r.work.attn_blocks() as u32,
                Work::Embedding { .. } | Work::Gemm { .. } => 1,
            };
            let line_base = if r.active { lines } else { NONE };
            if r.active {
                lines += nlines;
                line_reg.extend(std::iter::repeat_n(i as u32, nlines as usize));
            }
            let w = if matches!(r.work, Work::Gemv { .. }) { r.rect.w as usize } else { 0 };
            let pes = r.rect.pes() as u32;
            let (mut norm_base, mut argmax_base, mut col_node_base, mut nodes) = (NONE, NONE, NONE, pes);
            match r.work {
                Work::Gemv { norm, argmax, .. } => {
                    if norm {
                        norm_base = nodes;
                        nodes += r.rect.w;
                    }
                    if argmax {
                        argmax_base = nodes;
                        nodes += r.rect.h;
                    }
                }
                Work::Attention { .. } => {
                    col_node_base = nodes;
                    nodes += r.rect.h;
                }
                Work::Embedding { .. } | Work::Gemm { .. } => {}
            }
            regs.push(Reg {
                r,
                active: r.active,
                line_base,
                lines_left: r.out_lines(),
                col_pending: vec![0; w],
                col_expected: vec![0; w],
                cols_ready: 0,
                has_inputs: false,
                norm_base,
                argmax_base,
                col_node_base,
                nodes,
                row_pat: Pattern::default(),
                norm_pat: Pattern::default(),
                argmax_pat: Pattern::default(),
                col_pat: Pattern::default(),
                reduce_route: NONE,
                norm_route: NONE,
                argmax_route: NONE,
                orphans: Vec::new(),
                live: None,
                bcast: NONE,
                bc_at: Vec::new(),
                busy: 0,
                start: u64::MAX,
                end: 0,
                done: false,
                stuck: Vec::new(),
                res_first: matches!(r.work, Work::Gemv { .. }) && df.regions[i].gates_compute(Purpose::Residual),
            });
        }
        let rects: Vec<(u32, Rect)> = regs.iter().filter(|g| g.active).map(|g| (g.r.wafer, g.r.rect)).collect();
        let occ = Occupancy::new(&rects);
        let wafers = p.wafers.max(1) as usize;
        let (mut wafer_pe0, mut wafer_pes) = (vec![u64::MAX; wafers], vec![0usize; wafers]);
        for c in occ.cells() {
            let w = (c.wafer as usize).min(wafers - 1);
            wafer_pe0[w] = wafer_pe0[w].min(c.base);
            wafer_pes[w] += c.rect.pes() as usize;
        }
        let nl = lines as usize;
        let mut s = Sim {
            p,
            batch: p.rows(),
            hop: a.router.hop_latency_cycles as u64,
            ramp: a.router.ramp_latency_cycles as u64,
            regs,
            by_base: {
                let mut v: Vec<(u64, u32)> = occ.cells().iter().map(|c| (c.base, c.id as u32)).collect();
                v.sort_unstable();
                v
            },
            cells: occ.cells(),
            occ,
            finished: Vec::new(),
            wafer_pe0,
            msgs: Vec::new(),
            route_left: vec![0; p.routes.len()],
            line_reg,
            line_out: vec![Stamp::ZERO; nl],
            line_done: vec![false; nl],
            line_red: vec![None; nl],
            res_pending: vec![0; nl],
            res_stamp: vec![Stamp::ZERO; nl],
            res_hold: vec![None; nl],
            send_rank: (0..p.routes.len())
                .map(|j| {
                    let src = p.routes[j].src.0 as usize;
                    df.regions.get(src).and_then(|t| t.position(TaskKind::Send, RouteId(j as u32))).unwrap_or(0) as u32
                })
                .collect(),
            q_pending: vec![0; nl],
            q_ready: vec![false; nl],
            kv_pending: vec![0; nl],
            kv_stamp: vec![Stamp::ZERO; nl],
            out_off: Vec::new(),
            out_msgs: Vec::new(),
            bc_off: Vec::new(),
            bc_msgs: Vec::new(),
            bc_pending: vec![0; nl],
            bc_stamp: vec![Stamp::ZERO; nl],
            fabric: Fabric::new(
                a.mesh_width,
                a.mesh_height,
                wafers as u32,
                a.router.hop_latency_cycles as u64,
                wafer_pes,
            ),
            sys_free: vec![0; wafers.pow(2)],
            queue: Queue::new(),
            now: 0,
            scratch: Vec::new(),
            stats: EventStats::default(),
        };
        s.build_messages();
        s.build_patterns();
        s
    }

    /// Wafer-local dense index of `pe` on `wafer`: [`Occupancy`]'s cells in
    /// order, but column-major within each cell, so that the same step of a
    /// reduction on every row of a region (what the queue plays together)
    /// touches neighbouring entries.
    fn phys(&self, wafer: u32, pe: Pe) -> u32 {
        let g = self.occ.index(wafer, pe).unwrap_or(0);
        let k = self.by_base.partition_point(|&(b, _)| b <= g).saturating_sub(1);
        let Some(&(_, id)) = self.by_base.get(k) else { return 0 };
        let c = self.cells[id as usize];
        let o = g - c.base;
        let (yy, xx) = (o / c.rect.w.max(1) as u64, o % c.rect.w.max(1) as u64);
        let w = (wafer as usize).min(self.wafer_pe0.len() - 1);
        (c.base + xx * c.rect.h as u64 + yy).saturating_sub(self.wafer_pe0[w]) as u32
    }

    fn wafer_of(&self, reg: usize) -> u32 {
        self.regs[reg].r.wafer.min(self.p.wafers.max(1) - 1)
    }

    /// A task of `cost` cycles on PE `pe` of `wafer`, ready at `ready`: it
    /// starts once the PE has finished what it took on before (of any region).
    #[inline]
    fn occupy(&mut self, wafer: u32, pe: u32, ready: Stamp, cost: u64) -> Stamp {
        let free = &mut self.fabric.plane(wafer).free[pe as usize];
        let end = ready.wait_until(*free).compute(cost);
        *free = end.t;
        end
    }

    /// Output line (region-local) of region `reg` that PE `pe` sends from or receives at.
    fn line_of(&self, reg: usize, pe: Pe) -> u32 {
        let r = self.regs[reg].r;
        r.work.line_of_row(pe.y.saturating_sub(r.rect.y))
    }

    /// Expands every active non-collective route (and the norm's broadcast)
    /// into the message table and wires messages to their sending lines and
    /// receivers; counts the collective routes for [`Sim::build_patterns`].
    fn build_messages(&mut self) {
        let p = self.p;
        let mut line_sends: Vec<(u32, u32)> = Vec::new(); // (global line, msg)
        let mut bcast_sends: Vec<(u32, u32)> = Vec::new(); // (global line, msg)
        for (ri, rt) in p.routes.iter().enumerate() {
            let (si, di) = (rt.src.0 as usize, rt.dst.0 as usize);
            if rt.kind == RouteKind::Forward {
                self.regs[di].has_inputs = true;
            }
            if !self.regs[si].active || !self.regs[di].active {
                continue;
            }
            let (src, dst) = (self.regs[si].r, self.regs[di].r);
            match (rt.kind, &src.work) {
                (RouteKind::Reduce, Work::Gemv { .. } | Work::Attention { .. }) => {
                    if self.regs[si].reduce_route == NONE {
                        self.regs[si].reduce_route = ri as u32;
                    }
                    self.regs[si].row_pat.routes += 1;
                    continue;
                }
                (RouteKind::Argmax, Work::Gemv { argmax: true, .. }) => {
                    if self.regs[si].argmax_route == NONE {
                        self.regs[si].argmax_route = ri as u32;
                    }
                    self.regs[si].argmax_pat.routes += 1;
                    continue;
                }
                (RouteKind::Norm, Work::Gemv { norm: true, .. }) => {
                    if self.regs[si].norm_route == NONE {
                        self.regs[si].norm_route = ri as u32;
                    }
                    self.regs[si].norm_pat.routes += 1;
                }
                // A collective the region's work does not use: nothing waits on it.
                (RouteKind::Reduce | RouteKind::Argmax | RouteKind::Norm, _) => continue,
                _ => {}
            }
            let inter_wafer = src.wafer != dst.wafer;
            let (sw, dw) = (self.wafer_of(si), self.wafer_of(di));
            let mut pushed = Vec::new();
            for_each_message(p, RouteId(ri as u32), |m| pushed.push(*m));
            for m in pushed {
                let id = self.msgs.len() as u32;
                // What the message feeds, from its tag (`Purpose`), never its
                // geometry: without multicast a query arrives as one unicast
                // per PE of its block, the norm's broadcast as one per column.
                let into = |s: &Self| {
                    let dl = s.line_of(di, m.to);
                    (s.regs[si].line_base + s.line_of(si, m.from), dl, (s.regs[di].line_base + dl) as usize)
                };
                let dest = match m.purpose {
                    Purpose::ColumnInput => {
                        let (sl, _, _) = into(self);
                        line_sends.push((sl, id));
                        let col = m.to.x - dst.rect.x;
                        self.regs[di].col_expected[col as usize] += 1;
                        Dest::GemvCol { reg: di as u32, col }
                    }
                    Purpose::Query => {
                        let (sl, dl, gl) = into(self);
                        line_sends.push((sl, id));
                        self.q_pending[gl] += 1;
                        Dest::AttnQ { reg: di as u32, block: dl }
                    }
                    Purpose::KvAppend => {
                        let (sl, dl, gl) = into(self);
                        line_sends.push((sl, id));
                        self.kv_pending[gl] += 1;
                        Dest::AttnKv { reg: di as u32, block: dl }
                    }
                    Purpose::Residual => {
                        let (sl, dl, gl) = into(self);
                        line_sends.push((sl, id));
                        self.res_pending[gl] += 1;
                        Dest::Residual { reg: di as u32, line: dl }
                    }
                    Purpose::RowBcast => {
                        let l = self.line_of(si, m.from);
                        let gl = self.regs[si].line_base + l;
                        bcast_sends.push((gl, id));
                        self.bc_pending[gl as usize] += 1;
                        Dest::RowBcast { reg: si as u32, line: l }
                    }
                    Purpose::NormBcast => {
                        // Without multicast, the last unicast stands for it.
                        self.regs[si].bcast = id;
                        Dest::NormBcast { reg: si as u32 }
                    }
                    Purpose::Token => {
                        let (sl, _, gl) = into(self);
                        line_sends.push((sl, id));
                        self.q_pending[gl] += 1;
                        Dest::Token { reg: di as u32 }
                    }
                    // Collective rounds are implicit (the region's patterns).
                    Purpose::Collective => continue,
                };
                let port = self.phys(sw, m.from);
                let walk_wafer = if m.inter_wafer { dw } else { sw };
                debug_assert_eq!(m.inter_wafer, inter_wafer);
                self.msgs.push(Msg {
                    from: m.from,
                    to: m.to,
                    bytes: m.bytes,
                    fan_cols: m.fan_cols,
                    fan_rows: m.fan_rows,
                    west: m.west,
                    inter: m.inter_wafer,
                    route: ri as u32,
                    port_wafer: sw,
                    port,
                    walk_wafer,
                    dest,
                });
                self.route_left[ri] += 1;
                self.fabric.refs[sw as usize] += 1;
                self.fabric.refs[walk_wafer as usize] += 1;
            }
        }
        // Output-line send lists, in the order of the source's task list
        // (stable: then message order). The compiler's schedule lists sends
        // in route order, the order messages were made in.
        let rank = |&(_, id): &(u32, u32)| self.send_rank[self.msgs[id as usize].route as usize];
        if !line_sends.is_sorted_by_key(rank) {
            line_sends.sort_by_key(rank);
        }
        let nl = self.line_out.len();
        (self.out_off, self.out_msgs) = by_line(nl, line_sends);
        (self.bc_off, self.bc_msgs) = by_line(nl, bcast_sends);
    }

    /// Every active region's collective patterns, the transfers they count,
    /// and the partials that never leave (a line whose non-root node never
    /// sends leaves its root waiting forever).
    fn build_patterns(&mut self) {
        let mut coll = 0u64;
        for ri in 0..self.regs.len() {
            if !self.regs[ri].active {
                continue;
            }
            let wafer = self.wafer_of(ri) as usize;
            self.fabric.refs[wafer] += 1; // the region itself, until done
            let g = &mut self.regs[ri];
            let r = g.r;
            let (w, h) = (r.rect.w, r.rect.h);
            let mut orphans: Vec<(u32, u32)> = Vec::new();
            let mut why: Vec<String> = Vec::new();
            // Implicit transfers of the reduce, norm and argmax routes.
            let mut implicit = [0u64; 3];
            let mut mark =
                |base: u32, stride: u32, pat: &Pattern, root: u32, what: &str, orphans: &mut Vec<(u32, u32)>| {
                    for i in pat.orphans(root) {
                        orphans.push((base + i * stride, base + root * stride));
                        if why.len() < 4 {
                            why.push(format!("{what}: no transfer leaves index {i} (no collective route delivers it)"));
                        }
                    }
                };
            match r.work {
                Work::Gemv { norm, argmax, reduce, acc, .. } => {
                    let rounds = reduce.rounds(w);
                    g.row_pat = Pattern::new(w, &rounds, |i| reduce.relays(w, i), g.row_pat.routes);
                    let root = reduce.root(w);
                    let mut lines = 0u64;
                    for row in 0..h {
                        if acc.bytes_for(len(r.rows_of(row)) * self.batch) > 0 {
                            lines += 1;
                        }
                        if len(r.rows_of(row)) > 0 {
                            mark(row, h, &g.row_pat, root, &format!("reduce of row {row}"), &mut orphans);
                        }
                    }
                    if g.reduce_route != NONE {
                        implicit[0] = g.row_pat.pairs * lines;
                    }
                    if norm {
                        let rounds = Reduce::Tree.rounds(w);
                        g.norm_pat = Pattern::new(w, &rounds, |_| false, g.norm_pat.routes);
                        mark(g.norm_base, 1, &g.norm_pat, 0, "norm all-reduce", &mut orphans);
                        if g.norm_route != NONE {
                            implicit[1] = g.norm_pat.pairs;
                        }
                    }
                    if argmax {
                        let rounds = Reduce::Tree.rounds(h);
                        g.argmax_pat = Pattern::new(h, &rounds, |_| false, g.argmax_pat.routes);
                        mark(g.argmax_base, 1, &g.argmax_pat, 0, "argmax reduction", &mut orphans);
                        if g.argmax_route != NONE {
                            implicit[2] = g.argmax_pat.pairs;
                        }
                    }
                }
                Work::Attention { reduce, .. } => {
                    // Sub-blocks: a head's rows split by sequence (`batch_split`).
                    let rows_per_head = g.r.work.block_rows();
                    let kv_heads = g.r.work.attn_blocks();
                    let rph = rows_per_head.max(1);
                    let rounds = reduce.rounds(w);
                    g.row_pat = Pattern::new(w, &rounds, |i| reduce.relays(w, i), g.row_pat.routes);
                    let chain = Reduce::Chain.rounds(rows_per_head);
                    g.col_pat = Pattern::new(rows_per_head, &chain, |i| Reduce::Chain.relays(rph, i), g.row_pat.routes);
                    // Row transfers on the head blocks' rows, chain transfers on each head block.
                    let msg_rows = (kv_heads as u32).saturating_mul(rows_per_head).min(h);
                    for row in 0..h {
                        if row < msg_rows {
                            mark(row, h, &g.row_pat, 0, &format!("combine of row {row}"), &mut orphans);
                        } else {
                            let none = Pattern::new(w, &[], |_| false, 0);
                            mark(row, h, &none, 0, &format!("combine of row {row}"), &mut orphans);
                        }
                    }
                    for b in 0..h / rph {
                        let pat = if (b as u64) < kv_heads {
                            g.col_pat.clone()
                        } else {
                            Pattern::new(rows_per_head, &[], |_| false, 0)
                        };
                        mark(
                            g.col_node_base + b * rows_per_head,
                            1,
                            &pat,
                            0,
                            &format!("chain of block {b}"),
                            &mut orphans,
                        );
                    }
                    if g.reduce_route != NONE {
                        implicit[0] = g.row_pat.pairs * msg_rows as u64 + g.col_pat.pairs * kv_heads;
                    }
                }
                Work::Embedding { .. } | Work::Gemm { .. } => {}
            }
            g.orphans = orphans;
            g.stuck.extend(why);
            for (rt, n) in [g.reduce_route, g.norm_route, g.argmax_route].into_iter().zip(implicit) {
                if rt != NONE {
                    self.route_left[rt as usize] += n;
                    coll += n;
                    // Each leaves from and walks on the region's wafer.
                    self.fabric.refs[wafer] += 2 * n;
                }
            }
        }
        self.stats.messages = self.msgs.len() as u64 + coll;
    }

    // ---- per-region state ----

    /// Allocates region `reg`'s per-PE and per-node state (see the module doc).
    fn activate(&mut self, reg: usize) {
        if self.regs[reg].live.is_some() {
            return;
        }
        debug_assert!(!self.regs[reg].done, "region state wanted after its last line");
        let (a, b) = (&self.p.arch, self.batch);
        let wafer = self.wafer_of(reg);
        let pe0 = self.wafer_pe0[wafer as usize];
        let g = &self.regs[reg];
        let r = g.r;
        let (w, h) = (r.rect.w, r.rect.h);
        let nodes = g.nodes as usize;
        let mut pe = vec![0u32; nodes];
        for id in self.occ.cells_of(r.wafer, r.rect) {
            let c = self.cells[id];
            // Column-major within the cell (see `Sim::phys`).
            for x in c.rect.x..c.rect.x + c.rect.w {
                let col = (x - r.rect.x) * h;
                let first = c.base + ((x - c.rect.x) * c.rect.h) as u64 - pe0;
                for y in c.rect.y..c.rect.y + c.rect.h {
                    pe[(col + y - r.rect.y) as usize] = (first + (y - c.rect.y) as u64) as u32;
                }
            }
        }
        let mut recvs = vec![0u32; nodes];
        let mut row_add = Vec::new();
        let mut consts = [0u32; 2];
        let mut row_ser = Vec::new();
        let ser = timing::serialization(a, 8 * b) as u32;
        match r.work {
            Work::Gemv { acc, .. } => {
                for row in 0..h {
                    let n = len(r.rows_of(row));
                    row_add.push(timing::add_partial(a, n * b, acc) as u32);
                    row_ser.push(timing::serialization(a, acc.bytes_for(n * b)) as u32);
                    if acc.bytes_for(n * b) > 0 {
                        for c in 0..w {
                            recvs[(c * h + row) as usize] = g.row_pat.recvs(c);
                        }
                    }
                }
                if g.norm_base != NONE {
                    for c in 0..w {
                        pe[(g.norm_base + c) as usize] = pe[(c * h) as usize];
                        recvs[(g.norm_base + c) as usize] = g.norm_pat.recvs(c);
                    }
                    // Two statistics (sum, sum of squares) per batch row.
                    consts[0] = timing::add_partial(a, 2 * b, DType::F32) as u32;
                }
                if g.argmax_base != NONE {
                    for row in 0..h {
                        pe[(g.argmax_base + row) as usize] = pe[row as usize];
                        recvs[(g.argmax_base + row) as usize] = g.argmax_pat.recvs(row);
                    }
                    consts[1] = timing::add_partial(a, b, DType::F32) as u32;
                }
            }
            Work::Attention { group, head_dim, batch_split, .. } => {
                let (rows_per_head, kv_heads) = (r.work.block_rows(), r.work.attn_blocks());
                // Per sub-block: it combines the states of the sequences it serves.
                for block in 0..h.div_ceil(rows_per_head.max(1)) {
                    let (lo, hi) = r.work.seq_range(block as u64 % batch_split.max(1), b);
                    row_add.push(timing::attention_combine(a, group, head_dim, hi - lo) as u32);
                    row_ser.push(timing::serialization(a, 4 * group * (head_dim + 2) * (hi - lo)) as u32);
                }
                let msg_rows = (kv_heads as u32).saturating_mul(rows_per_head).min(h);
                for row in 0..msg_rows {
                    for c in 0..w {
                        recvs[(c * h + row) as usize] = g.row_pat.recvs(c);
                    }
                }
                let rph = rows_per_head.max(1);
                for row in 0..h {
                    pe[(g.col_node_base + row) as usize] = pe[row as usize];
                    if ((row / rph) as u64) < kv_heads {
                        recvs[(g.col_node_base + row) as usize] = g.col_pat.recvs(row % rph);
                    }
                }
            }
            Work::Embedding { .. } | Work::Gemm { .. } => {}
        }
        let mut slot_off = Vec::with_capacity(nodes + 1);
        let mut acc = 0u32;
        let mut pending = Vec::with_capacity(nodes);
        for &c in &recvs {
            slot_off.push(acc);
            acc += c;
            pending.push(1 + c);
        }
        slot_off.push(acc);
        for &(node, root) in &g.orphans {
            // The stranded partial goes nowhere; its line's root never completes.
            pending[node as usize] = STRANDED;
            pending[root as usize] += 1;
        }
        let live = Live {
            pe_in: vec![Stamp::ZERO; r.rect.pes() as usize],
            base: vec![Stamp::ZERO; nodes],
            pending,
            slot_off,
            pe,
            slots: vec![Stamp::ZERO; acc as usize],
            row_add,
            consts,
            row_ser,
            ser,
        };
        self.regs[reg].live = Some(Box::new(live));
    }

    #[inline]
    fn live(&mut self, reg: usize) -> &mut Live {
        if self.regs[reg].live.is_none() {
            self.activate(reg);
        }
        self.regs[reg].live.as_deref_mut().expect("activated")
    }

    /// Node `n` of `reg`: its kind (0 row, 1 norm, 2 argmax, 3 column chain),
    /// its line (row, or head block) and its index along the line.
    #[inline]
    fn node_kind(&self, reg: usize, n: u32) -> (u8, u32, u32) {
        let g = &self.regs[reg];
        let w = g.r.rect.w;
        let h = g.r.rect.h;
        if n < h * w {
            (0, n % h, n / h)
        } else if g.norm_base != NONE && n < g.norm_base + w {
            (1, 0, n - g.norm_base)
        } else if g.argmax_base != NONE && n >= g.argmax_base {
            (2, 0, n - g.argmax_base)
        } else {
            let Work::Attention { .. } = g.r.work else { return (3, 0, 0) };
            let (i, rph) = (n - g.col_node_base, g.r.work.block_rows().max(1));
            (3, i / rph, i % rph)
        }
    }

    /// What node (`kind`, `line`, `i`) of `reg` sends: (target node, rank of
    /// the receive there, relays, the target's PE).
    #[inline]
    fn node_send(&self, reg: usize, kind: u8, line: u32, i: u32) -> Option<(u32, u32, bool, Pe)> {
        let g = &self.regs[reg];
        let (rect, h) = (g.r.rect, g.r.rect.h);
        // Row nodes are column-major: index `i` of row `line` is node `i * h + line`.
        let pat = match (kind, &g.r.work) {
            (0, &Work::Gemv { acc, .. }) => {
                if acc.bytes_for(len(g.r.rows_of(line)) * self.batch) == 0 {
                    return None;
                }
                &g.row_pat
            }
            (0, w @ &Work::Attention { .. }) => {
                if line as u64 >= w.attn_blocks() * w.block_rows() as u64 {
                    return None;
                }
                &g.row_pat
            }
            (1, _) => &g.norm_pat,
            (2, _) => &g.argmax_pat,
            (3, w @ &Work::Attention { .. }) => {
                if line as u64 >= w.attn_blocks() {
                    return None;
                }
                &g.col_pat
            }
            _ => return None,
        };
        let i = i as usize;
        let to = *pat.to.get(i)?;
        if to == NONE {
            return None;
        }
        let (node, pe) = match kind {
            0 => (to * h + line, rect.pe(line, to)),
            1 => (g.norm_base + to, rect.pe(0, to)),
            2 => (g.argmax_base + to, rect.pe(to, 0)),
            _ => {
                let Work::Attention { .. } = g.r.work else { return None };
                let row = line * g.r.work.block_rows() + to;
                (g.col_node_base + row, rect.pe(row, 0))
            }
        };
        Some((node, pat.rank[i], pat.chain[i], pe))
    }

    /// The PE of node (`kind`, `line`, `i`) of `reg`.
    #[inline]
    fn node_pe(&self, reg: usize, kind: u8, line: u32, i: u32) -> Pe {
        let g = &self.regs[reg];
        match kind {
            0 => g.r.rect.pe(line, i),
            1 => g.r.rect.pe(0, i),
            2 => g.r.rect.pe(i, 0),
            _ => {
                let Work::Attention { .. } = g.r.work else { return g.r.rect.pe(0, 0) };
                g.r.rect.pe(line * g.r.work.block_rows() + i, 0)
            }
        }
    }

    fn node_base(&mut self, reg: usize, n: u32, st: Stamp) {
        self.live(reg).base[n as usize] = st;
        self.node_dec(reg, n);
    }

    #[inline]
    fn node_dec(&mut self, reg: usize, n: u32) {
        let p = &mut self.live(reg).pending[n as usize];
        *p -= 1;
        if *p == 0 {
            self.node_fire(reg, n);
        }
    }

    /// Node `n` has its own partial and every receive: combine, then send or finish the line.
    fn node_fire(&mut self, reg: usize, n: u32) {
        let (kind, line, idx) = self.node_kind(reg, n);
        let send = self.node_send(reg, kind, line, idx);
        let wafer = self.wafer_of(reg);
        let ni = n as usize;
        let gemv = matches!(self.regs[reg].r.work, Work::Gemv { .. });
        let rph = self.regs[reg].r.work.block_rows().max(1);
        let lv = self.live(reg);
        let (lo, hi) = (lv.slot_off[ni] as usize, lv.slot_off[ni + 1] as usize);
        let (base, pe) = (lv.base[ni], lv.pe[ni]);
        let (add, ser) = match kind {
            0 if gemv => (lv.row_add[line as usize], lv.row_ser[line as usize]),
            1 => (lv.consts[0], lv.ser),
            2 => (lv.consts[1], lv.ser),
            // Attention: a row node's line is its PE row, a chain node's its sub-block.
            0 => (lv.row_add[(line / rph) as usize], lv.row_ser[(line / rph) as usize]),
            _ => (lv.row_add[line as usize], lv.row_ser[line as usize]),
        };
        let (add, ser) = (add as u64, ser as u64);
        self.regs[reg].busy += add * (hi - lo) as u64;
        let slot = |s: &Self, i: usize| s.regs[reg].live.as_ref().expect("live").slots[i];
        let out = if matches!(send, Some((_, _, true, _))) && hi > lo {
            // A relay: earlier receives are added first; the last one streams
            // through the adder, its head passing on once it is down the ramp
            // (`arrive`) and through the adder (the ramp back up is the send's).
            let mut part = base;
            for s in lo..hi - 1 {
                let ready = part.later(slot(self, s));
                part = self.occupy(wafer, pe, ready, add);
            }
            let arr = slot(self, hi - 1);
            let mut head = arr;
            head.t -= ser;
            head.comm = head.comm.saturating_sub(ser as u32);
            let ready = part.later(head);
            let out = self.occupy(wafer, pe, ready, timing::adder_pass(&self.p.arch));
            // The stream holds the adder until its tail has passed.
            let free = &mut self.fabric.plane(wafer).free[pe as usize];
            *free = (*free).max(arr.t);
            out
        } else {
            let mut part = base;
            for s in lo..hi {
                let ready = part.later(slot(self, s));
                part = self.occupy(wafer, pe, ready, add);
            }
            part
        };
        if let Some((to, rank, _, to_pe)) = send {
            // Through the PE's output port, then up the ramp.
            let from = self.node_pe(reg, kind, line, idx);
            let slot = self.live(reg).slot_off[to as usize] + rank;
            let port = &mut self.fabric.plane(wafer).port[pe as usize];
            let st = out.comm_until(*port);
            *port = st.t + ser;
            let xy = (from.x as u64) << 48 | (from.y as u64) << 32 | (to_pe.x as u64) << 16 | to_pe.y as u64;
            let key = COLL | (kind as u64) << 61 | (reg as u64) << 32 | to as u64;
            self.queue.push(Entry { st: st.comm(self.ramp), key, xy, slot, ser: ser as u32 });
            return;
        }
        match (kind, gemv) {
            (0, true) => self.line_final(reg, line, out),
            (0, false) => {
                let cn = self.regs[reg].col_node_base + line;
                self.node_base(reg, cn, out);
            }
            (1, _) => self.norm_done(reg, out),
            (2, _) => self.line_ready(reg, 0, out),
            _ => self.line_final(reg, line, out),
        }
    }

    /// A collective transfer leaves now: along its line into the target's receive slot.
    fn depart_coll(&mut self, e: Entry) {
        let reg = ((e.key >> 32) & 0x1fff_ffff) as usize;
        let (kind, to) = ((e.key >> 61) & 3, e.key as u32);
        let wafer = self.wafer_of(reg);
        let at = |s: u32| Pe { x: (e.xy >> (s + 16)) as u32 & 0xffff, y: (e.xy >> s) as u32 & 0xffff };
        let (from, dst) = (at(32), at(0));
        let ser = e.ser as u64;
        let st = e.st;
        let (head, dist) = self.fabric.line_walk(wafer, from, dst, st.t, ser);
        let s = st.comm(dist as u64 * self.hop).comm(ser).wait_until(head + ser).comm(self.ramp);
        self.live(reg).slots[e.slot as usize] = s;
        let g = &self.regs[reg];
        let route = match kind {
            1 => g.norm_route,
            2 => g.argmax_route,
            _ => g.reduce_route,
        };
        self.route_left[route as usize] -= 1;
        self.node_dec(reg, to);
        self.fabric.release(wafer);
        self.fabric.release(wafer);
    }

    // ---- running ----

    /// Sends explicit message `id` through its sender's output port once `ready`.
    fn send(&mut self, id: u32, ready: Stamp) {
        let m = &self.msgs[id as usize];
        let (pw, pi) = (m.port_wafer, m.port as usize);
        let ser = timing::serialization(&self.p.arch, m.bytes);
        let port = &mut self.fabric.plane(pw).port[pi];
        let st = ready.comm_until(*port);
        *port = st.t + ser;
        // Up the ramp to the router.
        self.queue.push(Entry { st: st.comm(self.ramp), key: id as u64, xy: 0, slot: 0, ser: 0 });
    }

    fn start(&mut self) {
        for ri in 0..self.regs.len() {
            if !self.regs[ri].active {
                continue;
            }
            let r: &'p Region = self.regs[ri].r;
            match r.work {
                Work::Embedding { .. } => {
                    // Fed a token: it starts when the token arrives (`Dest::Token`).
                    let gl = self.regs[ri].line_base as usize;
                    if self.q_pending[gl] == 0 {
                        if self.regs[ri].has_inputs {
                            self.regs[ri].stuck.push("receives no token".into());
                        } else {
                            self.embed(ri, Stamp::ZERO);
                        }
                    }
                }
                Work::Gemm { tile_m, tile_k, tile_n, acc, .. } => {
                    // Lockstep Cannon steps on every PE of the square, priced by
                    // the closed form: the tile moves stay on the region's own
                    // links (each carries the same tiles every step, nothing else
                    // crosses them), concurrent with the compute.
                    let (compute, moves) =
                        timing::gemm(&self.p.arch, r.rect.w as u64, tile_m, tile_k, tile_n, self.p.weight_dtype, acc);
                    let wafer = self.wafer_of(ri);
                    let mut last = Stamp::ZERO;
                    for i in 0..r.rect.pes() as u32 {
                        let pe = self.phys(wafer, r.rect.pe(i / r.rect.w, i % r.rect.w));
                        let st = self.occupy(wafer, pe, Stamp::ZERO, compute).comm(moves);
                        last = last.later(st);
                    }
                    self.regs[ri].busy += compute * r.rect.pes();
                    self.regs[ri].start = 0;
                    self.line_ready(ri, 0, last);
                }
                Work::Gemv { .. } => {
                    for c in 0..r.rect.w {
                        let expected = self.regs[ri].col_expected[c as usize];
                        if expected > 0 {
                            self.regs[ri].col_pending[c as usize] = expected;
                        } else if !self.regs[ri].has_inputs || len(r.cols_of(c)) == 0 {
                            self.column_ready(ri, c);
                        } else {
                            let msg =
                                format!("column {c} ({}) receives no input from the routes into it", r.rect.pe(0, c));
                            self.regs[ri].stuck.push(msg);
                        }
                    }
                }
                Work::Attention { .. } => {
                    for b in 0..r.work.attn_blocks() as u32 {
                        let gl = (self.regs[ri].line_base + b) as usize;
                        if self.q_pending[gl] == 0 {
                            if self.regs[ri].has_inputs {
                                self.regs[ri].stuck.push(format!("head block {b} receives no query"));
                            } else {
                                self.attn_q_ready(ri, b);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Embedding `ri` looks its row up once its token is in (`ready`).
    fn embed(&mut self, ri: usize, ready: Stamp) {
        let task = self.p.arch.pe.task_overhead_cycles as u64;
        let wafer = self.wafer_of(ri);
        let holder = self.phys(wafer, self.regs[ri].r.out_pe(0));
        let st = self.occupy(wafer, holder, ready, task);
        self.regs[ri].busy += task;
        self.regs[ri].start = self.regs[ri].start.min(ready.t);
        self.line_ready(ri, 0, st);
    }

    /// Frees the state of regions that finished during the last event.
    fn free_finished(&mut self) {
        while let Some(reg) = self.finished.pop() {
            let reg = reg as usize;
            self.regs[reg].live = None;
            let wafer = self.wafer_of(reg);
            self.fabric.release(wafer);
        }
    }

    fn run(&mut self, limits: &EventLimits) -> Outcome {
        self.free_finished();
        while let Some(e) = self.queue.pop() {
            let t = e.st.t;
            if t > limits.max_cycles {
                self.now = limits.max_cycles;
                return Outcome::CycleLimit { limit: limits.max_cycles };
            }
            self.now = t;
            self.stats.events += 1;
            if e.key & COLL != 0 {
                self.depart_coll(e);
            } else {
                self.depart(e.key as u32, e.st);
            }
            self.free_finished();
        }
        if self.regs.iter().any(|g| g.active && !g.done) {
            return Outcome::Deadlock { blocked: self.blocked() };
        }
        let end = self.regs.iter().filter(|g| g.active).map(|g| g.end).max().unwrap_or(0);
        if end > limits.max_cycles {
            self.now = limits.max_cycles;
            return Outcome::CycleLimit { limit: limits.max_cycles };
        }
        Outcome::Finished
    }

    /// Explicit message `id` leaves now: reserve its links, deliver to every PE it reaches.
    fn depart(&mut self, id: u32, st: Stamp) {
        let m = self.msgs[id as usize];
        let a = &self.p.arch;
        let ser = timing::serialization(a, m.bytes);
        let mut reach = std::mem::take(&mut self.scratch);
        reach.clear();
        // (stamp at the first delivery point minus the streaming, streaming time)
        let (base, body) = if m.inter {
            let rt = &self.p.routes[m.route as usize];
            let (src_wafer, dst_wafer) = (self.p.region(rt.src).wafer, self.p.region(rt.dst).wafer);
            let cost = timing::inter_wafer(a, m.bytes);
            let occ = (m.bytes as f64 / a.inter_wafer_bytes_per_cycle()).ceil() as u64;
            let wafers = self.p.wafers.max(1) as usize;
            let k = (src_wafer as usize).min(wafers - 1) * wafers + (dst_wafer as usize).min(wafers - 1);
            let start = st.t.max(self.sys_free[k]);
            self.sys_free[k] = start + occ;
            let body = ser.min(cost);
            let at_to = st.wait_until(start).inter(cost - body);
            self.fabric.walk(m.walk_wafer, m.to, m.to, m.fan_cols, m.fan_rows, m.west, at_to.t, body, &mut reach);
            (at_to, body)
        } else {
            self.fabric.walk(m.walk_wafer, m.from, m.to, m.fan_cols, m.fan_rows, m.west, st.t, ser, &mut reach);
            (st, ser)
        };
        self.route_left[m.route as usize] -= 1;
        let (hop, ramp) = (self.hop, self.ramp);
        let arrive = |r: &Reach| -> Stamp {
            // No-contention arrival: dist hops then the body; anything later is
            // waiting; then down the ramp into the PE.
            let s = base.comm(r.dist as u64 * hop);
            let s = if m.inter { s.inter(body) } else { s.comm(body) };
            s.wait_until(r.head + body).comm(ramp)
        };
        match m.dest {
            Dest::GemvCol { reg, col } | Dest::AttnQ { reg, block: col } => {
                let reg = reg as usize;
                let (x0, y0, h) = (self.regs[reg].r.rect.x, self.regs[reg].r.rect.y, self.regs[reg].r.rect.h);
                let mut first = u64::MAX;
                let lv = self.live(reg);
                for r in &reach {
                    let s = arrive(r);
                    let i = ((r.x - x0) * h + (r.y - y0)) as usize;
                    lv.pe_in[i] = lv.pe_in[i].later(s);
                    first = first.min(s.t);
                }
                let g = &mut self.regs[reg];
                g.start = g.start.min(first);
                if let Dest::GemvCol { .. } = m.dest {
                    let cp = &mut g.col_pending[col as usize];
                    *cp -= 1;
                    if *cp == 0 {
                        self.column_ready(reg, col);
                    }
                } else {
                    let gl = (g.line_base + col) as usize;
                    self.q_pending[gl] -= 1;
                    if self.q_pending[gl] == 0 {
                        self.attn_q_ready(reg, col);
                    }
                }
            }
            Dest::AttnKv { reg, block } => {
                let reg = reg as usize;
                let s = arrive(&reach[0]);
                self.regs[reg].start = self.regs[reg].start.min(s.t);
                let gl = (self.regs[reg].line_base + block) as usize;
                self.kv_stamp[gl] = self.kv_stamp[gl].later(s);
                self.kv_pending[gl] -= 1;
                if self.kv_pending[gl] == 0 && self.q_ready[gl] {
                    self.attn_holder(reg, block);
                }
            }
            Dest::Residual { reg, line } => {
                let reg = reg as usize;
                let s = arrive(&reach[0]);
                self.regs[reg].start = self.regs[reg].start.min(s.t);
                let gl = (self.regs[reg].line_base + line) as usize;
                self.res_stamp[gl] = self.res_stamp[gl].later(s);
                self.res_pending[gl] -= 1;
                if self.res_pending[gl] == 0 {
                    if let Some(ready) = self.res_hold[gl].take() {
                        // The row root was waiting on it to compute.
                        let (rect, o) = (self.regs[reg].r.rect, self.regs[reg].r.out_pe(line));
                        self.gemv_pe(reg, o.y - rect.y, o.x - rect.x, ready);
                    } else if self.line_red[gl].is_some() {
                        self.line_finish(reg, line);
                    }
                }
            }
            Dest::Token { reg } => {
                let reg = reg as usize;
                let s = arrive(&reach[0]);
                let gl = self.regs[reg].line_base as usize;
                self.q_pending[gl] -= 1;
                if self.q_pending[gl] == 0 {
                    self.embed(reg, s);
                }
            }
            Dest::RowBcast { reg, line } => {
                let reg = reg as usize;
                let gl = (self.regs[reg].line_base + line) as usize;
                for r in &reach {
                    self.bc_stamp[gl] = self.bc_stamp[gl].later(arrive(r));
                }
                self.bc_pending[gl] -= 1;
                if self.bc_pending[gl] == 0 {
                    let st = self.bc_stamp[gl];
                    self.line_ready(reg, line, st);
                }
            }
            Dest::NormBcast { reg } => {
                let reg = reg as usize;
                let x0 = self.regs[reg].r.rect.x;
                for r in &reach {
                    let s = arrive(r);
                    let c = (r.x - x0) as usize;
                    if let Some(b) = self.regs[reg].bc_at.get_mut(c) {
                        *b = s;
                    }
                }
                self.norm_finish(reg);
            }
        }
        self.scratch = reach;
        self.fabric.release(m.port_wafer);
        self.fabric.release(m.walk_wafer);
    }

    fn column_ready(&mut self, reg: usize, c: u32) {
        let r: &'p Region = self.regs[reg].r;
        if let Work::Gemv { norm: true, .. } = r.work {
            self.regs[reg].cols_ready += 1;
            if self.regs[reg].cols_ready == r.rect.w {
                self.norm_start(reg);
            }
            return;
        }
        for row in 0..r.rect.h {
            let ready = self.live(reg).pe_in[(c * r.rect.h + row) as usize];
            self.gemv_pe(reg, row, c, ready);
        }
    }

    fn gemv_pe(&mut self, reg: usize, r: u32, c: u32, mut ready: Stamp) {
        let g = &self.regs[reg];
        let Work::Gemv { acc, mac, .. } = g.r.work else { return };
        if g.res_first && g.r.holds_output(r, c) {
            let gl = (g.line_base + g.r.work.line_of_row(r)) as usize;
            if self.res_pending[gl] > 0 {
                self.res_hold[gl] = Some(ready);
                return;
            }
            ready = ready.later(self.res_stamp[gl]);
        }
        let g = &self.regs[reg];
        let cost = if mac {
            timing::gemv_compute(
                &self.p.arch,
                len(g.r.rows_of(r)),
                len(g.r.cols_of(c)),
                self.batch,
                self.p.weight_dtype,
                acc,
            )
        } else {
            timing::gemv_zero(&self.p.arch, len(g.r.rows_of(r)), self.batch, acc)
        };
        let node = c * g.r.rect.h + r;
        self.regs[reg].busy += cost;
        let wafer = self.wafer_of(reg);
        let pe = self.live(reg).pe[node as usize];
        let end = self.occupy(wafer, pe, ready, cost);
        self.node_base(reg, node, end);
    }

    fn norm_start(&mut self, reg: usize) {
        let (w, h, nb) = (self.regs[reg].r.rect.w, self.regs[reg].r.rect.h, self.regs[reg].norm_base);
        let mut t0 = Stamp::ZERO;
        let lv = self.live(reg);
        for c in 0..w {
            t0 = t0.later(lv.pe_in[(c * h) as usize]);
        }
        self.regs[reg].bc_at = vec![Stamp::ZERO; w as usize];
        for c in 0..w {
            self.node_base(reg, nb + c, t0);
        }
    }

    fn norm_done(&mut self, reg: usize, st: Stamp) {
        if let Some(b) = self.regs[reg].bc_at.get_mut(0) {
            *b = st;
        }
        let bcast = self.regs[reg].bcast;
        if self.regs[reg].r.rect.w == 1 {
            self.norm_finish(reg);
        } else if bcast != NONE {
            self.send(bcast, st);
        } else {
            self.regs[reg].stuck.push("norm result is never broadcast (no broadcast in its norm route)".into());
        }
    }

    /// Norm factor known along row 0: every PE computes once it also has its input.
    fn norm_finish(&mut self, reg: usize) {
        let (w, h) = (self.regs[reg].r.rect.w, self.regs[reg].r.rect.h);
        let bc = std::mem::take(&mut self.regs[reg].bc_at);
        for c in 0..w {
            for r in 0..h {
                let i = c * h + r;
                let ready = self.live(reg).pe_in[i as usize].later(bc[c as usize].comm(r as u64 * self.hop));
                self.gemv_pe(reg, r, c, ready);
            }
        }
    }

    fn attn_q_ready(&mut self, reg: usize, block: u32) {
        let g = &self.regs[reg];
        let Work::Attention { pos_per_pe, slot, .. } = g.r.work else { return };
        let rows_per_head = g.r.work.block_rows();
        let gl = (g.line_base + block) as usize;
        self.q_ready[gl] = true;
        let (w, h) = (g.r.rect.w, g.r.rect.h);
        let holder = (slot / pos_per_pe.max(1)) as u32;
        for i in 0..rows_per_head * w {
            if i == holder {
                if self.kv_pending[gl] == 0 {
                    self.attn_holder(reg, block);
                }
                continue;
            }
            let row = block * rows_per_head + i / w;
            let idx = (i % w) * h + row;
            let ready = self.live(reg).pe_in[idx as usize];
            self.attn_pe(reg, block, i, ready);
        }
    }

    fn attn_holder(&mut self, reg: usize, block: u32) {
        let g = &self.regs[reg];
        let Work::Attention { pos_per_pe, slot, .. } = g.r.work else { return };
        let rows_per_head = g.r.work.block_rows();
        let (w, h) = (g.r.rect.w, g.r.rect.h);
        let i = (slot / pos_per_pe.max(1)) as u32;
        if i >= rows_per_head * w {
            return;
        }
        let row = block * rows_per_head + i / w;
        let idx = (i % w) * h + row;
        let gl = (g.line_base + block) as usize;
        let kv = self.kv_stamp[gl];
        let ready = self.live(reg).pe_in[idx as usize].later(kv);
        self.attn_pe(reg, block, i, ready);
    }

    /// Attention on the PE at block-local row-major index `i`.
    fn attn_pe(&mut self, reg: usize, block: u32, i: u32, ready: Stamp) {
        let g = &self.regs[reg];
        let Work::Attention { group, head_dim, positions, pos_per_pe, batch_split, .. } = g.r.work else {
            return;
        };
        // `block` is a sub-block: its rows and the sequences it serves.
        let rows_per_head = g.r.work.block_rows();
        let (lo, hi) = g.r.work.seq_range(block as u64 % batch_split.max(1), self.batch);
        let held = positions.saturating_sub(i as u64 * pos_per_pe).min(pos_per_pe);
        let cost =
            timing::attention_compute(&self.p.arch, group, head_dim, held, hi - lo, self.p.new_tokens, self.p.kv_dtype);
        let w = g.r.rect.w;
        let node = (i % w) * g.r.rect.h + block * rows_per_head + i / w;
        self.regs[reg].busy += cost;
        let wafer = self.wafer_of(reg);
        let pe = self.live(reg).pe[node as usize];
        let end = self.occupy(wafer, pe, ready, cost);
        self.node_base(reg, node, end);
    }

    /// Line `l` of `reg` has its reduced value; finish once its residual is in.
    fn line_final(&mut self, reg: usize, l: u32, st: Stamp) {
        let gl = (self.regs[reg].line_base + l) as usize;
        self.line_red[gl] = Some(st);
        if self.res_pending[gl] == 0 {
            self.line_finish(reg, l);
        }
    }

    fn line_finish(&mut self, reg: usize, l: u32) {
        let gl = (self.regs[reg].line_base + l) as usize;
        let Some(red) = self.line_red[gl] else { return };
        let start = if self.res_stamp[gl].t > red.t { self.res_stamp[gl] } else { red };
        let r = self.regs[reg].r;
        match r.work {
            Work::Gemv { epilogue_ops, argmax, .. } => {
                let cost = timing::elementwise(&self.p.arch, len(r.out_slice(l)) * self.batch, epilogue_ops);
                self.regs[reg].busy += cost;
                let wafer = self.wafer_of(reg);
                let o = r.out_pe(l);
                let root = self.live(reg).pe[((o.x - r.rect.x) * r.rect.h + (o.y - r.rect.y)) as usize];
                let end = self.occupy(wafer, root, start, cost);
                if argmax {
                    let n = self.regs[reg].argmax_base + l;
                    self.node_base(reg, n, end);
                } else if self.bc_off[gl] < self.bc_off[gl + 1] {
                    // Broadcast the finished segment back along the row first.
                    for k in self.bc_off[gl]..self.bc_off[gl + 1] {
                        let id = self.bc_msgs[k as usize];
                        self.send(id, end);
                    }
                } else {
                    self.line_ready(reg, l, end);
                }
            }
            _ => self.line_ready(reg, l, start),
        }
    }

    /// Output line `l` of `reg` is ready: record it and send its messages.
    fn line_ready(&mut self, reg: usize, l: u32, st: Stamp) {
        let gl = self.regs[reg].line_base + l;
        if self.line_done[gl as usize] {
            return;
        }
        self.line_done[gl as usize] = true;
        self.line_out[gl as usize] = st;
        let g = &mut self.regs[reg];
        g.end = g.end.max(st.t);
        g.lines_left = g.lines_left.saturating_sub(1);
        if g.lines_left == 0 {
            g.done = true;
            // Its state is freed once the current event is over (callers up
            // the stack may still be looping over its PEs).
            self.finished.push(reg as u32);
        }
        let mut out = st;
        out.from = gl;
        for k in self.out_off[gl as usize]..self.out_off[gl as usize + 1] {
            let id = self.out_msgs[k as usize];
            self.send(id, out);
        }
    }
    // ---- reporting ----

    fn blocked(&self) -> Vec<String> {
        let p = self.p;
        let mut out = Vec::new();
        // Routes with undelivered messages, by the region they deliver to.
        let mut undelivered: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); self.regs.len()];
        for (k, &left) in self.route_left.iter().enumerate() {
            if left > 0 {
                undelivered[p.routes[k].dst.0 as usize].insert(k as u32);
            }
        }
        for (ri, g) in self.regs.iter().enumerate() {
            if !g.active || g.done {
                continue;
            }
            let waits = &undelivered[ri];
            let mut skipped = Vec::new();
            for (k, rt) in p.routes.iter().enumerate() {
                if rt.dst.0 as usize == ri && rt.src.0 as usize != ri && !p.region(rt.src).active {
                    skipped.push(format!(
                        "{} ({} from inactive {} `{}`)",
                        RouteId(k as u32),
                        rt.kind.name(),
                        rt.src,
                        p.region(rt.src).name
                    ));
                }
            }
            let pe = self.blocked_pe(ri);
            let mut s = format!("region r{ri} `{}`: {pe} blocked", g.r.name);
            if !waits.is_empty() {
                let names: Vec<String> = waits
                    .iter()
                    .map(|&k| {
                        let rt = &p.routes[k as usize];
                        format!("{} ({} from {})", RouteId(k), rt.kind.name(), rt.src)
                    })
                    .collect();
                s += &format!("; waits on {}", names.join(", "));
            }
            if !skipped.is_empty() {
                s += &format!("; never delivered: {}", skipped.join(", "));
            }
            for why in &g.stuck {
                s += &format!("; {why}");
            }
            out.push(s);
        }
        out
    }

    /// A PE of `reg` that is still waiting: an unfed column head, a node with
    /// receives outstanding, or the first output line's PE.
    fn blocked_pe(&self, ri: usize) -> Pe {
        let g = &self.regs[ri];
        let r = g.r;
        if let Work::Gemv { .. } = r.work {
            for c in 0..r.rect.w {
                if g.col_pending[c as usize] > 0 || (g.col_expected[c as usize] == 0 && g.has_inputs) {
                    return r.rect.pe(0, c);
                }
            }
        }
        for l in 0..r.out_lines() {
            if !self.line_done[(g.line_base + l) as usize] {
                return r.out_pe(l);
            }
        }
        r.out_pe(0)
    }

    fn result(&self, info: &ProgramInfo, outcome: Outcome, limits: &EventLimits) -> SimResult {
        let p = self.p;
        let finished = outcome == Outcome::Finished;
        // The end: the active region whose output is ready last (ties: the later region).
        let mut last: Option<usize> = None;
        for (i, g) in self.regs.iter().enumerate() {
            if g.active && g.done && last.is_none_or(|l| g.end >= self.regs[l].end) {
                last = Some(i);
            }
        }
        let cycles = match outcome {
            Outcome::Finished => last.map_or(0, |l| self.regs[l].end),
            Outcome::CycleLimit { .. } => limits.max_cycles,
            Outcome::Deadlock { .. } => self.now,
        };
        // Critical path: back through the line each output's path came from.
        let mut bd = vec![Breakdown::default(); self.regs.len()];
        let mut path = Vec::new();
        if finished {
            if let Some(l) = last {
                let g = &self.regs[l];
                let mut cur = NONE;
                for k in 0..g.r.out_lines() {
                    let gl = g.line_base + k;
                    if cur == NONE || self.line_out[gl as usize].t > self.line_out[cur as usize].t {
                        cur = gl;
                    }
                }
                while cur != NONE {
                    let st = self.line_out[cur as usize];
                    let reg = self.line_reg[cur as usize] as usize;
                    let prev = if st.from == NONE { Stamp::ZERO } else { self.line_out[st.from as usize] };
                    bd[reg] += st.breakdown_since(&prev);
                    path.push(p.regions[reg].name.clone());
                    cur = st.from;
                }
                path.reverse();
            }
        }
        let total = cycles.max(1) as f64;
        let mut busy_sum = 0u64;
        let mut regions = Vec::new();
        for (i, g) in self.regs.iter().enumerate() {
            if !g.active {
                continue;
            }
            busy_sum += g.busy;
            regions.push(RegionTiming {
                region: g.r.name.clone(),
                layer: g.r.layer,
                role: role_of(&g.r.name),
                pes: g.r.rect.pes(),
                start: if g.start == u64::MAX { 0.0 } else { g.start as f64 },
                end: g.end as f64,
                breakdown: bd[i],
                busy_fraction: g.busy as f64 / (g.r.rect.pes().max(1) as f64 * total),
            });
        }
        let (lmax, lsum, used) = self.fabric.load();
        SimResult {
            outcome,
            cycles: cycles as f64,
            critical_path: path,
            pe_busy_mean: if info.pes_used > 0 { busy_sum as f64 / (info.pes_used as f64 * total) } else { 0.0 },
            link_load: LinkLoad {
                max: lmax as f64 / total,
                mean: if used > 0 { lsum as f64 / (used as f64 * total) } else { 0.0 },
                links_used: used,
            },
            regions,
            ..SimResult::for_program("event", p)
        }
        .finish()
    }
}

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
//! [`wafer_ir::route_messages`] and the [`wafer_ir::Region`] slice functions, so
//! this engine and the analytical one differ only by contention, exact per-PE
//! tile sizes and exact message geometry. Must not: choose mappings, read or
//! write files, or depend on thread count (it is single-threaded and its event
//! queue breaks time ties by insertion order).
//!
//! # Model
//! * Only the departure of a message is an event: it reserves the links of its
//!   path in departure order. The head enters link `i` at
//!   `e_i = max(e_{i-1} + hop, free_i)` (`e_0 = max(departure, free_0)`), every
//!   link is busy `serialization(bytes)` cycles from `e_i`, and a PE reached by
//!   the head at `H` holds the whole message at `H + serialization(bytes)`.
//!   Everything a delivery sets off (compute, adds, epilogues) is arithmetic on
//!   the arrival times and ends in further departures, which are queued.
//! * A PE sends through one output port, one message after the other.
//! * Each time value carries its critical path split into compute, on-wafer
//!   communication, inter-wafer communication and waiting (link or system-link
//!   contention), and the output line it came from; the result's breakdown is
//!   read off these stamps, so the parts always sum to the cycle count.

use crate::result::{role_of, Breakdown, LinkLoad, Outcome, RegionTiming, SimResult};
use crate::timing;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use wafer_ir::{route_messages, DType, Pe, Program, ProgramInfo, Purpose, Reduce, Region, RouteId, RouteKind, Work};

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
        // events (eight times llama-3.1-405b's 32 million) take about three
        // minutes at ~0.6 us per event.
        EventLimits { max_cycles: 1 << 40, max_memory_bytes: wafer_ir::limits::UNLIMITED, max_events: 1 << 28 }
    }
}

/// What a run of the event engine on a program will allocate and do, computed
/// from the program's shape before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventEstimate {
    /// Peak bytes: the link tables of every wafer's mesh, the system links
    /// between every pair of wafers, per-PE, per-line and per-node state, and
    /// the flat message table with its side arrays.
    pub bytes: u64,
    /// Events the run takes off its queue: one departure per message.
    pub events: u64,
}

/// Estimates the memory and events of simulating `p` (see [`EventEstimate`]).
pub fn estimate_event(p: &Program, info: &ProgramInfo) -> EventEstimate {
    use std::mem::size_of;
    let a = &p.arch;
    let wafers = p.wafers.max(1) as u64;
    let mul = |x: u64, y: u64| x.saturating_mul(y);
    let links = mul(mul(a.mesh_width as u64, a.mesh_height as u64), wafers);
    let fabric = mul(mul(4, links), size_of::<Link>() as u64);
    let system = mul(mul(wafers, wafers), 8);
    let active = || p.regions.iter().filter(|r| r.active);
    let pes: u64 = active().map(|r| r.rect.pes()).fold(0, u64::saturating_add);
    let lines: u64 = active().map(|r| r.out_lines() as u64).fold(0, u64::saturating_add);
    let stamp = size_of::<Stamp>() as u64;
    // Per PE: input stamp and output port; per collective node (at most two per
    // PE): base stamp, counters, flags, role; per output line: four stamps and counters.
    // (The per-physical-PE port and compute unit are counted per region PE: at least as many.)
    let per_pe = stamp + 8 + 8;
    let per_node = stamp + 5 * 4 + 1 + size_of::<Role>() as u64;
    let per_line = 4 * stamp + 24;
    // Per message: the table entry, departure stamp, delivery flag, receive slot, send lists,
    // the expanded `wafer_ir::Message` it came from, and its heap entry.
    let per_msg = size_of::<Msg>() as u64 + 2 * stamp + 1 + 4 + 3 * 8 + size_of::<wafer_ir::Message>() as u64 + 24;
    let bytes = fabric
        .saturating_add(system)
        .saturating_add(mul(pes, per_pe))
        .saturating_add(mul(mul(2, pes), per_node))
        .saturating_add(mul(lines, per_line))
        .saturating_add(mul(info.messages, per_msg))
        .saturating_add(mul(p.regions.len() as u64, 512));
    EventEstimate { bytes, events: info.messages }
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
    let mut sim = Sim::new(p);
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
    fn later(self, o: Stamp) -> Stamp {
        if o.t >= self.t {
            o
        } else {
            self
        }
    }
    fn compute(mut self, c: u64) -> Stamp {
        self.t += c;
        self.compute = self.compute.saturating_add(c as u32);
        self
    }
    fn comm(mut self, c: u64) -> Stamp {
        self.t += c;
        self.comm = self.comm.saturating_add(c as u32);
        self
    }
    fn inter(mut self, c: u64) -> Stamp {
        self.t += c;
        self.inter = self.inter.saturating_add(c as u32);
        self
    }
    /// Waits (contention) until `t`.
    fn wait_until(mut self, t: u64) -> Stamp {
        self.t = self.t.max(t);
        self
    }
    /// Waits until `t`, counted as communication (a PE's own messages serializing).
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

/// What a delivered message feeds.
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
    /// A collective transfer into node `node`'s receive slot `slot`.
    Node { node: u32, slot: u32 },
    /// The norm's broadcast back along row 0.
    NormBcast { reg: u32 },
    /// A Gemv row root's output broadcast back along row `line` (region-local).
    RowBcast { reg: u32, line: u32 },
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
    /// Global PE index of the sender (its output port).
    port: u32,
    dest: Dest,
}

/// What a collective node is, and what its completion (with no send) feeds.
#[derive(Debug, Clone, Copy)]
enum Role {
    GemvRow { reg: u32, row: u32 },
    Norm { reg: u32 },
    Argmax { reg: u32 },
    AttnRow { reg: u32, row: u32 },
    AttnCol { reg: u32, block: u32 },
    Unused,
}

/// 12 bytes: a full mesh has 3.5 M links per wafer.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(4))]
struct Link {
    free: u64,
    busy: u32,
}

/// The mesh links of every wafer: per direction, E/W row-major and N/S
/// column-major so that walks along a row or down a column stay local.
struct Fabric {
    w: usize,
    h: usize,
    hop: u64,
    east: Vec<Link>,
    west: Vec<Link>,
    north: Vec<Link>,
    south: Vec<Link>,
    crossings: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reach {
    x: u32,
    y: u32,
    head: u64,
    dist: u32,
}

#[derive(Clone, Copy)]
enum Dir {
    E,
    W,
    N,
    S,
}

impl Fabric {
    fn new(w: u32, h: u32, wafers: u32, hop: u64) -> Fabric {
        let n = w as usize * h as usize * wafers as usize;
        Fabric {
            w: w as usize,
            h: h as usize,
            hop,
            east: vec![Link::default(); n],
            west: vec![Link::default(); n],
            north: vec![Link::default(); n],
            south: vec![Link::default(); n],
            crossings: 0,
        }
    }

    /// The head, at PE `(x, y)` at `head`, crosses its link in `dir`; returns when it reaches the next PE.
    #[inline]
    fn cross(&mut self, dir: Dir, wafer: u32, x: u32, y: u32, head: u64, ser: u64) -> u64 {
        let plane = wafer as usize * self.w * self.h;
        let (x, y) = (x as usize, y as usize);
        let l = match dir {
            Dir::E => &mut self.east[plane + y * self.w + x],
            Dir::W => &mut self.west[plane + y * self.w + x],
            Dir::N => &mut self.north[plane + x * self.h + y],
            Dir::S => &mut self.south[plane + x * self.h + y],
        };
        let (free, busy) = (l.free, l.busy);
        let e = head.max(free);
        *l = Link { free: e + ser, busy: busy.saturating_add(ser as u32) };
        self.crossings += 1;
        e + self.hop
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
        let (mut x, mut y, mut head, mut d) = (from.x, from.y, dep, 0u32);
        while x < to.x {
            head = self.cross(Dir::E, wafer, x, y, head, ser);
            x += 1;
            d += 1;
        }
        while x > to.x {
            head = self.cross(Dir::W, wafer, x, y, head, ser);
            x -= 1;
            d += 1;
        }
        while y < to.y {
            head = self.cross(Dir::S, wafer, x, y, head, ser);
            y += 1;
            d += 1;
        }
        while y > to.y {
            head = self.cross(Dir::N, wafer, x, y, head, ser);
            y -= 1;
            d += 1;
        }
        let row0 = out.len();
        out.push(Reach { x, y, head, dist: d });
        for j in 0..fan_cols {
            if west {
                head = self.cross(Dir::W, wafer, x - j, y, head, ser);
                out.push(Reach { x: x - j - 1, y, head, dist: d + j + 1 });
            } else {
                head = self.cross(Dir::E, wafer, x + j, y, head, ser);
                out.push(Reach { x: x + j + 1, y, head, dist: d + j + 1 });
            }
        }
        for j in 0..=fan_cols as usize {
            let r = out[row0 + j];
            let mut hh = r.head;
            for i in 0..fan_rows {
                hh = self.cross(Dir::S, wafer, r.x, r.y + i, hh, ser);
                out.push(Reach { x: r.x, y: r.y + i + 1, head: hh, dist: r.dist + i + 1 });
            }
        }
    }

    /// (max busy, sum of busy, links used) over all links.
    fn load(&self) -> (u64, u64, u64) {
        let (mut max, mut sum, mut used) = (0u64, 0u64, 0u64);
        for l in self.east.iter().chain(&self.west).chain(&self.north).chain(&self.south) {
            let busy = l.busy as u64;
            if busy > 0 {
                max = max.max(busy);
                sum += busy;
                used += 1;
            }
        }
        (max, sum, used)
    }
}

/// Per-region run state.
struct Reg<'p> {
    r: &'p Region,
    active: bool,
    pe_base: u32,
    line_base: u32,
    /// Output lines still to finish.
    lines_left: u32,
    /// Gemv: messages still to arrive per column / expected per column.
    col_pending: Vec<u32>,
    col_expected: Vec<u32>,
    cols_ready: u32,
    /// Any forward route (active or not) delivers into this region.
    has_inputs: bool,
    norm_base: u32,
    argmax_base: u32,
    /// Attention: the column-chain node of region-local row 0.
    col_node_base: u32,
    bcast: u32,
    bc_at: Vec<Stamp>,
    busy: u64,
    start: u64,
    end: u64,
    done: bool,
    /// Structural reasons it can never finish (for the deadlock report).
    stuck: Vec<String>,
}

struct Sim<'p> {
    p: &'p Program,
    /// Rows every activation carries (`Program::rows`: batch · new_tokens).
    batch: u64,
    hop: u64,
    ramp: u64,
    regs: Vec<Reg<'p>>,
    // Messages.
    msgs: Vec<Msg>,
    dep: Vec<Stamp>,
    delivered: Vec<bool>,
    // Per PE of an active region (global index over active regions).
    pe_in: Vec<Stamp>,
    // Per physical PE (dense index over the PEs active regions cover; regions
    // sharing a PE share its entry): output port and compute unit free from.
    port: Vec<u64>,
    pe_free: Vec<u64>,
    // Collective nodes (row nodes share the PE index; extra nodes follow).
    n_base: Vec<Stamp>,
    n_pending: Vec<u32>,
    n_slot_off: Vec<u32>,
    n_send: Vec<u32>,
    n_chain: Vec<bool>,
    n_add: Vec<u32>,
    n_role: Vec<Role>,
    /// Physical PE of each node (row nodes are the regions' PEs).
    n_pe: Vec<u32>,
    slot_arr: Vec<Stamp>,
    slot_msg: Vec<u32>,
    // Output lines (global index).
    line_reg: Vec<u32>,
    line_out: Vec<Stamp>,
    line_done: Vec<bool>,
    line_red: Vec<Option<Stamp>>,
    res_pending: Vec<u32>,
    res_stamp: Vec<Stamp>,
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
    // Queue.
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    seq: u64,
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
    fn new(p: &'p Program) -> Sim<'p> {
        let a = &p.arch;
        let mut regs: Vec<Reg<'p>> = Vec::with_capacity(p.regions.len());
        let (mut pes, mut lines, mut line_reg) = (0u32, 0u32, Vec::new());
        for (i, r) in p.regions.iter().enumerate() {
            let nlines = match r.work {
                Work::Gemv { .. } => r.rect.h,
                Work::Attention { .. } => r.work.attn_blocks() as u32,
                Work::Embedding { .. } | Work::Gemm { .. } => 1,
            };
            let (pe_base, line_base) = if r.active { (pes, lines) } else { (NONE, NONE) };
            if r.active {
                pes += r.rect.pes() as u32;
                lines += nlines;
                line_reg.extend(std::iter::repeat_n(i as u32, nlines as usize));
            }
            let w = if matches!(r.work, Work::Gemv { .. }) { r.rect.w as usize } else { 0 };
            regs.push(Reg {
                r,
                active: r.active,
                pe_base,
                line_base,
                lines_left: r.out_lines(),
                col_pending: vec![0; w],
                col_expected: vec![0; w],
                cols_ready: 0,
                has_inputs: false,
                norm_base: NONE,
                argmax_base: NONE,
                col_node_base: NONE,
                bcast: NONE,
                bc_at: Vec::new(),
                busy: 0,
                start: u64::MAX,
                end: 0,
                done: false,
                stuck: Vec::new(),
            });
        }
        // Extra collective nodes after the PE-indexed row nodes.
        let mut nodes = pes;
        for g in regs.iter_mut().filter(|g| g.active) {
            match g.r.work {
                Work::Gemv { norm, argmax, .. } => {
                    if norm {
                        g.norm_base = nodes;
                        nodes += g.r.rect.w;
                    }
                    if argmax {
                        g.argmax_base = nodes;
                        nodes += g.r.rect.h;
                    }
                }
                Work::Attention { .. } => {
                    g.col_node_base = nodes;
                    nodes += g.r.rect.h;
                }
                Work::Embedding { .. } | Work::Gemm { .. } => {}
            }
        }
        let nl = lines as usize;
        let mut s = Sim {
            p,
            batch: p.rows(),
            hop: a.router.hop_latency_cycles as u64,
            ramp: a.router.ramp_latency_cycles as u64,
            regs,
            msgs: Vec::new(),
            dep: Vec::new(),
            delivered: Vec::new(),
            pe_in: vec![Stamp::ZERO; pes as usize],
            port: Vec::new(),
            pe_free: Vec::new(),
            n_base: vec![Stamp::ZERO; nodes as usize],
            n_pending: vec![1; nodes as usize],
            n_slot_off: Vec::new(),
            n_send: vec![NONE; nodes as usize],
            n_chain: vec![false; nodes as usize],
            n_add: vec![0; nodes as usize],
            n_role: vec![Role::Unused; nodes as usize],
            n_pe: vec![0; nodes as usize],
            slot_arr: Vec::new(),
            slot_msg: Vec::new(),
            line_reg,
            line_out: vec![Stamp::ZERO; nl],
            line_done: vec![false; nl],
            line_red: vec![None; nl],
            res_pending: vec![0; nl],
            res_stamp: vec![Stamp::ZERO; nl],
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
            fabric: Fabric::new(a.mesh_width, a.mesh_height, p.wafers.max(1), a.router.hop_latency_cycles as u64),
            sys_free: vec![0; (p.wafers.max(1) as usize).pow(2)],
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            scratch: Vec::new(),
            stats: EventStats::default(),
        };
        s.init_nodes();
        s.place_nodes();
        s.build_messages();
        s
    }

    /// Physical PE of every node: regions that share PEs share their entries.
    fn place_nodes(&mut self) {
        let active: Vec<usize> = (0..self.regs.len()).filter(|&i| self.regs[i].active).collect();
        let rects: Vec<(u32, wafer_ir::Rect)> =
            active.iter().map(|&i| (self.regs[i].r.wafer, self.regs[i].r.rect)).collect();
        let pes: u64 = rects.iter().map(|r| r.1.pes()).sum();
        let occ = wafer_ir::Occupancy::new(&rects);
        let shared = occ.pes() < pes;
        for &ri in &active {
            let g = &self.regs[ri];
            let (rect, wafer, base) = (g.r.rect, g.r.wafer, g.pe_base);
            for r in 0..rect.h {
                for c in 0..rect.w {
                    let n = (base + r * rect.w + c) as usize;
                    // Without sharing, the region-PE index is the physical one.
                    self.n_pe[n] = if shared { occ.index(wafer, rect.pe(r, c)).unwrap_or(0) as u32 } else { n as u32 };
                }
            }
            let at = |r: u32, c: u32| self.n_pe[(base + r * rect.w + c) as usize];
            let mut extra: Vec<(u32, u32)> = Vec::new();
            if g.norm_base != NONE {
                extra.extend((0..rect.w).map(|c| (g.norm_base + c, at(0, c))));
            }
            if g.argmax_base != NONE {
                extra.extend((0..rect.h).map(|r| (g.argmax_base + r, at(r, 0))));
            }
            if g.col_node_base != NONE {
                extra.extend((0..rect.h).map(|r| (g.col_node_base + r, at(r, 0))));
            }
            for (n, pe) in extra {
                self.n_pe[n as usize] = pe;
            }
        }
        let n = if shared { occ.pes() } else { pes } as usize;
        self.port = vec![0; n];
        self.pe_free = vec![0; n];
    }

    /// A task of `cost` cycles on physical PE `pe`, ready at `ready`: it
    /// starts once the PE has finished what it took on before (of any region).
    fn occupy(&mut self, pe: u32, ready: Stamp, cost: u64) -> Stamp {
        let free = &mut self.pe_free[pe as usize];
        let end = ready.wait_until(*free).compute(cost);
        *free = end.t;
        end
    }

    fn init_nodes(&mut self) {
        let (a, b) = (&self.p.arch, self.batch);
        for (ri, g) in self.regs.iter().enumerate() {
            if !g.active {
                continue;
            }
            let reg = ri as u32;
            let (w, h) = (g.r.rect.w, g.r.rect.h);
            match g.r.work {
                Work::Gemv { norm, argmax, acc, .. } => {
                    for r in 0..h {
                        let add = timing::add_partial(a, len(g.r.rows_of(r)) * b, acc);
                        for c in 0..w {
                            let n = (g.pe_base + r * w + c) as usize;
                            self.n_role[n] = Role::GemvRow { reg, row: r };
                            self.n_add[n] = add as u32;
                        }
                    }
                    if norm {
                        for c in 0..w {
                            let n = (g.norm_base + c) as usize;
                            self.n_role[n] = Role::Norm { reg };
                            // Two statistics (sum, sum of squares) per batch row.
                            self.n_add[n] = timing::add_partial(a, 2 * b, DType::F32) as u32;
                        }
                    }
                    if argmax {
                        for r in 0..h {
                            let n = (g.argmax_base + r) as usize;
                            self.n_role[n] = Role::Argmax { reg };
                            self.n_add[n] = timing::add_partial(a, b, DType::F32) as u32;
                        }
                    }
                }
                Work::Attention { group, head_dim, batch_split, .. } => {
                    // A sub-block combines the states of the sequences it serves.
                    let brows = g.r.work.block_rows();
                    for r in 0..h {
                        let block = r / brows;
                        let (lo, hi) = g.r.work.seq_range(block as u64 % batch_split.max(1), b);
                        let add = timing::attention_combine(a, group, head_dim, hi - lo);
                        for c in 0..w {
                            let n = (g.pe_base + r * w + c) as usize;
                            self.n_role[n] = Role::AttnRow { reg, row: r };
                            self.n_add[n] = add as u32;
                        }
                        let n = (g.col_node_base + r) as usize;
                        self.n_role[n] = Role::AttnCol { reg, block };
                        self.n_add[n] = add as u32;
                    }
                }
                Work::Embedding { .. } | Work::Gemm { .. } => {}
            }
        }
    }

    /// Global PE index of `pe` in active region `reg`.
    fn pe_idx(&self, reg: usize, pe: Pe) -> u32 {
        let g = &self.regs[reg];
        g.pe_base + (pe.y - g.r.rect.y) * g.r.rect.w + (pe.x - g.r.rect.x)
    }

    /// Output line (region-local) of region `reg` that PE `pe` sends from or receives at.
    fn line_of(&self, reg: usize, pe: Pe) -> u32 {
        let r = self.regs[reg].r;
        let row = pe.y.saturating_sub(r.rect.y);
        match r.work {
            Work::Gemv { argmax: true, .. } | Work::Embedding { .. } | Work::Gemm { .. } => 0,
            Work::Gemv { .. } => row,
            Work::Attention { .. } => row / r.work.block_rows(),
        }
    }

    /// Expands every active route once into the flat message table and wires
    /// messages to their senders (output lines, collective nodes) and receivers.
    fn build_messages(&mut self) {
        let p = self.p;
        let mut line_sends: Vec<(u32, u32)> = Vec::new(); // (global line, msg)
        let mut recv_count = vec![0u32; self.n_base.len()];
        let mut node_recvs: Vec<(u32, u32)> = Vec::new(); // (node, msg), in message order
        let mut bcast_sends: Vec<(u32, u32)> = Vec::new(); // (global line, msg)
        for (ri, rt) in p.routes.iter().enumerate() {
            let (si, di) = (rt.src.0 as usize, rt.dst.0 as usize);
            if rt.kind == RouteKind::Forward {
                self.regs[di].has_inputs = true;
            }
            if !self.regs[si].active || !self.regs[di].active {
                continue;
            }
            let msgs = route_messages(p, RouteId(ri as u32));
            let (src, dst) = (self.regs[si].r, self.regs[di].r);
            // Per-route shape facts: the row shape and its rounds, norm tree rounds.
            let (row_shape, row_rounds, norm_rounds) = match (rt.kind, &src.work) {
                (RouteKind::Reduce, &Work::Gemv { reduce, .. } | &Work::Attention { reduce, .. }) => {
                    (reduce, reduce.rounds(src.rect.w).len(), 0)
                }
                (RouteKind::Norm, _) => (Reduce::Tree, 0, Reduce::Tree.rounds(src.rect.w).len()),
                _ => (Reduce::Tree, 0, 0),
            };
            for m in msgs {
                let id = self.msgs.len() as u32;
                let dest = match rt.kind {
                    RouteKind::Forward | RouteKind::Residual => {
                        let sl = self.regs[si].line_base + self.line_of(si, m.from);
                        line_sends.push((sl, id));
                        let dl = self.line_of(di, m.to);
                        let gl = (self.regs[di].line_base + dl) as usize;
                        if rt.kind == RouteKind::Residual {
                            self.res_pending[gl] += 1;
                            Dest::Residual { reg: di as u32, line: dl }
                        } else {
                            match dst.work {
                                Work::Gemv { .. } => {
                                    let col = m.to.x - dst.rect.x;
                                    self.regs[di].col_expected[col as usize] += 1;
                                    Dest::GemvCol { reg: di as u32, col }
                                }
                                Work::Attention { .. } => {
                                    // The tag, not the geometry: without multicast a query
                                    // arrives as one unicast per PE of its block.
                                    if m.purpose == Purpose::Query {
                                        self.q_pending[gl] += 1;
                                        Dest::AttnQ { reg: di as u32, block: dl }
                                    } else {
                                        self.kv_pending[gl] += 1;
                                        Dest::AttnKv { reg: di as u32, block: dl }
                                    }
                                }
                                // route_messages sends nothing into an embedding.
                                Work::Embedding { .. } | Work::Gemm { .. } => continue,
                            }
                        }
                    }
                    RouteKind::Bcast => {
                        let Work::Gemv { .. } = src.work else { continue };
                        let l = self.line_of(si, m.from);
                        let gl = self.regs[si].line_base + l;
                        bcast_sends.push((gl, id));
                        self.bc_pending[gl as usize] += 1;
                        Dest::RowBcast { reg: si as u32, line: l }
                    }
                    RouteKind::Reduce | RouteKind::Norm | RouteKind::Argmax => {
                        let g = &self.regs[si];
                        let (x0, y0, w) = (src.rect.x, src.rect.y, src.rect.w);
                        let row_node = |pe: Pe| g.pe_base + (pe.y - y0) * w + (pe.x - x0);
                        let round = m.round as usize;
                        let (from_n, to_n, chain) = match (rt.kind, &src.work) {
                            (RouteKind::Reduce, Work::Gemv { .. }) => {
                                (row_node(m.from), row_node(m.to), row_shape.relays(w, m.from.x - x0))
                            }
                            (RouteKind::Reduce, Work::Attention { .. }) => {
                                if round < row_rounds {
                                    (row_node(m.from), row_node(m.to), row_shape.relays(w, m.from.x - x0))
                                } else {
                                    let rph = src.work.block_rows();
                                    let relays = Reduce::Chain.relays(rph, (m.from.y - y0) % rph);
                                    (g.col_node_base + (m.from.y - y0), g.col_node_base + (m.to.y - y0), relays)
                                }
                            }
                            (RouteKind::Norm, Work::Gemv { norm: true, .. }) => {
                                if round >= norm_rounds {
                                    (NONE, NONE, false)
                                } else {
                                    (g.norm_base + (m.from.x - x0), g.norm_base + (m.to.x - x0), false)
                                }
                            }
                            (RouteKind::Argmax, Work::Gemv { argmax: true, .. }) => {
                                (g.argmax_base + (m.from.y - y0), g.argmax_base + (m.to.y - y0), false)
                            }
                            // A collective the region's work does not use: nothing waits on it.
                            _ => continue,
                        };
                        if from_n == NONE {
                            // The norm's broadcast back along row 0.
                            self.regs[si].bcast = id;
                            Dest::NormBcast { reg: si as u32 }
                        } else {
                            if self.n_send[from_n as usize] == NONE {
                                self.n_send[from_n as usize] = id;
                                self.n_chain[from_n as usize] = chain;
                            }
                            recv_count[to_n as usize] += 1;
                            node_recvs.push((to_n, id));
                            Dest::Node { node: to_n, slot: 0 }
                        }
                    }
                };
                let port = self.n_pe[self.pe_idx(si, m.from) as usize];
                self.push_msg(&m, ri as u32, port, dest);
            }
        }
        // Receive slots, in message (= round) order per node.
        let mut off = Vec::with_capacity(recv_count.len() + 1);
        let mut acc = 0u32;
        for &c in &recv_count {
            off.push(acc);
            acc += c;
        }
        off.push(acc);
        let mut fill = off.clone();
        self.slot_arr = vec![Stamp::ZERO; acc as usize];
        self.slot_msg = vec![NONE; acc as usize];
        for (node, id) in node_recvs {
            let s = fill[node as usize];
            fill[node as usize] += 1;
            self.slot_msg[s as usize] = id;
            if let Dest::Node { slot, .. } = &mut self.msgs[id as usize].dest {
                *slot = s;
            }
        }
        for (n, &c) in recv_count.iter().enumerate() {
            self.n_pending[n] += c;
        }
        self.n_slot_off = off;
        // Output-line send lists (stable: route order, then message order).
        let nl = self.line_out.len();
        (self.out_off, self.out_msgs) = by_line(nl, line_sends);
        (self.bc_off, self.bc_msgs) = by_line(nl, bcast_sends);
        self.dep = vec![Stamp::ZERO; self.msgs.len()];
        self.delivered = vec![false; self.msgs.len()];
        self.stats.messages = self.msgs.len() as u64;
        self.mark_orphans();
    }

    fn push_msg(&mut self, m: &wafer_ir::Message, route: u32, port: u32, dest: Dest) {
        self.msgs.push(Msg {
            from: m.from,
            to: m.to,
            bytes: m.bytes,
            fan_cols: m.fan_cols,
            fan_rows: m.fan_rows,
            west: m.west,
            inter: m.inter_wafer,
            route,
            port,
            dest,
        });
    }

    /// A line whose non-root node never sends leaves its root waiting forever.
    fn mark_orphans(&mut self) {
        let mut marks: Vec<(usize, u32, u32, String)> = Vec::new();
        for (ri, g) in self.regs.iter().enumerate() {
            if !g.active {
                continue;
            }
            let (w, h) = (g.r.rect.w, g.r.rect.h);
            let line = |base: u32, n: u32, root: u32, what: &str, marks: &mut Vec<(usize, u32, u32, String)>| {
                for i in (0..n).filter(|&i| i != root) {
                    let node = base + i;
                    if self.n_send[node as usize] == NONE {
                        marks.push((ri, base + root, node, format!("{what}: no transfer leaves index {i}")));
                    }
                }
            };
            match g.r.work {
                Work::Gemv { norm, argmax, reduce, .. } => {
                    let root = reduce.root(w);
                    for r in 0..h {
                        if len(g.r.rows_of(r)) > 0 {
                            line(g.pe_base + r * w, w, root, &format!("reduce of row {r}"), &mut marks);
                        }
                    }
                    if norm {
                        line(g.norm_base, w, 0, "norm all-reduce", &mut marks);
                    }
                    if argmax {
                        line(g.argmax_base, h, 0, "argmax reduction", &mut marks);
                    }
                }
                Work::Attention { .. } => {
                    let rows_per_block = g.r.work.block_rows();
                    for r in 0..h {
                        line(g.pe_base + r * w, w, 0, &format!("combine of row {r}"), &mut marks);
                    }
                    for b in 0..h / rows_per_block {
                        line(
                            g.col_node_base + b * rows_per_block,
                            rows_per_block,
                            0,
                            &format!("chain of block {b}"),
                            &mut marks,
                        );
                    }
                }
                Work::Embedding { .. } | Work::Gemm { .. } => {}
            }
        }
        for (ri, root, node, why) in marks {
            // The stranded partial goes nowhere; its line's root never completes.
            self.n_role[node as usize] = Role::Unused;
            self.n_pending[root as usize] += 1;
            let g = &mut self.regs[ri];
            if g.stuck.len() < 4 {
                g.stuck.push(format!("{why} (no collective route delivers it)"));
            }
        }
    }

    // ---- running ----

    fn schedule(&mut self, id: u32, st: Stamp) {
        self.dep[id as usize] = st;
        self.heap.push(Reverse((st.t, self.seq, id)));
        self.seq += 1;
    }

    /// Sends message `id` through its sender's output port once `ready`.
    fn send(&mut self, id: u32, ready: Stamp) {
        let m = &self.msgs[id as usize];
        let port = m.port as usize;
        let ser = timing::serialization(&self.p.arch, m.bytes);
        let st = ready.comm_until(self.port[port]);
        self.port[port] = st.t + ser;
        // Up the ramp to the router.
        self.schedule(id, st.comm(self.ramp));
    }

    fn start(&mut self) {
        for ri in 0..self.regs.len() {
            if !self.regs[ri].active {
                continue;
            }
            let r: &'p Region = self.regs[ri].r;
            match r.work {
                Work::Embedding { .. } => {
                    let task = self.p.arch.pe.task_overhead_cycles as u64;
                    let holder = self.n_pe[self.pe_idx(ri, r.out_pe(0)) as usize];
                    let st = self.occupy(holder, Stamp::ZERO, task);
                    self.regs[ri].busy += task;
                    self.regs[ri].start = 0;
                    self.line_ready(ri, 0, st);
                }
                Work::Gemm { tile_m, tile_k, tile_n, acc, .. } => {
                    // Lockstep Cannon steps on every PE of the square, priced by
                    // the closed form: the tile moves stay on the region's own
                    // links (each carries the same tiles every step, nothing else
                    // crosses them), concurrent with the compute.
                    let (compute, moves) =
                        timing::gemm(&self.p.arch, r.rect.w as u64, tile_m, tile_k, tile_n, self.p.weight_dtype, acc);
                    let mut last = Stamp::ZERO;
                    for i in 0..r.rect.pes() as u32 {
                        let node = self.regs[ri].pe_base + i;
                        let st = self.occupy(self.n_pe[node as usize], Stamp::ZERO, compute).comm(moves);
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

    fn run(&mut self, limits: &EventLimits) -> Outcome {
        while let Some(Reverse((t, _, id))) = self.heap.pop() {
            if t > limits.max_cycles {
                self.now = limits.max_cycles;
                return Outcome::CycleLimit { limit: limits.max_cycles };
            }
            self.now = t;
            self.stats.events += 1;
            self.depart(id);
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

    /// Message `id` leaves now: reserve its links, deliver to every PE it reaches.
    fn depart(&mut self, id: u32) {
        let m = self.msgs[id as usize];
        let st = self.dep[id as usize];
        let rt = &self.p.routes[m.route as usize];
        let (src_wafer, dst_wafer) = (self.p.region(rt.src).wafer, self.p.region(rt.dst).wafer);
        let a = &self.p.arch;
        let ser = timing::serialization(a, m.bytes);
        let mut reach = std::mem::take(&mut self.scratch);
        reach.clear();
        // (stamp at the first delivery point minus the streaming, streaming time)
        let (base, body) = if m.inter {
            let cost = timing::inter_wafer(a, m.bytes);
            let occ = (m.bytes as f64 / a.inter_wafer_bytes_per_cycle()).ceil() as u64;
            let wafers = self.p.wafers.max(1) as usize;
            let k = (src_wafer as usize).min(wafers - 1) * wafers + (dst_wafer as usize).min(wafers - 1);
            let start = st.t.max(self.sys_free[k]);
            self.sys_free[k] = start + occ;
            let body = ser.min(cost);
            let at_to = st.wait_until(start).inter(cost - body);
            self.fabric.walk(dst_wafer, m.to, m.to, m.fan_cols, m.fan_rows, m.west, at_to.t, body, &mut reach);
            (at_to, body)
        } else {
            self.fabric.walk(src_wafer, m.from, m.to, m.fan_cols, m.fan_rows, m.west, st.t, ser, &mut reach);
            (st, ser)
        };
        self.delivered[id as usize] = true;
        let (hop, ramp) = (self.hop, self.ramp);
        let arrive = |r: &Reach| -> Stamp {
            // No-contention arrival: dist hops then the body; anything later is
            // waiting; then down the ramp into the PE.
            let s = base.comm(r.dist as u64 * hop);
            let s = if m.inter { s.inter(body) } else { s.comm(body) };
            s.wait_until(r.head + body).comm(ramp)
        };
        match m.dest {
            Dest::GemvCol { reg, col } => {
                let reg = reg as usize;
                for r in &reach {
                    let s = arrive(r);
                    let i = self.pe_idx(reg, Pe { x: r.x, y: r.y }) as usize;
                    self.pe_in[i] = self.pe_in[i].later(s);
                    self.regs[reg].start = self.regs[reg].start.min(s.t);
                }
                let cp = &mut self.regs[reg].col_pending[col as usize];
                *cp -= 1;
                if *cp == 0 {
                    self.column_ready(reg, col);
                }
            }
            Dest::AttnQ { reg, block } => {
                let reg = reg as usize;
                for r in &reach {
                    let s = arrive(r);
                    let i = self.pe_idx(reg, Pe { x: r.x, y: r.y }) as usize;
                    self.pe_in[i] = self.pe_in[i].later(s);
                    self.regs[reg].start = self.regs[reg].start.min(s.t);
                }
                let gl = (self.regs[reg].line_base + block) as usize;
                self.q_pending[gl] -= 1;
                if self.q_pending[gl] == 0 {
                    self.attn_q_ready(reg, block);
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
                if self.res_pending[gl] == 0 && self.line_red[gl].is_some() {
                    self.line_finish(reg, line);
                }
            }
            Dest::Node { node, slot } => {
                let s = arrive(&reach[0]);
                self.slot_arr[slot as usize] = s;
                self.node_dec(node);
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
        let base = self.regs[reg].pe_base;
        for row in 0..r.rect.h {
            let ready = self.pe_in[(base + row * r.rect.w + c) as usize];
            self.gemv_pe(reg, row, c, ready);
        }
    }

    fn gemv_pe(&mut self, reg: usize, r: u32, c: u32, ready: Stamp) {
        let g = &self.regs[reg];
        let Work::Gemv { acc, mac, .. } = g.r.work else { return };
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
        let node = g.pe_base + r * g.r.rect.w + c;
        self.regs[reg].busy += cost;
        let end = self.occupy(self.n_pe[node as usize], ready, cost);
        self.node_base(node, end);
    }

    fn norm_start(&mut self, reg: usize) {
        let g = &self.regs[reg];
        let (w, base, nb) = (g.r.rect.w, g.pe_base, g.norm_base);
        let mut t0 = Stamp::ZERO;
        for c in 0..w {
            t0 = t0.later(self.pe_in[(base + c) as usize]);
        }
        self.regs[reg].bc_at = vec![Stamp::ZERO; w as usize];
        for c in 0..w {
            self.node_base(nb + c, t0);
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
                let i = self.regs[reg].pe_base + r * w + c;
                let ready = self.pe_in[i as usize].later(bc[c as usize].comm(r as u64 * self.hop));
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
        let w = g.r.rect.w;
        let holder = (slot / pos_per_pe.max(1)) as u32;
        for i in 0..rows_per_head * w {
            if i == holder {
                if self.kv_pending[gl] == 0 {
                    self.attn_holder(reg, block);
                }
                continue;
            }
            let row = block * rows_per_head + i / w;
            let idx = self.regs[reg].pe_base + row * w + i % w;
            let ready = self.pe_in[idx as usize];
            self.attn_pe(reg, block, i, ready);
        }
    }

    fn attn_holder(&mut self, reg: usize, block: u32) {
        let g = &self.regs[reg];
        let Work::Attention { pos_per_pe, slot, .. } = g.r.work else { return };
        let rows_per_head = g.r.work.block_rows();
        let w = g.r.rect.w;
        let i = (slot / pos_per_pe.max(1)) as u32;
        if i >= rows_per_head * w {
            return;
        }
        let row = block * rows_per_head + i / w;
        let idx = g.pe_base + row * w + i % w;
        let gl = (g.line_base + block) as usize;
        let ready = self.pe_in[idx as usize].later(self.kv_stamp[gl]);
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
        let cost = timing::attention_compute(&self.p.arch, group, head_dim, held, hi - lo, self.p.kv_dtype);
        let w = g.r.rect.w;
        let node = g.pe_base + (block * rows_per_head + i / w) * w + i % w;
        self.regs[reg].busy += cost;
        let end = self.occupy(self.n_pe[node as usize], ready, cost);
        self.node_base(node, end);
    }

    fn node_base(&mut self, n: u32, st: Stamp) {
        self.n_base[n as usize] = st;
        self.node_dec(n);
    }

    fn node_dec(&mut self, n: u32) {
        let p = &mut self.n_pending[n as usize];
        *p -= 1;
        if *p == 0 {
            self.node_fire(n);
        }
    }

    /// Node `n` has its own partial and every receive: combine, then send or finish the line.
    fn node_fire(&mut self, n: u32) {
        let ni = n as usize;
        let (lo, hi) = (self.n_slot_off[ni] as usize, self.n_slot_off[ni + 1] as usize);
        let add = self.n_add[ni] as u64;
        let send = self.n_send[ni];
        let base = self.n_base[ni];
        let reg = match self.n_role[ni] {
            Role::GemvRow { reg, .. }
            | Role::Norm { reg }
            | Role::Argmax { reg }
            | Role::AttnRow { reg, .. }
            | Role::AttnCol { reg, .. } => reg as usize,
            Role::Unused => return,
        };
        self.regs[reg].busy += add * (hi - lo) as u64;
        let pe = self.n_pe[ni];
        let out = if send != NONE && self.n_chain[ni] && hi > lo {
            // A relay: earlier receives are added first; the last one streams
            // through the adder, its head passing on once it is down the ramp
            // (`arrive`) and through the adder (the ramp back up is the send's).
            let mut part = base;
            for s in lo..hi - 1 {
                let ready = part.later(self.slot_arr[s]);
                part = self.occupy(pe, ready, add);
            }
            let arr = self.slot_arr[hi - 1];
            let ser = timing::serialization(&self.p.arch, self.msgs[self.slot_msg[hi - 1] as usize].bytes);
            let mut head = arr;
            head.t -= ser;
            head.comm = head.comm.saturating_sub(ser as u32);
            let ready = part.later(head);
            let out = self.occupy(pe, ready, timing::adder_pass(&self.p.arch));
            // The stream holds the adder until its tail has passed.
            self.pe_free[pe as usize] = self.pe_free[pe as usize].max(arr.t);
            out
        } else {
            let mut part = base;
            for s in lo..hi {
                let ready = part.later(self.slot_arr[s]);
                part = self.occupy(pe, ready, add);
            }
            part
        };
        if send != NONE {
            self.send(send, out);
            return;
        }
        match self.n_role[ni] {
            Role::GemvRow { row, .. } => self.line_final(reg, row, out),
            Role::Norm { .. } => self.norm_done(reg, out),
            Role::Argmax { .. } => self.line_ready(reg, 0, out),
            Role::AttnRow { row, .. } => {
                let cn = self.regs[reg].col_node_base + row;
                self.node_base(cn, out);
            }
            Role::AttnCol { block, .. } => self.line_final(reg, block, out),
            Role::Unused => {}
        }
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
                let root = self.n_pe[self.pe_idx(reg, r.out_pe(l)) as usize];
                let end = self.occupy(root, start, cost);
                if argmax {
                    let n = self.regs[reg].argmax_base + l;
                    self.node_base(n, end);
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
        for (k, m) in self.msgs.iter().enumerate() {
            if !self.delivered[k] {
                undelivered[p.routes[m.route as usize].dst.0 as usize].insert(m.route);
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

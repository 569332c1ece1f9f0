//! Users in flight: the steady state of `U` independent sequences pipelined
//! through a mapping's PEs, from one finished step.
//!
//! Owns: the closed form. Every region holds its PEs from its first input to
//! its output (`RegionTiming::start..end`, from whichever engine ran); a PE
//! serves one token at a time, so in steady state it is busy, per token, for
//! the sum of the holding times of the regions on it. The busiest PEs (the
//! *bottleneck*, `B` cycles per token) and every system link between wafers
//! (the bytes its routes carry per token, at the link's rate) bound the
//! throughput at `1 / B` tokens per cycle; `U` users whose own steps take
//! `T` cycles cannot do better than `U / T` (each user has one token in
//! flight). So, per step of `batch` sequences:
//!
//! `aggregate = batch · min(U / T, 1 / B)` tokens per cycle, each user
//! getting `aggregate / U`.
//!
//! A pipeline mapping (disjoint regions, a layer's ops on their own PEs) has
//! `B ≪ T`: up to `⌊T / B⌋` users ride along almost for free. A spread
//! mapping (every region on the same PEs) has `B ≈ T`: users only share the
//! step. The figure is an upper bound on throughput: contention between
//! users' messages on shared links inside a wafer is not modelled, nor the
//! extra KV cache `U` users need (the program holds one context per
//! sequence of its batch).
//!
//! Two checks of the closed form: [`replay_users`] replays the step's
//! region timings job by job (disjoint regions only), and [`engine_steady`]
//! runs the event engine (or the analytical walk) over a program unrolled
//! into `users × tokens` copies of the step (`wafer_compiler::unroll_users`),
//! message by message, with real contention on PEs, ports and links, and
//! each user's next token waiting for its sampled token to reach the
//! embedding.
//!
//! Must not: accept a step that did not finish (it takes a [`FinishedSim`]),
//! or unroll a program (the compiler does).

use crate::result::FinishedSim;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wafer_ir::{Occupancy, Program, ProgramInfo};

/// The steady state of `users` sequences pipelined through a program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipelining {
    pub users: u32,
    /// One step of one user, cycles (`T`).
    pub step_cycles: f64,
    /// Cycles the busiest resource is held per token (`B`).
    pub bottleneck_cycles: f64,
    /// The same, µs.
    pub bottleneck_us: f64,
    /// What that resource is: the regions on the busiest PEs, or a system link.
    pub bottleneck: String,
    /// Users that fit in flight before the bottleneck binds: `⌊T / B⌋` (at least 1).
    pub stages: u32,
    /// Tokens per second over all users (every sequence of every user's batch).
    pub aggregate_tokens_per_s: f64,
    /// Tokens per second each user sees.
    pub per_user_tokens_per_s: f64,
    /// Time between one user's tokens, µs.
    pub per_user_token_us: f64,
    /// The same users replayed job by job ([`replay_users`]), when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<UsersReplay>,
    /// The same users simulated by the event engine over an unrolled program
    /// ([`engine_steady`]), when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<UsersSteady>,
    /// Why the event engine's figure was not made, when it was asked for and is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_skipped: Option<String>,
}

/// The steady state of `users` (≥ 1) sequences of `p`, from one finished step of it.
pub fn pipelining(p: &Program, sim: &FinishedSim, users: u32) -> Pipelining {
    let users = users.max(1);
    let held: BTreeMap<&str, f64> =
        sim.regions.iter().map(|r| (r.region.as_str(), (r.end - r.start).max(0.0))).collect();
    let active: Vec<usize> = (0..p.regions.len()).filter(|&i| p.regions[i].active).collect();
    let occ = Occupancy::new(&active.iter().map(|&i| (p.regions[i].wafer, p.regions[i].rect)).collect::<Vec<_>>());
    let cells = occ.cells().len();
    let mut busy = vec![0.0f64; cells];
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); cells];
    for &i in &active {
        let r = &p.regions[i];
        let h = held.get(r.name.as_str()).copied().unwrap_or(0.0);
        for c in occ.cells_of(r.wafer, r.rect) {
            busy[c] += h;
            on[c].push(i);
        }
    }
    let (mut worst, mut what) = (0.0f64, String::from("nothing"));
    for (c, &b) in busy.iter().enumerate() {
        if b > worst {
            worst = b;
            what = match on[c].as_slice() {
                [one] => format!("region {}", p.regions[*one].name),
                many => format!("{} regions sharing PEs ({} … {})", many.len(), p.regions[many[0]].name, {
                    let last = many[many.len() - 1];
                    &p.regions[last].name
                }),
            };
        }
    }
    // System links: every route between wafers, per ordered wafer pair.
    let mut link: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for rt in &p.routes {
        let (s, d) = (p.region(rt.src), p.region(rt.dst));
        if s.active && d.active && s.wafer != d.wafer {
            *link.entry((s.wafer, d.wafer)).or_default() += rt.bytes;
        }
    }
    for (&(a, b), &bytes) in &link {
        let t = bytes as f64 / p.arch.system.inter_wafer_bytes_per_s * p.arch.clock_ghz * 1e9;
        if t > worst {
            worst = t;
            what = format!("the system link from wafer {a} to wafer {b}");
        }
    }
    let step = sim.cycles.max(1.0);
    let bottleneck = worst.clamp(f64::MIN_POSITIVE, step);
    let per_cycle = (users as f64 / step).min(1.0 / bottleneck);
    let hz = p.arch.clock_ghz * 1e9;
    let aggregate = per_cycle * p.batch as f64 * hz;
    Pipelining {
        users,
        step_cycles: step,
        bottleneck_cycles: bottleneck,
        bottleneck_us: bottleneck / hz * 1e6,
        bottleneck: what,
        stages: ((step / bottleneck).floor() as u32).max(1),
        aggregate_tokens_per_s: aggregate,
        per_user_tokens_per_s: aggregate / users as f64,
        per_user_token_us: users as f64 / per_cycle / hz * 1e6,
        replay: None,
        event: None,
        event_skipped: None,
    }
}

/// A prompt streamed through a mapping, `c = p.new_tokens` tokens of each
/// sequence at a time (`c = 1`: one after the other; `c > 1`: the mapping
/// restated for a chunk, `wafer_compiler::prefill_chunk`): each chunk enters
/// as soon as the bottleneck lets it (a chunk needs only the earlier chunks'
/// K and V of each layer, which the same attention region wrote before it),
/// and the first output token comes out with the last chunk.
/// `ttft = T + (⌈prompt / c⌉ − 1) · B`, with `T` and `B` from a step of the
/// program at the prompt's last position: an upper bound for the earlier
/// chunks, which attend over fewer positions, and for a last chunk that is
/// not full. The gemm ways report in the same form (`way`; `chunk` their
/// block, `step_cycles` their fill and tail, `bottleneck_cycles` per block:
/// [`crate::prefill::gemm_prefill`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamedPrefill {
    pub prompt: u64,
    /// How the prompt runs: chunks streamed through the decode mapping, or
    /// weight-stationary GEMMs over its resident weights ([`crate::prefill::gemm_prefill`]).
    #[serde(default)]
    pub way: PrefillWay,
    /// Prompt tokens of each sequence per step (a chunk, or a GEMM's block).
    pub chunk: u64,
    /// One chunk's trip through the mapping (`T`), cycles.
    pub step_cycles: f64,
    /// Cycles between chunks in steady state (`B`).
    pub bottleneck_cycles: f64,
    pub bottleneck: String,
    pub ttft_cycles: f64,
    pub ttft_us: f64,
    /// Prompt tokens per second.
    pub prompt_tokens_per_s: f64,
}

/// [`StreamedPrefill`] of `prompt` (≥ 1) tokens through `p`, from one finished step of it.
pub fn streamed_prefill(p: &Program, sim: &FinishedSim, prompt: u64) -> StreamedPrefill {
    let prompt = prompt.max(1);
    let chunk = p.new_tokens.max(1);
    let s = pipelining(p, sim, u32::MAX);
    let ttft = s.step_cycles + (prompt.div_ceil(chunk) - 1) as f64 * s.bottleneck_cycles;
    let hz = p.arch.clock_ghz * 1e9;
    StreamedPrefill {
        prompt,
        way: PrefillWay::Stream,
        chunk,
        step_cycles: s.step_cycles,
        bottleneck_cycles: s.bottleneck_cycles,
        bottleneck: s.bottleneck,
        ttft_cycles: ttft,
        ttft_us: ttft / hz * 1e6,
        prompt_tokens_per_s: (prompt * p.batch) as f64 / (ttft / hz),
    }
}

/// The two ways a prompt runs on a decode mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefillWay {
    /// Chunks of `c` tokens streamed through the decode step's regions and
    /// routes ([`streamed_prefill`]).
    #[default]
    Stream,
    /// Every Gemv a weight-stationary GEMM over its resident weights,
    /// the prompt's blocks pipelined through the layers ([`crate::prefill::gemm_prefill`]).
    Gemm,
    /// The same GEMMs, one region at a time over every block, the prompt's
    /// activations staged between regions (what mappings whose layers share
    /// PEs have room for).
    GemmLayers,
    /// Layer by layer, every Gemv on a square run as Cannon GEMMs (MeshGEMM)
    /// over the whole prompt, the others as [`PrefillWay::GemmLayers`].
    GemmCannon,
}

impl PrefillWay {
    pub fn name(self) -> &'static str {
        match self {
            PrefillWay::Stream => "stream",
            PrefillWay::Gemm => "gemm",
            PrefillWay::GemmLayers => "gemm_layers",
            PrefillWay::GemmCannon => "gemm_cannon",
        }
    }
}

/// Users in flight replayed event by event: `users` sequences, each stepping
/// `tokens` times, through the regions of a finished step.
///
/// Each region of each user's token is a job that holds the region's PEs
/// (its [`Occupancy`] cells) for the time it held them in the step that ran
/// (`RegionTiming::end − start`); it may start once its producers' outputs
/// have arrived (the step's own gap from each producer's end to its start,
/// which carries the message transit) and its cells are free of other
/// tokens' jobs, first come first served. A route between wafers holds its
/// system link for its bytes at the link's rate. A user's next token enters
/// when its last one is out. One user stepping once reproduces the step
/// exactly; the aggregate rate is measured over the second half of the run,
/// when the pipeline is full.
///
/// What it checks of the closed form ([`pipelining`]): that the busiest PEs'
/// summed holding time and the users' own step time are the only bounds, and
/// how the pipeline fills. What it cannot see: contention between users'
/// messages inside a region or on a link inside a wafer (each job replays
/// the timing of a step that ran alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsersReplay {
    pub users: u32,
    /// Tokens each user stepped.
    pub tokens: u32,
    /// Tokens per second over all users, from the second half of the run.
    pub aggregate_tokens_per_s: f64,
    pub per_user_tokens_per_s: f64,
    /// Time from the first token's entry to the last token's exit, µs.
    pub makespan_us: f64,
    /// Fraction of the measured window the busiest PEs were held.
    pub bottleneck_occupancy: f64,
    /// `aggregate_tokens_per_s` over the closed form's.
    pub vs_closed_form: f64,
}

/// Tokens per user [`replay_users`] steps by default: enough for the second
/// half to start with the pipeline full when every user is in flight.
pub const REPLAY_TOKENS: u32 = 16;

/// Most jobs (regions × users × tokens) a replay may run.
pub const MAX_REPLAY_JOBS: u64 = 1 << 26;

/// Why a replay was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("a replay of {users} users x {tokens} tokens over {regions} regions is {jobs} jobs; at most {max} are allowed (fewer --users)")]
    TooLarge { users: u32, tokens: u32, regions: u64, jobs: u64, max: u64 },
    /// Regions `a` and `b` share PEs: a region holds its PEs from its first
    /// input to its output, waiting included, so the replay would keep a
    /// second user off PEs that are only waiting (it came out slower than one
    /// user alone on llama-3.2-1b's spread mapping). Only the closed form
    /// speaks for such mappings.
    #[error("regions {a} and {b} share PEs; the replay models disjoint regions only")]
    SharedPes { a: String, b: String },
}

/// [`UsersReplay`] of `users` (≥ 1) sequences stepping `tokens` (≥ 2) times.
pub fn replay_users(p: &Program, sim: &FinishedSim, users: u32, tokens: u32) -> Result<UsersReplay, ReplayError> {
    let (users, tokens) = (users.max(1), tokens.max(2));
    let timing: BTreeMap<&str, (f64, f64)> =
        sim.regions.iter().map(|r| (r.region.as_str(), (r.start, r.end.max(r.start)))).collect();
    let active: Vec<usize> = (0..p.regions.len()).filter(|&i| p.regions[i].active).collect();
    let n = active.len();
    let jobs = n as u64 * users as u64 * tokens as u64;
    if jobs > MAX_REPLAY_JOBS {
        return Err(ReplayError::TooLarge { users, tokens, regions: n as u64, jobs, max: MAX_REPLAY_JOBS });
    }
    let slot: BTreeMap<usize, usize> = active.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let (start, held): (Vec<f64>, Vec<f64>) = active
        .iter()
        .map(|&i| {
            let (s, e) = timing.get(p.regions[i].name.as_str()).copied().unwrap_or((0.0, 0.0));
            (s, e - s)
        })
        .unzip();
    let occ = Occupancy::new(&active.iter().map(|&i| (p.regions[i].wafer, p.regions[i].rect)).collect::<Vec<_>>());
    let cells: Vec<Vec<usize>> = active.iter().map(|&i| occ.cells_of(p.regions[i].wafer, p.regions[i].rect)).collect();
    let mut owner = vec![usize::MAX; occ.cells().len()];
    for (k, cs) in cells.iter().enumerate() {
        for &c in cs {
            if owner[c] != usize::MAX {
                let (a, b) = (&p.regions[active[owner[c]]].name, &p.regions[active[k]].name);
                return Err(ReplayError::SharedPes { a: a.clone(), b: b.clone() });
            }
            owner[c] = k;
        }
    }
    // Producers of each region: (producer, gap from its end to our start, system link and its cycles).
    let hz = p.arch.clock_ghz * 1e9;
    let mut links: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let mut inputs: Vec<Vec<Input>> = vec![Vec::new(); n];
    for rt in &p.routes {
        let (Some(&s), Some(&d)) = (slot.get(&(rt.src.0 as usize)), slot.get(&(rt.dst.0 as usize))) else { continue };
        if s >= d {
            continue; // routes run forward in program order; nothing feeds back within a step
        }
        let (sw, dw) = (p.regions[active[s]].wafer, p.regions[active[d]].wafer);
        let link = (sw != dw).then(|| {
            let k = links.len();
            (*links.entry((sw, dw)).or_insert(k), rt.bytes as f64 / p.arch.system.inter_wafer_bytes_per_s * hz)
        });
        inputs[d].push((s, start[d] - (start[s] + held[s]), link));
    }
    // Event by event: jobs (user, region) in the order they become ready;
    // a job starts once its cells (and, for a route between wafers, its
    // link) are free of every *other* token's job. One token's own jobs may
    // overlap on a cell, as they did in the step that ran (a region holds
    // its PEs from its first input to its output, waiting on the rest).
    type Holds = Vec<(u64, f64)>;
    // Holds that ended by the job's own ready time cannot delay it; a job
    // released out of order (ready before an earlier-popped one) may miss
    // one that ended in between, which only makes the replay optimistic.
    let free_of_others = |holds: &mut Holds, token: u64, now: f64| -> f64 {
        holds.retain(|&(_, e)| e > now);
        holds.iter().filter(|h| h.0 != token).map(|h| h.1).fold(0.0, f64::max)
    };
    let hold = |holds: &mut Holds, token: u64, end: f64| match holds.iter_mut().find(|h| h.0 == token) {
        Some(h) => h.1 = h.1.max(end),
        None => holds.push((token, end)),
    };
    let consumers: Vec<Vec<usize>> = {
        let mut c = vec![Vec::new(); n];
        for (d, ins) in inputs.iter().enumerate() {
            for &(s, _, _) in ins {
                c[s].push(d);
            }
        }
        // Once per consumer: it walks every route from the producer itself.
        c.iter_mut().for_each(|v| v.dedup());
        c
    };
    let mut cell_holds: Vec<Holds> = vec![Vec::new(); occ.cells().len()];
    let mut link_holds: Vec<Holds> = vec![Vec::new(); links.len()];
    let u_n = users as usize;
    let mut f = Flight {
        token: vec![0; u_n],
        ready: vec![vec![0.0; n]; u_n],
        left: vec![vec![0; n]; u_n],
        jobs_left: vec![0; u_n],
        exit: vec![0.0; u_n],
        next_id: 0,
        seq: 0,
        queue: Default::default(),
    };
    let mut done: Vec<Vec<f64>> = vec![Vec::with_capacity(tokens as usize); u_n];
    let mut busy_log: Vec<(f64, f64, usize)> = Vec::new();
    for u in 0..u_n {
        f.enter(u, 0.0, &inputs, &start);
    }
    while let Some(std::cmp::Reverse((Ordered(now), _, u, j))) = f.queue.pop() {
        let (u, j) = (u as usize, j as usize);
        let t = f.token[u];
        let mut go = now;
        for &c in &cells[j] {
            go = go.max(free_of_others(&mut cell_holds[c], t, now));
        }
        let end = go + held[j];
        for &c in &cells[j] {
            hold(&mut cell_holds[c], t, end);
            busy_log.push((go, end, c));
        }
        f.exit[u] = f.exit[u].max(end);
        for &d in &consumers[j] {
            for &(s, gap, link) in &inputs[d] {
                if s != j {
                    continue;
                }
                let mut arrive = end + gap;
                if let Some((l, cycles)) = link {
                    let from = end.max(free_of_others(&mut link_holds[l], t, now));
                    hold(&mut link_holds[l], t, from + cycles);
                    arrive = from + gap;
                }
                f.ready[u][d] = f.ready[u][d].max(arrive);
                f.left[u][d] -= 1;
                if f.left[u][d] == 0 {
                    // It may be ready before `now`: a region starts at its
                    // first input, which can precede another producer's start.
                    f.push(f.ready[u][d], u, d);
                }
            }
        }
        f.jobs_left[u] -= 1;
        if f.jobs_left[u] == 0 {
            done[u].push(f.exit[u]);
            if (done[u].len() as u32) < tokens {
                f.enter(u, f.exit[u], &inputs, &start);
            }
        }
    }
    let (t_a, t_b, per_cycle) = second_half(&done);
    let window = (t_b - t_a).max(f64::MIN_POSITIVE);
    // Per cell, the union of its holding intervals inside the window (one
    // token's regions on the same PEs overlap while they wait on each other).
    busy_log.sort_by(|x, y| x.2.cmp(&y.2).then(x.0.total_cmp(&y.0)));
    let mut occupancy = 0.0f64;
    let mut i = 0;
    while i < busy_log.len() {
        let c = busy_log[i].2;
        let (mut held, mut reach) = (0.0f64, t_a);
        while i < busy_log.len() && busy_log[i].2 == c {
            let (a, b) = (busy_log[i].0.max(reach), busy_log[i].1.min(t_b));
            if b > a {
                held += b - a;
                reach = b;
            }
            i += 1;
        }
        occupancy = occupancy.max(held / window);
    }
    let aggregate = per_cycle * p.batch as f64 * hz;
    let closed = pipelining(p, sim, users).aggregate_tokens_per_s;
    let makespan = done.iter().map(|d| d[tokens as usize - 1]).fold(0.0, f64::max);
    Ok(UsersReplay {
        users,
        tokens,
        aggregate_tokens_per_s: aggregate,
        per_user_tokens_per_s: aggregate / users as f64,
        makespan_us: makespan / hz * 1e6,
        bottleneck_occupancy: occupancy,
        vs_closed_form: aggregate / closed.max(f64::MIN_POSITIVE),
    })
}

/// The rate of the second half of a run, from each user's token exit times
/// (`done[u][t]`, every user the same count ≥ 2): from the moment every
/// user's first half is out (`t_a`) to the last token out (`t_b`), the
/// tokens that came out in between per cycle. Returns `(t_a, t_b, rate)`.
fn second_half(done: &[Vec<f64>]) -> (f64, f64, f64) {
    let tokens = done.first().map_or(0, |d| d.len());
    let half = (tokens / 2).max(1);
    let t_a = done.iter().map(|d| d[half - 1]).fold(f64::MIN, f64::max);
    let t_b = done.iter().map(|d| d[tokens - 1]).fold(f64::MIN, f64::max);
    let counted: usize = done.iter().map(|d| d.iter().filter(|&&c| c > t_a && c <= t_b).count()).sum();
    (t_a, t_b, counted as f64 / (t_b - t_a).max(f64::MIN_POSITIVE))
}

/// Users in flight timed by an engine over the step unrolled into `users ×
/// tokens` copies (`wafer_compiler::unroll_users`): every message of every
/// user's tokens played together, contending for PEs, output ports and
/// links, each user's next token starting when its sampled token has reached
/// the embedding. A token is out when its copy's last region ends; the rate
/// is read over the second half of the tokens, as [`replay_users`] does.
///
/// Unlike [`replay_users`] this holds for mappings whose regions share PEs
/// (spread, hybrid): the event engine runs each PE's tasks as their inputs
/// arrive and holds no PE while a region waits, so a second user's work
/// fills a PE's idle time. It also pays what the closed form leaves out:
/// the sampled token's trip back to the embedding, and users' messages
/// queueing for the same links. Not modelled, as in the closed form: the KV
/// cache of more users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsersSteady {
    /// The engine that timed the unrolled program (`event` or `analytical`).
    pub engine: String,
    pub users: u32,
    /// Tokens each user stepped.
    pub tokens: u32,
    /// Tokens per second over all users, from the second half of the run.
    pub aggregate_tokens_per_s: f64,
    pub per_user_tokens_per_s: f64,
    /// Time until the last token is out, µs.
    pub makespan_us: f64,
    /// `aggregate_tokens_per_s` over the closed form's ([`pipelining`]).
    pub vs_closed_form: f64,
    /// Messages the engine played (every copy's).
    pub messages: u64,
    /// Fraction of the run the busiest PEs compute (stage occupancy): each
    /// region's compute, its mean over its PEs, summed over every copy of
    /// the regions on those PEs, over the whole run (fill and drain included).
    pub busiest_compute: f64,
}

/// Tokens per user [`engine_steady`] steps by default: users enter
/// staggered (`wafer_compiler::unroll_users`), so from every user's second
/// token on the mapping holds them all and the second half is steady.
pub const EVENT_TOKENS: u32 = 4;

/// Why an engine's steady state could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SteadyError {
    /// The unrolled program is above the engine's budget.
    #[error("{users} users x {tokens} tokens in flight: {source}; use fewer --users")]
    TooLarge { users: u32, tokens: u32, source: wafer_ir::ResourceError },
    /// The run of the unrolled program did not finish.
    #[error("{users} users x {tokens} tokens in flight: {source}")]
    Unfinished { users: u32, tokens: u32, source: crate::result::SimError },
    /// A copy's timing is missing: the program is not `users × tokens` copies of the step.
    #[error("the unrolled program has no timing for user {user}'s token {token}: it is not {users} users x {tokens} tokens of the step")]
    MissingCopy { user: u32, token: u32, users: u32, tokens: u32 },
}

/// Which engine [`engine_steady`] runs over the unrolled program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteadyEngine {
    /// The event engine within these limits (refused above them: [`SteadyError::TooLarge`]).
    Event(crate::event::EventLimits),
    /// The program-level closed form (`wafer_cost::estimate`): each region
    /// waits for its copies before it on the same PEs, in program order.
    Analytical,
}

/// [`UsersSteady`] of `users` (≥ 1) sequences stepping `tokens` (≥ 2) times
/// through `p`, whose finished step is `sim`: `unrolled` (verified: `info`)
/// is `p` unrolled by `wafer_compiler::unroll_users` with the same users and
/// tokens, timed here by `engine`.
pub fn engine_steady(
    p: &Program,
    sim: &FinishedSim,
    unrolled: &Program,
    info: &ProgramInfo,
    users: u32,
    tokens: u32,
    engine: SteadyEngine,
) -> Result<UsersSteady, SteadyError> {
    let (users, tokens) = (users.max(1), tokens.max(2));
    let (run, name) = match engine {
        SteadyEngine::Event(limits) => (
            crate::event::try_simulate_event(unrolled, info, &limits).map_err(|source| SteadyError::TooLarge {
                users,
                tokens,
                source,
            })?,
            "event",
        ),
        SteadyEngine::Analytical => (crate::analytical::simulate_analytical(unrolled, info), "analytical"),
    };
    let run = run.finished().map_err(|source| SteadyError::Unfinished { users, tokens, source })?;
    let mut done = vec![vec![f64::NAN; tokens as usize]; users as usize];
    for r in &run.regions {
        let Some((_, u, t)) = wafer_ir::parse_copy_name(&r.region) else { continue };
        if let Some(slot) = done.get_mut(u as usize).and_then(|d| d.get_mut(t as usize)) {
            *slot = if slot.is_nan() { r.end } else { slot.max(r.end) };
        }
    }
    for (u, d) in done.iter().enumerate() {
        if let Some(t) = d.iter().position(|x| x.is_nan()) {
            return Err(SteadyError::MissingCopy { user: u as u32, token: t as u32, users, tokens });
        }
    }
    let (_, _, per_cycle) = second_half(&done);
    let hz = p.arch.clock_ghz * 1e9;
    let aggregate = per_cycle * p.batch as f64 * hz;
    let closed = pipelining(p, sim, users).aggregate_tokens_per_s;
    // Compute per cell of PEs, summed over the regions (and copies) there.
    let at: BTreeMap<&str, usize> = unrolled.regions.iter().enumerate().map(|(i, r)| (r.name.as_str(), i)).collect();
    let occ = Occupancy::new(&unrolled.regions.iter().map(|r| (r.wafer, r.rect)).collect::<Vec<_>>());
    let mut busy = vec![0.0f64; occ.cells().len()];
    for t in &run.regions {
        if let Some(r) = at.get(t.region.as_str()).map(|&i| &unrolled.regions[i]) {
            for c in occ.cells_of(r.wafer, r.rect) {
                busy[c] += t.busy_fraction;
            }
        }
    }
    Ok(UsersSteady {
        engine: name.into(),
        users,
        tokens,
        aggregate_tokens_per_s: aggregate,
        per_user_tokens_per_s: aggregate / users as f64,
        makespan_us: run.cycles / hz * 1e6,
        vs_closed_form: aggregate / closed.max(f64::MIN_POSITIVE),
        messages: info.messages,
        busiest_compute: busy.iter().copied().fold(0.0, f64::max),
    })
}

/// Per user, the token it has in flight in [`replay_users`].
struct Flight {
    token: Vec<u64>,
    /// Per region: the latest producer's delivery, producers still to deliver.
    ready: Vec<Vec<f64>>,
    left: Vec<Vec<usize>>,
    jobs_left: Vec<usize>,
    exit: Vec<f64>,
    next_id: u64,
    seq: u64,
    /// Jobs ready: (time, sequence number for ties, user, region).
    queue: std::collections::BinaryHeap<std::cmp::Reverse<(Ordered, u64, u32, u32)>>,
}

type Input = (usize, f64, Option<(usize, f64)>);

impl Flight {
    fn push(&mut self, at: f64, u: usize, j: usize) {
        self.seq += 1;
        self.queue.push(std::cmp::Reverse((Ordered(at), self.seq, u as u32, j as u32)));
    }

    /// User `u`'s next token enters at `t0`: the regions without producers are ready.
    fn enter(&mut self, u: usize, t0: f64, inputs: &[Vec<Input>], start: &[f64]) {
        self.next_id += 1;
        self.token[u] = self.next_id;
        self.jobs_left[u] = inputs.len();
        for (j, ins) in inputs.iter().enumerate() {
            self.left[u][j] = ins.len();
            self.ready[u][j] = t0;
            if ins.is_empty() {
                self.push(t0 + start[j], u, j);
            }
        }
    }
}

/// A total order on finite times for the heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f64);
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ordered {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

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
//! Must not: run an engine, or accept a step that did not finish (it takes a
//! [`FinishedSim`]).

use crate::result::FinishedSim;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wafer_ir::{Occupancy, Program};

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
/// not full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamedPrefill {
    pub prompt: u64,
    /// Prompt tokens of each sequence per step.
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
        chunk,
        step_cycles: s.step_cycles,
        bottleneck_cycles: s.bottleneck_cycles,
        bottleneck: s.bottleneck,
        ttft_cycles: ttft,
        ttft_us: ttft / hz * 1e6,
        prompt_tokens_per_s: (prompt * p.batch) as f64 / (ttft / hz),
    }
}

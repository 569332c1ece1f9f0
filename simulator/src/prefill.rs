//! The gemm way to the first token, from the simulator's side: the fastest
//! of [`wafer_cost::prefill`]'s schedules and block sizes as a
//! [`StreamedPrefill`] beside the streamed way ([`gemm_prefill`]), and a
//! check of its pipelined closed form, block by block ([`replay_gemm_prefill`]).
//!
//! Must not: price anything itself (every cycle comes from the cost crate's
//! [`GemmPlan`]) or change a program.

use crate::steady::{PrefillWay, StreamedPrefill};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use wafer_cost::{GemmPlan, GemmSchedule};
use wafer_ir::{Program, ProgramInfo};

/// The gemm way's fastest schedule and block size for `prompt` tokens of
/// each sequence on `p` (the closed form [`wafer_cost::search_gemm_prefill`],
/// blocks of up to `max_tile` tokens), as a [`StreamedPrefill`]
/// (`step_cycles`: the fill and the tail; `bottleneck_cycles`: cycles per
/// block), with every block size tried and why no larger one fitted.
pub fn gemm_prefill(
    p: &Program,
    info: &ProgramInfo,
    prompt: u64,
    max_tile: u64,
) -> Result<(StreamedPrefill, wafer_cost::GemmSearch), wafer_cost::GemmPrefillError> {
    let search = wafer_cost::search_gemm_prefill(p, info, prompt, max_tile)?;
    let g = &search.best;
    let hz = p.arch.clock_ghz * 1e9;
    let s = StreamedPrefill {
        prompt: g.prompt,
        way: match g.schedule {
            wafer_cost::GemmSchedule::Pipelined => PrefillWay::Gemm,
            wafer_cost::GemmSchedule::LayerByLayer => PrefillWay::GemmLayers,
            wafer_cost::GemmSchedule::Cannon => PrefillWay::GemmCannon,
        },
        chunk: g.tile_m,
        step_cycles: g.fill_cycles + g.tail_cycles,
        bottleneck_cycles: g.block_cycles,
        bottleneck: g.bottleneck.clone(),
        ttft_cycles: g.ttft_cycles,
        ttft_us: g.ttft_cycles / hz * 1e6,
        prompt_tokens_per_s: (g.prompt * p.batch) as f64 / (g.ttft_cycles / hz),
    };
    Ok((s, search))
}

/// A pipelined [`GemmPlan`] played block by block: every (block, region)
/// a job that waits for its inputs (each route a FIFO link held for the
/// block's bytes; the system link between two wafers one FIFO for all the
/// routes crossing it); then each cell of PEs it covers takes it when free
/// — of the blocks waiting for a cell, the oldest first (then program
/// order), as a PE would order its ready tasks — and holds it for the
/// region's step; the output leaves the region's latency after its last
/// cell started (its PEs need not start together, the reduction waits for
/// the last). The last block's tail regions (the LM head) run last.
///
/// What it checks of the closed form: that the busiest PEs' summed steps
/// (or a route's, or a system link's) are the only bound once the pipeline
/// is full, and that on PEs several layers share, blocks queueing for them
/// do not starve each other into a slower pace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmReplay {
    pub blocks: u64,
    pub ttft_cycles: f64,
    /// `ttft_cycles` over the closed form's.
    pub vs_closed_form: f64,
}

/// Why a replay was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GemmReplayError {
    #[error("a replay of {blocks} blocks over {regions} regions is {jobs} jobs; at most {max} are allowed")]
    TooLarge { blocks: u64, regions: u64, jobs: u64, max: u64 },
    #[error("the layer-by-layer and Cannon schedules run one region at a time: their closed form is the replay")]
    NotPipelined,
    #[error(transparent)]
    Plan(#[from] wafer_cost::GemmPrefillError),
}

/// [`replay_gemm_prefill`] of `prompt` tokens of each sequence on `p` in
/// pipelined blocks of `tile_m` (the plan made by [`wafer_cost::gemm_plan`]).
pub fn replay_gemm(p: &Program, info: &ProgramInfo, prompt: u64, tile_m: u64) -> Result<GemmReplay, GemmReplayError> {
    replay_gemm_prefill(&wafer_cost::gemm_plan(p, info, prompt, tile_m, GemmSchedule::Pipelined)?)
}

/// Most jobs (blocks × regions) [`replay_gemm_prefill`] plays.
pub const MAX_GEMM_REPLAY_JOBS: u64 = 1 << 24;

/// [`GemmReplay`] of a pipelined plan.
pub fn replay_gemm_prefill(plan: &GemmPlan) -> Result<GemmReplay, GemmReplayError> {
    if plan.schedule != GemmSchedule::Pipelined {
        return Err(GemmReplayError::NotPipelined);
    }
    let n = plan.regions.len();
    let blocks = plan.blocks.max(1);
    let jobs = blocks.saturating_mul(n as u64);
    if jobs > MAX_GEMM_REPLAY_JOBS {
        return Err(GemmReplayError::TooLarge { blocks, regions: n as u64, jobs, max: MAX_GEMM_REPLAY_JOBS });
    }
    let (b_n, n_u) = (blocks as usize, n);
    let consumers: Vec<Vec<(usize, usize)>> = {
        let mut c = vec![Vec::new(); n];
        for (i, r) in plan.regions.iter().enumerate() {
            for (k, x) in r.inputs.iter().enumerate() {
                c[x.src].push((i, k));
            }
        }
        c
    };
    let cells = plan.cell_busy.len();
    let mut route_free: Vec<Vec<f64>> = plan.regions.iter().map(|r| vec![0.0; r.inputs.len()]).collect();
    let mut system_free: BTreeMap<(u32, u32), f64> = BTreeMap::new();
    let mut pending: Vec<u32> = vec![0; b_n * n_u];
    let mut ready = vec![0.0f64; b_n * n_u];
    let mut left: Vec<u32> = vec![0; b_n * n_u];
    let mut last_start = vec![0.0f64; b_n * n_u];
    // Per cell: whether its PEs are idle, and the blocks waiting for them,
    // oldest first (then program order).
    let mut idle = vec![true; cells];
    let mut queue: Vec<BinaryHeap<Reverse<(u64, usize)>>> = vec![BinaryHeap::new(); cells];
    // Events in time order (cycles are non-negative, so their bit patterns
    // sort as the values); at one time, outputs, then arrivals, then cells
    // freed (which then pick among everything that arrived).
    const OUTPUT: u8 = 0;
    const ARRIVAL: u8 = 1;
    const FREED: u8 = 2;
    let mut heap: BinaryHeap<Reverse<(u64, u8, u64, usize)>> = BinaryHeap::new();
    for b in 0..b_n {
        for (i, r) in plan.regions.iter().enumerate() {
            let j = b * n_u + i;
            pending[j] = r.inputs.len() as u32;
            // Tail regions run for the last block only.
            if r.tail && b + 1 < b_n {
                pending[j] = u32::MAX;
            }
            if pending[j] == 0 {
                heap.push(Reverse((0f64.to_bits(), ARRIVAL, b as u64, i)));
            }
        }
    }
    // Cell `c` takes its oldest waiting block at `now`.
    let start_on = |c: usize,
                    now: f64,
                    queue: &mut Vec<BinaryHeap<Reverse<(u64, usize)>>>,
                    idle: &mut Vec<bool>,
                    left: &mut Vec<u32>,
                    last_start: &mut Vec<f64>,
                    heap: &mut BinaryHeap<Reverse<(u64, u8, u64, usize)>>| {
        let Some(Reverse((b, i))) = queue[c].pop() else { return };
        let r = &plan.regions[i];
        let j = b as usize * n_u + i;
        idle[c] = false;
        heap.push(Reverse(((now + r.step).to_bits(), FREED, 0, c)));
        last_start[j] = last_start[j].max(now);
        left[j] -= 1;
        if left[j] == 0 {
            heap.push(Reverse(((last_start[j] + r.latency).to_bits(), OUTPUT, b, i)));
        }
    };
    let mut ttft = 0.0f64;
    while let Some(Reverse((t, kind, b, i))) = heap.pop() {
        let now = f64::from_bits(t);
        match kind {
            FREED => {
                idle[i] = true;
                start_on(i, now, &mut queue, &mut idle, &mut left, &mut last_start, &mut heap);
            }
            ARRIVAL => {
                let r = &plan.regions[i];
                let j = b as usize * n_u + i;
                if r.cells.is_empty() {
                    heap.push(Reverse(((now + r.latency).to_bits(), OUTPUT, b, i)));
                    continue;
                }
                left[j] = r.cells.len() as u32;
                last_start[j] = now;
                for &c in &r.cells {
                    queue[c].push(Reverse((b, i)));
                    if idle[c] {
                        start_on(c, now, &mut queue, &mut idle, &mut left, &mut last_start, &mut heap);
                    }
                }
            }
            _ => {
                ttft = ttft.max(now);
                for &(d, k) in &consumers[i] {
                    let jd = b as usize * n_u + d;
                    if pending[jd] == u32::MAX {
                        continue;
                    }
                    let x = &plan.regions[d].inputs[k];
                    let link = match x.system_link {
                        Some(l) => system_free.entry(l).or_insert(0.0),
                        None => &mut route_free[d][k],
                    };
                    let send = now.max(*link);
                    *link = send + x.held;
                    ready[jd] = ready[jd].max(send + x.latency);
                    pending[jd] -= 1;
                    if pending[jd] == 0 {
                        heap.push(Reverse((ready[jd].to_bits(), ARRIVAL, b, d)));
                    }
                }
            }
        }
    }
    let closed = plan.closed_form().ttft_cycles;
    Ok(GemmReplay { blocks, ttft_cycles: ttft, vs_closed_form: ttft / closed.max(f64::MIN_POSITIVE) })
}

//! A prompt run as weight-stationary GEMMs over a decode mapping's resident
//! weights, in blocks pipelined through the layers: the closed form of the
//! "gemm" way to the first token.
//!
//! Owns: [`gemm_prefill`] (and [`search_gemm_prefill`] over block sizes),
//! the time to first token of `prompt` tokens of each sequence when every
//! region of a verified decode program takes the prompt in blocks of
//! `tile_m` tokens of one sequence, one block after the other, on its own
//! PEs and weights, and every attention region writes each block's K and V
//! at the PEs that hold those positions in the decode layout (so decode
//! reads them where it always does). Nothing is moved or copied.
//!
//! The GEMM. A Gemv region of `h × w` PEs holds `W` in `tile_k × tile_n`
//! tiles. For a block, each column's slice of the block's inputs is
//! multicast down the column (as in decode), every PE multiplies it by its
//! tile (a `tile_m`-row GEMM: the cheaper of MeshGEMV's AXPYs and MeshGEMM's
//! calibrated mapped loop, [`crate::timing::gemv_compute`]) and the partial
//! sums reduce along the row by the region's own reduction. SUMMA's
//! structure with `B` stationary, rather than Cannon's (`Work::Gemm`): a
//! Cannon `B` tile in flight needs a spare weight tile on every PE, which a
//! decode mapping whose weights fill its SRAM has no room for when every
//! region has a block in flight ([`GemmSchedule::Cannon`] runs square
//! regions so, one region at a time, where the spare fits). The first
//! block crosses a region in the decode step's closed form at `tile_m` rows
//! ([`crate::region_cost_rows`]); after it, a PE takes the next block as
//! soon as it has computed and added the last one — the partials and inputs
//! in transit are the fabric's, on the region's colors — so, per block, a
//! PE is *busy* for its product, the add of the partial that streams in
//! (a task of its own), the epilogue and the input norm's passes. Its
//! buffers hold this block's input slice and the next one's, its partial
//! and the one streaming in.
//!
//! An attention region takes a block's queries, K and V; each PE of the head
//! block scores the block's queries against the positions it holds
//! ([`crate::timing::attention_compute`] over `tile_m` query rows sharing the
//! keys), combines its partial softmax state with the one streaming in and
//! stores the block's K and V at the positions' PEs.
//!
//! The blocks flow through every layer at once (the regions form a
//! pipeline), so on a PE several regions share every region has a block in
//! flight: their buffers are all live (summed, where a decode step's turns
//! reuse one scratch) and their busy times add up per block. With `T` the
//! first block's trip to the last layer's output and `B` the busiest
//! resource's cycles per block (a PE; a route's block over its lanes on one
//! link; a system link between wafers):
//!
//! `ttft = T + (blocks − 1) · B + tail`,
//!
//! the tail being the LM head and sampling of each sequence's last token (a
//! decode Gemv of one row). That is [`GemmSchedule::Pipelined`]; where its
//! summed buffers do not fit, [`GemmSchedule::LayerByLayer`] runs one region
//! at a time over every block, and [`GemmSchedule::Cannon`] does so with
//! square regions as Cannon GEMMs over the whole prompt. The plan
//! ([`gemm_plan`]) is what the closed form prices and the simulator's
//! block-by-block replay plays.
//!
//! What it leaves out (stated, not hidden): contention between routes on
//! shared links inside a wafer (each route's busiest link is its own); the
//! prompt tasks' code, assumed to fit the per-PE code reserve the decode
//! tasks use; causality's savings (the busiest attention PE holds the
//! earliest positions, which every block attends, so it is priced over all
//! it holds); mixture-of-experts programs (refused: a block's tokens would
//! spread over experts). The values are the chunk path's (the same
//! products over the same tiles, checked against the dense reference by
//! the functional engine); only the schedule differs. Must not: change the
//! program, run an engine, or look at figures measured end to end.

use crate::region::region_cost_rows;
use crate::timing::{
    add_partial, attention_combine, attention_compute, elementwise, gemm, gemv_compute, inter_wafer, message,
    serialization,
};
use wafer_ir::{Occupancy, Program, ProgramInfo, Rect, RouteKind, Work};

/// How the prompt's blocks go through the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GemmSchedule {
    /// Every layer has a block in flight: the regions form a pipeline, the
    /// busiest resource sets the pace, and a PE holds the tiles of every
    /// region on it at once.
    Pipelined,
    /// One region at a time takes every block, then the next region: a PE
    /// holds one region's tiles (regions stacked on it reuse them, as a
    /// decode step's turns do), and the prompt's activations wait between
    /// regions, staged in whatever SRAM the mapping leaves free, idle PEs
    /// included (the residual stream and the widest output, `2 · rows ·
    /// width` values; a block's input crosses its route's links twice, to
    /// the staging PEs and back). What a mapping whose
    /// layers share PEs can still run: it loses little there, its layers
    /// could not overlap anyway.
    LayerByLayer,
    /// Layer by layer, with every Gemv on a square of `P × P` PEs run as a
    /// Cannon GEMM (MeshGEMM, `Work::Gemm`'s schedule, priced by the
    /// silicon-calibrated [`crate::timing::gemm`]) over the whole prompt in
    /// passes of `P · tile_m` rows: the `A` and weight tiles move, the
    /// output tile stays, so the next square GEMM finds its input where the
    /// last one left it. Needs a spare weight tile on every PE for the
    /// running region only (regions taking turns reuse it); other regions
    /// run as [`GemmSchedule::LayerByLayer`].
    Cannon,
}

impl GemmSchedule {
    pub const ALL: [GemmSchedule; 3] = [GemmSchedule::Pipelined, GemmSchedule::LayerByLayer, GemmSchedule::Cannon];
    pub fn name(self) -> &'static str {
        match self {
            GemmSchedule::Pipelined => "pipelined",
            GemmSchedule::LayerByLayer => "layer_by_layer",
            GemmSchedule::Cannon => "cannon",
        }
    }
}

/// The gemm way's time to first token, and what bounds it.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmPrefill {
    pub prompt: u64,
    pub schedule: GemmSchedule,
    /// Tokens of one sequence per block.
    pub tile_m: u64,
    /// Blocks over every sequence: `batch · ⌈prompt / tile_m⌉`.
    pub blocks: u64,
    /// Pipelined: the first block's trip to the last layer's output (`T`);
    /// layer by layer: every region's first block and input latency, summed. Cycles.
    pub fill_cycles: f64,
    /// Cycles per further block (`B`): pipelined, the busiest resource's;
    /// layer by layer, the sum over regions of each one's pace.
    pub block_cycles: f64,
    /// What sets `B` (layer by layer: the region with the largest pace).
    pub bottleneck: String,
    /// The last tokens' LM head and sampling, cycles.
    pub tail_cycles: f64,
    /// `fill + (blocks − 1) · block + tail`.
    pub ttft_cycles: f64,
}

/// Why the gemm way cannot run a prompt on a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GemmPrefillError {
    #[error(
        "{schedule} blocks of {tile_m} tokens do not fit: pe({x},{y}) on wafer {wafer} holds {need} bytes ({regions} regions from `{first}`: code {code} + weights {weights} + KV {kv} + tiles {tiles}) > {capacity} per PE",
        schedule = schedule.name()
    )]
    DoesNotFit {
        schedule: GemmSchedule,
        tile_m: u64,
        wafer: u32,
        x: u32,
        y: u32,
        regions: usize,
        first: String,
        code: u64,
        weights: u64,
        kv: u64,
        tiles: u64,
        need: u64,
        capacity: u64,
    },
    #[error(
        "layer_by_layer blocks of {tile_m} tokens: the prompt's activations between regions take {bytes} bytes, more than the {free} bytes of SRAM the mapping leaves free"
    )]
    StagingDoesNotFit { tile_m: u64, bytes: u64, free: u64 },
    #[error("a prompt of {prompt} tokens needs more positions than the {context} the mapping holds")]
    PromptTooLong { prompt: u64, context: u64 },
    #[error(
        "region `{0}` is not resident for every token (mixture of experts): the gemm way prices dense models only"
    )]
    NotDense(String),
    #[error("region `{0}` is a Cannon GEMM, not a decode region")]
    NotDecode(String),
}

/// Per-block figures of one region: cycles its PEs are busy per block of
/// the stream (`step`), the first block's latency through it, and the tile
/// bytes in flight on each of its PEs.
struct Stage {
    step: f64,
    latency: f64,
    tiles: u64,
}

fn stage(p: &Program, work: &Work, rect: Rect, tile_m: u64) -> Stage {
    let a = &p.arch;
    let (wd, ad) = (p.weight_dtype, p.act_dtype);
    // The first block's trip through the region is the decode step's closed
    // form at `tile_m` rows of one sequence.
    let latency = region_cost_rows(a, work, rect, tile_m, tile_m, wd, p.kv_dtype).total();
    let task = a.pe.task_overhead_cycles as u64;
    match *work {
        Work::Gemv { tile_n, tile_k, glu, norm, epilogue_ops, acc, .. } => {
            // Busy per block: the local product, the add of the partial that
            // streams in from the row neighbour (a task of its own), the
            // epilogue at the row's root and, with an input norm, a pass to
            // square the slice and one to scale it.
            let compute = gemv_compute(a, tile_n, tile_k, tile_m, wd, acc);
            let add = task + add_partial(a, tile_m * tile_n, acc);
            let out = if glu { tile_n / 2 } else { tile_n };
            let mut extra = elementwise(a, tile_m * out, epilogue_ops);
            if norm {
                extra += 2 * elementwise(a, tile_m * tile_k, 1);
            }
            Stage {
                step: (compute + add + extra) as f64,
                latency,
                // This block's input slice and the next one's arriving; the
                // own partial and the one streaming in; the norm's row sums.
                tiles: 2 * ad.bytes_for(tile_m * tile_k) + 2 * acc.bytes_for(tile_m * tile_n) + 8 * tile_m,
            }
        }
        Work::Attention { group, head_dim, pos_per_pe, .. } => {
            let compute = attention_compute(a, group, head_dim, pos_per_pe, tile_m, tile_m, p.kv_dtype);
            let comb = task + attention_combine(a, group, head_dim, tile_m);
            let append = elementwise(a, 2 * tile_m * head_dim, 1);
            // A block is one sequence's: a PE of a sub-block split by sequence
            // sees only its sequences' blocks.
            let share = work.seqs_per_pe(p.batch) as f64 / p.batch.max(1) as f64;
            Stage {
                step: (compute + comb + append) as f64 * share,
                latency,
                // The block's queries, its scores, its partial states and the
                // one streaming in (the decode buffers at `tile_m` rows).
                tiles: 2 * ad.bytes_for(group * head_dim * tile_m)
                    + 4 * group * pos_per_pe * tile_m
                    + 2 * 4 * group * (head_dim + 2) * tile_m,
            }
        }
        Work::Embedding { hidden, .. } => {
            // The block's rows leave the PEs holding their tokens straight from
            // the table (no buffer), in parallel where they are on different
            // PEs (assumed spread over the table).
            let per_pe = tile_m.div_ceil(rect.pes().max(1));
            let t = per_pe as f64 * message(a, 0, ad.bytes_for(hidden)) as f64;
            Stage { step: t, latency: t, tiles: 0 }
        }
        Work::Gemm { .. } => Stage { step: 0.0, latency: 0.0, tiles: 0 },
    }
}

/// A square Gemv run as Cannon GEMMs over `rows` prompt rows in passes of
/// `P · tile_m`: its time (each pass `timing::gemm` — the calibrated step
/// overhead, loop and mapped multiply-add, the tile moves' exposed part —
/// plus the epilogue and the input norm's passes) and the `A`, spare-`A`
/// and `C` tile bytes per PE (the spare weight tile is added by the caller).
/// `None` for anything else.
fn cannon(p: &Program, work: &Work, rect: Rect, tile_m: u64, rows: u64) -> Option<(f64, u64)> {
    let Work::Gemv { tile_n, tile_k, glu, norm, epilogue_ops, acc, argmax: false, mac: true, .. } = *work else {
        return None;
    };
    if rect.w != rect.h {
        return None;
    }
    let a = &p.arch;
    let grid = rect.w as u64;
    let passes = rows.div_ceil(grid * tile_m).max(1);
    let (compute, moves) = gemm(a, grid, tile_m, tile_k, tile_n, p.weight_dtype, acc);
    let out = if glu { tile_n / 2 } else { tile_n };
    let mut per_pass = compute + moves + elementwise(a, tile_m * out, epilogue_ops);
    if norm {
        // Each PE squares its slice of the rows, the sums meet along the
        // row, and each PE scales its `A` tile.
        per_pass += 2 * elementwise(a, tile_m * tile_k, 1) + message(a, rect.w.saturating_sub(1), 8 * tile_m);
    }
    let tiles = 2 * p.act_dtype.bytes_for(tile_m * tile_k) + acc.bytes_for(tile_m * tile_n);
    Some(((passes * per_pass) as f64, tiles))
}

/// Lines a region's output leaves on (Gemv: one per PE row; attention: one
/// per head sub-block; an embedding: one per PE, at most one per token of a block).
fn exit_lanes(work: &Work, rect: Rect, tile_m: u64) -> u64 {
    match work {
        Work::Gemv { .. } => rect.h as u64,
        Work::Attention { .. } => work.attn_blocks(),
        Work::Embedding { .. } => rect.pes().min(tile_m),
        Work::Gemm { .. } => 1,
    }
}

/// Lines a region takes its input on (Gemv: one per PE column, each `A`
/// column's top; attention: one per head sub-block).
fn entry_lanes(work: &Work, rect: Rect) -> u64 {
    match work {
        Work::Gemv { .. } => rect.w as u64,
        Work::Attention { .. } => work.attn_blocks(),
        Work::Embedding { .. } | Work::Gemm { .. } => 1,
    }
}

/// Hops between the nearest PEs of two rectangles.
fn gap(a: Rect, b: Rect) -> u32 {
    let d = |lo0: u32, n0: u32, lo1: u32, n1: u32| {
        if lo0 + n0 <= lo1 {
            lo1 - (lo0 + n0 - 1)
        } else if lo1 + n1 <= lo0 {
            lo0 - (lo1 + n1 - 1)
        } else {
            0
        }
    };
    d(a.x, a.w, b.x, b.w) + d(a.y, a.h, b.y, b.h)
}

/// Whether a region runs only for each sequence's last token (the LM head
/// and sampling: a Gemv that arg-maxes).
fn is_tail(work: &Work) -> bool {
    matches!(work, Work::Gemv { argmax: true, .. })
}

/// The gemm way's [`GemmPrefill`] of `prompt` tokens of each sequence in
/// blocks of `tile_m` under `schedule`, on the mapping of `p` (a verified
/// decode step whose context holds the prompt): [`gemm_plan`]'s closed
/// form. Errors when the blocks' tiles do not fit.
pub fn gemm_prefill(
    p: &Program,
    info: &ProgramInfo,
    prompt: u64,
    tile_m: u64,
    schedule: GemmSchedule,
) -> Result<GemmPrefill, GemmPrefillError> {
    Ok(gemm_plan(p, info, prompt, tile_m, schedule)?.closed_form())
}

/// What every region and route costs per block of `tile_m` tokens under
/// `schedule` on `p` — the plan [`GemmPlan::closed_form`] prices and the
/// simulator's block-by-block replay plays — after the SRAM checks.
pub fn gemm_plan(
    p: &Program,
    _info: &ProgramInfo,
    prompt: u64,
    tile_m: u64,
    schedule: GemmSchedule,
) -> Result<GemmPlan, GemmPrefillError> {
    let (prompt, tile_m) = (prompt.max(1), tile_m.clamp(1, prompt.max(1)));
    if prompt > p.context {
        return Err(GemmPrefillError::PromptTooLong { prompt, context: p.context });
    }
    let a = &p.arch;
    for r in &p.regions {
        if !r.active {
            return Err(GemmPrefillError::NotDense(r.name.clone()));
        }
        if matches!(r.work, Work::Gemm { .. }) {
            return Err(GemmPrefillError::NotDecode(r.name.clone()));
        }
    }
    let layered = schedule != GemmSchedule::Pipelined;
    let blocks = p.batch.max(1) * prompt.div_ceil(tile_m);
    let mut stages: Vec<Stage> = p.regions.iter().map(|r| stage(p, &r.work, r.rect, tile_m)).collect();
    // Cannon: every square Gemv's whole-prompt time and tiles.
    let mut whole: Vec<Option<f64>> = vec![None; p.regions.len()];
    if schedule == GemmSchedule::Cannon {
        let rows = p.batch.max(1) * prompt;
        for (i, r) in p.regions.iter().enumerate() {
            if let Some((t, tiles)) = cannon(p, &r.work, r.rect, tile_m, rows) {
                whole[i] = Some(t);
                stages[i].tiles = tiles.saturating_add(r.sram.weights);
            }
        }
    }
    // SRAM: what stays resident plus the live tiles, per cell of PEs.
    let occ = Occupancy::new(&p.regions.iter().map(|r| (r.wafer, r.rect)).collect::<Vec<_>>());
    let cells = occ.cells();
    // Layer by layer, the prompt's activations wait between regions: the
    // residual stream and the widest output of every row.
    let staged_total: u128 = if layered {
        let width = p.regions.iter().map(|r| r.work.out_elems().max(r.work.in_elems())).max().unwrap_or(0);
        let values = 2u128 * (p.batch.max(1) as u128 * prompt as u128) * width as u128;
        p.act_dtype.bytes_for(values.min(u64::MAX as u128) as u64) as u128
    } else {
        0
    };
    let mut need = vec![(0u64, 0u64, 0u64, 0u64, 0usize, usize::MAX); cells.len()];
    let mut busy = vec![0.0f64; cells.len()];
    for (i, r) in p.regions.iter().enumerate() {
        let live = !is_tail(&r.work);
        for c in occ.cells_of(r.wafer, r.rect) {
            let n = &mut need[c];
            n.0 = n.0.max(r.sram.code);
            n.1 = n.1.saturating_add(r.sram.weights);
            n.2 = n.2.saturating_add(r.sram.kv);
            // A tail region runs once, after every block, with its decode buffers.
            let tiles = if live { stages[i].tiles } else { r.sram.buffers };
            n.3 = if layered { n.3.max(tiles) } else { n.3.saturating_add(tiles) };
            if live {
                busy[c] += stages[i].step;
            }
            n.4 += 1;
            n.5 = n.5.min(i);
        }
    }
    let capacity = a.pe.sram_bytes;
    let mut free: u128 = 0;
    for (c, &(code, weights, kv, tiles, regions, first)) in need.iter().enumerate() {
        let total = code.saturating_add(weights).saturating_add(kv).saturating_add(tiles);
        if total > capacity {
            let cell = cells[c];
            return Err(GemmPrefillError::DoesNotFit {
                schedule,
                tile_m,
                wafer: cell.wafer,
                x: cell.rect.x,
                y: cell.rect.y,
                regions,
                first: p.regions[first].name.clone(),
                code,
                weights,
                kv,
                tiles,
                need: total,
                capacity,
            });
        }
        free += (capacity - total) as u128 * cells[c].rect.pes() as u128;
    }
    if staged_total > 0 {
        // Staged wherever there is room: the PEs' free SRAM, and the PEs of
        // the program's wafers no region uses (less their code reserve).
        let mesh = a.mesh_width as u128 * a.mesh_height as u128 * p.wafers.max(1) as u128;
        let idle = mesh.saturating_sub(occ.pes() as u128);
        free += idle * capacity.saturating_sub(a.pe.sram_reserved_bytes) as u128;
        if staged_total > free {
            return Err(GemmPrefillError::StagingDoesNotFit {
                tile_m,
                bytes: staged_total.min(u64::MAX as u128) as u64,
                free: free.min(u64::MAX as u128) as u64,
            });
        }
    }
    // Routes between regions: a block's share of each on its lanes (what
    // it holds its busiest link for), and the first block's latency.
    // Collectives are the decode step's, the region's own reductions here.
    let rows = p.rows().max(1);
    let n = p.regions.len();
    let mut arrivals: Vec<Vec<(usize, f64, f64)>> = vec![Vec::new(); n];
    for rt in &p.routes {
        if !matches!(rt.kind, RouteKind::Forward | RouteKind::Residual) {
            continue;
        }
        let (si, di) = (rt.src.0 as usize, rt.dst.0 as usize);
        let (s, d) = (&p.regions[si], &p.regions[di]);
        let block_bytes = (rt.bytes as u128 * tile_m as u128).div_ceil(rows as u128).min(u64::MAX as u128) as u64;
        let (held, latency) = if s.wafer != d.wafer {
            let t = inter_wafer(a, block_bytes) as f64;
            (t, t)
        } else {
            let lanes = exit_lanes(&s.work, s.rect, tile_m).min(entry_lanes(&d.work, d.rect)).max(1);
            let per_lane = block_bytes.div_ceil(lanes);
            (serialization(a, per_lane) as f64, message(a, gap(s.rect, d.rect), per_lane) as f64)
        };
        arrivals[di].push((si, latency, held));
    }
    let tail_of = |i: usize| {
        let r = &p.regions[i];
        region_cost_rows(a, &r.work, r.rect, p.batch, 1, p.weight_dtype, p.kv_dtype).total()
    };
    let cells_of: Vec<Vec<usize>> = p.regions.iter().map(|r| occ.cells_of(r.wafer, r.rect)).collect();
    let regions = (0..n)
        .map(|i| {
            let r = &p.regions[i];
            let tail = is_tail(&r.work);
            PlanRegion {
                name: r.name.clone(),
                step: if tail { 0.0 } else { stages[i].step },
                latency: if tail { tail_of(i) } else { stages[i].latency },
                tail,
                whole: whole[i],
                cells: cells_of[i].clone(),
                inputs: arrivals[i]
                    .iter()
                    // A Cannon GEMM's output tiles stay where the next square
                    // GEMM on the same PEs takes its input: nothing moves.
                    .filter(|&&(src, _, _)| {
                        !(whole[i].is_some() && whole[src].is_some() && p.regions[src].rect == r.rect)
                            || p.regions[src].wafer != r.wafer
                    })
                    .map(|&(src, latency, held)| {
                        let (sw, dw) = (p.regions[src].wafer, r.wafer);
                        PlanInput { src, latency, held, system_link: (sw != dw).then_some((sw, dw)) }
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(GemmPlan {
        prompt,
        schedule,
        tile_m,
        blocks,
        regions,
        cell_regions: need.iter().map(|n| (n.4, n.5)).collect(),
        cell_busy: busy,
    })
}

/// A region of a [`GemmPlan`].
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRegion {
    pub name: String,
    /// Cycles its PEs are busy per block (0 for a tail region).
    pub step: f64,
    /// The first block's trip through it (a tail region: its one run, for
    /// each sequence's last token).
    pub latency: f64,
    /// Runs once, for each sequence's last token (the LM head and sampling).
    pub tail: bool,
    /// Cannon schedule: the region's time for the whole prompt (a square
    /// Gemv run as Cannon GEMMs), in place of its per-block figures.
    pub whole: Option<f64>,
    /// Its cells of PEs (ids of the program's `Occupancy`).
    pub cells: Vec<usize>,
    /// Its inputs.
    pub inputs: Vec<PlanInput>,
}

/// A route into a region of a [`GemmPlan`].
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// The producing region (index into [`GemmPlan::regions`]).
    pub src: usize,
    /// A block's trip from the producer's output to this region.
    pub latency: f64,
    /// Cycles a block holds the route's busiest link.
    pub held: f64,
    /// `(from, to)` when the route crosses the system link between wafers.
    pub system_link: Option<(u32, u32)>,
}

/// The gemm way's costs per block, region by region, in program order.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmPlan {
    pub prompt: u64,
    pub schedule: GemmSchedule,
    pub tile_m: u64,
    pub blocks: u64,
    pub regions: Vec<PlanRegion>,
    /// Per cell: how many regions cover it and the first of them.
    pub cell_regions: Vec<(usize, usize)>,
    /// Per cell: the summed busy cycles per block of the regions on it.
    pub cell_busy: Vec<f64>,
}

impl GemmPlan {
    /// The closed form: `fill + (blocks − 1) · block + tail`.
    pub fn closed_form(&self) -> GemmPrefill {
        let regions = &self.regions;
        let n = regions.len();
        let (fill, block, what, tail) = if self.schedule != GemmSchedule::Pipelined {
            // One region after another, each over every block at its own pace:
            // its PEs' step or its busiest input link's block, whichever is longer.
            let (mut fill, mut block, mut tail) = (0.0f64, 0.0f64, 0.0f64);
            let (mut top, mut what) = (0.0f64, String::from("nothing"));
            for r in regions {
                let input = r.inputs.iter().map(|x| x.latency).fold(0.0, f64::max);
                if r.tail {
                    tail = tail.max(input + r.latency);
                    continue;
                }
                // A block's input left its producer for the staging PEs and
                // comes back from them: twice its bytes on the route's links.
                let link = r.inputs.iter().map(|x| 2.0 * x.held).fold(0.0, f64::max);
                if let Some(t) = r.whole {
                    // Its input streams in while it computes: the longer of the two.
                    let t = t.max(link * self.blocks as f64);
                    fill += input + t;
                    if t / self.blocks as f64 > top {
                        top = t / self.blocks as f64;
                        what = format!("region {} (Cannon)", r.name);
                    }
                    continue;
                }
                let pace = link.max(r.step);
                fill += input + r.latency;
                block += pace;
                if pace > top {
                    top = pace;
                    what = format!("region {}", r.name);
                }
            }
            (fill, block, what, tail)
        } else {
            // The busiest PEs, routes and system links.
            let (mut worst, mut what) = (0.0f64, String::from("nothing"));
            for (c, &b) in self.cell_busy.iter().enumerate() {
                if b > worst {
                    worst = b;
                    let (count, first) = self.cell_regions[c];
                    what = if count == 1 {
                        format!("region {}", regions[first].name)
                    } else {
                        format!("{count} regions sharing PEs (from {})", regions[first].name)
                    };
                }
            }
            let mut link: std::collections::BTreeMap<(u32, u32), f64> = std::collections::BTreeMap::new();
            for r in regions {
                for x in &r.inputs {
                    match x.system_link {
                        Some(l) => *link.entry(l).or_default() += x.held,
                        None if x.held > worst => {
                            worst = x.held;
                            what = format!("route {} -> {}", regions[x.src].name, r.name);
                        }
                        None => {}
                    }
                }
            }
            for (&(x, y), &t) in &link {
                if t > worst {
                    worst = t;
                    what = format!("the system link from wafer {x} to wafer {y}");
                }
            }
            // The first block's trip, in program order (sources come first).
            let (mut ready, mut out) = (vec![0.0f64; n], vec![0.0f64; n]);
            let (mut fill, mut tail) = (0.0f64, 0.0f64);
            for (i, r) in regions.iter().enumerate() {
                for x in &r.inputs {
                    ready[i] = ready[i].max(out[x.src] + x.latency);
                }
                out[i] = ready[i] + r.latency;
                if r.tail {
                    tail = tail.max(r.latency);
                    fill = fill.max(ready[i]);
                } else {
                    fill = fill.max(out[i]);
                }
            }
            (fill, worst, what, tail)
        };
        let block = block.max(f64::MIN_POSITIVE);
        GemmPrefill {
            prompt: self.prompt,
            schedule: self.schedule,
            tile_m: self.tile_m,
            blocks: self.blocks,
            fill_cycles: fill,
            block_cycles: block,
            bottleneck: what,
            tail_cycles: tail,
            ttft_cycles: fill + (self.blocks - 1) as f64 * block + tail,
        }
    }
}

/// Every schedule and block size [`search_gemm_prefill`] tried, the
/// fastest, and why no larger block fitted.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmSearch {
    pub best: GemmPrefill,
    /// `(schedule, tile_m, ttft cycles)` of every block size tried, in order.
    pub tried: Vec<(GemmSchedule, u64, f64)>,
    /// Per schedule, the first block size refused (its tiles do not fit), if one was.
    pub limits: Vec<GemmPrefillError>,
}

/// The fastest [`GemmPrefill`] over the schedules (Cannon only where a
/// region is square: elsewhere it is layer by layer) and blocks of 1, 2, 4,
/// … tokens up to the prompt or `max_tile`, each schedule stopping at the
/// first block whose tiles do not fit (a larger one needs more). Errors,
/// with the last schedule's reason, when not even one-token blocks fit.
pub fn search_gemm_prefill(
    p: &Program,
    info: &ProgramInfo,
    prompt: u64,
    max_tile: u64,
) -> Result<GemmSearch, GemmPrefillError> {
    let top = prompt.max(1).min(max_tile.max(1));
    let (mut best, mut tried, mut limits): (Option<GemmPrefill>, Vec<_>, Vec<_>) = (None, Vec::new(), Vec::new());
    // Cannon differs from layer by layer only on square regions.
    let squares = p.regions.iter().any(|r| cannon(p, &r.work, r.rect, 1, 1).is_some());
    for schedule in GemmSchedule::ALL {
        if schedule == GemmSchedule::Cannon && !squares {
            continue;
        }
        let mut m = 1u64;
        loop {
            match gemm_prefill(p, info, prompt, m, schedule) {
                Ok(g) => {
                    tried.push((schedule, m, g.ttft_cycles));
                    if best.as_ref().is_none_or(|b| g.ttft_cycles < b.ttft_cycles) {
                        best = Some(g);
                    }
                }
                Err(e @ (GemmPrefillError::DoesNotFit { .. } | GemmPrefillError::StagingDoesNotFit { .. })) => {
                    limits.push(e);
                    break;
                }
                Err(e) => return Err(e),
            }
            if m >= top {
                break;
            }
            m = (m * 2).min(top);
        }
    }
    match best {
        Some(best) => Ok(GemmSearch { best, tried, limits }),
        None => Err(limits.pop().expect("every schedule was refused")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_hops_between_the_nearest_pes() {
        let a = Rect { x: 0, y: 0, w: 4, h: 2 };
        assert_eq!(gap(a, Rect { x: 4, y: 0, w: 2, h: 2 }), 1);
        assert_eq!(gap(a, Rect { x: 6, y: 5, w: 2, h: 2 }), 3 + 4);
        assert_eq!(gap(a, Rect { x: 1, y: 1, w: 2, h: 2 }), 0);
    }
}

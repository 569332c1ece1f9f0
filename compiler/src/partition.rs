//! Pass `partition`: how many PEs each region gets, on which wafer, and how
//! its work is tiled over them — the mapping search.
//!
//! Owns: (1) minimal SRAM-feasible areas and the wafer count; (2) cutting the
//! layers into contiguous pipeline stages, one per wafer; (3) per wafer, a
//! search over the strip width (the placement grid, see `place`) and, per
//! region, its height and width, reduction shape and attention rows-per-head,
//! scored by `wafer_cost::region_cost` — the closed form the analytical
//! engine adds up, so the search and the simulator price regions alike. Each distinct region kind gets the Pareto front of
//! (height, cost) shapes; a Lagrange multiplier on height, bisected, picks one
//! shape per region so that together they fill the strips (minimising Σ cost
//! under the strip-height budget). Strip widths are searched in parallel
//! (rayon) and ties break by candidate order, so the answer is the same for
//! any thread count. Must not: pick coordinates.

use crate::fuse::{Group, GroupKind};
use crate::CompileError;
use rayon::prelude::*;
use wafer_cost::region_cost;
use wafer_ir::{sram_need, ArchSpec, DType, Program, Rect, Reduce, Work};

/// Share of a wafer's PEs that regions' minimal areas may claim when the
/// layers are cut into per-wafer stages (and in capacity messages); the rest
/// absorbs strip-packing waste. A heuristic, not fitted: too high and stages
/// fail to pack (the auto search then adds wafers), too low and wafers go idle.
pub const FILL: f64 = 0.88;

/// Share of a PE's usable SRAM that resident bytes can fill once tiles are
/// rounded up and I/O buffers added: a heuristic for the minimal-area estimate
/// only; the search checks every candidate's exact SRAM need.
const SRAM_EFFICIENCY: f64 = 0.8;

/// What partitioning decided for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub wafer: u32,
    /// PEs rows and columns of the region.
    pub h: u32,
    pub w: u32,
    pub work: Work,
    /// Estimated cycles of the region (closed form) plus streaming its input and output.
    pub cost: f64,
}

/// The partitioning of a whole program.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub wafers: u32,
    /// Strip width per wafer.
    pub strip: Vec<u32>,
    pub packing: Packing,
    pub shapes: Vec<Shape>,
}

/// Dtypes and batch of the step, with the machine.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub arch: &'a ArchSpec,
    pub batch: u64,
    /// Prompt tokens per sequence every region's buffers must hold (`CompileOptions::prefill_chunk`).
    pub chunk: u64,
    pub weight: DType,
    pub act: DType,
    pub kv: DType,
    /// Accumulator dtype of every Gemv (`CompileOptions::accumulate`).
    pub acc: DType,
}

impl Ctx<'_> {
    fn probe(&self) -> Program {
        Program {
            model: String::new(),
            batch: self.batch,
            new_tokens: self.chunk,
            context: 1,
            weight_dtype: self.weight,
            act_dtype: self.act,
            kv_dtype: self.kv,
            wafers: 1,
            arch: self.arch.clone(),
            regions: vec![],
            routes: vec![],
        }
    }

    /// An empty program with this context's batch, dtypes and machine (for `sram_need`).
    pub(crate) fn probe_program(&self) -> Program {
        self.probe()
    }

    /// Closed-form cycles of `work` on `rect` (the search objective).
    pub(crate) fn region_cycles(&self, work: &Work, rect: Rect) -> f64 {
        region_cost(self.arch, work, rect, self.batch, self.weight, self.kv).total()
    }

    pub(crate) fn fits(&self, probe: &Program, work: &Work) -> bool {
        sram_need(probe, work).total() <= self.arch.pe.sram_bytes
    }

    /// SRAM bytes the group must hold (weights and KV cache), whatever its tiling.
    pub fn resident_bytes(&self, g: &Group) -> u64 {
        match g.kind {
            GroupKind::Attention { kv_heads, head_dim, positions, .. } => {
                2 * self.kv.bytes_for(kv_heads * positions * head_dim * self.batch)
            }
            _ => g.weight_bytes,
        }
    }

    /// About the smallest PE count whose tiles fit SRAM (see `SRAM_EFFICIENCY`).
    pub fn min_pes(&self, g: &Group) -> u64 {
        let usable = self.arch.usable_sram().max(1) as f64;
        let base = (self.resident_bytes(g) as f64 / (usable * SRAM_EFFICIENCY)).ceil() as u64;
        match g.kind {
            GroupKind::Attention { kv_heads, .. } => base.max(kv_heads),
            _ => base.max(1),
        }
    }
}

/// Reduction shapes tried for a line of `w` PEs.
pub(crate) fn reduce_candidates(w: u32) -> Vec<Reduce> {
    let mut v = vec![Reduce::Tree, Reduce::Chain];
    for g in [4, 8, 16, 32] {
        if g < w {
            v.push(Reduce::TwoLevel { group: g });
        }
    }
    v
}

/// MeshGEMV's two-chain shape (Gemv rows only: attention combines towards column 0):
/// one group (two chains meeting in the middle of the row) or groups of 8, 16, 32.
pub(crate) fn meet_candidates(w: u32) -> Vec<Reduce> {
    if w < 3 {
        return Vec::new();
    }
    std::iter::once(w).chain([8, 16, 32].into_iter().filter(|&g| g < w)).map(|group| Reduce::Meet { group }).collect()
}

/// Cycles to stream a region's input slice into one column head and its
/// output slice out of one row root: what its routes add on top of the region
/// cost, whatever its neighbours (the analytical engine charges the larger of
/// the two ends' backlogs per route).
pub(crate) fn io_cycles(c: &Ctx, work: &Work) -> f64 {
    let (inp, out) = match *work {
        Work::Gemv { tile_n, tile_k, glu, .. } => (tile_k, if glu { tile_n / 2 } else { tile_n }),
        Work::Attention { group, head_dim, .. } => (group * head_dim, group * head_dim),
        Work::Embedding { hidden, .. } => (0, hidden),
        // Resident operands: no route streams into or out of a gemm region.
        Work::Gemm { .. } => (0, 0),
    };
    let ser = |e: u64| wafer_cost::timing::serialization(c.arch, c.act.bytes_for(e * c.batch)) as f64;
    ser(inp) + ser(out)
}

/// One way to run a group: its rect's size, tiling and closed-form cost.
#[derive(Debug, Clone)]
struct Cand {
    h: u32,
    w: u32,
    work: Work,
    cost: f64,
}

/// Heights tried: a geometric ladder (ratio ~1.25) from 1 to `mh`.
fn height_ladder(mh: u32) -> Vec<u32> {
    let mut v = Vec::new();
    let mut h = 1.0f64;
    while (h as u32) <= mh {
        v.push(h as u32);
        h = (h * 1.25).max(h + 1.0);
    }
    v.push(mh);
    v.dedup();
    v
}

/// The Gemv work of `g` with tiles `tile_n × tile_k`, reduction `reduce` and
/// accumulator `acc`; `None` for a group that is not a Gemv.
pub(crate) fn gemv_work(g: &GroupKind, tile_n: u64, tile_k: u64, reduce: Reduce, acc: DType) -> Option<Work> {
    let GroupKind::Gemv { n, k, glu, norm, argmax, epilogue_ops, .. } = *g else { return None };
    Some(Work::Gemv { n, k, tile_n, tile_k, reduce, glu, norm, argmax, epilogue_ops, acc, mac: true, batch_chunk: 0 })
}

/// `w`, then its halvings (rounded up) down to 1: the widths a search tries.
pub(crate) fn halvings(w: u32) -> Vec<u32> {
    std::iter::successors(Some(w.max(1)), |&w| (w > 1).then(|| w.div_ceil(2))).collect()
}

/// The attention tilings of `g` on `w` columns, `rph` rows per head and the
/// head block split into `split` sub-blocks by sequence, one per reduction
/// shape; none when `split` does not divide `rph` or leaves a sequence group
/// empty, or when a sub-block's last PE would hold no position (a taller or
/// narrower block may not leave it empty).
pub(crate) fn attention_works(g: &GroupKind, w: u32, rph: u32, split: u64, batch: u64) -> Vec<Work> {
    let GroupKind::Attention { kv_heads, group, head_dim, positions, slot } = *g else { return Vec::new() };
    if split == 0 || rph as u64 % split != 0 || split > batch || batch.div_ceil(split) * (split - 1) >= batch {
        return Vec::new();
    }
    let brows = rph as u64 / split;
    let pos_per_pe = positions.div_ceil(brows * w as u64);
    if (brows > 1 || w > 1) && pos_per_pe * (brows * w as u64 - 1) >= positions {
        return Vec::new();
    }
    reduce_candidates(w)
        .into_iter()
        .map(|reduce| Work::Attention {
            kv_heads,
            group,
            head_dim,
            positions,
            slot,
            rows_per_head: rph,
            pos_per_pe,
            reduce,
            batch_split: split,
        })
        .collect()
}

/// Cached positions per PE that split head blocks are also sized to hold exactly.
const EXACT_POSITIONS: [u64; 12] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64];

/// Sequence splits of an attention head block tried at `c.batch`: 1, the
/// powers of two below the batch, and the batch itself (one sequence per
/// sub-block). Only 1 when the mapping keeps room for a prompt chunk: the
/// verifier refuses chunks on a split attention, so such a mapping would
/// break the promise of `CompileOptions::prefill_chunk`.
pub(crate) fn split_candidates(c: &Ctx) -> Vec<u64> {
    let batch = c.batch;
    if c.chunk > 1 {
        return vec![1];
    }
    let mut v: Vec<u64> = std::iter::successors(Some(1u64), |&s| (s * 2 < batch).then_some(s * 2)).collect();
    v.push(batch.max(1));
    v.dedup();
    v
}

/// The batch rows of one Gemv pass that keep a tile's partial buffers within
/// SRAM: the whole batch (0) when it fits, else the largest power of two that
/// does (at least 1); the caller checks the result fits.
pub(crate) fn gemv_chunk(c: &Ctx, probe: &Program, work: &Work) -> Work {
    let mut w = work.clone();
    if c.fits(probe, &w) {
        return w;
    }
    let mut chunk = c.batch.next_power_of_two() / 2;
    while chunk >= 1 {
        if let Work::Gemv { batch_chunk, .. } = &mut w {
            *batch_chunk = chunk;
        }
        if c.fits(probe, &w) || chunk == 1 {
            return w;
        }
        chunk /= 2;
    }
    w
}

/// Every SRAM-feasible shape of `g` no wider than the strip `ws`, pruned to
/// the Pareto front of (height, cost): taller only where it is cheaper.
fn candidates(c: &Ctx, probe: &Program, g: &GroupKind, ws: u32, mh: u32) -> Vec<Cand> {
    let mut all: Vec<Cand> = Vec::new();
    let mut push = |h: u32, w: u32, work: Work| {
        if h == 0 || h > mh || !c.fits(probe, &work) {
            return;
        }
        let cost = region_cost(c.arch, &work, Rect { x: 0, y: 0, w, h }, c.batch, c.weight, c.kv).total()
            + io_cycles(c, &work);
        all.push(Cand { h, w, work, cost });
    };
    let widths = halvings(ws);
    let ladder = height_ladder(mh);
    match *g {
        GroupKind::Gemv { n, k, align, .. } => {
            for &w in &widths {
                let tile_k = k.div_ceil(w as u64);
                if k.div_ceil(tile_k) as u32 != w {
                    continue;
                }
                let mut last_h = 0;
                for &hl in &ladder {
                    let tile_n = n.div_ceil(hl as u64).next_multiple_of(align);
                    let h = n.div_ceil(tile_n) as u32;
                    if h == last_h {
                        continue;
                    }
                    last_h = h;
                    for reduce in reduce_candidates(w).into_iter().chain(meet_candidates(w)) {
                        if let Some(work) = gemv_work(g, tile_n, tile_k, reduce, c.acc) {
                            push(h, w, gemv_chunk(c, probe, &work));
                        }
                    }
                }
            }
        }
        GroupKind::Attention { kv_heads, .. } => {
            let GroupKind::Attention { positions, .. } = *g else { unreachable!("matched above") };
            for split in split_candidates(c) {
                for rph in (1..=(mh as u64 / kv_heads) as u32).filter(|r| *r as u64 % split == 0) {
                    // A split head block is at least `split` rows tall, so its
                    // sub-blocks are short: also the widths that give each count
                    // of cached positions per PE exactly (halvings of the strip
                    // leave the last PE of a sub-block empty at most heights).
                    let mut ws_att = widths.clone();
                    if split > 1 {
                        let brows = rph as u64 / split;
                        ws_att.extend(
                            EXACT_POSITIONS
                                .iter()
                                .map(|&pp| positions.div_ceil(pp * brows))
                                .filter(|&w| w <= ws as u64)
                                .map(|w| w as u32),
                        );
                        ws_att.sort_unstable_by(|a, b| b.cmp(a));
                        ws_att.dedup();
                    }
                    for &w in &ws_att {
                        for work in attention_works(g, w, rph, split, c.batch) {
                            push(kv_heads as u32 * rph, w, work);
                        }
                    }
                }
            }
        }
        GroupKind::Embedding { vocab, hidden } => {
            for &hl in &ladder {
                let rows_per_pe = vocab.div_ceil(hl as u64 * ws as u64);
                let h = vocab.div_ceil(rows_per_pe * ws as u64) as u32;
                push(h, ws, Work::Embedding { vocab, hidden, rows_per_pe, token: vocab / 2 });
            }
        }
    }
    // Pareto front: sort by (h, cost, candidate order) and keep strictly cheaper ones.
    let mut idx: Vec<usize> = (0..all.len()).collect();
    idx.sort_by(|&a, &b| all[a].h.cmp(&all[b].h).then(all[a].cost.total_cmp(&all[b].cost)).then(a.cmp(&b)));
    let mut front: Vec<Cand> = Vec::new();
    for i in idx {
        if front.last().is_none_or(|f| all[i].cost < f.cost) {
            front.push(all[i].clone());
        }
    }
    front
}

/// The smallest per-PE SRAM any tiling of `g` needs (one output row by one
/// input column, its batch in passes of one row; one cached position of one
/// sequence per PE), with what dominates it, when even that exceeds a PE's
/// SRAM — the group cannot be mapped whatever the wafer count.
pub fn untileable(c: &Ctx, g: &Group) -> Option<(u64, &'static str)> {
    let probe = c.probe();
    let (work, what) = match g.kind {
        GroupKind::Gemv { align, .. } => {
            let mut w = gemv_work(&g.kind, align.max(1), 1, Reduce::Tree, c.acc)?;
            if let Work::Gemv { batch_chunk, .. } = &mut w {
                *batch_chunk = (c.batch > 1) as u64;
            }
            (w, "a one-column tile with its input for the whole batch and partial sums of one batch row")
        }
        GroupKind::Attention { kv_heads, group, head_dim, positions, slot } => (
            Work::Attention {
                kv_heads,
                group,
                head_dim,
                positions,
                slot,
                rows_per_head: c.batch as u32,
                pos_per_pe: 1,
                reduce: Reduce::Tree,
                batch_split: c.batch,
            },
            "one cached position of one sequence plus that sequence's query and partial softmax states",
        ),
        GroupKind::Embedding { vocab, hidden } => {
            (Work::Embedding { vocab, hidden, rows_per_pe: 1, token: 0 }, "one embedding row")
        }
    };
    let need = sram_need(&probe, &work).total();
    (need > c.arch.pe.sram_bytes).then_some((need, what))
}

/// Strip widths worth trying on a mesh `mw` wide: `mw / k` (no columns left
/// over) for up to 48 strips, then a few narrow ones.
fn strip_candidates(mw: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (1..=48).map(|k| mw / k).collect();
    v.extend([1, 2, 4, 8, 12]);
    v.retain(|&w| w >= 1 && w <= mw);
    v.sort_unstable();
    v.dedup();
    v
}

/// How regions fill the strips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// Each region goes to the first strip with room, so a small region can
    /// fill the gap a tall one left at the end of an earlier strip (its routes
    /// pay the extra distance, which the engines price). Packs densest.
    FirstFit,
    /// Strictly in execution order: a region that does not fit opens the next
    /// strip. Routes stay shortest and cross least (fewer colors per router).
    InOrder,
}

/// Packs regions (heights, in execution order) into `strips` strips of height
/// `mh`. Returns each region's (strip, offset from the strip's start), or
/// `None` if one does not fit.
pub fn pack_strips(heights: &[u32], mh: u32, strips: u32, packing: Packing) -> Option<Vec<(u32, u32)>> {
    let mut used = vec![0u32; strips as usize];
    let mut first_open = 0usize;
    heights
        .iter()
        .map(|&h| {
            let s = (first_open..used.len()).find(|&s| used[s] + h <= mh)?;
            let at = (s as u32, used[s]);
            used[s] += h;
            first_open = match packing {
                Packing::InOrder => s,
                Packing::FirstFit => (first_open..used.len()).find(|&x| used[x] < mh).unwrap_or(used.len()),
            };
            Some(at)
        })
        .collect()
}

/// Picks one candidate per group minimising Σ cost subject to Σ height ≤
/// `budget`: each group takes argmin(cost + μ·height) and μ is bisected.
fn choose(fronts: &[&[Cand]], active: &[bool], budget: u64) -> Option<Vec<usize>> {
    let pick = |mu: f64| -> Vec<usize> {
        fronts
            .iter()
            .zip(active)
            .map(|(f, &a)| {
                let score = |c: &Cand| if a { c.cost } else { 0.0 } + mu * c.h as f64;
                (0..f.len()).min_by(|&x, &y| score(&f[x]).total_cmp(&score(&f[y])).then(x.cmp(&y))).unwrap_or(0)
            })
            .collect()
    };
    let height = |sel: &[usize]| -> u64 { sel.iter().zip(fronts).map(|(&i, f)| f[i].h as u64).sum() };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    if height(&pick(lo)) <= budget {
        return Some(pick(lo));
    }
    while height(&pick(hi)) > budget {
        hi *= 4.0;
        if hi > 1e15 {
            return None;
        }
    }
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if height(&pick(mid)) <= budget {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(pick(hi))
}

/// Shapes for the groups of one wafer, searching the strip width.
fn plan_wafer(c: &Ctx, groups: &[&Group], wafer: u32, packing: Packing) -> Option<(u32, Vec<Shape>)> {
    let (mw, mh) = (c.arch.mesh_width, c.arch.mesh_height);
    let probe = c.probe();
    let active: Vec<bool> = groups.iter().map(|g| g.active).collect();
    // Layers repeat: tile each distinct kind once.
    let mut kinds: Vec<&GroupKind> = Vec::new();
    let kind_of: Vec<usize> = groups
        .iter()
        .map(|g| match kinds.iter().position(|k| **k == g.kind) {
            Some(i) => i,
            None => {
                kinds.push(&g.kind);
                kinds.len() - 1
            }
        })
        .collect();
    let results: Vec<Option<(f64, u32, Vec<Shape>)>> = strip_candidates(mw)
        .par_iter()
        .map(|&ws| {
            let fronts_by_kind: Vec<Vec<Cand>> = kinds.iter().map(|k| candidates(c, &probe, k, ws, mh)).collect();
            if fronts_by_kind.iter().any(|f| f.is_empty()) {
                return None;
            }
            let fronts: Vec<&[Cand]> = kind_of.iter().map(|&k| fronts_by_kind[k].as_slice()).collect();
            let strips = (mw / ws) as u64;
            let mut budget = strips * mh as u64;
            for _ in 0..12 {
                let sel = choose(&fronts, &active, budget)?;
                let heights: Vec<u32> = sel.iter().zip(&fronts).map(|(&i, f)| f[i].h).collect();
                if pack_strips(&heights, mh, strips as u32, packing).is_some() {
                    let mut total = 0.0;
                    let shapes = sel
                        .iter()
                        .zip(&fronts)
                        .zip(&active)
                        .map(|((&i, f), &a)| {
                            let cd = &f[i];
                            total += if a { cd.cost } else { 0.0 };
                            Shape { wafer, h: cd.h, w: cd.w, work: cd.work.clone(), cost: cd.cost }
                        })
                        .collect();
                    return Some((total, ws, shapes));
                }
                // Strip ends waste height: ask for a little less and retry.
                budget = budget * 97 / 100;
            }
            None
        })
        .collect();
    results.into_iter().flatten().min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))).map(|(_, ws, s)| (ws, s))
}

/// Cuts groups into `wafers` contiguous stages at layer boundaries, balancing
/// their minimal areas; `None` when some stage cannot hold its share.
pub(crate) fn assign_wafers(c: &Ctx, groups: &[Group], wafers: u32) -> Option<Vec<u32>> {
    let per = c.arch.pes() as f64 * FILL;
    let mins: Vec<f64> = groups.iter().map(|g| c.min_pes(g) as f64).collect();
    let total: f64 = mins.iter().sum();
    let target = total / wafers as f64;
    let mut out = Vec::with_capacity(groups.len());
    let (mut w, mut acc) = (0u32, 0.0f64);
    for (i, g) in groups.iter().enumerate() {
        let boundary = i > 0 && g.layer != groups[i - 1].layer;
        // Area of this group's whole layer from here on (do not split a layer).
        let layer_area: f64 = if boundary {
            groups[i..].iter().zip(&mins[i..]).take_while(|(x, _)| x.layer == g.layer).map(|(_, m)| m).sum()
        } else {
            0.0
        };
        if boundary && w + 1 < wafers && (acc >= target || acc + layer_area > per) {
            w += 1;
            acc = 0.0;
        }
        acc += mins[i];
        if acc > per {
            return None;
        }
        out.push(w);
    }
    Some(out)
}

/// Partitions every group for `wafers` wafers, or says why it cannot.
pub fn partition(c: &Ctx, groups: &[Group], wafers: u32, packing: Packing) -> Result<Plan, CompileError> {
    let assignment = assign_wafers(c, groups, wafers).ok_or(CompileError::Packing { wafers })?;
    let mut shapes = Vec::with_capacity(groups.len());
    let mut strip = Vec::with_capacity(wafers as usize);
    for wafer in 0..wafers {
        let members: Vec<&Group> =
            groups.iter().zip(&assignment).filter(|(_, &w)| w == wafer).map(|(g, _)| g).collect();
        if members.is_empty() {
            strip.push(1);
            continue;
        }
        let planned = plan_wafer(c, &members, wafer, packing).ok_or(CompileError::Packing { wafers })?;
        strip.push(planned.0);
        shapes.extend(planned.1);
    }
    // More wafers than layer stages leaves some empty: the program uses only
    // those that hold regions (stages are contiguous from wafer 0).
    let used = shapes.iter().map(|s| s.wafer + 1).max().unwrap_or(1);
    strip.truncate(used as usize);
    Ok(Plan { wafers: used, strip, shapes, packing })
}

/// The searched mapping's total against a fixed one — each region a square of
/// the same area with a binary tree — on the same cost model: (searched, fixed) cycles.
pub fn fixed_square_cost(c: &Ctx, groups: &[Group], plan: &Plan) -> (f64, f64) {
    let (mut searched, mut fixed) = (0.0, 0.0);
    for (g, s) in groups.iter().zip(&plan.shapes).filter(|(g, _)| g.active) {
        searched += s.cost;
        let area = s.h as u64 * s.w as u64;
        let side = ((area as f64).sqrt().floor() as u32).max(1);
        let work = match g.kind {
            GroupKind::Gemv { n, k, align, .. } => {
                let tile_n = n.div_ceil(side as u64).next_multiple_of(align);
                gemv_work(&g.kind, tile_n, k.div_ceil(side as u64), Reduce::Tree, c.acc)
                    .unwrap_or_else(|| s.work.clone())
            }
            _ => s.work.clone(),
        };
        let (h, w) = if matches!(g.kind, GroupKind::Gemv { .. }) { (side, side) } else { (s.h, s.w) };
        fixed += region_cost(c.arch, &work, Rect { x: 0, y: 0, w, h }, c.batch, c.weight, c.kv).total()
            + io_cycles(c, &work);
    }
    (searched, fixed)
}

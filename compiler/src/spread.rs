//! Mappings that share PEs over time: `spread` and `hybrid:k`.
//!
//! Owns: cutting a wafer's layers into blocks of `k` layers (`spread`: one
//! block holding every layer of the wafer's stage), the blocks' rectangles
//! (a grid over the wafer, or a forced `P×P`), and every group's place, tiling
//! and turn inside its block. Every matrix of a block's layers is spread over
//! the whole block (MeshGEMV-style: `tile_k = ⌈k / C⌉`, `tile_n = ⌈n / R⌉`, a
//! row reduction searched among chains, trees and two-chain `meet` groups, or
//! `--groups G` forced); attention takes a searched sub-block whose place
//! moves from layer to layer so the layers' KV caches land on different PEs;
//! the layers take turns on the same PEs (region `i` runs at turn `i`).
//! Feasibility is checked per physical PE as the verifier does
//! ([`wafer_ir::Sram::stack`]): everything stacked on a PE must fit. Candidate blocks are scored on the cost model
//! (the regions' closed forms plus streaming, and the hidden vector's trip
//! across the block between regions). Must not: route, allocate or verify
//! (the later passes do), or run an engine.

use crate::fuse::{Group, GroupKind};
use crate::partition::{
    assign_wafers, attention_works, gemv_chunk, gemv_work, halvings, io_cycles, meet_candidates, reduce_candidates,
    split_candidates, Ctx,
};
use crate::CompileError;
use wafer_ir::{sram_need, Occupancy, Rect, Reduce, Work};

/// How a `spread`-family mapping is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpreadOptions {
    /// Layers per block (`hybrid:k`); `None` for one block per wafer (`spread`).
    pub layers_per_block: Option<u32>,
    /// Force square `P×P` blocks.
    pub grid: Option<u32>,
    /// Force every Gemv's row reduction to MeshGEMV's `meet` with this many groups.
    pub groups: Option<u32>,
    /// Where attention goes: `None` searched, `Some(false)` inside the
    /// blocks, `Some(true)` in a strip of its own.
    pub attention_strip: Option<bool>,
}

/// One group's place.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub wafer: u32,
    pub rect: Rect,
    pub work: Work,
    pub turn: u32,
}

/// A spread layout: a place per group (in group order) and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub wafers: u32,
    pub placed: Vec<Placed>,
    /// Σ over active regions of closed-form cost, streaming and hops between regions, cycles.
    pub cost: f64,
    /// Block size per wafer (columns, rows).
    pub blocks: Vec<(u32, u32)>,
}

/// Square block sides tried besides the full grid cell.
const SIDES: [u32; 8] = [1024, 900, 720, 600, 512, 360, 256, 128];

/// Lays out `groups` on `wafers` wafers, or says why it cannot.
pub fn spread(c: &Ctx, groups: &[Group], wafers: u32, o: &SpreadOptions) -> Result<Layout, CompileError> {
    let assignment = assign_wafers(c, groups, wafers).ok_or(CompileError::Packing { wafers })?;
    let (mw, mh) = (c.arch.mesh_width, c.arch.mesh_height);
    let mut placed: Vec<Option<Placed>> = vec![None; groups.len()];
    let mut blocks = Vec::new();
    let mut total = 0.0;
    let used = assignment.iter().copied().max().map_or(1, |m| m + 1);
    for wafer in 0..used {
        let members: Vec<usize> = (0..groups.len()).filter(|&i| assignment[i] == wafer).collect();
        // Block of each member: by layer position on this wafer, k layers a block.
        let mut layers: Vec<u32> = members.iter().filter_map(|&i| groups[i].layer).collect();
        layers.dedup();
        let k = o.layers_per_block.unwrap_or(layers.len().max(1) as u32).max(1) as usize;
        let nb = layers.len().div_ceil(k).max(1);
        let block_of: Vec<usize> = members
            .iter()
            .map(|&i| match groups[i].layer {
                Some(l) => layers.iter().position(|&x| x == l).unwrap_or(0) / k,
                None if members.iter().take_while(|&&j| j != i).any(|&j| groups[j].layer.is_some()) => nb - 1,
                None => 0,
            })
            .collect();
        // The embedding table (whole rows per PE: lumpy) gets its own strip along
        // the bottom of the wafer, as many rows per PE as SRAM allows; the
        // blocks share the rest.
        let mut strip_h = 0u32;
        let mut embed_at: Option<(usize, Placed)> = None;
        for &i in &members {
            if let GroupKind::Embedding { vocab, hidden } = groups[i].kind {
                let row = c.weight.bytes_for(hidden).max(1);
                let fit = (c.arch.usable_sram() / row).max(1);
                let rows_per_pe = fit.min(vocab.div_ceil(mw as u64));
                let h = vocab.div_ceil(rows_per_pe * mw as u64) as u32;
                if h >= mh {
                    return Err(CompileError::Packing { wafers });
                }
                strip_h = h;
                let rect = Rect { x: 0, y: mh - h, w: mw, h };
                embed_at = Some((
                    i,
                    Placed {
                        wafer,
                        rect,
                        work: Work::Embedding { vocab, hidden, rows_per_pe, token: vocab / 2 },
                        turn: 0,
                    },
                ));
            }
        }
        let mh = mh - strip_h;
        let in_blocks: Vec<usize> =
            members.iter().copied().filter(|&i| embed_at.as_ref().is_none_or(|e| e.0 != i)).collect();
        let blocks_of: Vec<usize> =
            members.iter().zip(&block_of).filter(|(i, _)| in_blocks.contains(i)).map(|(_, &b)| b).collect();
        let mut best: Option<(f64, (u32, u32), Vec<Placed>)> = None;
        let mut grid_err = None;
        // Attention either shares the blocks' PEs with the weights or takes a
        // strip of its own above the embedding (its scratch and KV cache then
        // never stack on weights: what a wide GQA group needs).
        let mut att_heights = Vec::new();
        if o.attention_strip != Some(true) {
            att_heights.push(0u32);
        }
        if o.attention_strip != Some(false)
            && members.iter().any(|&i| matches!(groups[i].kind, GroupKind::Attention { .. }))
        {
            att_heights.extend([mh / 16, mh / 8, mh / 4].into_iter().filter(|&h| h >= 1));
            att_heights.dedup();
        }
        for att_h in att_heights {
            let mh = mh - att_h;
            let att = (att_h > 0).then_some(Rect { x: 0, y: mh, w: mw, h: att_h });
            // A grid of nb cells over the wafer, as square as the mesh allows.
            let bx = (1..=nb as u32).min_by_key(|&bx| {
                let by = (nb as u32).div_ceil(bx);
                let (w, h) = (mw / bx, mh / by.max(1));
                (w.max(h) as u64 * 1000 / w.min(h).max(1) as u64, bx)
            });
            let bx = bx.unwrap_or(1);
            let by = (nb as u32).div_ceil(bx);
            let (cw, ch) = (mw / bx, mh / by);
            if cw == 0 || ch == 0 {
                continue;
            }
            let mut sizes: Vec<(u32, u32)> = match o.grid {
                Some(p) => vec![(p, p)],
                None => std::iter::once((cw, ch)).chain(SIDES.iter().map(|&s| (s, s))).collect(),
            };
            sizes.retain(|&(w, h)| w >= 1 && h >= 1 && w <= cw && h <= ch);
            if sizes.is_empty() {
                grid_err.get_or_insert(CompileError::Unsupported {
                    op: "--grid".into(),
                    why: format!(
                        "a {0}x{0} block does not fit a {cw}x{ch} cell of wafer {wafer} ({mw}x{mh} PEs, {nb} block(s))",
                        o.grid.unwrap_or(0)
                    ),
                });
                continue;
            }
            for (bw, bh) in sizes {
                // The fastest attention shapes first; where the KV caches then overflow, spread them thinner.
                for kv_cap in [u64::MAX, 4, 1] {
                    let area = Area { wafer, grid: (bx, cw, ch), block: (bw, bh), att };
                    let Some((cost, p)) = lay_blocks(c, groups, &in_blocks, &blocks_of, &area, o, kv_cap) else {
                        continue;
                    };
                    if best.as_ref().is_none_or(|b| cost < b.0) {
                        best = Some((cost, (bw, bh), p));
                    }
                    break;
                }
            }
        }
        if best.is_none() {
            if let Some(e) = grid_err {
                return Err(e);
            }
        }
        let Some((cost, size, p)) = best else { return Err(CompileError::Packing { wafers }) };
        total += cost;
        blocks.push(size);
        for (&i, pl) in in_blocks.iter().zip(p) {
            placed[i] = Some(pl);
        }
        if let Some((i, pl)) = embed_at {
            total += c.region_cycles(&pl.work, pl.rect);
            placed[i] = Some(pl);
        }
    }
    let mut placed: Vec<Placed> =
        placed.into_iter().map(|p| p.ok_or(CompileError::Packing { wafers })).collect::<Result<_, _>>()?;
    for (i, p) in placed.iter_mut().enumerate() {
        p.turn = i as u32;
    }
    Ok(Layout { wafers: used, placed, cost: total, blocks })
}

/// Where one wafer's blocks go.
struct Area {
    wafer: u32,
    /// Grid cells per row, cell width and height.
    grid: (u32, u32, u32),
    /// Block width and height (at the corner of its cell).
    block: (u32, u32),
    /// The attention strip, when attention does not share the blocks.
    att: Option<Rect>,
}

/// The members of one wafer laid out in blocks of `bw×bh` (at the corners of
/// their grid cells), or `None` when some PE's SRAM overflows.
fn lay_blocks(
    c: &Ctx,
    groups: &[Group],
    members: &[usize],
    block_of: &[usize],
    area: &Area,
    o: &SpreadOptions,
    kv_cap: u64,
) -> Option<(f64, Vec<Placed>)> {
    let Area { wafer, grid: (bx, cw, ch), block: (bw, bh), att } = *area;
    let probe = c.probe_program();
    // Every layer's attention has the same shape: searched once.
    let mut att_memo: Vec<(GroupKind, Work, u32, u32)> = Vec::new();
    let mut out = Vec::with_capacity(members.len());
    let mut cost = 0.0;
    // Per block, how many regions of each kind it has placed: a region smaller
    // than its block goes to the next slot of its kind, so the layers' weights
    // and KV caches spread over the block instead of piling up in one corner.
    let mut seen: Vec<Vec<(GroupKind, u32)>> = vec![Vec::new(); block_of.iter().max().map_or(1, |m| m + 1)];
    let mut prev: Option<Rect> = None;
    for (&i, &b) in members.iter().zip(block_of) {
        let g = &groups[i];
        let origin = ((b as u32 % bx) * cw, (b as u32 / bx) * ch);
        let (work, rect) = match g.kind {
            GroupKind::Gemv { n, k, align, .. } => {
                let tile_k = k.div_ceil(bw as u64);
                let cols = k.div_ceil(tile_k) as u32;
                let tile_n = n.div_ceil(bh as u64).next_multiple_of(align);
                let rows = n.div_ceil(tile_n) as u32;
                let rect = Rect { x: origin.0, y: origin.1, w: cols, h: rows };
                let shapes: Vec<Reduce> = match o.groups {
                    Some(gn) if cols >= 3 => vec![Reduce::Meet { group: cols.div_ceil(gn.clamp(1, cols)) }],
                    Some(_) => vec![Reduce::Chain],
                    None => reduce_candidates(cols).into_iter().chain(meet_candidates(cols)).collect(),
                };
                let best = shapes
                    .into_iter()
                    .filter_map(|r| gemv_work(&g.kind, tile_n, tile_k, r, c.acc))
                    .map(|w| gemv_chunk(c, &probe, &w))
                    .map(|w| (c.region_cycles(&w, rect), w))
                    .min_by(|a, b| a.0.total_cmp(&b.0))?;
                (best.1, rect)
            }
            GroupKind::Attention { kv_heads, .. } => {
                // In the attention strip when there is one, else in the block.
                let (ox, oy, aw, ah) = match att {
                    Some(r) => (r.x, r.y, r.w, r.h),
                    None => (origin.0, origin.1, bw, bh),
                };
                let (work, w, rph) = match att_memo.iter().find(|m| m.0 == g.kind) {
                    Some(m) => (m.1.clone(), m.2, m.3),
                    None => {
                        let (work, w, rph) = attention_shape(c, &g.kind, aw, ah, kv_cap)?;
                        att_memo.push((g.kind.clone(), work.clone(), w, rph));
                        (work, w, rph)
                    }
                };
                (work, Rect { x: ox, y: oy, w, h: kv_heads as u32 * rph })
            }
            GroupKind::Embedding { vocab, hidden } => {
                let rows_per_pe = vocab.div_ceil(bw as u64 * bh as u64);
                let h = vocab.div_ceil(rows_per_pe * bw as u64) as u32;
                (
                    Work::Embedding { vocab, hidden, rows_per_pe, token: vocab / 2 },
                    Rect { x: origin.0, y: origin.1, w: bw, h },
                )
            }
        };
        let rect = {
            let kinds = &mut seen[b];
            let n = match kinds.iter_mut().find(|(k, _)| *k == g.kind) {
                Some((_, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => {
                    kinds.push((g.kind.clone(), 1));
                    0
                }
            };
            let (aw, ah) = match (att, &g.kind) {
                (Some(r), GroupKind::Attention { .. }) => (r.w, r.h),
                _ => (bw, bh),
            };
            let (sx, sy) = ((aw / rect.w).max(1), (ah / rect.h).max(1));
            let s = n % (sx * sy);
            Rect { x: rect.x + (s % sx) * rect.w, y: rect.y + (s / sx) * rect.h, ..rect }
        };
        if g.active {
            cost += c.region_cycles(&work, rect) + io_cycles(c, &work);
            // The hidden vector crosses from the last region's row roots to this one's heads.
            if let Some(pr) = prev {
                let hops = pr.x.abs_diff(rect.x) + pr.y.abs_diff(rect.y) + pr.h.max(rect.h) + pr.w.max(rect.w) / 2;
                cost += (hops as u64 * c.arch.router.hop_latency_cycles as u64) as f64;
            }
            prev = Some(rect);
        }
        if sram_need(&probe, &work).total() > c.arch.pe.sram_bytes {
            return None;
        }
        out.push(Placed { wafer, rect, work, turn: 0 });
    }
    // Everything stacked on a PE must fit its SRAM.
    let occ = Occupancy::new(&out.iter().map(|p| (p.wafer, p.rect)).collect::<Vec<_>>());
    let mut per_cell = vec![wafer_ir::Sram::default(); occ.cells().len()];
    for p in &out {
        let s = sram_need(&probe, &p.work);
        for cell in occ.cells_of(p.wafer, p.rect) {
            per_cell[cell].stack(&s);
        }
    }
    if per_cell.iter().any(|s| s.total() > c.arch.pe.sram_bytes) {
        return None;
    }
    Some((cost, out))
}

/// The attention shape (work, width, rows per head) within `aw×ah` PEs:
/// within the cap on cached positions per PE, the fastest; failing that, the
/// fewest positions per PE.
fn attention_shape(c: &Ctx, kind: &GroupKind, aw: u32, ah: u32, kv_cap: u64) -> Option<(Work, u32, u32)> {
    let GroupKind::Attention { kv_heads, positions, .. } = *kind else { return None };
    let probe = c.probe_program();
    let rph_max = (ah as u64 / kv_heads.max(1)) as u32;
    let mut best: Option<((u64, f64), Work, u32, u32)> = None;
    for rph in 1..=rph_max {
        for split in split_candidates(c).into_iter().filter(|s| rph as u64 % s == 0) {
            // Widths that give each count of cached positions per PE exactly
            // (the fewest PEs holding it) over a sub-block's rows, plus the
            // halvings of the area.
            let brows = rph as u64 / split;
            let mut widths = halvings(aw);
            for p in [1u64, 2, 3, 4, 6, 8, 12, 16, 24, 32] {
                let w = positions.div_ceil(p * brows);
                if w <= aw as u64 {
                    widths.push(w as u32);
                }
            }
            widths.sort_unstable();
            widths.dedup();
            for w in widths {
                for work in attention_works(kind, w, rph, split, c.batch) {
                    // A sub-block too full for SRAM on its own can never be stacked.
                    if !c.fits(&probe, &work) {
                        continue;
                    }
                    let Work::Attention { pos_per_pe, .. } = work else { continue };
                    let cyc = c.region_cycles(&work, Rect { x: 0, y: 0, w, h: kv_heads as u32 * rph });
                    let key = (pos_per_pe.max(kv_cap) - kv_cap, cyc);
                    if best.as_ref().is_none_or(|b| key.0 < b.0 .0 || (key.0 == b.0 .0 && key.1 < b.0 .1)) {
                        best = Some((key, work, w, rph));
                    }
                }
            }
        }
    }
    best.map(|(_, work, w, rph)| (work, w, rph))
}

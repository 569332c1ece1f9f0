//! Pass `route`: the routes between and inside regions, with colors.
//!
//! Owns: which routes exist for the step (a forward from each region's input producer, a
//! residual from each epilogue operand, and the reduce / norm / arg-max
//! collectives a region's shape needs; none for MoE experts the step does not
//! route to, so their colors are not modelled), their byte counts (from the spatial
//! IR's message expansion, so they agree with the engines), and color
//! assignment: first fit, reusing a color only where the routes' bounding
//! boxes do not meet or their turns cannot overlap. Must not: move regions.

use crate::fuse::Group;
use crate::CompileError;
use wafer_ir::{
    footprints_meet, for_each_message, route_footprint, Program, Rect, Reduce, RegionId, Route, RouteId, RouteKind,
    Work,
};

/// Adds the routes of `groups` (whose regions `p` holds, in the same order) and colors them.
pub fn route(p: &mut Program, groups: &[Group]) -> Result<(), CompileError> {
    let mut routes = Vec::new();
    let mut add = |kind: RouteKind, src: usize, dst: usize, colors: u32| {
        routes.push(Route { kind, src: RegionId(src as u32), dst: RegionId(dst as u32), color: 0, colors, bytes: 0 });
    };
    for (i, g) in groups.iter().enumerate() {
        let r = &p.regions[i];
        if !g.active {
            // Experts this step does not route to: resident, but no traffic this step.
            continue;
        }
        if let Some(src) = g.input {
            add(RouteKind::Forward, src, i, 1);
        }
        match r.work {
            Work::Gemv { reduce, norm, argmax, .. } => {
                if norm && r.rect.w > 1 {
                    add(RouteKind::Norm, i, i, Reduce::Tree.colors());
                }
                if r.rect.w > 1 {
                    add(RouteKind::Reduce, i, i, reduce.colors());
                }
                if argmax && r.rect.h > 1 {
                    add(RouteKind::Argmax, i, i, Reduce::Tree.colors());
                }
            }
            Work::Attention { reduce, .. } => {
                let brows = r.work.block_rows();
                if r.rect.w > 1 || brows > 1 {
                    add(RouteKind::Reduce, i, i, reduce.colors() + (brows > 1) as u32);
                }
            }
            Work::Embedding { .. } | Work::Gemm { .. } => {}
        }
        for &src in &g.residuals {
            add(RouteKind::Residual, src, i, 1);
        }
    }
    p.routes = routes;
    for i in 0..p.routes.len() {
        let bytes = match reduce_bytes(p, &p.routes[i]) {
            Some(b) => b,
            None => {
                let mut bytes = 0u64;
                for_each_message(p, RouteId(i as u32), |m| bytes += m.bytes);
                bytes
            }
        };
        p.routes[i].bytes = bytes;
    }
    // First-fit colors.
    let avail = p.arch.program_colors();
    let feet: Vec<Vec<(u32, Rect)>> = p.routes.iter().map(|rt| route_footprint(p, rt)).collect();
    // A route is live from its source's turn to its destination's; routes whose
    // turns cannot overlap (successive layers on the same PEs) may share a color.
    let live: Vec<(u32, u32)> = p
        .routes
        .iter()
        .map(|rt| {
            let (a, b) = (p.region(rt.src).turn, p.region(rt.dst).turn);
            (a.min(b), a.max(b))
        })
        .collect();
    let mut by_color: Vec<Vec<usize>> = vec![Vec::new(); avail as usize];
    for i in 0..p.routes.len() {
        let need = p.routes[i].colors;
        let meet = |j: usize| live[j].0 <= live[i].1 && live[i].0 <= live[j].1 && footprints_meet(&feet[j], &feet[i]);
        let free = |c: u32| by_color[c as usize].iter().all(|&j| !meet(j));
        let Some(c) = (0..avail.saturating_sub(need - 1)).find(|&c| (c..c + need).all(free)) else {
            return Err(CompileError::Colors {
                route: format!(
                    "{} {} -> {}",
                    p.routes[i].kind.name(),
                    p.region(p.routes[i].src).name,
                    p.region(p.routes[i].dst).name
                ),
                available: avail,
            });
        };
        p.routes[i].color = c;
        for k in c..c + need {
            by_color[k as usize].push(i);
        }
    }
    Ok(())
}

/// The bytes a `reduce` route carries, in closed form (a full-wafer reduction
/// sends millions of messages; the verifier still counts them one by one, so
/// this sum is checked against the messages on every compile).
fn reduce_bytes(p: &Program, rt: &Route) -> Option<u64> {
    if rt.kind != RouteKind::Reduce {
        return None;
    }
    let r = p.region(rt.src);
    let b = p.rows();
    let sends = |shape: Reduce, n: u32| shape.rounds(n).iter().map(|round| round.len() as u64).sum::<u64>();
    match r.work {
        Work::Gemv { reduce, acc, .. } => {
            let per_row: u64 = (0..r.rect.h)
                .map(|row| {
                    let (lo, hi) = r.rows_of(row);
                    acc.bytes_for((hi - lo) * b)
                })
                .sum();
            Some(per_row * sends(reduce, r.rect.w))
        }
        Work::Attention { kv_heads, group, head_dim, reduce, batch_split, .. } => {
            // Per sub-block: its sequences' states along each row, then down its column 0.
            let brows = r.work.block_rows();
            let per_block = sends(reduce, r.rect.w) * brows as u64 + sends(Reduce::Chain, brows);
            let seqs: u64 = (0..batch_split.max(1))
                .map(|j| {
                    let (lo, hi) = r.work.seq_range(j, b);
                    hi - lo
                })
                .sum();
            Some(4 * group * (head_dim + 2) * seqs * kv_heads * per_block)
        }
        Work::Embedding { .. } | Work::Gemm { .. } => Some(0),
    }
}

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
    footprints_meet, route_footprint, route_messages, Program, Rect, Reduce, RegionId, Route, RouteId, RouteKind, Work,
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
            Work::Attention { reduce, rows_per_head, .. } => {
                if r.rect.w > 1 || rows_per_head > 1 {
                    add(RouteKind::Reduce, i, i, reduce.colors() + (rows_per_head > 1) as u32);
                }
            }
            Work::Embedding { .. } => {}
        }
        for &src in &g.residuals {
            add(RouteKind::Residual, src, i, 1);
        }
    }
    p.routes = routes;
    for i in 0..p.routes.len() {
        let bytes = route_messages(p, RouteId(i as u32)).iter().map(|m| m.bytes).sum();
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

//! Spatial IR verifier.
//!
//! Owns: the rules a program must satisfy before it is simulated — regions
//! inside the mesh, regions that share PEs in different turns (turns never
//! decreasing in region order), SRAM within capacity on every physical PE
//! (weights and KV caches of every region there summed, code and scratch
//! buffers once: [`Sram::stack`]), tilings that cover their
//! matrices, colors within the router's limit with same-colored routes
//! disjoint wherever they can be live together (a route is live from its
//! source's turn to its destination's), every receive matched by a send of the same
//! size, routes between existing regions in execution order, and every
//! region's task list executable ([`crate::dataflow::check_tasks`]: each
//! route it takes part in listed once, one compute, inputs before it, sends
//! last). Returns a
//! witness, [`ProgramInfo`], that the simulators require. Must not: repair.

use crate::limits::{MAX_BATCH, MAX_CONTEXT, MAX_PROGRAM_MESSAGES, MAX_WAFERS};
use crate::spatial::*;
use serde::Serialize;
use std::fmt;

/// One problem, naming the region, route or PE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramDiag {
    #[error("program: {0}")]
    Program(String),
    #[error("region {region} `{name}`: {msg}")]
    Region { region: RegionId, name: String, msg: String },
    #[error("route {route}: {msg}")]
    Route { route: RouteId, msg: String },
    #[error("{pe} on wafer {wafer}: {msg}")]
    Pe { pe: Pe, wafer: u32, msg: String },
}

/// Every problem found, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramErrors(pub Vec<ProgramDiag>);

impl fmt::Display for ProgramErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program verification failed with {} error(s)", self.0.len())?;
        for d in self.0.iter().take(20) {
            write!(f, "\n  {d}")?;
        }
        if self.0.len() > 20 {
            write!(f, "\n  … and {} more", self.0.len() - 20)?;
        }
        Ok(())
    }
}
impl std::error::Error for ProgramErrors {}

/// Facts established by the verifier. Only `verify_program` makes one, so a
/// function taking `&ProgramInfo` runs on verified programs only.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProgramInfo {
    pub pes_used: u64,
    /// Mean and max per-PE SRAM over the PEs in regions, bytes.
    pub sram_mean: f64,
    pub sram_max: u64,
    /// Sum over used PEs, by kind, bytes.
    pub sram_code: u64,
    pub sram_weights: u64,
    pub sram_kv: u64,
    pub sram_buffers: u64,
    /// Most colors any router carries.
    pub colors_max: u32,
    /// Longest message of any route, in hops (multicast tails included).
    pub longest_route_hops: u32,
    pub messages: u64,
}

/// Which groups of rules to check: a program under construction satisfies
/// more of them after each compiler pass (`Checks::ALL` for a finished one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// Rects inside the mesh, on existing wafers, not overlapping.
    pub geometry: bool,
    pub routes: bool,
    pub sram: bool,
    pub steps: bool,
}

impl Checks {
    pub const ALL: Checks = Checks { geometry: true, routes: true, sram: true, steps: true };
    pub const TILING: Checks = Checks { geometry: false, routes: false, sram: false, steps: false };
}

/// Checks `p` completely; `Ok` carries the witness the simulators require.
pub fn verify_program(p: &Program) -> Result<ProgramInfo, ProgramErrors> {
    verify_program_checks(p, Checks::ALL)
}

/// Checks the tilings always, and the groups of rules `checks` selects.
pub fn verify_program_checks(p: &Program, checks: Checks) -> Result<ProgramInfo, ProgramErrors> {
    let mut d = Vec::new();
    let a = &p.arch;
    if let Err(e) = a.validate("program arch") {
        d.push(ProgramDiag::Program(e.to_string()));
        return Err(ProgramErrors(d));
    }
    if p.wafers == 0 {
        d.push(ProgramDiag::Program("wafers must be at least 1".into()));
    }
    if p.batch == 0 || p.context == 0 {
        d.push(ProgramDiag::Program("batch and context must be at least 1".into()));
    }
    if p.batch > MAX_BATCH || p.context > MAX_CONTEXT || p.wafers > MAX_WAFERS {
        d.push(ProgramDiag::Program(format!(
            "batch {}, context {}, wafers {}: allowed at most {MAX_BATCH}, {MAX_CONTEXT} and {MAX_WAFERS}",
            p.batch, p.context, p.wafers
        )));
        return Err(ProgramErrors(d));
    }
    if p.new_tokens == 0 || p.new_tokens > p.context {
        d.push(ProgramDiag::Program(format!("new_tokens {} is outside 1..={} (the context)", p.new_tokens, p.context)));
        return Err(ProgramErrors(d));
    }
    if p.new_tokens > 1 {
        // Sub-blocks serve sequences; a chunk's rows per sequence are not yet mapped onto them.
        for (i, r) in p.regions.iter().enumerate() {
            if let Work::Attention { batch_split: 2.., .. } = r.work {
                d.push(ProgramDiag::Region {
                    region: RegionId(i as u32),
                    name: r.name.clone(),
                    msg: "is split by sequence (batch_split): prompt chunks (new_tokens > 1) on a split attention \
                          are not modelled yet"
                        .into(),
                });
            }
        }
    }
    if p.regions.is_empty() {
        d.push(ProgramDiag::Program("the program has no regions: nothing to run".into()));
        return Err(ProgramErrors(d));
    }
    let nreg = p.regions.len() as u32;
    let reg_err = |i: usize, msg: String| ProgramDiag::Region {
        region: RegionId(i as u32),
        name: p.regions[i].name.clone(),
        msg,
    };

    // Regions: geometry, tiling, SRAM.
    for (i, r) in p.regions.iter().enumerate() {
        let rc = r.rect;
        if rc.w == 0
            || rc.h == 0
            || rc.x as u64 + rc.w as u64 > a.mesh_width as u64
            || rc.y as u64 + rc.h as u64 > a.mesh_height as u64
        {
            d.push(reg_err(
                i,
                format!(
                    "rect {},{},{}x{} is not inside the {}x{} mesh",
                    rc.x, rc.y, rc.w, rc.h, a.mesh_width, a.mesh_height
                ),
            ));
            continue;
        }
        if checks.geometry && r.wafer >= p.wafers {
            d.push(reg_err(i, format!("is on wafer {} of {}", r.wafer, p.wafers)));
        }
        let (w, h) = (rc.w as u64, rc.h as u64);
        let tiling = match r.work {
            Work::Gemv { n, k, tile_n, tile_k, glu, acc, batch_chunk, .. } => {
                if batch_chunk > p.batch {
                    Some(format!("batch_chunk={batch_chunk} is more than the batch of {}", p.batch))
                } else if tile_n == 0 || tile_k == 0 || tile_n * h < n || tile_k * w < k {
                    Some(format!("tiles {tile_n}x{tile_k} on {h}x{w} PEs do not cover the {n}x{k} matrix"))
                } else if glu && (tile_n % 2 != 0 || n % 2 != 0) {
                    Some("a GLU region needs even n and tile_n (gate/up pairs per row)".into())
                } else if !matches!(acc, crate::DType::F32 | crate::DType::F16) {
                    Some(format!("accumulator `acc={acc}` is not fp32 or fp16"))
                } else {
                    None
                }
            }
            Work::Attention { reduce: crate::Reduce::Meet { .. }, .. } => {
                Some("attention regions reduce to column 0: `meet` is for gemv regions only".into())
            }
            Work::Attention {
                kv_heads,
                positions,
                slot,
                rows_per_head,
                pos_per_pe,
                group,
                head_dim,
                batch_split,
                ..
            } => {
                let per = p.batch.div_ceil(batch_split.max(1));
                if batch_split == 0 || batch_split > p.batch || per * (batch_split - 1) >= p.batch {
                    Some(format!(
                        "batch_split={batch_split} does not cut the batch of {} into that many non-empty groups of ⌈batch / split⌉ sequences",
                        p.batch
                    ))
                } else if rows_per_head as u64 % batch_split != 0 {
                    Some(format!(
                        "batch_split={batch_split} does not divide the {rows_per_head} rows of a head block into sub-blocks"
                    ))
                } else if kv_heads == 0
                    || group == 0
                    || head_dim == 0
                    || rows_per_head == 0
                    || kv_heads * rows_per_head as u64 != h
                {
                    Some(format!("{kv_heads} KV heads x {rows_per_head} rows do not make {h} rows"))
                } else if pos_per_pe * w * (rows_per_head as u64 / batch_split) < positions {
                    Some(format!(
                        "{pos_per_pe} positions per PE over {} PEs per sub-block do not hold {positions}",
                        w * (rows_per_head as u64 / batch_split)
                    ))
                } else if slot >= positions {
                    Some(format!("slot {slot} is outside the {positions} cached positions"))
                } else {
                    None
                }
            }
            Work::Gemm { m, k, n, tile_m, tile_k, tile_n, acc } => {
                if w != h {
                    Some(format!("a Cannon GEMM runs on a square: {h}x{w} PEs"))
                } else if tile_m == 0
                    || tile_k == 0
                    || tile_n == 0
                    || tile_m * h < m
                    || tile_k * w < k
                    || tile_n * w < n
                {
                    Some(format!(
                        "tiles {tile_m}x{tile_k} (A) and {tile_k}x{tile_n} (B) on {h}x{w} PEs do not cover the \
                         {m}x{k} by {k}x{n} product"
                    ))
                } else if !matches!(acc, crate::DType::F32 | crate::DType::F16) {
                    Some(format!("accumulator `acc={acc}` is not fp32 or fp16"))
                } else {
                    None
                }
            }
            Work::Embedding { vocab, rows_per_pe, token, .. } => {
                if rows_per_pe * w * h < vocab {
                    Some(format!("{rows_per_pe} rows per PE over {} PEs do not hold {vocab} rows", w * h))
                } else if token >= vocab {
                    Some(format!("token {token} is outside the vocabulary of {vocab}"))
                } else {
                    None
                }
            }
        };
        let tiling = tiling.or_else(|| match r.work {
            Work::Gemv { reduce: Reduce::TwoLevel { group }, .. }
            | Work::Attention { reduce: Reduce::TwoLevel { group }, .. }
                if group == 0 || group > rc.w =>
            {
                Some(format!("reduce=two_level:{group}: groups must hold 1..={} PEs (the region's rows)", rc.w))
            }
            _ => None,
        });
        if let Some(m) = tiling {
            d.push(reg_err(i, m));
        }
        let need = sram_need(p, &r.work);
        if !checks.sram {
            continue;
        }
        if r.sram.weights < need.weights
            || r.sram.kv < need.kv
            || r.sram.buffers < need.buffers
            || r.sram.code < need.code
        {
            d.push(reg_err(i, format!("declares SRAM {:?} but its work needs {:?}", r.sram, need)));
        }
        if r.sram.checked_total().is_none_or(|t| t > a.pe.sram_bytes) {
            d.push(ProgramDiag::Pe {
                pe: rc.pe(0, 0),
                wafer: r.wafer,
                msg: format!(
                    "SRAM overflow in region {} `{}`: {} bytes (code {} + weights {} + KV {} + buffers {}) > {} per PE",
                    RegionId(i as u32),
                    r.name,
                    r.sram.checked_total().map_or("more than 2^64".into(), |t| t.to_string()),
                    r.sram.code,
                    r.sram.weights,
                    r.sram.kv,
                    r.sram.buffers,
                    a.pe.sram_bytes
                ),
            });
        }
    }
    // Turns never decrease in execution order.
    for i in 1..p.regions.len() {
        if p.regions[i].turn < p.regions[i - 1].turn {
            d.push(reg_err(
                i,
                format!(
                    "turn {} comes before the turn {} of region {} `{}`: turns must not decrease in region order",
                    p.regions[i].turn,
                    p.regions[i - 1].turn,
                    RegionId(i as u32 - 1),
                    p.regions[i - 1].name
                ),
            ));
        }
    }
    // Regions sharing PEs must take turns (sorted sweep on x, per wafer).
    let mut order: Vec<usize> = (0..p.regions.len()).collect();
    order.sort_by_key(|&i| (p.regions[i].wafer, p.regions[i].rect.x, i));
    let mut shared = false;
    for (oi, &i) in order.iter().enumerate().filter(|_| checks.geometry) {
        let ri = &p.regions[i];
        for &j in &order[oi + 1..] {
            let rj = &p.regions[j];
            if rj.wafer != ri.wafer || rj.rect.x >= ri.rect.x + ri.rect.w {
                break;
            }
            if ri.rect.overlaps(&rj.rect) {
                shared = true;
                if ri.turn == rj.turn {
                    let (lo, hi) = (i.min(j), i.max(j));
                    d.push(reg_err(
                        hi,
                        format!(
                            "overlaps region {} `{}` on wafer {} in the same turn {}: regions sharing PEs must take turns",
                            RegionId(lo as u32),
                            p.regions[lo].name,
                            ri.wafer,
                            ri.turn
                        ),
                    ));
                }
            }
        }
    }
    // SRAM per physical PE: everything resident there ([`Sram::stack`]).
    let occ = crate::Occupancy::new(&p.regions.iter().map(|r| (r.wafer, r.rect)).collect::<Vec<_>>());
    let cells = occ.cells();
    let mut per_cell = vec![(Sram::default(), 0u32); cells.len()];
    if d.is_empty() {
        for r in &p.regions {
            for c in occ.cells_of(r.wafer, r.rect) {
                let (s, n) = &mut per_cell[c];
                s.stack(&r.sram);
                *n += 1;
            }
        }
    }
    if checks.sram && shared {
        let mut over: Vec<(u64, usize)> = per_cell
            .iter()
            .enumerate()
            .filter(|(_, (s, n))| *n > 1 && s.total() > a.pe.sram_bytes)
            .map(|(c, (s, _))| (s.total(), c))
            .collect();
        over.sort_by_key(|&(t, c)| (std::cmp::Reverse(t), c));
        for &(_, c) in over.iter().take(4) {
            let (s, n) = per_cell[c];
            let cell = cells[c];
            d.push(ProgramDiag::Pe {
                pe: cell.rect.pe(0, 0),
                wafer: cell.wafer,
                msg: format!(
                    "SRAM overflow: {n} regions share {} PEs from here ({}x{}) and hold {} bytes on each (code {} + weights {} + KV {} + buffers {}) > {} per PE",
                    cell.rect.pes(),
                    cell.rect.w,
                    cell.rect.h,
                    s.total(),
                    s.code,
                    s.weights,
                    s.kv,
                    s.buffers,
                    a.pe.sram_bytes
                ),
            });
        }
        if over.len() > 4 {
            d.push(ProgramDiag::Program(format!("… SRAM overflows on {} more shared areas", over.len() - 4)));
        }
    }
    if !d.is_empty() {
        return Err(ProgramErrors(d));
    }

    // Message counts, bounded before any route is expanded.
    if checks.routes {
        let bounds: Vec<u64> = p
            .routes
            .iter()
            .map(|rt| if rt.src.0 < nreg && rt.dst.0 < nreg { route_message_bound(p, rt) } else { 0 })
            .collect();
        let total = bounds.iter().fold(0u64, |x, &y| x.saturating_add(y));
        if total > MAX_PROGRAM_MESSAGES {
            let (worst, most) = bounds.iter().enumerate().max_by_key(|(_, b)| **b).map_or((0, 0), |(i, b)| (i, *b));
            d.push(ProgramDiag::Program(format!(
                "the routes would expand to up to {total} messages (route {} alone up to {most}{}); allowed: at most {MAX_PROGRAM_MESSAGES}",
                RouteId(worst as u32),
                if a.router.multicast { "" } else { ", every multicast tail a unicast per PE since router.multicast = 0" }
            )));
            return Err(ProgramErrors(d));
        }
    }
    // Routes: endpoints, order, colors, sizes.
    let avail = a.program_colors();
    let mut longest = 0u32;
    let mut messages = 0u64;
    for (ri, rt) in p.routes.iter().enumerate().filter(|_| checks.routes) {
        let id = RouteId(ri as u32);
        let rerr = |msg: String| ProgramDiag::Route { route: id, msg };
        if rt.src.0 >= nreg || rt.dst.0 >= nreg {
            d.push(rerr(format!("connects {} -> {}, but the program has {nreg} regions", rt.src, rt.dst)));
            continue;
        }
        if rt.kind.is_collective() != (rt.src == rt.dst) {
            d.push(rerr(format!(
                "a {} route must {}",
                rt.kind.name(),
                if rt.kind.is_collective() { "stay within one region" } else { "join two regions" }
            )));
            continue;
        }
        if [rt.src, rt.dst].iter().any(|&r| matches!(p.region(r).work, Work::Gemm { .. })) {
            d.push(rerr(format!(
                "{} {} -> {} touches a gemm region, which takes no routes yet (its operands are resident and its \
                 tile moves are part of its work)",
                rt.kind.name(),
                rt.src,
                rt.dst
            )));
            continue;
        }
        if !rt.kind.is_collective() && rt.src.0 >= rt.dst.0 {
            d.push(rerr(format!("goes backwards in execution order ({} -> {})", rt.src, rt.dst)));
        }
        if rt.colors == 0 || rt.color.saturating_add(rt.colors) > avail {
            d.push(rerr(format!(
                "uses colors {}..{} but only {avail} are available to programs",
                rt.color,
                rt.color.saturating_add(rt.colors)
            )));
        }
        let (mut count, mut total, mut hops) = (0u64, 0u64, 0u32);
        for_each_message(p, id, |m| {
            count += 1;
            total = total.saturating_add(m.bytes);
            hops = hops.max(m.hops());
        });
        if count == 0 {
            d.push(rerr(format!("{} {} -> {} carries nothing (disconnected layouts)", rt.kind.name(), rt.src, rt.dst)));
        }
        if total != rt.bytes {
            d.push(rerr(format!("declares {} bytes but its messages carry {total}", rt.bytes)));
        }
        messages += count;
        longest = longest.max(hops);
    }
    // Same-colored routes must not share a router.
    let valid: Vec<usize> = (0..p.routes.len())
        .filter(|&i| checks.routes && p.routes[i].src.0 < nreg && p.routes[i].dst.0 < nreg)
        .collect();
    let feet: Vec<Vec<(u32, Rect)>> = p
        .routes
        .iter()
        .map(|rt| if rt.src.0 < nreg && rt.dst.0 < nreg { route_footprint(p, rt) } else { vec![] })
        .collect();
    let mut by_color: Vec<Vec<usize>> = vec![Vec::new(); (avail + 64) as usize];
    for &i in &valid {
        let rt = &p.routes[i];
        for c in rt.color..rt.color.saturating_add(rt.colors).min(avail + 64) {
            by_color[c as usize].push(i);
        }
    }
    // A route is live from its source's turn to its destination's: routes
    // whose turns cannot overlap (successive layers on the same PEs) may share colors.
    let live = |i: usize| {
        let rt = &p.routes[i];
        (p.region(rt.src).turn.min(p.region(rt.dst).turn), p.region(rt.src).turn.max(p.region(rt.dst).turn))
    };
    for (c, list) in by_color.iter().enumerate() {
        for (x, &i) in list.iter().enumerate() {
            for &j in &list[x + 1..] {
                let ((a0, a1), (b0, b1)) = (live(i), live(j));
                if a0 <= b1 && b0 <= a1 && footprints_meet(&feet[i], &feet[j]) {
                    d.push(ProgramDiag::Route {
                        route: RouteId(j as u32),
                        msg: format!("shares color {c} with route {} on overlapping paths", RouteId(i as u32)),
                    });
                }
            }
        }
    }
    // Colors per router. Regions sharing PEs: the distinct colors whose
    // routes' footprints cover a router (same-colored routes there are
    // already known not to be live together).
    let mut colors_max = 0u32;
    if shared && checks.routes {
        let mut rects: Vec<(u32, Rect)> = valid.iter().flat_map(|&i| feet[i].iter().copied()).collect();
        rects.retain(|(_, r)| r.w > 0 && r.h > 0);
        let fo = crate::Occupancy::new(&rects);
        let mut masks = vec![0u64; fo.cells().len()];
        for &i in &valid {
            let rt = &p.routes[i];
            let bits = (rt.color..rt.color.saturating_add(rt.colors).min(64)).fold(0u64, |m, c| m | 1u64 << c);
            for &(fw, b) in &feet[i] {
                for c in fo.cells_of(fw, b) {
                    masks[c] |= bits;
                }
            }
        }
        colors_max = masks.iter().map(|m| m.count_ones()).max().unwrap_or(0);
    }
    // Otherwise (disjoint regions): routes' footprints stacked on a per-wafer grid.
    let (w, h) = (a.mesh_width as usize, a.mesh_height as usize);
    let mut wafers_with_routes: Vec<u32> = valid.iter().flat_map(|&i| feet[i].iter().map(|f| f.0)).collect();
    wafers_with_routes.sort_unstable();
    wafers_with_routes.dedup();
    for wafer in wafers_with_routes.into_iter().filter(|_| !shared) {
        let mut diff = vec![0i32; (w + 1) * (h + 1)];
        let mut any = false;
        for &i in &valid {
            for &(fw, b) in &feet[i] {
                if fw != wafer {
                    continue;
                }
                any = true;
                let (x0, y0, x1, y1) = (b.x as usize, b.y as usize, (b.x + b.w) as usize, (b.y + b.h) as usize);
                let c = p.routes[i].colors as i32;
                diff[y0 * (w + 1) + x0] += c;
                diff[y0 * (w + 1) + x1] -= c;
                diff[y1 * (w + 1) + x0] -= c;
                diff[y1 * (w + 1) + x1] += c;
            }
        }
        if !any {
            continue;
        }
        let mut row = vec![0i32; w + 1];
        let mut worst = (0i32, Pe { x: 0, y: 0 });
        for y in 0..h {
            let mut acc = 0i32;
            for x in 0..w {
                acc += diff[y * (w + 1) + x];
                row[x] += acc;
                if row[x] > worst.0 {
                    worst = (row[x], Pe { x: x as u32, y: y as u32 });
                }
            }
        }
        colors_max = colors_max.max(worst.0 as u32);
        if worst.0 as u32 > avail {
            d.push(ProgramDiag::Pe {
                pe: worst.1,
                wafer,
                msg: format!("router carries {} colors, more than the {avail} available", worst.0),
            });
        }
    }
    // Steps: every receive matched by a send of the same size.
    for (i, r) in p.regions.iter().enumerate().filter(|_| checks.steps) {
        let me = RegionId(i as u32);
        for st in &r.steps {
            match *st {
                Step::Recv { route, bytes } | Step::Send { route, bytes } => {
                    let is_recv = matches!(st, Step::Recv { .. });
                    let Some(rt) = p.routes.get(route.0 as usize) else {
                        d.push(reg_err(i, format!("refers to undefined route {route}")));
                        continue;
                    };
                    let (end, other) = if is_recv { (rt.dst, rt.src) } else { (rt.src, rt.dst) };
                    if end != me {
                        d.push(reg_err(
                            i,
                            format!(
                                "{} on route {route}, which {} region {end}",
                                if is_recv { "receives" } else { "sends" },
                                if is_recv { "delivers to" } else { "starts at" }
                            ),
                        ));
                        continue;
                    }
                    if bytes != rt.bytes {
                        d.push(reg_err(
                            i,
                            format!(
                                "{} {bytes} bytes on route {route}, which carries {}",
                                if is_recv { "receives" } else { "sends" },
                                rt.bytes
                            ),
                        ));
                    }
                    if other.0 < nreg {
                        let matched = p.region(other).steps.iter().any(|s| match (is_recv, s) {
                            (true, Step::Send { route: r2, bytes: b2 })
                            | (false, Step::Recv { route: r2, bytes: b2 }) => *r2 == route && *b2 == bytes,
                            _ => false,
                        });
                        if !matched {
                            d.push(reg_err(
                                i,
                                format!(
                                    "{} on route {route} has no matching {} of {bytes} bytes in region {other}",
                                    if is_recv { "receive" } else { "send" },
                                    if is_recv { "send" } else { "receive" }
                                ),
                            ));
                        }
                    }
                }
                Step::Collective { route } => match p.routes.get(route.0 as usize) {
                    Some(rt) if rt.kind.is_collective() && rt.src == me => {}
                    _ => d.push(reg_err(
                        i,
                        format!("collective step on {route}, which is not a collective of this region"),
                    )),
                },
                Step::Compute => {}
            }
        }
    }
    if checks.steps {
        // The order: what the engines execute (`crate::dataflow`), for the
        // regions whose steps name their routes correctly.
        let refused: std::collections::BTreeSet<RegionId> = d
            .iter()
            .filter_map(|x| match x {
                ProgramDiag::Region { region, .. } => Some(*region),
                _ => None,
            })
            .collect();
        for (r, msg) in crate::dataflow::check_tasks(p, |i| refused.contains(&RegionId(i as u32))) {
            d.push(reg_err(r.0 as usize, msg));
        }
    }
    if !d.is_empty() {
        return Err(ProgramErrors(d));
    }
    // Per-PE figures over the PEs regions occupy (each PE once, whatever shares it).
    let pes = occ.pes();
    let sum = |f: &dyn Fn(&Sram) -> u64| -> u64 {
        cells.iter().zip(&per_cell).fold(0u64, |acc, (c, (s, _))| acc.saturating_add(f(s).saturating_mul(c.rect.pes())))
    };
    let total = sum(&|s| s.total());
    Ok(ProgramInfo {
        pes_used: pes,
        sram_mean: if pes > 0 { total as f64 / pes as f64 } else { 0.0 },
        sram_max: per_cell.iter().map(|(s, _)| s.total()).max().unwrap_or(0),
        sram_code: sum(&|s| s.code),
        sram_weights: sum(&|s| s.weights),
        sram_kv: sum(&|s| s.kv),
        sram_buffers: sum(&|s| s.buffers),
        colors_max,
        longest_route_hops: longest,
        messages,
    })
}

/// An upper bound, in O(1), of the messages [`route_messages`] returns for
/// `rt` (the regions' tilings already verified): the verifier refuses a
/// program whose bound is beyond [`MAX_PROGRAM_MESSAGES`] before expanding.
pub fn route_message_bound(p: &Program, rt: &Route) -> u64 {
    let (s, t) = (p.region(rt.src), p.region(rt.dst));
    let lines = |r: &Region| -> u64 {
        match r.work {
            Work::Gemv { argmax: true, .. } | Work::Embedding { .. } | Work::Gemm { .. } => 1,
            Work::Gemv { .. } => r.rect.h as u64,
            Work::Attention { .. } => r.work.attn_blocks(),
        }
    };
    // Output slices and input ranges are contiguous partitions, so the pairs
    // that overlap are at most the sum of both counts. Without multicast every
    // tail becomes one unicast per PE it reaches: a Gemv's column, an
    // Attention's head block, the norm's row.
    let mc = p.arch.router.multicast;
    let ls = lines(s);
    match rt.kind {
        RouteKind::Forward => match t.work {
            Work::Gemv { .. } => (ls + t.rect.w as u64).saturating_mul(if mc { 1 } else { t.rect.h as u64 }),
            Work::Attention { kv_heads, batch_split, .. } => {
                let blocks = t.work.attn_blocks().max(1);
                let block = if mc { 1 } else { t.rect.pes() / blocks };
                (ls + kv_heads).saturating_mul(batch_split.max(1)).saturating_mul(block + 2)
            }
            Work::Embedding { .. } => 1,
            Work::Gemm { .. } => 0,
        },
        RouteKind::Residual => ls + lines(t),
        RouteKind::Reduce => s.rect.pes().saturating_mul(2),
        RouteKind::Norm => 2 * s.rect.w as u64 + 1,
        RouteKind::Argmax => s.rect.h as u64,
        // Two tails per row (east, west), or one unicast per PE of the row.
        RouteKind::Bcast => (s.rect.h as u64).saturating_mul(if mc { 2 } else { s.rect.w as u64 }),
    }
}

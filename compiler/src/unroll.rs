//! Users in flight, unrolled: one program holding `users × tokens` copies of
//! a compiled step, for the engines to time several users' tokens at once.
//!
//! Owns: the copies and what joins them. Copy `(t, u)` is token `t` of user
//! `u`; copies run `t`-major (`k = t · users + u`), each region's copy named
//! [`wafer_ir::copy_name`] and its turn offset past every earlier copy's
//! (`k · (max turn + 1) + turn` where the step's regions share PEs; a
//! staggered wavefront, `k · d + position`, where they are disjoint: see
//! [`unroll_users`]), so that a region's copies share its PEs in
//! first-come order (the engines make a PE run one task at a time across
//! regions that share it; the closed form starts a region once its cells are
//! free). Copy `(t + 1, u)` depends on copy `(t, u)` as the real machine
//! makes it: a `forward` route carries the sampled token id (`i32` per row)
//! from the sampling region (the Gemv with `argmax`) to the embedding, which
//! starts when it arrives (its task list gets the `Recv` first, as the
//! schedule pass orders a forward input; the sampler sends it last). Each
//! user's first token starts with its data, as the step alone does.
//!
//! Colors: a copy keeps its routes' colors (copies live in disjoint turns, so
//! the verifier's rule — same-colored routes disjoint wherever they are live
//! together — holds between them). A token route is live from its copy to
//! the next token of the same user, over every other user's copy in between,
//! so each gets a color no route it meets while live uses (first fit over the
//! interval of turns): `users` of them at once need about `users` colors free
//! along the path, else [`CompileError::UsersColors`] says how many are.
//!
//! What is not checked: SRAM. The copies of a region are the same resident
//! weights and code on the same PEs, so the unrolled program is verified
//! with every rule but SRAM (stacking a region's copies would count its
//! weights once per copy); the step it came from was verified whole. The KV
//! cache of more users is not modelled, as in the closed form
//! (`wafer_simulator::steady`).
//!
//! Must not: time anything or run an engine (the simulator's `steady` does).

use crate::CompileError;
use wafer_ir::{
    copy_name, footprints_meet, for_each_message, route_footprint, verify_program_checks, Checks, Program, ProgramInfo,
    Rect, Region, RegionId, Route, RouteId, RouteKind, Step, Work,
};

/// Most regions an unrolled program may hold (every copy's).
pub const MAX_UNROLLED_REGIONS: u64 = 1 << 20;

/// Most messages an unrolled program may send ([`wafer_ir::limits::MAX_PROGRAM_MESSAGES`]).
pub const MAX_UNROLLED_MESSAGES: u64 = wafer_ir::limits::MAX_PROGRAM_MESSAGES;

/// The one active region of `p` that `is` picks, or why there is none.
fn the_one(p: &Program, what: &str, is: impl Fn(&Work) -> bool) -> Result<usize, CompileError> {
    let found: Vec<usize> = (0..p.regions.len()).filter(|&i| p.regions[i].active && is(&p.regions[i].work)).collect();
    match found.as_slice() {
        [one] => Ok(*one),
        _ => Err(CompileError::UsersUnroll {
            why: format!("the step has {} active {what} regions; users in flight need exactly one", found.len()),
        }),
    }
}

/// `users` (≥ 1) sequences each stepping `tokens` (≥ 1) times through the
/// verified step `p` (`info`, its witness), as one verified program (see
/// the module doc): copies in `t`-major order, token routes appended after
/// every copy's routes.
pub fn unroll_users(
    p: &Program,
    info: &ProgramInfo,
    users: u32,
    tokens: u32,
) -> Result<(Program, ProgramInfo), CompileError> {
    let (users, tokens) = (users.max(1), tokens.max(1));
    let copies = users as u64 * tokens as u64;
    let (n, m) = (p.regions.len() as u64, p.routes.len() as u64);
    let regions = copies.saturating_mul(n);
    let messages = copies.saturating_mul(info.messages);
    let span = p.regions.iter().map(|r| r.turn).max().unwrap_or(0) as u64 + 1;
    let too_large = || CompileError::UsersTooLarge {
        users,
        tokens,
        regions,
        messages,
        max_regions: MAX_UNROLLED_REGIONS,
        max_messages: MAX_UNROLLED_MESSAGES,
    };
    if regions > MAX_UNROLLED_REGIONS
        || messages > MAX_UNROLLED_MESSAGES
        || copies.saturating_mul(m + 1) > u32::MAX as u64
    {
        return Err(too_large());
    }
    let sampler = the_one(p, "sampling (argmax)", |w| matches!(w, Work::Gemv { argmax: true, .. }))?;
    let embed = the_one(p, "embedding", |w| matches!(w, Work::Embedding { .. }))?;
    if p.routes.iter().any(|rt| rt.dst.0 as usize == embed) || sampler < embed {
        return Err(CompileError::UsersUnroll {
            why: "its embedding takes a route in already, or comes after the sampling".into(),
        });
    }
    // Turns: copy k's region i at `k · d + rel(i)`. Regions that share PEs
    // keep their turns and the copies follow one another (`d` = turns of the
    // step). Disjoint regions (a pipeline, all in one turn) are staggered by
    // their position instead, a wavefront: `d` just above the longest route
    // (so a route's copies are not live together) and enough for a token to
    // reach its next copy forward (`users · d` past the sampler).
    let occ = wafer_ir::Occupancy::new(&p.regions.iter().map(|r| (r.wafer, r.rect)).collect::<Vec<_>>());
    let disjoint =
        occ.pes() == p.regions.iter().map(|r| r.rect.pes()).sum::<u64>() && p.regions.iter().all(|r| r.turn == 0);
    let rel = |i: usize| if disjoint { i as u64 } else { p.regions[i].turn as u64 };
    let d = if disjoint {
        let longest = p.routes.iter().filter(|rt| !rt.kind.is_collective()).map(|rt| rt.dst.0.saturating_sub(rt.src.0));
        (longest.max().unwrap_or(0) as u64 + 1).max(((sampler - embed) as u64 + 1).div_ceil(users as u64))
    } else {
        span
    };
    if copies.saturating_mul(d.max(n)) > wafer_ir::limits::MAX_TURN as u64 {
        return Err(too_large());
    }
    let turn = |k: usize, i: usize| k as u64 * d + rel(i);
    // Region order: by turn, copies in order among equal turns.
    let mut order: Vec<(u64, usize, usize)> = (0..copies as usize)
        .flat_map(|k| (0..n as usize).map(move |i| (k, i)))
        .map(|(k, i)| (turn(k, i), k, i))
        .collect();
    order.sort_unstable();
    let mut at = vec![0u32; order.len()];
    for (pos, &(_, k, i)) in order.iter().enumerate() {
        at[k * n as usize + i] = pos as u32;
    }
    let id = |k: usize, i: usize| RegionId(at[k * n as usize + i]);
    let m32 = m as u32;
    let mut out = Program { regions: Vec::with_capacity(regions as usize), routes: Vec::new(), ..p.clone() };
    for &(t_k, k, i) in &order {
        let r = &p.regions[i];
        out.regions.push(Region {
            name: copy_name(&r.name, k as u32 % users, k as u32 / users),
            turn: t_k as u32,
            steps: r.steps.iter().map(|&s| s.with_route_offset(k as u32 * m32)).collect(),
            ..r.clone()
        });
    }
    out.routes.reserve((copies * m + copies) as usize);
    for k in 0..copies as usize {
        for rt in &p.routes {
            out.routes.push(Route { src: id(k, rt.src.0 as usize), dst: id(k, rt.dst.0 as usize), ..rt.clone() });
        }
    }
    // Users enter staggered, as in the steady state the closed form
    // describes: user u's first token when user u - 1's has gone at least
    // 1/users of the step (an admission message from the first region to end
    // by then in the closed form, else the last that can send one forward).
    // Then each user's next token enters when its sampled token reaches the
    // embedding.
    let est = wafer_cost::estimate(p, info).map_err(CompileError::Starved)?;
    let gap = est.cycles / users as f64;
    let can = |i: usize| p.regions[i].active && turn(0, i) < turn(1, embed);
    let end = |i: usize| est.regions[i].end;
    let admit = (0..p.regions.len())
        .filter(|&i| can(i) && end(i) >= gap)
        .min_by(|&a, &b| end(a).total_cmp(&end(b)).then(a.cmp(&b)))
        .or_else(|| (0..p.regions.len()).filter(|&i| can(i)).max_by(|&a, &b| end(a).total_cmp(&end(b)).then(b.cmp(&a))))
        .unwrap_or(embed);
    // (region of the step sending, copy sending, copy whose embedding receives)
    let mut joins: Vec<(usize, usize, usize)> = Vec::new();
    for u in 1..users as usize {
        joins.push((admit, u - 1, u));
    }
    for k in 0..copies.saturating_sub(users as u64) as usize {
        joins.push((sampler, k, k + users as usize));
    }
    let avail = p.arch.program_colors();
    // The routes added so far: first and last live turn, footprint, color.
    type Added = (u64, u64, Vec<(u32, Rect)>, u32);
    let mut added: Vec<Added> = Vec::new();
    for (src0, ks, kd) in joins {
        let proto = Route {
            kind: RouteKind::Forward,
            src: RegionId(src0 as u32),
            dst: RegionId(embed as u32),
            color: 0,
            colors: 1,
            bytes: 0,
        };
        let feet = route_footprint(p, &proto);
        let (s, e) = (turn(ks, src0), turn(kd, embed));
        let mut blocked = vec![false; avail as usize];
        for rt in &p.routes {
            let (a, b) = (rel(rt.src.0 as usize), rel(rt.dst.0 as usize));
            let (a, b) = (a.min(b), a.max(b));
            // Some copy j has its live turns [j·d + a, j·d + b] overlapping [s, e].
            let lo = s.saturating_sub(b).div_ceil(d);
            let hi = e.checked_sub(a).map(|x| (x / d).min(copies - 1));
            if hi.is_some_and(|hi| lo <= hi) && footprints_meet(&route_footprint(p, rt), &feet) {
                for c in rt.color..(rt.color + rt.colors).min(avail) {
                    blocked[c as usize] = true;
                }
            }
        }
        let free = blocked.iter().filter(|&&b| !b).count() as u32;
        for (a, b, f, c) in &added {
            if *a <= e && s <= *b && footprints_meet(f, &feet) {
                blocked[*c as usize] = true;
            }
        }
        let Some(color) = (0..avail).find(|&c| !blocked[c as usize]) else {
            return Err(CompileError::UsersColors {
                users,
                from: p.regions[src0].name.clone(),
                to: p.regions[embed].name.clone(),
                free,
                available: avail,
            });
        };
        let (src, dst) = (id(ks, src0), id(kd, embed));
        let rid = RouteId(out.routes.len() as u32);
        out.routes.push(Route { src, dst, color, ..proto });
        let mut bytes = 0u64;
        for_each_message(&out, rid, |msg| bytes += msg.bytes);
        out.routes[rid.0 as usize].bytes = bytes;
        // A forward input is received first; the sender sends it after everything else.
        out.regions[dst.0 as usize].steps.insert(0, Step::Recv { route: rid, bytes });
        out.regions[src.0 as usize].steps.push(Step::Send { route: rid, bytes });
        added.push((s, e, feet, color));
    }
    let info = verify_program_checks(&out, Checks { sram: false, ..Checks::ALL })
        .map_err(|errors| CompileError::Verify { pass: "unroll".into(), errors })?;
    Ok((out, info))
}

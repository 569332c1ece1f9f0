//! Speculative decoding's draft model on the target's wafers.
//!
//! A speculative round runs `k` decode steps of the draft, then one
//! `(k + 1)`-token verify step of the target: the two never compute at the
//! same time, so the draft can be resident on the target's PEs and run in
//! later turns (`Region::turn`). Owns: [`stack_draft`], which builds that
//! resident program (the target's regions, then the draft's with their turns
//! after the target's last and their routes renumbered), and [`place_draft`],
//! which compiles the draft on the target's arch and wafer count, stacks it,
//! verifies the two programs a round runs — the draft step (draft active,
//! target resident but inactive) and the verify step (the resident program
//! restated for `k + 1` tokens, target active, draft inactive) — and falls
//! back to the draft on its own wafers when they do not verify, keeping the
//! verifier's first diagnostic (PE and bytes) as the reason. Must not: time
//! anything (the engines time the two programs) or do I/O.
//!
//! What the verifier checks on the resident program is what sharing needs:
//! SRAM summed per physical PE (`Occupancy`, `Sram::stack`: weights and KV of
//! both models side by side, code and scratch buffers once) and colors only
//! between routes that meet in overlapping live turns (none of the draft's
//! routes is live in a target turn). The verify step's restatement
//! recomputes every region's buffers for `k + 1` rows, the draft's too (they
//! are only ever used for one): a conservative check.
//!
//! Where plain stacking overflows SRAM in every [`Orientation`] (each
//! strategy fills its PEs, and both models put their embedding tables in a
//! strip along the bottom), the two are compiled again side by side: the
//! target on the first columns (else rows) of every wafer and the draft on
//! the rest ([`Split`], the draft's share a little above its share of the
//! resident bytes). That changes the target's mapping, so the round times the
//! mapping it runs ([`DraftPlan::target`]); the plain decode figures stay the
//! plain mapping's. Measured (context 1024, wse3, k = 4): llama-3.1-8b with a
//! llama-3.2-1b draft shares one wafer side by side (628 + 127 columns);
//! at context 4096 it does not, and the draft takes a wafer of its own.

use crate::{compile, prefill_chunk, CompileError, CompileOptions, Compiled, Wafers};
use wafer_ir::{verify_program, ArchSpec, Graph, Program, ProgramInfo, RegionId};

/// Why a draft cannot be stacked on a target, or a round cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DraftError {
    /// The two programs disagree on something a resident program holds once.
    #[error("the draft's program has {field} {draft}, the target's {target}: they cannot share one program")]
    Mismatch { field: &'static str, target: String, draft: String },
    /// The stacked program (or one of its steps) fails the verifier.
    #[error("the draft does not fit beside the target ({step}): {first}")]
    DoesNotFit { step: &'static str, first: String },
    /// The target's own `(k + 1)`-token verify step does not fit its mapping.
    #[error("the {tokens}-token verify step does not fit: {first}")]
    VerifyStep { tokens: u64, first: String },
    /// The draft does not compile on any wafers offered.
    #[error("the draft {model} does not map: {why}")]
    DraftDoesNotMap { model: String, why: String },
}

/// The first diagnostic of a compile error (the verifier's names the PE and the bytes).
pub fn first_diagnostic(e: &CompileError) -> String {
    match e {
        CompileError::Verify { errors, .. } => errors.0.first().map_or_else(|| e.to_string(), |d| d.to_string()),
        _ => e.to_string(),
    }
}

/// Where the draft runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Resident on the target's PEs, run in later turns: no extra machines.
    Shared,
    /// On wafers of its own beside the target's.
    OwnWafers,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Shared => "shared",
            Placement::OwnWafers => "own wafers",
        }
    }
}

/// A verified program and its witness.
pub type Verified = (Program, ProgramInfo);

/// How a speculative round runs on the wafer: the two programs it times and
/// where the draft lives.
#[derive(Debug, Clone)]
pub struct DraftPlan {
    pub placement: Placement,
    /// How the shared draft lies on the target's mesh (`AsCompiled` on its own wafers).
    pub orientation: Orientation,
    /// Why the draft does not share the target's wafers (`OwnWafers` only):
    /// the verifier's first diagnostic, or why the draft did not compile there.
    pub why_not_shared: Option<String>,
    /// How every wafer's mesh was cut between the two when they were
    /// compiled side by side (None: both compiled on the whole mesh).
    pub split: Option<Split>,
    /// The target's mapping the round runs, when it is not the one given.
    pub target: Option<Compiled>,
    /// Why the target was compiled again for the round.
    pub target_recompiled: Option<String>,
    /// The draft compiled on its own (its statistics; its wafer count).
    pub draft: Compiled,
    /// One draft decode step: shared, the resident program with only the
    /// draft's regions active; own wafers, the draft's own program.
    pub draft_step: Verified,
    /// The target's `k + 1`-token verify step: shared, the resident program
    /// restated for `k + 1` tokens with only the target's regions active;
    /// own wafers, the target's program restated.
    pub verify_step: Verified,
    /// Wafers the round uses: the target's when shared, else the target's
    /// plus the draft's.
    pub machines: u32,
}

/// The resident program: `target`'s regions and routes, then `draft`'s with
/// every turn after the target's last and their region and route ids
/// renumbered. Not verified (see [`place_draft`]). Both must be decode steps
/// of one batch, context and dtypes on one arch, the draft on at most the
/// target's wafers.
pub fn stack_draft(target: &Program, draft: &Program) -> Result<Program, DraftError> {
    let mismatch = |field: &'static str, t: String, d: String| Err(DraftError::Mismatch { field, target: t, draft: d });
    if target.batch != draft.batch {
        return mismatch("batch", target.batch.to_string(), draft.batch.to_string());
    }
    if target.context != draft.context {
        return mismatch("context", target.context.to_string(), draft.context.to_string());
    }
    if target.new_tokens != 1 || draft.new_tokens != 1 {
        return mismatch("new tokens", target.new_tokens.to_string(), draft.new_tokens.to_string());
    }
    for (field, t, d) in [
        ("weight dtype", target.weight_dtype, draft.weight_dtype),
        ("activation dtype", target.act_dtype, draft.act_dtype),
        ("KV dtype", target.kv_dtype, draft.kv_dtype),
    ] {
        if t != d {
            return mismatch(field, t.to_string(), d.to_string());
        }
    }
    if target.arch.name != draft.arch.name
        || target.arch.mesh_width != draft.arch.mesh_width
        || target.arch.mesh_height != draft.arch.mesh_height
    {
        return mismatch("arch", target.arch.name.clone(), draft.arch.name.clone());
    }
    if draft.wafers > target.wafers {
        return mismatch("wafers", target.wafers.to_string(), draft.wafers.to_string());
    }
    let (regions, routes) = (target.regions.len() as u32, target.routes.len() as u32);
    let after = target.regions.iter().map(|r| r.turn).max().map_or(0, |t| t + 1);
    let mut p = target.clone();
    p.regions.extend(draft.regions.iter().map(|r| {
        let mut r = r.clone();
        r.name = format!("draft.{}", r.name);
        r.turn += after;
        r.steps = r.steps.iter().map(|&st| st.with_route_offset(routes)).collect();
        r
    }));
    p.routes.extend(draft.routes.iter().map(|rt| {
        let mut rt = rt.clone();
        rt.src = RegionId(rt.src.0 + regions);
        rt.dst = RegionId(rt.dst.0 + regions);
        rt
    }));
    Ok(p)
}

/// `resident` with only the target's regions (the first `target_regions`)
/// or only the draft's active; each keeps its own flag otherwise (MoE experts
/// not routed to stay inactive).
fn with_active(resident: &Program, target_regions: usize, draft: bool) -> Program {
    let mut p = resident.clone();
    for (i, r) in p.regions.iter_mut().enumerate() {
        if (i < target_regions) == draft {
            r.active = false;
        }
    }
    p
}

/// The two steps of a round on the resident program, each verified.
fn shared_steps(target: &Program, draft: &Program, verify_tokens: u64) -> Result<(Verified, Verified), DraftError> {
    let resident = stack_draft(target, draft)?;
    let n = target.regions.len();
    let fits = |step: &'static str, e: wafer_ir::ProgramErrors| DraftError::DoesNotFit {
        step,
        first: e.0.first().map_or_else(|| e.to_string(), |d| d.to_string()),
    };
    let dp = with_active(&resident, n, true);
    let di = verify_program(&dp).map_err(|e| fits("draft step", e))?;
    let vp = with_active(&resident, n, false);
    let v = prefill_chunk(&vp, verify_tokens).map_err(|e| match e {
        CompileError::Verify { errors, .. } => fits("verify step", errors),
        e => DraftError::DoesNotFit { step: "verify step", first: e.to_string() },
    })?;
    Ok(((dp, di), v))
}

/// How the draft's placement is laid on the target's wafers: as compiled, or
/// mirrored (an isometry of the mesh, so hops, footprints and which routes
/// meet — hence its colors — are unchanged; only where it lands moves, e.g.
/// its embedding strip away from the target's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    AsCompiled,
    /// Top and bottom swapped.
    FlippedRows,
    /// Left and right swapped.
    FlippedColumns,
    /// Both (a half turn).
    HalfTurn,
}

impl Orientation {
    pub const ALL: [Orientation; 4] =
        [Orientation::AsCompiled, Orientation::FlippedRows, Orientation::FlippedColumns, Orientation::HalfTurn];

    pub fn name(self) -> &'static str {
        match self {
            Orientation::AsCompiled => "as compiled",
            Orientation::FlippedRows => "rows flipped",
            Orientation::FlippedColumns => "columns flipped",
            Orientation::HalfTurn => "half turn",
        }
    }
}

/// `p` with every region mirrored as `o` says on its wafer's mesh.
pub fn orient(p: &Program, o: Orientation) -> Program {
    let (w, h) = (p.arch.mesh_width, p.arch.mesh_height);
    let (rows, cols) = match o {
        Orientation::AsCompiled => (false, false),
        Orientation::FlippedRows => (true, false),
        Orientation::FlippedColumns => (false, true),
        Orientation::HalfTurn => (true, true),
    };
    let mut q = p.clone();
    for r in &mut q.regions {
        if rows {
            r.rect.y = h - r.rect.y - r.rect.h;
        }
        if cols {
            r.rect.x = w - r.rect.x - r.rect.w;
        }
    }
    q
}

/// The first orientation of `draft` whose two steps verify beside
/// `target`, else the first attempt's reason.
fn try_orientations(
    target: &Program,
    draft: &Program,
    verify_tokens: u64,
) -> Result<(Orientation, Program, Verified, Verified), DraftError> {
    let mut first = None;
    for o in Orientation::ALL {
        let d = orient(draft, o);
        match shared_steps(target, &d, verify_tokens) {
            Ok((ds, vs)) => return Ok((o, d, ds, vs)),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.expect("four orientations tried"))
}

/// A wafer's mesh cut in two: the target's first `target` columns (or
/// rows), the draft's `draft` after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub columns: bool,
    pub target: u32,
    pub draft: u32,
}

impl Split {
    /// `arch` with the mesh of one side.
    fn arch(&self, arch: &ArchSpec, draft: bool) -> ArchSpec {
        let mut a = arch.clone();
        let n = if draft { self.draft } else { self.target };
        if self.columns {
            a.mesh_width = n;
        } else {
            a.mesh_height = n;
        }
        a
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.columns { "columns" } else { "rows" };
        write!(
            f,
            "the target on the first {} {what} of every wafer, the draft on the {} after them",
            self.target, self.draft
        )
    }
}

/// The draft's share of the mesh's columns (or rows) when the two are compiled side by side,
/// as multiples of its share of the two models' resident bytes
/// (packing leaves gaps, so more than its share).
pub const SPLIT_SLACK: [f64; 3] = [1.25, 1.5, 2.0];

/// Places `draft_graph` for speculative decoding with `verify_tokens` (k + 1)
/// tokens per verify step beside the compiled `target` (of `target_graph`) on
/// `arch`, with `opts` (the target's options):
/// 1. the target's mapping for the round: its own when it holds the verify
///    step, else compiled again with room for it (`prefill_chunk`);
/// 2. the draft compiled on that mapping's wafer count and stacked on its PEs
///    in the first [`Orientation`] where both steps verify;
/// 3. else both compiled again side by side on split columns, then rows, of
///    every wafer (the draft's share from [`SPLIT_SLACK`], after the target's);
/// 4. else the draft compiled with `opts` (its wafers as given) on wafers of
///    its own, with the first attempt's reason.
pub fn place_draft(
    target: &Program,
    target_graph: &Graph,
    draft_graph: &Graph,
    arch: &ArchSpec,
    opts: &CompileOptions,
    verify_tokens: u64,
) -> Result<DraftPlan, DraftError> {
    let room = CompileOptions { prefill_chunk: opts.prefill_chunk.max(verify_tokens), ..opts.clone() };
    let verify_failed = |e: CompileError| DraftError::VerifyStep { tokens: verify_tokens, first: first_diagnostic(&e) };
    // The verify step on the target's own wafers (used when the draft takes wafers of its own).
    let (again, recompiled, verify_alone) = match prefill_chunk(target, verify_tokens) {
        Ok(v) => (None, None, v),
        Err(e) => {
            let why =
                format!("its mapping does not hold the {verify_tokens}-token verify step ({})", first_diagnostic(&e));
            let t = compile(target_graph, arch, &room).map_err(verify_failed)?;
            let v = prefill_chunk(&t.program, verify_tokens).map_err(verify_failed)?;
            (Some(t), Some(why), v)
        }
    };
    let tp = again.as_ref().map_or(target, |c| &c.program);
    let on_target = CompileOptions { wafers: Wafers::Fixed(tp.wafers), ..room.clone() };
    let plan = |t: Option<&Compiled>, d: &Compiled, split: Option<Split>, o, draft_step, verify_step| DraftPlan {
        placement: Placement::Shared,
        orientation: o,
        why_not_shared: None,
        split,
        target: t.cloned(),
        target_recompiled: match (split, &recompiled) {
            (Some(_), _) => Some("compiled again on its side of the split".into()),
            (None, r) => r.clone(),
        },
        draft: d.clone(),
        draft_step,
        verify_step,
        machines: t.map_or(target.wafers, |t| t.program.wafers),
    };
    let first = compile(draft_graph, arch, &on_target);
    let why = match &first {
        Ok(d) => match try_orientations(tp, &d.program, verify_tokens) {
            Ok((o, program, ds, vs)) => {
                return Ok(plan(again.as_ref(), &Compiled { program, ..d.clone() }, None, o, ds, vs));
            }
            Err(e) => e.to_string(),
        },
        Err(e) => format!("the draft does not map on the target's {} wafer(s): {}", tp.wafers, first_diagnostic(e)),
    };
    // Side by side: the target on the first columns (rows) of every wafer, the draft on the rest.
    let need = |g: &Graph| {
        let s = wafer_ir::graph_stats(g);
        s.weight_bytes as f64 + s.kv_bytes_per_token as f64 * target.context as f64 * g.batch as f64
    };
    let share = need(draft_graph) / (need(draft_graph) + need(target_graph)).max(1.0);
    for columns in [true, false] {
        for slack in SPLIT_SLACK {
            let side = if columns { arch.mesh_width } else { arch.mesh_height };
            let cut = ((side as f64 * (share * slack).min(0.5)).ceil() as u32).clamp(1, side - 1);
            let split = Split { columns, target: side - cut, draft: cut };
            let (ta, da) = (split.arch(arch, false), split.arch(arch, true));
            let (Ok(mut t), Ok(mut d)) =
                (compile(target_graph, &ta, &on_target), compile(draft_graph, &da, &on_target))
            else {
                continue;
            };
            t.program.arch = arch.clone();
            d.program.arch = arch.clone();
            for r in &mut d.program.regions {
                if columns {
                    r.rect.x += split.target;
                } else {
                    r.rect.y += split.target;
                }
            }
            if let Ok((ds, vs)) = shared_steps(&t.program, &d.program, verify_tokens) {
                return Ok(plan(Some(&t), &d, Some(split), Orientation::AsCompiled, ds, vs));
            }
        }
    }
    let own = match (first, opts.wafers == on_target.wafers && opts.prefill_chunk == room.prefill_chunk) {
        (Ok(d), true) => d,
        _ => compile(draft_graph, arch, opts)
            .map_err(|e| DraftError::DraftDoesNotMap { model: draft_graph.name.clone(), why: first_diagnostic(&e) })?,
    };
    let step = (own.program.clone(), own.info.clone());
    Ok(DraftPlan {
        placement: Placement::OwnWafers,
        orientation: Orientation::AsCompiled,
        why_not_shared: Some(why),
        split: None,
        machines: tp.wafers + own.program.wafers,
        target: again,
        target_recompiled: recompiled,
        draft: own,
        draft_step: step,
        verify_step: verify_alone,
    })
}

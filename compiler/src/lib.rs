//! wafer-compiler: lowers a decode-step graph onto a mesh of PEs.
//!
//! The pipeline is an explicit sequence of named passes ([`PASSES`]), each a
//! plain function; the spatial IR can be printed after any of them
//! (`dump_after`) and verified after each (`verify_each`, with the rules that
//! hold at that stage). The mapping search scores candidates with the
//! per-region closed forms of `wafer-cost`, and `auto` weighs whole programs
//! with its program-level closed form ([`wafer_cost::estimate`]) — the same
//! functions the analytical engine reports, so the compiler optimises what
//! the engines price.
//!
//! Architecture invariant: no I/O; depends on `ir` and `cost`, never on the
//! simulator, and runs no engine. Errors are typed and carry the numbers
//! (bytes that do not fit, wafers that would, the largest context that fits).

pub mod chunk;
pub use chunk::prefill_chunk;
pub mod draft;
pub use draft::{place_draft, stack_draft, DraftError, DraftPlan, Orientation, Placement};
pub mod fuse;
pub mod partition;
pub mod place;
pub mod route;
pub mod spread;
pub mod unroll;
pub use unroll::unroll_users;

use fuse::{Group, GroupKind};
use partition::{Ctx, Packing, Plan};
use serde::Serialize;
use wafer_ir::limits::MAX_WAFERS;
use wafer_ir::{
    print_program, sram_need, verify_program_checks, ArchSpec, Checks, DType, Graph, Program, ProgramErrors,
    ProgramInfo, Rect, Reduce, Region, RegionId, RouteKind, Sram, Step, Work,
};

/// The passes, in order, with what each does.
pub const PASSES: [(&str, &str); 6] = [
    (
        "fuse",
        "group graph ops into regions: fused GEMVs with norm prologues and element-wise epilogues, attention blocks",
    ),
    ("partition", "choose wafers, PE areas and each region's tiling and reduction shape (searched on the cost model)"),
    ("place", "give every region a rectangle: strips in execution order, snaking across each wafer"),
    ("route", "add forward, residual and collective routes and assign colors, reusing them on disjoint paths"),
    ("alloc", "allocate per-PE SRAM: code reserve, weights, KV cache, buffers"),
    ("schedule", "write each region's per-PE task template: receive, collectives, compute, send"),
];

/// Which family of mappings the compiler may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The fastest of the others on the cost model (the analytical closed form).
    #[default]
    Auto,
    /// Disjoint regions, one per fused op, in strips (PEs never shared).
    Pipeline,
    /// Every layer of a wafer's stage over one block of PEs, layers taking turns.
    Spread,
    /// Blocks of `k` layers each, every block spread, the wafer holding several.
    Hybrid(u32),
}

impl Strategy {
    pub fn name(&self) -> String {
        match self {
            Strategy::Auto => "auto".into(),
            Strategy::Pipeline => "pipeline".into(),
            Strategy::Spread => "spread".into(),
            Strategy::Hybrid(k) => format!("hybrid:{k}"),
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(v: &str) -> Result<Strategy, String> {
        match v {
            "auto" => Ok(Strategy::Auto),
            "pipeline" => Ok(Strategy::Pipeline),
            "spread" => Ok(Strategy::Spread),
            _ => match v.strip_prefix("hybrid:").map(str::parse::<u32>) {
                Some(Ok(k)) if (1..=1024).contains(&k) => Ok(Strategy::Hybrid(k)),
                _ => Err(format!(
                    "unknown strategy `{v}`: auto, pipeline, spread or hybrid:K (K layers per block, 1..=1024)"
                )),
            },
        }
    }
}

/// How many wafers to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wafers {
    /// The fewest that hold the model.
    Auto,
    Fixed(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    pub wafers: Wafers,
    /// Run the verifier after every pass (with the rules that hold by then).
    pub verify_each: bool,
    /// Print the spatial IR after these passes.
    pub dump_after: Vec<String>,
    /// Accumulator of every Gemv's partial sums: fp32 (`@fmachs`, the default)
    /// or fp16 (`@fmach`: twice the rate, half the fabric bytes, as MeshGEMV;
    /// error bound in `wafer_simulator::functional`).
    pub accumulate: DType,
    /// Refuse (before allocating) a compile whose estimated memory is above
    /// this many bytes ([`wafer_ir::limits::UNLIMITED`] by default; the CLI passes `--max-memory`).
    pub max_memory_bytes: u64,
    /// Mapping family ([`Strategy::Auto`] by default).
    pub strategy: Strategy,
    /// `spread`/`hybrid` only: force square `P×P` blocks.
    pub grid: Option<u32>,
    /// `spread`/`hybrid` only: force MeshGEMV's `meet` reduction with `G` groups.
    pub groups: Option<u32>,
    /// What [`Strategy::Auto`] minimises first.
    pub objective: Objective,
    /// `spread`/`hybrid` only: attention in a strip of its own (`Some(true)`),
    /// inside the blocks (`Some(false)`), or whichever is faster (`None`).
    pub attention_strip: Option<bool>,
    /// Room for a prompt chunk: every region's buffers must fit for this many
    /// tokens of each sequence at once (1, the default: decode only), so that
    /// [`prefill_chunk`] of this size verifies on the same mapping.
    pub prefill_chunk: u64,
}

/// What [`Strategy::Auto`] minimises first when the strategies need different
/// wafer counts (each strategy takes the fewest wafers it fits on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// The fewest wafers (what `--wafers auto` promises); among equals, the
    /// lowest estimated latency.
    #[default]
    Wafers,
    /// The lowest estimated latency, whatever wafer count it takes; among
    /// equals, the fewest wafers.
    Latency,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            wafers: Wafers::Auto,
            verify_each: false,
            dump_after: Vec::new(),
            max_memory_bytes: wafer_ir::limits::UNLIMITED,
            accumulate: DType::F32,
            strategy: Strategy::Auto,
            grid: None,
            groups: None,
            objective: Objective::Wafers,
            attention_strip: None,
            prefill_chunk: 1,
        }
    }
}

/// Why a graph cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error("op `{op}` cannot be mapped: {why}")]
    Unsupported { op: String, why: String },
    #[error("{0}")]
    DoesNotFit(Box<DoesNotFit>),
    #[error(
        "context {context} is too long for {wafers} wafer(s) of {arch}: the KV cache needs {kv_bytes} bytes; the largest context that fits is {max_context}"
    )]
    ContextTooLong { context: u64, max_context: u64, wafers: u32, arch: String, kv_bytes: u64 },
    #[error(
        "batch {batch} does not fit in the SRAM of {wafers} wafer(s) of {arch} at context {context}: the KV cache of \
         {batch} sequences needs {kv_bytes} bytes beside the weights and every PE's batch buffers; the largest batch \
         that fits is {max_batch} ({hint})"
    )]
    BatchTooLarge { batch: u64, max_batch: u64, context: u64, wafers: u32, arch: String, kv_bytes: u64, hint: String },
    #[error(
        "region `{region}` cannot be mapped on any number of wafers: even its smallest tile needs {need} bytes per PE \
         ({what}), more than the {sram} bytes of SRAM a PE has; use a smaller batch (now {batch}) or prefill \
         chunk (now {chunk}), a narrower activation or KV dtype, or a PE with more SRAM"
    )]
    Untileable { region: String, need: u64, sram: u64, what: String, batch: u64, chunk: u64 },
    #[error("the regions could not be packed onto {wafers} wafer(s)")]
    Packing { wafers: u32 },
    #[error(
        "{model} needs at least {min_wafers} wafers of {arch} ({need} bytes of weights and KV cache in SRAM, at most \
         {per_wafer} packable per wafer); the limit is {max} wafers: use a shorter context, a smaller batch or narrower dtypes"
    )]
    TooManyWafers { model: String, arch: String, min_wafers: u64, need: u64, per_wafer: u64, max: u32 },
    #[error(
        "region `{region}` needs at least {pes} PEs ({bytes} bytes), more than the {per_wafer} PEs one wafer of {arch} \
         can give a region, and a region cannot span wafers: use a shorter context (now {context}), a smaller batch \
         or narrower dtypes"
    )]
    RegionTooLarge { region: String, pes: u64, bytes: u64, per_wafer: u64, arch: String, context: u64 },
    #[error("route {route} finds no free color among the {available} available to programs")]
    Colors { route: String, available: u32 },
    #[error(
        "{users} users x {tokens} tokens in flight unroll to {regions} regions and {messages} messages; at most \
         {max_regions} and {max_messages} are allowed: use fewer users or tokens per user"
    )]
    UsersTooLarge { users: u32, tokens: u32, regions: u64, messages: u64, max_regions: u64, max_messages: u64 },
    #[error(
        "{users} users in flight cannot each feed their sampled token back from `{from}` to `{to}`: the routes \
         there leave {free} of the {available} colors free while the token routes are live, and they are live \
         together (about one color per user): use fewer users"
    )]
    UsersColors { users: u32, from: String, to: String, free: u32, available: u32 },
    #[error("users in flight cannot be unrolled: {why}")]
    UsersUnroll { why: String },
    #[error("after pass `{pass}`: {errors}")]
    Verify { pass: String, errors: ProgramErrors },
    #[error("unknown pass `{0}`; passes are fuse, partition, place, route, alloc, schedule")]
    UnknownPass(String),
    #[error("compiling {0}")]
    Resources(wafer_ir::ResourceError),
    #[error("the compiled program has no latency: {0}")]
    Starved(wafer_cost::Starved),
    #[error(
        "prefill is not mapped onto the wafer yet: graph `{model}` computes {new_tokens} new tokens per sequence; \
         compile decode steps (one new token) or use `wafer graph --prompt` / `wafer gpu --prompt` for prefill"
    )]
    Prefill { model: String, new_tokens: u64 },
}

/// A model that does not fit on the wafers given, with the numbers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{model} does not fit on {wafers} wafer(s) of {arch}: it needs {need} bytes of weights and KV cache in SRAM, \
     {wafers} wafer(s) offer {have} usable bytes ({usable_per_pe} bytes per PE after the code reserve, {fill:.0}% packable); \
     {why}. {advice}"
)]
pub struct DoesNotFit {
    pub model: String,
    pub arch: String,
    pub wafers: u32,
    pub need: u64,
    pub have: u64,
    pub short: u64,
    pub why: String,
    pub usable_per_pe: u64,
    pub fill: f64,
    pub advice: String,
}

/// Figures a user wants after compiling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompileStats {
    pub wafers: u32,
    pub pes_used: u64,
    pub pes_available: u64,
    pub regions: usize,
    pub routes: usize,
    pub messages: u64,
    pub sram_mean_bytes: f64,
    pub sram_max_bytes: u64,
    pub sram_code_bytes: u64,
    pub sram_weight_bytes: u64,
    pub sram_kv_bytes: u64,
    pub sram_buffer_bytes: u64,
    pub colors_max_per_router: u32,
    pub colors_available: u32,
    pub longest_route_hops: u32,
    /// The step's closed form ([`wafer_cost::estimate`], what the analytical
    /// engine reports): cycles and µs per token.
    pub estimate_cycles: f64,
    pub estimate_us: f64,
    /// Strip width per wafer chosen by the search.
    pub strip_widths: Vec<u32>,
    /// Σ region costs of the searched mapping and of a fixed one (squares with
    /// trees) on the same areas: the search's gain on the cost model.
    pub searched_region_cycles: f64,
    pub fixed_square_region_cycles: f64,
    /// The strategy that was compiled (never `auto`).
    pub strategy: String,
    /// Block size (columns, rows) per wafer of a `spread`/`hybrid` mapping.
    pub blocks: Vec<(u32, u32)>,
    /// Every strategy `auto` weighed, with its estimate or why it failed.
    pub alternatives: Vec<Alternative>,
}

/// One strategy `auto` tried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alternative {
    pub strategy: String,
    /// Its closed-form estimate ([`wafer_cost::estimate`]), µs per token; `None` when it did not compile.
    pub estimate_us: Option<f64>,
    pub wafers: Option<u32>,
    pub error: Option<String>,
}

/// A compiled program with its verifier witness.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub program: Program,
    pub info: ProgramInfo,
    pub stats: CompileStats,
    /// (pass, textual IR) for each pass named in `dump_after`.
    pub dumps: Vec<(String, String)>,
}

fn groups_to_program(g: &Graph, arch: &ArchSpec, groups: &[Group], wafers: u32) -> Program {
    let regions = groups
        .iter()
        .map(|gr| {
            let (work, h) = match gr.kind {
                GroupKind::Gemv { n, k, glu, norm, argmax, epilogue_ops, .. } => (
                    Work::Gemv {
                        n,
                        k,
                        tile_n: n,
                        tile_k: k,
                        reduce: Reduce::Tree,
                        glu,
                        norm,
                        argmax,
                        epilogue_ops,
                        acc: DType::F32,
                        mac: true,
                        batch_chunk: 0,
                    },
                    1,
                ),
                GroupKind::Attention { kv_heads, group, head_dim, positions, slot } => (
                    Work::Attention {
                        kv_heads,
                        group,
                        head_dim,
                        positions,
                        slot,
                        rows_per_head: 1,
                        pos_per_pe: positions,
                        reduce: Reduce::Tree,
                        batch_split: 1,
                    },
                    kv_heads as u32,
                ),
                GroupKind::Embedding { vocab, hidden } => {
                    (Work::Embedding { vocab, hidden, rows_per_pe: vocab, token: vocab / 2 }, 1)
                }
            };
            Region {
                name: gr.name.clone(),
                layer: gr.layer,
                wafer: 0,
                rect: Rect { x: 0, y: 0, w: 1, h },
                turn: 0,
                active: gr.active,
                ops: gr.ops.iter().map(|&o| g.op(o).name.clone()).collect(),
                work,
                sram: Sram::default(),
                steps: vec![],
            }
        })
        .collect();
    Program {
        model: g.name.clone(),
        batch: g.batch,
        new_tokens: 1,
        context: g.context,
        weight_dtype: g.weight_dtype,
        act_dtype: g.act_dtype,
        kv_dtype: g.kv_dtype,
        wafers,
        arch: arch.clone(),
        regions,
        routes: vec![],
    }
}

/// Pass `alloc`.
fn alloc(p: &mut Program) {
    for i in 0..p.regions.len() {
        p.regions[i].sram = sram_need(p, &p.regions[i].work);
    }
}

/// Pass `schedule`: each region's task template, the order the engines
/// execute (`wafer_ir::dataflow`): its forward inputs, the norm's all-reduce,
/// the compute, the reduction, then its residual (so a residual gates only
/// the epilogue: it is added to the reduced value), the arg-max or the row
/// broadcast, and its sends in route order.
fn schedule(p: &mut Program) {
    let mut steps: Vec<Vec<Step>> = vec![Vec::new(); p.regions.len()];
    for (i, st) in steps.iter_mut().enumerate() {
        let me = RegionId(i as u32);
        let of = |kind: RouteKind, to_me: bool| {
            p.routes
                .iter()
                .enumerate()
                .filter(move |(_, r)| r.kind == kind && if to_me { r.dst == me } else { r.src == me })
        };
        for (j, r) in of(RouteKind::Forward, true) {
            st.push(Step::Recv { route: wafer_ir::RouteId(j as u32), bytes: r.bytes });
        }
        for (j, _) in of(RouteKind::Norm, false) {
            st.push(Step::Collective { route: wafer_ir::RouteId(j as u32) });
        }
        st.push(Step::Compute);
        for (j, _) in of(RouteKind::Reduce, false) {
            st.push(Step::Collective { route: wafer_ir::RouteId(j as u32) });
        }
        for (j, r) in of(RouteKind::Residual, true) {
            st.push(Step::Recv { route: wafer_ir::RouteId(j as u32), bytes: r.bytes });
        }
        for (j, _) in of(RouteKind::Argmax, false).chain(of(RouteKind::Bcast, false)) {
            st.push(Step::Collective { route: wafer_ir::RouteId(j as u32) });
        }
        for (j, r) in p.routes.iter().enumerate().filter(|(_, r)| r.src == me && !r.kind.is_collective()) {
            st.push(Step::Send { route: wafer_ir::RouteId(j as u32), bytes: r.bytes });
        }
    }
    for (r, st) in p.regions.iter_mut().zip(steps) {
        r.steps = st;
    }
}

fn checks_after(pass: &str) -> Option<Checks> {
    match pass {
        "fuse" => None,
        "partition" => Some(Checks::TILING),
        "place" => Some(Checks { geometry: true, ..Checks::TILING }),
        "route" => Some(Checks { geometry: true, routes: true, ..Checks::TILING }),
        "alloc" => Some(Checks { geometry: true, routes: true, sram: true, steps: false }),
        _ => Some(Checks::ALL),
    }
}

/// Bytes a wafer count offers, as partitioning counts them.
fn capacity(arch: &ArchSpec, wafers: u32) -> u64 {
    (arch.usable_sram() as f64 * arch.pes() as f64 * partition::FILL) as u64 * wafers as u64
}

/// Bytes a compile of `g` for `arch` allocates at its peak, roughly: the
/// regions and routes of the program (a MoE layer has two regions per
/// expert), a few copies of them during the search, the verifier's per-router
/// color grid of one wafer and the graph itself. An estimate to refuse
/// absurd inputs before allocating, not an accounting.
pub fn estimate_compile_bytes(g: &Graph, arch: &ArchSpec) -> u64 {
    const PER_REGION: u64 = 4096;
    let regions: u64 = g
        .ops
        .iter()
        .map(|op| match op.kind {
            wafer_ir::OpKind::MoeExperts { experts, .. } => 2 * experts,
            _ => 1,
        })
        .fold(0u64, u64::saturating_add);
    let grid = 8 * (arch.mesh_width as u64 + 1) * (arch.mesh_height as u64 + 1);
    let graph = 512 * (g.ops.len() as u64 + g.tensors.len() as u64);
    regions.saturating_mul(PER_REGION).saturating_add(grid).saturating_add(graph)
}

/// Compiles `g` for `arch`. The graph must have passed `verify_graph`.
pub fn compile(g: &Graph, arch: &ArchSpec, opts: &CompileOptions) -> Result<Compiled, CompileError> {
    if g.is_prefill() {
        return Err(CompileError::Prefill { model: g.name.clone(), new_tokens: g.new_tokens });
    }
    for d in &opts.dump_after {
        if !PASSES.iter().any(|(n, _)| n == d) {
            return Err(CompileError::UnknownPass(d.clone()));
        }
    }
    wafer_ir::ResourceError::check_memory(
        &format!("{} for {}", g.name, arch.name),
        estimate_compile_bytes(g, arch),
        opts.max_memory_bytes,
    )
    .map_err(CompileError::Resources)?;
    let dumps = std::cell::RefCell::new(Vec::new());
    let mut after = |pass: &str, p: &Program| -> Result<(), CompileError> {
        if opts.dump_after.iter().any(|d| d == pass) {
            dumps.borrow_mut().push((pass.to_string(), print_program(p)));
        }
        if opts.verify_each {
            if let Some(c) = checks_after(pass) {
                verify_program_checks(p, c).map_err(|errors| CompileError::Verify { pass: pass.into(), errors })?;
            }
        }
        Ok(())
    };
    let groups = fuse::fuse(g)?;
    after("fuse", &groups_to_program(g, arch, &groups, 1))?;
    let ctx = Ctx {
        arch,
        batch: g.batch,
        chunk: opts.prefill_chunk.max(1),
        weight: g.weight_dtype,
        act: g.act_dtype,
        kv: g.kv_dtype,
        acc: opts.accumulate,
    };
    let spread_opts = |k: Option<u32>| spread::SpreadOptions {
        layers_per_block: k,
        grid: opts.grid,
        groups: opts.groups,
        attention_strip: opts.attention_strip,
    };
    let one = |s: Strategy, after: &mut dyn FnMut(&str, &Program) -> Result<(), CompileError>| match s {
        Strategy::Pipeline => compile_pipeline(g, arch, &ctx, &groups, opts, after),
        Strategy::Spread => compile_spread(g, arch, &ctx, &groups, opts.wafers, &spread_opts(None), after),
        Strategy::Hybrid(k) => compile_spread(g, arch, &ctx, &groups, opts.wafers, &spread_opts(Some(k)), after),
        Strategy::Auto => compile_pipeline(g, arch, &ctx, &groups, opts, after),
    };
    let (mut built, alternatives) = match opts.strategy {
        Strategy::Auto => {
            // Forcing a block or a group count only makes sense for the spread family.
            let tried: Vec<Strategy> = if opts.grid.is_some() || opts.groups.is_some() {
                vec![Strategy::Spread]
            } else {
                vec![Strategy::Pipeline, Strategy::Spread, Strategy::Hybrid(4)]
            };
            let mut best: Option<(f64, Built, std::ops::Range<usize>)> = None;
            let mut first_err = None;
            let mut alts = Vec::new();
            let fused = dumps.borrow().len();
            for s in tried {
                let from = dumps.borrow().len();
                match one(s, &mut after) {
                    Ok(b) => {
                        let dumped = from..dumps.borrow().len();
                        let (cycles, us) = (b.estimate.cycles, b.estimate.us);
                        alts.push(Alternative {
                            strategy: s.name(),
                            estimate_us: Some(us),
                            wafers: Some(b.program.wafers),
                            error: None,
                        });
                        // The objective first, then the other figure.
                        let better = |c: f64, w: u32| match opts.objective {
                            Objective::Latency => (cycles, b.program.wafers) < (c, w),
                            Objective::Wafers => (b.program.wafers, cycles) < (w, c),
                        };
                        if best.as_ref().is_none_or(|(c, bb, _)| better(*c, bb.program.wafers)) {
                            best = Some((cycles, b, dumped));
                        }
                    }
                    Err(e) => {
                        alts.push(Alternative {
                            strategy: s.name(),
                            estimate_us: None,
                            wafers: None,
                            error: Some(e.to_string()),
                        });
                        first_err.get_or_insert(e);
                    }
                }
            }
            match best {
                Some((_, b, dumped)) => {
                    // The dumps of the strategy kept, after the shared `fuse` ones.
                    let mut d = dumps.borrow_mut();
                    let kept: Vec<(String, String)> = d[dumped].to_vec();
                    d.truncate(fused);
                    d.extend(kept);
                    (b, alts)
                }
                None => return Err(first_err.unwrap_or(CompileError::Packing { wafers: 0 })),
            }
        }
        s => (one(s, &mut after)?, Vec::new()),
    };
    let p = &mut built.program;
    let info = built.info.clone();
    let est = &built.estimate;
    let (searched, fixed) = built.search;
    let stats = CompileStats {
        wafers: p.wafers,
        pes_used: info.pes_used,
        pes_available: arch.pes() * p.wafers as u64,
        regions: p.regions.len(),
        routes: p.routes.len(),
        messages: info.messages,
        sram_mean_bytes: info.sram_mean,
        sram_max_bytes: info.sram_max,
        sram_code_bytes: info.sram_code,
        sram_weight_bytes: info.sram_weights,
        sram_kv_bytes: info.sram_kv,
        sram_buffer_bytes: info.sram_buffers,
        colors_max_per_router: info.colors_max,
        colors_available: arch.program_colors(),
        longest_route_hops: info.longest_route_hops,
        estimate_cycles: est.cycles,
        estimate_us: est.us,
        strip_widths: built.strips.clone(),
        searched_region_cycles: searched,
        fixed_square_region_cycles: fixed,
        strategy: built.strategy.name(),
        blocks: built.blocks.clone(),
        alternatives,
    };
    Ok(Compiled { program: built.program, info, stats, dumps: dumps.into_inner() })
}

/// One strategy's verified program with what its search found.
struct Built {
    program: Program,
    info: ProgramInfo,
    /// Its step on the cost model: what `auto` compares.
    estimate: wafer_cost::Estimate,
    strategy: Strategy,
    strips: Vec<u32>,
    blocks: Vec<(u32, u32)>,
    /// (searched, fixed-square) Σ region cycles.
    search: (f64, f64),
}

/// The last passes, the verifier and the program's closed-form estimate.
fn finish(
    mut p: Program,
    after: &mut dyn FnMut(&str, &Program) -> Result<(), CompileError>,
) -> Result<(Program, ProgramInfo, wafer_cost::Estimate), CompileError> {
    alloc(&mut p);
    after("alloc", &p)?;
    schedule(&mut p);
    after("schedule", &p)?;
    let info = verify_program_checks(&p, Checks::ALL)
        .map_err(|errors| CompileError::Verify { pass: "schedule".into(), errors })?;
    let est = wafer_cost::estimate(&p, &info).map_err(CompileError::Starved)?;
    Ok((p, info, est))
}

/// The `pipeline` strategy: disjoint regions in strips.
fn compile_pipeline(
    g: &Graph,
    arch: &ArchSpec,
    ctx: &Ctx,
    groups: &[Group],
    opts: &CompileOptions,
    after: &mut dyn FnMut(&str, &Program) -> Result<(), CompileError>,
) -> Result<Built, CompileError> {
    // Dense first-fit packing first; if its crossing routes need more colors
    // than the routers have, pack in execution order instead.
    let attempt = |packing: Packing, after: &mut dyn FnMut(&str, &Program) -> Result<(), CompileError>| {
        let plan = plan(g, ctx, groups, opts.wafers, packing)?;
        let mut p = groups_to_program(g, arch, groups, plan.wafers);
        for (r, s) in p.regions.iter_mut().zip(&plan.shapes) {
            r.wafer = s.wafer;
            r.rect = Rect { x: 0, y: 0, w: s.w, h: s.h };
            r.work = s.work.clone();
        }
        after("partition", &p)?;
        for (r, (wafer, rect)) in p.regions.iter_mut().zip(place::place(arch, &plan)?) {
            r.wafer = wafer;
            r.rect = rect;
        }
        after("place", &p)?;
        route::route(&mut p, groups)?;
        after("route", &p)?;
        Ok::<_, CompileError>((plan, p))
    };
    let (plan, p) = match attempt(Packing::FirstFit, after) {
        Err(CompileError::Colors { .. }) => attempt(Packing::InOrder, after)?,
        other => other?,
    };
    let (program, info, estimate) = finish(p, after)?;
    let search = partition::fixed_square_cost(ctx, groups, &plan);
    Ok(Built {
        program,
        info,
        estimate,
        strategy: Strategy::Pipeline,
        strips: plan.strip.clone(),
        blocks: Vec::new(),
        search,
    })
}

/// The `spread` and `hybrid:k` strategies: layers stacked on shared blocks.
fn compile_spread(
    g: &Graph,
    arch: &ArchSpec,
    ctx: &Ctx,
    groups: &[Group],
    wafers: Wafers,
    o: &spread::SpreadOptions,
    after: &mut dyn FnMut(&str, &Program) -> Result<(), CompileError>,
) -> Result<Built, CompileError> {
    let strategy = o.layers_per_block.map_or(Strategy::Spread, Strategy::Hybrid);
    let layout = match wafers {
        Wafers::Fixed(n) => spread::spread(ctx, groups, n, o)?,
        Wafers::Auto => {
            // From the fewest wafers whose SRAM could hold the bytes, up.
            let need: u64 = groups.iter().map(|gr| ctx.resident_bytes(gr)).fold(0, u64::saturating_add);
            let per = (arch.usable_sram() as f64 * arch.pes() as f64).max(1.0);
            let mut n = ((need as f64 / per).ceil() as u32).max(1);
            let mut last = None;
            loop {
                if n > MAX_WAFERS {
                    return Err(last.unwrap_or(CompileError::Packing { wafers: MAX_WAFERS }));
                }
                match spread::spread(ctx, groups, n, o) {
                    Ok(l) => break l,
                    Err(e @ CompileError::Unsupported { .. }) => return Err(e),
                    // The error at the fewest wafers that could hold the bytes says the most.
                    Err(e) => {
                        last.get_or_insert(e);
                    }
                }
                n += (n / 8).max(1);
            }
        }
    };
    let mut p = groups_to_program(g, arch, groups, layout.wafers);
    for (r, pl) in p.regions.iter_mut().zip(&layout.placed) {
        r.wafer = pl.wafer;
        r.rect = pl.rect;
        r.work = pl.work.clone();
        r.turn = pl.turn;
    }
    after("partition", &p)?;
    after("place", &p)?;
    route::route(&mut p, groups)?;
    after("route", &p)?;
    let (program, info, estimate) = finish(p, after)?;
    Ok(Built {
        program,
        info,
        estimate,
        strategy,
        strips: Vec::new(),
        blocks: layout.blocks,
        search: (layout.cost, layout.cost),
    })
}

/// [`CompileError::BatchTooLarge`]'s hint when a wafer per fused op holds no
/// larger batch: a region's per-PE state bounds it, not the wafer count.
const ANY_WAFERS: &str =
    "on any number of wafers: a region's per-PE state bounds it, a wafer per fused op holds no more; \
                          a smaller batch, a narrower KV or activation dtype, or a PE with more SRAM";

/// Wafer count and partitioning, with the capacity errors users need.
fn plan(g: &Graph, ctx: &Ctx, groups: &[Group], wafers: Wafers, packing: Packing) -> Result<Plan, CompileError> {
    let arch = ctx.arch;
    if let Some((gr, (need, what))) = groups.iter().find_map(|gr| Some((gr, partition::untileable(ctx, gr)?))) {
        return Err(CompileError::Untileable {
            region: gr.name.clone(),
            need,
            sram: arch.pe.sram_bytes,
            what: what.into(),
            batch: g.batch,
            chunk: ctx.chunk,
        });
    }
    let need: u64 = groups.iter().map(|gr| ctx.resident_bytes(gr)).fold(0, u64::saturating_add);
    let min_area: u64 = groups.iter().map(|gr| ctx.min_pes(gr)).fold(0, u64::saturating_add);
    let per_wafer = (arch.pes() as f64 * partition::FILL) as u64;
    let min_wafers = min_area.div_ceil(per_wafer.max(1)).max(1);
    if min_wafers > MAX_WAFERS as u64 {
        return Err(CompileError::TooManyWafers {
            model: g.name.clone(),
            arch: arch.name.clone(),
            min_wafers,
            need,
            per_wafer: capacity(arch, 1),
            max: MAX_WAFERS,
        });
    }
    let first = min_wafers as u32;
    // The fewest wafers from `from` on that partition: gallop up, then bisect
    // back (packing is a heuristic, so feasibility is only roughly monotone).
    let search = |from: u32| -> Option<Plan> {
        let try_n = |w: u32| partition::partition(ctx, groups, w, packing).ok();
        if from > MAX_WAFERS {
            return None;
        }
        let (mut lo, mut w, mut step) = (from.saturating_sub(1), from, 1u32);
        let mut found = loop {
            if let Some(p) = try_n(w) {
                break p;
            }
            lo = w;
            w = w.checked_add(step).filter(|&x| x <= MAX_WAFERS)?;
            step *= 2;
        };
        let mut hi = w;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match try_n(mid) {
                Some(p) => {
                    hi = mid;
                    found = p;
                }
                None => lo = mid,
            }
        }
        Some(found)
    };
    match wafers {
        Wafers::Auto => {
            if let Some(gr) = groups.iter().find(|gr| ctx.min_pes(gr) > per_wafer) {
                return Err(CompileError::RegionTooLarge {
                    region: gr.name.clone(),
                    pes: ctx.min_pes(gr),
                    bytes: ctx.resident_bytes(gr),
                    per_wafer,
                    arch: arch.name.clone(),
                    context: g.context,
                });
            }
            match search(first) {
                Some(p) => Ok(p),
                // A batch that fits on no wafer count: give each group a wafer
                // of its own (the most room any layout has) and say which
                // batch fits there, and that wafers are not what bounds it.
                None if g.batch > 1 => {
                    let n = (groups.len() as u32).clamp(first, MAX_WAFERS);
                    match plan(g, ctx, groups, Wafers::Fixed(n), packing) {
                        Err(CompileError::BatchTooLarge { batch, max_batch, context, arch, kv_bytes, .. }) => {
                            Err(CompileError::BatchTooLarge {
                                batch,
                                max_batch,
                                context,
                                wafers: n,
                                arch,
                                kv_bytes,
                                hint: ANY_WAFERS.into(),
                            })
                        }
                        _ => Err(CompileError::Packing { wafers: MAX_WAFERS }),
                    }
                }
                None => Err(CompileError::Packing { wafers: MAX_WAFERS }),
            }
        }
        Wafers::Fixed(n) => {
            if n >= first {
                if let Ok(p) = partition::partition(ctx, groups, n, packing) {
                    return Ok(p);
                }
            }
            // Does it fail for the KV cache alone? Then say which context fits.
            let kv: u64 = groups
                .iter()
                .filter(|gr| matches!(gr.kind, GroupKind::Attention { .. }))
                .map(|gr| ctx.resident_bytes(gr))
                .sum();
            let weights_area: u64 = groups
                .iter()
                .filter(|gr| !matches!(gr.kind, GroupKind::Attention { .. }))
                .map(|gr| ctx.min_pes(gr))
                .sum();
            let attn_min: u64 = groups
                .iter()
                .filter_map(|gr| match gr.kind {
                    GroupKind::Attention { kv_heads, .. } => Some(kv_heads),
                    _ => None,
                })
                .sum();
            let fits = |c: u64| -> bool {
                let scaled: Vec<Group> = groups
                    .iter()
                    .map(|gr| {
                        let mut x = gr.clone();
                        if let GroupKind::Attention { positions, .. } = &mut x.kind {
                            *positions = (*positions).min(c);
                        }
                        x
                    })
                    .collect();
                partition::partition(ctx, &scaled, n, packing).is_ok()
            };
            // A batch whose single sequence would fit: the batch is what SRAM
            // bounds, so say which batch fits (doubling, then bisecting below
            // the first failure, so every too-large batch gets the same answer).
            // Both packings must hold it: a first-fit layout whose routes run out
            // of colors is retried in execution order, which packs less densely.
            let fits_batch = |b: u64| -> bool {
                let c = Ctx { batch: b, ..*ctx };
                groups.iter().all(|gr| partition::untileable(&c, gr).is_none())
                    && [Packing::FirstFit, Packing::InOrder]
                        .into_iter()
                        .all(|pk| partition::partition(&c, groups, n, pk).is_ok())
            };
            if g.batch > 1 && fits_batch(1) {
                let (mut lo, mut hi) = (1u64, 2u64);
                while hi < g.batch && fits_batch(hi) {
                    lo = hi;
                    hi *= 2;
                }
                hi = hi.min(g.batch) - 1;
                while lo < hi {
                    let mid = (lo + hi).div_ceil(2);
                    if fits_batch(mid) {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                return Err(CompileError::BatchTooLarge {
                    batch: g.batch,
                    max_batch: lo,
                    context: g.context,
                    wafers: n,
                    arch: arch.name.clone(),
                    kv_bytes: kv,
                    hint: "SRAM-bound; more wafers: --wafers auto".into(),
                });
            }
            if kv > 0 && weights_area + attn_min < per_wafer * n as u64 && fits(1) {
                // Feasibility is not monotone in the context near the edge (packing is a
                // heuristic), so grow from 1 by doubling, then bisect below the first failure:
                // every too-long context gets the same answer.
                let (mut lo, mut hi) = (0u64, 1u64);
                while hi < g.context && fits(hi) {
                    lo = hi;
                    hi *= 2;
                }
                hi = hi.min(g.context) - 1;
                while lo < hi {
                    let mid = (lo + hi).div_ceil(2);
                    if fits(mid) {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                return Err(CompileError::ContextTooLong {
                    context: g.context,
                    max_context: lo,
                    wafers: n,
                    arch: arch.name.clone(),
                    kv_bytes: kv,
                });
            }
            let would = search(first.max(n + 1)).map(|p| p.wafers);
            let have = capacity(arch, n);
            Err(CompileError::DoesNotFit(Box::new(DoesNotFit {
                model: g.name.clone(),
                arch: arch.name.clone(),
                wafers: n,
                need,
                have,
                short: need.saturating_sub(have),
                why: if need > have {
                    format!("{} bytes do not fit", need - have)
                } else {
                    "the bytes would fit, but the regions' tiles do not pack into the strips".into()
                },
                usable_per_pe: arch.usable_sram(),
                fill: partition::FILL * 100.0,
                advice: match would {
                    Some(w) => format!("{w} wafers would (--wafers {w}, or --wafers auto)."),
                    None => format!("No wafer count up to {MAX_WAFERS} would."),
                },
            })))
        }
    }
}

//! `wafer frontier`: the latency–throughput frontier of one model on one
//! wafer machine and one GPU baseline.
//!
//! Wafer operating points: per strategy (pipeline, spread, hybrid:4), batch
//! 1, 2, 4, … while it compiles (up to [`MAX_WAFER_BATCH`]), each compiled
//! and timed once, then users in flight 1, 2, 4, … up to twice the mapping's
//! `stages` from [`wafer_simulator::pipelining`] (closed form). GPU operating
//! points: batch 1, 2, 4, … up to [`MAX_GPU_BATCH`] while it fits, on the GPU
//! count batch 1 takes (`wafer run`'s choice). With `--draft M --spec-k K
//! --accept A`, each batch also gets a speculative point (one user in
//! flight): on the wafer `run --draft`'s round (`speculate::wafer_round`:
//! the draft compiled with the same strategy, on the target's wafers when
//! both fit, else on its own; the verify step the target's mapping restated
//! for K + 1 tokens per sequence; each step timed by `--engine`); on the GPU
//! `wafer gpu --draft`'s pricing. Each batch of each side is one unit of work
//! ([`wafer_reports::frontier::BatchUnit`]); `--shard I/N` computes the units
//! whose index is I mod N and writes them as `frontier-shard.json`, which
//! `wafer merge` joins into the report. The Pareto marking, tables, chart and
//! the assembly from units are `wafer_reports::frontier`'s. Sides compile in
//! parallel (rayon, collected in unit order), so the output is byte-identical
//! for any thread count and any sharding.

use super::compile::{compile_graph, MachineArgs};
use super::run::{gpu_estimate, gpu_power_price, simulate, wafer_power_price, EnergyArgs, Engine, GpuArgs};
use super::{to_json, Format};
use crate::inputs::{load_gpu, load_model};
use crate::Exit;
use rayon::prelude::*;
use wafer_compiler::{CompileOptions, Strategy};
use wafer_gpu::SpecParams;
use wafer_ir::{verify_graph, DType, Graph};
use wafer_reports::energy::{energy, Power, Price};
use wafer_reports::frontier::{
    assemble, BatchOutcome, BatchUnit, FrontierHeader, FrontierReport, FrontierShard, MappedBatch, OperatingPoint,
    SpecInputs, SpecStep, SweepGroup, FRONTIER_SHARD_SCHEMA_VERSION,
};
use wafer_reports::sweep::Shard;
use wafer_workloads::{decode_graph, DecodeParams, ModelConfig};

/// The largest wafer batch the sweep tries (beyond, the bound says the sweep stopped).
pub const MAX_WAFER_BATCH: u64 = 1024;
/// The largest GPU batch the sweep tries.
pub const MAX_GPU_BATCH: u64 = 256;
/// The strategies swept on the wafer.
pub const STRATEGIES: [Strategy; 3] = [Strategy::Pipeline, Strategy::Spread, Strategy::Hybrid(4)];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Preset name (see `wafer models`) or path to a Hugging Face config.json.
    #[arg(long, short, default_value = "llama-3.1-8b")]
    pub model: String,
    /// Positions each new token attends over, itself included [default: 4096,
    /// capped at a model's learned positions].
    #[arg(long, short, value_parser = super::context_flag, allow_negative_numbers = true)]
    pub context: Option<u64>,
    /// Weight storage format: fp32, bf16, fp16, fp8, int8, int4.
    #[arg(long, default_value = "bf16")]
    pub weight_dtype: DType,
    /// Activation format: fp32, bf16, fp16, fp8, int8.
    #[arg(long, default_value = "bf16")]
    pub act_dtype: DType,
    /// KV-cache format: fp32, bf16, fp16, fp8, int8, int4.
    #[arg(long, default_value = "bf16")]
    pub kv_dtype: DType,
    /// Arch preset (`wse2`, `wse3`, `mesh:WxH`; see `wafer archs`) or a TOML spec.
    #[arg(long, short, default_value = "wse3")]
    pub arch: String,
    /// Wafers: a number, or `auto` (each point on the fewest that hold it)
    /// [default: the arch's `system.wafers`].
    #[arg(long, short, allow_hyphen_values = true)]
    pub wafers: Option<String>,
    #[command(flatten)]
    pub gpu: GpuArgs,
    #[command(flatten)]
    pub energy: EnergyArgs,
    /// Engine that times each wafer step (analytical by default: the sweep compiles many mappings).
    #[arg(long, value_enum, default_value_t = Engine::Analytical)]
    pub engine: Engine,
    /// Keep wafer points whose KV cache does not fit on the frontier (the
    /// users-in-flight closed form alone, which does not model their KV cache).
    #[arg(long)]
    pub ignore_kv: bool,
    /// Speculative decoding (`--draft M --spec-k K --accept A`): each batch
    /// also gets a speculative point (`+spec`).
    #[command(flatten)]
    pub spec: super::speculate::SpecArgs,
    /// Compute only the units of work (one batch of one side) whose index is
    /// I mod N, as `frontier-shard.json`; `wafer merge` joins the shards.
    #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
    pub shard: Option<Shard>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    pub out: super::report_out::OutArgs,
}

/// Powers of two from 1 up to `max`.
fn doublings(max: u64) -> Vec<u64> {
    std::iter::successors(Some(1u64), |b| b.checked_mul(2)).take_while(move |b| *b <= max).collect()
}

type Graphs<'a> = dyn Fn(&ModelConfig, u64) -> Result<Graph, Exit> + Sync + 'a;

/// What every unit needs: the inputs loaded once.
struct Ctx<'a> {
    a: &'a Args,
    cfg: ModelConfig,
    draft: Option<(ModelConfig, SpecParams)>,
    graphs: &'a Graphs<'a>,
    machine: MachineArgs,
    gpu_spec: wafer_gpu::GpuSpec,
    gpu_opts: wafer_gpu::GpuOptions,
    tp: u32,
    pp: u32,
    layout: String,
    wafer_power: Option<Power>,
    wafer_price: Option<Price>,
    gpu_power: Option<Power>,
    gpu_price: Option<Price>,
    context: u64,
}

/// A compile error's message, as a batch's bound.
fn failed(e: Exit) -> BatchOutcome {
    BatchOutcome::Failed(e.message)
}

/// One wafer batch of `strategy`: compiled and timed, its users in flight,
/// and with `--draft` its speculative point.
fn wafer_batch(
    x: &Ctx,
    m: &(wafer_ir::ArchSpec, wafer_compiler::Wafers),
    strategy: Strategy,
    batch: u64,
) -> Result<BatchOutcome, Exit> {
    let opts = CompileOptions { strategy, ..x.machine.options(CompileOptions::default()) };
    let c = match (x.graphs)(&x.cfg, batch).and_then(|g| compile_graph(&g, m, opts.clone())) {
        Ok(c) => c,
        Err(e) => return Ok(failed(e)),
    };
    let sim = simulate(x.a.engine, &c)?;
    let p = &c.program;
    let share = sim.breakdown.compute / sim.breakdown.total().max(1e-9);
    let stages = wafer_simulator::pipelining(p, &sim, 1).stages as u64;
    let mut points = Vec::new();
    for users in doublings(2 * stages) {
        let users = users as u32;
        let s = wafer_simulator::pipelining(p, &sim, users);
        let aggregate = s.aggregate_tokens_per_s;
        let sequences = users as u64 * batch;
        let e = energy(&m.0.name, p.wafers, aggregate, x.wafer_power.clone(), x.wafer_price.clone());
        points.push(OperatingPoint {
            side: "wafer".into(),
            strategy: strategy.name(),
            batch,
            users,
            sequences,
            per_user_tokens_per_s: aggregate / sequences as f64,
            aggregate_tokens_per_s: aggregate,
            machines: p.wafers,
            step_us: sim.tpot_us,
            joules_per_token: e.joules_per_token,
            usd_per_mtok: e.usd_per_mtok,
            kv_fits: false,
            frontier: false,
            speculative: None,
        });
    }
    let mut speculative_bound = None;
    if let Some((dcfg, sp)) = &x.draft {
        // The draft on the target's wafers when both fit, else on its own; each step timed as its own program.
        let round = (x.graphs)(&x.cfg, batch).and_then(|tg| {
            let dg = (x.graphs)(dcfg, batch)?;
            let pp = (x.wafer_power.clone(), x.wafer_price.clone());
            let o = CompileOptions { wafers: m.1, ..opts.clone() };
            super::speculate::wafer_round(x.a.engine, p, &tg, &dg, &m.0, &o, *sp, sim.tpot_us, pp)
        })?;
        match round {
            Ok(w) => {
                let per_user = w.effective_tokens_per_s / batch as f64;
                points.push(OperatingPoint {
                    side: "wafer".into(),
                    strategy: strategy.name(),
                    batch,
                    users: 1,
                    sequences: batch,
                    per_user_tokens_per_s: per_user,
                    aggregate_tokens_per_s: w.effective_tokens_per_s,
                    machines: w.machines,
                    step_us: w.effective_us_per_token,
                    joules_per_token: w.energy.joules_per_token,
                    usd_per_mtok: w.energy.usd_per_mtok,
                    kv_fits: false,
                    frontier: false,
                    speculative: Some(SpecStep {
                        draft_step_us: w.draft_step_us,
                        verify_step_us: w.verify_step_us,
                        round_us: w.round_us,
                        draft_machines: w.draft_wafers,
                        draft_placement: Some(w.placement.clone()),
                    }),
                });
            }
            Err(why) => speculative_bound = Some(why),
        }
    }
    Ok(BatchOutcome::Mapped(MappedBatch {
        points,
        machines: p.wafers,
        step_us: sim.tpot_us,
        compute_share: share,
        engine: Some(sim.engine.clone()),
        speculative_bound,
    }))
}

/// One GPU batch on the layout of batch 1, and with `--draft` its speculative point.
fn gpu_batch(x: &Ctx, batch: u64) -> Result<BatchOutcome, Exit> {
    let est = (x.graphs)(&x.cfg, batch)
        .and_then(|g| Ok(wafer_gpu::estimate_auto(&g, &x.gpu_spec, x.tp, Some(x.pp), &x.gpu_opts)?));
    let e = match est {
        Ok(e) => e,
        Err(e) => return Ok(failed(e)),
    };
    let en = energy(&e.gpu, e.n_gpus, e.tokens_per_s, x.gpu_power.clone(), x.gpu_price.clone());
    let mut points = vec![OperatingPoint {
        side: "gpu".into(),
        strategy: x.layout.clone(),
        batch,
        users: 1,
        sequences: batch,
        per_user_tokens_per_s: 1e3 / e.tpot_ms,
        aggregate_tokens_per_s: e.tokens_per_s,
        machines: e.n_gpus,
        step_us: e.tpot_ms * 1e3,
        joules_per_token: en.joules_per_token,
        usd_per_mtok: en.usd_per_mtok,
        kv_fits: true,
        frontier: false,
        speculative: None,
    }];
    let mut speculative_bound = None;
    if let Some((dcfg, sp)) = &x.draft {
        let p = params(x.a, x.context, batch);
        match super::gpu::speculate(&x.cfg, dcfg, &p, &e, &x.gpu_spec, *sp, &x.gpu_opts) {
            Ok(s) => {
                let s = s.estimate;
                let en = energy(&e.gpu, e.n_gpus, s.effective_tokens_per_s, x.gpu_power.clone(), x.gpu_price.clone());
                points.push(OperatingPoint {
                    side: "gpu".into(),
                    strategy: x.layout.clone(),
                    batch,
                    users: 1,
                    sequences: batch,
                    per_user_tokens_per_s: 1e3 / s.effective_tpot_ms,
                    aggregate_tokens_per_s: s.effective_tokens_per_s,
                    machines: e.n_gpus,
                    step_us: s.effective_tpot_ms * 1e3,
                    joules_per_token: en.joules_per_token,
                    usd_per_mtok: en.usd_per_mtok,
                    kv_fits: true,
                    frontier: false,
                    speculative: Some(SpecStep {
                        draft_step_us: s.draft_step_ms * 1e3,
                        verify_step_us: s.verify_step_ms * 1e3,
                        round_us: s.round_ms * 1e3,
                        draft_machines: e.n_gpus,
                        draft_placement: None,
                    }),
                });
            }
            Err(e) => speculative_bound = Some(e.message),
        }
    }
    Ok(BatchOutcome::Mapped(MappedBatch {
        points,
        machines: e.n_gpus,
        step_us: e.tpot_ms * 1e3,
        compute_share: 0.0,
        engine: None,
        speculative_bound,
    }))
}

fn params(a: &Args, context: u64, batch: u64) -> DecodeParams {
    DecodeParams { batch, context, weight_dtype: a.weight_dtype, act_dtype: a.act_dtype, kv_dtype: a.kv_dtype }
}

/// The header and the units `shard` holds (all without one), in unit order.
pub fn frontier_units(a: &Args, shard: Option<Shard>) -> Result<(FrontierHeader, Vec<BatchUnit>), Exit> {
    a.engine.check_timing()?;
    let gpu_spec = load_gpu(&a.gpu.gpu)?;
    let machine = MachineArgs::preset(&a.arch, a.wafers.clone());
    let (arch, _) = machine.load()?;
    let cfg = load_model(&a.model)?;
    let draft = a.spec.load()?;
    let default = super::graph::LATENCY_CONTEXT;
    let context = a.context.unwrap_or(if cfg.learned_positions { default.min(cfg.max_positions) } else { default });
    // A model of learned positions (a draft) runs at most its own.
    let graphs = |m: &ModelConfig, batch: u64| -> Result<Graph, Exit> {
        let c = if m.learned_positions { context.min(m.max_positions) } else { context };
        let g = decode_graph(m, &params(a, c, batch))?;
        verify_graph(&g)?;
        Ok(g)
    };
    // GPU first: it needs only the graphs, and checks the GPU flags before any compile.
    let one = gpu_estimate(&graphs(&cfg, 1)?, &gpu_spec, &a.gpu)?;
    let (tp, pp) = (one.tensor_parallel, one.pipeline_stages);
    let gpu_opts = wafer_gpu::GpuOptions::with_headroom(a.gpu.gpu_mem_headroom)?;
    let (gpu_power, gpu_price) = gpu_power_price(&gpu_spec, &a.energy);
    let (wafer_power, wafer_price) = wafer_power_price(&arch.name, &a.energy);
    let layout = if pp > 1 { format!("tp {tp} × pp {pp}") } else { format!("tp {tp}") };
    let mut groups: Vec<SweepGroup> = STRATEGIES
        .iter()
        .map(|s| SweepGroup {
            side: "wafer".into(),
            strategy: s.name(),
            batches: doublings(MAX_WAFER_BATCH),
            cap_bound: format!("batch {MAX_WAFER_BATCH} is the largest the sweep tries"),
        })
        .collect();
    groups.push(SweepGroup {
        side: "gpu".into(),
        strategy: layout.clone(),
        batches: doublings(MAX_GPU_BATCH),
        cap_bound: format!("batch {MAX_GPU_BATCH} is the largest the sweep tries"),
    });
    let header = FrontierHeader {
        model: cfg.name.clone(),
        context,
        arch: arch.name.clone(),
        wafers: a.wafers.clone().unwrap_or_else(|| arch.system.wafers.to_string()),
        engine: a.engine.name().into(),
        gpu: one.gpu.clone(),
        gpus: one.n_gpus,
        gpu_pipeline_stages: pp,
        groups,
        wafer_power: wafer_power.clone(),
        wafer_price: wafer_price.clone(),
        gpu_power: gpu_power.clone(),
        gpu_price: gpu_price.clone(),
        frontier_needs_kv_fit: !a.ignore_kv,
        speculative: draft.as_ref().map(|(d, sp)| SpecInputs {
            draft: d.name.clone(),
            k: sp.k,
            accept: sp.accept,
            expected_tokens_per_step: sp.expected_tokens(),
        }),
    };
    let x = Ctx {
        a,
        cfg,
        draft,
        graphs: &graphs,
        machine,
        gpu_spec,
        gpu_opts,
        tp,
        pp,
        layout,
        wafer_power,
        wafer_price,
        gpu_power,
        gpu_price,
        context,
    };
    let units = header.units();
    let holds = |i: usize| shard.is_none_or(|s| s.holds(i));
    // Each group in batch order, up to its first failed batch (later ones cannot count).
    let per_group: Vec<Result<Vec<BatchUnit>, Exit>> = (0..header.groups.len())
        .into_par_iter()
        .map(|gi| {
            let g = &header.groups[gi];
            let m = if g.side == "wafer" { Some(x.machine.load()?) } else { None };
            let mut out = Vec::new();
            for &(index, _, batch) in units.iter().filter(|u| u.1 == gi && holds(u.0)) {
                let outcome = match &m {
                    Some(m) => wafer_batch(&x, m, STRATEGIES[gi], batch)?,
                    None => gpu_batch(&x, batch)?,
                };
                let stop = matches!(outcome, BatchOutcome::Failed(_));
                out.push(BatchUnit { index, group: gi, batch, outcome });
                if stop {
                    break;
                }
            }
            Ok(out)
        })
        .collect();
    let mut all = Vec::new();
    for g in per_group {
        all.extend(g?);
    }
    all.sort_by_key(|u| u.index);
    Ok((header, all))
}

pub fn frontier(a: &Args) -> Result<FrontierReport, Exit> {
    let (h, units) = frontier_units(a, None)?;
    Ok(assemble(&h, &units)?)
}

pub fn run(a: Args) -> Result<(), Exit> {
    let target = a.out.prepare()?;
    if let Some(shard) = a.shard {
        let (header, units) = frontier_units(&a, Some(shard))?;
        let s = FrontierShard { schema_version: FRONTIER_SHARD_SCHEMA_VERSION, shard, header, units };
        let text = to_json(&s);
        if let Some(t) = target {
            let shown = t.shown().display().to_string();
            t.write(&[wafer_reports::OutFile::new("frontier-shard.json", text.clone())])?;
            eprintln!("wrote {shown}");
        }
        match a.format {
            Format::Json => print!("{text}"),
            Format::Text => println!(
                "frontier shard {}/{}: {} batch unit(s); join the shards with `wafer merge DIR... --out DIR`",
                shard.index,
                shard.count,
                s.units.len()
            ),
        }
        return Ok(());
    }
    let r = frontier(&a)?;
    if let Some(t) = target {
        let shown = t.shown().display().to_string();
        t.write(&r.files()?)?;
        eprintln!("wrote {shown}");
    }
    match a.format {
        Format::Json => print!("{}", to_json(&r)),
        Format::Text => print!("{}", r.to_text()),
    }
    Ok(())
}

//! `wafer frontier`: the latency–throughput frontier of one model on one
//! wafer machine and one GPU baseline.
//!
//! Wafer operating points: per strategy (pipeline, spread, hybrid:4), batch
//! 1, 2, 4, … while it compiles (up to [`MAX_WAFER_BATCH`]), each compiled
//! and timed once, then users in flight 1, 2, 4, … up to twice the mapping's
//! `stages` from [`wafer_simulator::pipelining`] (closed form). GPU operating
//! points: batch 1, 2, 4, … up to [`MAX_GPU_BATCH`] while it fits, on the GPU
//! count batch 1 takes (`wafer run`'s choice). The Pareto marking, tables and
//! chart are `wafer_reports::frontier`'s. Strategies compile in parallel
//! (rayon, collected in strategy order), so the output is byte-identical for
//! any thread count.

use super::compile::{compile_graph, MachineArgs};
use super::run::{gpu_estimate, gpu_power_price, simulate, wafer_power_price, EnergyArgs, Engine, GpuArgs};
use super::{to_json, Format};
use crate::inputs::load_gpu;
use crate::Exit;
use rayon::prelude::*;
use wafer_compiler::{CompileOptions, Strategy};
use wafer_ir::{verify_graph, DType, Graph};
use wafer_reports::energy::energy;
use wafer_reports::frontier::{FrontierReport, Limit, OperatingPoint, FRONTIER_SCHEMA_VERSION};
use wafer_workloads::{decode_graph, DecodeParams};

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
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    pub out: super::report_out::OutArgs,
}

/// One strategy's points and where its batch sweep stopped.
struct StrategySweep {
    points: Vec<OperatingPoint>,
    limit: Limit,
    engine: Option<String>,
}

/// Powers of two from 1 up to `max`.
fn doublings(max: u64) -> impl Iterator<Item = u64> {
    std::iter::successors(Some(1u64), |b| b.checked_mul(2)).take_while(move |b| *b <= max)
}

fn sweep_strategy(
    strategy: Strategy,
    graphs: &(dyn Fn(u64) -> Result<Graph, Exit> + Sync),
    machine: &MachineArgs,
    a: &Args,
) -> Result<StrategySweep, Exit> {
    let m = machine.load()?;
    let (power, price) = wafer_power_price(&m.0.name, &a.energy);
    let mut points = Vec::new();
    let mut largest = None;
    let mut engine = None;
    let mut bound = format!("batch {MAX_WAFER_BATCH} is the largest the sweep tries");
    let mut steps: Vec<wafer_reports::frontier::BatchStep> = Vec::new();
    for batch in doublings(MAX_WAFER_BATCH) {
        let compiled = graphs(batch).and_then(|g| {
            compile_graph(&g, &m, CompileOptions { strategy, ..machine.options(CompileOptions::default()) })
        });
        let c = match compiled {
            Ok(c) => c,
            Err(e) => {
                bound = format!("batch {batch}: {}", e.message);
                break;
            }
        };
        let sim = simulate(a.engine, &c)?;
        engine.get_or_insert_with(|| sim.engine.clone());
        let p = &c.program;
        let share = sim.breakdown.compute / sim.breakdown.total().max(1e-9);
        steps.push((batch, p.wafers, sim.tpot_us, share));
        let stages = wafer_simulator::pipelining(p, &sim, 1).stages as u64;
        for users in doublings(2 * stages) {
            let users = users as u32;
            let s = wafer_simulator::pipelining(p, &sim, users);
            let aggregate = s.aggregate_tokens_per_s;
            let sequences = users as u64 * batch;
            let e = energy(&m.0.name, p.wafers, aggregate, power.clone(), price.clone());
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
            });
        }
        largest = Some(batch);
    }
    // Users in flight hold a KV cache each: a point fits where this strategy
    // compiled a batch holding at least as many sequences.
    for p in &mut points {
        p.kv_fits = largest.is_some_and(|l| p.sequences <= l);
    }
    Ok(StrategySweep {
        points,
        limit: Limit {
            side: "wafer".into(),
            strategy: strategy.name(),
            largest_batch: largest,
            bound,
            saturation: wafer_reports::frontier::saturation(&steps),
        },
        engine,
    })
}

pub fn frontier(a: &Args) -> Result<FrontierReport, Exit> {
    a.engine.check_timing()?;
    let gpu_spec = load_gpu(&a.gpu.gpu)?;
    let machine = MachineArgs::preset(&a.arch, a.wafers.clone());
    let (arch, _) = machine.load()?;
    let cfg = crate::inputs::load_model(&a.model)?;
    let default = super::graph::LATENCY_CONTEXT;
    let context = a.context.unwrap_or(if cfg.learned_positions { default.min(cfg.max_positions) } else { default });
    let graphs = |batch: u64| -> Result<Graph, Exit> {
        let p =
            DecodeParams { batch, context, weight_dtype: a.weight_dtype, act_dtype: a.act_dtype, kv_dtype: a.kv_dtype };
        let g = decode_graph(&cfg, &p)?;
        verify_graph(&g)?;
        Ok(g)
    };
    // GPU first: it needs only the graphs, and checks the GPU flags before any compile.
    let g1 = graphs(1)?;
    let one = gpu_estimate(&g1, &gpu_spec, &a.gpu)?;
    let (tp, pp) = (one.tensor_parallel, one.pipeline_stages);
    let opts = wafer_gpu::GpuOptions::with_headroom(a.gpu.gpu_mem_headroom)?;
    let (gpu_power, gpu_price) = gpu_power_price(&gpu_spec, &a.energy);
    let layout = if pp > 1 { format!("tp {tp} × pp {pp}") } else { format!("tp {tp}") };
    let mut gpu_points = Vec::new();
    let mut gpu_largest = None;
    let mut gpu_bound = format!("batch {MAX_GPU_BATCH} is the largest the sweep tries");
    for batch in doublings(MAX_GPU_BATCH) {
        let est = graphs(batch).and_then(|g| Ok(wafer_gpu::estimate_auto(&g, &gpu_spec, tp, Some(pp), &opts)?));
        let e = match est {
            Ok(e) => e,
            Err(e) => {
                gpu_bound = format!("batch {batch}: {}", e.message);
                break;
            }
        };
        let en = energy(&e.gpu, e.n_gpus, e.tokens_per_s, gpu_power.clone(), gpu_price.clone());
        gpu_points.push(OperatingPoint {
            side: "gpu".into(),
            strategy: layout.clone(),
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
        });
        gpu_largest = Some(batch);
    }
    let sweeps: Vec<Result<StrategySweep, Exit>> =
        STRATEGIES.par_iter().map(|&s| sweep_strategy(s, &graphs, &machine, a)).collect();
    let mut wafer_points = Vec::new();
    let mut limits = Vec::new();
    let mut engine = None;
    for s in sweeps {
        let s = s?;
        wafer_points.extend(s.points);
        limits.push(s.limit);
        if engine.is_none() {
            engine = s.engine;
        }
    }
    if wafer_points.is_empty() {
        let why: Vec<String> = limits.iter().map(|l| format!("{}: {}", l.strategy, l.bound)).collect();
        return Err(Exit {
            code: 2,
            message: format!("{} does not map onto {} with any strategy: {}", cfg.name, arch.name, why.join("; ")),
        });
    }
    limits.push(Limit {
        side: "gpu".into(),
        strategy: layout,
        largest_batch: gpu_largest,
        bound: gpu_bound,
        saturation: None,
    });
    let (wafer_power, wafer_price) = wafer_power_price(&arch.name, &a.energy);
    let mut r = FrontierReport {
        schema_version: FRONTIER_SCHEMA_VERSION,
        model: cfg.name.clone(),
        context,
        arch: arch.name.clone(),
        wafers: a.wafers.clone().unwrap_or_else(|| arch.system.wafers.to_string()),
        engine: engine.unwrap_or_else(|| a.engine.name().into()),
        gpu: one.gpu.clone(),
        gpus: one.n_gpus,
        gpu_pipeline_stages: pp,
        wafer_points,
        gpu_points,
        limits,
        wafer_power,
        wafer_price,
        gpu_power,
        gpu_price,
        frontier_needs_kv_fit: !a.ignore_kv,
    };
    r.mark();
    Ok(r)
}

pub fn run(a: Args) -> Result<(), Exit> {
    let target = a.out.prepare()?;
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

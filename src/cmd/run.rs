//! `wafer run`: compile and simulate in one go, with the GPU baseline beside it.
//! With no flags: Llama-3.1-8B at context 4096 on one WSE-3, against H100-SXM.

use super::compile::{compile_step, MachineArgs};
use super::graph::StepArgs;
use super::{to_json, Format};
use crate::inputs::load_gpu;
use crate::Exit;
use wafer_compiler::CompileOptions;
use wafer_ir::{verify_graph, Graph};
use wafer_reports::{RunInputs, RunReport};
use wafer_simulator::{simulate_analytical, try_simulate_event, EventLimits, SimResult};
use wafer_workloads::decode_graph;

/// Largest `--gpus`: 1,024 (the largest tensor-parallel group of the calibration data is 8).
pub const MAX_GPUS: i64 = 1024;
/// Largest `--steps`: 1,024 decode steps (each compiles and checks a whole step).
pub const MAX_STEPS: u64 = 1024;

/// Which engine times the step.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Discrete-event: every message on every link, with contention (the reference).
    #[default]
    Event,
    /// Closed form per region along the critical path: fast, for sweeps.
    Analytical,
    /// Run the compiled program with real numbers (seeded random weights) for
    /// several steps and compare with a dense reference forward pass. For
    /// small models and meshes: it checks the mapping, it does not time it.
    Functional,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Event => "event",
            Engine::Analytical => "analytical",
            Engine::Functional => "functional",
        }
    }
}

/// The GPU side of a comparison.
#[derive(clap::Args, Debug, Clone)]
pub struct GpuArgs {
    /// GPU baseline: a preset (see `wafer gpu --list`) or a TOML spec.
    #[arg(long, short, default_value = "H100-SXM")]
    pub gpu: String,
    /// GPUs in the tensor-parallel group [default: the fewest that hold the model].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_GPUS))]
    pub gpus: Option<u32>,
}

/// The GPU estimate with `n` GPUs, or the fewest power-of-two count that holds the model.
pub fn gpu_estimate(g: &Graph, args: &GpuArgs) -> Result<wafer_gpu::GpuEstimate, Exit> {
    let gpu = load_gpu(&args.gpu)?;
    if let Some(n) = args.gpus {
        return Ok(wafer_gpu::estimate(g, &gpu, n)?);
    }
    let mut last = None;
    for n in [1u32, 2, 4, 8, 16, 32, 64, 128] {
        match wafer_gpu::estimate(g, &gpu, n) {
            Ok(e) => return Ok(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| Exit { code: 2, message: "no GPU count holds the model".into() }, Exit::from))
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub step: StepArgs,
    #[command(flatten)]
    pub machine: MachineArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Leave out the GPU comparison.
    #[arg(long)]
    pub no_gpu: bool,
    #[arg(long, value_enum, default_value_t)]
    pub engine: Engine,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Decode steps the functional engine checks (contexts 1..=steps).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=MAX_STEPS))]
    pub steps: u64,
    /// Also report wall-clock time of compiling and simulating (not reproducible).
    #[arg(long)]
    pub timings: bool,
    #[command(flatten)]
    pub out: super::report_out::OutArgs,
}

/// The event engine's limits: the defaults, with `--max-memory`.
pub fn event_limits() -> EventLimits {
    EventLimits { max_memory_bytes: crate::inputs::max_memory(), ..Default::default() }
}

/// Times a compiled program with `engine`.
pub fn simulate(engine: Engine, c: &wafer_compiler::Compiled) -> Result<SimResult, Exit> {
    Ok(match engine {
        Engine::Event => try_simulate_event(&c.program, &c.info, &event_limits())?,
        Engine::Analytical => simulate_analytical(&c.program, &c.info),
        Engine::Functional => {
            return Err(Exit { code: 2, message: "the functional engine checks numbers, not time".into() })
        }
    })
}

/// [`run_report_and_program`] without the program.
pub fn run_report(
    step: &StepArgs,
    machine: &MachineArgs,
    gpu: &GpuArgs,
    no_gpu: bool,
    engine: Engine,
) -> Result<RunReport, Exit> {
    Ok(run_report_and_program(step, machine, gpu, no_gpu, engine)?.0)
}

/// Compiles, simulates and (unless `no_gpu`) estimates the GPU side; returns
/// the compiled program too (report folders paint it).
pub fn run_report_and_program(
    step: &StepArgs,
    machine: &MachineArgs,
    gpu: &GpuArgs,
    no_gpu: bool,
    engine: Engine,
) -> Result<(RunReport, wafer_ir::Program), Exit> {
    let t0 = std::time::Instant::now();
    let (g, c) = compile_step(step, machine, CompileOptions::default())?;
    let t1 = std::time::Instant::now();
    let sim = simulate(engine, &c)?;
    let timings = wafer_reports::Timings {
        compile_ms: (t1 - t0).as_secs_f64() * 1e3,
        simulate_ms: t1.elapsed().as_secs_f64() * 1e3,
    };
    let gpu_est = if no_gpu { None } else { Some(gpu_estimate(&g, gpu)?) };
    let p = &c.program;
    let inputs = RunInputs {
        model: p.model.clone(),
        arch: p.arch.name.clone(),
        wafers: p.wafers,
        context: p.context,
        batch: p.batch,
        weight_dtype: p.weight_dtype.to_string(),
        kv_dtype: p.kv_dtype.to_string(),
        engine: engine.name().into(),
        gpu: gpu_est.as_ref().map(|g| g.gpu.clone()),
        gpus: gpu_est.as_ref().map(|g| g.n_gpus),
    };
    let mut r = RunReport::new(inputs, c.stats, sim, gpu_est);
    r.timings = Some(timings);
    Ok((r, c.program))
}

/// One checked step of the functional engine.
#[derive(serde::Serialize)]
struct FunctionalStep {
    context: u64,
    max_rel_err: f64,
    tokens_match: bool,
}

#[derive(serde::Serialize)]
struct FunctionalReport {
    engine: &'static str,
    model: String,
    arch: String,
    batch: u64,
    steps: Vec<FunctionalStep>,
    max_rel_err: f64,
}

/// Runs the compiled program of each step 1..=steps with seeded weights and a
/// growing KV cache, against the dense reference.
fn functional(a: &Args) -> Result<FunctionalReport, Exit> {
    let cfg = crate::inputs::load_model(&a.step.model)?;
    let (arch, wafers) = a.machine.load()?;
    let mut steps = Vec::new();
    let mut weights = None;
    let (mut kv_ref, mut kv_fun) = (wafer_simulator::KvState::new(), wafer_simulator::KvState::new());
    for t in 1..=a.steps.max(1) {
        let p = wafer_workloads::DecodeParams { context: t, ..a.step.params(t) };
        let g = decode_graph(&cfg, &p)?;
        verify_graph(&g)?;
        let budget = crate::inputs::max_memory();
        if weights.is_none() {
            wafer_simulator::check_functional_budget(&g, a.steps, budget)?;
        }
        // Compile first: a model that does not fit fails before its weights are drawn.
        let c = wafer_compiler::compile(
            &g,
            &arch,
            &CompileOptions { wafers, max_memory_bytes: budget, ..Default::default() },
        )?;
        let w = weights.get_or_insert_with(|| wafer_simulator::Weights::random(&g, 42));
        let tokens: Vec<u64> = (0..p.batch).map(|b| (7 * t + 13 * b + 3) % cfg.vocab).collect();
        let want = wafer_simulator::run_reference(&g, w, &tokens, &mut kv_ref)?;
        let got = wafer_simulator::run_functional(&c.program, &c.info, &g, w, &tokens, &mut kv_fun)?;
        let scale = want.logits.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
        let diff = got.logits.iter().zip(want.logits.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        steps.push(FunctionalStep {
            context: t,
            max_rel_err: (diff / scale) as f64,
            tokens_match: got.sampled == want.sampled,
        });
    }
    Ok(FunctionalReport {
        engine: "functional",
        model: cfg.name.clone(),
        arch: arch.name.clone(),
        batch: a.step.batch,
        max_rel_err: steps.iter().map(|s| s.max_rel_err).fold(0.0, f64::max),
        steps,
    })
}

pub fn run(a: Args) -> Result<(), Exit> {
    if a.engine == Engine::Functional {
        let f = functional(&a)?;
        match a.format {
            Format::Json => print!("{}", to_json(&f)),
            Format::Text => {
                println!("{} on {}: compiled program vs dense reference (fp32, seeded weights)", f.model, f.arch);
                let mut t = wafer_reports::Table::new(&[">context", ">max rel. error", "sampled tokens"]);
                for s in &f.steps {
                    t.row([
                        s.context.to_string(),
                        format!("{:.2e}", s.max_rel_err),
                        (if s.tokens_match { "match" } else { "DIFFER" }).to_string(),
                    ]);
                }
                print!("{}", t.to_text());
            }
        }
        let ok = f.steps.iter().all(|s| s.max_rel_err <= 1e-4 && s.tokens_match);
        return if ok {
            Ok(())
        } else {
            Err(Exit {
                code: 1,
                message: format!(
                    "the compiled program disagrees with the reference (max rel. error {:.2e})",
                    f.max_rel_err
                ),
            })
        };
    }
    if let Some(dir) = &a.out.out {
        super::report_out::check_target(dir, a.out.force)?;
    }
    let (mut r, program) = run_report_and_program(&a.step, &a.machine, &a.gpu, a.no_gpu, a.engine)?;
    if !a.timings {
        r.timings = None;
    }
    if let Some(dir) = &a.out.out {
        super::report_out::write_folder(dir, &wafer_reports::run_folder(&r, &program)?, a.out.force)?;
        eprintln!("wrote {}", dir.display());
    }
    match a.format {
        Format::Json => print!("{}", to_json(&r)),
        Format::Text => print!("{}", r.to_text()),
    }
    Ok(())
}

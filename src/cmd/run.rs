//! `wafer run`: compile and simulate in one go, with the GPU baseline beside it.
//! With no flags: Llama-3.1-8B at context 4096 on one WSE-3, against H100-SXM.

use super::compile::{compile_step, MachineArgs};
use super::graph::{StepArgs, LATENCY_CONTEXT};
use super::{to_json, Format};
use crate::inputs::load_gpu;
use crate::Exit;
use wafer_compiler::CompileOptions;
use wafer_ir::{verify_graph, Graph};
use wafer_reports::{RunInputs, RunReport};
use wafer_simulator::{simulate_analytical, SimResult};
use wafer_workloads::decode_graph;

/// Which engine times the step.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Closed form per region along the critical path: fast, for sweeps.
    #[default]
    Analytical,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Analytical => "analytical",
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
    #[arg(long)]
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
}

/// Compiles, simulates and (unless `no_gpu`) estimates the GPU side.
pub fn run_report(
    step: &StepArgs,
    machine: &MachineArgs,
    gpu: &GpuArgs,
    no_gpu: bool,
    engine: Engine,
) -> Result<RunReport, Exit> {
    let c = compile_step(step, machine, CompileOptions::default())?;
    let sim: SimResult = match engine {
        Engine::Analytical => simulate_analytical(&c.program, &c.info),
    };
    let gpu_est = if no_gpu {
        None
    } else {
        let (cfg, p) = step.load(LATENCY_CONTEXT)?;
        let g = decode_graph(&cfg, &p)?;
        verify_graph(&g)?;
        Some(gpu_estimate(&g, gpu)?)
    };
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
    Ok(RunReport::new(inputs, c.stats, sim, gpu_est))
}

pub fn run(a: Args) -> Result<(), Exit> {
    let r = run_report(&a.step, &a.machine, &a.gpu, a.no_gpu, a.engine)?;
    match a.format {
        Format::Json => print!("{}", to_json(&r)),
        Format::Text => print!("{}", r.to_text()),
    }
    Ok(())
}

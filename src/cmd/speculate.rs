//! Speculative decoding on the wafer and the GPU, shared by `run`, `compare`
//! and `frontier`: the flags, the draft's graph, and one round on the wafer
//! (`wafer_compiler::place_draft` places the draft — on the target's wafers
//! when both fit, else on its own — and the selected engine times the draft
//! step and the verify step, each as its own program).

use super::run::{gpu_power_price, simulate_program, wafer_power_price, EnergyArgs, Engine};
use crate::inputs::load_model;
use crate::Exit;
use wafer_compiler::{place_draft, CompileOptions, Placement};
use wafer_gpu::SpecParams;
use wafer_ir::{verify_graph, ArchSpec, Graph, Program};
use wafer_reports::energy::{energy, Power, Price};
use wafer_reports::run::{GpuSpeculative, RunSpeculative, WaferSpeculative};
use wafer_workloads::{decode_graph, DecodeParams, ModelConfig};

/// `--draft M --spec-k K --accept A`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SpecArgs {
    /// Speculative decoding: the draft model (a preset or a config.json),
    /// placed on the target's wafers when both fit, else on wafers of its own.
    #[arg(long, requires_all = ["spec_k", "accept"])]
    pub draft: Option<String>,
    /// Tokens the draft proposes per verify step, 1..=32 (needs --draft).
    #[arg(long, value_parser = super::spec_k_flag, allow_negative_numbers = true, requires = "draft")]
    pub spec_k: Option<u32>,
    /// Probability that the target accepts each drafted token, 0..=1 (needs --draft).
    #[arg(long, value_parser = super::accept_flag, allow_negative_numbers = true, requires = "draft")]
    pub accept: Option<f64>,
}

impl SpecArgs {
    /// The draft's config and the checked parameters (None without `--draft`).
    pub fn load(&self) -> Result<Option<(ModelConfig, SpecParams)>, Exit> {
        match (&self.draft, self.spec_k, self.accept) {
            (Some(d), Some(k), Some(a)) => Ok(Some((load_model(d)?, SpecParams::new(k, a)?))),
            _ => Ok(None),
        }
    }
}

/// The draft's decode step at the target's step parameters (a model of
/// learned positions at most its own).
pub fn draft_graph(draft: &ModelConfig, p: &DecodeParams) -> Result<Graph, Exit> {
    let mut dp = *p;
    if draft.learned_positions {
        dp.context = dp.context.min(draft.max_positions);
    }
    let g = decode_graph(draft, &dp)?;
    verify_graph(&g)?;
    Ok(g)
}

/// One speculative round on the wafer beside the compiled `target` (of
/// `target_graph`, whose plain step takes `plain_us`): `Ok(Err(why))` when no
/// round can run (the verify step fits no mapping, the draft maps nowhere).
#[allow(clippy::too_many_arguments)]
pub fn wafer_round(
    engine: Engine,
    target: &Program,
    target_graph: &Graph,
    draft_graph: &Graph,
    arch: &ArchSpec,
    opts: &CompileOptions,
    sp: SpecParams,
    plain_us: f64,
    power_price: (Option<Power>, Option<Price>),
) -> Result<Result<WaferSpeculative, String>, Exit> {
    let opts = CompileOptions { max_memory_bytes: crate::inputs::max_memory(), ..opts.clone() };
    let plan = match place_draft(target, target_graph, draft_graph, arch, &opts, sp.k as u64 + 1) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let d = simulate_program(engine, &plan.draft_step.0, &plan.draft_step.1)?;
    let v = simulate_program(engine, &plan.verify_step.0, &plan.verify_step.1)?;
    let round_us = sp.k as f64 * d.tpot_us + v.tpot_us;
    let e_tok = sp.expected_tokens();
    let per_token = round_us / e_tok;
    let tokens_per_s = target.batch as f64 * 1e6 / per_token;
    let layout = match (plan.placement, plan.split) {
        (Placement::OwnWafers, _) => None,
        (Placement::Shared, Some(s)) => Some(s.to_string()),
        (Placement::Shared, None) => {
            Some(format!("stacked on the target's PEs in later turns ({})", plan.orientation.name()))
        }
    };
    let target_mapping = plan.target_recompiled.as_ref().map(|why| match &plan.target {
        Some(t) => format!("{why}: {} on {} wafer(s)", t.stats.strategy, t.program.wafers),
        None => why.clone(),
    });
    let (power, price) = power_price;
    Ok(Ok(WaferSpeculative {
        draft_step_us: d.tpot_us,
        draft_engine: d.engine.clone(),
        verify_step_us: v.tpot_us,
        verify_engine: v.engine.clone(),
        round_us,
        effective_us_per_token: per_token,
        effective_tokens_per_s: tokens_per_s,
        speedup: plain_us / per_token,
        placement: plan.placement.name().into(),
        layout,
        why_not_shared: plan.why_not_shared.clone(),
        machines: plan.machines,
        draft_wafers: plan.draft.program.wafers,
        target_mapping,
        energy: energy(&arch.name, plan.machines, tokens_per_s, power, price),
    }))
}

/// `run`/`compare --draft`: the wafer's round beside `program` (the report's
/// target mapping) and, when the report has a GPU, the GPU's, into
/// `r.speculative`. A round the wafer cannot run is an error (exit 2).
#[allow(clippy::too_many_arguments)]
pub fn attach_speculative(
    r: &mut wafer_reports::RunReport,
    program: &Program,
    step: &super::graph::StepArgs,
    machine: &super::compile::MachineArgs,
    gpu: &super::run::GpuArgs,
    energy_args: &EnergyArgs,
    engine: Engine,
    draft: &(ModelConfig, SpecParams),
) -> Result<(), Exit> {
    let (dcfg, sp) = draft;
    let (cfg, p) = step.load(super::graph::LATENCY_CONTEXT)?;
    let tg = decode_graph(&cfg, &p)?;
    verify_graph(&tg)?;
    let dg = draft_graph(dcfg, &p)?;
    let (arch, wafers) = machine.load()?;
    let opts = machine.options(CompileOptions { wafers, ..Default::default() });
    let pp = wafer_power_price(&arch.name, energy_args);
    let wafer = wafer_round(engine, program, &tg, &dg, &arch, &opts, *sp, r.simulation.tpot_us, pp)?
        .map_err(|why| Exit { code: 2, message: format!("--draft {}: {why}", dcfg.name) })?;
    let (mut gpu_side, mut gpu_error) = (None, None);
    if let Some(e) = &r.gpu {
        let spec = crate::inputs::load_gpu(&gpu.gpu)?;
        let opts = wafer_gpu::GpuOptions::with_headroom(gpu.gpu_mem_headroom)?;
        match super::gpu::speculate(&cfg, dcfg, &p, e, &spec, *sp, &opts) {
            Ok(s) => {
                let (power, price) = gpu_power_price(&spec, energy_args);
                let en = energy(&e.gpu, e.n_gpus, s.estimate.effective_tokens_per_s, power, price);
                gpu_side = Some(GpuSpeculative { estimate: s.estimate, energy: en });
            }
            Err(x) => gpu_error = Some(x.message),
        }
    }
    r.speculative = Some(RunSpeculative {
        draft: dg.name.clone(),
        k: sp.k,
        accept: sp.accept,
        expected_tokens_per_step: sp.expected_tokens(),
        wafer,
        gpu: gpu_side,
        gpu_error,
    });
    Ok(())
}

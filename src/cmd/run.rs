//! `wafer run`: compile and simulate in one go, with the GPU baseline beside it.
//! With no flags: Llama-3.1-8B at context 4096 on one WSE-3, against H100-SXM.

use super::compile::{compile_graph, step_graph, MachineArgs};
use super::graph::StepArgs;
use super::{to_json, Format};
use crate::inputs::load_gpu;
use crate::Exit;
use wafer_compiler::CompileOptions;
use wafer_ir::{verify_graph, Graph, ProgramInfo};
use wafer_reports::{RunInputs, RunReport};
use wafer_simulator::{simulate_analytical, try_simulate_event, EventLimits, FinishedSim};
use wafer_workloads::decode_graph;

/// Which engine times the step.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// The event engine where its run fits `--max-memory` and takes at most
    /// 2^24 messages (about ten seconds), else the analytical one (full-wafer
    /// spread mappings of large models send tens of millions of messages);
    /// reports name the engine that ran.
    #[default]
    Auto,
    /// Discrete-event: every message on every link, with contention (the reference).
    Event,
    /// Closed form per region along the critical path: fast, for sweeps.
    Analytical,
    /// Run the compiled program with real numbers (seeded random weights) for
    /// several steps and compare with a dense reference forward pass. For
    /// small models and meshes: it checks the mapping, it does not time it.
    Functional,
}

impl Engine {
    /// Fails (exit 2, before any work) for an engine that does not time a step.
    pub fn check_timing(self) -> Result<(), Exit> {
        match self {
            Engine::Functional => Err(Exit {
                code: 2,
                message: "--engine functional checks the mapping's numbers, it does not time it: \
                          use it with `wafer run` (without --out), or pick event or analytical"
                    .into(),
            }),
            _ => Ok(()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
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
    #[arg(long, value_parser = super::gpus_flag, allow_negative_numbers = true)]
    pub gpus: Option<u32>,
    /// Pipeline stages of --gpus GPUs each [default: 1 when the model fits, else the fewest that hold it].
    #[arg(long, value_parser = super::pp_flag, allow_negative_numbers = true)]
    pub pp: Option<u32>,
    /// Fraction of each GPU's memory kept free of weights and KV cache (CUDA
    /// context, runtime workspace, activations): 0 <= f < 1. The default 0.1 is
    /// vLLM's default `gpu_memory_utilization = 0.9`.
    #[arg(long, default_value_t = wafer_gpu::DEFAULT_MEM_HEADROOM)]
    pub gpu_mem_headroom: f64,
}

/// Power and price overrides for the energy and cost figures.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EnergyArgs {
    /// Price of one wafer system-hour, USD, for the cost per million tokens
    /// [default: the arch's assumed price in reports/data/power.toml, shown as assumed].
    #[arg(long, value_name = "USD", value_parser = super::price_flag, allow_negative_numbers = true)]
    pub price_per_hour: Option<f64>,
    /// Price of one GPU-hour, USD [default: the GPU's assumed price in reports/data/power.toml].
    #[arg(long, value_name = "USD", value_parser = super::price_flag, allow_negative_numbers = true)]
    pub gpu_price_per_hour: Option<f64>,
    /// Power of one wafer system, kW [default: the documented figure of wse2 / wse3; none for other archs].
    #[arg(long, value_name = "KW", value_parser = super::power_kw_flag, allow_negative_numbers = true)]
    pub wafer_power_kw: Option<f64>,
}

/// The energy and cost figures of a run: the wafer side on `wafers` systems
/// of `arch`, the GPU side from its estimate and spec.
pub fn energy_of(
    arch: &str,
    wafers: u32,
    wafer_tokens_per_s: f64,
    gpu: Option<(&wafer_gpu::GpuEstimate, &wafer_gpu::GpuSpec)>,
    a: &EnergyArgs,
) -> wafer_reports::Energy {
    let (power, price) = wafer_power_price(arch, a);
    let wafer = wafer_reports::energy::energy(arch, wafers, wafer_tokens_per_s, power, price);
    let gpu = gpu.map(|(e, spec)| {
        let (power, price) = gpu_power_price(spec, a);
        wafer_reports::energy::energy(&e.gpu, e.n_gpus, e.tokens_per_s, power, price)
    });
    wafer_reports::Energy { wafer, gpu }
}

/// One wafer system's power and price-per-hour for `arch`: the flags, else the documented figures.
pub fn wafer_power_price(
    arch: &str,
    a: &EnergyArgs,
) -> (Option<wafer_reports::energy::Power>, Option<wafer_reports::energy::Price>) {
    use wafer_reports::energy::{default_price, given_price, given_wafer_power, wafer_power};
    let power = a.wafer_power_kw.map(given_wafer_power).or_else(|| wafer_power(arch));
    let price = a.price_per_hour.map(|p| given_price(p, "--price-per-hour")).or_else(|| default_price(arch));
    (power, price)
}

/// One GPU's power and price-per-hour: its `tdp_w` and `--gpu-price-per-hour`, else the assumed price.
pub fn gpu_power_price(
    spec: &wafer_gpu::GpuSpec,
    a: &EnergyArgs,
) -> (Option<wafer_reports::energy::Power>, Option<wafer_reports::energy::Price>) {
    use wafer_reports::energy::{default_price, given_price, gpu_power};
    let price =
        a.gpu_price_per_hour.map(|p| given_price(p, "--gpu-price-per-hour")).or_else(|| default_price(&spec.name));
    (gpu_power(spec), price)
}

/// The GPU estimate with `--gpus N` (and `--pp`, or the fewest stages that
/// hold the model); without `--gpus`, the fewest power-of-two count up to 128
/// that holds the model by tensor parallelism alone (one stage, or `--pp`
/// stages if given), and where none does, the fewest stages of 8 GPUs (one
/// HGX node each).
pub fn gpu_estimate(g: &Graph, gpu: &wafer_gpu::GpuSpec, args: &GpuArgs) -> Result<wafer_gpu::GpuEstimate, Exit> {
    let opts = wafer_gpu::GpuOptions::with_headroom(args.gpu_mem_headroom)?;
    if let Some(n) = args.gpus {
        return Ok(wafer_gpu::estimate_auto(g, gpu, n, args.pp, &opts)?);
    }
    let mut last = None;
    for n in [1u32, 2, 4, 8, 16, 32, 64, 128] {
        match wafer_gpu::estimate_auto(g, gpu, n, Some(args.pp.unwrap_or(1)), &opts) {
            Ok(e) => return Ok(e),
            Err(e) => last = Some(e),
        }
    }
    if args.pp.is_none() {
        if let Ok(e) = wafer_gpu::estimate_auto(g, gpu, 8, None, &opts) {
            return Ok(e);
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
    #[command(flatten)]
    pub energy: EnergyArgs,
    /// Leave out the GPU comparison.
    #[arg(long)]
    pub no_gpu: bool,
    #[arg(long, value_enum, default_value_t)]
    pub engine: Engine,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Decode steps the functional engine checks: contexts 1..=steps, or the
    /// last `steps` contexts up to `--context`.
    #[arg(long, default_value_t = 4, value_parser = super::steps_flag, allow_negative_numbers = true)]
    pub steps: u64,
    /// Also report wall-clock time of compiling and simulating (not reproducible).
    #[arg(long)]
    pub timings: bool,
    /// Independent sequences (users) pipelined through the mapping at once:
    /// their aggregate and per-user tokens/s in steady state, and how many fit
    /// before the busiest PEs bind (closed form from the simulated step).
    #[arg(long, default_value_t = 1, value_parser = super::users_flag, allow_negative_numbers = true)]
    pub users: u32,
    /// With `--prompt N` (and `--cached C`): time to first token beside the
    /// per-token latency — the prompt streamed through the mapping on the
    /// wafer, the calibrated TTFT model on the GPU; the decode step is then the
    /// first answer token's, over C + N + 1 positions.
    #[command(flatten)]
    pub prefill: super::graph::PrefillArgs,
    #[command(flatten)]
    pub spec: super::speculate::SpecArgs,
    #[command(flatten)]
    pub out: super::report_out::OutArgs,
}

/// The most messages `--engine auto` plays with the event engine (about ten
/// seconds of it); beyond, or beyond `--max-memory`, auto runs the analytical one.
pub const AUTO_EVENTS: u64 = 1 << 24;

/// The event engine's limits: the defaults, with `--max-memory`.
pub fn event_limits() -> EventLimits {
    EventLimits { max_memory_bytes: crate::inputs::max_memory(), ..Default::default() }
}

/// Times a compiled program with `engine`.
pub fn simulate(engine: Engine, c: &wafer_compiler::Compiled) -> Result<FinishedSim, Exit> {
    simulate_program(engine, &c.program, &c.info)
}

/// Times a verified program with `engine`. A run that does not finish
/// (deadlock, cycle limit) is an error (exit 1) naming what was blocked: the
/// one way to a latency is through [`wafer_simulator::SimResult::finished`].
pub fn simulate_program(engine: Engine, p: &wafer_ir::Program, info: &ProgramInfo) -> Result<FinishedSim, Exit> {
    let sim = match engine {
        Engine::Auto => match try_simulate_event(p, info, &EventLimits { max_events: AUTO_EVENTS, ..event_limits() }) {
            Ok(sim) => sim,
            Err(wafer_ir::ResourceError::Memory { .. } | wafer_ir::ResourceError::Work { .. }) => {
                simulate_analytical(p, info)
            }
            Err(e) => return Err(e.into()),
        },
        Engine::Event => try_simulate_event(p, info, &event_limits())?,
        Engine::Analytical => simulate_analytical(p, info),
        Engine::Functional => return Err(Engine::Functional.check_timing().unwrap_err()),
    };
    sim.finished().map_err(|e| Exit { code: 1, message: e.to_string() })
}

/// Compiles, simulates and (unless `no_gpu`) estimates the GPU side; returns
/// the compiled program too (report folders paint it). Every input (engine,
/// GPU, GPU count, model, arch, wafers) is checked before the compile starts:
/// the GPU side needs only the graph, so it runs first.
pub fn run_report_and_program(
    step: &StepArgs,
    machine: &MachineArgs,
    gpu: &GpuArgs,
    energy: &EnergyArgs,
    no_gpu: bool,
    engine: Engine,
) -> Result<(RunReport, wafer_ir::Program, wafer_ir::ProgramInfo), Exit> {
    engine.check_timing()?;
    let gpu_spec = if no_gpu { None } else { Some(load_gpu(&gpu.gpu)?) };
    let t0 = std::time::Instant::now();
    let m = machine.load()?;
    let g = step_graph(step)?;
    let gpu_est = gpu_spec.as_ref().map(|s| gpu_estimate(&g, s, gpu)).transpose()?;
    let c = compile_graph(&g, &m, machine.options(CompileOptions::default()))?;
    let t2 = std::time::Instant::now();
    let sim = simulate(engine, &c)?;
    let timings = wafer_reports::Timings {
        compile_ms: (t2 - t0).as_secs_f64() * 1e3,
        simulate_ms: t2.elapsed().as_secs_f64() * 1e3,
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
    let bound = wafer_simulator::machine_bound(&g, &p.arch, p.wafers);
    let en = energy_of(&p.arch.name, sim.wafers, sim.tokens_per_s, gpu_est.as_ref().zip(gpu_spec.as_ref()), energy);
    let mut r = RunReport::new(inputs, c.stats, sim, bound, gpu_est, en);
    if r.gpu.is_some() {
        let k = wafer_gpu::calibration_report()?;
        r = r.with_gpu_calibration(wafer_reports::run::GpuCalibration {
            rows: k.rows.len(),
            median_abs_error_pct: 100.0 * k.median_abs_rel_error,
            max_abs_error_pct: 100.0 * k.max_abs_rel_error,
            max_row: k.max_row,
        });
    }
    r.timings = Some(timings);
    Ok((r, c.program, c.info))
}

/// One checked step of the functional engine.
#[derive(serde::Serialize)]
struct FunctionalStep {
    context: u64,
    /// Tokens of each sequence the step added: 1 for a decode step, the
    /// prompt for `--prompt` (streamed in chunks of `--prefill-chunk`).
    new_tokens: u64,
    max_rel_err: f64,
    tokens_match: bool,
}

#[derive(serde::Serialize)]
struct FunctionalReport {
    engine: &'static str,
    model: String,
    arch: String,
    batch: u64,
    /// Prompt tokens of each sequence per functional step (`--prompt` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    prefill_chunk: Option<u64>,
    steps: Vec<FunctionalStep>,
    max_rel_err: f64,
}

/// Max |got − want| / max |want| over two steps' logits, and whether they sampled alike.
fn functional_step(
    context: u64,
    new_tokens: u64,
    got: &wafer_simulator::FunctionalOutput,
    want: &wafer_simulator::StepOutput,
) -> FunctionalStep {
    let scale = want.logits.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    let diff = got.logits.iter().zip(want.logits.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    FunctionalStep {
        context,
        new_tokens,
        max_rel_err: (diff / scale) as f64,
        tokens_match: got.sampled == want.sampled,
    }
}

/// Runs the compiled program of `steps` consecutive decode steps with seeded
/// weights and a growing KV cache, against the dense reference: contexts
/// 1..=steps, or with `--context C` the last `steps` contexts up to C (the
/// earlier positions' caches seeded identically on both sides). With
/// `--prompt N [--cached C]`, first the prompt: streamed through the decode
/// mapping `--prefill-chunk` tokens of each sequence at a time (each chunk
/// the mapping compiled at its last position, restated by
/// `wafer_compiler::prefill_chunk`) against one reference prefill, then
/// `steps` decode steps after it.
fn functional(a: &Args) -> Result<FunctionalReport, Exit> {
    let cfg = crate::inputs::load_model(&a.step.model)?;
    let (arch, wafers) = a.machine.load()?;
    let budget = crate::inputs::max_memory();
    let opts = a.machine.options(CompileOptions { wafers, max_memory_bytes: budget, ..Default::default() });
    let decode_at = |t: u64| -> Result<Graph, Exit> {
        let g = decode_graph(&cfg, &wafer_workloads::DecodeParams { context: t, ..a.step.params(t) })?;
        verify_graph(&g)?;
        Ok(g)
    };
    // Compile first: a model that does not fit fails before its weights are drawn.
    let compile_at = |t: u64| -> Result<wafer_compiler::Compiled, Exit> {
        Ok(wafer_compiler::compile(&decode_at(t)?, &arch, &opts)?)
    };
    let mut steps = Vec::new();
    let mut weights = None;
    let (mut kv_ref, mut kv_fun) = (wafer_simulator::KvState::new(), wafer_simulator::KvState::new());
    let tok = |t: u64, b: u64| (7 * t + 13 * b + 3) % cfg.vocab;
    let batch = a.step.batch;
    let (first, last) = match a.prefill.prompt {
        Some(prompt) => {
            let cached = a.prefill.cached.unwrap_or(0);
            let chunk = a.machine.prefill_chunk.max(1);
            let pf = a.prefill.params(&a.step.params(cached + prompt)).expect("--prompt given");
            let pg = wafer_workloads::prefill_graph(&cfg, &pf)?;
            verify_graph(&pg)?;
            wafer_simulator::check_functional_budget(&pg, prompt + a.steps, budget)?;
            if cached > 0 {
                (kv_ref, kv_fun) = wafer_simulator::KvState::random_past(&decode_at(cached + 1)?, 7);
            }
            // Token `i` of the prompt is the one a decode check feeds at context `cached + i + 1`.
            let ids = |from: u64, to: u64| -> Vec<u64> {
                (0..batch).flat_map(|b| (from..to).map(move |i| tok(cached + i + 1, b))).collect::<Vec<u64>>()
            };
            let mut done = 0;
            let mut got = None;
            while done < prompt {
                let n = chunk.min(prompt - done);
                let t = cached + done + n;
                let c = compile_at(t)?;
                let w = weights.get_or_insert_with(|| wafer_simulator::Weights::random(&pg, 42));
                let (p, info, g) = if n > 1 {
                    let (p, info) = wafer_compiler::prefill_chunk(&c.program, n)?;
                    let g = wafer_workloads::prefill_graph(
                        &cfg,
                        &wafer_workloads::PrefillParams { prompt: n, cached: cached + done, ..pf },
                    )?;
                    (p, info, g)
                } else {
                    (c.program, c.info, decode_at(t)?)
                };
                got = Some(wafer_simulator::run_functional(&p, &info, &g, w, &ids(done, done + n), &mut kv_fun)?);
                done += n;
            }
            let w = weights.as_ref().expect("drawn with the first chunk");
            let want = wafer_simulator::run_reference(&pg, w, &ids(0, prompt), &mut kv_ref)?;
            steps.push(functional_step(cached + prompt, prompt, &got.expect("a prompt of at least one token"), &want));
            (cached + prompt + 1, cached + prompt + a.steps)
        }
        None => {
            let last = a.step.context.unwrap_or(a.steps);
            let first = last.saturating_sub(a.steps) + 1;
            let g = decode_at(first)?;
            wafer_simulator::check_functional_budget(&g, a.steps, budget)?;
            if first > 1 {
                (kv_ref, kv_fun) = wafer_simulator::KvState::random_past(&g, 7);
            }
            (first, last)
        }
    };
    for t in first..=last {
        let g = decode_at(t)?;
        let c = compile_at(t)?;
        let w = weights.get_or_insert_with(|| wafer_simulator::Weights::random(&g, 42));
        let tokens: Vec<u64> = (0..g.batch).map(|b| tok(t, b)).collect();
        let want = wafer_simulator::run_reference(&g, w, &tokens, &mut kv_ref)?;
        let got = wafer_simulator::run_functional(&c.program, &c.info, &g, w, &tokens, &mut kv_fun)?;
        steps.push(functional_step(t, 1, &got, &want));
    }
    Ok(FunctionalReport {
        engine: "functional",
        model: cfg.name.clone(),
        arch: arch.name.clone(),
        batch: a.step.batch,
        prefill_chunk: a.prefill.prompt.map(|_| a.machine.prefill_chunk.max(1)),
        max_rel_err: steps.iter().map(|s| s.max_rel_err).fold(0.0, f64::max),
        steps,
    })
}

pub fn run(a: Args) -> Result<(), Exit> {
    if a.engine == Engine::Functional && a.spec.draft.is_some() {
        return Err(Exit {
            code: 2,
            message: "--draft times speculative decoding; --engine functional checks numbers: leave out one".into(),
        });
    }
    if a.engine == Engine::Functional {
        if a.out.out.is_some() {
            return Err(Exit {
                code: 2,
                message:
                    "--out writes a timing report; --engine functional checks numbers and has none: leave out --out"
                        .into(),
            });
        }
        let f = functional(&a)?;
        match a.format {
            Format::Json => print!("{}", to_json(&f)),
            Format::Text => {
                println!("{} on {}: compiled program vs dense fp32 reference (seeded weights)", f.model, f.arch);
                if let Some(c) = f.prefill_chunk {
                    println!("the prompt streamed {c} token(s) of each sequence per step, then decode steps");
                }
                let mut t =
                    wafer_reports::Table::new(&[">context", ">new tokens", ">max rel. error", "sampled tokens"]);
                for s in &f.steps {
                    t.row([
                        s.context.to_string(),
                        s.new_tokens.to_string(),
                        format!("{:.2e}", s.max_rel_err),
                        (if s.tokens_match { "match" } else { "DIFFER" }).to_string(),
                    ]);
                }
                print!("{}", t.to_text());
            }
        }
        // fp32 partials must reproduce the reference to fp32 rounding and sample the
        // same tokens; fp16 partials only to within their accumulation error (a few
        // 1e-3 on small models: the functional engine's module doc), and a near tie
        // in the logits may then sample another token.
        let ok = match a.machine.accumulate {
            super::compile::Accumulate::Fp32 => f.steps.iter().all(|s| s.max_rel_err <= 1e-4 && s.tokens_match),
            super::compile::Accumulate::Fp16 => f.steps.iter().all(|s| s.max_rel_err <= 2e-2),
        };
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
    let target = a.out.prepare()?;
    let step = after_prompt(&a.step, &a.prefill);
    let draft = a.spec.load()?;
    let (mut r, program, info) = run_report_and_program(&step, &a.machine, &a.gpu, &a.energy, a.no_gpu, a.engine)?;
    if let Some(d) = &draft {
        super::speculate::attach_speculative(&mut r, &program, &step, &a.machine, &a.gpu, &a.energy, a.engine, d)?;
    }
    if !a.timings {
        r.timings = None;
    }
    let mut users = wafer_simulator::pipelining(&program, &r.simulation, a.users);
    if a.users > 1 {
        let replay = wafer_simulator::replay_users(&program, &r.simulation, a.users, wafer_simulator::REPLAY_TOKENS);
        users.replay = match replay {
            Ok(r) => Some(r),
            // Regions stacked on shared PEs: the closed form alone speaks.
            Err(wafer_simulator::ReplayError::SharedPes { .. }) => None,
            Err(e) => return Err(Exit { code: 2, message: format!("--users: {e}") }),
        };
        users_by_event(&mut users, &program, &info, &r.simulation, a.engine)?;
    }
    r.users = Some(users);
    attach_prefill(&mut r, &program, &info, &step, &a.gpu, &a.prefill)?;
    if let Some(t) = target {
        let shown = t.shown().display().to_string();
        t.write(&wafer_reports::run_folder(&r, &program, &wafer_ir::lower(&program, &info))?)?;
        eprintln!("wrote {shown}");
    }
    match a.format {
        Format::Json => print!("{}", to_json(&r)),
        Format::Text => print!("{}", r.to_text()),
    }
    Ok(())
}

/// The users of `--users` timed by the event engine over the step unrolled
/// into users x [`wafer_simulator::EVENT_TOKENS`] copies, into `users.event`:
/// with `--engine event` (refused above its limits: exit 2), or `auto`
/// within `--max-memory` and [`AUTO_EVENTS`] (else `users.event_skipped` says why).
fn users_by_event(
    users: &mut wafer_simulator::Pipelining,
    program: &wafer_ir::Program,
    info: &wafer_ir::ProgramInfo,
    sim: &FinishedSim,
    engine: Engine,
) -> Result<(), Exit> {
    let limits = match engine {
        Engine::Event => event_limits(),
        Engine::Auto => EventLimits { max_events: AUTO_EVENTS, ..event_limits() },
        Engine::Analytical | Engine::Functional => return Ok(()),
    };
    let refuse = |e: String| -> Result<(), Exit> {
        match engine {
            Engine::Event => Err(Exit { code: 2, message: format!("--users with --engine event: {e}") }),
            _ => Ok(()),
        }
    };
    let n = users.users;
    let tokens = wafer_simulator::EVENT_TOKENS;
    let (u, ui) = match wafer_compiler::unroll_users(program, info, n, tokens) {
        Ok(x) => x,
        Err(e) => {
            users.event_skipped = Some(e.to_string());
            return refuse(e.to_string());
        }
    };
    let run =
        wafer_simulator::engine_steady(program, sim, &u, &ui, n, tokens, wafer_simulator::SteadyEngine::Event(limits));
    match run {
        Ok(s) => users.event = Some(s),
        Err(e @ wafer_simulator::SteadyError::TooLarge { .. }) => {
            users.event_skipped = Some(e.to_string());
            return refuse(e.to_string());
        }
        Err(e) => return Err(Exit { code: 1, message: format!("--users: {e}") }),
    }
    Ok(())
}

/// The step a report times when a prompt is given: the first answer token's,
/// over cached + prompt + 1 positions (else `step` itself).
pub fn after_prompt(step: &StepArgs, prefill: &super::graph::PrefillArgs) -> StepArgs {
    let mut step = step.clone();
    if let Some(prompt) = prefill.prompt {
        step.context = Some(prefill.cached.unwrap_or(0) + prompt + 1);
    }
    step
}

/// With `--prompt N`: the time to first token on the wafer (the prompt
/// streamed through `program`, from its simulated step) and, when the report
/// has a GPU, on the GPU (the calibrated prefill model at the same tensor and
/// pipeline parallelism), into `r.prefill`.
pub fn attach_prefill(
    r: &mut RunReport,
    program: &wafer_ir::Program,
    info: &wafer_ir::ProgramInfo,
    step: &StepArgs,
    gpu: &GpuArgs,
    prefill: &super::graph::PrefillArgs,
) -> Result<(), Exit> {
    let Some(prompt) = prefill.prompt else { return Ok(()) };
    let cached = prefill.cached.unwrap_or(0);
    let choice = best_prefill(program, info, &r.simulation, prompt)?;
    let s = choice.best.clone();
    // The pipelined GEMMs' closed form, checked block by block where the replay is small enough.
    let replay = match s.way {
        wafer_simulator::PrefillWay::Gemm => {
            wafer_simulator::replay_gemm(program, info, prompt, s.chunk).ok().map(|g| {
                wafer_reports::run::PrefillReplay {
                    ttft_us: g.ttft_cycles / (program.arch.clock_ghz * 1e3),
                    vs_closed_form: g.vs_closed_form,
                }
            })
        }
        _ => None,
    };
    let gpu_ttft_us = match &r.gpu {
        Some(g) => {
            let (cfg, p) = step.load(super::graph::LATENCY_CONTEXT)?;
            let pf = wafer_workloads::PrefillParams {
                batch: p.batch,
                prompt,
                cached,
                weight_dtype: p.weight_dtype,
                act_dtype: p.act_dtype,
                kv_dtype: p.kv_dtype,
            };
            let gp = wafer_workloads::prefill_graph(&cfg, &pf)?;
            wafer_ir::verify_graph(&gp)?;
            let opts = wafer_gpu::GpuOptions::with_headroom(gpu.gpu_mem_headroom)?;
            let spec = load_gpu(&gpu.gpu)?;
            let e = wafer_gpu::estimate_prefill_pipeline(&gp, &spec, g.tensor_parallel, g.pipeline_stages, &opts)?;
            Some(e.ttft_ms * 1e3)
        }
        None => None,
    };
    r.prefill = Some(wafer_reports::run::RunPrefill {
        prompt,
        cached,
        ttft_us: s.ttft_us,
        prompt_tokens_per_s: s.prompt_tokens_per_s,
        bottleneck: s.bottleneck,
        way: s.way.name().into(),
        chunk: s.chunk,
        chunks: choice.tried,
        chunk_limit: choice.limit,
        gemm_blocks: choice.gemm_tried,
        gemm_limit: choice.gemm_limit,
        replay,
        gpu_ttft_us,
    });
    Ok(())
}

/// How a prompt best runs on a mapping, and what else was tried.
#[derive(Debug, Clone)]
pub struct PrefillChoice {
    /// The fastest of the ways.
    pub best: wafer_simulator::StreamedPrefill,
    /// Every chunk streamed, with its time to first token.
    pub tried: Vec<wafer_reports::run::ChunkTtft>,
    /// Why no larger chunk was tried (its buffers do not fit in SRAM), if one was refused.
    pub limit: Option<String>,
    /// Every schedule and block size of the gemm way, with its time to first token.
    pub gemm_tried: Vec<wafer_reports::run::GemmTtft>,
    /// Why no larger block (or, when `gemm_tried` is empty, none at all) fitted.
    pub gemm_limit: Option<String>,
}

/// Largest prompt chunk tried (tokens of each sequence per step), and the
/// largest block of the gemm way.
pub const MAX_CHUNK: u64 = 4096;

/// The fastest way to run `prompt` tokens of each sequence on `program`,
/// where decode will read their KV cache:
/// * streamed one token at a time (from its simulated step `sim`), or in
///   chunks of 2, 4, … tokens per sequence (the mapping restated by
///   `wafer_compiler::prefill_chunk`, priced by the analytical engine) up to
///   the prompt, [`MAX_CHUNK`], or the first chunk whose buffers do not fit;
/// * as weight-stationary GEMMs over every Gemv's resident weights, the
///   blocks pipelined through the layers or run layer by layer (square
///   regions also as Cannon GEMMs), in blocks of 1, 2, 4, … tokens up to the
///   first whose tiles do not fit (`wafer_simulator::gemm_prefill`).
pub fn best_prefill(
    program: &wafer_ir::Program,
    info: &wafer_ir::ProgramInfo,
    sim: &wafer_simulator::FinishedSim,
    prompt: u64,
) -> Result<PrefillChoice, Exit> {
    let one = wafer_simulator::streamed_prefill(program, sim, prompt);
    let mut tried = vec![wafer_reports::run::ChunkTtft { chunk: 1, ttft_us: one.ttft_us }];
    let (mut best, mut limit) = (one, None);
    let mut c = 2u64;
    while c <= prompt.min(MAX_CHUNK) {
        match wafer_compiler::prefill_chunk(program, c) {
            Ok((p, info)) => {
                let done = wafer_simulator::simulate_analytical(&p, &info)
                    .finished()
                    .map_err(|e| Exit { code: 1, message: e.to_string() })?;
                let s = wafer_simulator::streamed_prefill(&p, &done, prompt);
                tried.push(wafer_reports::run::ChunkTtft { chunk: c, ttft_us: s.ttft_us });
                if s.ttft_us < best.ttft_us {
                    best = s;
                }
            }
            Err(e) => {
                // The first diagnostic names the region and the bytes.
                let why = match &e {
                    wafer_compiler::CompileError::Verify { errors, .. } => {
                        errors.0.first().map_or_else(|| e.to_string(), |d| d.to_string())
                    }
                    _ => e.to_string(),
                };
                limit = Some(format!("a chunk of {c} tokens does not fit: {why}"));
                break;
            }
        }
        c *= 2;
    }
    let hz = program.arch.clock_ghz * 1e9;
    let (gemm_tried, gemm_limit) = match wafer_simulator::gemm_prefill(program, info, prompt, MAX_CHUNK) {
        Ok((g, search)) => {
            let tried = search
                .tried
                .iter()
                .map(|&(schedule, m, cycles)| wafer_reports::run::GemmTtft {
                    schedule: schedule.name().into(),
                    block: m,
                    ttft_us: cycles / hz * 1e6,
                })
                .collect();
            if g.ttft_us < best.ttft_us {
                best = g;
            }
            let limits: Vec<String> = search.limits.iter().map(|e| e.to_string()).collect();
            (tried, (!limits.is_empty()).then(|| limits.join("; ")))
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(PrefillChoice { best, tried, limit, gemm_tried, gemm_limit })
}

//! `wafer compare`: the wafer and a GPU baseline side by side, for people
//! deciding between them.

use super::compile::MachineArgs;
use super::graph::StepArgs;
use super::run::{after_prompt, attach_prefill, run_report_and_program, EnergyArgs, Engine, GpuArgs};
use super::{to_json, Format};
use crate::Exit;
use wafer_reports::Table;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    step: StepArgs,
    #[command(flatten)]
    machine: MachineArgs,
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    energy: EnergyArgs,
    #[arg(long, value_enum, default_value_t)]
    engine: Engine,
    /// Tokens in one edit round trip, for the "time to write N tokens" row.
    #[arg(long, default_value_t = 500, value_parser = super::tokens_flag, allow_negative_numbers = true)]
    tokens: u64,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// With `--prompt N` (and `--cached C`): time to first token on both
    /// sides, and the round trip (first token, then `--tokens` tokens); the
    /// per-token figures are then the first answer token's, over C + N + 1 positions.
    #[command(flatten)]
    prefill: super::graph::PrefillArgs,
    #[command(flatten)]
    spec: super::speculate::SpecArgs,
    #[command(flatten)]
    out: super::report_out::OutArgs,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let target = a.out.prepare()?;
    let step = after_prompt(&a.step, &a.prefill);
    let draft = a.spec.load()?;
    let (mut r, program, info) = run_report_and_program(&step, &a.machine, &a.gpu, &a.energy, false, a.engine)?;
    if let Some(d) = &draft {
        super::speculate::attach_speculative(&mut r, &program, &step, &a.machine, &a.gpu, &a.energy, a.engine, d)?;
    }
    r.timings = None;
    attach_prefill(&mut r, &program, &info, &step, &a.gpu, &a.prefill)?;
    if let Some(t) = target {
        let shown = t.shown().display().to_string();
        t.write(&wafer_reports::run_folder(&r, &program, &wafer_ir::lower(&program, &info))?)?;
        eprintln!("wrote {shown}");
    }
    if a.format == Format::Json {
        print!("{}", to_json(&r));
        return Ok(());
    }
    let (Some(g), Some(c)) = (&r.gpu, &r.comparison) else { unreachable!("run_report with a GPU always compares") };
    let s = &r.simulation;
    let i = &r.inputs;
    println!("{} — context {}, batch {}, weights {}, KV {}", i.model, i.context, i.batch, i.weight_dtype, i.kv_dtype);
    println!();
    let mut t = Table::new(&["", ">wafer", ">GPU"]);
    t.row(["hardware".to_string(), format!("{} × {}", s.wafers, i.arch), format!("{} × {}", g.n_gpus, g.gpu)]);
    t.row(["per-token latency".to_string(), format!("{:.1} µs", c.wafer_tpot_us), format!("{:.1} µs", c.gpu_tpot_us)]);
    t.row(["tokens/s".to_string(), format!("{:.0}", s.tokens_per_s), format!("{:.0}", g.tokens_per_s)]);
    let b = &r.machine_limit;
    t.row([
        "machine limit (any mapping)".to_string(),
        format!("{:.2} µs ({} floor); {:.0}× above it", b.bound_us, b.binding_floor.name(), r.bound_ratio),
        "-".to_string(),
    ]);
    t.row([
        format!("time to write {} tokens", a.tokens),
        format!("{:.2} s", c.wafer_tpot_us * a.tokens as f64 / 1e6),
        format!("{:.2} s", c.gpu_tpot_us * a.tokens as f64 / 1e6),
    ]);
    if let Some(p) = &r.prefill {
        let gpu_ttft = p.gpu_ttft_us.unwrap_or(f64::NAN);
        t.row([
            format!("time to first token ({} new over {} cached)", p.prompt, p.cached),
            format!("{:.1} ms ({})", p.ttft_us / 1e3, p.way_short()),
            format!("{:.1} ms", gpu_ttft / 1e3),
        ]);
        // Per-token latency held at the first answer token's: an upper bound
        // for the wafer's context-independent stages, close for the GPU's.
        t.row([
            format!("round trip (first token, then {} tokens)", a.tokens),
            format!("{:.2} s", (p.ttft_us + c.wafer_tpot_us * a.tokens as f64) / 1e6),
            format!("{:.2} s", (gpu_ttft + c.gpu_tpot_us * a.tokens as f64) / 1e6),
        ]);
    }
    let (w, gp) = (&r.energy.wafer, r.energy.gpu.as_ref());
    t.row(["energy per token".to_string(), w.joules_text(), gp.map_or("-".into(), |e| e.joules_text())]);
    t.row(["cost".to_string(), w.cost_text(), gp.map_or("-".into(), |e| e.cost_text())]);
    if let Some(x) = &r.speculative {
        let w = &x.wafer;
        let head = format!("draft {}, k = {}, α = {}", x.draft, x.k, x.accept);
        let g = x.gpu.as_ref();
        t.row(["speculative decoding".to_string(), head.clone(), g.map_or("-".into(), |_| head.clone())]);
        t.row([
            "  per-token latency".to_string(),
            format!("{:.1} µs", w.effective_us_per_token),
            g.map_or("-".into(), |g| format!("{:.1} µs", g.estimate.effective_tpot_ms * 1e3)),
        ]);
        t.row([
            "  tokens/s (× plain)".to_string(),
            format!("{:.0} ({:.2}×)", w.effective_tokens_per_s, w.speedup),
            g.map_or("-".into(), |g| format!("{:.0} ({:.2}×)", g.estimate.effective_tokens_per_s, g.estimate.speedup)),
        ]);
        t.row([
            "  round (k draft + verify)".to_string(),
            format!("{} × {:.1} + {:.1} µs", x.k, w.draft_step_us, w.verify_step_us),
            g.map_or("-".into(), |g| {
                format!("{} × {:.1} + {:.1} µs", x.k, g.estimate.draft_step_ms * 1e3, g.estimate.verify_step_ms * 1e3)
            }),
        ]);
        t.row([
            "  draft placed".to_string(),
            format!("{} ({} × {} in all)", w.placement, w.machines, i.arch),
            g.map_or(x.gpu_error.clone().unwrap_or("-".into()), |_| {
                format!("shared ({} × {} in all)", gpu_n(&r), x.gpu.as_ref().map_or("", |g| g.energy.machine.as_str()))
            }),
        ]);
        t.row([
            "  energy per token".to_string(),
            w.energy.joules_text(),
            g.map_or("-".into(), |g| g.energy.joules_text()),
        ]);
        t.row(["  cost".to_string(), w.energy.cost_text(), g.map_or("-".into(), |g| g.energy.cost_text())]);
    }
    t.row(["bound by".to_string(), c.wafer_bound.clone(), c.gpu_bound.clone()]);
    let m = &g.memory;
    t.row([
        "memory per device".to_string(),
        format!(
            "{} of {} SRAM per PE (mean)",
            wafer_reports::bytes(r.compile.sram_mean_bytes as u64),
            wafer_reports::bytes(program.arch.pe.sram_bytes)
        ),
        format!(
            "{:.1} of {:.1} GB usable ({:.0}% headroom), {:.1} GB free",
            (m.weight_bytes_per_gpu + m.kv_bytes_per_gpu) as f64 / 1e9,
            m.usable_bytes_per_gpu as f64 / 1e9,
            100.0 * m.headroom_fraction,
            m.free_bytes_per_gpu as f64 / 1e9
        ),
    ]);
    t.row([
        "model".to_string(),
        format!("{} engine, uncalibrated", s.engine),
        match &r.gpu_calibration {
            Some(k) => format!(
                "roofline, calibrated: median error {:.1}%, max {:.1}% on {} measured rows",
                k.median_abs_error_pct, k.max_abs_error_pct, k.rows
            ),
            None => "roofline, calibrated (wafer gpu --calibration)".to_string(),
        },
    ]);
    print!("{}", t.to_text());
    println!();
    if c.speedup >= 1.0 {
        println!("{} × {} is {:.2}× faster per token than {} × {}.", s.wafers, i.arch, c.speedup, g.n_gpus, g.gpu);
    } else {
        println!(
            "{} × {} is {:.2}× slower per token than {} × {}.",
            s.wafers,
            i.arch,
            1.0 / c.speedup,
            g.n_gpus,
            g.gpu
        );
    }
    if let Some(w) = r.speculative.as_ref().map(|x| &x.wafer) {
        println!();
        for (what, line) in [
            ("draft layout", &w.layout),
            ("draft not shared", &w.why_not_shared),
            ("target mapping", &w.target_mapping),
        ] {
            if let Some(l) = line {
                println!("{what}: {l}");
            }
        }
    }
    for e in r.explanations() {
        println!();
        for line in wafer_reports::charts::wrap(&e, 100) {
            println!("{line}");
        }
    }
    Ok(())
}

/// GPUs of the report's baseline.
fn gpu_n(r: &wafer_reports::RunReport) -> u32 {
    r.gpu.as_ref().map_or(0, |g| g.n_gpus)
}

//! `wafer compare`: the wafer and a GPU baseline side by side, for people
//! deciding between them.

use super::compile::MachineArgs;
use super::graph::StepArgs;
use super::run::{run_report_and_program, Engine, GpuArgs};
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
    #[arg(long, value_enum, default_value_t)]
    engine: Engine,
    /// Tokens in one edit round trip, for the "time to write N tokens" row.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    tokens: u64,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    out: super::report_out::OutArgs,
}

pub fn run(a: Args) -> Result<(), Exit> {
    if let Some(dir) = &a.out.out {
        super::report_out::check_target(dir, a.out.force)?;
    }
    let (mut r, program) = run_report_and_program(&a.step, &a.machine, &a.gpu, false, a.engine)?;
    r.timings = None;
    if let Some(dir) = &a.out.out {
        super::report_out::write_folder(dir, &wafer_reports::run_folder(&r, &program)?, a.out.force)?;
        eprintln!("wrote {}", dir.display());
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
    t.row(["hardware".to_string(), format!("{} x {}", s.wafers, i.arch), format!("{} x {}", g.n_gpus, g.gpu)]);
    t.row(["per-token latency".to_string(), format!("{:.1} us", c.wafer_tpot_us), format!("{:.1} us", c.gpu_tpot_us)]);
    t.row(["tokens/s".to_string(), format!("{:.0}", s.tokens_per_s), format!("{:.0}", g.tokens_per_s)]);
    t.row([
        format!("time to write {} tokens", a.tokens),
        format!("{:.2} s", c.wafer_tpot_us * a.tokens as f64 / 1e6),
        format!("{:.2} s", c.gpu_tpot_us * a.tokens as f64 / 1e6),
    ]);
    t.row(["bound by".to_string(), c.wafer_bound.clone(), c.gpu_bound.clone()]);
    t.row([
        "model".to_string(),
        format!("{} engine, uncalibrated", s.engine),
        "roofline, calibrated (wafer gpu --calibration)".to_string(),
    ]);
    print!("{}", t.to_text());
    println!();
    if c.speedup >= 1.0 {
        println!("The wafer is {:.2}x faster per token than {} x {}.", c.speedup, g.n_gpus, g.gpu);
    } else {
        println!("The wafer is {:.2}x slower per token than {} x {}.", 1.0 / c.speedup, g.n_gpus, g.gpu);
    }
    Ok(())
}

//! `wafer trace`: a Perfetto / chrome://tracing timeline of one decode step,
//! without the rest of a report folder.

use super::compile::{compile_step, MachineArgs};
use super::graph::StepArgs;
use super::run::{simulate, Engine};
use crate::inputs::write_atomic;
use crate::Exit;
use wafer_compiler::CompileOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    step: StepArgs,
    #[command(flatten)]
    machine: MachineArgs,
    #[arg(long, value_enum, default_value_t)]
    engine: Engine,
    /// Where to write the trace-event JSON (open it at ui.perfetto.dev).
    #[arg(long, short, default_value = "trace.json")]
    output: std::path::PathBuf,
}

pub fn run(a: Args) -> Result<(), Exit> {
    a.engine.check_timing()?;
    crate::inputs::check_output_file(&a.output)?;
    let (_, c) = compile_step(&a.step, &a.machine, CompileOptions::default())?;
    let sim = simulate(a.engine, &c)?;
    write_atomic(
        &a.output,
        wafer_reports::trace::chrome_trace(&c.program, &wafer_ir::lower(&c.program, &c.info), &sim).as_bytes(),
    )?;
    println!(
        "wrote {}: {} regions on {} wafer(s), {:.1} µs per token ({} engine); open it in Perfetto (ui.perfetto.dev)",
        a.output.display(),
        c.program.regions.len(),
        c.program.wafers,
        sim.tpot_us,
        sim.engine
    );
    Ok(())
}

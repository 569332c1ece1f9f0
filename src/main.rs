//! `wafer`: the command-line front end. Thin by design: parse flags, call the
//! library crates, render results and errors once. See ARCHITECTURE.md.

mod cmd;
mod inputs;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "wafer",
    version,
    about = "How fast would this transformer decode on this wafer-scale accelerator, why, and how does that compare to GPUs?",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Memory the compiler and engines may plan to use, e.g. 4G or 512M: a run
    /// whose estimate is above it is refused before allocating
    /// [default: half the physical memory, at most half of `ulimit -v`].
    #[arg(long, global = true, value_name = "BYTES", value_parser = inputs::parse_bytes)]
    max_memory: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compile and simulate a decode step, and compare with GPUs (the main job).
    Run(cmd::run::Args),
    /// List the built-in model presets with their sizes.
    Models(cmd::models::Args),
    /// Build the decode-step graph of a model and report its costs.
    Graph(cmd::graph::Args),
    /// GPU baseline: per-token latency on N GPUs, its calibration error, the GPU presets.
    Gpu(cmd::gpu::Args),
    /// Compile a model onto a wafer-scale machine and report the mapping.
    Compile(cmd::compile::Args),
    /// Sweep a grid of models, contexts, batches, wafers, GPUs and arch fields (shardable).
    Sweep(cmd::sweep::Args),
    /// Join the shards of a sweep into one folder, identical to an unsharded run.
    Merge(cmd::merge::Args),
    /// CI gate: re-run the cases of a baseline file and fail on figures beyond tolerance.
    Check(cmd::check::Args),
    /// Time a compiled program (textual spatial IR from `wafer compile -o`).
    Simulate(cmd::simulate::Args),
    /// The wafer and a GPU baseline side by side.
    Compare(cmd::compare::Args),
    /// List the machine presets with their key figures.
    Archs(cmd::archs::Args),
    /// Write a Perfetto timeline (trace-event JSON) of one decode step.
    Trace(cmd::trace::Args),
    /// Build a published wafer kernel (MeshGEMV) as a program and time it; `--calibration` replays the silicon rows.
    Kernel(cmd::kernel::Args),
    /// One editor round trip: time to first token on a prompt over a cached context, then the answer, wafer vs GPU.
    Roundtrip(cmd::roundtrip::Args),
    /// The latency–throughput frontier: per-user against aggregate tokens/s over strategies, batches and users, wafer vs GPU.
    Frontier(cmd::frontier::Args),
}

/// An error already rendered for the user, with the exit code to leave with.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl<E: std::fmt::Display> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit { code: 2, message: e.to_string() }
    }
}

/// `wafer … | head` should end quietly like other Unix tools: take the
/// default SIGPIPE action (the Rust runtime ignores it, so writes would fail
/// and `print!` would panic).
fn quiet_broken_pipes() {
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to its default before any thread
    // starts; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_broken_pipes();
    let cli = Cli::parse();
    inputs::set_max_memory(cli.max_memory.unwrap_or_else(inputs::default_max_memory));
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Models(a) => cmd::models::run(a),
        Command::Graph(a) => cmd::graph::run(a),
        Command::Gpu(a) => cmd::gpu::run(a),
        Command::Compile(a) => cmd::compile::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Merge(a) => cmd::merge::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Archs(a) => cmd::archs::run(a),
        Command::Trace(a) => cmd::trace::run(a),
        Command::Kernel(a) => cmd::kernel::run(a),
        Command::Roundtrip(a) => cmd::roundtrip::run(a),
        Command::Frontier(a) => cmd::frontier::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

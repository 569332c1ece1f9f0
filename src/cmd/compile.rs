//! `wafer compile`: lower a model onto a machine and report the mapping.

use super::graph::{StepArgs, LATENCY_CONTEXT};
use super::{to_json, Format};
use crate::inputs::{load_arch, write_atomic};
use crate::Exit;
use serde::Serialize;
use wafer_compiler::{compile, CompileOptions, CompileStats, Compiled, Wafers};
use wafer_ir::limits::MAX_WAFERS;
use wafer_ir::{print_program, verify_graph, ArchSpec, Graph};
use wafer_reports::{bytes, thousands};
use wafer_workloads::decode_graph;

/// Flags that pick the machine; shared by the commands that compile.
#[derive(clap::Args, Debug, Clone)]
pub struct MachineArgs {
    /// Arch preset (`wse2`, `wse3`, `mesh:WxH`; see `wafer archs`) or a TOML spec.
    #[arg(long, short, default_value = "wse3")]
    pub arch: String,
    /// Wafers to use: a number, or `auto` for the fewest that hold the model
    /// [default: the arch's `system.wafers`].
    #[arg(long, short, allow_hyphen_values = true)]
    pub wafers: Option<String>,
    /// Accumulator of the GEMV partial sums: fp32 (`@fmachs`) or fp16 (`@fmach`:
    /// twice the rate and half the fabric bytes, as MeshGEMV; coarser sums).
    #[arg(long, value_enum, default_value_t = Accumulate::Fp32)]
    pub accumulate: Accumulate,
}

/// `--accumulate`: the GEMV accumulator dtype.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accumulate {
    Fp32,
    Fp16,
}

impl Accumulate {
    pub fn dtype(self) -> wafer_ir::DType {
        match self {
            Accumulate::Fp32 => wafer_ir::DType::F32,
            Accumulate::Fp16 => wafer_ir::DType::F16,
        }
    }
}

impl MachineArgs {
    pub fn load(&self) -> Result<(ArchSpec, Wafers), Exit> {
        let arch = load_arch(&self.arch)?;
        let wafers = match self.wafers.as_deref() {
            None => Wafers::Fixed(arch.system.wafers),
            Some("auto") => Wafers::Auto,
            Some(n) => match n.parse::<u32>() {
                Ok(k) if (1..=MAX_WAFERS).contains(&k) => Wafers::Fixed(k),
                _ => {
                    return Err(Exit {
                        code: 2,
                        message: format!("--wafers is `{n}`; allowed: 1..={MAX_WAFERS} or auto"),
                    })
                }
            },
        };
        Ok((arch, wafers))
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub step: StepArgs,
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Write the spatial IR (textual form) to this file.
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Run the verifier after every pass.
    #[arg(long)]
    pub verify_each: bool,
    /// Print the spatial IR after this pass (fuse, partition, place, route, alloc, schedule); repeatable.
    #[arg(long)]
    pub dump_after: Vec<String>,
    /// List the compiler's passes with what each does, and exit.
    #[arg(long)]
    pub passes: bool,
}

/// Compiles the step the flags describe; also returns its (verified) graph.
pub fn compile_step(step: &StepArgs, machine: &MachineArgs, opts: CompileOptions) -> Result<(Graph, Compiled), Exit> {
    let loaded = machine.load()?;
    let g = step_graph(step)?;
    let c = compile_graph(&g, &loaded, CompileOptions { accumulate: machine.accumulate.dtype(), ..opts })?;
    Ok((g, c))
}

/// The verified decode-step graph the flags describe (cheap: before any compile).
pub fn step_graph(step: &StepArgs) -> Result<Graph, Exit> {
    let (cfg, p) = step.load(LATENCY_CONTEXT)?;
    let g = decode_graph(&cfg, &p)?;
    verify_graph(&g)?;
    Ok(g)
}

/// Compiles `g` onto a loaded machine ([`MachineArgs::load`]).
pub fn compile_graph(g: &Graph, (arch, wafers): &(ArchSpec, Wafers), opts: CompileOptions) -> Result<Compiled, Exit> {
    Ok(compile(g, arch, &CompileOptions { wafers: *wafers, max_memory_bytes: crate::inputs::max_memory(), ..opts })?)
}

#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    arch: &'a str,
    context: u64,
    batch: u64,
    #[serde(flatten)]
    stats: &'a CompileStats,
}

pub fn run(a: Args) -> Result<(), Exit> {
    if a.passes {
        for (name, what) in wafer_compiler::PASSES {
            println!("{name:10} {what}");
        }
        return Ok(());
    }
    if let Some(path) = &a.output {
        crate::inputs::check_output_file(path)?;
    }
    let opts = CompileOptions { verify_each: a.verify_each, dump_after: a.dump_after.clone(), ..Default::default() };
    let (_, c) = compile_step(&a.step, &a.machine, opts)?;
    for (pass, text) in &c.dumps {
        println!("; after pass {pass}");
        print!("{text}");
    }
    if let Some(path) = &a.output {
        write_atomic(path, print_program(&c.program).as_bytes())?;
    }
    let p = &c.program;
    let s = &c.stats;
    match a.format {
        Format::Json => {
            let r = Report { model: &p.model, arch: &p.arch.name, context: p.context, batch: p.batch, stats: s };
            print!("{}", to_json(&r));
        }
        Format::Text => {
            println!("{} on {} × {} (context {}, batch {})", p.model, s.wafers, p.arch.name, p.context, p.batch);
            println!(
                "PEs used:        {} of {} ({:.1}%) in {} regions, strip widths {:?}",
                thousands(s.pes_used),
                thousands(s.pes_available),
                100.0 * s.pes_used as f64 / s.pes_available as f64,
                s.regions,
                s.strip_widths
            );
            println!(
                "SRAM per PE:     mean {}, max {} of {} (code {}, weights {}, KV {}, buffers {} in total)",
                bytes(s.sram_mean_bytes as u64),
                bytes(s.sram_max_bytes),
                bytes(p.arch.pe.sram_bytes),
                bytes(s.sram_code_bytes),
                bytes(s.sram_weight_bytes),
                bytes(s.sram_kv_bytes),
                bytes(s.sram_buffer_bytes)
            );
            println!(
                "colors:          at most {} per router of {} available",
                s.colors_max_per_router, s.colors_available
            );
            println!(
                "routes:          {} ({} messages), longest {} hops",
                s.routes,
                thousands(s.messages),
                s.longest_route_hops
            );
            println!(
                "estimate:        {:.1} µs per token ({:.0} cycles at {} GHz, analytical)",
                s.estimate_us, s.estimate_cycles, p.arch.clock_ghz
            );
            println!(
                "mapping search:  {:.2}× faster than one square per matrix on the cost model",
                s.fixed_square_region_cycles / s.searched_region_cycles.max(1.0)
            );
            if let Some(path) = &a.output {
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

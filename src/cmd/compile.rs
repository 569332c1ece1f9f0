//! `wafer compile`: lower a model onto a machine and report the mapping.

use super::graph::{StepArgs, LATENCY_CONTEXT};
use super::{to_json, Format};
use crate::inputs::{load_arch, write_atomic};
use crate::Exit;
use serde::Serialize;
use wafer_compiler::{compile, CompileOptions, CompileStats, Compiled, Strategy, Wafers};
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
    /// Mapping: `pipeline` (disjoint regions, one per fused op), `spread`
    /// (every layer of a wafer over one block, layers taking turns on the same
    /// PEs), `hybrid:K` (blocks of K layers), or `auto`: the fastest on the
    /// cost model, the others' estimates shown.
    #[arg(long, default_value = "auto", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// `spread`/`hybrid`: square blocks of P×P PEs (e.g. 512, as WaferLLM's llama8B_4k_1_512).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub grid: Option<u32>,
    /// `spread`/`hybrid`: every GEMV reduces with MeshGEMV's two-chain `meet`
    /// shape in G groups per row (WaferLLM's group_num).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub groups: Option<u32>,
    /// What `--strategy auto` minimises first when strategies need different
    /// wafer counts (`--wafers auto`): `wafers` (the fewest, then the fastest)
    /// or `latency` (the fastest, whatever wafer count it takes).
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Wafers)]
    pub objective: ObjectiveArg,
    /// Leave room in every region's buffers for a prompt chunk of C tokens
    /// per sequence (1: decode only), so `--prompt` can stream the prompt C
    /// tokens at a time through the same mapping (fewer weights per PE: the
    /// mapping may need more PEs or wafers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub prefill_chunk: u64,
}

/// `--objective`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectiveArg {
    Wafers,
    Latency,
}

fn parse_strategy(v: &str) -> Result<Strategy, String> {
    v.parse()
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
    /// The arch preset with the default mapping flags.
    pub fn preset(arch: &str, wafers: Option<String>) -> MachineArgs {
        MachineArgs {
            arch: arch.into(),
            wafers,
            accumulate: Accumulate::Fp32,
            strategy: Strategy::Auto,
            grid: None,
            groups: None,
            objective: ObjectiveArg::Wafers,
            prefill_chunk: 1,
        }
    }

    /// `base` with the compile options these flags set.
    pub fn options(&self, base: CompileOptions) -> CompileOptions {
        CompileOptions {
            accumulate: self.accumulate.dtype(),
            strategy: self.strategy,
            grid: self.grid,
            groups: self.groups,
            objective: match self.objective {
                ObjectiveArg::Latency => wafer_compiler::Objective::Latency,
                ObjectiveArg::Wafers => wafer_compiler::Objective::Wafers,
            },
            prefill_chunk: self.prefill_chunk,
            ..base
        }
    }

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
    let c = compile_graph(&g, &loaded, machine.options(opts))?;
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
            let layout = if s.blocks.is_empty() {
                format!("strip widths {:?}", s.strip_widths)
            } else {
                let b: Vec<String> = s.blocks.iter().map(|(w, h)| format!("{w}x{h}")).collect();
                format!("blocks {}", b.join(", "))
            };
            println!("strategy:        {} ({layout})", s.strategy);
            for alt in &s.alternatives {
                match (alt.estimate_us, &alt.error) {
                    (Some(us), _) => println!(
                        "  {:<14} {:.1} µs per token on {} wafer(s) (analytical)",
                        alt.strategy,
                        us,
                        alt.wafers.unwrap_or(0)
                    ),
                    (None, e) => println!("  {:<14} does not compile: {}", alt.strategy, e.as_deref().unwrap_or("")),
                }
            }
            println!(
                "PEs used:        {} of {} ({:.1}%) in {} regions",
                thousands(s.pes_used),
                thousands(s.pes_available),
                100.0 * s.pes_used as f64 / s.pes_available as f64,
                s.regions,
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
            if s.strategy == "pipeline" {
                println!(
                    "mapping search:  {:.2}× faster than one square per matrix on the cost model",
                    s.fixed_square_region_cycles / s.searched_region_cycles.max(1.0)
                );
            }
            if let Some(path) = &a.output {
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

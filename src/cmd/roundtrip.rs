//! `wafer roundtrip`: one editor interaction — a prompt over a cached
//! context, then the answer streamed — on the wafer and on the GPU baseline.
//!
//! The wafer side compiles one mapping per strategy that holds the whole
//! interaction's KV cache (`cached + prompt + output` positions) and times
//! its decode step at that context. Time to first token is the faster of
//! two ways to run the prompt on that mapping: streamed in the fastest chunk
//! its buffers hold, or as weight-stationary GEMMs over its resident weights
//! in blocks pipelined through the layers ([`super::run::best_prefill`]); the answer
//! is the other `output − 1` steps. Both are priced at the final context: an
//! upper bound, as earlier tokens attend over fewer positions (one mapping
//! serves the whole interaction; compiling each context separately would
//! price steps on mappings that cannot hold the later KV, and the search is
//! not monotone in the context). The GPU side prices the prefill with its
//! calibrated TTFT model and the answer's steps at the same final context.
//! `--strategy auto` weighs pipeline, spread and hybrid:4 on the round trip,
//! each compiled for decode alone and with room for 4-token prompt blocks
//! (`--prefill-chunk C` fixes the room).

use super::compile::{compile_graph, MachineArgs, ObjectiveArg};
use super::graph::StepArgs;
use super::run::{gpu_estimate, simulate, Engine, GpuArgs};
use super::{to_json, Format};
use crate::inputs::load_gpu;
use crate::Exit;
use rayon::prelude::*;
use serde::Serialize;
use wafer_compiler::{CompileOptions, Strategy};
use wafer_ir::verify_graph;
use wafer_workloads::{decode_graph, prefill_graph, DecodeParams, PrefillParams};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub step: StepArgs,
    /// New prompt tokens the user sends.
    #[arg(long, default_value_t = 2000, value_parser = super::context_flag, allow_negative_numbers = true)]
    pub prompt: u64,
    /// Tokens of context already in the KV cache (the file, the conversation so far).
    #[arg(long, default_value_t = 30000, value_parser = super::cached_flag, allow_negative_numbers = true)]
    pub cached: u64,
    /// Tokens of the answer.
    #[arg(long, default_value_t = 400, value_parser = super::context_flag, allow_negative_numbers = true)]
    pub output: u64,
    #[command(flatten)]
    pub machine: MachineArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
    #[arg(long, value_enum, default_value_t)]
    pub engine: Engine,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    pub out: super::report_out::OutArgs,
}

/// One side of the round trip, µs.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// `wafer: 1 × wse3 (spread)` or `GPU: 1 × H100-SXM`.
    pub system: String,
    pub ttft_us: f64,
    pub decode_us: f64,
    pub total_us: f64,
    /// Answer tokens per second while streaming (after the first).
    pub output_tokens_per_s: f64,
    /// Per-token time of the answer's steps, µs (at the final context).
    pub tpot_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    /// Version of this JSON's layout (fields added keep it; a change of meaning bumps it).
    pub schema_version: u32,
    pub model: String,
    pub prompt: u64,
    pub cached: u64,
    pub output: u64,
    pub batch: u64,
    pub wafer: Side,
    /// The mapping and how the prompt streams through it.
    pub wafer_strategy: String,
    /// Prompt tokens per sequence the mapping was compiled to hold in its
    /// buffers (`--prefill-chunk`; 1: decode alone).
    pub prefill_room: u64,
    pub wafers: u32,
    pub wafer_engine: String,
    pub prefill_bottleneck: String,
    /// How the wafer runs the prompt: `stream` (chunks through the decode
    /// mapping), `gemm` (weight-stationary GEMMs, blocks pipelined through the
    /// layers), `gemm_layers` (the same GEMMs one region at a time) or
    /// `gemm_cannon` (layer by layer, square regions as Cannon GEMMs).
    pub prefill_way: String,
    /// Prompt tokens per step of the wafer's prefill (a chunk, or a GEMM's
    /// block; 1: token by token).
    pub prefill_chunk: u64,
    /// Every strategy tried: its wafers and round trip, or why it failed.
    pub alternatives: Vec<Alternative>,
    pub gpu: Side,
    pub gpus: u32,
}

/// A strategy `roundtrip` weighed.
#[derive(Debug, Clone, Serialize)]
pub struct Alternative {
    pub strategy: String,
    /// The room for prompt tokens it was compiled with (1: decode alone).
    pub prefill_room: u64,
    pub wafers: Option<u32>,
    pub total_us: Option<f64>,
    pub error: Option<String>,
}

fn side(system: String, ttft_us: f64, tpot_us: f64, output: u64) -> Side {
    let decode_us = (output - 1) as f64 * tpot_us;
    Side {
        system,
        ttft_us,
        decode_us,
        total_us: ttft_us + decode_us,
        output_tokens_per_s: if decode_us > 0.0 { (output - 1) as f64 / decode_us * 1e6 } else { 0.0 },
        tpot_us,
    }
}

pub fn roundtrip(a: &Args) -> Result<RoundTrip, Exit> {
    a.engine.check_timing()?;
    if a.step.context.is_some() {
        return Err(Exit {
            code: 2,
            message: "--context: roundtrip sets the context itself (--cached + --prompt + --output)".into(),
        });
    }
    let gpu_spec = load_gpu(&a.gpu.gpu)?;
    let (cfg, p) = a.step.load(super::graph::LATENCY_CONTEXT)?;
    let last_ctx = a.cached + a.prompt + a.output;
    if cfg.learned_positions && last_ctx > cfg.max_positions {
        return Err(Exit {
            code: 2,
            message: format!(
                "--cached {} + --prompt {} + --output {} = {last_ctx} positions; {} knows {} (learned positions)",
                a.cached, a.prompt, a.output, cfg.name, cfg.max_positions
            ),
        });
    }
    let graph = |context| -> Result<wafer_ir::Graph, Exit> {
        let g = decode_graph(&cfg, &DecodeParams { context, ..p })?;
        verify_graph(&g)?;
        Ok(g)
    };
    let g_last = graph(last_ctx)?;
    let pf = PrefillParams {
        batch: p.batch,
        prompt: a.prompt,
        cached: a.cached,
        weight_dtype: p.weight_dtype,
        act_dtype: p.act_dtype,
        kv_dtype: p.kv_dtype,
    };
    let g_prefill = prefill_graph(&cfg, &pf)?;
    verify_graph(&g_prefill)?;
    // The GPU first (it needs only the graphs): the count and stages that hold
    // the whole interaction serve both its parts.
    let gpu_last = gpu_estimate(&g_last, &gpu_spec, &a.gpu)?;
    let (tp, pp) = (gpu_last.tensor_parallel, gpu_last.pipeline_stages);
    let n = gpu_last.n_gpus;
    let opts = wafer_gpu::GpuOptions::with_headroom(a.gpu.gpu_mem_headroom)?;
    let gpu_prefill = wafer_gpu::estimate_prefill_pipeline(&g_prefill, &gpu_spec, tp, pp, &opts)?;
    // The wafer: per strategy, the mapping that holds the whole interaction.
    let m = a.machine.load()?;
    let tried: Vec<Strategy> = match a.machine.strategy {
        Strategy::Auto if a.machine.grid.is_none() && a.machine.groups.is_none() => {
            vec![Strategy::Pipeline, Strategy::Spread, Strategy::Hybrid(4)]
        }
        Strategy::Auto => vec![Strategy::Spread],
        s => vec![s],
    };
    // Each strategy compiled as for decode alone and with room for prompt
    // blocks of 4 tokens (bigger buffers, at some decode cost), unless
    // `--prefill-chunk` names the room.
    let rooms: Vec<u64> = if a.machine.prefill_chunk > 1 { vec![a.machine.prefill_chunk] } else { vec![1, ROOM] };
    let tried: Vec<(Strategy, u64)> = tried.iter().flat_map(|&s| rooms.iter().map(move |&r| (s, r))).collect();
    let wafer_side = |(strategy, room): (Strategy, u64)| -> Result<WaferSide, Exit> {
        let base = a.machine.options(CompileOptions::default());
        let last = compile_graph(&g_last, &m, CompileOptions { strategy, prefill_chunk: room, ..base })?;
        let sim_last = simulate(a.engine, &last)?;
        let stream = super::run::best_prefill(&last.program, &last.info, &sim_last, a.prompt)?.best;
        let wafers = last.program.wafers;
        Ok(WaferSide {
            side: side(
                format!("wafer: {wafers} × {} ({}{})", m.0.name, strategy.name(), room_label(room)),
                stream.ttft_us,
                sim_last.tpot_us,
                a.output,
            ),
            strategy: strategy.name(),
            room,
            wafers,
            engine: sim_last.engine.clone(),
            bottleneck: stream.bottleneck,
            chunk: stream.chunk,
            way: stream.way.name(),
        })
    };
    let mut best: Option<WaferSide> = None;
    let mut alternatives = Vec::new();
    let mut first_err = None;
    // Compiled and timed in parallel, weighed in the order tried (the same
    // answer whatever the thread count).
    let sides: Vec<Result<WaferSide, Exit>> = tried.par_iter().map(|&t| wafer_side(t)).collect();
    for ((s, room), side) in tried.into_iter().zip(sides) {
        match side {
            Ok(w) => {
                alternatives.push(Alternative {
                    strategy: w.strategy.clone(),
                    prefill_room: room,
                    wafers: Some(w.wafers),
                    total_us: Some(w.side.total_us),
                    error: None,
                });
                let key = |x: &WaferSide| match a.machine.objective {
                    ObjectiveArg::Wafers => (x.wafers as f64, x.side.total_us),
                    ObjectiveArg::Latency => (x.side.total_us, x.wafers as f64),
                };
                if best.as_ref().is_none_or(|b| key(&w) < key(b)) {
                    best = Some(w);
                }
            }
            Err(e) => {
                alternatives.push(Alternative {
                    strategy: s.name(),
                    prefill_room: room,
                    wafers: None,
                    total_us: None,
                    error: Some(e.message.clone()),
                });
                first_err.get_or_insert(e);
            }
        }
    }
    let Some(w) = best else { return Err(first_err.unwrap_or(Exit { code: 2, message: "no strategy".into() })) };
    Ok(RoundTrip {
        schema_version: 1,
        model: cfg.name.clone(),
        prompt: a.prompt,
        cached: a.cached,
        output: a.output,
        batch: p.batch,
        wafer: w.side,
        wafer_strategy: w.strategy,
        prefill_room: w.room,
        wafers: w.wafers,
        wafer_engine: w.engine,
        prefill_bottleneck: w.bottleneck,
        prefill_way: w.way.into(),
        prefill_chunk: w.chunk,
        alternatives,
        gpu: side(format!("GPU: {n} × {}", gpu_last.gpu), gpu_prefill.ttft_ms * 1e3, gpu_last.tpot_ms * 1e3, a.output),
        gpus: n,
    })
}

/// Room for prompt blocks `roundtrip` also tries each strategy with.
pub const ROOM: u64 = 4;

/// `, room for N` after a strategy compiled with room for prompt blocks.
fn room_label(room: u64) -> String {
    if room > 1 {
        format!(", room for {room}")
    } else {
        String::new()
    }
}

/// One strategy's wafer side.
struct WaferSide {
    side: Side,
    strategy: String,
    room: u64,
    wafers: u32,
    engine: String,
    bottleneck: String,
    chunk: u64,
    way: &'static str,
}

fn render(r: &RoundTrip) -> String {
    let mut s = format!(
        "{}: one round trip — {} prompt tokens over {} cached, {} answer tokens, batch {}\n\n",
        r.model, r.prompt, r.cached, r.output, r.batch
    );
    let mut t =
        wafer_reports::Table::new(&["", ">time to first token", ">answer (decode)", ">round trip", ">answer tokens/s"]);
    let fmt = |us: f64| if us >= 1e5 { format!("{:.2} s", us / 1e6) } else { format!("{:.1} ms", us / 1e3) };
    for side in [&r.wafer, &r.gpu] {
        t.row(vec![
            side.system.clone(),
            fmt(side.ttft_us),
            fmt(side.decode_us),
            fmt(side.total_us),
            format!("{:.0}", side.output_tokens_per_s),
        ]);
    }
    s += &t.to_text();
    s += &format!(
        "\nThe round trip takes {:.2}× as long on the GPU baseline as on the wafer.\n",
        r.gpu.total_us / r.wafer.total_us
    );
    if r.alternatives.len() > 1 {
        s += "Wafer strategies weighed:";
        for x in &r.alternatives {
            match (x.total_us, x.wafers, &x.error) {
                (Some(t), Some(w), _) => {
                    s += &format!(" {}{} {} on {w} wafer(s);", x.strategy, room_label(x.prefill_room), fmt(t))
                }
                (_, _, Some(e)) => {
                    s += &format!(" {}{} does not compile ({e});", x.strategy, room_label(x.prefill_room))
                }
                _ => {}
            }
        }
        s.pop();
        s += ".\n";
    }
    s += &format!(
        "Wafer: the prompt runs on the {}{} mapping {} ({}); the prompt and \
         the answer are priced at the final context, an upper bound ({} engine). GPU: the calibrated \
         TTFT and decode models, the answer at the final context too.\n",
        r.wafer_strategy,
        if r.prefill_room > 1 {
            format!(" (compiled with room for {}-token prompt blocks)", r.prefill_room)
        } else {
            String::new()
        },
        match (r.prefill_way.as_str(), r.prefill_chunk) {
            ("gemm_layers", m) => format!(
                "as weight-stationary GEMMs over its resident weights, layer by layer in blocks of {m} token{}, \
                 each block the sum of every region's pace, the largest",
                if m == 1 { "" } else { "s" }
            ),
            ("gemm_cannon", m) => format!(
                "layer by layer, every square region's GEMM Cannon-style over the whole prompt ({m} row{} per PE a \
                 pass), the largest share",
                if m == 1 { "" } else { "s" }
            ),
            ("gemm", m) => format!(
                "as weight-stationary GEMMs over its resident weights, in blocks of {m} token{} pipelined through \
                 the layers, one per bottleneck",
                if m == 1 { "" } else { "s" }
            ),
            (_, 1) => "streamed one token per bottleneck".to_string(),
            (_, c) => format!("streamed in chunks of {c} tokens, one per bottleneck"),
        },
        r.prefill_bottleneck,
        r.wafer_engine
    );
    s
}

pub fn run(a: Args) -> Result<(), Exit> {
    let target = a.out.prepare()?;
    let r = roundtrip(&a)?;
    if let Some(t) = target {
        let shown = t.shown().display().to_string();
        let sides: Vec<wafer_reports::RoundTripSide> = [&r.wafer, &r.gpu]
            .into_iter()
            .map(|s| wafer_reports::RoundTripSide {
                system: s.system.clone(),
                ttft_us: s.ttft_us,
                decode_us: s.decode_us,
            })
            .collect();
        let title = format!("{}: one round trip, wafer vs GPU", r.model);
        let what = format!("{} prompt tokens over {} cached, then {} answer tokens", r.prompt, r.cached, r.output);
        t.write(&wafer_reports::roundtrip_folder(&title, &what, &to_json(&r), &render(&r), &sides)?)?;
        eprintln!("wrote {shown}");
    }
    match a.format {
        Format::Json => print!("{}", to_json(&r)),
        Format::Text => print!("{}", render(&r)),
    }
    Ok(())
}

//! `wafer gpu`: the GPU baseline for one decode step (and, with `--prompt`,
//! the time to first token of a prefill), the models' error on the measured
//! rows (`--calibration`: TPOT and TTFT), and the GPU presets (`--list`).

use super::graph::{PrefillArgs, StepArgs};
use super::{to_json, Format};
use crate::inputs::load_gpu;
use crate::inputs::load_model;
use crate::Exit;
use serde::Serialize;
use wafer_gpu::{
    calibration_report, estimate_auto, estimate_mixed, estimate_opts, estimate_pipeline, estimate_prefill_pipeline,
    gpu_presets, speculative, ttft_calibration_report, CalibrationReport, GpuEstimate, GpuOptions, MixedEstimate,
    PrefillEstimate, SpecEstimate, SpecParams, TtftCalibrationReport,
};
use wafer_ir::verify_graph;
use wafer_reports::energy;
use wafer_reports::Table;
use wafer_workloads::{decode_graph, prefill_graph, PrefillParams};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    step: StepArgs,
    #[command(flatten)]
    prefill: PrefillArgs,
    /// GPU preset (see `--list`) or path to a TOML GPU spec.
    #[arg(long, short, default_value = "H100-SXM")]
    gpu: String,
    /// GPUs in each pipeline stage's tensor-parallel group (must divide the attention heads).
    #[arg(long, default_value_t = 1, value_parser = super::gpus_flag, allow_negative_numbers = true)]
    gpus: u32,
    /// Pipeline stages, each a tensor-parallel group of --gpus GPUs (--gpus × --pp GPUs in all)
    /// [default: 1 when the model fits, else the fewest stages that hold it].
    #[arg(long, value_parser = super::pp_flag, allow_negative_numbers = true)]
    pp: Option<u32>,
    /// Price of one GPU-hour, USD, for the cost per million tokens [default: the GPU's assumed
    /// price in reports/data/power.toml, shown as assumed].
    #[arg(long, value_name = "USD", value_parser = super::price_flag, allow_negative_numbers = true)]
    price_per_hour: Option<f64>,
    /// Speculative decoding: the draft model (a preset or a config.json), run on the same GPUs.
    #[arg(long, requires_all = ["spec_k", "accept"], conflicts_with = "prompt")]
    draft: Option<String>,
    /// Tokens the draft proposes per verify step, 1..=32 (needs --draft).
    #[arg(long, value_parser = super::spec_k_flag, allow_negative_numbers = true, requires = "draft")]
    spec_k: Option<u32>,
    /// Probability that the target accepts each drafted token, 0..=1 (needs --draft).
    #[arg(long, value_parser = super::accept_flag, allow_negative_numbers = true, requires = "draft")]
    accept: Option<f64>,
    /// Chunked prefill mixed into decode: the prompt (one new request) is
    /// prefilled this many tokens a step beside the --batch sequences decoding
    /// (needs --prompt): its time to first token under load and the decoders'
    /// time per token meanwhile.
    #[arg(long, value_name = "TOKENS", value_parser = super::context_flag, allow_negative_numbers = true, requires = "prompt", conflicts_with = "draft")]
    mix_chunk: Option<u64>,
    /// Fraction of each GPU's memory kept free of weights and KV cache (CUDA
    /// context, runtime workspace, activations): 0 <= f < 1. The default 0.1 is
    /// vLLM's default `gpu_memory_utilization = 0.9`.
    #[arg(long, default_value_t = wafer_gpu::DEFAULT_MEM_HEADROOM)]
    gpu_mem_headroom: f64,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Print the model's error on every measured row of gpu_measured.csv instead.
    #[arg(long, conflicts_with = "list")]
    calibration: bool,
    /// List the GPU presets instead.
    #[arg(long)]
    list: bool,
}

pub fn run(a: Args) -> Result<(), Exit> {
    if a.list {
        return list(a.format);
    }
    if a.calibration {
        return calibration(a.format);
    }
    let (cfg, mut p) = a.step.load(super::graph::LATENCY_CONTEXT)?;
    let pf = a.prefill.params(&p);
    if let Some(f) = &pf {
        // The decode step after the prompt: the second output token, over cached + prompt + 1
        // positions (capped at a model's learned positions).
        let next = f.context() + 1;
        p.context = if cfg.learned_positions { next.min(cfg.max_positions) } else { next };
    }
    let spec = match (a.spec_k, a.accept) {
        (Some(k), Some(acc)) => Some(SpecParams::new(k, acc)?),
        _ => None,
    };
    let opts = GpuOptions::with_headroom(a.gpu_mem_headroom)?;
    let gpu = load_gpu(&a.gpu)?;
    let draft_cfg = a.draft.as_deref().map(load_model).transpose()?;
    // The decode step first: it sets the pipeline stages (its KV cache, after the prompt, is the larger).
    let g = decode_graph(&cfg, &p)?;
    verify_graph(&g)?;
    let e = estimate_auto(&g, &gpu, a.gpus, a.pp, &opts)?;
    let prefill = match &pf {
        Some(f) => {
            let g = prefill_graph(&cfg, f)?;
            verify_graph(&g)?;
            Some(estimate_prefill_pipeline(&g, &gpu, e.tensor_parallel, e.pipeline_stages, &opts)?)
        }
        None => None,
    };
    let spec = match (spec, &draft_cfg) {
        (Some(sp), Some(dc)) => Some(speculate(&cfg, dc, &p, &e, &gpu, sp, &opts)?),
        _ => None,
    };
    let mixed = match (a.mix_chunk, &pf) {
        (Some(c), Some(f)) => {
            let one = PrefillParams { batch: 1, ..*f };
            Some(estimate_mixed(&cfg, &p, &one, c, &gpu, e.tensor_parallel, e.pipeline_stages, &opts)?)
        }
        _ => None,
    };
    let tokens_per_s = spec.as_ref().map_or(e.tokens_per_s, |s| s.estimate.effective_tokens_per_s);
    let price = a
        .price_per_hour
        .map(|u| energy::given_price(u, "--price-per-hour"))
        .or_else(|| energy::default_price(&gpu.name));
    let en = energy::energy(&gpu.name, e.n_gpus, tokens_per_s, energy::gpu_power(&gpu), price);
    match a.format {
        Format::Json => print!(
            "{}",
            to_json(&GpuOut {
                decode: &e,
                ttft_ms: prefill.as_ref().map(|p| p.ttft_ms),
                prefill: prefill.as_ref(),
                speculative: spec.as_ref(),
                mixed: mixed.as_ref(),
                energy: &en,
            })
        ),
        Format::Text => {
            if let Some(pe) = &prefill {
                println!("{}", render_prefill(pe));
            }
            print!("{}", render(&e, &gpu));
            if let Some(sp) = &spec {
                print!("\n{}", render_spec(sp));
            }
            if let Some(m) = &mixed {
                print!("\n{}", render_mixed(m));
            }
            println!(
                "\nenergy: {}{}; cost: {}",
                en.joules_text(),
                if spec.is_some() { " (speculative)" } else { "" },
                en.cost_text()
            );
            println!("({})", en.sources_text());
        }
    }
    Ok(())
}

/// `wafer gpu --format json`: the decode estimate's fields; with `--prompt`,
/// `ttft_ms` beside its `tpot_ms` and the prefill estimate in full; with
/// `--draft`, the speculative figures; and the energy and cost per token.
#[derive(Serialize)]
struct GpuOut<'a> {
    #[serde(flatten)]
    decode: &'a GpuEstimate,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefill: Option<&'a PrefillEstimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speculative: Option<&'a Speculative>,
    /// With `--mix-chunk`: the prompt prefilled in chunks beside the decode batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    mixed: Option<&'a MixedEstimate>,
    energy: &'a wafer_reports::EnergyFigure,
}

/// The mixed-prefill block of the text output.
fn render_mixed(m: &MixedEstimate) -> String {
    let mut s = format!(
        "chunked prefill mixed into decode: a {}-token prompt over {} cached, {} tokens a step ({} steps), \
         beside {} sequence(s) decoding at context {}\n",
        m.prompt, m.cached, m.chunk, m.chunks, m.decode_batch, m.decode_context
    );
    s += &format!(
        "time to first token under load: {:.3} ms (alone, in one step: {:.3} ms)\n",
        m.ttft_ms, m.prefill_alone_ttft_ms
    );
    s += &format!(
        "decoders' time per token meanwhile: {:.3} ms (first step {:.3} ms, last {:.3} ms; alone {:.3} ms, +{:.0}%)\n",
        m.decode_tpot_ms,
        m.first_step.step_ms,
        m.last_step.step_ms,
        m.decode_alone_tpot_ms,
        (m.decode_tpot_ms / m.decode_alone_tpot_ms - 1.0) * 100.0
    );
    s += &format!(
        "without mixing the decoders would wait {:.3} ms between two tokens while the prompt runs alone\n",
        m.prefill_alone_ttft_ms
    );
    s += &format!(
        "{:.0} tokens/s (decode and prompt) over the mixed steps; memory per GPU {:.2} of {:.2} GB usable\n",
        m.tokens_per_s,
        m.need_bytes_per_gpu as f64 / 1e9,
        m.usable_bytes_per_gpu as f64 / 1e9
    );
    s += "(a kernel both sides run reads its weights once; its per-kernel overhead blends the decode and prefill \
          fits by rows: no measured mixed step is in the reference data)\n";
    s
}

/// Speculative decoding's figures and the verify step priced the other way.
#[derive(Serialize)]
pub(crate) struct Speculative {
    #[serde(flatten)]
    pub(crate) estimate: SpecEstimate,
    /// The verify step priced by the prefill model instead (its per-kernel
    /// overhead fitted on 128- and 2,048-token prompts), ms: a sensitivity figure.
    verify_step_ms_prefill_model: f64,
    /// GPU memory the draft's weights and KV cache take per GPU, bytes.
    draft_bytes_per_gpu: u64,
}

/// Prices speculative decoding on the target's GPUs: the draft's decode step
/// (same context, dtypes and tensor-parallel group, one stage) and the
/// target's (k + 1)-token verify step over the cached context, both by the
/// decode model; the draft must fit in the memory the target leaves free.
pub(crate) fn speculate(
    target: &wafer_workloads::ModelConfig,
    draft: &wafer_workloads::ModelConfig,
    p: &wafer_workloads::DecodeParams,
    e: &GpuEstimate,
    gpu: &wafer_gpu::GpuSpec,
    sp: SpecParams,
    opts: &GpuOptions,
) -> Result<Speculative, Exit> {
    let mut dp = *p;
    if draft.learned_positions {
        dp.context = dp.context.min(draft.max_positions);
    }
    let dg = decode_graph(draft, &dp)?;
    verify_graph(&dg)?;
    let d = estimate_opts(&dg, gpu, e.tensor_parallel, opts)?;
    let draft_bytes = d.memory.weight_bytes_per_gpu + d.memory.kv_bytes_per_gpu;
    if draft_bytes > e.memory.free_bytes_per_gpu {
        return Err(Exit {
            code: 2,
            message: format!(
                "the draft {} needs {:.2} GB per GPU beside {}, which leaves {:.2} GB free on each {}: \
                 pick a smaller draft, more GPUs (--gpus, --pp) or a lower --gpu-mem-headroom",
                dg.name,
                draft_bytes as f64 / 1e9,
                e.model,
                e.memory.free_bytes_per_gpu as f64 / 1e9,
                gpu.name
            ),
        });
    }
    let vp = PrefillParams {
        batch: p.batch,
        prompt: sp.k as u64 + 1,
        cached: p.context - 1,
        weight_dtype: p.weight_dtype,
        act_dtype: p.act_dtype,
        kv_dtype: p.kv_dtype,
    };
    let vg = prefill_graph(target, &vp)?;
    verify_graph(&vg)?;
    let v = estimate_pipeline(&vg, gpu, e.tensor_parallel, e.pipeline_stages, opts)?;
    let vpre = estimate_prefill_pipeline(&vg, gpu, e.tensor_parallel, e.pipeline_stages, opts)?;
    Ok(Speculative {
        estimate: speculative(&dg.name, sp, d.tpot_ms, v.tpot_ms, e.tpot_ms, p.batch),
        verify_step_ms_prefill_model: vpre.ttft_ms,
        draft_bytes_per_gpu: draft_bytes,
    })
}

/// The speculative-decoding block of the text output.
fn render_spec(s: &Speculative) -> String {
    let x = &s.estimate;
    let mut out = format!(
        "speculative decoding: draft {} proposes k = {} tokens, each accepted with probability {}\n",
        x.draft_model, x.k, x.accept
    );
    out += &format!("expected tokens per verify step (1 − α^(k+1)) / (1 − α) = {:.3}\n", x.expected_tokens_per_step);
    out += &format!(
        "round: {} × {:.3} ms draft + {:.3} ms verify ({}-token step) = {:.3} ms\n",
        x.k,
        x.draft_step_ms,
        x.verify_step_ms,
        x.k + 1,
        x.round_ms
    );
    out += &format!(
        "effective time per token: {:.3} ms ({:.1} tokens/s), {:.2}× plain decode ({:.3} ms)\n",
        x.effective_tpot_ms, x.effective_tokens_per_s, x.speedup, x.plain_tpot_ms
    );
    out += &format!(
        "(steps priced by the decode model; the verify step by the prefill model would take {:.3} ms; \
         the draft holds {:.2} GB per GPU)\n",
        s.verify_step_ms_prefill_model,
        s.draft_bytes_per_gpu as f64 / 1e9
    );
    out
}

/// The prefill block of the text output.
fn render_prefill(e: &PrefillEstimate) -> String {
    let mut s = format!(
        "prefill: {} prompt tokens over {} cached, batch {}, on {} × {}{}\n",
        e.prompt,
        e.cached,
        e.batch,
        e.n_gpus,
        e.gpu,
        if e.pipeline_stages > 1 { format!(" ({} pipeline stages)", e.pipeline_stages) } else { String::new() }
    );
    s += &format!("time to first token: {:.3} ms ({:.0} prompt tokens/s)\n", e.ttft_ms, e.prefill_tokens_per_s);
    s += &format!("bound by:        {} ({} kernels, {} collectives)\n", e.bound.name(), e.kernels, e.collectives);
    let b = &e.breakdown;
    s += "(compute: math at the fitted fraction of the dense peak; attention fused, scores never in HBM)\n";
    s += &parts_table(
        &[
            ("weights (HBM)", b.weights_ms),
            ("KV cache (HBM)", b.kv_cache_ms),
            ("activations (HBM)", b.activations_ms),
            ("compute", b.compute_ms),
            ("kernel overhead", b.kernel_overhead_ms),
            ("fixed overhead", b.fixed_overhead_ms),
            ("communication", b.communication_ms),
        ],
        e.ttft_ms,
    );
    let p = e.params;
    s += &format!(
        "fitted on the TTFT rows of gpu_measured.csv (wafer gpu --calibration): compute efficiency {}, \
         kernel overhead {} µs, fixed overhead {} µs (HBM efficiency and collective latency from the decode fit)\n",
        p.compute_efficiency, p.kernel_overhead_us, p.fixed_overhead_us
    );
    s
}

/// `wafer gpu --calibration --format json`: the TPOT report's fields and the TTFT report.
#[derive(Serialize)]
struct Calibrations<'a> {
    #[serde(flatten)]
    tpot: &'a CalibrationReport,
    ttft: &'a TtftCalibrationReport,
}

/// What a bound means, in words.
pub fn bound_meaning(b: wafer_gpu::Bound) -> &'static str {
    match b {
        wafer_gpu::Bound::Bandwidth => "most time is in kernels limited by HBM traffic",
        wafer_gpu::Bound::Compute => "most time is in kernels limited by math at the dense peak",
        wafer_gpu::Bound::Overhead => "most time is fixed per-kernel cost",
        wafer_gpu::Bound::Communication => "most time is in collectives between the GPUs",
    }
}

/// Weights, KV cache, headroom and what is left, per GPU.
fn memory_line(e: &GpuEstimate) -> String {
    let m = &e.memory;
    let gb = |b: u64| b as f64 / 1e9;
    format!(
        "memory per GPU:  {:.2} GB weights + {:.3} GB KV cache of {:.1} GB usable ({:.0} GB less {:.0}% headroom); {:.2} GB free\n",
        gb(m.weight_bytes_per_gpu),
        gb(m.kv_bytes_per_gpu),
        gb(m.usable_bytes_per_gpu),
        gb(m.capacity_bytes_per_gpu),
        100.0 * m.headroom_fraction,
        gb(m.free_bytes_per_gpu)
    )
}

/// The breakdown's parts and their total, in ms and as shares of it.
fn parts_table(parts: &[(&str, f64)], total_ms: f64) -> String {
    let mut t = Table::new(&["part", ">ms", ">share"]);
    for &(name, ms) in parts.iter().chain(std::iter::once(&("total", total_ms))) {
        t.row([name.to_string(), format!("{ms:.3}"), format!("{:.1}%", ms / total_ms * 100.0)]);
    }
    t.to_text()
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn render(e: &GpuEstimate, gpu: &wafer_gpu::GpuSpec) -> String {
    let layout = if e.pipeline_stages > 1 {
        format!(" ({} pipeline stages × {}-way tensor parallel)", e.pipeline_stages, e.tensor_parallel)
    } else {
        String::new()
    };
    let mut s = format!(
        "{} on {} × {}{layout} ({} GB, {} GB/s, {}): batch {}, context {}, weights {}, activations {}, KV {}\n",
        e.model,
        e.n_gpus,
        e.gpu,
        gpu.hbm_gb,
        gpu.hbm_gb_per_s,
        gpu.link.name(),
        e.batch,
        e.context,
        e.weight_dtype,
        e.act_dtype,
        e.kv_dtype
    );
    s += &format!("time per token:  {:.3} ms ({:.1} tokens/s)\n", e.tpot_ms, e.tokens_per_s);
    s += &format!("bound by:        {} ({})\n", e.bound.name(), bound_meaning(e.bound));
    s += &memory_line(e);
    s += &format!("kernels: {} per GPU per step; collectives: {}", e.kernels, e.collectives);
    if e.stage_sends > 0 {
        s += &format!(
            "; sends between stages: {} (stages run one after another for a sequence; each send over {} at \
             {:.0} GB/s plus the collective latency)",
            e.stage_sends,
            gpu.link.name(),
            gpu.link_bytes_per_s() / 1e9
        );
    }
    s += "\n\n";
    let b = &e.breakdown;
    s += "(compute: math at the dense peak in every kernel; the HBM parts: memory time beyond that math)\n";
    s += &parts_table(
        &[
            ("weights (HBM)", b.weights_ms),
            ("KV cache (HBM)", b.kv_cache_ms),
            ("activations (HBM)", b.activations_ms),
            ("compute", b.compute_ms),
            ("kernel overhead", b.kernel_overhead_ms),
            ("communication", b.communication_ms),
        ],
        e.tpot_ms,
    );
    s += "\n";
    let mut t = Table::new(&["op kind", ">ms"]);
    for (k, ms) in &e.by_kind_ms {
        t.row([k.clone(), format!("{ms:.3}")]);
    }
    s += &t.to_text();
    let p = e.params;
    s += &format!(
        "\nfitted on gpu_measured.csv (wafer gpu --calibration): HBM efficiency {}, kernel overhead {} µs, \
         collective latency {} µs\n",
        p.hbm_efficiency, p.kernel_overhead_us, p.collective_latency_us
    );
    s
}

fn calibration(format: Format) -> Result<(), Exit> {
    let r = calibration_report()?;
    let tt = ttft_calibration_report()?;
    if format == Format::Json {
        print!("{}", to_json(&Calibrations { tpot: &r, ttft: &tt }));
        return Ok(());
    }
    let mut t = Table::new(&[
        "id",
        "model",
        "gpu",
        ">n",
        "dtype",
        ">context",
        "framework",
        ">measured ms",
        ">predicted ms",
        ">error",
        "bound",
    ]);
    for x in &r.rows {
        let gpu = match &x.condition {
            Some(c) => format!("{} ({c})", x.gpu),
            None => x.gpu.clone(),
        };
        t.row([
            x.id.clone(),
            x.model.clone(),
            gpu,
            x.n_gpus.to_string(),
            x.dtype.clone(),
            x.context.to_string(),
            x.framework.clone(),
            format!("{:.2}", x.measured_ms),
            format!("{:.2}", x.predicted_ms),
            pct(x.rel_error),
            x.bound.name().to_string(),
        ]);
    }
    print!("{}", t.to_text());
    println!(
        "\n{} rows with a tpot_ms: median |error| {:.1}%, max {:.1}% ({})",
        r.rows.len(),
        r.median_abs_rel_error * 100.0,
        r.max_abs_rel_error * 100.0,
        r.max_row
    );
    let p = r.params;
    println!(
        "constants fitted to these rows: HBM efficiency {}, kernel overhead {} µs, collective latency {} µs",
        p.hbm_efficiency, p.kernel_overhead_us, p.collective_latency_us
    );
    println!("\ntime to first token (prefill of input_len tokens, nothing cached):");
    let mut t = Table::new(&[
        "id",
        "model",
        "gpu",
        ">n",
        "dtype",
        ">prompt",
        "framework",
        ">measured ms",
        ">predicted ms",
        ">error",
        ">held out",
        "bound",
    ]);
    for x in &tt.rows {
        t.row([
            x.id.clone(),
            x.model.clone(),
            x.gpu.clone(),
            x.n_gpus.to_string(),
            x.dtype.clone(),
            x.prompt.to_string(),
            x.framework.clone(),
            format!("{:.2}", x.measured_ms),
            format!("{:.2}", x.predicted_ms),
            pct(x.rel_error),
            pct(x.loo_rel_error),
            x.bound.name().to_string(),
        ]);
    }
    print!("{}", t.to_text());
    println!(
        "\n{} rows with a ttft_ms: median |error| {:.1}%, max {:.1}% ({}); leave-one-out (each row predicted by \
         constants fitted without it): median {:.1}%, max {:.1}%",
        tt.rows.len(),
        tt.median_abs_rel_error * 100.0,
        tt.max_abs_rel_error * 100.0,
        tt.max_row,
        tt.loo_median_abs_rel_error * 100.0,
        tt.loo_max_abs_rel_error * 100.0
    );
    let q = tt.params;
    println!(
        "constants fitted to these rows: compute efficiency {} of the dense peak, kernel overhead {} µs, \
         fixed overhead {} µs",
        q.compute_efficiency, q.kernel_overhead_us, q.fixed_overhead_us
    );
    Ok(())
}

fn list(format: Format) -> Result<(), Exit> {
    let all = gpu_presets()?;
    if format == Format::Json {
        print!("{}", to_json(&all));
        return Ok(());
    }
    let mut t = Table::new(&["gpu", ">memory GB", ">HBM GB/s", ">bf16 TFLOP/s", ">fp8 TFLOP/s", "link", ">link GB/s"]);
    for g in &all {
        t.row([
            g.name.clone(),
            g.hbm_gb.to_string(),
            g.hbm_gb_per_s.to_string(),
            g.bf16_dense_tflops.to_string(),
            g.fp8_dense_tflops.map_or("-".into(), |v| v.to_string()),
            g.link.name().to_string(),
            format!("{:.0}", g.link_bytes_per_s() * 2.0 / 1e9),
        ]);
    }
    print!("{}", t.to_text());
    println!("(dense figures; link bandwidth both directions together)");
    Ok(())
}

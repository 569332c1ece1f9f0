//! `wafer gpu`: the GPU baseline for one decode step, the model's error on
//! the measured rows (`--calibration`), and the GPU presets (`--list`).

use super::graph::StepArgs;
use super::{to_json, Format};
use crate::inputs::load_gpu;
use crate::Exit;
use wafer_gpu::{calibration_report, estimate, gpu_presets, GpuEstimate};
use wafer_ir::verify_graph;
use wafer_reports::Table;
use wafer_workloads::decode_graph;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    step: StepArgs,
    /// GPU preset (see `--list`) or path to a TOML GPU spec.
    #[arg(long, short, default_value = "H100-SXM")]
    gpu: String,
    /// GPUs in the tensor-parallel group (must divide the attention heads).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=super::run::MAX_GPUS))]
    gpus: u32,
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
    let (cfg, p) = a.step.load(super::graph::LATENCY_CONTEXT)?;
    let g = decode_graph(&cfg, &p)?;
    verify_graph(&g)?;
    let gpu = load_gpu(&a.gpu)?;
    let e = estimate(&g, &gpu, a.gpus)?;
    match a.format {
        Format::Json => print!("{}", to_json(&e)),
        Format::Text => print!("{}", render(&e, &gpu)),
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn render(e: &GpuEstimate, gpu: &wafer_gpu::GpuSpec) -> String {
    let mut s = format!(
        "{} on {} x {} ({} GB, {} GB/s, {}): batch {}, context {}, weights {}, activations {}, KV {}\n",
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
    s += &format!("bound by:        {}\n", e.bound.name());
    s += &format!(
        "memory per GPU:  {:.2} GB weights + {:.3} GB KV cache of {:.0} GB\n",
        e.memory.weight_bytes_per_gpu as f64 / 1e9,
        e.memory.kv_bytes_per_gpu as f64 / 1e9,
        gpu.hbm_gb
    );
    s += &format!("kernels: {} per GPU per step; collectives: {}\n\n", e.kernels, e.collectives);
    let b = &e.breakdown;
    let mut t = Table::new(&["part", ">ms", ">share"]);
    for (name, ms) in [
        ("weights (HBM)", b.weights_ms),
        ("KV cache (HBM)", b.kv_cache_ms),
        ("activations (HBM)", b.activations_ms),
        ("compute", b.compute_ms),
        ("kernel overhead", b.kernel_overhead_ms),
        ("communication", b.communication_ms),
        ("total", e.tpot_ms),
    ] {
        t.row([name.to_string(), format!("{ms:.3}"), format!("{:.1}%", ms / e.tpot_ms * 100.0)]);
    }
    s += &t.to_text();
    s += "\n";
    let mut t = Table::new(&["op kind", ">ms"]);
    for (k, ms) in &e.by_kind_ms {
        t.row([k.clone(), format!("{ms:.3}")]);
    }
    s += &t.to_text();
    let p = e.params;
    s += &format!(
        "\nfitted on gpu_measured.csv (wafer gpu --calibration): HBM efficiency {}, kernel overhead {} us, \
         collective latency {} us\n",
        p.hbm_efficiency, p.kernel_overhead_us, p.collective_latency_us
    );
    s
}

fn calibration(format: Format) -> Result<(), Exit> {
    let r = calibration_report()?;
    if format == Format::Json {
        print!("{}", to_json(&r));
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
        "constants fitted to these rows: HBM efficiency {}, kernel overhead {} us, collective latency {} us",
        p.hbm_efficiency, p.kernel_overhead_us, p.collective_latency_us
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

//! `wafer sweep SPEC.toml`: a grid of design points, evaluated in parallel
//! (rayon; rows in grid order whatever the thread count), optionally one
//! shard `I/N` of it, written as a report folder (CSV, JSON, curves).

use super::report_out::OutArgs;
use super::run::{simulate, Engine};
use crate::inputs::{load_arch, load_gpu, load_model};
use crate::Exit;
use rayon::prelude::*;
use std::collections::BTreeMap;
use wafer_compiler::{compile, CompileOptions, Wafers};
use wafer_ir::{verify_graph, ArchSpec, DType};
use wafer_reports::sweep::{
    apply_overrides, sweep_files, Figures, Point, Row, Shard, SweepOutput, SweepSpec, WafersSpec,
};
use wafer_workloads::{decode_graph, DecodeParams, ModelConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The sweep spec (TOML): models, archs, contexts, batches, wafers, gpus and [arch] fields to sweep.
    pub spec: std::path::PathBuf,
    /// Compute only the points whose index is I mod N (e.g. `--shard $SLURM_ARRAY_TASK_ID/8`).
    #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
    pub shard: Option<Shard>,
    /// Engine for every point [default: the spec's `engine`, else analytical, the fast one].
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,
    /// Allow a grid of more than 100,000 points (a shard of one never needs it).
    #[arg(long)]
    pub allow_large: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Inputs loaded once and shared by every point.
pub struct Inputs {
    models: BTreeMap<String, ModelConfig>,
    archs: BTreeMap<String, ArchSpec>,
    gpus: BTreeMap<String, (wafer_gpu::GpuSpec, Option<u32>)>,
    pub engine: Engine,
}

/// `PRESET`, `PRESET:N`, `path.toml` or `path.toml:N`.
fn split_gpu(s: &str) -> Result<(&str, Option<u32>), Exit> {
    match s.rsplit_once(':') {
        Some((name, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            let k: u32 = n
                .parse()
                .ok()
                .filter(|k| (1..=1024).contains(k))
                .ok_or_else(|| Exit { code: 2, message: format!("GPU `{s}`: the count after `:` must be 1..=1024") })?;
            Ok((name, Some(k)))
        }
        _ => Ok((s, None)),
    }
}

/// Loads every model, arch and GPU the spec names, and checks the swept arch
/// fields exist: bad input fails here (exit 2), before any point runs.
pub fn load_inputs(spec: &SweepSpec, engine: Engine) -> Result<Inputs, Exit> {
    let mut models = BTreeMap::new();
    for m in &spec.models {
        models.insert(m.clone(), load_model(m)?);
    }
    let mut archs = BTreeMap::new();
    for a in &spec.archs {
        let arch = load_arch(a)?;
        for (k, v) in &spec.arch {
            if let Err(e) = apply_overrides(&arch, &[(k.clone(), v[0].clone())]) {
                if e.contains("does not exist") || e.contains("is a table") {
                    return Err(Exit { code: 2, message: format!("sweep spec: {e}") });
                }
            }
        }
        archs.insert(a.clone(), arch);
    }
    let mut gpus = BTreeMap::new();
    for g in &spec.gpus {
        let (name, n) = split_gpu(g)?;
        gpus.insert(g.clone(), (load_gpu(name)?, n));
    }
    Ok(Inputs { models, archs, gpus, engine })
}

/// Compiles, simulates and (if the point names one) estimates the GPU side of one point.
pub fn eval_point(inp: &Inputs, p: &Point) -> Result<Figures, String> {
    let cfg = &inp.models[&p.model];
    // The prompt is the last N of the context's positions before the first
    // answer token, whose step the point times.
    let cached = match p.prompt {
        Some(n) => Some(p.context.checked_sub(n + 1).ok_or_else(|| {
            format!("prompt {n} needs a context of at least {} (the prompt, then the first answer token)", n + 1)
        })?),
        None => None,
    };
    let params = DecodeParams {
        batch: p.batch,
        context: p.context,
        weight_dtype: DType::Bf16,
        act_dtype: DType::Bf16,
        kv_dtype: DType::Bf16,
    };
    let g = decode_graph(cfg, &params).map_err(|e| e.to_string())?;
    verify_graph(&g).map_err(|e| e.to_string())?;
    let arch = apply_overrides(&inp.archs[&p.arch], &p.params)?;
    let wafers = match &p.wafers {
        WafersSpec::Count(n) => Wafers::Fixed(*n),
        WafersSpec::Word(w) if w == "auto" => Wafers::Auto,
        WafersSpec::Word(_) => Wafers::Fixed(arch.system.wafers),
    };
    let c = compile(
        &g,
        &arch,
        &CompileOptions { wafers, max_memory_bytes: crate::inputs::max_memory(), ..Default::default() },
    )
    .map_err(|e| e.to_string())?;
    let sim = simulate(inp.engine, &c).map_err(|e| e.message)?;
    let us = |x: f64| x / (sim.clock_ghz * 1e3);
    let limit = wafer_simulator::machine_bound(&g, &arch, sim.wafers);
    let mut f = Figures {
        tpot_us: sim.tpot_us,
        tokens_per_s: sim.tokens_per_s,
        cycles: sim.cycles,
        wafers_used: sim.wafers,
        pes_used: c.stats.pes_used,
        sram_mean_bytes: c.stats.sram_mean_bytes,
        compute_us: us(sim.breakdown.compute),
        comm_us: us(sim.breakdown.comm),
        inter_wafer_us: us(sim.breakdown.inter_wafer),
        wait_us: us(sim.breakdown.wait),
        bound: wafer_reports::run::wafer_bound(&sim.breakdown).into(),
        bound_us: limit.bound_us,
        bound_ratio: wafer_reports::run::bound_ratio(sim.tpot_us, &limit),
        binding_floor: limit.binding_floor.name().into(),
        gpu_tpot_us: None,
        gpu_tokens_per_s: None,
        gpus_used: None,
        speedup: None,
        gpu_error: None,
        ttft_us: None,
        prefill_way: None,
        prefill_chunk: None,
        gpu_ttft_us: None,
    };
    if let Some(prompt) = p.prompt {
        let choice = super::run::best_prefill(&c.program, &c.info, &sim, prompt).map_err(|e| e.message)?;
        f.ttft_us = Some(choice.best.ttft_us);
        f.prefill_way = Some(choice.best.way.name().into());
        f.prefill_chunk = Some(choice.best.chunk);
    }
    if let Some(name) = &p.gpu {
        let (spec, n) = &inp.gpus[name];
        let est = match n {
            Some(n) => wafer_gpu::estimate(&g, spec, *n).map_err(|e| e.to_string()),
            None => [1u32, 2, 4, 8, 16, 32, 64, 128]
                .iter()
                .map(|&k| wafer_gpu::estimate(&g, spec, k))
                .find_map(Result::ok)
                .ok_or_else(|| format!("{} GPUs of {} do not hold the model", 128, spec.name)),
        };
        match est {
            Ok(e) => {
                if let (Some(prompt), Some(cached)) = (p.prompt, cached) {
                    let pf = wafer_workloads::PrefillParams {
                        batch: p.batch,
                        prompt,
                        cached,
                        weight_dtype: params.weight_dtype,
                        act_dtype: params.act_dtype,
                        kv_dtype: params.kv_dtype,
                    };
                    let gp = wafer_workloads::prefill_graph(cfg, &pf).map_err(|e| e.to_string())?;
                    verify_graph(&gp).map_err(|e| e.to_string())?;
                    let opts = wafer_gpu::GpuOptions::default();
                    match wafer_gpu::estimate_prefill(&gp, spec, e.n_gpus, &opts) {
                        Ok(t) => f.gpu_ttft_us = Some(t.ttft_ms * 1e3),
                        Err(err) => f.gpu_error = Some(err.to_string()),
                    }
                }
                f.gpu_tpot_us = Some(e.tpot_ms * 1e3);
                f.gpu_tokens_per_s = Some(e.tokens_per_s);
                f.gpus_used = Some(e.n_gpus);
                f.speedup = Some(e.tpot_ms * 1e3 / sim.tpot_us.max(1e-12));
            }
            Err(e) => f.gpu_error = Some(e),
        }
    }
    Ok(f)
}

/// Evaluates `points` in parallel with a progress bar on stderr (hidden when
/// stderr is not a terminal); rows come back in the order of `points`.
pub fn run_points(inp: &Inputs, points: &[Point]) -> Vec<Row> {
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(points.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} points, ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let engine = inp.engine.name();
    let rows: Vec<Row> = points
        .par_iter()
        .map(|p| {
            let r = Row::new(p, engine, eval_point(inp, p));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    rows
}

pub fn run(a: Args) -> Result<(), Exit> {
    let text = crate::inputs::read_input(&a.spec, "sweep spec", crate::inputs::MAX_INPUT_BYTES)?;
    let source = a.spec.display().to_string();
    let spec = SweepSpec::from_toml(&text, &source)?;
    // A shard computes only its own points: the grid's size matters for it only per shard.
    spec.check_grid(
        &source,
        a.allow_large
            || a.shard.is_some_and(|s| {
                spec.grid_len().unwrap_or(u64::MAX) / s.count as u64 <= wafer_reports::sweep::MAX_GRID_POINTS
            }),
    )?;
    let engine = match (a.engine, &spec.engine) {
        (Some(e), _) => e,
        (None, Some(name)) => <Engine as clap::ValueEnum>::from_str(name, true).map_err(|_| Exit {
            code: 2,
            message: format!("{}: field `engine` is `{name}`; allowed: {}", a.spec.display(), engine_names()),
        })?,
        // Sweeps are many points: the closed form unless asked otherwise.
        (None, None) => Engine::Analytical,
    };
    engine.check_timing()?;
    let target = a.out.prepare()?;
    let inp = load_inputs(&spec, engine)?;
    // Each point holds its row and its share of sweep.json, sweep.csv and the
    // summary in memory until the folder is written: ~4 KB, generously.
    let count = spec.indices(a.shard).len() as u64;
    wafer_ir::ResourceError::check_memory(
        &format!("the sweep ({count} points)"),
        count.saturating_mul(4096),
        crate::inputs::max_memory(),
    )?;
    let points: Vec<Point> = spec.indices(a.shard).map(|i| spec.point(i)).collect();
    let rows = run_points(&inp, &points);
    let out = SweepOutput::new(&spec, engine.name(), a.shard, rows);
    let files = sweep_files(&out)?;
    let ok = out.rows.iter().filter(|r| r.figures.is_some()).count();
    if ok == 0 && !out.rows.is_empty() {
        let where_ = target.map_or(String::new(), |t| format!("; nothing was written to {}", t.shown().display()));
        return Err(Exit {
            code: 1,
            message: format!(
                "every one of the {} point(s) failed{where_}:\n{}",
                out.rows.len(),
                error_summary(&out.rows)
            ),
        });
    }
    print!(
        "{}",
        files
            .iter()
            .find(|f| f.name == "summary.md")
            .map_or(String::new(), |f| String::from_utf8_lossy(&f.bytes).into_owned())
    );
    if let Some(t) = target {
        let shown = t.shown().display().to_string();
        t.write(&files)?;
        eprintln!("wrote {shown} ({} points, {} with results)", out.rows.len(), ok);
    }
    Ok(())
}

/// Each distinct error once, with how many points (and which, the first few) it hit.
fn error_summary(rows: &[Row]) -> String {
    let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for r in rows {
        if let Some(e) = &r.error {
            by.entry(e.as_str()).or_default().push(r.index);
        }
    }
    let mut groups: Vec<(&str, Vec<usize>)> = by.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.1[0].cmp(&b.1[0])));
    let mut s = String::new();
    for (e, idx) in groups.iter().take(5) {
        let first: Vec<String> = idx.iter().take(5).map(|i| format!("#{i}")).collect();
        let more = if idx.len() > 5 { ", …" } else { "" };
        s += &format!("  {} point(s) ({}{more}): {e}\n", idx.len(), first.join(", "));
    }
    if groups.len() > 5 {
        s += &format!("  … and {} other error(s)\n", groups.len() - 5);
    }
    s.trim_end().to_string()
}

/// The engines `--engine` accepts, for messages.
pub fn engine_names() -> String {
    <Engine as clap::ValueEnum>::value_variants()
        .iter()
        .filter_map(|v| clap::ValueEnum::to_possible_value(v).map(|p| p.get_name().to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

//! `wafer check --baseline FILE`: the CI gate. Re-runs every recorded case
//! (the same path as `wafer run`) and compares its figures with the baseline.
//! Exit 0: all within tolerance; 1: some figure moved beyond it (or a case no
//! longer compiles), with a Markdown diff table on stdout (and appended to
//! `$GITHUB_STEP_SUMMARY` when set); 2: bad input. `--update` rewrites the
//! baseline atomically with the current figures, keeping its comments, and
//! records cases that have no `[case.expect]` yet.

use super::compile::MachineArgs;
use super::graph::StepArgs;
use super::run::{run_report_and_program, Engine, GpuArgs};
use crate::inputs::{load_arch, load_model, write_atomic};
use crate::Exit;
use rayon::prelude::*;
use wafer_ir::DType;
use wafer_reports::check::{compare, diff_markdown, Baseline, Case, Figures, DEFAULT_TOLERANCE_PCT};
use wafer_reports::sweep::WafersSpec;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Baseline file (TOML: [[case]] tables, each with an [case.expect] table
    /// once recorded).
    #[arg(long)]
    pub baseline: std::path::PathBuf,
    /// Allowed relative change of each figure, percent [default: the file's
    /// `tolerance_pct`, else 1].
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    pub tolerance: Option<f64>,
    /// Record the current figures in the baseline (atomically) instead of checking.
    #[arg(long)]
    pub update: bool,
}

fn run_case(c: &Case, engine: Engine) -> Result<Figures, String> {
    let step = StepArgs {
        model: c.model.clone(),
        batch: c.batch,
        context: Some(c.context),
        weight_dtype: DType::Bf16,
        act_dtype: DType::Bf16,
        kv_dtype: DType::Bf16,
    };
    let wafers = match &c.wafers {
        WafersSpec::Count(n) => Some(n.to_string()),
        WafersSpec::Word(w) if w == "auto" => Some("auto".into()),
        WafersSpec::Word(_) => None,
    };
    let machine = MachineArgs::preset(&c.arch, wafers);
    let gpu =
        GpuArgs { gpu: "H100-SXM".into(), gpus: None, pp: None, gpu_mem_headroom: wafer_gpu::DEFAULT_MEM_HEADROOM };
    let (r, program, info) =
        run_report_and_program(&step, &machine, &gpu, &Default::default(), true, engine).map_err(|e| e.message)?;
    // The machine's limit holds for any mapping: a latency below it is a bug in an engine.
    if r.tpot_us < r.bound_us {
        return Err(format!(
            "{:.2} µs per token is below the machine limit {:.2} µs ({}-bound floor): an engine undercounts",
            r.tpot_us,
            r.bound_us,
            r.machine_limit.binding_floor.name()
        ));
    }
    // The same time to first token `run --prompt` reports: the fastest chunk the mapping holds.
    let ttft_us = match c.prompt {
        Some(n) => {
            Some(super::run::best_prefill(&program, &info, &r.simulation, n).map_err(|e| e.message)?.best.ttft_us)
        }
        None => None,
    };
    Ok(Figures {
        tpot_us: Some(r.tpot_us),
        tokens_per_s: Some(r.tokens_per_s),
        cycles: Some(r.cycles),
        pes_used: Some(r.compile.pes_used),
        wafers_used: Some(r.wafers),
        ttft_us,
    })
}

pub fn run(a: Args) -> Result<(), Exit> {
    let source = a.baseline.display().to_string();
    let text = crate::inputs::read_input(&a.baseline, "baseline", crate::inputs::MAX_INPUT_BYTES)?;
    let b = Baseline::from_toml(&text, &source)?;
    if !a.update {
        b.require_figures(&source)?;
    }
    let tol = a.tolerance.or(b.tolerance_pct).unwrap_or(DEFAULT_TOLERANCE_PCT);
    if !(tol.is_finite() && (0.0..=100.0).contains(&tol)) {
        return Err(Exit { code: 2, message: format!("--tolerance is {tol}; allowed: 0..=100 (percent)") });
    }
    // Bad input (unknown model, arch or engine) exits 2 before anything runs.
    let mut engines = Vec::new();
    for (i, c) in b.case.iter().enumerate() {
        let e = <Engine as clap::ValueEnum>::from_str(&c.engine, true).map_err(|_| Exit {
            code: 2,
            message: format!(
                "{source}: case[{i}] ({}): field `engine` is `{}`; allowed: {}",
                c.label(),
                c.engine,
                super::sweep::engine_names()
            ),
        })?;
        e.check_timing().map_err(|x| Exit {
            code: 2,
            message: format!("{source}: case[{i}] ({}): field `engine`: {}", c.label(), x.message),
        })?;
        engines.push(e);
        load_model(&c.model)
            .map_err(|e| Exit { code: 2, message: format!("{source}: case[{i}] field `model`: {}", e.message) })?;
        load_arch(&c.arch)
            .map_err(|e| Exit { code: 2, message: format!("{source}: case[{i}] field `arch`: {}", e.message) })?;
    }
    let current: Vec<Result<Figures, String>> =
        b.case.par_iter().zip(engines.par_iter()).map(|(c, e)| run_case(c, *e)).collect();
    if a.update {
        let u = b.updated_text(&text, &current).map_err(|m| Exit { code: 1, message: format!("{source}: {m}") })?;
        write_atomic(&a.baseline, u.as_bytes())?;
        println!("recorded {} case(s) in {source}", b.case.len());
        return Ok(());
    }
    let diffs = compare(&b, &current, tol);
    let md = diff_markdown(&diffs, tol, &source);
    print!("{md}");
    if let Ok(path) = std::env::var("GITHUB_STEP_SUMMARY") {
        if !path.is_empty() {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Exit {
                code: 2,
                message: format!("cannot append to $GITHUB_STEP_SUMMARY ({path}): {e}"),
            })?;
            writeln!(f, "{md}").map_err(|e| Exit { code: 2, message: format!("cannot append to {path}: {e}") })?;
        }
    }
    let failing = diffs.iter().filter(|d| !d.verdict.passes()).count();
    if failing > 0 {
        return Err(Exit {
            code: 1,
            message: format!(
                "{failing} figure(s) outside {tol}% of {source}; if the change is intended, record it with `wafer check --baseline {source} --update`"
            ),
        });
    }
    Ok(())
}

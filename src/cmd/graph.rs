//! `wafer graph`: the decode-step (or, with `--prompt`, prefill-step) graph of
//! a model, its costs, and its textual IR.

use super::{to_json, Format};
use crate::inputs::load_model;
use crate::Exit;
use serde::Serialize;
use std::collections::BTreeMap;
use wafer_ir::Graph;
use wafer_ir::{graph_stats, print_graph, verify_graph, DType, OpCost};
use wafer_reports::{bytes, si, thousands, Table};
use wafer_workloads::{decode_graph, prefill_graph, DecodeParams, ModelConfig, PrefillParams};

/// Flags that describe one decode step; shared by every command that builds a graph.
#[derive(clap::Args, Debug, Clone)]
pub struct StepArgs {
    /// Preset name (see `wafer models`) or path to a Hugging Face config.json.
    #[arg(long, short, default_value = "llama-3.1-8b")]
    pub model: String,
    /// Sequences decoded together.
    #[arg(long, short, default_value_t = 1, value_parser = super::batch_flag, allow_negative_numbers = true)]
    pub batch: u64,
    /// Positions each new token attends over, itself included
    /// [default: 1 for `graph`, 4096 for the latency commands].
    #[arg(long, short, value_parser = super::context_flag, allow_negative_numbers = true)]
    pub context: Option<u64>,
    /// Weight storage format: fp32, bf16, fp16, fp8, int8, int4.
    #[arg(long, default_value = "bf16")]
    pub weight_dtype: DType,
    /// Activation format: fp32, bf16, fp16, fp8, int8.
    #[arg(long, default_value = "bf16")]
    pub act_dtype: DType,
    /// KV-cache format: fp32, bf16, fp16, fp8, int8, int4.
    #[arg(long, default_value = "bf16")]
    pub kv_dtype: DType,
}

/// Context the latency commands (run, compile, compare, gpu) use when none is given.
pub const LATENCY_CONTEXT: u64 = 4096;

impl StepArgs {
    pub fn params(&self, default_context: u64) -> DecodeParams {
        DecodeParams {
            batch: self.batch,
            context: self.context.unwrap_or(default_context),
            weight_dtype: self.weight_dtype,
            act_dtype: self.act_dtype,
            kv_dtype: self.kv_dtype,
        }
    }
    /// The model and the step's parameters, `default_context` where `--context` is
    /// absent (capped at the positions a model with learned positions knows).
    pub fn load(&self, default_context: u64) -> Result<(ModelConfig, DecodeParams), Exit> {
        let cfg = load_model(&self.model)?;
        let default = if cfg.learned_positions { default_context.min(cfg.max_positions) } else { default_context };
        let p = self.params(default);
        Ok((cfg, p))
    }
}

/// Flags that make the step a prefill: `--prompt N [--cached C]`.
#[derive(clap::Args, Debug, Clone)]
pub struct PrefillArgs {
    /// Build the prefill step instead: N new prompt tokens per sequence,
    /// attending causally over the cached positions and themselves.
    #[arg(long, value_parser = super::context_flag, allow_negative_numbers = true, conflicts_with = "context")]
    pub prompt: Option<u64>,
    /// Positions already in the KV cache before the prompt (chunked prefill); needs --prompt.
    #[arg(long, value_parser = super::cached_flag, allow_negative_numbers = true, requires = "prompt")]
    pub cached: Option<u64>,
}

impl PrefillArgs {
    /// The prefill parameters with the step's batch and dtypes, when `--prompt` is given.
    pub fn params(&self, step: &DecodeParams) -> Option<PrefillParams> {
        self.prompt.map(|prompt| PrefillParams {
            batch: step.batch,
            prompt,
            cached: self.cached.unwrap_or(0),
            weight_dtype: step.weight_dtype,
            act_dtype: step.act_dtype,
            kv_dtype: step.kv_dtype,
        })
    }
}

/// The prefill graph when `pf` is given, else the decode graph.
pub fn step_graph(cfg: &ModelConfig, p: &DecodeParams, pf: Option<&PrefillParams>) -> Result<Graph, Exit> {
    Ok(match pf {
        Some(pf) => prefill_graph(cfg, pf)?,
        None => decode_graph(cfg, p)?,
    })
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    step: StepArgs,
    #[command(flatten)]
    prefill: PrefillArgs,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Print the textual graph IR instead of the summary.
    #[arg(long)]
    dump: bool,
}

#[derive(Serialize)]
struct GraphReport<'a> {
    model: &'a str,
    model_type: String,
    batch: u64,
    context: u64,
    /// Prefill only: new tokens per sequence and positions cached before them.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached: Option<u64>,
    weight_dtype: DType,
    act_dtype: DType,
    kv_dtype: DType,
    params_total: u64,
    params_active: u64,
    weight_bytes: u64,
    kv_bytes_per_token: u64,
    flops_per_token: u64,
    ops: usize,
    step: OpCost,
    by_kind: &'a BTreeMap<String, OpCost>,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let (cfg, p) = a.step.load(1)?;
    let pf = a.prefill.params(&p);
    let g = step_graph(&cfg, &p, pf.as_ref())?;
    verify_graph(&g)?;
    if a.dump {
        print!("{}", print_graph(&g));
        return Ok(());
    }
    let s = graph_stats(&g);
    let r = GraphReport {
        model: &cfg.name,
        model_type: cfg.family.to_string(),
        batch: p.batch,
        context: g.context,
        prompt: pf.map(|f| f.prompt),
        cached: pf.map(|f| f.cached),
        weight_dtype: p.weight_dtype,
        act_dtype: p.act_dtype,
        kv_dtype: p.kv_dtype,
        params_total: s.params_total,
        params_active: s.params_active,
        weight_bytes: s.weight_bytes,
        kv_bytes_per_token: s.kv_bytes_per_token,
        flops_per_token: s.flops_per_token,
        ops: g.ops.len(),
        step: s.step,
        by_kind: &s.by_kind,
    };
    match a.format {
        Format::Json => print!("{}", to_json(&r)),
        Format::Text => {
            println!(
                "{} ({}): {} layers, hidden {}, {} heads / {} KV heads of {}, vocab {}{}",
                cfg.name,
                cfg.family,
                cfg.layers,
                cfg.hidden,
                cfg.heads,
                cfg.kv_heads,
                cfg.head_dim,
                cfg.vocab,
                if cfg.is_moe() {
                    format!(", {} experts (top {})", cfg.experts, cfg.experts_per_tok)
                } else {
                    String::new()
                }
            );
            let what = match pf {
                Some(f) => format!(
                    "prefill step: batch {}, {} prompt tokens over {} cached (context {})",
                    f.batch,
                    f.prompt,
                    f.cached,
                    f.context()
                ),
                None => format!("decode step: batch {}, context {}", p.batch, p.context),
            };
            println!(
                "{what}, weights {}, activations {}, KV {}; {} ops",
                p.weight_dtype,
                p.act_dtype,
                p.kv_dtype,
                g.ops.len()
            );
            println!("params:           {} total, {} active", thousands(s.params_total), thousands(s.params_active));
            println!("weights:          {} ({})", bytes(s.weight_bytes), si(s.weight_bytes as f64, "B"));
            println!("KV cache:         {} per token", bytes(s.kv_bytes_per_token));
            println!("FLOPs per token:  {}", si(s.flops_per_token as f64, "FLOP"));
            if pf.is_some() {
                println!("FLOPs of step:    {}", si(s.step.flops as f64, "FLOP"));
                println!("KV written:       {}", bytes(s.step.kv_write_bytes));
            }
            println!();
            let mut t = Table::new(&["op kind", ">FLOPs", ">weights read", ">KV read", ">KV written", ">activations"]);
            for (k, c) in &s.by_kind {
                t.row([
                    k.clone(),
                    si(c.flops as f64, "FLOP"),
                    bytes(c.weight_bytes),
                    bytes(c.kv_read_bytes),
                    bytes(c.kv_write_bytes),
                    bytes(c.act_bytes),
                ]);
            }
            let c = s.step;
            t.row([
                "total".to_string(),
                si(c.flops as f64, "FLOP"),
                bytes(c.weight_bytes),
                bytes(c.kv_read_bytes),
                bytes(c.kv_write_bytes),
                bytes(c.act_bytes),
            ]);
            print!("{}", t.to_text());
        }
    }
    Ok(())
}

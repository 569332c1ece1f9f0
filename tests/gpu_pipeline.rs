//! Specification of the GPU baseline's pipeline parallelism and speculative
//! decoding: closed forms a reader can check by hand.
//!
//! Pipeline: `pp` stages of `tp` tensor-parallel GPUs each; a sequence's
//! token passes the stages one after another, so a batch-1 step is the sum of
//! the stages (the whole graph at `tp`) plus `pp − 1` sends of the residual
//! stream, each the collective latency plus its bytes over the link.

use std::process::Command;
use wafer_gpu::{
    estimate_auto, estimate_opts, estimate_pipeline, estimate_prefill, estimate_prefill_pipeline, gpu_preset, GpuError,
    GpuOptions, FITTED,
};
use wafer_ir::Graph;
use wafer_workloads::{decode_graph, prefill_graph, preset, DecodeParams, PrefillParams};

fn decode(model: &str, context: u64) -> Graph {
    decode_graph(&preset(model).unwrap(), &DecodeParams { context, ..Default::default() }).unwrap()
}

/// One send between stages, ms: latency plus bytes over one direction of the link.
fn send_ms(bytes: f64, link_bytes_per_s: f64) -> f64 {
    FITTED.collective_latency_us * 1e-3 + bytes / link_bytes_per_s * 1e3
}

#[test]
fn a_pipelined_step_is_the_sum_of_its_stages_plus_one_send_per_boundary() {
    let h100 = gpu_preset("H100-SXM").unwrap();
    let o = GpuOptions::default();
    let g = decode("llama-3.1-70b", 4096);
    let tp = estimate_opts(&g, &h100, 4, &o).unwrap();
    // The residual stream: 8,192 bf16 values per token.
    let bytes = 8192.0 * 2.0;
    for pp in [2u32, 4, 5] {
        let e = estimate_pipeline(&g, &h100, 4, pp, &o).unwrap();
        assert_eq!((e.n_gpus, e.tensor_parallel, e.pipeline_stages), (4 * pp, 4, pp));
        assert_eq!(e.stage_sends, pp as u64 - 1);
        let want = tp.tpot_ms + (pp - 1) as f64 * send_ms(bytes, h100.link_bytes_per_s());
        assert!((e.tpot_ms - want).abs() < 1e-9, "pp {pp}: {} vs {want}", e.tpot_ms);
        assert!((e.by_kind_ms["stage_send"] - (pp - 1) as f64 * send_ms(bytes, h100.link_bytes_per_s())).abs() < 1e-12);
        // Batch-1 decode gains nothing from stages: only the sends are added.
        assert!(e.tokens_per_s < tp.tokens_per_s);
    }
}

#[test]
fn each_gpu_holds_its_stage_s_share_of_the_weights() {
    let h100 = gpu_preset("H100-SXM").unwrap();
    let o = GpuOptions::with_headroom(0.0).unwrap();
    let g = decode("llama-3.1-70b", 1024);
    let one = estimate_opts(&g, &h100, 8, &o).unwrap().memory;
    // 80 layers in 2 stages of 40: half the layers, plus the embedding (first) or the LM head (last).
    let two = estimate_pipeline(&g, &h100, 4, 2, &o).unwrap().memory;
    let (w1, w2) = (one.weight_bytes_per_gpu as f64, two.weight_bytes_per_gpu as f64);
    assert!((w2 / w1 - 1.0).abs() < 0.02, "8-way TP {w1} vs 4-way TP × 2 stages {w2}");
    assert!(two.kv_bytes_per_gpu == one.kv_bytes_per_gpu);
    // More stages than decoder layers is refused, naming the range.
    let err = estimate_pipeline(&g, &h100, 1, 81, &o).unwrap_err().to_string();
    assert!(err.contains("1..=80 pipeline stages"), "{err}");
}

#[test]
fn without_a_stage_count_the_fewest_stages_that_hold_the_model_are_chosen() {
    let h100 = gpu_preset("H100-SXM").unwrap();
    let o = GpuOptions::default();
    let g = decode("llama-3.1-405b", 4096);
    // 811.7 GB of weights: 8 GPUs' 576 usable GB do not hold it, 2 × 8 do.
    let err = estimate_pipeline(&g, &h100, 8, 1, &o).unwrap_err();
    let GpuError::DoesNotFit(d) = &err else { panic!("{err}") };
    assert_eq!(d.min_pipeline, Some((8, 2)));
    assert!(err.to_string().contains("--gpus 8 --pp 2"), "{err}");
    let e = estimate_auto(&g, &h100, 8, None, &o).unwrap();
    assert_eq!((e.tensor_parallel, e.pipeline_stages, e.n_gpus), (8, 2, 16));
    // A model that fits gets no stages.
    let small = decode("llama-3.1-8b", 4096);
    assert_eq!(estimate_auto(&small, &h100, 1, None, &o).unwrap().pipeline_stages, 1);
    // One GPU per stage: the stages must hold 811.7 GB at 72 GB each, so at least 12.
    let one = estimate_auto(&g, &h100, 1, None, &o).unwrap();
    assert!(one.pipeline_stages >= 12, "{}", one.pipeline_stages);
    assert!(estimate_pipeline(&g, &h100, 1, one.pipeline_stages - 1, &o).is_err());
}

#[test]
fn a_pipelined_prefill_adds_one_send_of_the_prompt_s_activations_per_boundary() {
    let h100 = gpu_preset("H100-SXM").unwrap();
    let o = GpuOptions::default();
    let p = PrefillParams { prompt: 512, ..Default::default() };
    let g = prefill_graph(&preset("llama-3.1-8b").unwrap(), &p).unwrap();
    let a = estimate_prefill(&g, &h100, 1, &o).unwrap();
    let b = estimate_prefill_pipeline(&g, &h100, 1, 2, &o).unwrap();
    let want = a.ttft_ms + send_ms(512.0 * 4096.0 * 2.0, h100.link_bytes_per_s());
    assert!((b.ttft_ms - want).abs() < 1e-9, "{} vs {want}", b.ttft_ms);
}

fn gpu_json(args: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn speculative_decoding_on_the_gpu_is_the_round_over_the_expected_tokens() {
    let base = ["gpu", "--model", "llama-3.1-8b", "--draft", "llama-3.2-1b", "--spec-k", "4", "--format", "json"];
    let run = |accept: &str| {
        let mut a = base.to_vec();
        a.extend(["--accept", accept]);
        gpu_json(&a)
    };
    let plain = gpu_json(&["gpu", "--model", "llama-3.1-8b", "--format", "json"]);
    let plain_tps = plain["tokens_per_s"].as_f64().unwrap();
    // α = 0: one token per round of 4 draft steps and a verify step — never faster than plain decode.
    let s0 = &run("0")["speculative"];
    assert_eq!(s0["expected_tokens_per_step"].as_f64().unwrap(), 1.0);
    assert!(s0["effective_tokens_per_s"].as_f64().unwrap() <= plain_tps);
    // α = 1: k + 1 = 5 tokens per round.
    let s1 = &run("1")["speculative"];
    let (d, v) = (s1["draft_step_ms"].as_f64().unwrap(), s1["verify_step_ms"].as_f64().unwrap());
    let want = 5.0 * 1e3 / (4.0 * d + v);
    assert!((s1["effective_tokens_per_s"].as_f64().unwrap() - want).abs() < 1e-9 * want);
    // The verify step (5 tokens over the cache) costs at least a plain step, and the draft's step less.
    assert!(v >= plain["tpot_ms"].as_f64().unwrap() && d < v);
    // As α → 1 the figure approaches that limit.
    let near = run("0.999")["speculative"]["effective_tokens_per_s"].as_f64().unwrap();
    assert!(near < want && near > 0.99 * want, "{near} vs {want}");
    // Energy per token divides by the effective tokens/s.
    let r = run("0.8");
    let tps = r["speculative"]["effective_tokens_per_s"].as_f64().unwrap();
    assert!((r["energy"]["joules_per_token"].as_f64().unwrap() - 700.0 / tps).abs() < 1e-9);
}

//! Specification of chunked prefill mixed into decode on the GPU baseline
//! (`wafer_gpu::estimate_mixed`, `wafer gpu --prompt N --mix-chunk c`).
//!
//! One mixed step runs the decode batch and one prompt chunk together: a
//! kernel both run reads its weights once, so the step costs less than the
//! two steps apart and at least the decode step alone; the prompt's first
//! token comes after its last chunk.

use std::process::Command;
use wafer_gpu::{
    estimate_mixed, estimate_opts, estimate_prefill, gpu_preset, GpuError, GpuOptions, GpuSpec, MixedEstimate,
    PREFILL_FITTED,
};
use wafer_workloads::{decode_graph, prefill_graph, preset, DecodeParams, ModelConfig, PrefillParams};

fn h100() -> GpuSpec {
    gpu_preset("H100-SXM").unwrap()
}

fn mixed(model: &str, batch: u64, prompt: u64, cached: u64, chunk: u64) -> Result<MixedEstimate, GpuError> {
    let cfg = preset(model).unwrap();
    let d = DecodeParams { batch, context: cached + prompt + 1, ..Default::default() };
    let p = PrefillParams { prompt, cached, ..Default::default() };
    estimate_mixed(&cfg, &d, &p, chunk, &h100(), 1, 1, &GpuOptions::default())
}

/// The prompt chunk `[cached, cached + tokens)` prefilled alone, batch 1, ms.
fn chunk_alone(cfg: &ModelConfig, tokens: u64, cached: u64) -> f64 {
    let g = prefill_graph(cfg, &PrefillParams { prompt: tokens, cached, ..Default::default() }).unwrap();
    estimate_prefill(&g, &h100(), 1, &GpuOptions::default()).unwrap().ttft_ms
}

#[test]
fn a_mixed_step_costs_at_least_the_decode_step_and_less_than_both_steps_apart() {
    let cfg = preset("llama-3.1-8b").unwrap();
    for (batch, chunk) in [(1u64, 64u64), (8, 256), (32, 512), (64, 2048)] {
        let m = mixed("llama-3.1-8b", batch, 2048, 4096, chunk).unwrap();
        let s = &m.first_step;
        let alone = chunk_alone(&cfg, s.chunk_tokens, s.cached);
        assert!(
            s.step_ms >= m.decode_alone_tpot_ms,
            "batch {batch} chunk {chunk}: {} < decode {}",
            s.step_ms,
            m.decode_alone_tpot_ms
        );
        // The weights are read once for both: strictly cheaper than running the two apart.
        assert!(
            s.step_ms < m.decode_alone_tpot_ms + alone,
            "batch {batch} chunk {chunk}: {} >= {} + {alone}",
            s.step_ms,
            m.decode_alone_tpot_ms
        );
    }
}

#[test]
fn the_prompt_is_cut_into_ceil_n_over_c_chunks_and_its_first_token_follows_the_last() {
    let m = mixed("llama-3.2-1b", 4, 2000, 1000, 512).unwrap();
    assert_eq!(m.chunks, 4);
    assert_eq!((m.first_step.chunk_tokens, m.first_step.cached), (512, 1000));
    // The last chunk: the remaining 464 tokens after 3 × 512.
    assert_eq!((m.last_step.chunk_tokens, m.last_step.cached), (464, 1000 + 3 * 512));
    // ttft = every step + the fixed per-request overhead; the decoders' mean step is that sum over the chunks.
    let fixed = PREFILL_FITTED.fixed_overhead_us * 1e-3;
    assert!((m.ttft_ms - fixed - m.decode_tpot_ms * 4.0).abs() < 1e-9 * m.ttft_ms);
    // Tokens of both kinds over the steps.
    let want = (4.0 * 4.0 + 2000.0) * 1e3 / (m.decode_tpot_ms * 4.0);
    assert!((m.tokens_per_s - want).abs() < 1e-9 * want);
}

#[test]
fn a_chunk_as_long_as_the_prompt_is_one_step_and_smaller_chunks_trade_ttft_for_the_decoders_tokens() {
    let one = mixed("llama-3.1-8b", 16, 2048, 8192, 2048).unwrap();
    assert_eq!(one.chunks, 1);
    let small = mixed("llama-3.1-8b", 16, 2048, 8192, 256).unwrap();
    // Each of the 8 smaller steps re-reads the weights: the prompt waits longer …
    assert!(small.ttft_ms > one.ttft_ms);
    // … and the decoders' tokens slow down less.
    assert!(small.decode_tpot_ms < one.decode_tpot_ms);
    // Mixed or not, the prompt takes at least its prefill alone.
    assert!(one.ttft_ms >= one.prefill_alone_ttft_ms * 0.999, "{} vs {}", one.ttft_ms, one.prefill_alone_ttft_ms);
}

#[test]
fn with_no_one_else_decoding_a_big_chunk_is_the_prefill_model_plus_one_decode_row() {
    // batch 1 beside a 2,048-token chunk: the row-weighted overhead and math are the prefill model's
    // to within the one decode row.
    let m = mixed("llama-3.1-8b", 1, 2048, 0, 2048).unwrap();
    let rel = (m.first_step.step_ms - m.prefill_alone_ttft_ms) / m.prefill_alone_ttft_ms;
    assert!(rel > -0.01 && rel < 0.1, "{rel}");
    // A one-token chunk beside a big batch: the decode model to within one row's work.
    let cfg = preset("llama-3.1-8b").unwrap();
    let d = DecodeParams { batch: 64, context: 4097, ..Default::default() };
    let alone = estimate_opts(&decode_graph(&cfg, &d).unwrap(), &h100(), 1, &GpuOptions::default()).unwrap();
    let m = mixed("llama-3.1-8b", 64, 1, 4095, 1).unwrap();
    let rel = (m.first_step.step_ms - alone.tpot_ms) / alone.tpot_ms;
    assert!((0.0..0.05).contains(&rel), "{rel}");
}

#[test]
fn bad_chunks_and_caches_that_do_not_fit_are_clear_errors() {
    match mixed("llama-3.2-1b", 1, 100_000, 0, 1) {
        Err(GpuError::InvalidOption { field: "mix-chunk", allowed, .. }) => {
            assert!(allowed.contains("4096 chunks"), "{allowed}")
        }
        other => panic!("{other:?}"),
    }
    match mixed("llama-3.2-1b", 1, 100, 0, 0) {
        Err(GpuError::InvalidOption { field: "mix-chunk", .. }) => {}
        other => panic!("{other:?}"),
    }
    // 64 sequences at 128k beside a 8B's weights on one H100.
    match mixed("llama-3.1-8b", 64, 2000, 126_000, 512) {
        Err(e @ (GpuError::DoesNotFit(_) | GpuError::MixedDoesNotFit { .. })) => {
            assert!(e.to_string().contains("GB"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

fn wafer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().unwrap()
}

#[test]
fn wafer_gpu_mix_chunk_reports_ttft_under_load_and_the_decoders_slowdown() {
    let o = wafer(&[
        "gpu",
        "--model",
        "llama-3.2-1b",
        "--batch",
        "8",
        "--prompt",
        "1024",
        "--cached",
        "4000",
        "--mix-chunk",
        "256",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &v["mixed"];
    assert_eq!(m["chunks"], 4);
    assert_eq!(m["decode_batch"], 8);
    assert!(m["ttft_ms"].as_f64().unwrap() > 0.0);
    assert!(m["decode_tpot_ms"].as_f64().unwrap() >= m["decode_alone_tpot_ms"].as_f64().unwrap());
    let t = wafer(&["gpu", "--model", "llama-3.2-1b", "--prompt", "1024", "--mix-chunk", "256"]);
    assert!(t.status.success());
    let text = String::from_utf8_lossy(&t.stdout);
    assert!(text.contains("time to first token under load"), "{text}");
    // It needs a prompt.
    let e = wafer(&["gpu", "--model", "llama-3.2-1b", "--mix-chunk", "256"]);
    assert!(!e.status.success());
}

//! Specification of the GPU baseline: it reproduces the measured latencies
//! within the acceptance bounds, behaves the way the hardware does, and
//! refuses what cannot run with an error that says why.

use std::process::{Command, Output};
use wafer_gpu::{
    calibration_report, estimate, estimate_opts, gpu_preset, Bound, GpuError, GpuEstimate, GpuOptions, GpuSpec,
};
use wafer_ir::DType;
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn step(model: &str, gpu: &str, n: u32, p: DecodeParams) -> Result<GpuEstimate, GpuError> {
    let g = decode_graph(&preset(model).unwrap(), &p).unwrap();
    estimate(&g, &gpu_preset(gpu).unwrap(), n)
}

fn at(context: u64) -> DecodeParams {
    DecodeParams { context, ..Default::default() }
}

fn ms(model: &str, gpu: &str, n: u32, p: DecodeParams) -> f64 {
    step(model, gpu, n, p).unwrap().tpot_ms
}

fn wafer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().expect("run wafer")
}

#[test]
fn vendored_gpu_tables_equal_shared_reference_when_present() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    for (file, copy) in
        [("gpu_specs.csv", wafer_gpu::spec::SPECS_CSV), ("gpu_measured.csv", wafer_gpu::calibrate::MEASURED_CSV)]
    {
        if let Ok(orig) = std::fs::read_to_string(dir.join(file)) {
            assert_eq!(orig, copy, "gpu/data/{file} is out of date");
        }
    }
}

#[test]
fn calibration_error_is_within_acceptance_bounds() {
    let r = calibration_report().unwrap();
    println!(
        "{:<4} {:<13} {:<14} {:>2} {:>9} {:>10} {:>7}",
        "id", "model", "gpu", "n", "measured", "predicted", "error"
    );
    for x in &r.rows {
        println!(
            "{:<4} {:<13} {:<14} {:>2} {:>9.2} {:>10.2} {:>+6.1}%",
            x.id,
            x.model,
            x.gpu,
            x.n_gpus,
            x.measured_ms,
            x.predicted_ms,
            x.rel_error * 100.0
        );
    }
    println!(
        "median |error| {:.1}%, max {:.1}% ({})",
        r.median_abs_rel_error * 100.0,
        r.max_abs_rel_error * 100.0,
        r.max_row
    );
    assert_eq!(r.rows.len(), 17, "every row with a tpot_ms is reported");
    assert!(r.median_abs_rel_error <= 0.10, "median relative error {:.3} > 10%", r.median_abs_rel_error);
    assert!(r.max_abs_rel_error <= 0.25, "max relative error {:.3} > 25% ({})", r.max_abs_rel_error, r.max_row);
}

#[test]
fn more_gpus_are_faster_with_diminishing_returns() {
    let t: Vec<f64> = [1, 2, 4, 8].iter().map(|&n| ms("llama-3.1-8b", "H100-SXM", n, at(1024))).collect();
    for w in t.windows(2) {
        assert!(w[1] < w[0], "{t:?}");
    }
    // Diminishing returns: no doubling halves the time, and the parallel
    // efficiency t1 / (n tn) falls with every doubling (per-kernel overheads
    // do not shrink with n, and collectives appear).
    let speedups: Vec<f64> = t.windows(2).map(|w| w[0] / w[1]).collect();
    assert!(speedups.iter().all(|&s| s < 2.0), "{speedups:?}");
    let eff: Vec<f64> = t.iter().zip([1.0, 2.0, 4.0, 8.0]).map(|(tn, n)| t[0] / (n * tn)).collect();
    assert!(eff.windows(2).all(|e| e[1] < e[0]), "{eff:?}");
    assert!(speedups[2] < speedups[1], "{speedups:?}");
    let e8 = step("llama-3.1-8b", "H100-SXM", 8, at(1024)).unwrap();
    assert_eq!(e8.collectives, 2 * 32 + 1, "two all-reduces per layer and one all-gather of the logits");
    assert_eq!(step("llama-3.1-8b", "H100-SXM", 1, at(1024)).unwrap().collectives, 0);
}

#[test]
fn latency_rises_with_context_through_kv_cache_reads() {
    let e: Vec<GpuEstimate> =
        [1, 4096, 32768, 131072].iter().map(|&c| step("llama-3.1-8b", "H100-SXM", 1, at(c)).unwrap()).collect();
    for w in e.windows(2) {
        assert!(w[1].tpot_ms > w[0].tpot_ms);
        assert!(w[1].breakdown.kv_cache_ms > w[0].breakdown.kv_cache_ms);
    }
    // 128k positions x 128 KiB per token = 17.2 GB of cache, more than the 16 GB of weights.
    assert!(e[3].breakdown.kv_cache_ms > e[3].breakdown.weights_ms);
}

#[test]
fn int4_weights_beat_bf16_when_bandwidth_bound() {
    let bf16 = step("llama-3.1-8b", "A100-80GB-SXM", 1, at(512)).unwrap();
    let int4 = step("llama-3.1-8b", "A100-80GB-SXM", 1, DecodeParams { weight_dtype: DType::Int4, ..at(512) }).unwrap();
    assert_eq!(bf16.bound, Bound::Bandwidth);
    assert!(int4.tpot_ms < 0.5 * bf16.tpot_ms, "{} vs {}", int4.tpot_ms, bf16.tpot_ms);
}

#[test]
fn newer_gpus_are_faster_for_the_same_case() {
    for (model, n) in [("llama-3.1-8b", 1), ("llama-3.1-70b", 4)] {
        let a100 = ms(model, "A100-80GB-SXM", n, at(2048));
        let h100 = ms(model, "H100-SXM", n, at(2048));
        let h200 = ms(model, "H200-SXM", n, at(2048));
        let b200 = ms(model, "B200-HGX", n, at(2048));
        assert!(a100 > h100 && h100 > h200 && h200 > b200, "{model}: {a100} {h100} {h200} {b200}");
    }
}

#[test]
fn large_batches_turn_compute_bound() {
    let e = step("llama-3.1-8b", "A100-80GB-SXM", 1, DecodeParams { batch: 1024, ..at(1) }).unwrap();
    assert_eq!(e.bound, Bound::Compute, "{:?}", e.breakdown);
    assert!((e.tokens_per_s - 1024.0 * 1000.0 / e.tpot_ms).abs() < 1e-6);
}

#[test]
fn the_breakdown_adds_up_to_the_step_and_names_its_bound() {
    let e = step("mixtral-8x7b", "H100-SXM", 8, at(4096)).unwrap();
    assert!((e.breakdown.total_ms() - e.tpot_ms).abs() < 1e-9);
    assert!((e.by_kind_ms.values().sum::<f64>() - e.tpot_ms).abs() < 1e-9);
    assert!(e.breakdown.communication_ms > 0.0 && e.by_kind_ms.contains_key("all_reduce"));
}

#[test]
fn compute_shows_where_it_is_spent_even_under_the_memory_roof() {
    // 256 sequences of Llama-3.1-8B on one H100: ~4 TFLOP of math (~4 ms at the
    // dense peak) under ~6 ms of weight traffic. The step is memory-bound, and
    // the breakdown still shows the math, with only the memory time beyond it
    // counted as HBM, so the parts add up to the step.
    let p = DecodeParams { batch: 256, ..at(1) };
    let g = decode_graph(&preset("llama-3.1-8b").unwrap(), &p).unwrap();
    let h100 = gpu_preset("H100-SXM").unwrap();
    let e = estimate(&g, &h100, 1).unwrap();
    assert_eq!(e.bound, Bound::Bandwidth, "{:?}", e.breakdown);
    let flops: u64 = g.ops.iter().map(|o| wafer_ir::op_cost(&g, o).flops).sum();
    let math_ms = flops as f64 / (h100.bf16_dense_tflops * 1e12) * 1e3;
    assert!(math_ms > 3.0, "{math_ms}");
    assert!((e.breakdown.compute_ms - math_ms).abs() < 1e-9 * math_ms, "{} vs {math_ms}", e.breakdown.compute_ms);
    assert!((e.breakdown.total_ms() - e.tpot_ms).abs() < 1e-9 * e.tpot_ms);
    assert!(e.breakdown.weights_ms > 0.0 && e.breakdown.weights_ms < e.tpot_ms - math_ms);
    // At batch 1 the math is a sliver and the weights are nearly all of the memory time.
    let one = step("llama-3.1-8b", "H100-SXM", 1, at(1)).unwrap();
    assert!(one.breakdown.compute_ms > 0.0 && one.breakdown.compute_ms < 0.01 * one.tpot_ms);
}

#[test]
fn gpu_memory_keeps_a_headroom_for_activations_and_the_runtime() {
    // 70B at 32k on 2 H100s: 70.6 GB of weights + 5.4 GB of KV cache per GPU fills
    // 76 of 80 GB, more than the 72 GB that the default 10% headroom leaves.
    let p = at(32768);
    let g = decode_graph(&preset("llama-3.1-70b").unwrap(), &p).unwrap();
    let h100 = gpu_preset("H100-SXM").unwrap();
    assert!(matches!(estimate(&g, &h100, 2), Err(GpuError::DoesNotFit(_))));
    let none = estimate_opts(&g, &h100, 2, &GpuOptions::with_headroom(0.0).unwrap()).unwrap();
    let m = none.memory;
    assert_eq!(m.usable_bytes_per_gpu, m.capacity_bytes_per_gpu);
    assert_eq!(m.free_bytes_per_gpu, m.usable_bytes_per_gpu - m.weight_bytes_per_gpu - m.kv_bytes_per_gpu);
    let four = estimate(&g, &h100, 4).unwrap().memory;
    assert_eq!(four.headroom_fraction, 0.1);
    assert_eq!(four.usable_bytes_per_gpu, 72_000_000_000);
    assert_eq!(four.free_bytes_per_gpu, 72_000_000_000 - four.weight_bytes_per_gpu - four.kv_bytes_per_gpu);
    assert!(GpuOptions::with_headroom(1.0).is_err() && GpuOptions::with_headroom(-0.1).is_err());
    assert!(GpuOptions::with_headroom(f64::NAN).is_err());
}

#[test]
fn a_model_too_big_for_the_gpus_names_how_many_it_needs() {
    let e = step("llama-3.1-405b", "H100-SXM", 1, at(1)).unwrap_err();
    match &e {
        GpuError::DoesNotFit(d) => {
            // 811.7 GB of bf16 weights / (80 GB less the 10% headroom) = 11.3: 12 GPUs' memory,
            // 16 as a divisor of 128 heads.
            assert_eq!((d.min_gpus, d.min_tp_gpus), (Some(12), Some(16)));
            assert!((d.usable_gb - 72.0).abs() < 1e-6, "{}", d.usable_gb);
        }
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("llama-3.1-405b") && msg.contains("at least 12") && msg.contains("16"), "{msg}");
    assert!(msg.contains("72.0 GB") && msg.contains("10% headroom"), "{msg}");
    assert!(step("llama-3.1-405b", "H100-SXM", 16, at(1)).is_ok());
    // The KV cache counts too: 70B fits on 2 H100s at 1k context but not at 128k x 8 sequences.
    assert!(step("llama-3.1-70b", "H100-SXM", 2, at(1024)).is_ok());
    let long = DecodeParams { batch: 8, ..at(131072) };
    assert!(matches!(step("llama-3.1-70b", "H100-SXM", 2, long), Err(GpuError::DoesNotFit(_))));
}

#[test]
fn gpu_counts_must_split_the_heads() {
    let e = step("llama-3.1-8b", "H100-SXM", 3, at(1)).unwrap_err().to_string();
    assert!(e.contains("3 GPU(s)") && e.contains("1, 2, 4, 8, 16, 32"), "{e}");
}

#[test]
fn a_toml_spec_is_a_gpu_like_any_preset() {
    let text = "name = \"H100-clone\"\nhbm_gb = 80\nhbm_gb_per_s = 3350\nbf16_dense_tflops = 989.4\n\
                fp8_dense_tflops = 1978.9\nlink = \"nvlink\"\nlink_gb_per_s_bidir = 900\n";
    let clone = GpuSpec::from_toml(text, "clone.toml").unwrap();
    let g = decode_graph(&preset("llama-3.1-8b").unwrap(), &at(1)).unwrap();
    let (a, b) = (estimate(&g, &clone, 1).unwrap(), estimate(&g, &gpu_preset("H100-SXM").unwrap(), 1).unwrap());
    assert_eq!(a.tpot_ms, b.tpot_ms);
    let e = GpuSpec::from_toml("name = \"x\"\nhbm_gb = [1]\n", "bad.toml").unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("hbm_gb"), "{e}");
}

#[test]
fn cli_json_carries_tpot_and_tokens_per_s_as_numbers() {
    let o = wafer(&["gpu", "--model", "llama-3.1-8b", "--gpu", "H100-SXM", "--gpus", "2", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["tpot_ms"].as_f64().unwrap() > 0.0 && v["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["bound"], "bandwidth");
}

#[test]
fn cli_calibration_prints_every_tpot_row_with_median_and_max() {
    let o = wafer(&["gpu", "--calibration"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let (tpot, ttft) = out.split_once("time to first token").expect("a second table for the TTFT rows");
    for id in ["c01", "c04", "c10", "c12", "c13", "c15", "c17", "c18", "c19"] {
        assert!(tpot.contains(id), "missing {id}");
    }
    assert!(!tpot.contains("c14"), "c14 has no tpot_ms");
    assert!(tpot.contains("median |error|") && tpot.contains("max"));
    for id in ["c13", "c14", "c16", "c17", "c20", "c23", "c27"] {
        assert!(ttft.contains(id), "TTFT table misses {id}");
    }
    assert!(!ttft.contains("c01") && !ttft.contains("c18"), "c01 and c18 have no ttft_ms");
    assert!(ttft.contains("median |error|") && ttft.contains("leave-one-out"));
    let list = String::from_utf8_lossy(&wafer(&["gpu", "--list"]).stdout).into_owned();
    assert!(list.contains("B200-HGX") && list.contains("PCIe Gen4"));
}

#[test]
fn cli_bad_input_exits_2_with_a_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("gpu.toml");
    std::fs::write(&bad, "name = \"x\"\nhbm_gb = -80\nhbm_gb_per_s = 1\nbf16_dense_tflops = 1\nlink = \"pcie-gen4\"\n")
        .unwrap();
    let bad = bad.to_str().unwrap();
    for (args, needle) in [
        (vec!["gpu", "--gpu", "V100"], "unknown GPU `V100`"),
        (vec!["gpu", "--gpu", bad], "`hbm_gb` is -80"),
        (vec!["gpu", "--model", "llama-3.1-405b", "--gpu", "H100-SXM", "--pp", "2"], "at least 12"),
        (vec!["gpu", "--model", "gpt2", "--pp", "13"], "1..=12 pipeline stages"),
        (vec!["gpu", "--draft", "llama-3.2-1b", "--spec-k", "33", "--accept", "0.5"], "allowed 1..=32"),
        (vec!["gpu", "--draft", "llama-3.2-1b", "--spec-k", "4", "--accept", "1.5"], "0 <= a <= 1"),
        (vec!["gpu", "--gpu-mem-headroom", "1"], "--gpu-mem-headroom is 1"),
        (vec!["run", "--gpu-mem-headroom=-0.5", "--engine", "analytical"], "0 <= f < 1"),
        (vec!["gpu", "--gpus", "0"], "--gpus <GPUS>': 0 is out of range; allowed 1..=1024"),
    ] {
        let o = wafer(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

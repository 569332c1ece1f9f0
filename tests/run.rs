//! `wafer run`, `compile`, `simulate`, `compare`, `archs`: the main job's
//! contract (JSON fields, determinism) and its errors.

use std::process::{Command, Output};

fn wafer(args: &[&str], threads: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wafer"));
    c.args(args);
    if let Some(t) = threads {
        c.env("RAYON_NUM_THREADS", t);
    }
    c.output().expect("run wafer")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn run_on_defaults_reports_latency_breakdown_and_the_gpu_comparison() {
    let out = ok(&wafer(&["run"], None));
    assert!(out.contains("llama-3.1-8b on 1 × wse3"), "{out}");
    // The summary explains itself: what "bound by" means beside the busy
    // fraction, both device counts, and which side is calibrated (with its error).
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("Wafer \"bound by ") && flat.contains("the mean PE computes for"), "{out}");
    assert!(flat.contains("1 × wse3 is ") && flat.contains(" per token than 1 × H100-SXM."), "{out}");
    assert!(flat.contains("measured decode latencies, median error ") && flat.contains("% (row c"), "{out}");
    assert!(flat.contains("model prediction") && flat.contains("not calibrated"), "{out}");
    assert!(
        out.contains("per-token latency") && out.contains("where the time goes") && out.contains("H100-SXM"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&wafer(&["run", "--format", "json"], None))).unwrap();
    for key in ["tpot_us", "tokens_per_s", "cycles", "clock_ghz", "wafers"] {
        assert!(v[key].is_number(), "{key}: {}", v[key]);
    }
    // The default engine is auto: llama-3.1-8b's full-wafer spread mapping sends
    // ~74 million messages, beyond the event engine's memory budget, so the
    // analytical engine ran, and the report says so.
    assert_eq!(v["inputs"]["engine"], "auto");
    assert_eq!(v["engine"], "analytical");
    assert!(v["breakdown"]["compute_cycles"].is_number() && v["breakdown"]["comm_cycles"].is_number());
    // The machine's limit beside the answer: the bound, which floor binds, and the ratio.
    assert!(out.contains("machine limit: ") && out.contains("-bound floor); this mapping is "), "{out}");
    let (tpot, bound, ratio) =
        (v["tpot_us"].as_f64().unwrap(), v["bound_us"].as_f64().unwrap(), v["bound_ratio"].as_f64().unwrap());
    assert!(bound > 0.0 && bound <= tpot, "bound {bound} µs, achieved {tpot} µs");
    assert!((ratio - tpot / bound).abs() <= 1e-9 * ratio);
    let floor = v["machine_limit"]["binding_floor"].as_str().unwrap();
    assert!(["compute", "memory", "communication"].contains(&floor), "{floor}");
    assert_eq!(v["machine_limit"][format!("{floor}_floor_us")].as_f64(), Some(bound));
    assert!(v["simulation"]["by_kind"]["attention"].is_object());
    assert!(v["comparison"]["speedup"].as_f64().unwrap() > 0.0);
    assert_eq!(v["schema_version"], wafer_reports::SCHEMA_VERSION);
}

#[test]
fn run_json_is_byte_identical_for_any_thread_count() {
    let args = ["run", "--model", "qwen2.5-7b", "--context", "8192", "--format", "json"];
    let one = wafer(&args, Some("1"));
    let two = wafer(&args, Some("2"));
    assert_eq!(ok(&one), ok(&two));
}

#[test]
fn latency_rises_with_context() {
    let tpot = |ctx: &str| -> f64 {
        let v: serde_json::Value = serde_json::from_str(&ok(&wafer(
            &["run", "--no-gpu", "--wafers", "auto", "--context", ctx, "--format", "json"],
            None,
        )))
        .unwrap();
        v["tpot_us"].as_f64().unwrap()
    };
    let (a, b, c) = (tpot("1024"), tpot("8192"), tpot("32768"));
    assert!(a < b && b < c, "{a} {b} {c}");
}

#[test]
fn compile_writes_a_program_that_simulate_reads_back_to_the_same_figures() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.wafer");
    let c: serde_json::Value = serde_json::from_str(&ok(&wafer(
        &["compile", "--model", "llama-3.2-1b", "-o", file.to_str().unwrap(), "--format", "json"],
        None,
    )))
    .unwrap();
    assert!(c["wafers"].is_u64() && c["pes_used"].is_u64());
    let s: serde_json::Value = serde_json::from_str(&ok(&wafer(
        &["simulate", file.to_str().unwrap(), "--engine", "analytical", "--format", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(s["cycles"].as_f64().unwrap(), c["estimate_cycles"].as_f64().unwrap());
    // A damaged file is a clear error.
    std::fs::write(&file, "program \"x\" batch=1\n").unwrap();
    let o = wafer(&["simulate", file.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("p.wafer"));
}

#[test]
fn functional_engine_checks_a_compiled_tiny_model_against_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type":"llama","hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":64}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&wafer(
        &[
            "run",
            "--engine",
            "functional",
            "--model",
            cfg.to_str().unwrap(),
            "--arch",
            "mesh:24x24",
            "--format",
            "json",
        ],
        None,
    )))
    .unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 4);
    assert!(v["max_rel_err"].as_f64().unwrap() <= 1e-4);
}

#[test]
fn functional_engine_checks_a_prompt_streamed_in_chunks_then_decode_steps() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type":"llama","hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":64}"#,
    )
    .unwrap();
    let args = ["run", "--engine", "functional", "--model", cfg.to_str().unwrap(), "--arch", "mesh:24x24"];
    let more = ["--prompt", "7", "--cached", "2", "--prefill-chunk", "3", "--steps", "2", "--batch", "2"];
    let v: serde_json::Value =
        serde_json::from_str(&ok(&wafer(&[&args[..], &more[..], &["--format", "json"]].concat(), None))).unwrap();
    assert_eq!(v["prefill_chunk"], 3);
    // The prompt (chunks 3, 3, 1 ending at context 9), then contexts 10 and 11.
    let got: Vec<(u64, u64)> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["context"].as_u64().unwrap(), s["new_tokens"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, vec![(9, 7), (10, 1), (11, 1)]);
    assert!(v["max_rel_err"].as_f64().unwrap() <= 1e-4, "{v}");
    assert!(v["steps"].as_array().unwrap().iter().all(|s| s["tokens_match"] == true), "{v}");
}

#[test]
fn compare_and_archs_print_tables() {
    let out =
        ok(&wafer(&["compare", "--model", "llama-3.1-8b", "--arch", "wse3", "--gpu", "H100-SXM", "--gpus", "1"], None));
    for row in ["per-token latency", "tokens/s", "machine limit (any mapping)", "bound by", "faster per token"] {
        assert!(out.contains(row), "{row}: {out}");
    }
    let out = ok(&wafer(&["archs"], None));
    assert!(out.contains("wse2") && out.contains("883,350"));
}

#[test]
fn machine_errors_are_clear() {
    for (args, needle) in [
        (vec!["run", "--arch", "tpu"], "unknown arch `tpu`"),
        (vec!["run", "--wafers", "zero"], "--wafers is `zero`"),
        (vec!["run", "--model", "llama-3.1-70b"], "1 wafer(s) of wse3"),
        (vec!["run", "--arch", "mesh:0x3"], "mesh"),
        (vec!["run", "--arch", "/nonexistent/arch.toml"], "cannot read arch spec"),
        (vec!["compile", "--dump-after", "inline"], "unknown pass `inline`"),
    ] {
        let o = wafer(&args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn trace_writes_perfetto_json_with_a_track_per_region() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    ok(&wafer(&["trace", "--model", "gpt2", "--context", "128", "-o", file.to_str().unwrap()], None));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().or_else(|| v.as_array()).unwrap();
    let tracks: std::collections::BTreeSet<(u64, u64)> =
        events.iter().filter_map(|e| Some((e["pid"].as_u64()?, e["tid"].as_u64()?))).collect();
    assert!(tracks.len() > 20, "{} tracks", tracks.len());
    assert!(events.iter().any(|e| e["ph"] == "X" && e["dur"].as_f64().is_some_and(|d| d > 0.0)));
}

#[test]
fn more_wafers_than_stages_use_only_the_wafers_that_hold_regions() {
    let v: serde_json::Value = serde_json::from_str(&ok(&wafer(
        &["run", "--model", "gpt2", "--context", "128", "--wafers", "4096", "--no-gpu", "--format", "json"],
        None,
    )))
    .unwrap();
    let w = v["wafers"].as_u64().unwrap();
    assert!((2..=14).contains(&w), "{w} wafers");
}

/// `--users U`: U sequences pipelined through the mapping. A layer pipeline
/// carries several at full speed (aggregate = U × one user's tokens/s up to
/// its stage count); the line and the JSON say which PEs bind after that.
#[test]
fn users_in_flight_add_up_on_a_pipeline_until_its_bottleneck() {
    let args = |u: &'static str| -> Vec<&'static str> {
        vec![
            "run",
            "--model",
            "llama-3.2-1b",
            "--strategy",
            "pipeline",
            "--engine",
            "analytical",
            "--no-gpu",
            "--users",
            u,
        ]
    };
    let json = |u: &'static str| -> serde_json::Value {
        let mut a = args(u);
        a.extend(["--format", "json"]);
        serde_json::from_str(&ok(&wafer(&a, None))).unwrap()
    };
    let one = json("1");
    let stages = one["users"]["stages"].as_u64().unwrap();
    assert!(stages >= 8, "{}", one["users"]);
    let eight = json("8");
    let (single, all) =
        (one["tokens_per_s"].as_f64().unwrap(), eight["users"]["aggregate_tokens_per_s"].as_f64().unwrap());
    assert!((all - 8.0 * single).abs() <= 1e-9 * all, "{all} vs 8 × {single}");
    let text = ok(&wafer(&args("8"), None));
    assert!(
        text.contains("users in flight: 8 — ") && text.contains("ride along at full speed before region "),
        "{text}"
    );
    let o = wafer(&["run", "--users", "0"], None);
    assert_eq!(o.status.code(), Some(2));
}

/// `--users U --engine event`: the users also simulated message by message
/// over the step unrolled into U × 4 copies (`users.event`), beside the
/// closed form and the replay; on a pipeline below its stage count they agree.
#[test]
fn users_in_flight_are_also_timed_by_the_event_engine() {
    let a = ["run", "--model", "gpt2", "--context", "128", "--strategy", "pipeline", "--engine", "event", "--no-gpu"];
    let mut j: Vec<&str> = a.to_vec();
    j.extend(["--users", "4", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&wafer(&j, None))).unwrap();
    let e = &v["users"]["event"];
    assert_eq!(e["engine"], "event");
    assert_eq!((e["users"].as_u64(), e["tokens"].as_u64()), (Some(4), Some(4)), "{e}");
    let r = e["vs_closed_form"].as_f64().unwrap();
    assert!((0.9..=1.1).contains(&r), "{e}");
    let mut t: Vec<&str> = a.to_vec();
    t.extend(["--users", "4"]);
    let text = ok(&wafer(&t, None));
    assert!(text.contains("event engine over 4 tokens each ("), "{text}");
    // The analytical engine asked for: no event figure.
    let mut n: Vec<&str> = a.to_vec();
    n[8] = "analytical";
    n.extend(["--users", "4", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&wafer(&n, None))).unwrap();
    assert!(v["users"].get("event").is_none(), "{}", v["users"]);
}

/// `--prompt N --cached C`: time to first token beside the per-token latency,
/// on the step after the prompt (C + N + 1 positions).
#[test]
fn run_with_a_prompt_reports_time_to_first_token_on_both_sides() {
    let json = |extra: &[&str]| -> serde_json::Value {
        let mut a = vec!["run", "--model", "llama-3.2-1b", "--engine", "analytical", "--format", "json"];
        a.extend(extra);
        serde_json::from_str(&ok(&wafer(&a, None))).unwrap()
    };
    let v = json(&["--prompt", "512", "--cached", "1000"]);
    assert_eq!(v["inputs"]["context"], 1513);
    let f = &v["prefill"];
    let (ttft, tpot) = (f["ttft_us"].as_f64().unwrap(), v["tpot_us"].as_f64().unwrap());
    // Token by token: one step for the first prompt token, then one bottleneck per further token.
    let b = v["users"]["bottleneck_us"].as_f64().unwrap();
    let chunks = f["chunks"].as_array().unwrap();
    assert_eq!(chunks[0]["chunk"], 1);
    let one = chunks[0]["ttft_us"].as_f64().unwrap();
    assert!((one - (tpot + 511.0 * b)).abs() <= 1e-6 * one, "{f}");
    // The report keeps the fastest chunk the mapping holds.
    assert!(chunks.iter().all(|c| c["ttft_us"].as_f64().unwrap() >= ttft), "{f}");
    assert!(f["chunk_limit"].as_str().is_none_or(|s| s.contains("does not fit")), "{f}");
    assert!(f["gpu_ttft_us"].as_f64().unwrap() > 0.0, "{f}");
    let longer = json(&["--prompt", "2048", "--cached", "1000"]);
    assert!(longer["prefill"]["ttft_us"].as_f64().unwrap() > ttft);
    assert!(json(&["--prompt", "512", "--no-gpu"])["prefill"]["gpu_ttft_us"].is_null());
    assert!(v.get("prefill").is_some() && json(&[]).get("prefill").is_none());
}

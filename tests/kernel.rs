//! `wafer kernel`: a published kernel built as a program and timed, the
//! silicon calibration table, and clear errors for kernels the IR cannot
//! express yet; `--accumulate` as a compiler choice.

use std::process::{Command, Output};

fn wafer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().expect("run wafer")
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn gemv_prints_the_program_and_its_cycles_in_both_engines() {
    let mut cycles = Vec::new();
    for engine in ["event", "analytical"] {
        let o = wafer(&[
            "kernel", "gemv", "--grid", "144", "--m", "144", "--n", "288", "--engine", engine, "--format", "json",
        ]);
        let v = json(&o);
        assert_eq!(v["pes"], 144 * 144);
        assert_eq!(v["group_len"], 18);
        let c = v["cycles"].as_f64().unwrap();
        let b = &v["breakdown"];
        let parts: f64 = ["compute_cycles", "comm_cycles", "inter_wafer_cycles", "wait_cycles"]
            .iter()
            .map(|k| b[k].as_f64().unwrap())
            .sum();
        assert!((parts - c).abs() < 1e-6, "{b} vs {c}");
        cycles.push(c);
    }
    assert!((cycles[0] / cycles[1] - 1.0).abs() < 0.05, "{cycles:?}");
    let text = String::from_utf8_lossy(&wafer(&["kernel", "gemv", "--grid", "16", "--m", "16", "--n", "16"]).stdout)
        .into_owned();
    assert!(text.contains("256 PEs") && text.contains("cycles:"), "{text}");
}

#[test]
fn calibration_reports_every_row_and_the_fit() {
    let o = wafer(&["kernel", "--calibration", "--engine", "analytical", "--format", "json"]);
    let v = json(&o);
    assert_eq!(v["calibration"]["rows"].as_array().unwrap().len(), 192);
    assert!(v["calibration"]["median_abs_error"].as_f64().unwrap() <= 0.05);
    assert_eq!(v["fit"]["folds"].as_array().unwrap().len(), 12);
    let o = wafer(&["kernel", "--calibration", "--engine", "analytical"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("192 rows: median |error|") && text.contains("leave-one-P-out"), "{text}");
}

#[test]
fn gemm_prints_its_cycles_and_the_calibration_holds_the_acceptance_bounds() {
    let v =
        json(&wafer(&["kernel", "gemm", "--grid", "80", "--m", "640", "--k", "640", "--n", "80", "--format", "json"]));
    assert_eq!((v["pes"].as_u64(), v["tile_m"].as_u64(), v["tile_k"].as_u64()), (Some(6400), Some(8), Some(8)));
    // The measured row is 37474.7 cycles.
    let c = v["cycles"].as_f64().unwrap();
    assert!((c / 37474.7 - 1.0).abs() < 0.05, "{c}");
    let v = json(&wafer(&["kernel", "--calibration", "--kernel", "gemm", "--format", "json"]));
    assert_eq!(v["calibration"]["rows"].as_array().unwrap().len(), 96);
    assert!(v["calibration"]["median_abs_error"].as_f64().unwrap() <= 0.10);
    assert!(v["calibration"]["max_abs_error"].as_f64().unwrap() <= 0.25);
    assert_eq!(v["fit"]["folds"].as_array().unwrap().len(), 12);
    let text = String::from_utf8_lossy(&wafer(&["kernel", "--calibration", "--kernel", "gemm"]).stdout).into_owned();
    assert!(text.contains("96 rows: median |error|") && text.contains("leave-one-P-out"), "{text}");
}

#[test]
fn kernels_the_ir_cannot_express_and_bad_shapes_are_clear_errors() {
    for (args, needle) in [
        (vec!["kernel", "shift", "--grid", "16", "--distance", "4", "--m", "16", "--n", "16"], "relay"),
        (vec!["kernel", "gemm", "--grid", "16", "--m", "16", "--k", "20", "--n", "16"], "--k"),
        (vec!["kernel", "gemm", "--grid", "1", "--m", "16", "--k", "16", "--n", "16"], "--grid"),
        (vec!["kernel", "gemm", "--grid", "16", "--m", "4096", "--k", "4096", "--n", "4096"], "SRAM"),
        (vec!["kernel", "--calibration", "--kernel", "shift"], "relay"),
        (vec!["kernel", "gemv", "--grid", "16", "--m", "20", "--n", "16"], "--m"),
        (vec!["kernel", "gemv", "--grid", "800", "--m", "800", "--n", "800"], "--grid"),
        (vec!["kernel", "gemv", "--grid", "16", "--m", "16", "--n", "16", "--groups", "17"], "--groups"),
        (vec!["kernel"], "name a kernel"),
    ] {
        let o = wafer(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

#[test]
fn fp16_accumulation_is_a_compiler_choice_that_speeds_the_token_up() {
    let run = |acc: &str| {
        let v = json(&wafer(&[
            "run",
            "--model",
            "llama-3.2-1b",
            "--context",
            "1024",
            "--no-gpu",
            "--engine",
            "analytical",
            "--accumulate",
            acc,
            "--format",
            "json",
        ]));
        v["tpot_us"].as_f64().unwrap()
    };
    let (f32, f16) = (run("fp32"), run("fp16"));
    assert!(f16 < f32, "fp16 {f16} vs fp32 {f32}");
    // The functional engine honours it, within the fp16 bound.
    let o = wafer(&[
        "run",
        "--model",
        "gpt2",
        "--arch",
        "mesh:64x64",
        "--wafers",
        "auto",
        "--context",
        "4",
        "--engine",
        "functional",
        "--steps",
        "2",
        "--accumulate",
        "fp16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

//! Sweeps over prompt lengths: each point's time to first token is exactly
//! what `wafer run --prompt N --cached C` reports for the same point, the
//! prompt columns appear only when prompts are swept, and a prompt the
//! context cannot hold is that point's error.

use std::process::{Command, Output};

fn wafer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().expect("run wafer")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn sweep(spec: &str) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.toml");
    std::fs::write(&path, spec).unwrap();
    let out_dir = dir.path().join("out");
    let out = wafer(&["sweep", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("sweep.json")).unwrap()).unwrap();
    (j, std::fs::read_to_string(out_dir.join("sweep.csv")).unwrap())
}

#[test]
fn a_swept_prompt_times_the_first_token_as_run_does() {
    let (j, csv) =
        sweep("models = [\"llama-3.2-1b\"]\ncontexts = [2048]\nprompts = [100, 1000]\ngpus = [\"H100-SXM\"]\n");
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let n = row["prompt"].as_u64().unwrap();
        let cached = (2048 - n - 1).to_string();
        let run = json(&wafer(&[
            "run",
            "--model",
            "llama-3.2-1b",
            "--prompt",
            &n.to_string(),
            "--cached",
            &cached,
            "--gpu",
            "H100-SXM",
            "--engine",
            "analytical",
            "--format",
            "json",
        ]));
        let f = &row["figures"];
        assert_eq!(f["ttft_us"], run["prefill"]["ttft_us"], "prompt {n}");
        assert_eq!(f["gpu_ttft_us"], run["prefill"]["gpu_ttft_us"], "prompt {n}");
        assert_eq!(f["prefill_chunk"], run["prefill"]["chunk"], "prompt {n}");
        assert_eq!(f["prefill_way"], run["prefill"]["way"], "prompt {n}");
        assert_eq!(f["tpot_us"], run["simulation"]["tpot_us"], "prompt {n}");
    }
    // A longer prompt waits longer, on both sides.
    let t = |i: usize, k: &str| rows[i]["figures"][k].as_f64().unwrap();
    assert!(t(1, "ttft_us") > t(0, "ttft_us") && t(1, "gpu_ttft_us") > t(0, "gpu_ttft_us"));
    let head = csv.lines().next().unwrap();
    assert!(head.contains(",prompt,") && head.ends_with(",ttft_us,prefill_way,prefill_chunk,gpu_ttft_us"), "{head}");
}

#[test]
fn without_prompts_the_rows_and_columns_are_as_before() {
    let (j, csv) = sweep("models = [\"gpt2\"]\ncontexts = [256]\n");
    assert!(j["rows"][0].get("prompt").is_none());
    assert!(j["rows"][0]["figures"].get("ttft_us").is_none());
    assert!(!csv.lines().next().unwrap().contains("ttft"));
}

#[test]
fn a_prompt_the_context_cannot_hold_is_that_points_error() {
    let (j, _) = sweep("models = [\"gpt2\"]\ncontexts = [256]\nprompts = [64, 256]\n");
    let rows = j["rows"].as_array().unwrap();
    assert!(rows[0]["figures"]["ttft_us"].as_f64().unwrap() > 0.0);
    let e = rows[1]["error"].as_str().unwrap();
    assert!(e.contains("prompt 256 needs a context of at least 257"), "{e}");
}

#[test]
fn a_prompt_out_of_range_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.toml");
    std::fs::write(&path, "prompts = [0]\n").unwrap();
    let out = wafer(&["sweep", path.to_str().unwrap(), "--out", dir.path().join("o").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("field `prompts` holds 0"), "{err}");
}

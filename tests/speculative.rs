//! Specification of speculative decoding on `wafer run` and `wafer compare`
//! (`--draft M --spec-k K --accept A`): the round's arithmetic on both sides,
//! where the draft is placed (on the target's wafer when both fit, else its
//! own wafers with the verifier's reason), the JSON it writes and the errors
//! for bad flags.

use serde_json::Value;
use std::process::{Command, Output};

fn wafer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().expect("run wafer")
}

fn json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let o = wafer(&a);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A small target and draft, each step timed by the analytical engine.
fn small_args<'a>(cmd: &'a str, k: &'a str, accept: &'a str) -> Vec<&'a str> {
    let target = ["--model", "llama-3.2-1b", "--context", "512", "--engine", "analytical"];
    let mut a = vec![cmd];
    a.extend(target);
    a.extend(["--draft", "gpt2", "--spec-k", k, "--accept", accept]);
    a
}

fn small(cmd: &str, k: &str, accept: &str) -> Value {
    json(&small_args(cmd, k, accept))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn at_zero_acceptance_speculation_is_no_faster_than_plain_decoding_on_either_side() {
    let r = small("run", "4", "0");
    let s = &r["speculative"];
    assert_eq!(f(&s["expected_tokens_per_step"]), 1.0);
    let w = &s["wafer"];
    assert!(f(&w["effective_tokens_per_s"]) <= f(&r["tokens_per_s"]), "{w}");
    assert!(f(&w["speedup"]) <= 1.0);
    let g = &s["gpu"];
    assert!(f(&g["effective_tokens_per_s"]) <= f(&r["gpu"]["tokens_per_s"]), "{g}");
    // One round yields one token: the effective time is the whole round.
    assert!((f(&w["effective_us_per_token"]) - f(&w["round_us"])).abs() < 1e-9 * f(&w["round_us"]));
}

#[test]
fn as_acceptance_tends_to_one_a_round_yields_k_plus_one_tokens_bounded_by_the_verify_step() {
    for accept in ["1", "0.9999"] {
        let w = small("run", "4", accept)["speculative"]["wafer"].clone();
        let (round, verify, draft) = (f(&w["round_us"]), f(&w["verify_step_us"]), f(&w["draft_step_us"]));
        assert!((round - (4.0 * draft + verify)).abs() < 1e-9 * round);
        let tps = f(&w["effective_tokens_per_s"]);
        // (k + 1) tokens per round, and never more than (k + 1) per verify step alone.
        assert!((tps - 5.0 * 1e6 / round).abs() < 1e-3 * tps, "{accept}: {tps} vs {}", 5.0 * 1e6 / round);
        assert!(tps <= 5.0 * 1e6 / verify);
    }
}

#[test]
fn a_small_draft_shares_the_wafer_when_both_fit_so_machines_are_the_targets_wafers() {
    let r = json(&[
        "run",
        "--context",
        "1024",
        "--engine",
        "analytical",
        "--draft",
        "llama-3.2-1b",
        "--spec-k",
        "4",
        "--accept",
        "0.8",
    ]);
    let w = &r["speculative"]["wafer"];
    assert_eq!(w["placement"], "shared", "{w}");
    assert_eq!(w["machines"], r["wafers"]);
    assert_eq!(w["machines"], 1);
    assert!(w["why_not_shared"].is_null() && w["layout"].is_string());
    // Energy and cost at the effective rate, on the machines the round uses.
    let e = &w["energy"];
    assert_eq!(e["machines"], w["machines"]);
    assert!((f(&e["tokens_per_s"]) - f(&w["effective_tokens_per_s"])).abs() < 1e-9);
    assert!(f(&e["joules_per_token"]) > 0.0 && f(&e["usd_per_mtok"]) > 0.0);
}

#[test]
fn a_draft_that_does_not_fit_runs_on_its_own_wafers_and_says_why() {
    // At context 4096, llama-3.1-8b and its 1B draft do not both fit one wse3.
    let r = json(&["run", "--engine", "analytical", "--draft", "llama-3.2-1b", "--spec-k", "4", "--accept", "0.8"]);
    let w = &r["speculative"]["wafer"];
    assert_eq!(w["placement"], "own wafers", "{w}");
    let why = w["why_not_shared"].as_str().unwrap();
    assert!(why.contains("SRAM overflow") && why.contains("bytes"), "{why}");
    assert!(w["machines"].as_u64().unwrap() > r["wafers"].as_u64().unwrap());
    assert_eq!(w["energy"]["machines"], w["machines"]);
}

#[test]
fn compare_shows_both_sides_of_the_round() {
    let r = small("compare", "3", "0.7");
    let s = &r["speculative"];
    for key in ["draft", "k", "accept", "expected_tokens_per_step", "wafer", "gpu"] {
        assert!(!s[key].is_null(), "{key} missing: {s}");
    }
    for key in [
        "draft_step_us",
        "verify_step_us",
        "round_us",
        "effective_us_per_token",
        "effective_tokens_per_s",
        "placement",
        "machines",
        "energy",
    ] {
        assert!(!s["wafer"][key].is_null(), "wafer.{key} missing");
    }
    for key in ["draft_step_ms", "verify_step_ms", "effective_tokens_per_s", "energy"] {
        assert!(!s["gpu"][key].is_null(), "gpu.{key} missing");
    }
    let o = wafer(&small_args("compare", "3", "0.7"));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && text.contains("speculative decoding")
            && text.contains("draft gpt2, k = 3")
            && text.contains("draft placed")
    );
}

#[test]
fn bad_speculative_flags_are_clear_errors() {
    for cmd in ["run", "compare"] {
        for (args, want) in [
            (vec!["--draft", "gpt2"], "--spec-k"),
            (vec!["--spec-k", "4"], "--draft"),
            (vec!["--draft", "gpt2", "--spec-k", "0", "--accept", "0.5"], "allowed 1..=32"),
            (vec!["--draft", "gpt2", "--spec-k", "-1", "--accept", "0.5"], "negative"),
            (vec!["--draft", "gpt2", "--spec-k", "4", "--accept", "1.5"], "0 <= a <= 1"),
            (vec!["--draft", "gpt2", "--spec-k", "4", "--accept", "x"], "not a number"),
            (vec!["--draft", "no-such-model", "--spec-k", "4", "--accept", "0.5"], "no-such-model"),
        ] {
            let mut a = vec![cmd];
            a.extend(args.iter());
            let o = wafer(&a);
            let e = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{a:?}: {e}");
            assert!(e.contains(want), "{a:?}: {e}");
        }
    }
}

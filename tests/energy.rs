//! Energy and cost per token in `wafer run`, `wafer compare` and `wafer gpu`:
//! the closed forms (power × time per token; price × machines over tokens
//! per hour), the documented defaults, the overrides and their validation.

use serde_json::Value;
use std::process::Command;

fn wafer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().unwrap()
}

fn json(args: &[&str]) -> Value {
    let o = wafer(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1e-30)
}

#[test]
fn wafer_joules_per_token_is_system_power_times_wafers_times_time_per_token() {
    let r = json(&["run", "--model", "llama-3.2-1b", "--context", "512", "--engine", "analytical", "--format", "json"]);
    let w = &r["energy"]["wafer"];
    let tpot_s = r["tpot_us"].as_f64().unwrap() * 1e-6;
    let wafers = r["wafers"].as_f64().unwrap();
    // wse3: ~23 kW (hardware.md, secondary sources), batch 1.
    assert_eq!(w["power"]["watts"].as_f64().unwrap(), 23e3);
    assert!(close(w["joules_per_token"].as_f64().unwrap(), 23e3 * wafers * tpot_s));
    // The default price is an assumption and says so.
    assert_eq!(w["price"]["assumed"], true);
    let usd_h = w["price"]["usd_per_hour"].as_f64().unwrap();
    assert!(close(w["usd_per_mtok"].as_f64().unwrap(), usd_h * wafers * tpot_s / 3600.0 * 1e6));
    // GPU side: N × TDP (700 W for an H100 SXM) over its tokens/s.
    let g = &r["energy"]["gpu"];
    let n = r["gpu"]["n_gpus"].as_f64().unwrap();
    assert!(close(g["joules_per_token"].as_f64().unwrap(), n * 700.0 / r["gpu"]["tokens_per_s"].as_f64().unwrap()));
}

#[test]
fn wse2_reports_the_range_its_source_gives() {
    let r = json(&[
        "run",
        "--model",
        "llama-3.2-1b",
        "--arch",
        "wse2",
        "--context",
        "512",
        "--engine",
        "analytical",
        "--no-gpu",
        "--format",
        "json",
    ]);
    let w = &r["energy"]["wafer"];
    let (lo, mid, hi) = (
        w["joules_per_token_low"].as_f64().unwrap(),
        w["joules_per_token"].as_f64().unwrap(),
        w["joules_per_token_high"].as_f64().unwrap(),
    );
    // 15, 17.5 and 20 kW.
    assert!(close(lo / mid, 15.0 / 17.5) && close(hi / mid, 20.0 / 17.5));
}

#[test]
fn given_prices_and_power_replace_the_defaults_and_are_not_labelled_assumed() {
    let base = ["compare", "--model", "gpt2", "--arch", "mesh:128x128", "--context", "64", "--engine", "analytical"];
    let mut args = base.to_vec();
    args.extend(["--format", "json"]);
    let r = json(&args);
    // A mesh has no documented power or price.
    assert!(r["energy"]["wafer"]["power"].is_null() && r["energy"]["wafer"]["usd_per_mtok"].is_null());
    let mut args = base.to_vec();
    args.extend(["--wafer-power-kw", "2", "--price-per-hour", "10", "--gpu-price-per-hour", "1", "--format", "json"]);
    let r = json(&args);
    let w = &r["energy"]["wafer"];
    let tps = w["tokens_per_s"].as_f64().unwrap();
    assert!(close(w["joules_per_token"].as_f64().unwrap(), 2e3 / tps));
    assert!(close(w["usd_per_mtok"].as_f64().unwrap(), 10.0 / (tps * 3600.0) * 1e6));
    assert_eq!(w["price"]["assumed"], false);
    let g = &r["energy"]["gpu"];
    assert!(close(g["usd_per_mtok"].as_f64().unwrap(), 1.0 / (g["tokens_per_s"].as_f64().unwrap() * 3600.0) * 1e6));
    // And the text says which price was assumed.
    let mut args = base.to_vec();
    args.extend(["--wafer-power-kw", "2", "--price-per-hour", "10"]);
    let text = String::from_utf8(wafer(&args).stdout).unwrap();
    assert!(text.contains("energy per token") && text.contains("assumed price"), "{text}");
}

#[test]
fn wafer_gpu_shows_energy_and_cost_per_gpu_hour() {
    let r = json(&["gpu", "--model", "llama-3.1-8b", "--gpus", "2", "--price-per-hour", "2", "--format", "json"]);
    let e = &r["energy"];
    let tps = r["tokens_per_s"].as_f64().unwrap();
    assert!(close(e["joules_per_token"].as_f64().unwrap(), 2.0 * 700.0 / tps));
    assert!(close(e["usd_per_mtok"].as_f64().unwrap(), 2.0 * 2.0 / (tps * 3600.0) * 1e6));
    let text = String::from_utf8(wafer(&["gpu", "--model", "llama-3.1-8b"]).stdout).unwrap();
    assert!(text.contains("J/token") && text.contains("assumed price"), "{text}");
}

#[test]
fn bad_prices_and_powers_are_refused_before_any_work() {
    for (flag, v) in [
        ("--price-per-hour", "-1"),
        ("--price-per-hour", "0"),
        ("--price-per-hour", "nan"),
        ("--gpu-price-per-hour", "1e9"),
        ("--wafer-power-kw", "abc"),
    ] {
        let o = wafer(&["run", "--model", "gpt2", flag, v]);
        assert_eq!(o.status.code(), Some(2), "{flag} {v}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(flag) && err.contains("allowed"), "{flag} {v}: {err}");
    }
    let o = wafer(&["gpu", "--price-per-hour", "inf"]);
    assert_eq!(o.status.code(), Some(2));
}

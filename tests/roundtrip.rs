//! `wafer roundtrip`: one editor interaction (a prompt over a cached
//! context, then the answer) on the wafer and on the GPU baseline.

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

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(&wafer(args, None))).unwrap()
}

#[test]
fn the_defaults_give_both_sides_whose_parts_add_up() {
    let out = ok(&wafer(&["roundtrip"], None));
    assert!(out.contains("2000 prompt tokens over 30000 cached, 400 answer tokens"), "{out}");
    assert!(
        out.contains("time to first token") && out.contains("wafer: 1 × wse3") && out.contains("GPU: 1 × H100-SXM")
    );
    let v = json(&["roundtrip", "--format", "json"]);
    for side in ["wafer", "gpu"] {
        let s = &v[side];
        let (ttft, decode, total) =
            (s["ttft_us"].as_f64().unwrap(), s["decode_us"].as_f64().unwrap(), s["total_us"].as_f64().unwrap());
        assert!(ttft > 0.0 && decode > 0.0, "{side}: {s}");
        assert!((ttft + decode - total).abs() <= 1e-9 * total, "{side}: {s}");
        // 399 answer steps after the first token, each the side's per-token time.
        let tpot = s["tpot_us"].as_f64().unwrap();
        assert!((decode - 399.0 * tpot).abs() <= 1e-9 * decode, "{side}: {s}");
    }
    // Three strategies, each compiled for decode alone and with room for 4-token prompt blocks.
    let alts = v["alternatives"].as_array().unwrap();
    let tried: Vec<(&str, u64)> =
        alts.iter().map(|x| (x["strategy"].as_str().unwrap(), x["prefill_room"].as_u64().unwrap())).collect();
    let want: Vec<(&str, u64)> = ["pipeline", "spread", "hybrid:4"].iter().flat_map(|&s| [(s, 1), (s, 4)]).collect();
    assert_eq!(tried, want, "{}", v["alternatives"]);
    assert!(["pipeline", "spread", "hybrid:4"].contains(&v["wafer_strategy"].as_str().unwrap()));
}

#[test]
fn room_for_prompt_blocks_is_weighed_and_the_best_round_trip_kept() {
    let v = json(&["roundtrip", "--model", "llama-3.2-1b", "--format", "json"]);
    let alts = v["alternatives"].as_array().unwrap();
    let best = alts.iter().filter_map(|x| x["total_us"].as_f64()).fold(f64::MAX, f64::min);
    assert_eq!(v["wafer"]["total_us"].as_f64().unwrap(), best, "{}", v["alternatives"]);
    let chosen = alts.iter().find(|x| x["total_us"].as_f64() == Some(best)).unwrap();
    assert_eq!(v["prefill_room"], chosen["prefill_room"]);
    assert_eq!(v["wafer_strategy"], chosen["strategy"]);
    // `--prefill-chunk` names the room: nothing else is tried.
    let fixed = json(&[
        "roundtrip",
        "--model",
        "llama-3.2-1b",
        "--strategy",
        "pipeline",
        "--prefill-chunk",
        "2",
        "--format",
        "json",
    ]);
    let rooms: Vec<u64> =
        fixed["alternatives"].as_array().unwrap().iter().map(|x| x["prefill_room"].as_u64().unwrap()).collect();
    assert_eq!(rooms, [2]);
}

#[test]
fn the_figures_are_identical_for_any_thread_count() {
    let args = ["roundtrip", "--model", "llama-3.2-1b", "--format", "json"];
    let one = ok(&wafer(&args, Some("1")));
    assert_eq!(one, ok(&wafer(&args, Some("2"))));
    assert_eq!(one, ok(&wafer(&args, None)));
}

/// A pipeline mapping streams the prompt (one token per bottleneck); a spread
/// mapping, whose regions all share the same PEs, takes about a step per
/// token, so auto weighs the round trip, not the decode step alone.
#[test]
fn longer_prompts_take_longer_and_the_pipeline_streams_them() {
    let base = ["roundtrip", "--model", "llama-3.2-1b", "--strategy", "pipeline", "--format", "json"];
    let t = |prompt: &str| {
        let mut a = base.to_vec();
        a.extend(["--prompt", prompt]);
        json(&a)["wafer"]["ttft_us"].as_f64().unwrap()
    };
    let (short, long) = (t("256"), t("4096"));
    assert!(long > short, "{short} vs {long}");
    let v = json(&base);
    let tpot = v["wafer"]["tpot_us"].as_f64().unwrap();
    assert!(v["wafer"]["ttft_us"].as_f64().unwrap() < 2000.0 * tpot / 4.0, "{v}");
}

#[test]
fn inputs_it_cannot_honour_are_errors_that_name_them() {
    for (args, want) in [
        (vec!["roundtrip", "--context", "100"], "--context"),
        (vec!["roundtrip", "--model", "gpt2"], "learned positions"),
        (vec!["roundtrip", "--output", "0"], "--output"),
        (vec!["roundtrip", "--prompt", "-4"], "negative"),
    ] {
        let o = wafer(&args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// `--out DIR`: the JSON as printed, a Markdown summary and the timeline chart
/// (the wait for the first token, then the answer, per side).
#[test]
fn the_report_folder_holds_the_json_the_summary_and_the_timeline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rt");
    let args = ["roundtrip", "--model", "llama-3.2-1b", "--format", "json", "--out", dir.to_str().unwrap()];
    let printed = ok(&wafer(&args, None));
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["roundtrip.json", "roundtrip.png", "roundtrip.svg", "summary.md"]);
    assert_eq!(std::fs::read_to_string(dir.join("roundtrip.json")).unwrap(), printed);
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("time to first token") && md.contains("roundtrip.svg"), "{md}");
    let png = std::fs::read(dir.join("roundtrip.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A second run needs --force, and then replaces the folder it wrote.
    assert_eq!(wafer(&args, None).status.code(), Some(2));
    let mut again = args.to_vec();
    again.push("--force");
    ok(&wafer(&again, None));
}

//! `wafer frontier`: the latency–throughput frontier's contract — Pareto
//! marking, where the batch sweeps stop, determinism, the report folder and
//! bad input. Small model and context so the sweep stays quick.

use serde_json::Value;
use std::process::{Command, Output};

const SMALL: [&str; 4] = ["--model", "llama-3.2-1b", "--context", "512"];

fn wafer(args: &[&str], threads: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wafer"));
    c.arg("frontier").args(args);
    if let Some(t) = threads {
        c.env("RAYON_NUM_THREADS", t);
    }
    c.output().expect("run wafer")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(extra: &[&str]) -> Value {
    let mut args = SMALL.to_vec();
    args.extend(extra);
    args.extend(["--format", "json"]);
    serde_json::from_str(&ok(&wafer(&args, None))).unwrap()
}

fn xy(p: &Value) -> (f64, f64) {
    (p["per_user_tokens_per_s"].as_f64().unwrap(), p["aggregate_tokens_per_s"].as_f64().unwrap())
}

fn dominates(b: (f64, f64), a: (f64, f64)) -> bool {
    b.0 >= a.0 && b.1 >= a.1 && (b.0 > a.0 || b.1 > a.1)
}

/// Every frontier point is undominated among the side's eligible points and
/// every other eligible point is dominated by one; with `needs_fit`, points
/// whose KV cache does not fit are eligible for nothing.
fn check_pareto(points: &[Value], needs_fit: bool) {
    let eligible: Vec<&Value> = points.iter().filter(|p| !needs_fit || p["kv_fits"] == true).collect();
    assert!(!eligible.is_empty());
    for p in points {
        let on = p["frontier"].as_bool().unwrap();
        if needs_fit && p["kv_fits"] == false {
            assert!(!on, "a point whose KV cache does not fit is on the frontier: {p}");
            continue;
        }
        let beaten = eligible.iter().any(|q| dominates(xy(q), xy(p)));
        assert_eq!(on, !beaten, "frontier flag wrong for {p}");
    }
    assert!(points.iter().any(|p| p["frontier"] == true));
}

#[test]
fn frontier_points_are_pareto_optimal_and_every_other_point_is_dominated() {
    let v = json(&[]);
    let (w, g) = (v["wafer_points"].as_array().unwrap(), v["gpu_points"].as_array().unwrap());
    check_pareto(w, true);
    check_pareto(g, true);
    // Per-user tokens/s is per sequence: aggregate over users × batch.
    for p in w.iter().chain(g) {
        let seq = p["sequences"].as_u64().unwrap();
        assert_eq!(seq, p["users"].as_u64().unwrap() * p["batch"].as_u64().unwrap());
        let (u, a) = xy(p);
        assert!((u * seq as f64 - a).abs() <= 1e-9 * a, "{p}");
        assert!(p["joules_per_token"].as_f64().unwrap() > 0.0 && p["usd_per_mtok"].as_f64().unwrap() > 0.0);
    }
    // Every strategy that compiles contributes points; users in flight raise the
    // aggregate of one mapping until its bottleneck binds.
    let strategies: Vec<&str> = w.iter().map(|p| p["strategy"].as_str().unwrap()).collect();
    for s in ["pipeline", "spread", "hybrid:4"] {
        assert!(strategies.contains(&s), "{s} missing");
    }
    let pipe1: Vec<f64> = w
        .iter()
        .filter(|p| p["strategy"] == "pipeline" && p["batch"] == 1)
        .map(|p| p["aggregate_tokens_per_s"].as_f64().unwrap())
        .collect();
    assert!(pipe1.len() >= 3 && pipe1.windows(2).all(|x| x[1] >= x[0]) && pipe1[1] > pipe1[0], "{pipe1:?}");
    // --ignore-kv: the closed form alone; the frontier then counts every point.
    let all = json(&["--ignore-kv"]);
    check_pareto(all["wafer_points"].as_array().unwrap(), false);
    let best = |v: &Value| {
        v["wafer_points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["frontier"] == true)
            .map(|p| xy(p).1)
            .fold(0.0, f64::max)
    };
    assert!(best(&all) >= best(&v));
}

#[test]
fn gpu_aggregate_rises_with_batch_until_memory_binds_and_the_wafer_stops_at_the_first_batch_that_does_not_map() {
    // 5% of each GPU's memory for weights and KV cache: memory binds within the sweep.
    let v = json(&["--gpu-mem-headroom", "0.95"]);
    let g = v["gpu_points"].as_array().unwrap();
    let batches: Vec<u64> = g.iter().map(|p| p["batch"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (0..batches.len() as u32).map(|i| 1u64 << i).collect();
    assert_eq!(batches, want);
    let agg: Vec<f64> = g.iter().map(|p| xy(p).1).collect();
    assert!(agg.windows(2).all(|x| x[1] > x[0]), "{agg:?}");
    let per_user: Vec<f64> = g.iter().map(|p| xy(p).0).collect();
    assert!(per_user.windows(2).all(|x| x[1] <= x[0]), "{per_user:?}");
    let limits = v["limits"].as_array().unwrap();
    let gl = limits.iter().find(|l| l["side"] == "gpu").unwrap();
    assert_eq!(gl["largest_batch"].as_u64(), batches.last().copied());
    let bound = gl["bound"].as_str().unwrap();
    assert!(bound.starts_with(&format!("batch {}: ", 2 * batches.last().unwrap())), "{bound}");
    assert!(bound.contains("does not fit"), "{bound}");
    // Each wafer strategy's sweep stops at its first batch that does not map, with that error.
    for l in limits.iter().filter(|l| l["side"] == "wafer") {
        let s = l["strategy"].as_str().unwrap();
        let largest = l["largest_batch"].as_u64().unwrap();
        let bs: Vec<u64> = v["wafer_points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["strategy"] == s)
            .map(|p| p["batch"].as_u64().unwrap())
            .collect();
        assert_eq!(bs.iter().max(), Some(&largest), "{s}");
        assert!(l["bound"].as_str().unwrap().starts_with(&format!("batch {}: ", 2 * largest)), "{l}");
    }
    let text = ok(&wafer(&[SMALL.as_slice(), &["--gpu-mem-headroom", "0.95"]].concat(), None));
    assert!(
        text.contains("Wafer frontier (") && text.contains("GPU frontier (") && text.contains("does not fit"),
        "{text}"
    );
}

#[test]
fn output_is_byte_identical_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for t in ["1", "3"] {
        let d = dir.path().join(format!("t{t}"));
        let args = [SMALL.as_slice(), &["--format", "json", "--out", d.to_str().unwrap()]].concat();
        let json = ok(&wafer(&args, Some(t)));
        let files: Vec<Vec<u8>> = ["frontier.json", "frontier.csv", "frontier.svg", "frontier.png"]
            .iter()
            .map(|f| std::fs::read(d.join(f)).unwrap())
            .collect();
        outs.push((json, files));
    }
    assert!(outs[0] == outs[1], "outputs differ between RAYON_NUM_THREADS=1 and 3");
}

#[test]
fn the_out_folder_holds_the_tables_and_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("fr");
    let args = [SMALL.as_slice(), &["--out", d.to_str().unwrap()]].concat();
    ok(&wafer(&args, None));
    let mut names: Vec<String> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["frontier.csv", "frontier.json", "frontier.png", "frontier.svg"]);
    let v: Value = serde_json::from_slice(&std::fs::read(d.join("frontier.json")).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 2);
    let points = v["wafer_points"].as_array().unwrap().len() + v["gpu_points"].as_array().unwrap().len();
    let csv = std::fs::read_to_string(d.join("frontier.csv")).unwrap();
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "side",
        "per_user_tokens_per_s",
        "aggregate_tokens_per_s",
        "joules_per_token",
        "usd_per_mtok",
        "frontier",
        "speculative",
    ] {
        assert!(head.contains(&col), "{col}");
    }
    assert_eq!(lines.count(), points);
    let svg = std::fs::read_to_string(d.join("frontier.svg")).unwrap();
    roxmltree::Document::parse(&svg).expect("the SVG is XML");
    for label in ["per-user tokens/s", "aggregate tokens/s", "Pareto frontier", "wafer: 1 × wse3", "GPU: 1 × H100-SXM"]
    {
        assert!(svg.contains(label), "{label} missing from the chart");
    }
    assert_eq!(&std::fs::read(d.join("frontier.png")).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    // A frontier folder is a wafer report: replaced with --force, refused without.
    let again = wafer(&args, None);
    assert_eq!(again.status.code(), Some(2));
    ok(&wafer(&[args.as_slice(), &["--force"]].concat(), None));
}

#[test]
fn bad_input_is_exit_2_naming_the_field_and_its_range() {
    for (args, want) in [
        (vec!["--context", "0"], "--context"),
        (vec!["--context", "-5"], "is negative"),
        (vec!["--gpus", "0"], "allowed 1..=1024"),
        (vec!["--wafers", "0"], "--wafers"),
        (vec!["--engine", "functional"], "functional"),
        (vec!["--model", "no-such-model"], "no-such-model"),
        (vec!["--arch", "no-such-arch"], "no-such-arch"),
        (vec!["--gpu", "no-such-gpu"], "no-such-gpu"),
        (vec!["--price-per-hour", "-1"], "--price-per-hour"),
    ] {
        let mut a = if args[0] == "--model" { vec![] } else { vec!["--model", "llama-3.2-1b"] };
        a.extend(&args);
        let o = wafer(&a, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

const SPEC: [&str; 6] = ["--draft", "gpt2", "--spec-k", "4", "--accept", "0"];

#[test]
fn at_zero_acceptance_no_speculative_point_beats_the_plain_point_of_its_config_and_the_json_names_the_draft() {
    let v = json(&SPEC);
    assert_eq!(v["schema_version"], 2);
    let s = &v["speculative"];
    assert_eq!((s["draft"].as_str(), s["k"].as_u64(), s["accept"].as_f64()), (Some("gpt2"), Some(4), Some(0.0)));
    assert_eq!(s["expected_tokens_per_step"].as_f64(), Some(1.0));
    let mut compared = [0, 0];
    for (i, side) in ["wafer_points", "gpu_points"].iter().enumerate() {
        let points = v[side].as_array().unwrap();
        for p in points.iter().filter(|p| !p["speculative"].is_null()) {
            let plain = points
                .iter()
                .find(|q| {
                    q["speculative"].is_null()
                        && q["strategy"] == p["strategy"]
                        && q["batch"] == p["batch"]
                        && q["users"] == 1
                })
                .expect("a speculative point has its plain point");
            assert!(xy(p).0 <= xy(plain).0, "speculative {p} beats plain {plain}");
            let r = &p["speculative"];
            let round = 4.0 * r["draft_step_us"].as_f64().unwrap() + r["verify_step_us"].as_f64().unwrap();
            assert!((r["round_us"].as_f64().unwrap() - round).abs() <= 1e-9 * round, "{r}");
            compared[i] += 1;
        }
        // The frontier is over plain and speculative points together.
        check_pareto(points, true);
    }
    assert!(compared[0] > 0 && compared[1] > 0, "speculative points on both sides: {compared:?}");
    // The CSV and text mark them.
    let mut args = SMALL.to_vec();
    args.extend(SPEC);
    let text = ok(&wafer(&args, None));
    assert!(text.contains("draft gpt2 proposes k = 4"), "{text}");
}

#[test]
fn speculative_flags_need_each_other_and_are_range_checked() {
    for (args, want) in [
        (vec!["--draft", "gpt2"], "--spec-k"),
        (vec!["--spec-k", "4"], "--draft"),
        (vec!["--draft", "gpt2", "--spec-k", "33", "--accept", "0.5"], "allowed 1..=32"),
        (vec!["--draft", "gpt2", "--spec-k", "4", "--accept", "1.5"], "0 <= a <= 1"),
    ] {
        let o = wafer(&args, None);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(want), "{args:?}: {e}");
    }
}

#[test]
fn shards_merged_give_the_unsharded_folder_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut base = SMALL.to_vec();
    base.extend(["--draft", "gpt2", "--spec-k", "2", "--accept", "0.7"]);
    let whole = dir.join("whole");
    let mut args = base.clone();
    args.extend(["--out", whole.to_str().unwrap()]);
    ok(&wafer(&args, Some("2")));
    let mut shards = Vec::new();
    for i in 0..3 {
        let d = dir.join(format!("s{i}"));
        let mut args = base.clone();
        let shard = format!("{i}/3");
        args.extend(["--shard", &shard, "--out", d.to_str().unwrap()]);
        ok(&wafer(&args, Some("1")));
        shards.push(d);
    }
    let merged = dir.join("merged");
    let mut m = Command::new(env!("CARGO_BIN_EXE_wafer"));
    m.arg("merge").args(&shards).arg("--out").arg(&merged);
    ok(&m.output().unwrap());
    for f in ["frontier.json", "frontier.csv", "frontier.svg", "frontier.png"] {
        let (a, b) = (std::fs::read(whole.join(f)).unwrap(), std::fs::read(merged.join(f)).unwrap());
        assert!(a == b, "{f} differs between the unsharded run and the merged shards");
    }
    // A shard left out is named.
    let partial = dir.join("partial");
    let mut m = Command::new(env!("CARGO_BIN_EXE_wafer"));
    m.arg("merge").args(&shards[..2]).arg("--out").arg(&partial);
    let o = m.output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("shard 2/3 is missing"));
}

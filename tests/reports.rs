//! Report folders, sweeps (sharded and merged) and the CI gate, through the
//! `wafer` binary as users run them.

use std::path::Path;
use std::process::{Command, Output};

fn wafer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).env_remove("GITHUB_STEP_SUMMARY").output().expect("run wafer")
}

fn ok(o: &Output) {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), text(&o.stdout), text(&o.stderr));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An SVG file: parses as XML, root element `svg` with a size.
fn assert_svg(path: &Path) {
    let s = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&s).unwrap_or_else(|e| panic!("{}: not XML: {e}", path.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{}", path.display());
    assert!(root.attribute("width").is_some() && root.attribute("height").is_some(), "{}", path.display());
    assert!(root.descendants().count() > 20, "{}: nearly empty", path.display());
}

/// A PNG file: signature, then a decodable image of a sensible size.
fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
    let (w, h) = (reader.info().width, reader.info().height);
    // Slide-sized: a full-width 1080p slide is 1,920 px, and landscape.
    assert!((1920..=4000).contains(&w) && (200..=2000).contains(&h) && w >= h, "{}: {w}x{h}", path.display());
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf).unwrap();
    // Not a blank canvas: many distinct colours were drawn.
    let distinct: std::collections::BTreeSet<&[u8]> = buf.chunks(3).collect();
    assert!(distinct.len() > 8, "{}: only {} colours", path.display(), distinct.len());
}

fn assert_charts(dir: &Path, min: usize) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        match path.extension().and_then(|x| x.to_str()) {
            Some("svg") => {
                assert_svg(&path);
                assert!(path.with_extension("png").exists(), "{} has no PNG twin", path.display());
                n += 1;
            }
            Some("png") => assert_png(&path),
            _ => {}
        }
    }
    assert!(n >= min, "{} charts in {}, expected at least {min}", n, dir.display());
    n
}

#[test]
fn run_out_writes_a_complete_self_contained_report_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("report");
    let o = wafer(&["run", "--out", p(&dir)]);
    ok(&o);
    for f in [
        "report.json",
        "summary.md",
        "report.html",
        "trace.json",
        "latency.svg",
        "breakdown-layers.svg",
        "breakdown-kinds.svg",
        "heatmap-sram.svg",
        "heatmap-busy.svg",
        "heatmap-links.svg",
    ] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    assert_eq!(assert_charts(&dir, 6), 6);

    // report.json: the schema, with types.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["schema_version"], wafer_reports::SCHEMA_VERSION);
    for k in ["tpot_us", "tokens_per_s", "cycles", "clock_ghz"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {}", v[k]);
    }
    // `inputs.engine` is what was asked for; `engine` is what ran (auto: event where it fits, else analytical).
    assert!(v["wafers"].is_u64() && v["engine"].is_string());
    assert!(v["engine"] == v["inputs"]["engine"] || v["inputs"]["engine"] == "auto", "{}", v["engine"]);
    for k in ["model", "arch", "weight_dtype", "kv_dtype", "engine"] {
        assert!(v["inputs"][k].is_string(), "inputs.{k}");
    }
    for k in ["context", "batch", "wafers"] {
        assert!(v["inputs"][k].is_u64(), "inputs.{k}");
    }
    for k in ["compute_cycles", "comm_cycles", "inter_wafer_cycles", "wait_cycles"] {
        assert!(v["breakdown"][k].is_number(), "breakdown.{k}");
    }
    assert!(v["compile"]["pes_used"].is_u64() && v["compile"]["regions"].is_u64());
    let sim = &v["simulation"];
    assert!(sim["regions"].as_array().is_some_and(|r| r.len() > 100));
    assert!(sim["by_layer"].is_array() && sim["by_kind"].is_object() && sim["critical_path"].is_array());
    assert!(v["gpu"]["tpot_ms"].as_f64().is_some() && v["comparison"]["speedup"].as_f64().is_some());

    // report.html: one file that needs nothing else.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for banned in ["http://", "https://", "<script src", "<link", "@import", "url("] {
        assert!(!html.contains(banned), "report.html contains `{banned}`");
    }
    assert!(html.matches("<svg").count() >= 6 && html.contains("</html>"));
    assert!(html.contains("per-token latency") || html.contains("Per-token latency"));

    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.starts_with("# llama-3.1-8b on 1 × wse3") && md.contains("![") && md.contains("| op kind |"), "{md}");
    // The machine's limit beside the answer, in both documents.
    for doc in [&md, &html] {
        assert!(doc.contains("machine limit: ") && doc.contains("-bound floor); this mapping is "), "{doc}");
    }

    // trace.json: trace-event JSON with slices on many tracks, a critical-path track and counters.
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
    let ev = t["traceEvents"].as_array().unwrap();
    let slices: Vec<_> = ev.iter().filter(|e| e["ph"] == "X").collect();
    for e in &slices {
        assert!(e["ts"].as_f64().is_some() && e["dur"].as_f64().is_some_and(|d| d >= 0.0) && e["name"].is_string());
        assert!(e["pid"].is_u64() && e["tid"].is_u64());
    }
    let tracks: std::collections::BTreeSet<(u64, u64)> =
        slices.iter().map(|e| (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap())).collect();
    assert!(tracks.len() > 100, "{} tracks", tracks.len());
    assert!(ev.iter().any(|e| e["ph"] == "M" && e["args"]["name"] == "critical path"));
    assert!(ev.iter().any(|e| e["ph"] == "C"));
    // Small enough to open (a full WSE-3 wafer).
    assert!(std::fs::metadata(dir.join("trace.json")).unwrap().len() < 2_000_000);

    // Deterministic, and an existing folder is not clobbered without --force.
    let again = tmp.path().join("again");
    ok(&wafer(&["run", "--out", p(&again)]));
    for f in ["report.json", "summary.md", "report.html", "trace.json", "heatmap-links.svg", "latency.png"] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f} differs between runs"
        );
    }
    let o = wafer(&["run", "--out", p(&dir)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    ok(&wafer(&["run", "--model", "gpt2", "--out", p(&dir), "--force"]));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["inputs"]["model"], "gpt2");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn multi_wafer_runs_draw_one_heatmap_panel_per_wafer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    ok(&wafer(&[
        "run",
        "--model",
        "llama-3.2-1b",
        "--arch",
        "mesh:256x256",
        "--wafers",
        "auto",
        "--no-gpu",
        "--engine",
        "analytical",
        "--out",
        p(&dir),
    ]));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let wafers = v["wafers"].as_u64().unwrap();
    assert!(wafers > 1, "expected several wafers, got {wafers}");
    let svg = std::fs::read_to_string(dir.join("heatmap-sram.svg")).unwrap();
    assert_eq!(svg.matches("<image ").count() as u64, wafers.min(4));
    assert!(svg.contains("wafer 1"));
    assert!(v["gpu"].is_null() && v["comparison"].is_null());
    assert_charts(&dir, 5);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
    let pids: std::collections::BTreeSet<u64> = t["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len() as u64, wafers + 1, "a process per wafer plus the critical path");
    // The analytical engine's regions are its closed form: their phases nest inside.
    assert!(t["traceEvents"].as_array().unwrap().iter().any(|e| e["cat"] == "phase" && e["name"] == "compute"));
}

const GRID: &str = r#"
name = "grid"
models = ["gpt2"]
archs = ["mesh:96x96"]
contexts = [64]
wafers = ["auto"]
[arch]
"pe.sram_bytes" = [24576, 49152, 98304]
"router.link_bytes_per_cycle" = [2, 4, 8]
[plot]
x = "pe.sram_bytes"
"#;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_3x3_sweep_sharded_and_merged_equals_the_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("grid.toml");
    std::fs::write(&spec, GRID).unwrap();
    let all = tmp.path().join("all");
    let o = wafer(&["sweep", p(&spec), "--out", p(&all)]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(all.join("sweep.json")).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().enumerate().all(|(i, r)| r["index"] == i));
    // More link bandwidth never makes a point slower; figures are there for points that fit.
    let tpot = |i: usize| rows[i]["figures"]["tpot_us"].as_f64();
    assert!(rows.iter().any(|r| r["figures"].is_object()));
    for base in [0, 3, 6] {
        if let (Some(a), Some(c)) = (tpot(base), tpot(base + 2)) {
            assert!(c <= a, "point {base}: link x4 made it slower ({a} -> {c})");
        }
    }
    // Points that do not fit record their error instead of aborting the sweep.
    for r in rows.iter().filter(|r| r["figures"].is_null()) {
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let csv = std::fs::read_to_string(all.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 10);
    assert!(csv.starts_with(
        "index,model,arch,context,batch,wafers,gpu,pe.sram_bytes,router.link_bytes_per_cycle,engine,status,tpot_us"
    ));
    // Every point that fits carries the machine's limit beside its latency, which never beats it.
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert!(csv.lines().next().unwrap().contains(",bound,bound_us,bound_ratio,binding_floor,"), "{csv}");
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    for line in csv.lines().skip(1).filter(|l| l.contains(",ok,")) {
        let f: Vec<&str> = line.split(',').collect();
        let ratio: f64 = f[col("bound_ratio")].parse().unwrap();
        assert!(ratio >= 1.0, "{line}");
        assert!(["compute", "memory", "communication"].contains(&f[col("binding_floor")]), "{line}");
    }
    for r in rows.iter().filter(|r| r["figures"].is_object()) {
        assert!(r["figures"]["bound_us"].as_f64().unwrap() <= r["figures"]["tpot_us"].as_f64().unwrap());
    }
    assert_charts(&all, 2);

    let (s0, s1, merged) = (tmp.path().join("s0"), tmp.path().join("s1"), tmp.path().join("merged"));
    ok(&wafer(&["sweep", p(&spec), "--shard", "0/2", "--out", p(&s0)]));
    ok(&wafer(&["sweep", p(&spec), "--shard", "1/2", "--out", p(&s1)]));
    let v0: serde_json::Value = serde_json::from_slice(&std::fs::read(s0.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(v0["rows"].as_array().unwrap().len(), 5);
    ok(&wafer(&["merge", p(&s1), p(&s0), "--out", p(&merged)]));
    let (a, m) = (files(&all), files(&merged));
    assert_eq!(a.iter().map(|f| &f.0).collect::<Vec<_>>(), m.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (x, y) in a.iter().zip(&m) {
        assert!(x.1 == y.1, "{} differs between the unsharded run and the merged shards", x.0);
    }
    // A missing shard is an error, not a silently short result.
    let o = wafer(&["merge", p(&s0), "--out", p(&tmp.path().join("half"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("missing"), "{}", text(&o.stderr));
}

#[test]
fn sweep_rejects_bad_specs_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    for (body, needle) in [
        ("[arch]\n\"pe.sram_kib\" = [1]\n", "pe.sram_kib"),
        ("models = [\"no-such-model\"]\n", "no-such-model"),
        ("contexts = \"many\"\n", "contexts"),
    ] {
        let spec = tmp.path().join("bad.toml");
        std::fs::write(&spec, body).unwrap();
        let o = wafer(&["sweep", p(&spec)]);
        assert_eq!(o.status.code(), Some(2), "{body}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(needle), "{body}: {}", text(&o.stderr));
    }
    let o = wafer(&["sweep", "x.toml", "--shard", "2/2"]);
    assert_eq!(o.status.code(), Some(2));
}

const BASELINE: &str = r#"
tolerance_pct = 1.0
[[case]]
name = "gpt2 small"
model = "gpt2"
arch = "mesh:128x128"
context = 64
wafers = "auto"
[case.expect]
tpot_us = 1.0
[[case]]
model = "llama-3.2-1b"
context = 256
[case.expect]
pes_used = 1
"#;

#[test]
fn check_passes_on_its_fresh_baseline_fails_when_tightened_and_rejects_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("baseline.toml");
    std::fs::write(&b, BASELINE).unwrap();
    // The placeholder figures are far off: exit 1 with a table.
    let o = wafer(&["check", "--baseline", p(&b)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    ok(&wafer(&["check", "--baseline", p(&b), "--update"]));
    let fresh = std::fs::read_to_string(&b).unwrap();
    assert!(fresh.contains("tokens_per_s = ") && fresh.contains("pes_used = "), "{fresh}");
    let o = wafer(&["check", "--baseline", p(&b)]);
    ok(&o);
    assert!(text(&o.stdout).contains("all 10 figures within 1%"), "{}", text(&o.stdout));

    // Tighten one recorded figure by 5% (beyond the 1% tolerance): exit 1 with a readable diff.
    let tpot_line = fresh.lines().find(|l| l.starts_with("tpot_us = ")).unwrap();
    let tpot: f64 = tpot_line["tpot_us = ".len()..].parse().unwrap();
    std::fs::write(&b, fresh.replacen(tpot_line, &format!("tpot_us = {}", tpot * 0.95), 1)).unwrap();
    let summary = tmp.path().join("summary.md");
    let o = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["check", "--baseline", p(&b)])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(out.contains("| gpt2 small | tpot_us |") && out.contains("REGRESSED") && out.contains("+5.26%"), "{out}");
    assert!(std::fs::read_to_string(&summary).unwrap().contains("REGRESSED"));
    // A looser tolerance lets it through.
    ok(&wafer(&["check", "--baseline", p(&b), "--tolerance", "6"]));

    // Malformed baselines: exit 2, naming the file and the field.
    for (body, needle) in [
        ("[[case]]\nmodel = \"gpt2\"\ncontext = 64\n[case.expect]\ntpot_ms = 1.0\n", "tpot_ms"),
        ("[[case]]\nmodel = \"gpt2\"\n[case.expect]\ntpot_us = 1.0\n", "context"),
        ("[[case]]\nmodel = \"gpt2\"\ncontext = 64\nengine = \"quantum\"\n[case.expect]\ntpot_us = 1.0\n", "engine"),
        ("[[case]]\nmodel = \"nope\"\ncontext = 64\n[case.expect]\ntpot_us = 1.0\n", "model"),
        ("[[case]]\nmodel = \"gpt2\"\ncontext = 64\nprompt = 0\n[case.expect]\nttft_us = 1.0\n", "prompt"),
        ("this is not toml", "bad.toml"),
    ] {
        let bad = tmp.path().join("bad.toml");
        std::fs::write(&bad, body).unwrap();
        let o = wafer(&["check", "--baseline", p(&bad)]);
        assert_eq!(o.status.code(), Some(2), "{body}: {}", text(&o.stderr));
        let e = text(&o.stderr);
        assert!(e.contains("bad.toml") && e.contains(needle), "{body}: {e}");
    }
    let o = wafer(&["check", "--baseline", p(&tmp.path().join("absent.toml"))]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn event_engine_reports_and_sweeps_use_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ev");
    ok(&wafer(&["run", "--engine", "event", "--model", "gpt2", "--no-gpu", "--out", p(&dir)]));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["engine"], "event");
    assert_charts(&dir, 5);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
    let ev = t["traceEvents"].as_array().unwrap();
    assert!(ev.iter().any(|e| e["cat"] == "region") && !ev.iter().any(|e| e["cat"] == "phase"));
    let spec = tmp.path().join("s.toml");
    std::fs::write(&spec, "models = [\"gpt2\"]\ncontexts = [64, 512]\n").unwrap();
    let o = wafer(&["sweep", p(&spec), "--engine", "event", "--out", p(&tmp.path().join("sw"))]);
    ok(&o);
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("sw/sweep.json")).unwrap()).unwrap();
    assert_eq!(s["engine"], "event");
    assert!(s["rows"].as_array().unwrap().iter().all(|r| r["engine"] == "event" && r["figures"].is_object()));
}

/// The text of every `<text>` element of an SVG.
fn svg_texts(path: &Path) -> Vec<String> {
    let s = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&s).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect()
}

#[test]
fn scales_read_right_percent_ticks_integer_wafers_and_marked_wafer_changes() {
    let tmp = tempfile::tempdir().unwrap();
    // Heatmap scales in percent say so on every tick ("0.4%" cannot read as 40%).
    let run = tmp.path().join("run");
    ok(&wafer(&["run", "--model", "gpt2", "--context", "256", "--engine", "analytical", "--no-gpu", "--out", p(&run)]));
    for map in ["heatmap-busy.svg", "heatmap-links.svg"] {
        let texts = svg_texts(&run.join(map));
        let ticks: Vec<_> = texts.iter().filter(|t| t.trim().parse::<f64>().is_ok() || t.ends_with('%')).collect();
        let pct = ticks.iter().filter(|t| t.ends_with('%')).count();
        assert!(pct >= 3, "{map}: colour-bar ticks without %: {ticks:?}");
        assert!(texts.iter().any(|t| t.contains("scale: 0 to the busiest cell")), "{map}: {texts:?}");
    }
    // The SRAM sweep: Llama-3.1-8B needs 2 wafers below 48 KiB per PE, 1 from there.
    let sweep = tmp.path().join("sweep");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sweep-sram.toml");
    ok(&wafer(&["sweep", p(&spec), "--out", p(&sweep)]));
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(sweep.join("sweep.json")).unwrap()).unwrap();
    let used: std::collections::BTreeSet<u64> =
        rows["rows"].as_array().unwrap().iter().filter_map(|r| r["figures"]["wafers_used"].as_u64()).collect();
    assert!(used.len() >= 2, "the example no longer changes the wafer count: {used:?}");
    // Integer figure, integer ticks.
    let wafer_ticks: Vec<f64> =
        svg_texts(&sweep.join("curve-wafers_used.svg")).iter().filter_map(|t| t.trim().parse().ok()).collect();
    assert!(wafer_ticks.len() >= 4 && wafer_ticks.iter().all(|v| v.fract() == 0.0), "{wafer_ticks:?}");
    // Every curve names the wafer counts where they change.
    for curve in ["curve-tokens_per_s.svg", "curve-speedup.svg"] {
        let texts = svg_texts(&sweep.join(curve));
        for n in &used {
            let label = if *n == 1 { "1 wafer".to_string() } else { format!("{n} wafers") };
            assert!(texts.iter().any(|t| t.contains(&label)), "{curve}: no {label:?} in {texts:?}");
        }
    }
}

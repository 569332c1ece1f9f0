//! Issue 9, output side, through the `wafer` binary: a run that does not
//! finish is an error and never a latency; routers without multicast finish;
//! `--out` never loses a folder and replaces only what wafer wrote; files get
//! the umask's mode; every flag is checked before any work; `check --update`
//! keeps the file and starts a baseline from a list of cases; the smaller
//! semantics (`--steps 0`, `--context` with the functional engine, empty and
//! all-failing sweeps).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wafer_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wafer"));
    c.args(args).env_remove("GITHUB_STEP_SUMMARY");
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output().expect("run wafer")
}

fn wafer(args: &[&str]) -> Output {
    wafer_in(None, args)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), out(o), err(o));
    out(o)
}

/// Exits with `code`, its message holds every needle, and nothing panicked.
fn fails(o: &Output, code: i32, needles: &[&str]) -> String {
    let e = err(o);
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {e}", out(o));
    for n in needles {
        assert!(e.contains(n), "`{n}` missing from: {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
    e
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const TINY: &str = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}"#;

/// A folder with the tiny model's config.json.
fn tiny(dir: &Path) -> PathBuf {
    let f = dir.join("tiny.json");
    std::fs::write(&f, TINY).unwrap();
    f
}

/// `wafer run` of the tiny model on a small mesh (fast), plus `extra` flags.
fn run_tiny(cwd: Option<&Path>, model: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--model", p(model), "--arch", "mesh:32x32", "--context", "16", "--no-gpu"];
    args.extend_from_slice(extra);
    wafer_in(cwd, &args)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

// ---- outcomes are read ----

#[test]
fn a_deadlocked_program_is_an_error_naming_the_blocked_regions_and_routes_with_either_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let prog = tmp.path().join("tiny.wafer");
    ok(&wafer(&["compile", "--model", p(&model), "--arch", "mesh:32x32", "--context", "16", "-o", p(&prog)]));
    let text = std::fs::read_to_string(&prog).unwrap();
    let line = text.lines().find(|l| l.starts_with("r0 ")).unwrap();
    assert!(line.contains(" active=1 "), "{line}");
    let dead = tmp.path().join("dead.wafer");
    std::fs::write(&dead, text.replacen(line, &line.replace(" active=1 ", " active=0 "), 1)).unwrap();
    for engine in ["event", "analytical"] {
        for format in ["text", "json"] {
            let o = wafer(&["simulate", p(&dead), "--engine", engine, "--format", format]);
            fails(&o, 1, &["dead.wafer", engine, "deadlocked", "no latency", "`l0.", "rt0", "inactive r0 `embed`"]);
            assert!(out(&o).is_empty(), "no figure is printed: {}", out(&o));
        }
    }
    ok(&wafer(&["simulate", p(&prog)]));
}

#[test]
fn routers_without_multicast_finish_near_the_analytical_engine_and_slower_than_with_multicast() {
    let tmp = tempfile::tempdir().unwrap();
    let mut arch = wafer_ir::arch_preset("wse3").unwrap();
    arch.name = "wse3-unicast".into();
    arch.router.multicast = false;
    let file = tmp.path().join("unicast.toml");
    std::fs::write(&file, arch.to_toml()).unwrap();
    let tpot = |arch: &str, engine: &str| -> f64 {
        let args = ["run", "--model", "gpt2", "--context", "512", "--arch", arch, "--no-gpu", "--engine", engine];
        let v: serde_json::Value =
            serde_json::from_str(&ok(&wafer(&[&args[..], &["--format", "json"]].concat()))).unwrap();
        assert_eq!(v["simulation"]["outcome"]["status"], "finished");
        assert!(v["breakdown"]["compute_cycles"].as_f64().unwrap() > 0.0, "a real breakdown, not zeros");
        v["tpot_us"].as_f64().unwrap()
    };
    let (event, analytical) = (tpot(p(&file), "event"), tpot(p(&file), "analytical"));
    assert!((event / analytical - 1.0).abs() <= 0.15, "event {event} us vs analytical {analytical} us");
    let with_multicast = tpot("wse3", "event");
    assert!(event > with_multicast, "unicast {event} us, multicast {with_multicast} us");
}

// ---- safe folders ----

#[test]
fn out_names_the_same_folder_however_it_is_spelled_even_from_inside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let report = tmp.path().join("report");
    ok(&run_tiny(None, &model, &["--out", p(&report)]));
    let first = std::fs::read_to_string(report.join("report.json")).unwrap();
    // From inside the folder, replacing it by a relative path through its parent.
    let o = run_tiny(Some(&report), &model, &["--out", "../report", "--force", "--timings"]);
    ok(&o);
    let second = std::fs::read_to_string(report.join("report.json")).unwrap();
    assert_ne!(first, second, "the new report (with timings) is in place");
    assert!(second.contains("\"timings\""));
    assert_eq!(names(tmp.path()), vec!["report", "tiny.json"], "no hidden folder is left behind");
}

#[test]
fn force_replaces_only_a_folder_wafer_wrote_or_an_empty_one() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    // A folder of the user's own: refused, with or without --force, and left as it was.
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(mine.join("sub")).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    for force in [&[][..], &["--force"][..]] {
        let o = run_tiny(None, &model, &[&["--out", p(&mine)][..], force].concat());
        fails(&o, 2, &["is not a wafer report folder", "notes.txt", "sub/", "--force replaces only"]);
    }
    assert_eq!(std::fs::read_to_string(mine.join("notes.txt")).unwrap(), "keep me");
    assert_eq!(names(&mine), vec!["notes.txt", "sub"]);
    // A report folder a user added a file to is not wafer's alone any more.
    let report = tmp.path().join("report");
    ok(&run_tiny(None, &model, &["--out", p(&report)]));
    fails(&run_tiny(None, &model, &["--out", p(&report)]), 2, &["holds a wafer report", "--force"]);
    std::fs::write(report.join("todo.txt"), "mine").unwrap();
    fails(&run_tiny(None, &model, &["--out", p(&report), "--force"]), 2, &["todo.txt"]);
    std::fs::remove_file(report.join("todo.txt")).unwrap();
    ok(&run_tiny(None, &model, &["--out", p(&report), "--force"]));
    // A report.json without a schema_version is not a wafer report.
    let fake = tmp.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(fake.join("report.json"), "{\"mine\": true}").unwrap();
    fails(
        &run_tiny(None, &model, &["--out", p(&fake), "--force"]),
        2,
        &["no report.json, sweep.json, frontier.json or roundtrip.json with a schema_version"],
    );
    // A file is never replaced; an empty folder is, without --force.
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    fails(&run_tiny(None, &model, &["--out", p(&file), "--force"]), 2, &["is not a folder"]);
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(&run_tiny(None, &model, &["--out", p(&empty)]));
    assert!(empty.join("report.json").exists());
}

#[test]
fn a_sweep_folder_is_replaced_with_force_and_its_marker_is_sweep_json() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let spec = tmp.path().join("s.toml");
    std::fs::write(&spec, format!("models = [{:?}]\narchs = [\"mesh:32x32\"]\ncontexts = [8, 16]\n", p(&model)))
        .unwrap();
    let dir = tmp.path().join("sw");
    ok(&wafer(&["sweep", p(&spec), "--out", p(&dir)]));
    fails(&wafer(&["sweep", p(&spec), "--out", p(&dir)]), 2, &["holds a wafer report (sweep.json)"]);
    ok(&wafer(&["sweep", p(&spec), "--out", p(&dir), "--force"]));
    // A run report may not land on a sweep folder unasked either.
    fails(&run_tiny(None, &model, &["--out", p(&dir)]), 2, &["--force"]);
}

#[cfg(unix)]
#[test]
fn written_files_and_folders_get_the_umask_mode() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let sh = |cmd: String| {
        let o = Command::new("sh").arg("-c").arg(format!("umask 027 && {cmd}")).output().unwrap();
        ok(&o);
    };
    let bin = env!("CARGO_BIN_EXE_wafer");
    let m = p(&model);
    let t = tmp.path();
    sh(format!("{bin} compile --model {m} --arch mesh:32x32 --context 16 -o {}/p.wafer", p(t)));
    sh(format!("{bin} trace --model {m} --arch mesh:32x32 --context 16 -o {}/t.json", p(t)));
    sh(format!("{bin} run --model {m} --arch mesh:32x32 --context 16 --no-gpu --out {}/rep", p(t)));
    let base = t.join("b.toml");
    std::fs::write(&base, format!("[[case]]\nmodel = {:?}\narch = \"mesh:32x32\"\ncontext = 16\n", m)).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o604)).unwrap();
    sh(format!("{bin} check --baseline {} --update", p(&base)));
    let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&t.join("p.wafer")), 0o640, "compile -o");
    assert_eq!(mode(&t.join("t.json")), 0o640, "trace -o");
    assert_eq!(mode(&t.join("rep")), 0o750, "the report folder");
    assert_eq!(mode(&t.join("rep/report.json")), 0o640, "a report file");
    assert_eq!(mode(&base), 0o604, "check --update keeps the baseline's own mode");
}

// ---- early validation ----

#[test]
fn every_flag_is_checked_before_the_compile_starts() {
    let tmp = tempfile::tempdir().unwrap();
    // llama-3.1-70b on one wafer does not fit: an error from the compiler. Each
    // bad flag below must be reported instead, so it was checked first.
    let big = ["--model", "llama-3.1-70b", "--wafers", "1"];
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["run", "--gpu", "V100"], vec!["unknown GPU `V100`"]),
        (vec!["run", "--gpus", "3000"], vec!["--gpus", "3000 is out of range; allowed 1..=1024"]),
        (vec!["run", "--out", p(&file), "--force"], vec!["file.txt", "is not a folder"]),
        (vec!["compare", "--gpu", "nope.toml"], vec!["cannot read GPU spec nope.toml"]),
        (vec!["compare", "--engine", "functional"], vec!["--engine functional"]),
        (vec!["trace", "--engine", "functional"], vec!["--engine functional"]),
        (vec!["trace", "-o", "/no/such/folder/t.json"], vec!["cannot write /no/such/folder/t.json", "does not exist"]),
        (vec!["compile", "-o", p(tmp.path())], vec!["it is a folder"]),
        (vec!["run", "--engine", "functional", "--out", "x"], vec!["leave out --out"]),
        (vec!["run", "--weight-dtype", "int3"], vec!["int3"]),
        (vec!["run", "--act-dtype", "int4"], vec!["activation dtype is int4"]),
    ];
    for (args, needles) in cases {
        fails(&wafer(&[&args[..], &big[..]].concat()), 2, &needles);
    }
    let spec = tmp.path().join("s.toml");
    std::fs::write(&spec, "models = [\"gpt2\"]\n").unwrap();
    fails(&wafer(&["sweep", p(&spec), "--engine", "functional"]), 2, &["--engine functional"]);
    fails(&wafer(&["sweep", p(&spec), "--out", p(&file), "--force"]), 2, &["is not a folder"]);
    let base = tmp.path().join("b.toml");
    std::fs::write(&base, "[[case]]\nmodel = \"gpt2\"\ncontext = 8\nengine = \"functional\"\n").unwrap();
    fails(&wafer(&["check", "--baseline", p(&base), "--update"]), 2, &["b.toml", "case[0]", "`engine`", "functional"]);
}

#[test]
fn negative_numbers_get_a_message_naming_the_flag_and_its_range() {
    for (args, needles) in [
        (vec!["graph", "--context", "-1"], vec!["--context", "-1 is negative; allowed 1..="]),
        (vec!["graph", "-c", "-1"], vec!["--context", "-1 is negative"]),
        (vec!["graph", "--batch", "-2"], vec!["--batch", "-2 is negative; allowed 1..=65536"]),
        (vec!["run", "--gpus", "-1"], vec!["--gpus", "-1 is negative; allowed 1..=1024"]),
        (vec!["gpu", "--gpus", "-8"], vec!["--gpus", "-8 is negative"]),
        (vec!["run", "--steps", "-3"], vec!["--steps", "-3 is negative; allowed 1..=1024"]),
        (vec!["compare", "--tokens", "-5"], vec!["--tokens", "-5 is negative"]),
        (vec!["run", "--wafers", "-1"], vec!["--wafers is `-1`; allowed: 1..=10000 or auto"]),
        (vec!["sweep", "s.toml", "--shard", "-1/4"], vec!["--shard is `-1/4`"]),
        (
            vec!["check", "--baseline", "ci/baseline.toml", "--tolerance", "-1"],
            vec!["--tolerance is -1; allowed: 0..=100"],
        ),
        (vec!["graph", "--context", "99999999999999999999999999999999999999999"], vec!["is out of range"]),
        (vec!["graph", "--context", "1e3"], vec!["`1e3` is not a whole number"]),
    ] {
        let e = fails(&wafer(&args), 2, &needles);
        assert!(!e.contains("unexpected argument"), "{args:?}: {e}");
    }
}

// ---- check --update ----

#[test]
fn check_update_starts_a_baseline_from_a_list_of_cases_and_keeps_its_comments() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let m = p(&model);
    let base = tmp.path().join("baseline.toml");
    let text = format!(
        "# Our gate: tiny model, two contexts.\ntolerance_pct = 0.5 # tight\n\n\
         [[case]] # short\nmodel = {m:?}\narch = \"mesh:32x32\"\ncontext = 8\n\n\
         # the long one\n[[case]]\nmodel = {m:?}\narch = \"mesh:32x32\"\ncontext = 32\n"
    );
    std::fs::write(&base, &text).unwrap();
    // Checking needs figures; the message says how to record them.
    fails(
        &wafer(&["check", "--baseline", p(&base)]),
        2,
        &["baseline.toml", "case[0]", "records no figure", "--update"],
    );
    assert!(ok(&wafer(&["check", "--baseline", p(&base), "--update"])).contains("recorded 2 case(s)"));
    let fresh = std::fs::read_to_string(&base).unwrap();
    for kept in
        ["# Our gate: tiny model, two contexts.", "tolerance_pct = 0.5 # tight", "[[case]] # short", "# the long one"]
    {
        assert!(fresh.contains(kept), "lost `{kept}`:\n{fresh}");
    }
    assert_eq!(fresh.matches("[case.expect]").count(), 2, "{fresh}");
    assert!(
        fresh.find("[case.expect]").unwrap() < fresh.find("# the long one").unwrap(),
        "each expect follows its case"
    );
    assert!(ok(&wafer(&["check", "--baseline", p(&base)])).contains("all 10 figures within 0.5%"));
    // A second update changes nothing when nothing moved.
    ok(&wafer(&["check", "--baseline", p(&base), "--update"]));
    assert_eq!(std::fs::read_to_string(&base).unwrap(), fresh);
}

// ---- smaller semantics ----

#[test]
fn zero_steps_is_an_error_and_the_functional_engine_checks_the_contexts_up_to_context() {
    let tmp = tempfile::tempdir().unwrap();
    fails(
        &wafer(&["run", "--engine", "functional", "--steps", "0"]),
        2,
        &["--steps", "0 is out of range; allowed 1..="],
    );
    // A sliding window of 4 positions: at contexts 11 and 12 the window's ring has wrapped.
    let cfg = tmp.path().join("mistral.json");
    std::fs::write(
        &cfg,
        r#"{"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "sliding_window": 4,
            "max_position_embeddings": 4096}"#,
    )
    .unwrap();
    for (context, want) in [("12", vec![11, 12]), ("1", vec![1])] {
        let args = ["run", "--engine", "functional", "--model", p(&cfg), "--arch", "mesh:32x32", "--format", "json"];
        let more = ["--context", context, "--steps", "2"];
        let v: serde_json::Value = serde_json::from_str(&ok(&wafer(&[&args[..], &more[..]].concat()))).unwrap();
        let got: Vec<u64> = v["steps"].as_array().unwrap().iter().map(|s| s["context"].as_u64().unwrap()).collect();
        assert_eq!(got, want);
        assert!(v["max_rel_err"].as_f64().unwrap() <= 1e-4, "{v}");
    }
}

#[test]
fn an_empty_sweep_spec_names_what_is_missing_and_a_sweep_whose_every_point_fails_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("empty.toml");
    std::fs::write(&spec, "# nothing yet\nname = \"draft\"\n").unwrap();
    fails(&wafer(&["sweep", p(&spec)]), 2, &["empty.toml", "names nothing to sweep", "`models`", "`[arch]`"]);
    // gpt2 knows 1024 positions: every point fails, and the folder is not written.
    std::fs::write(&spec, "models = [\"gpt2\"]\ncontexts = [2048, 4096]\n").unwrap();
    let dir = tmp.path().join("sw");
    let e = fails(
        &wafer(&["sweep", p(&spec), "--out", p(&dir)]),
        1,
        &["every one of the 2 point(s) failed", "nothing was written"],
    );
    assert!(e.contains("#0") && e.contains("#1") && e.contains("1024"), "{e}");
    assert!(!dir.exists());
}

//! `report.json` is what its documented schema (`reports/schema/report.schema.json`,
//! JSON Schema 2020-12) says: every key present, typed and described, none
//! undocumented.
//!
//! The validator here is a small interpreter of the keywords that schema uses
//! (`type`, `properties`, `required`, `additionalProperties`, `items`, `enum`,
//! `const`, `minimum`, `oneOf`, local `$ref`); any other keyword fails the test,
//! so the schema cannot drift into features nothing checks. (The `jsonschema`
//! crate would pull in a regex engine and an HTTP client's worth of
//! dependencies for these ten keywords, and it is not in this build's offline
//! registry.)

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const KNOWN: [&str; 15] = [
    "$schema",
    "$id",
    "$defs",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "oneOf",
    "$ref",
];

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_u64() || v.is_i64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("schema uses unknown type {other:?}"),
    }
}

/// Every way `v` breaks `schema` (at JSON path `at`), appended to `errs`.
fn check(root: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let Some(s) = schema.as_object() else { panic!("schema at {at} is not an object") };
    for k in s.keys() {
        assert!(KNOWN.contains(&k.as_str()), "schema at {at} uses unsupported keyword {k:?}");
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("only local $refs: {r}"));
        check(root, &root["$defs"][name], v, at, errs);
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().expect("type name"), v)),
            _ => panic!("bad type at {at}"),
        };
        if !ok {
            errs.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(c) = s.get("const") {
        if v != c {
            errs.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if let (Some(m), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < m {
            errs.push(format!("{at}: {x} is below {m}"));
        }
    }
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let passing = alts
            .iter()
            .filter(|a| {
                let mut e = Vec::new();
                check(root, a, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if passing != 1 {
            let mut why = Vec::new();
            for a in alts {
                check(root, a, v, at, &mut why);
            }
            errs.push(format!("{at}: {passing} of the oneOf alternatives match: {}", why.join("; ")));
        }
    }
    if let Some(o) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for k in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            let k = k.as_str().expect("required key");
            if !o.contains_key(k) {
                errs.push(format!("{at}: missing required key {k:?}"));
            }
        }
        for (k, x) in o {
            let path = format!("{at}.{k}");
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(ps), _) => check(root, ps, x, &path, errs),
                (None, Some(Value::Bool(false))) => errs.push(format!("{path}: key not in the schema")),
                (None, Some(extra @ Value::Object(_))) => check(root, extra, x, &path, errs),
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(a)) = (s.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            check(root, items, x, &format!("{at}[{i}]"), errs);
        }
    }
}

fn schema() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/schema/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("schema file")).expect("schema is JSON")
}

fn violations(v: &Value) -> Vec<String> {
    let s = schema();
    let mut errs = Vec::new();
    check(&s, &s, v, "$", &mut errs);
    errs
}

fn run_json(args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().expect("run wafer");
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

#[test]
fn report_json_validates_against_its_documented_schema() {
    // With a GPU baseline (every optional object present), written as a report folder.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["run", "--model", "gpt2", "--context", "256", "--out", out.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(violations(&file), Vec::<String>::new());
    assert_eq!(file["schema_version"], wafer_reports::run::SCHEMA_VERSION);
    assert!(
        file["energy"]["wafer"]["joules_per_token"].is_number() && file["energy"]["gpu"]["usd_per_mtok"].is_number()
    );

    // Without one (gpu, gpu_calibration and comparison null), analytical, two wafers, with --timings.
    let bare = run_json(&[
        "run",
        "--model",
        "llama-3.2-1b",
        "--wafers",
        "2",
        "--context",
        "512",
        "--engine",
        "analytical",
        "--no-gpu",
        "--timings",
        "--format",
        "json",
    ]);
    assert!(bare["gpu"].is_null() && bare["comparison"].is_null() && bare["timings"].is_object());
    assert!(bare["energy"]["gpu"].is_null() && bare["energy"]["wafer"]["power"].is_object());
    assert_eq!(violations(&bare), Vec::<String>::new());

    // Speculative decoding, both sides.
    let spec = run_json(&[
        "run",
        "--model",
        "llama-3.2-1b",
        "--context",
        "512",
        "--engine",
        "analytical",
        "--draft",
        "gpt2",
        "--spec-k",
        "4",
        "--accept",
        "0.8",
        "--format",
        "json",
    ]);
    assert!(spec["speculative"]["wafer"].is_object() && spec["speculative"]["gpu"].is_object());
    assert_eq!(violations(&spec), Vec::<String>::new());
    // Users in flight: the closed form, the replay and the event engine's steady state.
    let users = run_json(&[
        "run",
        "--model",
        "gpt2",
        "--context",
        "128",
        "--strategy",
        "pipeline",
        "--engine",
        "event",
        "--users",
        "4",
        "--no-gpu",
        "--format",
        "json",
    ]);
    assert!(users["users"]["replay"].is_object() && users["users"]["event"].is_object(), "{}", users["users"]);
    assert_eq!(violations(&users), Vec::<String>::new());
}

#[test]
fn the_validator_catches_what_the_schema_forbids() {
    let mut v = run_json(&["run", "--model", "gpt2", "--context", "64", "--engine", "analytical", "--format", "json"]);
    assert_eq!(violations(&v), Vec::<String>::new());
    v["tpot_us"] = Value::from("fast");
    v["breakdown"].as_object_mut().unwrap().remove("wait_cycles");
    v["simulation"]["regions"][0]["start"] = Value::from(0.0);
    v["gpu"]["bound"] = Value::from("vibes");
    let errs = violations(&v).join("\n");
    for needle in [
        "$.tpot_us: \"fast\" is not of type",
        "$.breakdown: missing required key \"wait_cycles\"",
        "$.simulation.regions[0].start: key not in the schema",
        "\"vibes\" is not one of",
    ] {
        assert!(errs.contains(needle), "{needle} not in:\n{errs}");
    }
}

#[test]
fn the_schema_documents_every_key_with_its_meaning_and_the_change_log_names_this_version() {
    // Every number carries its unit in its name or a description saying it.
    fn walk(s: &Value, at: &str, bare: &mut Vec<String>) {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                let unit_in_name = ["_cycles", "_us", "_ms", "_bytes", "_per_gpu", "_ghz", "_pct", "_per_s"]
                    .iter()
                    .any(|u| k.ends_with(u));
                let described = p.get("description").is_some() || p.get("$ref").is_some();
                if p.get("type").is_some_and(|t| t == "number") && !unit_in_name && !described {
                    bare.push(format!("{at}.{k}"));
                }
                walk(p, &format!("{at}.{k}"), bare);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(x) = s.get(key).filter(|x| x.is_object()) {
                walk(x, &format!("{at}[]"), bare);
            }
        }
        for alt in s.get("oneOf").and_then(Value::as_array).into_iter().flatten() {
            walk(alt, at, bare);
        }
        for (k, d) in s.get("$defs").and_then(Value::as_object).into_iter().flatten() {
            walk(d, &format!("$defs.{k}"), bare);
        }
    }
    let s = schema();
    let mut bare = Vec::new();
    walk(&s, "$", &mut bare);
    assert!(bare.is_empty(), "numbers with neither a unit in the name nor a description: {bare:?}");
    let log = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/schema/README.md")).unwrap();
    let version = wafer_reports::run::SCHEMA_VERSION;
    assert!(
        log.contains(&format!("## Version {version}")),
        "reports/schema/README.md has no entry for version {version}"
    );
    assert_eq!(s["properties"]["schema_version"]["const"], version);
}

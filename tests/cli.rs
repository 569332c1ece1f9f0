//! The `wafer` binary: happy paths print what users need; bad input gets a
//! clear message naming the file and field, a non-zero exit, never a panic.

use std::process::{Command, Output};

fn wafer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().expect("run wafer")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const GOOD: &str = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}"#;

/// `GOOD` with one field replaced (or removed when `value` is None).
fn with_field(field: &str, value: Option<&str>) -> String {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    let o = v.as_object_mut().unwrap();
    match value {
        Some(x) => {
            o.insert(field.into(), serde_json::from_str(x).unwrap());
        }
        None => {
            o.remove(field);
        }
    }
    v.to_string()
}

#[test]
fn models_lists_every_preset_and_alias() {
    let o = wafer(&["models"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for name in wafer_workloads::preset_names() {
        assert!(out.contains(name), "missing {name}");
    }
    let json: serde_json::Value = serde_json::from_slice(&wafer(&["models", "--format", "json"]).stdout).unwrap();
    let first = &json.as_array().unwrap()[0];
    assert!(first["params_total"].is_u64() && first["kv_bytes_per_token_16bit"].is_u64());
}

#[test]
fn graph_json_carries_the_headline_numbers_as_numbers() {
    let o = wafer(&["graph", "--model", "llama-3.1-8b", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["params_total", "params_active", "weight_bytes", "kv_bytes_per_token", "flops_per_token"] {
        assert!(v[key].is_u64(), "{key} should be a number: {}", v[key]);
    }
    assert_eq!(v["params_total"], 8_030_261_248u64);
    assert_eq!(v["kv_bytes_per_token"], 131_072u64);
}

#[test]
fn graph_reads_a_config_file_and_dumps_the_ir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, GOOD).unwrap();
    let o = wafer(&["graph", "--model", path.to_str().unwrap(), "--dump", "--context", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("graph \""), "{out}");
    assert!(out.contains("l1.attn.scores"));
    // A folder holding config.json works too.
    let o = wafer(&["graph", "--model", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_input_is_a_clear_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // (case, config text or None for a missing file, extra flags, what the message must say)
    type Case<'a> = (&'a str, Option<String>, Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        ("unreadable file", None, vec![], vec!["cannot read model config", "missing.json"]),
        ("malformed JSON", Some(r#"{"model_type": "llama", "#.into()), vec![], vec!["not valid JSON", "bad.json"]),
        ("top level not an object", Some("[1, 2]".into()), vec![], vec!["expected a JSON object"]),
        ("missing field", Some(with_field("hidden_size", None)), vec![], vec!["missing field `hidden_size`"]),
        (
            "zero field",
            Some(with_field("num_hidden_layers", Some("0"))),
            vec![],
            vec!["`num_hidden_layers` is 0", "an integer in 1..=10000"],
        ),
        (
            "negative field",
            Some(with_field("vocab_size", Some("-5"))),
            vec![],
            vec!["`vocab_size` is -5", "an integer in 1..="],
        ),
        ("fractional field", Some(with_field("hidden_size", Some("64.5"))), vec![], vec!["`hidden_size` is 64.5"]),
        (
            "string field",
            Some(with_field("intermediate_size", Some("\"big\""))),
            vec![],
            vec!["`intermediate_size` is \"big\""],
        ),
        (
            "heads not dividing hidden",
            Some(with_field("num_attention_heads", Some("3"))),
            vec![],
            vec!["num_attention_heads (3) does not divide hidden_size (64)", "no head_dim"],
        ),
        (
            "kv heads not dividing heads",
            Some(with_field("num_key_value_heads", Some("3"))),
            vec![],
            vec!["num_key_value_heads (3) does not divide num_attention_heads (4)"],
        ),
        (
            "unknown model_type",
            Some(with_field("model_type", Some("\"bert\""))),
            vec![],
            vec!["unknown model_type `bert`", "llama, mistral, mixtral, qwen2, qwen3, gemma2, phi3, gpt2, gptj"],
        ),
        ("missing model_type", Some(with_field("model_type", None)), vec![], vec!["missing field `model_type`"]),
        (
            "bad boolean",
            Some(with_field("tie_word_embeddings", Some("\"yes\""))),
            vec![],
            vec!["`tie_word_embeddings`", "true or false"],
        ),
        ("context 0", Some(GOOD.into()), vec!["--context", "0"], vec!["--context", "0 is out of range", "1..="]),
        ("batch 0", Some(GOOD.into()), vec!["--batch", "0"], vec!["--batch", "0 is out of range", "1..="]),
        ("int4 activations", Some(GOOD.into()), vec!["--act-dtype", "int4"], vec!["activation dtype is int4"]),
        ("unknown dtype", Some(GOOD.into()), vec!["--weight-dtype", "int3"], vec!["unknown dtype `int3`"]),
    ];
    for (i, (case, text, flags, needles)) in cases.into_iter().enumerate() {
        let name = match case {
            "unreadable file" => "missing.json".to_string(),
            "malformed JSON" => "bad.json".to_string(),
            _ => format!("case{i}.json"),
        };
        let path = dir.path().join(&name);
        if let Some(t) = &text {
            std::fs::write(&path, t).unwrap();
        }
        let mut args = vec!["graph", "--model", path.to_str().unwrap()];
        args.extend(flags);
        let o = wafer(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{case}: exit code; stderr: {err}");
        assert!(!err.contains("panicked"), "{case}: panicked: {err}");
        for n in needles {
            assert!(err.contains(n), "{case}: `{err}` lacks `{n}`");
        }
    }
}

#[test]
fn unknown_preset_lists_the_presets() {
    let o = wafer(&["graph", "--model", "llama-9"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("unknown model `llama-9`") && err.contains("llama-3.1-8b"), "{err}");
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["graph", "--model", "llama-3.1-70b", "--dump"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take()); // the reader goes away, like `| head`
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

//! Fuzzing of every textual input (issue 9): mutants of a real `.wafer`
//! program, real `config.json` files, an arch TOML and a sweep spec go
//! through the same library calls the CLI makes, with a small memory budget.
//! Each must end in a value or an error naming its source — never a panic,
//! never an allocation beyond the budget (the engines refuse first), never a
//! run beyond a time guard. A last property runs the binary itself.
//!
//! Mutations are driven by proptest-generated operation lists (most nudge a
//! number, so mutants get past the parser into the verifier and engines).
//! 28,128 executions in all (10,000 programs, 10,000 configs, 4,000 arch specs,
//! 4,000 sweep specs, 128 runs of the binary): about 6 s in release mode on 2 cores.

use proptest::prelude::*;
use std::path::Path;
use std::time::{Duration, Instant};
use wafer_compiler::{compile, CompileOptions, Wafers};
use wafer_ir::{arch_preset, graph_stats, parse_program, route_message_bound, verify_graph, verify_program, ArchSpec};
use wafer_reports::sweep::SweepSpec;
use wafer_simulator::{estimate_event, simulate_analytical, try_simulate_event, EventLimits};
use wafer_workloads::{decode_graph, parse_hf_config, DecodeParams};

/// What a fuzzed library call may plan to allocate.
const BUDGET: u64 = 256 << 20;
/// Generous wall-clock guard per case (not a performance target).
const GUARD: Duration = Duration::from_secs(10);

fn corpus(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(name)).expect(name)
}

/// Values that have broken parsers before: zero, negatives, the edges of
/// integer widths, huge floats, words where numbers go, empty.
const NASTY: [&str; 16] = [
    "0",
    "1",
    "-1",
    "2",
    "4096",
    "65537",
    "4294967295",
    "4294967296",
    "1099511627776",
    "18446744073709551615",
    "18446744073709551616",
    "1e-300",
    "1e300",
    "NaN",
    "x",
    "",
];

fn nasty(pick: u64, random: u64) -> String {
    match pick % 20 {
        i @ 0..=15 => NASTY[i as usize].to_string(),
        16 => random.to_string(),
        17 => (random % 100_000).to_string(),
        18 => format!("{}", (random % 1000) as f64 / 7.0),
        _ => (random >> (random % 64)).to_string(),
    }
}

/// A plausible neighbour of the number `v`: off by one, doubled, halved, zero.
fn nudge(v: &str, r: u64) -> String {
    match v.parse::<u64>() {
        Ok(n) => match r % 5 {
            0 => n.saturating_add(1),
            1 => n.saturating_sub(1),
            2 => n.saturating_mul(2),
            3 => n / 2,
            _ => n.saturating_mul(1 + r % 1000),
        }
        .to_string(),
        Err(_) => v.to_string(),
    }
}

/// Applies `ops` to the `key=value` tokens and lines of a textual program.
fn mutate_program(text: &str, ops: &[(u8, u64, u64)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for &(kind, a, b) in ops {
        if lines.is_empty() {
            break;
        }
        let li = (a % lines.len() as u64) as usize;
        let mut toks: Vec<String> = lines[li].split(' ').map(str::to_string).collect();
        let ti = (b % toks.len() as u64) as usize;
        match kind % 13 {
            // Nudge a number: most mutants stay parseable and reach the verifier and engines.
            8..=12 => {
                if let Some((k, v)) = toks[ti].clone().split_once('=') {
                    toks[ti] = format!("{k}={}", nudge(v, a >> 8));
                }
            }
            // Replace a value (of a key=value token), or a positional token.
            0..=2 => {
                let v = nasty(a >> 8, b >> 8);
                toks[ti] = match toks[ti].split_once('=') {
                    Some((k, _)) => format!("{k}={v}"),
                    None => v,
                };
            }
            // Replace one number inside a compound value (rect, sram, steps, mesh, reduce).
            3 => {
                let v = nasty(a >> 8, b >> 8);
                if let Some(pos) = toks[ti].rfind(|c: char| c.is_ascii_digit()) {
                    let start = toks[ti][..=pos].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
                    toks[ti].replace_range(start..=pos, &v);
                }
            }
            4 => {
                let t = toks[ti].clone();
                toks.push(t);
            }
            5 => {
                toks.remove(ti);
            }
            6 => {
                let l = lines[li].clone();
                lines.insert((b % lines.len() as u64) as usize, l);
                continue;
            }
            _ => {
                lines.remove(li);
                continue;
            }
        }
        lines[li] = toks.join(" ");
    }
    lines.join("\n")
}

static SIMULATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The library path of `wafer simulate`: parse, verify, refuse above the budget, time.
fn simulate_text(text: &str) {
    let Ok(p) = parse_program(text) else { return };
    let Ok(info) = verify_program(&p) else { return };
    // The verifier's O(1) bound really bounds the messages it counted.
    let bound = p.routes.iter().map(|rt| route_message_bound(&p, rt)).fold(0u64, u64::saturating_add);
    assert!(bound >= info.messages, "bound {bound} < {} messages", info.messages);
    let limits = EventLimits { max_memory_bytes: BUDGET, max_events: 1 << 20, ..Default::default() };
    if try_simulate_event(&p, &info, &limits).is_ok() {
        SIMULATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The analytical engine's memory is bounded by the same program size.
        assert!(estimate_event(&p, &info).bytes <= BUDGET);
        let r = simulate_analytical(&p, &info);
        assert!(r.cycles.is_finite());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn mutated_programs_parse_verify_and_simulate_or_fail_cleanly(
        ops in prop::collection::vec((any::<u8>(), any::<u64>(), any::<u64>()), 1..4),
    ) {
        let text = mutate_program(&corpus("tiny.wafer"), &ops);
        let t = Instant::now();
        simulate_text(&text);
        prop_assert!(t.elapsed() < GUARD, "took {:?}", t.elapsed());
    }
}

/// Real configs: the corpus's tiny llama and three presets' own files.
fn base_configs() -> Vec<String> {
    let presets = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/presets");
    let mut v = vec![corpus("tiny.json")];
    for f in ["gpt2.json", "mixtral-8x7b.json", "llama-3.2-1b.json"] {
        v.push(std::fs::read_to_string(presets.join(f)).expect(f));
    }
    v
}

const JSON_NASTY: [&str; 14] = [
    "0",
    "-1",
    "1",
    "1.5",
    "1e300",
    "1e-300",
    "1099511627776",
    "18446744073709551616",
    "\"8\"",
    "null",
    "true",
    "[]",
    "{}",
    "123",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 10000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn mutated_configs_build_a_graph_or_name_the_field(
        base in 0usize..4,
        ops in prop::collection::vec((any::<u8>(), any::<u64>()), 1..5),
        context in 1u64..=8192,
        batch in 1u64..=64,
    ) {
        let mut v: serde_json::Value = serde_json::from_str(&base_configs()[base]).unwrap();
        let obj = v.as_object_mut().unwrap();
        let keys: Vec<String> = obj.keys().cloned().collect();
        for &(kind, r) in &ops {
            let k = &keys[(r % keys.len() as u64) as usize];
            match kind % 6 {
                // Nudge a number: most mutants still describe a model.
                4 | 5 => {
                    if let Some(n) = obj.get(k).and_then(serde_json::Value::as_u64) {
                        obj.insert(k.clone(), serde_json::Value::from(nudge(&n.to_string(), r >> 8).parse::<u64>().unwrap()));
                    }
                }
                0 | 1 => {
                    obj.insert(k.clone(), serde_json::from_str(JSON_NASTY[(r >> 8) as usize % JSON_NASTY.len()]).unwrap());
                }
                2 => {
                    obj.insert(k.clone(), serde_json::Value::from(r >> (r % 64)));
                }
                _ => {
                    obj.remove(k);
                }
            }
        }
        let t = Instant::now();
        match parse_hf_config(&v.to_string(), "fuzz.json", "fuzz") {
            Err(e) => prop_assert!(e.to_string().contains("fuzz.json"), "{e}"),
            Ok(cfg) => {
                let p = DecodeParams { context, batch, ..Default::default() };
                if let Ok(g) = decode_graph(&cfg, &p) {
                    prop_assert!(verify_graph(&g).is_ok());
                    let s = graph_stats(&g);
                    prop_assert!(s.params_total <= 100_000_000_000_000);
                    if s.params_total < 2_000_000 {
                        let arch = arch_preset("mesh:32x32").unwrap();
                        let opts = CompileOptions { wafers: Wafers::Auto, max_memory_bytes: BUDGET, ..Default::default() };
                        if let Ok(c) = compile(&g, &arch, &opts) {
                            prop_assert!(verify_program(&c.program).is_ok());
                        }
                    }
                }
            }
        }
        prop_assert!(t.elapsed() < GUARD, "took {:?}", t.elapsed());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn mutated_arch_specs_validate_or_name_the_field(
        ops in prop::collection::vec((any::<u8>(), any::<u64>(), any::<u64>()), 1..4),
    ) {
        let base = arch_preset("mesh:16x16").unwrap().to_toml();
        let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
        for &(kind, a, b) in &ops {
            let i = (a % lines.len() as u64) as usize;
            let line = lines[i].clone();
            if let Some((k, _)) = line.split_once(" = ") {
                match kind % 4 {
                    3 => lines[i] = format!("{k} = {}", nudge(line.split_once(" = ").map_or("", |x| x.1), b)),
                    0 | 1 => lines[i] = format!("{k} = {}", nasty(a >> 8, b)),
                    _ => lines[i] = format!("{k}x = 1"),
                }
            }
        }
        let text = lines.join("\n");
        let t = Instant::now();
        match ArchSpec::from_toml(&text, "fuzz.toml") {
            Err(e) => prop_assert!(e.to_string().contains("fuzz.toml"), "{e}"),
            Ok(arch) => {
                prop_assert!(arch.validate("fuzz.toml").is_ok());
                if arch.pes() <= 64 * 64 {
                    let cfg = parse_hf_config(&corpus("tiny.json"), "tiny.json", "tiny").unwrap();
                    let g = decode_graph(&cfg, &DecodeParams { context: 16, ..Default::default() }).unwrap();
                    let opts = CompileOptions { wafers: Wafers::Fixed(1), max_memory_bytes: BUDGET, ..Default::default() };
                    if let Ok(c) = compile(&g, &arch, &opts) {
                        simulate_text(&wafer_ir::print_program(&c.program));
                    }
                }
            }
        }
        prop_assert!(t.elapsed() < GUARD, "took {:?}", t.elapsed());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn mutated_sweep_specs_index_their_grid_or_name_the_field(
        which in 0usize..3,
        ops in prop::collection::vec((any::<u8>(), any::<u64>(), any::<u64>()), 1..4),
        allow_large in any::<bool>(),
    ) {
        let file = ["sweep-sram.toml", "sweep-fabric.toml", "sweep-assumptions.toml"][which];
        let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(file)).unwrap();
        let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
        for &(kind, a, b) in &ops {
            let i = (a % lines.len() as u64) as usize;
            let line = lines[i].clone();
            let Some((k, _)) = line.split_once(" = ") else { continue };
            lines[i] = match kind % 4 {
                0 => format!("{k} = [{}]", nasty(a >> 8, b)),
                1 => format!("{k} = [{}]", (1..=(b % 400)).map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
                2 => format!("{k} = []"),
                _ => format!("{k} = {}", nasty(a >> 8, b)),
            };
        }
        let text = lines.join("\n");
        let t = Instant::now();
        match SweepSpec::from_toml(&text, "fuzz.toml") {
            Err(e) => prop_assert!(e.to_string().contains("fuzz.toml"), "{e}"),
            Ok(spec) => match spec.check_grid("fuzz.toml", allow_large) {
                Err(e) => prop_assert!(e.to_string().contains("fuzz.toml"), "{e}"),
                Ok(n) => {
                    let n = n as usize;
                    for i in [0, n / 2, n - 1] {
                        prop_assert_eq!(spec.point(i).index, i);
                    }
                    if n <= 2000 {
                        let all = spec.points();
                        prop_assert_eq!(all.len(), n);
                        prop_assert_eq!(&all[n - 1], &spec.point(n - 1));
                    }
                }
            },
        }
        prop_assert!(t.elapsed() < GUARD, "took {:?}", t.elapsed());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn the_binary_ends_every_mutated_program_with_a_result_or_exit_2(
        ops in prop::collection::vec((any::<u8>(), any::<u64>(), any::<u64>()), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.wafer");
        std::fs::write(&f, mutate_program(&corpus("tiny.wafer"), &ops)).unwrap();
        let t = Instant::now();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_wafer"))
            .args(["simulate", f.to_str().unwrap(), "--max-memory", "256M"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        prop_assert!(!err.contains("panicked"), "{err}");
        match o.status.code() {
            Some(0) => {}
            Some(1 | 2) => prop_assert!(err.contains("m.wafer") || err.contains("max-memory"), "{err}"),
            c => prop_assert!(false, "exit {c:?}: {err}"),
        }
        prop_assert!(t.elapsed() < GUARD, "took {:?}", t.elapsed());
    }
}

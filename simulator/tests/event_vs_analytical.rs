//! The event engine on compiled models: it agrees with the analytical engine
//! (they share every step's price and differ only by contention and per-PE
//! detail), rises with context, and is deterministic.

use wafer_compiler::{compile, CompileOptions, Compiled};
use wafer_ir::arch_preset;
use wafer_simulator::{simulate_analytical, simulate_event, EventLimits, Outcome};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn compiled(model: &str, context: u64) -> Compiled {
    let cfg = preset(model).unwrap();
    let g = decode_graph(&cfg, &DecodeParams { context, ..Default::default() }).unwrap();
    compile(&g, &arch_preset("wse3").unwrap(), &CompileOptions::default()).unwrap()
}

#[test]
fn event_and_analytical_agree_within_ten_percent_and_latency_rises_with_context() {
    for model in ["gpt2", "llama-3.2-1b"] {
        let mut last = 0.0;
        for context in [256, 1024] {
            let c = compiled(model, context);
            let e = simulate_event(&c.program, &c.info, &EventLimits::default());
            let a = simulate_analytical(&c.program, &c.info);
            assert_eq!(e.outcome, Outcome::Finished);
            let ratio = e.cycles / a.cycles;
            assert!(
                (0.9..=1.1).contains(&ratio),
                "{model} at {context}: event {} vs analytical {}",
                e.cycles,
                a.cycles
            );
            assert!((e.breakdown.total() - e.cycles).abs() < 1e-6);
            assert_eq!(e.critical_path.first().map(String::as_str), Some("embed"));
            assert!(e.cycles > last, "{model}: {} at {context} after {last}", e.cycles);
            assert!(e.link_load.max > 0.0 && e.link_load.max <= 1.0 && e.pe_busy_mean > 0.0);
            last = e.cycles;
        }
    }
}

#[test]
fn a_compiled_model_simulates_identically_twice() {
    let c = compiled("gpt2", 512);
    let a = simulate_event(&c.program, &c.info, &EventLimits::default());
    let b = simulate_event(&c.program, &c.info, &EventLimits::default());
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
}

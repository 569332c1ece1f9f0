//! The analytical engine reports the cost crate's program-level closed form
//! (`wafer_cost::estimate`), and the compiler's estimates — the chosen
//! program's and every alternative `auto` weighed — are that same figure.

use wafer_compiler::{compile, CompileOptions, Compiled, Strategy};
use wafer_ir::arch_preset;
use wafer_simulator::simulate_analytical;
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn compiled(strategy: Strategy) -> Compiled {
    let g = decode_graph(&preset("gpt2").unwrap(), &DecodeParams { context: 512, ..Default::default() }).unwrap();
    let opts = CompileOptions { strategy, ..Default::default() };
    compile(&g, &arch_preset("wse3").unwrap(), &opts).unwrap_or_else(|e| panic!("{strategy:?}: {e}"))
}

#[test]
fn the_analytical_engine_reports_the_cost_models_region_times_and_critical_path() {
    for strategy in [Strategy::Pipeline, Strategy::Spread] {
        let c = compiled(strategy);
        let est = wafer_cost::estimate(&c.program, &c.info).unwrap();
        let a = simulate_analytical(&c.program, &c.info).finished().unwrap();
        assert_eq!((a.cycles, a.tpot_us), (est.cycles, est.us), "{strategy:?}");
        let spans: Vec<(f64, f64)> = a.regions.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(spans, est.regions.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(), "{strategy:?}");
        let path: Vec<&str> = est.critical_path.iter().map(|&i| c.program.regions[i].name.as_str()).collect();
        assert_eq!(a.critical_path, path, "{strategy:?}");
        assert!(est.cycles > 0.0 && path.len() > 1, "{strategy:?}: {} cycles over {path:?}", est.cycles);
    }
}

#[test]
fn the_compilers_estimate_of_every_strategy_is_the_analytical_engines_figure() {
    let tried = [Strategy::Pipeline, Strategy::Spread, Strategy::Hybrid(4)];
    let mut alone = Vec::new();
    for strategy in tried.into_iter().chain([Strategy::Auto]) {
        let c = compiled(strategy);
        let a = simulate_analytical(&c.program, &c.info).finished().unwrap();
        assert_eq!((c.stats.estimate_cycles, c.stats.estimate_us), (a.cycles, a.tpot_us), "{strategy:?}");
        match strategy {
            Strategy::Auto => {
                // Each alternative's estimate is that strategy's program, compiled alone, on the engine.
                let weighed: Vec<(String, Option<f64>)> =
                    c.stats.alternatives.iter().map(|alt| (alt.strategy.clone(), alt.estimate_us)).collect();
                assert_eq!(weighed, alone, "auto chose {}", c.stats.strategy);
                assert!(alone.iter().any(|(s, us)| *s == c.stats.strategy && *us == Some(a.tpot_us)));
            }
            s => alone.push((s.name(), Some(a.tpot_us))),
        }
    }
}

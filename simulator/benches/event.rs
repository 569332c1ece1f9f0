//! Event engine on one decode token (context 4096) compiled onto the full
//! `wse3` mesh: llama-3.1-8b with the pipeline strategy, and llama-3.2-1b
//! with the spread strategy (every layer over one block: ~6.5 M messages).
//! The spread mapping of llama-3.1-8b sends ~74 M messages, beyond the
//! engine's memory today (issue 11 item 6), so it is not benched. Prints
//! each program's size and events/s once, then lets criterion time
//! `simulate_event`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Instant;
use wafer_compiler::{compile, CompileOptions, Compiled, Strategy};
use wafer_ir::arch_preset;
use wafer_simulator::{simulate_event, simulate_event_with_stats, EventLimits};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn compiled(model: &str, strategy: Strategy) -> Compiled {
    let cfg = preset(model).expect("preset");
    let g = decode_graph(&cfg, &DecodeParams { context: 4096, ..Default::default() }).expect("graph");
    let opts = CompileOptions { strategy, ..Default::default() };
    compile(&g, &arch_preset("wse3").expect("arch"), &opts).expect("compiles")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("event");
    g.sample_size(10);
    for (model, strategy) in [("llama-3.1-8b", Strategy::Pipeline), ("llama-3.2-1b", Strategy::Spread)] {
        let prog = compiled(model, strategy);
        let (p, info) = (&prog.program, &prog.info);
        let t = Instant::now();
        let (res, stats) = simulate_event_with_stats(p, info, &EventLimits::default());
        let dt = t.elapsed().as_secs_f64();
        eprintln!(
            "{model} ({}) on wse3: {} regions, {} PEs, {} messages, {} events, {} link crossings; {:.0} cycles ({:.1} us), {:?}; one run {:.3} s = {:.2} M events/s",
            strategy.name(),
            p.regions.len(),
            info.pes_used,
            stats.messages,
            stats.events,
            stats.link_crossings,
            res.cycles,
            res.tpot_us,
            res.outcome,
            dt,
            stats.events as f64 / dt / 1e6
        );
        g.bench_function(format!("{model} {} token on wse3", strategy.name()), |b| {
            b.iter(|| simulate_event(p, info, &EventLimits::default()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

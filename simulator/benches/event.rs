//! Event engine on one llama-3.1-8b decode token (context 4096) compiled onto
//! the full `wse3` mesh. Prints the program size and events/s once, then lets
//! criterion time `simulate_event`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Instant;
use wafer_compiler::{compile, CompileOptions, Compiled};
use wafer_ir::arch_preset;
use wafer_simulator::{simulate_event, simulate_event_with_stats, EventLimits};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn llama_8b() -> Compiled {
    let cfg = preset("llama-3.1-8b").expect("preset");
    let g = decode_graph(&cfg, &DecodeParams { context: 4096, ..Default::default() }).expect("graph");
    compile(&g, &arch_preset("wse3").expect("arch"), &CompileOptions::default()).expect("compiles")
}

fn bench(c: &mut Criterion) {
    let prog = llama_8b();
    let (p, info) = (&prog.program, &prog.info);
    let t = Instant::now();
    let (res, stats) = simulate_event_with_stats(p, info, &EventLimits::default());
    let dt = t.elapsed().as_secs_f64();
    eprintln!(
        "llama-3.1-8b on wse3: {} regions, {} PEs, {} messages, {} events, {} link crossings; {:.0} cycles ({:.1} us), {:?}; one run {:.3} s = {:.2} M events/s",
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
    let mut g = c.benchmark_group("event");
    g.sample_size(10);
    g.bench_function("llama-3.1-8b token on wse3", |b| b.iter(|| simulate_event(p, info, &EventLimits::default())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

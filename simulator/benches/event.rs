//! Event engine on one decode token (context 4096) of the issue-11 targets:
//! llama-3.1-8b with the spread strategy on one WSE-3 (every layer over one
//! block: ~58 M messages; target ≤ 2 s and ≤ 2 GB), llama-3.1-405b with the
//! pipeline strategy on its wafers (43 WSE-3, ~32 M messages; target ≤ 5 s
//! and ≤ 2 GB), and two smaller ones (llama-3.1-8b pipeline, llama-3.2-1b
//! spread). Prints each program's size, events/s and the engine's memory
//! estimate once, then lets criterion time `simulate_event` (ten samples;
//! peak RSS is measured on the CLI with `/usr/bin/time -v`).

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};
use wafer_compiler::{compile, CompileOptions, Compiled, Strategy, Wafers};
use wafer_ir::arch_preset;
use wafer_simulator::{estimate_event, simulate_event, simulate_event_with_stats, EventLimits};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn compiled(model: &str, strategy: Strategy, wafers: Wafers) -> Compiled {
    let cfg = preset(model).expect("preset");
    let g = decode_graph(&cfg, &DecodeParams { context: 4096, ..Default::default() }).expect("graph");
    let opts = CompileOptions { strategy, wafers, ..Default::default() };
    compile(&g, &arch_preset("wse3").expect("arch"), &opts).expect("compiles")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("event");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    let cases = [
        ("llama-3.1-8b", Strategy::Spread, Wafers::Fixed(1)),
        ("llama-3.1-405b", Strategy::Pipeline, Wafers::Auto),
        ("llama-3.1-8b", Strategy::Pipeline, Wafers::Fixed(1)),
        ("llama-3.2-1b", Strategy::Spread, Wafers::Fixed(1)),
    ];
    for (model, strategy, wafers) in cases {
        let prog = compiled(model, strategy, wafers);
        let (p, info) = (&prog.program, &prog.info);
        let t = Instant::now();
        let (res, stats) = simulate_event_with_stats(p, info, &EventLimits::default());
        let dt = t.elapsed().as_secs_f64();
        eprintln!(
            "{model} ({}) on {} wse3: {} regions, {} PEs, {} messages, {} events, {} link crossings; {:.0} cycles ({:.1} us), {:?}; estimate {:.0} MiB; one run {:.3} s = {:.2} M events/s",
            strategy.name(),
            p.wafers,
            p.regions.len(),
            info.pes_used,
            stats.messages,
            stats.events,
            stats.link_crossings,
            res.cycles,
            res.tpot_us,
            res.outcome,
            estimate_event(p, info).bytes as f64 / (1 << 20) as f64,
            dt,
            stats.events as f64 / dt / 1e6
        );
        g.bench_function(format!("{model} {} token on {} wse3", strategy.name(), p.wafers), |b| {
            b.iter(|| simulate_event(p, info, &EventLimits::default()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

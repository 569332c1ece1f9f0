//! The analytical engine on a compiled full-wafer program. Target (issue 4):
//! ≤ 10 ms for llama-3.1-8b on one WSE-3, so compile + analytical for one
//! sweep point stays ≤ 0.5 s on a 2-core machine.

use criterion::{criterion_group, criterion_main, Criterion};
use wafer_compiler::{compile, CompileOptions, Wafers};
use wafer_ir::arch_preset;
use wafer_simulator::simulate_analytical;
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn bench(c: &mut Criterion) {
    let g =
        decode_graph(&preset("llama-3.1-8b").unwrap(), &DecodeParams { context: 4096, ..Default::default() }).unwrap();
    let arch = arch_preset("wse3").unwrap();
    let compiled = compile(&g, &arch, &CompileOptions { wafers: Wafers::Fixed(1), ..Default::default() }).unwrap();
    let mut group = c.benchmark_group("analytical");
    group.sample_size(20);
    group.bench_function("llama-3.1-8b on wse3", |b| b.iter(|| simulate_analytical(&compiled.program, &compiled.info)));
    group.bench_function("compile + analytical, llama-3.1-8b on wse3", |b| {
        b.iter(|| {
            let c = compile(&g, &arch, &CompileOptions { wafers: Wafers::Fixed(1), ..Default::default() }).unwrap();
            simulate_analytical(&c.program, &c.info)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

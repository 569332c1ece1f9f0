//! Compile time of full-wafer programs: sweeps recompile at every design point,
//! so this is a sweep's pace. Targets (issue 3): llama-3.1-8b onto one WSE-3
//! ≤ 0.5 s median, llama-3.1-70b onto its wafers ≤ 2 s, on a 2-core machine.

use criterion::{criterion_group, criterion_main, Criterion};
use wafer_compiler::{compile, CompileOptions, Wafers};
use wafer_ir::arch_preset;
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn bench(c: &mut Criterion) {
    let arch = arch_preset("wse3").unwrap();
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for (model, wafers) in [("llama-3.1-8b", Wafers::Fixed(1)), ("llama-3.1-70b", Wafers::Auto)] {
        let g = decode_graph(&preset(model).unwrap(), &DecodeParams { context: 4096, ..Default::default() }).unwrap();
        let opts = CompileOptions { wafers, ..Default::default() };
        group.bench_function(format!("{model} onto wse3"), |b| b.iter(|| compile(&g, &arch, &opts).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

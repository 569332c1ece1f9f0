//! The gemm way to the first token on the round trip's default mapping
//! (llama-3.1-8b, pipeline, one WSE-3, 30,000 cached + 2,000 prompt + 400
//! answer positions): the search over schedules and block sizes, and the
//! block-by-block replay `run --prompt` adds. Targets on a 2-core machine:
//! the search ≤ 50 ms (it is part of every `roundtrip`, which must stay
//! under 2 s on defaults) and the replay ≤ 0.5 s (452k jobs; measured
//! 0.47 ms and 317 ms when added).

use criterion::{criterion_group, criterion_main, Criterion};
use wafer_compiler::{compile, CompileOptions, Strategy, Wafers};
use wafer_ir::arch_preset;
use wafer_simulator::{gemm_prefill, replay_gemm};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn bench(c: &mut Criterion) {
    let g = decode_graph(&preset("llama-3.1-8b").unwrap(), &DecodeParams { context: 32_400, ..Default::default() })
        .unwrap();
    let opts = CompileOptions { wafers: Wafers::Fixed(1), strategy: Strategy::Pipeline, ..Default::default() };
    let compiled = compile(&g, &arch_preset("wse3").unwrap(), &opts).unwrap();
    let (p, info) = (&compiled.program, &compiled.info);
    let (best, _) = gemm_prefill(p, info, 2000, 4096).unwrap();
    let mut group = c.benchmark_group("prefill");
    group.sample_size(10);
    group.bench_function("gemm way search, llama-3.1-8b 2000 over 30000", |b| {
        b.iter(|| gemm_prefill(p, info, 2000, 4096).unwrap())
    });
    group.bench_function("gemm way replay, llama-3.1-8b 2000 over 30000", |b| {
        b.iter(|| replay_gemm(p, info, 2000, best.chunk).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

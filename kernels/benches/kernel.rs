//! `wafer kernel gemv --grid 720` (MeshGEMV, M = N = 720, group_num 8) on WSE-3,
//! built, verified and timed by each engine. Target: event engine ≤ 0.5 s.

use criterion::{criterion_group, criterion_main, Criterion};
use wafer_ir::arch_preset;
use wafer_kernels::{time_kernel, Engine, MeshGemv};

fn bench(c: &mut Criterion) {
    let arch = arch_preset("wse3").unwrap();
    let k = MeshGemv { grid: 720, m: 720, n: 720, groups: 8, mac: true };
    let mut g = c.benchmark_group("meshgemv_720");
    g.sample_size(10);
    for engine in [Engine::Event, Engine::Analytical] {
        g.bench_function(engine.name(), |b| {
            b.iter(|| time_kernel(&k.program(&arch).unwrap(), engine, &Default::default()).unwrap().1.cycles);
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

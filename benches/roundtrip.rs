//! `wafer roundtrip` on its built-in defaults (llama-3.1-8b, 2,000 prompt
//! tokens over 30,000 cached, a 400-token answer; wse3 against one H100),
//! the whole command as a user runs it: three strategies compiled, each
//! timed, the prompt's ways searched, the GPU side priced. Target (issue
//! 12): under 2 s on a 2-core machine.

use criterion::{criterion_group, criterion_main, Criterion};
use std::process::Command;

fn bench(c: &mut Criterion) {
    let exe = env!("CARGO_BIN_EXE_wafer");
    let run = || {
        let out = Command::new(exe).args(["roundtrip", "--format", "json"]).output().expect("wafer runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout.len()
    };
    let mut group = c.benchmark_group("roundtrip");
    group.sample_size(10);
    group.bench_function("wafer roundtrip on defaults", |b| b.iter(run));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The Cannon-GEMM timing model against MeshGEMM cycle counts measured on
//! WSE-3 silicon: the acceptance bounds of the calibration (median |error| ≤
//! 10%, max ≤ 25%), the fit that sets the three constants (re-run here
//! against the presets' values), its leave-one-P-out error, and both engines'
//! agreement.

use wafer_ir::{
    arch_preset, parse_program, print_program, verify_program, GEMM_STEP_OVERHEAD_CYCLES, LOOP_ITERATION_CYCLES,
    MAPPED_OP_OVERHEAD_CYCLES,
};
use wafer_kernels::{calibrate_gemm, fit_gemm, gemm_rows, time_kernel, Engine, MeshGemm};

#[test]
fn the_embedded_rows_are_the_96_measured_configurations() {
    let rows = gemm_rows().unwrap();
    assert_eq!(rows.len(), 96);
    for r in &rows {
        let p = r.grid as u64;
        for d in [r.m, r.k, r.n] {
            assert!(d == p || d == 8 * p, "{r:?}");
        }
        assert!(r.measured_cycles > 1000.0);
    }
}

#[test]
fn both_engines_replay_the_silicon_rows_within_the_acceptance_bounds() {
    let arch = arch_preset("wse3").unwrap();
    let ev = calibrate_gemm(&arch, Engine::Event).unwrap();
    let an = calibrate_gemm(&arch, Engine::Analytical).unwrap();
    for c in [&ev, &an] {
        assert_eq!(c.rows.len(), 96);
        assert!(c.median_abs_error <= 0.10, "{:?}: median |error| {}", c.engine, c.median_abs_error);
        assert!(c.max_abs_error <= 0.25, "{:?}: max |error| {}", c.engine, c.max_abs_error);
    }
    // The event engine prices a Gemm region by the same closed form on every PE.
    for (e, a) in ev.rows.iter().zip(&an.rows) {
        assert_eq!(e.predicted_cycles, a.predicted_cycles, "{:?}", e.row);
    }
}

#[test]
fn the_fit_reproduces_the_presets_constants_and_generalises_across_grid_sizes() {
    let arch = arch_preset("wse3").unwrap();
    let f = fit_gemm(&arch, Engine::Analytical).unwrap();
    assert_eq!(f.rows, 96);
    let r = f.rounded;
    assert_eq!(
        (r.gemm_step_overhead_cycles as u32, r.loop_iteration_cycles as u32, r.mapped_op_overhead_cycles as u32),
        (GEMM_STEP_OVERHEAD_CYCLES, LOOP_ITERATION_CYCLES, MAPPED_OP_OVERHEAD_CYCLES),
        "the fit gives {:?}: update the presets and their docs",
        f.value
    );
    assert_eq!(arch.pe.loop_iteration_cycles, LOOP_ITERATION_CYCLES);
    // Leave one grid size out: refit on the other 11, score the rows left out.
    assert_eq!(f.folds.len(), 12);
    assert!(f.loo_median_abs_error <= 0.05, "leave-one-P-out median |error| {}", f.loo_median_abs_error);
    assert!(f.loo_max_abs_error <= 0.10, "leave-one-P-out max |error| {}", f.loo_max_abs_error);
    for fold in &f.folds {
        assert!(
            (fold.fit.loop_iteration_cycles - f.value.loop_iteration_cycles).abs() < 2.0,
            "P={} moves the per-iteration cost to {}",
            fold.grid,
            fold.fit.loop_iteration_cycles
        );
    }
}

#[test]
fn wrong_constants_show_in_the_error() {
    // The bounds are not vacuous: charging a full DSD set-up (43 cycles) per
    // mapped op, as a memory-operand vector op pays, misses badly.
    let mut arch = arch_preset("wse3").unwrap();
    arch.pe.mapped_op_overhead_cycles = arch.pe.vector_op_overhead_cycles;
    let c = calibrate_gemm(&arch, Engine::Analytical).unwrap();
    assert!(c.max_abs_error > 0.5, "{}", c.max_abs_error);
}

#[test]
fn the_kernel_is_an_ordinary_program_that_verifies_and_round_trips() {
    let arch = arch_preset("wse3").unwrap();
    let k = MeshGemm { grid: 144, m: 1152, k: 288, n: 576 };
    let p = k.program(&arch).unwrap();
    let info = verify_program(&p).unwrap();
    assert_eq!(info.pes_used, 144 * 144);
    assert_eq!(parse_program(&print_program(&p)).unwrap(), p);
    // Cycles grow with K much faster than with M or N (each k iteration has a fixed cost).
    let cyc =
        |k: MeshGemm| time_kernel(&k.program(&arch).unwrap(), Engine::Event, &Default::default()).unwrap().1.cycles;
    let base = cyc(MeshGemm { grid: 16, m: 16, k: 16, n: 16 });
    let more_k = cyc(MeshGemm { grid: 16, m: 16, k: 128, n: 16 });
    let more_m = cyc(MeshGemm { grid: 16, m: 128, k: 16, n: 16 });
    assert!(more_k > 2.0 * base && more_m < 1.2 * base, "{base} {more_k} {more_m}");
    // Bad configurations name the flag.
    for (bad, flag) in [
        (MeshGemm { grid: 1, ..k }, "--grid"),
        (MeshGemm { grid: 2000, ..k }, "--grid"),
        (MeshGemm { m: 1000, ..k }, "--m"),
        (MeshGemm { k: 0, ..k }, "--k"),
        (MeshGemm { n: 145, ..k }, "--n"),
    ] {
        let e = bad.program(&arch).unwrap_err().to_string();
        assert!(e.contains(flag), "{e}");
    }
    // Tiles that do not fit in a PE's SRAM are the verifier's clear error, not a figure.
    let huge = MeshGemm { grid: 16, m: 16 * 128, k: 16 * 128, n: 16 * 128 };
    let e = verify_program(&huge.program(&arch).unwrap()).unwrap_err().to_string();
    assert!(e.contains("SRAM") || e.contains("bytes"), "{e}");
}

#[test]
fn the_verifier_refuses_broken_gemm_regions() {
    let arch = arch_preset("wse3").unwrap();
    let good = MeshGemm { grid: 16, m: 128, k: 16, n: 32 }.program(&arch).unwrap();
    let err = |p: &wafer_ir::Program| verify_program(p).unwrap_err().to_string();
    // Cannon needs a square.
    let mut p = good.clone();
    p.regions[0].rect.w = 15;
    assert!(err(&p).contains("square"), "{}", err(&p));
    // Tiles that do not cover the product.
    let mut p = good.clone();
    if let wafer_ir::Work::Gemm { tile_m, .. } = &mut p.regions[0].work {
        *tile_m = 7;
    }
    assert!(err(&p).contains("do not cover"), "{}", err(&p));
    // No route may touch it yet.
    let mut p = good.clone();
    p.routes.push(wafer_ir::Route {
        kind: wafer_ir::RouteKind::Reduce,
        src: wafer_ir::RegionId(0),
        dst: wafer_ir::RegionId(0),
        color: 0,
        colors: 1,
        bytes: 0,
    });
    assert!(err(&p).contains("takes no routes"), "{}", err(&p));
}

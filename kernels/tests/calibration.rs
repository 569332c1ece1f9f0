//! The micro-timing model against MeshGEMV cycle counts measured on WSE-3
//! silicon: the acceptance bounds of the calibration, the fit that sets the
//! ramp latency (re-run here against the presets' value), its leave-one-P-out
//! error, and the two engines' agreement on every row.

use std::path::Path;
use wafer_ir::{arch_preset, parse_program, print_program, verify_program, RAMP_LATENCY_CYCLES};
use wafer_kernels::{calibrate_gemv, fit_ramp, gemv_rows, time_kernel, Engine, MeshGemv, MESHGEMV_CSV};

#[test]
fn the_embedded_rows_are_a_verbatim_copy_of_the_shared_reference() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/kernels");
    for (name, embedded) in [
        ("meshgemv_wse3.csv", MESHGEMV_CSV),
        ("shift_wse3.csv", include_str!("../data/shift_wse3.csv")),
        ("meshgemm_wse3.csv", include_str!("../data/meshgemm_wse3.csv")),
    ] {
        // Beside a checkout that has the shared folder; a bare clone has only the copy.
        if let Ok(original) = std::fs::read_to_string(shared.join(name)) {
            assert_eq!(embedded, original, "{name} differs from shared/reference/kernels/{name}");
        }
    }
    let rows = gemv_rows().unwrap();
    assert_eq!(rows.len(), 192);
    assert!(rows.iter().all(|r| r.groups == 8 && r.measured_cycles > 200.0));
}

#[test]
fn both_engines_replay_the_silicon_rows_within_the_acceptance_bounds() {
    let arch = arch_preset("wse3").unwrap();
    let ev = calibrate_gemv(&arch, Engine::Event).unwrap();
    let an = calibrate_gemv(&arch, Engine::Analytical).unwrap();
    for c in [&ev, &an] {
        assert_eq!(c.rows.len(), 192);
        assert!(c.median_abs_error <= 0.05, "{:?}: median |error| {}", c.engine, c.median_abs_error);
        assert!(c.max_abs_error <= 0.15, "{:?}: max |error| {}", c.engine, c.max_abs_error);
    }
    // The closed form and the event engine agree on every kernel row within 5%.
    for (e, a) in ev.rows.iter().zip(&an.rows) {
        let d = (e.predicted_cycles / a.predicted_cycles - 1.0).abs();
        assert!(
            d <= 0.05,
            "P={} M={} N={}: event {} vs analytical {}",
            e.row.grid,
            e.row.m,
            e.row.n,
            e.predicted_cycles,
            a.predicted_cycles
        );
    }
}

#[test]
fn the_fit_reproduces_the_presets_ramp_and_generalises_across_grid_sizes() {
    let arch = arch_preset("wse3").unwrap();
    let f = fit_ramp(&arch, Engine::Analytical).unwrap();
    assert_eq!(f.rows, 192);
    assert_eq!(f.rounded, RAMP_LATENCY_CYCLES, "the fit gives {:.3}: update the presets and their docs", f.value);
    assert_eq!(f.rounded, arch.router.ramp_latency_cycles);
    // Leave one grid size out: refit on the other 11, score the rows left out.
    assert_eq!(f.folds.len(), 12);
    assert!(f.loo_median_abs_error <= 0.08, "leave-one-P-out median |error| {}", f.loo_median_abs_error);
    for fold in &f.folds {
        assert!((fold.ramp_fit - f.value).abs() < 1.0, "P={} moves the fit to {}", fold.grid, fold.ramp_fit);
    }
}

#[test]
fn a_wrong_ramp_shows_in_the_error() {
    // The bounds are not vacuous: the old model's 63-cycle chain step (ramp 31) misses badly.
    let mut arch = arch_preset("wse3").unwrap();
    arch.router.ramp_latency_cycles = 31;
    let c = calibrate_gemv(&arch, Engine::Analytical).unwrap();
    assert!(c.median_abs_error > 0.5, "{}", c.median_abs_error);
}

#[test]
fn the_kernel_is_an_ordinary_program_that_verifies_and_round_trips() {
    let arch = arch_preset("wse3").unwrap();
    let k = MeshGemv { grid: 144, m: 1152, n: 288, groups: 8, mac: true };
    let p = k.program(&arch).unwrap();
    verify_program(&p).unwrap();
    assert_eq!(parse_program(&print_program(&p)).unwrap(), p);
    // The local multiply-accumulate costs cycles when it runs (8 AXPYs of 2 fp16 per PE).
    let with = time_kernel(&p, Engine::Event, &Default::default()).unwrap().1.cycles;
    let without =
        time_kernel(&MeshGemv { mac: false, ..k }.program(&arch).unwrap(), Engine::Event, &Default::default())
            .unwrap()
            .1
            .cycles;
    assert!(with > without + 100.0, "{with} vs {without}");
    // Bad configurations name the flag.
    for (bad, flag) in [
        (MeshGemv { grid: 2, ..k }, "--grid"),
        (MeshGemv { grid: 2000, ..k }, "--grid"),
        (MeshGemv { m: 1000, ..k }, "--m"),
        (MeshGemv { n: 0, ..k }, "--n"),
        (MeshGemv { groups: 0, ..k }, "--groups"),
    ] {
        let e = bad.program(&arch).unwrap_err().to_string();
        assert!(e.contains(flag), "{e}");
    }
}

//! A simulation that does not finish has no latency, and routers without
//! multicast still finish: the event engine reads a message's purpose from
//! its tag, never from its multicast geometry.

use wafer_compiler::{compile, CompileOptions, Compiled};
use wafer_ir::{arch_preset, route_messages, ArchSpec, Purpose, RouteId, RouteKind, Work};
use wafer_simulator::{simulate_analytical, simulate_event, EventLimits, FinishedSim, Outcome, SimError};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn compiled(model: &str, context: u64, arch: &ArchSpec) -> Compiled {
    let cfg = preset(model).unwrap();
    let g = decode_graph(&cfg, &DecodeParams { context, ..Default::default() }).unwrap();
    compile(&g, arch, &CompileOptions::default()).unwrap()
}

fn no_multicast() -> ArchSpec {
    let mut a = arch_preset("wse3").unwrap();
    a.name = "wse3-no-multicast".into();
    a.router.multicast = false;
    a
}

#[test]
fn gpt2_on_routers_without_multicast_finishes_near_the_analytical_engine_and_slower_than_with_multicast() {
    let off = compiled("gpt2", 512, &no_multicast());
    let e = simulate_event(&off.program, &off.info, &EventLimits::default());
    assert_eq!(e.outcome, Outcome::Finished, "{:?}", e.outcome);
    let e = e.finished().unwrap();
    let a = simulate_analytical(&off.program, &off.info).finished().unwrap();
    let ratio = e.cycles / a.cycles;
    assert!((0.85..=1.15).contains(&ratio), "event {} vs analytical {} cycles", e.cycles, a.cycles);
    assert!(e.breakdown.compute > 0.0 && (e.breakdown.total() - e.cycles).abs() < 1e-6, "{:?}", e.breakdown);

    let on = compiled("gpt2", 512, &arch_preset("wse3").unwrap());
    let with = simulate_event(&on.program, &on.info, &EventLimits::default()).finished().unwrap();
    assert!(e.cycles > with.cycles, "without multicast {} cycles, with {}", e.cycles, with.cycles);
}

#[test]
fn every_message_carries_the_purpose_its_route_and_destination_imply_with_or_without_multicast() {
    for arch in [arch_preset("mesh:128x128").unwrap(), {
        let mut a = arch_preset("mesh:128x128").unwrap();
        a.router.multicast = false;
        a
    }] {
        let c = compiled("gpt2", 64, &arch);
        let p = &c.program;
        let mut seen = std::collections::BTreeSet::new();
        for (i, rt) in p.routes.iter().enumerate() {
            let dst = p.region(rt.dst);
            for m in route_messages(p, RouteId(i as u32)) {
                seen.insert(format!("{:?}", m.purpose));
                let ok = match (rt.kind, &dst.work) {
                    (RouteKind::Forward, Work::Gemv { .. }) => m.purpose == Purpose::ColumnInput,
                    (RouteKind::Forward, Work::Attention { .. }) => {
                        matches!(m.purpose, Purpose::Query | Purpose::KvAppend)
                    }
                    (RouteKind::Residual, _) => m.purpose == Purpose::Residual,
                    (RouteKind::Norm, _) => matches!(m.purpose, Purpose::Collective | Purpose::NormBcast),
                    (RouteKind::Reduce | RouteKind::Argmax, _) => m.purpose == Purpose::Collective,
                    (RouteKind::Bcast, _) => m.purpose == Purpose::RowBcast,
                    (RouteKind::Forward, Work::Embedding { .. }) => m.purpose == Purpose::Token,
                    (RouteKind::Forward, Work::Gemm { .. }) => false,
                };
                assert!(ok, "{} ({:?}) into `{}`: {:?}", rt.kind.name(), rt.kind, dst.name, m.purpose);
                if !arch.router.multicast {
                    assert_eq!((m.fan_cols, m.fan_rows), (0, 0), "no multicast tails without multicast");
                }
            }
        }
        // Every purpose but `RowBcast` (only kernels such as MeshGEMV broadcast rows back).
        assert_eq!(seen.len(), 6, "gpt2 uses every purpose: {seen:?}");
    }
}

#[test]
fn a_deadlocked_run_has_no_finished_result_and_its_error_names_the_blocked_region_and_route() {
    let c = compiled("gpt2", 16, &arch_preset("mesh:128x128").unwrap());
    let mut p = c.program.clone();
    p.regions[0].active = false; // the embedding never sends
    let info = wafer_ir::verify_program(&p).unwrap();
    let r = simulate_event(&p, &info, &EventLimits::default());
    assert!(matches!(r.outcome, Outcome::Deadlock { .. }), "{:?}", r.outcome);
    let err = r.finished().unwrap_err();
    assert!(matches!(err, SimError::Deadlock { .. }));
    let msg = err.to_string();
    assert!(msg.contains("deadlocked") && msg.contains("no latency"), "{msg}");
    assert!(msg.contains("`l0.qkv`") && msg.contains("rt0") && msg.contains("inactive r0 `embed`"), "{msg}");
    assert!(msg.len() < 3000, "the message stays readable: {} chars", msg.len());
}

#[test]
fn a_run_past_its_cycle_limit_has_no_finished_result() {
    let c = compiled("gpt2", 16, &arch_preset("mesh:128x128").unwrap());
    let r = simulate_event(&c.program, &c.info, &EventLimits { max_cycles: 1000, ..Default::default() });
    assert_eq!(r.outcome, Outcome::CycleLimit { limit: 1000 });
    let msg = r.finished().unwrap_err().to_string();
    assert!(msg.contains("cycle limit (1000 cycles)") && msg.contains("no latency"), "{msg}");
}

#[test]
fn a_finished_result_deserialises_and_any_other_is_refused() {
    let c = compiled("gpt2", 16, &arch_preset("mesh:128x128").unwrap());
    let ok = simulate_event(&c.program, &c.info, &EventLimits::default());
    let json = serde_json::to_string(&ok).unwrap();
    let back: FinishedSim = serde_json::from_str(&json).unwrap();
    assert_eq!(back.cycles, ok.cycles);
    let limited = simulate_event(&c.program, &c.info, &EventLimits { max_cycles: 1000, ..Default::default() });
    let err = serde_json::from_str::<FinishedSim>(&serde_json::to_string(&limited).unwrap()).unwrap_err();
    assert!(err.to_string().contains("cycle limit"), "{err}");
}

#[test]
fn the_analytical_engine_also_refuses_a_program_whose_regions_wait_on_inactive_ones() {
    let c = compiled("gpt2", 16, &arch_preset("mesh:128x128").unwrap());
    let mut p = c.program.clone();
    p.regions[0].active = false;
    let info = wafer_ir::verify_program(&p).unwrap();
    let r = simulate_analytical(&p, &info);
    let msg = r.finished().unwrap_err().to_string();
    assert!(msg.contains("analytical") && msg.contains("deadlocked") && msg.contains("inactive r0 `embed`"), "{msg}");
    // The intact program finishes.
    assert!(simulate_analytical(&c.program, &c.info).finished().is_ok());
}

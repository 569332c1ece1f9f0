//! The machine's limit: its floors match hand arithmetic from the arch's
//! parameters, and no mapping the compiler makes (analytical engine, every
//! preset on its auto wafers, contexts 1k and 32k) is faster than it. The
//! event engine is checked against it in `event_vs_analytical.rs`, in the loop
//! that already simulates every preset.

use wafer_compiler::{compile, CompileOptions, Wafers};
use wafer_ir::{arch_preset, graph_stats};
use wafer_simulator::{machine_bound, simulate_analytical, Floor};
use wafer_workloads::{decode_graph, preset, DecodeParams};

#[test]
fn llama_8b_on_one_wse3_floors_match_hand_arithmetic() {
    let arch = arch_preset("wse3").unwrap();
    let g =
        decode_graph(&preset("llama-3.1-8b").unwrap(), &DecodeParams { context: 1024, ..Default::default() }).unwrap();
    let b = machine_bound(&g, &arch, 1);
    let s = graph_stats(&g);
    let pes = 755u64 * 1170;
    assert_eq!(b.pes, pes);
    // bf16 weights with fp16 accumulators: 4 MACs per cycle (the ports), 8 FLOPs.
    assert_eq!(b.peak_flops_per_pe_cycle, 8);
    // ~16 GFLOP at 883k PEs × 8 FLOP × 1.1 GHz = 7.8 PFLOP/s: about 2 µs.
    let want = s.step.flops as f64 / (pes as f64 * 8.0 * 1.1e3);
    assert!((b.compute_floor_us - want).abs() < 0.01, "{} vs {want}", b.compute_floor_us);
    assert!((1.5..3.0).contains(&b.compute_floor_us), "{}", b.compute_floor_us);
    // ~16 GB over 883k PEs = ~18 KB per PE at 16 B/cycle: ~1.1k cycles, ~1 µs
    // (a dense model reads every weight; the batch of 1 one embedding row).
    assert_eq!(b.sram_read_bytes, s.step.weight_bytes + s.step.kv_read_bytes);
    let per_pe = b.sram_read_bytes.div_ceil(pes);
    assert!((17_000..20_000).contains(&per_pe), "{per_pe} B per PE");
    let want = per_pe.div_ceil(16) as f64 / 1.1e3;
    assert!((b.memory_floor_us - want).abs() < 1e-9);
    // Two stages per layer (attention, MLP), the embedding's and the head's.
    assert_eq!(b.chain_stages, 2 * 32 + 2);
    assert_eq!(b.inter_wafer_crossings, 0);
    // An MLP stage of 3 × 4096 × 14336 bf16 = 352 MB needs ≥ 10.8k PEs of 32 KiB:
    // a diameter of ≥ 146, so ≥ 73 hops plus two ramps from one end of it.
    assert!(b.chain_hops >= 32 * 73, "{} hops", b.chain_hops);
    let bound = b.compute_floor_us.max(b.memory_floor_us).max(b.communication_floor_us);
    assert_eq!(b.bound_us, bound);
    assert!(b.bound_us > 1.0 && b.bound_us < 20.0, "{}", b.bound_us);
}

#[test]
fn more_wafers_lower_the_compute_and_memory_floors_and_cost_a_crossing_when_needed() {
    let arch = arch_preset("wse3").unwrap();
    let g =
        decode_graph(&preset("llama-3.1-70b").unwrap(), &DecodeParams { context: 1024, ..Default::default() }).unwrap();
    let (one, four) = (machine_bound(&g, &arch, 1), machine_bound(&g, &arch, 4));
    assert!((one.compute_floor_us / four.compute_floor_us - 4.0).abs() < 0.01);
    assert!(four.memory_floor_us < one.memory_floor_us / 3.9);
    // 140 GB does not fit one wafer's 29 GB: at least one system-link crossing (≥ 5 µs).
    assert_eq!(four.inter_wafer_crossings, 1);
    assert!(four.communication_floor_us >= arch.system.inter_wafer_latency_ns / 1e3);
    assert_eq!(four.binding_floor, Floor::Communication);
    // The crossing is a floor beside the stages' chain, not added to it.
    let step = 2 * arch.router.ramp_latency_cycles as u64 + 1;
    let stages_only = arch.cycles_to_us((four.chain_hops + four.chain_stages * step) as f64);
    let crossing = arch.cycles_to_us(wafer_simulator::timing::inter_wafer(&arch, 1) as f64);
    assert!(four.communication_floor_us <= stages_only.max(crossing) + 1e-9, "{four:?}");
    // A model that fits one wafer pays none, however many wafers it is given.
    let small = decode_graph(&preset("llama-3.2-1b").unwrap(), &DecodeParams::default()).unwrap();
    assert_eq!(machine_bound(&small, &arch, 4).inter_wafer_crossings, 0);
}

#[test]
fn no_compiled_preset_beats_the_machine_limit() {
    for arch_name in ["wse2", "wse3"] {
        let arch = arch_preset(arch_name).unwrap();
        let mut checked = 0;
        for model in wafer_workloads::preset_names() {
            let cfg = preset(model).unwrap();
            for context in [1024u64, 32768] {
                let Ok(g) = decode_graph(&cfg, &DecodeParams { context, ..Default::default() }) else { continue };
                let Ok(c) = compile(&g, &arch, &CompileOptions { wafers: Wafers::Auto, ..Default::default() }) else {
                    continue;
                };
                let a = simulate_analytical(&c.program, &c.info);
                let b = machine_bound(&g, &arch, c.program.wafers);
                assert!(b.bound_us > 0.0, "{model}");
                assert!(
                    a.tpot_us >= b.bound_us,
                    "{model} at {context} on {} × {arch_name}: {:.2} µs beats the bound {:.2} µs ({:?})",
                    c.program.wafers,
                    a.tpot_us,
                    b.bound_us,
                    b.binding_floor
                );
                checked += 1;
            }
        }
        assert!(checked >= 20, "{arch_name}: {checked} points");
    }
}

#[test]
fn on_several_wafers_no_stage_is_charged_more_than_a_crossing() {
    // A stage's set may be split over wafers (shorter spans on each, one crossing):
    // with a near-free system link, every stage costs at most that crossing.
    let mut arch = arch_preset("wse3").unwrap();
    arch.system.inter_wafer_latency_ns = 1.0;
    let crossing = wafer_simulator::timing::inter_wafer(&arch, 1);
    let g =
        decode_graph(&preset("llama-3.1-8b").unwrap(), &DecodeParams { context: 1024, ..Default::default() }).unwrap();
    let (one, two) = (machine_bound(&g, &arch, 1), machine_bound(&g, &arch, 2));
    assert!(one.communication_floor_us > arch.cycles_to_us((one.chain_stages * crossing) as f64));
    assert!(two.communication_floor_us <= arch.cycles_to_us((two.chain_stages * crossing) as f64));
}

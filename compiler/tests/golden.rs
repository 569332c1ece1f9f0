//! Golden textual spatial IR of a tiny model on a small mesh after every pass,
//! and the verifier's answers on hand-broken programs.

use wafer_compiler::{compile, CompileOptions, Wafers, PASSES};
use wafer_ir::{arch_preset, route_messages, verify_program, ArchSpec, DType, Program, RouteId, RouteKind, Sram};
use wafer_workloads::{decode_graph, parse_hf_config, DecodeParams};

const TINY: &str = r#"{"model_type":"llama","hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,
  "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":32}"#;

fn arch() -> ArchSpec {
    let mut a = arch_preset("mesh:12x12").unwrap();
    a.pe.sram_bytes = 1024;
    a.pe.sram_reserved_bytes = 128;
    a
}

fn tiny(dump: Vec<String>) -> wafer_compiler::Compiled {
    let cfg = parse_hf_config(TINY, "tiny", "tiny").unwrap();
    let p = DecodeParams {
        context: 6,
        weight_dtype: DType::F32,
        act_dtype: DType::F32,
        kv_dtype: DType::F32,
        ..Default::default()
    };
    let g = decode_graph(&cfg, &p).unwrap();
    compile(
        &g,
        &arch(),
        &CompileOptions {
            wafers: Wafers::Fixed(1),
            verify_each: true,
            dump_after: dump,
            strategy: wafer_compiler::Strategy::Pipeline,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn textual_ir_after_each_pass_is_golden() {
    let c = tiny(PASSES.iter().map(|p| p.0.to_string()).collect());
    for (pass, text) in &c.dumps {
        insta::assert_snapshot!(format!("tiny_after_{pass}"), text);
    }
}

fn broken(f: impl FnOnce(&mut Program)) -> String {
    let mut p = tiny(vec![]).program;
    verify_program(&p).expect("the compiled program verifies");
    f(&mut p);
    verify_program(&p).expect_err("the verifier must reject this").to_string()
}

#[test]
fn verifier_rejects_hand_broken_programs_naming_the_pe_or_route() {
    // SRAM overflow: one region's weights grow past the PE's SRAM.
    let e = broken(|p| p.regions[1].sram.weights += 4096);
    assert!(
        e.contains("SRAM overflow")
            && e.contains("pe(")
            && e.contains(&format!("`{}`", tiny(vec![]).program.regions[1].name)),
        "{e}"
    );
    // Overlapping regions.
    let e = broken(|p| p.regions[2].rect = p.regions[1].rect);
    assert!(e.contains("overlaps region r1"), "{e}");
    // A receive with no matching send.
    let e = broken(|p| {
        let r =
            p.regions.iter().position(|r| r.steps.iter().any(|s| matches!(s, wafer_ir::Step::Recv { .. }))).unwrap();
        for s in &mut p.regions[r].steps {
            if let wafer_ir::Step::Recv { bytes, .. } = s {
                *bytes += 1;
                break;
            }
        }
    });
    assert!(e.contains("no matching send") && e.contains("route rt"), "{e}");
    // Too many colors: every route on the last color that the router offers.
    let e = broken(|p| {
        for r in &mut p.routes {
            r.color = 0;
        }
    });
    assert!(e.contains("shares color 0 with route rt"), "{e}");
    let e = broken(|p| p.routes[0].color = 40);
    assert!(e.contains("route rt0: uses colors 40..41 but only 18 are available"), "{e}");
    // A region off the mesh, and an undeclared SRAM need.
    let e = broken(|p| p.regions[0].rect.x = 11);
    assert!(e.contains("not inside the 12x12 mesh"), "{e}");
    let e = broken(|p| p.regions[1].sram = Sram::default());
    assert!(e.contains("declares SRAM"), "{e}");
}

/// Closed forms: one GEMV on an R x C region — SRAM per PE, message counts and
/// lengths of its broadcast and tree reduction, colors.
#[test]
fn one_gemv_region_matches_closed_forms() {
    let c = tiny(vec![]);
    let p = &c.program;
    let (ri, r) = p.regions.iter().enumerate().find(|(_, r)| r.name == "l0.o_proj").unwrap();
    let wafer_ir::Work::Gemv { n, k, tile_n, tile_k, reduce, .. } = r.work else { panic!() };
    let (rows, cols) = (r.rect.h as u64, r.rect.w as u64);
    assert_eq!((n, k), (16, 16));
    assert!(tile_n * rows >= n && tile_n * (rows - 1) < n);
    assert!(tile_k * cols >= k && tile_k * (cols - 1) < k);
    // fp32 weights and bias, fp32 input slice, two fp32 partial buffers, plus the code reserve.
    assert_eq!(r.sram.weights, 4 * (tile_n * tile_k + tile_n));
    assert_eq!(r.sram.buffers, 4 * tile_k + 8 * tile_n);
    assert_eq!(r.sram.code, 128);
    let route = |kind: RouteKind| {
        let i = p.routes.iter().position(|rt| rt.kind == kind && rt.dst.0 as usize == ri).unwrap();
        route_messages(p, RouteId(i as u32))
    };
    // Broadcast: every column head gets its tile_k inputs, multicast down the other rows.
    let fwd = route(RouteKind::Forward);
    let heads: std::collections::BTreeSet<_> = fwd.iter().map(|m| m.to).collect();
    assert_eq!(heads.len() as u64, cols);
    assert!(fwd.iter().all(|m| m.to.y == r.rect.y && m.fan_rows as u64 == rows - 1));
    assert_eq!(fwd.iter().map(|m| m.bytes).sum::<u64>(), 4 * k);
    if cols > 1 {
        // Reduction: cols - 1 transfers per row, whatever the shape; a tree's longest is half the row.
        let red = route(RouteKind::Reduce);
        assert_eq!(red.len() as u64, rows * (cols - 1));
        assert!(red.iter().all(|m| m.from.y == m.to.y && m.bytes <= 4 * tile_n));
        if reduce == wafer_ir::Reduce::Tree {
            let longest = red.iter().map(|m| m.hops()).max().unwrap() as u64;
            assert_eq!(longest, cols.next_power_of_two() / 2);
        }
        let rt = p.routes.iter().find(|rt| rt.kind == RouteKind::Reduce && rt.src.0 as usize == ri).unwrap();
        assert_eq!(rt.colors, reduce.colors());
    }
}

#[test]
fn tree_and_chain_rounds_have_closed_forms() {
    use wafer_ir::Reduce;
    assert_eq!(Reduce::Tree.rounds(5), vec![vec![(1, 0), (3, 2)], vec![(2, 0)], vec![(4, 0)]]);
    assert_eq!(Reduce::Chain.rounds(4), vec![vec![(3, 2)], vec![(2, 1)], vec![(1, 0)]]);
    assert_eq!(Reduce::TwoLevel { group: 2 }.rounds(6), vec![vec![(1, 0), (3, 2), (5, 4)], vec![(2, 0)], vec![(4, 0)]]);
    for n in 1..40 {
        for shape in [Reduce::Tree, Reduce::Chain, Reduce::TwoLevel { group: 3 }] {
            // Every index but 0 sends exactly once: n - 1 transfers reach the root.
            let sends: Vec<u32> = shape.rounds(n).concat().iter().map(|t| t.0).collect();
            let mut s = sends.clone();
            s.sort_unstable();
            assert_eq!(s, (1..n).collect::<Vec<_>>(), "{shape:?} over {n}");
        }
    }
}

#[test]
fn without_multicast_each_pe_gets_its_own_copy() {
    let mut p = tiny(vec![]).program;
    let fwd = p
        .routes
        .iter()
        .position(|r| r.kind == RouteKind::Forward && matches!(p.region(r.dst).work, wafer_ir::Work::Gemv { .. }))
        .unwrap();
    let dst = p.region(p.routes[fwd].dst).rect;
    let multicast = route_messages(&p, RouteId(fwd as u32));
    p.arch.router.multicast = false;
    let unicast = route_messages(&p, RouteId(fwd as u32));
    assert_eq!(unicast.len(), multicast.len() * dst.h as usize);
    assert!(unicast.iter().all(|m| m.fan_rows == 0 && m.fan_cols == 0));
    assert_eq!(
        unicast.iter().map(|m| m.bytes).sum::<u64>(),
        dst.h as u64 * multicast.iter().map(|m| m.bytes).sum::<u64>()
    );
}

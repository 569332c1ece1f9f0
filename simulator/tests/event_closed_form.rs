//! The event engine against cycle counts written out by hand on small,
//! hand-built programs (mesh presets with WSE-3 PEs: 20-cycle tasks, 43-cycle
//! vector overhead, 4 B/cycle links, 1 cycle per hop, 14-cycle ramps).

mod common;

use common::{emb, gemv, Builder};
use wafer_ir::{arch_preset, DType, Program, ProgramInfo, Reduce, RouteKind, Work};
use wafer_simulator::timing::{
    add_partial, attention_combine, attention_compute, chain_step, elementwise, gemv_compute, message, ramp,
    serialization,
};
use wafer_simulator::{simulate_event, EventLimits, Outcome, SimResult};

fn run(p: &Program, info: &ProgramInfo) -> SimResult {
    let r = simulate_event(p, info, &EventLimits::default());
    assert_eq!(r.outcome, Outcome::Finished, "{:?}", r.outcome);
    // The breakdown of the critical path accounts for every cycle.
    assert!((r.breakdown.total() - r.cycles).abs() < 1e-9, "{:?} vs {}", r.breakdown, r.cycles);
    r
}

const TASK: u64 = 20;

#[test]
fn a_single_message_over_h_hops_costs_message_h_bytes() {
    let a = arch_preset("mesh:16x16").unwrap();
    for (dx, dy) in [(1, 0), (0, 3), (4, 3), (12, 7)] {
        let mut b = Builder::new("mesh:16x16");
        let e = b.region("emb", 0, 0, 1, 1, emb(8));
        let g = b.region("g", dx, dy, 1, 1, gemv(4, 8, 4, 8, Reduce::Tree, false, 2));
        b.route(RouteKind::Forward, e, g, 0);
        let (p, info) = b.build();
        let r = run(&p, &info);
        let h = dx + dy;
        // 8 bf16 values = 16 bytes: h hops, then 4 cycles of body.
        let arrive = TASK + message(&a, h, 16);
        assert_eq!(r.regions[1].start, arrive as f64, "h = {h}");
        let expected = arrive + gemv_compute(&a, 4, 8, 1, DType::Bf16, DType::F32) + elementwise(&a, 4, 2);
        assert_eq!(r.cycles, expected as f64, "h = {h}");
        assert_eq!(r.breakdown.comm, message(&a, h, 16) as f64);
        assert_eq!(r.breakdown.wait, 0.0);
        assert_eq!(r.critical_path, vec!["emb".to_string(), "g".to_string()]);
        assert_eq!(r.link_load.links_used, h as u64);
    }
}

#[test]
fn a_broadcast_reaches_row_i_of_the_column_i_hops_after_the_head() {
    let a = arch_preset("mesh:8x8").unwrap();
    for rows in [1u32, 2, 5] {
        let mut b = Builder::new("mesh:8x8");
        let e = b.region("emb", 0, 0, 1, 1, emb(8));
        // One column of `rows` PEs at (3, 2): the head is 3 + 2 = 5 hops away.
        let g = b.region("g", 3, 2, 1, rows, gemv(4 * rows as u64, 8, 4, 8, Reduce::Tree, false, 1));
        b.route(RouteKind::Forward, e, g, 0);
        let (p, info) = b.build();
        let r = run(&p, &info);
        assert_eq!(r.regions[1].start, (TASK + message(&a, 5, 16)) as f64);
        // The last row's root is the last to finish: 5 + (rows - 1) hops.
        let last = TASK
            + message(&a, 5 + rows - 1, 16)
            + gemv_compute(&a, 4, 8, 1, DType::Bf16, DType::F32)
            + elementwise(&a, 4, 1);
        assert_eq!(r.cycles, last as f64, "rows = {rows}");
        // Every link of the path and of the tail carried the 4-cycle body once.
        assert_eq!(r.link_load.links_used, (5 + rows - 1) as u64);
        assert_eq!(r.link_load.max, 4.0 / r.cycles);
    }
}

/// A row of 8 PEs at y = 0 fed from an embedding at (0, 1); column `c` gets 2
/// bf16 values (4 bytes, 1 cycle) over c + 1 hops, after c earlier messages
/// left the embedding's port (1 cycle each): it arrives at 20 + ramp + c + (c+1) + 1 + ramp.
fn row_of_8(shape: Reduce, c_count: u32) -> (Program, ProgramInfo) {
    let mut b = Builder::new("mesh:8x8");
    let k = 2 * c_count as u64;
    let e = b.region("emb", 0, 1, 1, 1, emb(k));
    let g = b.region("g", 0, 0, c_count, 1, gemv(8, k, 8, 2, shape, false, 1));
    b.route(RouteKind::Forward, e, g, 0);
    b.route(RouteKind::Reduce, g, g, 1);
    b.build()
}

#[test]
fn a_tree_reduction_along_a_row_of_8_is_three_rounds_of_message_plus_add() {
    let a = arch_preset("mesh:8x8").unwrap();
    let (p, info) = row_of_8(Reduce::Tree, 8);
    let r = run(&p, &info);
    let comp = gemv_compute(&a, 8, 2, 1, DType::Bf16, DType::F32);
    let done = |c: u64| TASK + 2 * ramp(&a) + c + (c + 1) + 1 + comp;
    // Partials are 8 fp32 = 32 bytes (8 cycles); each add covers 8 elements.
    let add = add_partial(&a, 8, DType::F32);
    // The last PE (7) is the latest: 7 -> 6 (1 hop), 6 -> 4 (2 hops), 4 -> 0 (4 hops),
    // each followed by the receiver's add, then the epilogue at the root.
    let expected = done(7)
        + (message(&a, 1, 32) + add)
        + (message(&a, 2, 32) + add)
        + (message(&a, 4, 32) + add)
        + elementwise(&a, 8, 1);
    assert_eq!(r.cycles, expected as f64);
    // By hand: done(7) = 20 + 2·14 + 7 + 8 + 1 + comp (20 + 2·(4 + 43) = 114) = 178;
    // the three messages 2·14 + hops + 8, each add 8/4 = 2, epilogue 2 + 43:
    // 178 + (37 + 2) + (38 + 2) + (40 + 2) + 45 = 344.
    assert_eq!(r.cycles, 344.0, "the same sum, evaluated by hand");
    assert_eq!(r.breakdown.wait, 0.0);
}

#[test]
fn a_chain_reduction_is_pipelined_one_chain_step_per_pe() {
    let a = arch_preset("mesh:8x8").unwrap();
    let (p, info) = row_of_8(Reduce::Chain, 4);
    let r = run(&p, &info);
    let comp = gemv_compute(&a, 8, 2, 1, DType::Bf16, DType::F32);
    let done = |c: u64| TASK + 2 * ramp(&a) + c + (c + 1) + 1 + comp;
    // 3 -> 2 leaves at done(3); 2 -> 1 a chain step later (PE 2 finished long
    // before); 1 -> 0 another; then one hop, the body and PE 0's add.
    let expected =
        done(3) + 2 * chain_step(&a) + message(&a, 1, 32) + add_partial(&a, 8, DType::F32) + elementwise(&a, 8, 1);
    assert_eq!(r.cycles, expected as f64);
}

#[test]
fn a_two_level_reduction_chains_within_groups_then_trees_over_leaders() {
    let a = arch_preset("mesh:8x8").unwrap();
    let (p, info) = row_of_8(Reduce::TwoLevel { group: 4 }, 8);
    let r = run(&p, &info);
    let comp = gemv_compute(&a, 8, 2, 1, DType::Bf16, DType::F32);
    let done = |c: u64| TASK + 2 * ramp(&a) + c + (c + 1) + 1 + comp;
    let add = add_partial(&a, 8, DType::F32);
    // Group 4..8: 7 -> 6 -> 5 -> 4 pipelined; leader 4 then sends 4 hops to 0.
    let leader4 = done(7) + 2 * chain_step(&a) + message(&a, 1, 32) + add;
    let expected = leader4 + message(&a, 4, 32) + add + elementwise(&a, 8, 1);
    assert_eq!(r.cycles, expected as f64);
}

#[test]
fn one_gemv_region_with_norm_reduce_residual_and_epilogue_end_to_end() {
    let a = arch_preset("mesh:8x8").unwrap();
    let mut b = Builder::new("mesh:8x8");
    let e = b.region("emb", 0, 2, 1, 1, emb(8));
    // 2 x 2 PEs at (0, 0): tiles of 4 x 4 (bf16), RMSNorm prologue, 2 epilogue ops.
    let g = b.region("l0.qkv", 0, 0, 2, 2, gemv(8, 8, 4, 4, Reduce::Tree, true, 2));
    b.route(RouteKind::Forward, e, g, 0);
    b.route(RouteKind::Residual, e, g, 1);
    b.route(RouteKind::Norm, g, g, 2);
    b.route(RouteKind::Reduce, g, g, 4);
    let (p, info) = b.build();
    let r = run(&p, &info);
    // Column 1's 8-byte slice leaves second (port busy 2 cycles) over 1 + 2 hops:
    // it is the last column head to have input.
    let t0 = TASK + serialization(&a, 8) + message(&a, 3, 8);
    // Norm: column 1 -> 0 (two fp32 statistics), add; broadcast back to column 1; row 1 one hop below.
    let norm = message(&a, 1, 8) + add_partial(&a, 2, DType::F32) + message(&a, 1, 8) + 1;
    // PE (1, 1) computes last, sends its 4 fp32 partials one hop, root adds, epilogue.
    let tail = gemv_compute(&a, 4, 4, 1, DType::Bf16, DType::F32)
        + message(&a, 1, 16)
        + add_partial(&a, 4, DType::F32)
        + elementwise(&a, 4, 2);
    assert_eq!(r.cycles, (t0 + norm + tail) as f64);
    // By hand: t0 = 20 + 2 + (28 + 3 + 4) = 57; norm = (28 + 1 + 2) + 1 + (28 + 1 + 2) + 1 = 64;
    // tail = (20 + 4·(2 + 43)) + (28 + 1 + 4) + 1 + 2·(1 + 43) = 200 + 33 + 1 + 88 = 320: 441.
    assert_eq!(r.cycles, 441.0, "the same sum, evaluated by hand");
    assert_eq!(r.critical_path, vec!["emb".to_string(), "l0.qkv".to_string()]);
    let expect_compute = TASK
        + add_partial(&a, 2, DType::F32)
        + gemv_compute(&a, 4, 4, 1, DType::Bf16, DType::F32)
        + add_partial(&a, 4, DType::F32)
        + elementwise(&a, 4, 2);
    assert_eq!(r.breakdown.compute, expect_compute as f64);
    assert_eq!(r.breakdown.wait, 0.0);
    assert_eq!(r.by_kind["qkv"].total() + r.by_kind["emb"].total(), r.cycles);
}

#[test]
fn two_messages_sharing_a_link_are_serialized() {
    let a = arch_preset("mesh:8x8").unwrap();
    let mut b = Builder::new("mesh:8x8");
    // A at (0,1) and B at (2,1) both send to (1,2): both heads reach (1,1) at
    // cycle 21 and need its south link. A departs first (earlier region).
    let ea = b.region("a", 0, 1, 1, 1, emb(8));
    let eb = b.region("b", 2, 1, 1, 1, emb(8));
    let g = b.region("g", 1, 2, 1, 1, gemv(4, 8, 4, 8, Reduce::Tree, false, 1));
    b.route(RouteKind::Forward, ea, g, 0);
    b.route(RouteKind::Forward, eb, g, 1);
    let (p, info) = b.build();
    let r = run(&p, &info);
    let first = TASK + message(&a, 2, 16);
    assert_eq!(r.regions[2].start, first as f64);
    let second = first + serialization(&a, 16);
    let expected = second + gemv_compute(&a, 4, 8, 1, DType::Bf16, DType::F32) + elementwise(&a, 4, 1);
    assert_eq!(r.cycles, expected as f64);
    assert_eq!(r.breakdown.wait, serialization(&a, 16) as f64);
    assert_eq!(r.critical_path, vec!["b".to_string(), "g".to_string()]);
    // The shared link carried both bodies.
    assert_eq!(r.link_load.max, 2.0 * serialization(&a, 16) as f64 / r.cycles);
}

#[test]
fn attention_over_two_head_blocks_in_closed_form() {
    let a = arch_preset("mesh:8x8").unwrap();
    let mut b = Builder::new("mesh:8x8");
    // 2 KV heads, group 1, head_dim 4, 5 positions over 2 x 2 PEs per head (2 per PE).
    let e = b.region("emb", 0, 4, 1, 1, emb(24));
    let work = Work::Attention {
        kv_heads: 2,
        group: 1,
        head_dim: 4,
        positions: 5,
        slot: 4,
        rows_per_head: 2,
        pos_per_pe: 2,
        reduce: Reduce::Tree,
        batch_split: 1,
    };
    let at = b.region("l0.attention", 0, 0, 2, 4, work);
    b.route(RouteKind::Forward, e, at, 0);
    b.route(RouteKind::Reduce, at, at, 1);
    let (p, info) = b.build();
    let r = run(&p, &info);
    // Port order out of the embedding: q0 (8 B), k0, v0, q1, k1, v1 (8 B each, 2 cycles).
    // Head block 1 (rows 2-3): q1 leaves at 20 + 6 and travels 2 hops to (0, 2);
    // its tail reaches (1, 2) and then (0, 3), (1, 3).
    let ser = serialization(&a, 8);
    let q1 = TASK + 3 * ser;
    // The slot holder (index 2: row 3, col 0) holds 1 position and gets K, V of head 1
    // (v1 leaves last, at 20 + 10, 1 hop to (0, 3)); others hold 2, 2, 0.
    let v1 = TASK + 5 * ser + message(&a, 1, 8);
    let c2 = attention_compute(&a, 1, 4, 2, 1, 1, DType::Bf16);
    let c1 = attention_compute(&a, 1, 4, 1, 1, 1, DType::Bf16);
    let comb = attention_combine(&a, 1, 4, 1);
    let part = 4 * (4 + 2); // fp32 (max, sum, acc[4])
                            // Row 2: PE (2,1) has q at q1 + message(2 + 1, 8), computes 2 positions, sends 1 hop.
    let row2 = (q1 + message(&a, 3, 8) + c2 + message(&a, 1, part)).max(q1 + message(&a, 2, 8) + c2) + comb;
    // Row 3: the holder (3, 0) waits for V; (3, 1) holds nothing.
    let row3 = (v1 + c1).max(q1 + message(&a, 4, 8) + message(&a, 1, part)) + comb;
    // Chain down column 0: row 3 -> row 2 (first sender: departs when done).
    let expected = row2.max(row3 + message(&a, 1, part)) + comb;
    assert_eq!(r.cycles, expected as f64);
}

#[test]
fn a_route_that_never_delivers_is_a_deadlock_naming_the_region() {
    let mut b = Builder::new("mesh:8x8");
    let e = b.region("emb", 0, 0, 1, 1, emb(8));
    let g = b.region("stuck", 2, 0, 1, 1, gemv(4, 8, 4, 8, Reduce::Tree, false, 1));
    b.route(RouteKind::Forward, e, g, 0);
    b.p.regions[0].active = false;
    let (p, info) = b.build();
    let r = simulate_event(&p, &info, &EventLimits::default());
    let Outcome::Deadlock { blocked } = &r.outcome else { panic!("{:?}", r.outcome) };
    assert_eq!(blocked.len(), 1);
    assert!(
        blocked[0].contains("`stuck`") && blocked[0].contains("rt0") && blocked[0].contains("pe(2,0)"),
        "{blocked:?}"
    );
}

#[test]
fn an_input_column_no_route_covers_is_a_deadlock_naming_the_pe() {
    let mut b = Builder::new("mesh:8x8");
    let e = b.region("emb", 0, 1, 1, 1, emb(4));
    // k = 8 over 2 columns, but the embedding only provides 4 values: column 1 starves.
    let g = b.region("half", 0, 0, 2, 1, gemv(4, 8, 4, 4, Reduce::Tree, false, 1));
    b.route(RouteKind::Forward, e, g, 0);
    b.route(RouteKind::Reduce, g, g, 1);
    let (p, info) = b.build();
    let r = simulate_event(&p, &info, &EventLimits::default());
    let Outcome::Deadlock { blocked } = &r.outcome else { panic!("{:?}", r.outcome) };
    assert!(
        blocked[0].contains("`half`") && blocked[0].contains("pe(1,0)") && blocked[0].contains("column 1"),
        "{blocked:?}"
    );
}

#[test]
fn a_missing_reduce_route_is_a_deadlock() {
    let mut b = Builder::new("mesh:8x8");
    let e = b.region("emb", 0, 1, 1, 1, emb(8));
    let g = b.region("noreduce", 0, 0, 2, 1, gemv(4, 8, 4, 4, Reduce::Tree, false, 1));
    b.route(RouteKind::Forward, e, g, 0);
    let (p, info) = b.build();
    let r = simulate_event(&p, &info, &EventLimits::default());
    let Outcome::Deadlock { blocked } = &r.outcome else { panic!("{:?}", r.outcome) };
    assert!(blocked[0].contains("`noreduce`") && blocked[0].contains("reduce of row 0"), "{blocked:?}");
}

#[test]
fn a_tiny_cycle_limit_stops_the_run() {
    let (p, info) = row_of_8(Reduce::Tree, 8);
    let r = simulate_event(&p, &info, &EventLimits { max_cycles: 30, ..Default::default() });
    assert_eq!(r.outcome, Outcome::CycleLimit { limit: 30 });
    assert_eq!(r.cycles, 30.0);
    // Limit above the embedding's first departure but below the end: still a limit.
    let r = simulate_event(&p, &info, &EventLimits { max_cycles: 300, ..Default::default() });
    assert_eq!(r.outcome, Outcome::CycleLimit { limit: 300 });
}

#[test]
fn runs_are_deterministic() {
    let (p, info) = row_of_8(Reduce::TwoLevel { group: 3 }, 8);
    let a = simulate_event(&p, &info, &EventLimits::default());
    let b = simulate_event(&p, &info, &EventLimits::default());
    assert_eq!(a, b);
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
}

#[test]
fn a_program_above_the_memory_or_event_budget_is_refused_before_running() {
    let (p, info) = row_of_8(Reduce::Tree, 8);
    let est = wafer_simulator::estimate_event(&p, &info);
    assert_eq!(est.events, info.messages);
    // The 8x8 mesh's link tables alone are 4 x 64 x 12 bytes.
    assert!(est.bytes >= 4 * 64 * 12, "{est:?}");
    let run = |limits: EventLimits| wafer_simulator::try_simulate_event(&p, &info, &limits);
    let e = run(EventLimits { max_memory_bytes: est.bytes - 1, ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("event simulation") && e.contains("--max-memory"), "{e}");
    let e = run(EventLimits { max_events: est.events - 1, ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("events"), "{e}");
    let ok = run(EventLimits { max_memory_bytes: est.bytes, max_events: est.events, ..Default::default() }).unwrap();
    assert_eq!(ok, simulate_event(&p, &info, &EventLimits::default()));
}

//! The dataflow level is what the engines execute: a region's task list says
//! when its PEs may compute and in which order they send, so changing the list
//! changes the timing; a list that is not executable is refused by the
//! verifier, naming the region and the task; and a PE's view of a mapping
//! that stacks layers lists the regions it serves in turn order.

mod common;

use common::{emb, gemv, Builder};
use wafer_compiler::{compile, CompileOptions, Strategy};
use wafer_ir::{
    arch_preset, lower, verify_program, Members, Program, ProgramInfo, Purpose, Reduce, RegionId, RouteId, RouteKind,
    Step, TaskKind,
};
use wafer_simulator::{simulate_analytical, simulate_event, EventLimits, FinishedSim};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn event(p: &Program, info: &ProgramInfo) -> FinishedSim {
    simulate_event(p, info, &EventLimits::default()).finished().unwrap()
}

fn analytical(p: &Program, info: &ProgramInfo) -> FinishedSim {
    simulate_analytical(p, info).finished().unwrap()
}

/// `slow` (a long Gemv fed by nothing) sends its output as the residual of
/// `add`, whose forward input comes at once from an embedding: with the
/// compiler's order `add` computes while `slow` runs and waits only to add.
fn late_residual() -> Builder {
    let mut b = Builder::new("mesh:8x8");
    let slow = b.region("slow", 0, 0, 2, 2, gemv(8, 1024, 4, 512, Reduce::Chain, false, 0));
    let e = b.region("emb", 0, 3, 1, 1, emb(8));
    let add = b.region("add", 2, 0, 2, 2, gemv(8, 8, 4, 4, Reduce::Chain, false, 1));
    b.route(RouteKind::Reduce, slow, slow, 0);
    b.route(RouteKind::Forward, e, add, 2);
    b.route(RouteKind::Residual, slow, add, 3);
    b.route(RouteKind::Reduce, add, add, 4);
    b
}

/// Moves region `r`'s receive of `route` to the front of its steps.
fn receive_first(p: &mut Program, r: usize, route: RouteId) {
    let steps = &mut p.regions[r].steps;
    let k = steps.iter().position(|s| matches!(s, Step::Recv { route: x, .. } if *x == route)).unwrap();
    let st = steps.remove(k);
    steps.insert(0, st);
}

#[test]
fn a_residual_received_before_compute_delays_its_region_in_both_engines() {
    let (p, info) = late_residual().build();
    let residual = RouteId(p.routes.iter().position(|r| r.kind == RouteKind::Residual).unwrap() as u32);
    let df = lower(&p, &info);
    let add = df.region(RegionId(2));
    let k = add.position(TaskKind::Recv, residual).unwrap();
    assert!(k > add.compute() && !add.gates_compute(Purpose::Residual), "the schedule adds it after the reduction");

    let mut q = p.clone();
    receive_first(&mut q, 2, residual);
    let qinfo = verify_program(&q).unwrap_or_else(|e| panic!("{e}"));
    assert!(lower(&q, &qinfo).region(RegionId(2)).gates_compute(Purpose::Residual));

    let (e0, e1) = (event(&p, &info), event(&q, &qinfo));
    let (a0, a1) = (analytical(&p, &info), analytical(&q, &qinfo));
    // `add` now computes after `slow` is done, instead of beside it: its
    // compute moves onto the critical path in both engines.
    let compute =
        wafer_simulator::timing::gemv_compute(&p.arch, 4, 4, 1, wafer_ir::DType::Bf16, wafer_ir::DType::F32) as f64;
    assert!(e1.cycles >= e0.cycles + compute, "event: {} -> {} cycles", e0.cycles, e1.cycles);
    assert!(a1.cycles >= a0.cycles + compute, "analytical: {} -> {} cycles", a0.cycles, a1.cycles);
    // The region that waits is `add`; `slow` is untouched.
    assert_eq!(e0.regions[0].end, e1.regions[0].end);
    assert!(e1.regions[2].end > e0.regions[2].end);
}

/// One embedding feeding two Gemvs: its holder sends both slices through its one output port.
fn fan_out() -> (Program, ProgramInfo, [RouteId; 2]) {
    let mut b = Builder::new("mesh:8x8");
    let e = b.region("emb", 0, 4, 1, 1, emb(64));
    let g1 = b.region("first", 0, 0, 2, 2, gemv(8, 64, 4, 32, Reduce::Chain, false, 0));
    let g2 = b.region("second", 2, 0, 2, 2, gemv(8, 64, 4, 32, Reduce::Chain, false, 0));
    let to1 = b.route(RouteKind::Forward, e, g1, 0);
    let to2 = b.route(RouteKind::Forward, e, g2, 1);
    b.route(RouteKind::Reduce, g1, g1, 2);
    b.route(RouteKind::Reduce, g2, g2, 4);
    let (p, info) = b.build();
    (p, info, [to1, to2])
}

#[test]
fn reordering_two_sends_changes_which_destination_starts_first_in_the_event_engine() {
    let (p, info, [to1, to2]) = fan_out();
    let df = lower(&p, &info);
    let emb = df.region(RegionId(0));
    assert!(emb.position(TaskKind::Send, to1) < emb.position(TaskKind::Send, to2));
    let base = event(&p, &info);
    assert!(base.regions[1].start < base.regions[2].start, "first listed, first sent");

    let mut q = p.clone();
    q.regions[0].steps.swap(1, 2);
    let qinfo = verify_program(&q).unwrap_or_else(|e| panic!("{e}"));
    let swapped = event(&q, &qinfo);
    assert!(swapped.regions[2].start < swapped.regions[1].start, "now the second route leaves first");
    // The port serialises them: what one gains the other loses.
    assert!(swapped.regions[2].start < base.regions[2].start && swapped.regions[1].start > base.regions[1].start);
    // The closed form is contention-free: the order of sends is not in it.
    assert_eq!(analytical(&q, &qinfo).cycles, analytical(&p, &info).cycles);
}

fn errors(p: &Program) -> String {
    verify_program(p).expect_err("refused").to_string()
}

#[test]
fn a_task_list_missing_a_route_or_computing_twice_is_refused_naming_the_region_and_task() {
    let (p, _) = late_residual().build();
    // `add` (r2) no longer receives its residual.
    let mut q = p.clone();
    q.regions[2]
        .steps
        .retain(|s| !matches!(s, Step::Recv { route, .. } if p.route(*route).kind == RouteKind::Residual));
    let e = errors(&q);
    assert!(e.contains("region r2 `add`") && e.contains("lists `recv(rt2)` 0 times"), "{e}");

    let mut q = p.clone();
    q.regions[2].steps.push(Step::Compute);
    let e = errors(&q);
    assert!(e.contains("region r2 `add`: has 2 compute tasks"), "{e}");

    // A forward input after the compute, a reduction before it, a send before a collective.
    let mut q = p.clone();
    q.regions[2].steps.rotate_left(1);
    let e = errors(&q);
    assert!(e.contains("region r2 `add`: task 3 `recv(rt1)`: a forward input is received before compute"), "{e}");
    let mut q = p.clone();
    q.regions[0].steps.reverse();
    let e = errors(&q);
    assert!(e.contains("region r0 `slow`: task 1 `collective(rt0)`: a reduction"), "{e}");
    assert!(e.contains("region r0 `slow`: task 1 `collective(rt0)` follows a send"), "{e}");

    // A residual between the compute and the reduction feeds nothing the engines can execute.
    let mut q = p.clone();
    let steps = &mut q.regions[2].steps;
    let k = steps.iter().position(|s| matches!(s, Step::Recv { route, .. } if route.0 == 2)).unwrap();
    let st = steps.remove(k);
    steps.insert(2, st);
    let e = errors(&q);
    assert!(e.contains("region r2 `add`: task 2 `recv(rt2)`: a residual received after compute"), "{e}");
}

#[test]
fn a_pe_of_a_spread_mapping_lists_the_regions_stacked_on_it_in_turn_order() {
    let g = decode_graph(&preset("gpt2").unwrap(), &DecodeParams { context: 512, ..Default::default() }).unwrap();
    let opts = CompileOptions { strategy: Strategy::Spread, ..Default::default() };
    let c = compile(&g, &arch_preset("wse3").unwrap(), &opts).unwrap();
    let (p, df) = (&c.program, lower(&c.program, &c.info));
    // The block's first PE: every Gemv of every layer is spread over it.
    let first = p.regions.iter().find(|r| r.layer == Some(0) && r.name.ends_with("qkv")).unwrap();
    let (w, x, y) = (first.wafer, first.rect.x, first.rect.y);
    let here: Vec<usize> = (0..p.regions.len())
        .filter(|&i| {
            let r = &p.regions[i].rect;
            p.regions[i].wafer == w && (r.x..r.x + r.w).contains(&x) && (r.y..r.y + r.h).contains(&y)
        })
        .collect();
    assert!(here.len() > 12, "one region per layer at least: {}", here.len());
    let tasks = df.tasks_at(w, x, y);
    let mut seen: Vec<RegionId> = tasks.iter().map(|t| t.region).collect();
    seen.dedup();
    assert_eq!(seen.len(), here.len(), "every stacked region once");
    let turns: Vec<u32> = seen.iter().map(|r| p.region(*r).turn).collect();
    assert!(turns.windows(2).all(|t| t[0] < t[1]), "in turn order: {turns:?}");
    for t in &tasks {
        assert_eq!((t.layer, t.turn), (p.region(t.region).layer, p.region(t.region).turn));
    }
    // Each region's tasks in its template's order, one compute each.
    for r in &seen {
        let idx: Vec<usize> = tasks.iter().filter(|t| t.region == *r).map(|t| t.index).collect();
        assert!(idx.windows(2).all(|i| i[0] < i[1]), "{r}: {idx:?}");
        let computes = tasks.iter().filter(|t| t.region == *r && t.task.kind == TaskKind::Compute).count();
        assert_eq!(computes, 1, "{r}");
    }
    // Only a row root sends: a PE off the qkv's root column lists none of its sends.
    let q = p.regions.iter().position(|r| std::ptr::eq(r, first)).unwrap();
    let sends = df.region(RegionId(q as u32)).tasks.iter().filter(|t| t.kind == TaskKind::Send).count();
    assert!(
        sends > 0
            && df.region(RegionId(q as u32)).tasks.iter().all(|t| t.kind != TaskKind::Send || t.at == Members::Outputs)
    );
    let wafer_ir::Work::Gemv { reduce, .. } = first.work else { panic!("qkv is a gemv") };
    let root = first.rect.x + reduce.root(first.rect.w);
    let off = if root == first.rect.x { first.rect.x + 1 } else { first.rect.x };
    let at = |px: u32| {
        df.tasks_at(w, px, y).iter().filter(|t| t.region.0 as usize == q && t.task.kind == TaskKind::Send).count()
    };
    assert_eq!((at(root), at(off)), (sends, 0));
    assert!(df.tasks_at(w, p.arch.mesh_width + 5, 0).is_empty(), "a PE off the mesh serves nothing");
}

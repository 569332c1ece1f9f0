//! Specification of the draft's placement for speculative decoding: a draft
//! shares the target's wafers when both fit on every PE (stacked in later
//! turns, or side by side), each step of a round times as its own program,
//! and a draft that does not fit runs on wafers of its own with the
//! verifier's reason.

use wafer_compiler::{
    compile, place_draft, prefill_chunk, stack_draft, CompileOptions, Compiled, DraftError, DraftPlan, Placement,
};
use wafer_ir::{arch_preset, verify_graph, verify_program, Graph, Step};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn graph(model: &str, context: u64, batch: u64) -> Graph {
    let cfg = preset(model).unwrap();
    let g = decode_graph(&cfg, &DecodeParams { context, batch, ..Default::default() }).unwrap();
    verify_graph(&g).unwrap();
    g
}

fn compiled(g: &Graph, arch: &str) -> Compiled {
    compile(g, &arch_preset(arch).unwrap(), &CompileOptions::default()).unwrap()
}

/// 8B with a 1B draft, k = 4 (a 5-token verify step), on one wse3.
fn plan_8b_1b(context: u64) -> (Compiled, DraftPlan) {
    let (t, d) = (graph("llama-3.1-8b", context, 1), graph("llama-3.2-1b", context, 1));
    let tc = compiled(&t, "wse3");
    let plan = place_draft(&tc.program, &t, &d, &arch_preset("wse3").unwrap(), &CompileOptions::default(), 5).unwrap();
    (tc, plan)
}

fn cycles(p: &(wafer_ir::Program, wafer_ir::ProgramInfo)) -> f64 {
    wafer_cost::estimate(&p.0, &p.1).unwrap().cycles
}

#[test]
fn a_small_draft_shares_the_wafer_when_both_fit_and_costs_no_machines() {
    let (tc, plan) = plan_8b_1b(1024);
    assert_eq!(plan.placement, Placement::Shared, "{:?}", plan.why_not_shared);
    assert!(plan.why_not_shared.is_none());
    assert_eq!(plan.machines, tc.program.wafers);
    assert_eq!(plan.machines, 1);
    // Both steps run on one resident program: the target's regions, then the draft's.
    let (ds, vs) = (&plan.draft_step.0, &plan.verify_step.0);
    assert_eq!(ds.regions.len(), vs.regions.len());
    let round_target = plan.target.as_ref().map_or(&tc.program, |t| &t.program);
    let n = round_target.regions.len();
    assert!(ds.regions[..n].iter().all(|r| !r.active), "the target rests during a draft step");
    assert!(vs.regions[n..].iter().all(|r| !r.active), "the draft rests during the verify step");
    assert!(ds.regions[n..].iter().any(|r| r.active) && vs.regions[..n].iter().any(|r| r.active));
    assert_eq!(vs.new_tokens, 5);
    assert_eq!(ds.new_tokens, 1);
    // The draft runs after the target, in turns of its own.
    let last = round_target.regions.iter().map(|r| r.turn).max().unwrap();
    assert!(ds.regions[n..].iter().all(|r| r.turn > last));
    // Everything resident at once fits every PE: the verifier passes both steps.
    verify_program(ds).unwrap();
    verify_program(vs).unwrap();
}

#[test]
fn each_step_of_a_shared_round_times_as_its_own_program() {
    let (tc, plan) = plan_8b_1b(1024);
    assert_eq!(plan.placement, Placement::Shared);
    let draft_alone = (plan.draft.program.clone(), verify_program(&plan.draft.program).unwrap());
    let rel = |a: f64, b: f64| (a - b).abs() / b;
    assert!(rel(cycles(&plan.draft_step), cycles(&draft_alone)) < 1e-9);
    let round_target = plan.target.as_ref().map_or(&tc.program, |t| &t.program);
    let verify_alone = prefill_chunk(round_target, 5).unwrap();
    assert!(rel(cycles(&plan.verify_step), cycles(&verify_alone)) < 1e-9);
}

#[test]
fn a_draft_that_does_not_fit_runs_on_its_own_wafers_and_says_why() {
    let (tc, plan) = plan_8b_1b(4096);
    assert_eq!(plan.placement, Placement::OwnWafers);
    let why = plan.why_not_shared.as_deref().unwrap();
    // The verifier's first diagnostic: the PE and the bytes it would hold.
    assert!(why.contains("SRAM overflow") && why.contains("bytes") && why.contains("pe("), "{why}");
    let round_target = plan.target.as_ref().map_or(&tc.program, |t| &t.program);
    assert_eq!(plan.machines, round_target.wafers + plan.draft.program.wafers);
    assert!(plan.machines > tc.program.wafers);
    // Its steps are the two programs as they are.
    assert_eq!(plan.draft_step.0, plan.draft.program);
    assert_eq!(plan.verify_step.0.new_tokens, 5);
}

#[test]
fn stacking_puts_the_draft_after_the_target_with_its_routes_renumbered() {
    let t = compiled(&graph("gpt2", 256, 1), "wse3");
    let d = compiled(&graph("gpt2", 256, 1), "wse3");
    let s = stack_draft(&t.program, &d.program).unwrap();
    let (n, m) = (t.program.regions.len(), t.program.routes.len());
    assert_eq!(s.regions.len(), 2 * n);
    assert_eq!(s.routes.len(), m + d.program.routes.len());
    let after = t.program.regions.iter().map(|r| r.turn).max().unwrap() + 1;
    for (i, r) in s.regions[n..].iter().enumerate() {
        assert_eq!(r.turn, d.program.regions[i].turn + after);
        assert!(r.name.starts_with("draft."));
        for st in &r.steps {
            if let Step::Send { route, .. } | Step::Recv { route, .. } | Step::Collective { route } = st {
                assert!(route.0 as usize >= m, "a draft step names a target route");
            }
        }
    }
    assert!(s.routes[m..].iter().all(|rt| rt.src.0 as usize >= n && rt.dst.0 as usize >= n));
}

#[test]
fn programs_of_different_batches_do_not_stack() {
    let t = compiled(&graph("gpt2", 256, 1), "wse3");
    let d = compiled(&graph("gpt2", 256, 2), "wse3");
    let e = stack_draft(&t.program, &d.program).unwrap_err();
    assert!(matches!(e, DraftError::Mismatch { field: "batch", .. }), "{e}");
}

//! Users in flight simulated message by message ([`wafer_simulator::engine_steady`]):
//! a compiled step unrolled into users × tokens copies ([`wafer_compiler::unroll_users`]),
//! timed by the event engine, against the closed form ([`wafer_simulator::pipelining`]).

use wafer_compiler::{compile, unroll_users, CompileError, CompileOptions, Compiled, Strategy};
use wafer_ir::{arch_preset, copy_name, RouteKind, Step, Work};
use wafer_simulator::{
    engine_steady, pipelining, simulate_analytical, simulate_event, EventLimits, FinishedSim, SteadyEngine,
    SteadyError, UsersSteady, EVENT_TOKENS,
};
use wafer_workloads::{decode_graph, parse_hf_config, DecodeParams};

const TINY: &str = include_str!("../../examples/tiny-llama/config.json");

fn compiled(arch: &str, strategy: Strategy) -> Compiled {
    let cfg = parse_hf_config(TINY, "examples/tiny-llama/config.json", "tiny-llama").unwrap();
    let g = decode_graph(&cfg, &DecodeParams { context: 256, ..Default::default() }).unwrap();
    compile(&g, &arch_preset(arch).unwrap(), &CompileOptions { strategy, ..Default::default() }).unwrap()
}

fn event(c: &Compiled) -> FinishedSim {
    simulate_event(&c.program, &c.info, &EventLimits::default()).finished().unwrap()
}

fn steady(c: &Compiled, sim: &FinishedSim, users: u32, engine: SteadyEngine) -> UsersSteady {
    let (u, ui) = unroll_users(&c.program, &c.info, users, EVENT_TOKENS).unwrap();
    engine_steady(&c.program, sim, &u, &ui, users, EVENT_TOKENS, engine).unwrap()
}

fn by_event(c: &Compiled, sim: &FinishedSim, users: u32) -> UsersSteady {
    steady(c, sim, users, SteadyEngine::Event(EventLimits::default()))
}

/// The unrolled program is the step copied users × tokens times: every copy
/// of every region, named for its user and token, the copies' routes, and
/// one route per token fed back (each user's next embedding receives it
/// first; the sampler sends it last) plus one admitting each further user.
#[test]
fn the_unrolled_program_is_the_step_copied_and_joined_by_its_tokens() {
    let c = compiled("mesh:32x32", Strategy::Pipeline);
    let (users, tokens) = (3u32, 4u32);
    let (u, _) = unroll_users(&c.program, &c.info, users, tokens).unwrap();
    let (n, m) = (c.program.regions.len(), c.program.routes.len());
    let copies = (users * tokens) as usize;
    assert_eq!(u.regions.len(), copies * n);
    let joins = (users - 1) as usize + (copies - users as usize);
    assert_eq!(u.routes.len(), copies * m + joins);
    let embed = c.program.regions.iter().find(|r| matches!(r.work, Work::Embedding { .. })).unwrap();
    let sampler = c.program.regions.iter().find(|r| matches!(r.work, Work::Gemv { argmax: true, .. })).unwrap();
    for user in 0..users {
        for t in 1..tokens {
            let e = u.regions.iter().find(|r| r.name == copy_name(&embed.name, user, t)).unwrap();
            let Some(&Step::Recv { route, .. }) = e.steps.first() else { panic!("{}: {:?}", e.name, e.steps) };
            let rt = u.route(route);
            assert_eq!(rt.kind, RouteKind::Forward);
            assert_eq!(u.region(rt.src).name, copy_name(&sampler.name, user, t - 1));
            let s = u.region(rt.src);
            assert_eq!(s.steps.last(), Some(&Step::Send { route, bytes: rt.bytes }), "{}", s.name);
            assert_eq!(rt.bytes, 4 * c.program.rows(), "an i32 token id per row");
        }
    }
    // One user stepping once is the step itself.
    let (one, info) = unroll_users(&c.program, &c.info, 1, 1).unwrap();
    let a = simulate_analytical(&one, &info).finished().unwrap();
    assert_eq!(a.cycles, simulate_analytical(&c.program, &c.info).finished().unwrap().cycles);
}

/// One user alone steps at the single-step rate: each token waits only for
/// its predecessor's sampled token to reach the embedding.
#[test]
fn one_user_steps_at_the_single_step_rate_within_one_percent() {
    for arch in ["mesh:32x32", "mesh:64x64"] {
        let c = compiled(arch, Strategy::Pipeline);
        let sim = event(&c);
        let one = by_event(&c, &sim, 1);
        let r = one.aggregate_tokens_per_s / sim.tokens_per_s;
        assert!(
            (0.99..=1.0 + 1e-9).contains(&r),
            "{arch}: {} vs {} tokens/s",
            one.aggregate_tokens_per_s,
            sim.tokens_per_s
        );
    }
}

/// The acceptance check: on a pipeline mapping, users up to the stage count
/// ride along for free — the event engine's aggregate, every message of
/// every user's tokens played together, is within 10% of U × one user's
/// rate and of the closed form.
#[test]
fn up_to_the_stage_count_the_event_engine_agrees_with_the_closed_form_within_ten_percent() {
    for arch in ["mesh:32x32", "mesh:64x64"] {
        let c = compiled(arch, Strategy::Pipeline);
        let sim = event(&c);
        let stages = pipelining(&c.program, &sim, 1).stages;
        assert!(stages >= 4, "{arch}: {stages} stages");
        for users in [2, stages / 2, stages] {
            let e = by_event(&c, &sim, users);
            assert!((0.9..=1.1).contains(&e.vs_closed_form), "{arch} U = {users} of {stages}: {e:?}");
            assert!(e.busiest_compute > 0.0 && e.busiest_compute <= 1.0 + 1e-9, "{e:?}");
            let linear = users as f64 * sim.tokens_per_s;
            assert!(
                (e.aggregate_tokens_per_s - linear).abs() <= 0.1 * linear,
                "{arch} U = {users}: {} vs {linear}",
                e.aggregate_tokens_per_s
            );
        }
    }
}

/// A spread mapping stacks every region on the same PEs; the event engine
/// holds no PE while a region waits, so a second user fills idle time: it
/// gets a figure (the job replay refuses such mappings), above one user's.
#[test]
fn a_spread_mapping_gets_an_event_figure_and_a_second_user_fills_idle_pes() {
    let c = compiled("mesh:32x32", Strategy::Spread);
    let sim = event(&c);
    let two = by_event(&c, &sim, 2);
    assert!(two.aggregate_tokens_per_s > 1.05 * sim.tokens_per_s, "{two:?} vs {}", sim.tokens_per_s);
    assert!(two.aggregate_tokens_per_s <= 2.0 * sim.tokens_per_s, "{two:?}");
}

/// The analytical walk over the unrolled program (each region after its
/// copies on the same PEs, in program order) agrees with the closed form up
/// to the stage count, as the event engine does.
#[test]
fn the_analytical_walk_of_the_unrolled_program_agrees_too() {
    let c = compiled("mesh:64x64", Strategy::Pipeline);
    let sim = event(&c);
    let stages = pipelining(&c.program, &sim, 1).stages;
    let a = steady(&c, &sim, stages, SteadyEngine::Analytical);
    assert!((0.9..=1.1).contains(&a.vs_closed_form), "{a:?}");
}

/// Too many users are refused with the size and the fix: by the unroll
/// before it allocates, and by the event engine's budget.
#[test]
fn too_many_users_are_refused_naming_the_fix() {
    let c = compiled("mesh:32x32", Strategy::Pipeline);
    let e = unroll_users(&c.program, &c.info, u32::MAX, EVENT_TOKENS).unwrap_err();
    assert!(matches!(e, CompileError::UsersTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("fewer users"), "{e}");
    let sim = event(&c);
    let (u, ui) = unroll_users(&c.program, &c.info, 4, EVENT_TOKENS).unwrap();
    let small = EventLimits { max_events: 1000, ..EventLimits::default() };
    let e = engine_steady(&c.program, &sim, &u, &ui, 4, EVENT_TOKENS, SteadyEngine::Event(small)).unwrap_err();
    assert!(matches!(e, SteadyError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("fewer --users"), "{e}");
    // On a spread mapping every user's token route is live over the others'
    // copies: past the colors the routers have free, a typed refusal.
    let spread = compiled("mesh:32x32", Strategy::Spread);
    let e = unroll_users(&spread.program, &spread.info, 64, 2).unwrap_err();
    assert!(matches!(e, CompileError::UsersColors { .. }), "{e}");
    assert!(e.to_string().contains("fewer users"), "{e}");
}

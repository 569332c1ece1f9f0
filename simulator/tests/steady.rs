//! Users in flight ([`wafer_simulator::pipelining`]): several independent
//! sequences pipelined through a mapping's PEs, in closed form from one step,
//! and replayed job by job ([`wafer_simulator::replay_users`]) to check it.

use wafer_compiler::{compile, CompileOptions, Compiled, Strategy};
use wafer_ir::arch_preset;
use wafer_simulator::{
    pipelining, replay_users, simulate_analytical, simulate_event, EventLimits, FinishedSim, ReplayError, REPLAY_TOKENS,
};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn compiled(model: &str, strategy: Strategy) -> Compiled {
    let g = decode_graph(&preset(model).unwrap(), &DecodeParams { context: 1024, ..Default::default() }).unwrap();
    compile(&g, &arch_preset("wse3").unwrap(), &CompileOptions { strategy, ..Default::default() }).unwrap()
}

fn analytical(c: &Compiled) -> FinishedSim {
    simulate_analytical(&c.program, &c.info).finished().unwrap()
}

/// On a pipeline mapping (every fused op on its own PEs) users ride along for
/// free up to the stage count: aggregate = U × one user's tokens/s while
/// U ≤ stages, then it stays at the bottleneck's rate.
#[test]
fn pipeline_users_add_up_until_the_bottleneck_binds() {
    let c = compiled("llama-3.2-1b", Strategy::Pipeline);
    let sim = analytical(&c);
    let one = pipelining(&c.program, &sim, 1);
    assert!((one.aggregate_tokens_per_s - sim.tokens_per_s).abs() < 1e-9 * sim.tokens_per_s);
    assert!(one.stages >= 8, "{} stages: bottleneck {}", one.stages, one.bottleneck);
    assert!(one.bottleneck.starts_with("region "), "{}", one.bottleneck);
    for u in 1..=one.stages {
        let k = pipelining(&c.program, &sim, u);
        let want = u as f64 * sim.tokens_per_s;
        assert!(
            (k.aggregate_tokens_per_s - want).abs() <= 0.10 * want,
            "U = {u}: {} vs {want}",
            k.aggregate_tokens_per_s
        );
        assert!((k.per_user_tokens_per_s - sim.tokens_per_s).abs() <= 1e-9 * sim.tokens_per_s);
    }
    // Past the stage count the bottleneck sets the rate; each user slows down.
    let many = pipelining(&c.program, &sim, 4 * one.stages);
    let cap = c.program.batch as f64 / (many.bottleneck_cycles / (c.program.arch.clock_ghz * 1e9));
    assert!((many.aggregate_tokens_per_s - cap).abs() < 1e-9 * cap);
    assert!(many.per_user_tokens_per_s < sim.tokens_per_s);
}

/// A spread mapping puts every region on the same PEs: they are busy for
/// almost the whole step, so a second user gains (almost) nothing.
#[test]
fn spread_users_share_the_step() {
    let c = compiled("llama-3.2-1b", Strategy::Spread);
    let sim = analytical(&c);
    let two = pipelining(&c.program, &sim, 2);
    assert!(two.stages <= 2, "{} stages", two.stages);
    assert!(two.aggregate_tokens_per_s <= 2.0 * sim.tokens_per_s);
    assert!(two.bottleneck.contains("regions sharing PEs"), "{}", two.bottleneck);
}

/// The closed form reads any engine's region timings: event and analytical
/// agree on the stage count of a pipeline within the engines' own 10%.
#[test]
fn both_engines_give_the_same_steady_state_within_ten_percent() {
    let c = compiled("gpt2", Strategy::Pipeline);
    let a = pipelining(&c.program, &analytical(&c), 8);
    let e = simulate_event(&c.program, &c.info, &EventLimits::default()).finished().unwrap();
    let e = pipelining(&c.program, &e, 8);
    let r = e.aggregate_tokens_per_s / a.aggregate_tokens_per_s;
    assert!((0.9..=1.1).contains(&r), "event {} vs analytical {}", e.aggregate_tokens_per_s, a.aggregate_tokens_per_s);
}

/// A prompt streamed through a pipeline mapping: the first token takes a
/// whole step, each further one the bottleneck's time; one token is a step.
#[test]
fn a_streamed_prompt_takes_one_step_then_one_bottleneck_per_token() {
    let c = compiled("llama-3.2-1b", Strategy::Pipeline);
    let sim = analytical(&c);
    let one = wafer_simulator::streamed_prefill(&c.program, &sim, 1);
    assert!((one.ttft_cycles - sim.cycles).abs() < 1e-9 * sim.cycles);
    let n = wafer_simulator::streamed_prefill(&c.program, &sim, 1000);
    let b = pipelining(&c.program, &sim, 1).bottleneck_cycles;
    assert!((n.ttft_cycles - (sim.cycles + 999.0 * b)).abs() < 1e-6 * n.ttft_cycles);
    // Streaming beats a thousand separate steps by about the stage count.
    assert!(n.ttft_cycles < 1000.0 * sim.cycles / 4.0, "{} vs {}", n.ttft_cycles, 1000.0 * sim.cycles);
}

fn event(c: &Compiled) -> FinishedSim {
    simulate_event(&c.program, &c.info, &EventLimits::default()).finished().unwrap()
}

/// One user stepping alone replays the step it came from: each token takes
/// exactly the step's cycles, so its rate is the step's.
#[test]
fn one_user_replayed_steps_at_the_single_step_rate() {
    for model in ["llama-3.2-1b", "gpt2", "qwen2.5-7b"] {
        let c = compiled(model, Strategy::Pipeline);
        let sim = event(&c);
        let r = replay_users(&c.program, &sim, 1, 4).unwrap();
        let step_us = sim.cycles / (c.program.arch.clock_ghz * 1e3);
        assert!(
            (r.makespan_us - 4.0 * step_us).abs() < 1e-6 * r.makespan_us,
            "{model}: {} vs 4 × {step_us}",
            r.makespan_us
        );
        assert!((r.aggregate_tokens_per_s - sim.tokens_per_s).abs() < 1e-6 * sim.tokens_per_s, "{model}");
    }
}

/// The acceptance check of the closed form: users pipelined through an
/// event-engine step of a pipeline mapping, replayed job by job until the
/// pipeline is full, reach the closed form's aggregate within 10%, below,
/// at and past the stage count.
#[test]
fn on_a_pipeline_the_replayed_steady_state_agrees_with_the_closed_form_within_ten_percent() {
    for model in ["llama-3.2-1b", "gpt2"] {
        let c = compiled(model, Strategy::Pipeline);
        let sim = event(&c);
        let stages = pipelining(&c.program, &sim, 1).stages;
        for users in [2, stages / 2, stages, 2 * stages] {
            let users = users.max(1);
            let closed = pipelining(&c.program, &sim, users);
            let r = replay_users(&c.program, &sim, users, REPLAY_TOKENS).unwrap();
            assert!(
                (0.9..=1.1).contains(&r.vs_closed_form),
                "{model} U = {users} ({stages} stages): replay {} vs closed form {} tok/s",
                r.aggregate_tokens_per_s,
                closed.aggregate_tokens_per_s
            );
            assert!(r.bottleneck_occupancy <= 1.0 + 1e-9, "{}", r.bottleneck_occupancy);
        }
    }
}

/// A spread mapping stacks regions on the same PEs, where a region's
/// holding time includes its waits: the replay refuses it (only the closed
/// form speaks for it), naming two regions that share PEs.
#[test]
fn a_spread_mapping_is_left_to_the_closed_form() {
    let c = compiled("llama-3.2-1b", Strategy::Spread);
    let e = replay_users(&c.program, &event(&c), 2, REPLAY_TOKENS).unwrap_err();
    assert!(matches!(e, ReplayError::SharedPes { .. }), "{e}");
}

/// Past the stage count the busiest PEs are held all the time.
#[test]
fn past_the_stage_count_the_bottleneck_is_always_busy() {
    let c = compiled("llama-3.2-1b", Strategy::Pipeline);
    let sim = event(&c);
    let stages = pipelining(&c.program, &sim, 1).stages;
    let r = replay_users(&c.program, &sim, 2 * stages, REPLAY_TOKENS).unwrap();
    assert!(r.bottleneck_occupancy > 0.95, "{}", r.bottleneck_occupancy);
    let alone = replay_users(&c.program, &sim, 1, REPLAY_TOKENS).unwrap();
    assert!(alone.bottleneck_occupancy < 0.5 / (stages as f64 / 4.0).max(1.0), "{}", alone.bottleneck_occupancy);
}

/// A replay too large to run is refused before it allocates.
#[test]
fn an_absurd_replay_is_refused() {
    let c = compiled("gpt2", Strategy::Pipeline);
    let sim = analytical(&c);
    let e = replay_users(&c.program, &sim, u32::MAX, REPLAY_TOKENS).unwrap_err();
    assert!(matches!(e, ReplayError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("--users"), "{e}");
}

//! wafer-simulator: per-token latency of a compiled program.
//!
//! * [`timing`]: the micro-timing model every engine (and the compiler's search) shares,
//!   re-exported from `wafer-cost` with the per-region closed forms ([`region_cost`]).
//! * [`analytical`]: the cost crate's program-level closed form (`wafer_cost::estimate`)
//!   reported as a `SimResult`; [`event`]: every message played on the links.
//! * [`bound`]: the machine's limit, a lower bound on a step's latency that holds for any mapping.
//! * [`result`]: `SimResult`, what every engine reports, and `FinishedSim`, the only form reports take.
//! * [`steady`]: users in flight — the steady state of several sequences pipelined through a mapping —
//!   and a prompt streamed through it.
//! * [`prefill`]: the gemm way to the first token (the cost crate's plan as a figure beside the
//!   streamed way) and its block-by-block replay.
//! * [`reference`] and [`functional`]: real numbers — a dense interpreter of the graph IR, and the
//!   compiled program run as partitioned, compared with it to prove the lowering right.
//!
//! Budgets: `try_simulate_event` and `check_functional_budget` refuse a run
//! whose estimate is above the caller's byte limit, before allocating.
//!
//! Architecture invariant: depends on `ir` and `cost` only — never on the compiler — and
//! runs only verified programs (engines take the verifier's `ProgramInfo`).

pub mod analytical;
pub mod bound;
pub mod event;
pub mod functional;
pub mod prefill;
pub mod reference;
pub mod result;
pub mod steady;

pub use wafer_cost::timing;

pub use analytical::simulate_analytical;
pub use bound::{machine_bound, Floor, MachineBound};
pub use event::{
    estimate_event, simulate_event, simulate_event_with_stats, try_simulate_event, EventEstimate, EventLimits,
    EventStats,
};
pub use prefill::{gemm_prefill, replay_gemm, replay_gemm_prefill, GemmReplay, GemmReplayError, MAX_GEMM_REPLAY_JOBS};
pub use result::{role_of, Breakdown, FinishedSim, LayerTiming, LinkLoad, Outcome, RegionTiming, SimError, SimResult};
pub use steady::{
    engine_steady, pipelining, replay_users, streamed_prefill, Pipelining, PrefillWay, ReplayError, SteadyEngine,
    SteadyError, StreamedPrefill, UsersReplay, UsersSteady, EVENT_TOKENS, REPLAY_TOKENS,
};
pub use wafer_cost::{region_cost, region_cost_rows, RegionCost};

pub use functional::{
    check_functional_budget, estimate_functional_bytes, run_functional, FunctionalError, FunctionalOutput,
};
pub use reference::{run_reference, KvState, ReferenceError, StepOutput, Weights};

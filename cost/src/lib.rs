//! wafer-cost: the cost model, shared by the compiler's mapping search and
//! the simulator's engines, so both price every step the same way.
//!
//! * [`timing`]: the micro-timing — cycles of one message, relay, chain step,
//!   streamed add, GEMV or attention tile on one PE or link.
//! * [`region`]: the per-region closed forms built on it ([`region_cost`],
//!   [`reduce_cost`]), the compiler's search objective.
//! * [`program`]: the program-level closed form ([`estimate`]): routes, row
//!   broadcasts and turns on shared PEs added along the critical path — the
//!   figures the analytical engine reports and `--strategy auto` compares.
//! * [`prefill`]: a prompt run as weight-stationary GEMMs over a
//!   decode mapping's resident weights ([`gemm_prefill`]), the "gemm" way to
//!   the first token beside streaming chunks through the mapping.
//!
//! Architecture invariant: depends on `ir` only. Pure functions of an
//! [`wafer_ir::ArchSpec`], a region's shape or a verified program: no I/O,
//! no playing of messages and no reports — those are the engines'
//! (`wafer-simulator`), and the compiler never runs an engine.

pub mod prefill;
pub mod program;
pub mod region;
pub mod timing;

pub use prefill::{
    gemm_plan, gemm_prefill, search_gemm_prefill, GemmPlan, GemmPrefill, GemmPrefillError, GemmSchedule, GemmSearch,
    PlanInput, PlanRegion,
};
pub use program::{estimate, Estimate, RegionEstimate, Starved};
pub use region::{reduce_cost, region_cost, region_cost_rows, RegionCost};

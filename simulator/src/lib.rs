//! wafer-simulator: per-token latency of a compiled program.
//!
//! * [`timing`]: the micro-timing model every engine (and the compiler's search) shares.
//! * [`result`]: `SimResult`, what every engine reports.
//!
//! Architecture invariant: depends on `ir` only — never on the compiler — and
//! runs only verified programs (engines take the verifier's `ProgramInfo`).

pub mod analytical;
pub mod event;
pub mod result;
pub mod timing;

pub use analytical::{region_cost, simulate_analytical, RegionCost};
pub use event::{simulate_event, simulate_event_with_stats, EventLimits, EventStats};
pub use result::{role_of, Breakdown, LayerTiming, LinkLoad, Outcome, RegionTiming, SimResult};

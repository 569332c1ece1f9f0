//! wafer-ir: the intermediate representations every other crate speaks.
//!
//! * [`graph`]: the graph IR — one decode step as typed tensor ops, with
//!   [`cost`] (FLOPs and bytes per op), [`verify`] and a textual form ([`text`]).
//! * [`arch`]: the machine — mesh, PE, router, system — with presets and TOML.
//! * [`spatial`]: the **spatial IR** — a decode step mapped onto the mesh — with
//!   its verifier ([`spatial_verify`], returning the `ProgramInfo` witness) and a
//!   round-tripping textual form ([`spatial_text`]).
//! * [`dataflow`]: the executable level under the spatial IR — each region's
//!   ordered tasks (receive, compute, collectives, send), lowered from its
//!   steps, with a per-PE view on demand; the engines execute it.
//! * [`limits`]: the ranges of machine-level inputs and the [`ResourceError`]
//!   engines and builders return when an estimate is above the caller's budget.
//!
//! Architecture invariant: this crate is the leaf of the workspace. It knows
//! nothing of model files, the compiler or the simulators, and performs no I/O.

pub mod arch;
pub mod cost;
pub mod dataflow;
pub mod dtype;
pub mod graph;
pub mod limits;
pub mod occupancy;
pub mod spatial;
pub mod spatial_text;
pub mod spatial_verify;
pub mod text;
pub mod verify;

pub use arch::{
    arch_preset, ArchError, ArchSpec, ARCH_PRESETS, GEMM_STEP_OVERHEAD_CYCLES, LOOP_ITERATION_CYCLES,
    MAPPED_OP_OVERHEAD_CYCLES, RAMP_LATENCY_CYCLES,
};
pub use cost::{check_costs, graph_stats, op_cost, try_op_cost, CostOverflow, GraphStats, OpCost};
pub use dataflow::{
    check_tasks, lower, route_purposes, Dataflow, Members, PeTask, Purposes, RegionTasks, Task, TaskKind,
};
pub use dtype::DType;
pub use graph::{ActFn, Elementwise, Graph, GraphBuilder, NormKind, Op, OpId, OpKind, Tensor, TensorId, TensorKind};
pub use limits::{fmt_bytes, ResourceError};
pub use occupancy::{Cell, Occupancy};
pub use spatial::{
    copy_name, footprints_meet, for_each_message, parse_copy_name, route_footprint, route_messages, sram_need,
    tail_legs, xy_path, Dir, Leg, Message, Pe, Program, Purpose, Rect, Reduce, Region, RegionId, Route, RouteId,
    RouteKind, Sram, Step, Work,
};
pub use spatial_text::{parse_program, print_program, ParseError};
pub use spatial_verify::{
    route_message_bound, verify_program, verify_program_checks, Checks, ProgramDiag, ProgramErrors, ProgramInfo,
};
pub use text::print_graph;
pub use verify::{verify_graph, GraphDiag, GraphErrors};

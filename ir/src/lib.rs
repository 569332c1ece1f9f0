//! wafer-ir: the intermediate representations every other crate speaks.
//!
//! * [`graph`]: the graph IR — one decode step as typed tensor ops, with
//!   [`cost`] (FLOPs and bytes per op), [`verify`] and a textual form ([`text`]).
//!
//! Architecture invariant: this crate is the leaf of the workspace. It knows
//! nothing of model files, hardware presets, the compiler or the simulators,
//! and performs no I/O.

pub mod cost;
pub mod dtype;
pub mod graph;
pub mod text;
pub mod verify;

pub use cost::{graph_stats, op_cost, GraphStats, OpCost};
pub use dtype::DType;
pub use graph::{ActFn, Elementwise, Graph, GraphBuilder, NormKind, Op, OpId, OpKind, Tensor, TensorId, TensorKind};
pub use text::print_graph;
pub use verify::{verify_graph, GraphDiag, GraphErrors};

//! wafer-gpu: the GPU-style baseline that wafer's predictions are compared with.
//!
//! * [`spec`]: `GpuSpec`, the datasheet figures of a GPU; presets from the
//!   reference table, user specs from TOML.
//! * [`model`]: `estimate(graph, gpu, n)`, the time of one decode step on N
//!   tensor-parallel GPUs (and `estimate_pipeline` / `estimate_auto`: in P
//!   pipeline stages), what bounds it and where it goes.
//! * [`prefill`]: `estimate_prefill(graph, gpu, n, opts)`, the time to first
//!   token of a prefill graph, and its fit on the measured TTFT rows.
//! * [`mixed`]: `estimate_mixed`, a prompt prefilled in chunks inside the
//!   decode steps of a running batch (chunked prefill): the new request's
//!   time to first token under load and the decoders' time per token meanwhile.
//! * [`speculative`]: speculative decoding's effective time per token from
//!   the draft's decode step and the target's (k + 1)-token verify step.
//! * [`calibrate`]: the measured latencies, the model's error on them, and
//!   the fit that recomputes the model's constants.
//!
//! Architecture invariant: text in, data out. No file reads, no printing, no
//! process exit; errors are `GpuError`. Every constant is a datasheet figure
//! (from the embedded reference table) or fitted to the embedded
//! measurements by `fit_params` (decode, `model::FITTED`) or `fit_prefill`
//! (prefill, `prefill::PREFILL_FITTED`).

pub mod calibrate;
mod csv;
pub mod error;
pub mod mixed;
pub mod model;
pub mod prefill;
pub mod spec;
pub mod speculative;

pub use calibrate::{
    calibration_report, calibration_report_with, fit_params, measured_rows, CalibrationReport, CalibrationRow,
    MeasuredRow,
};
pub use error::{DoesNotFit, GpuError};
pub use mixed::{estimate_mixed, MixedEstimate, MixedStep, MAX_MIX_CHUNKS};
pub use model::{
    estimate, estimate_auto, estimate_opts, estimate_pipeline, estimate_with, Bound, Breakdown, GpuEstimate,
    GpuOptions, MemoryUse, ModelParams, DEFAULT_MEM_HEADROOM, FITTED,
};
pub use prefill::{
    estimate_prefill, estimate_prefill_pipeline, fit_prefill, ttft_calibration_report, ttft_calibration_report_with,
    PrefillBreakdown, PrefillConstants, PrefillEstimate, TtftCalibrationReport, TtftRow, PREFILL_FITTED,
};
pub use spec::{gpu_names, gpu_preset, gpu_presets, GpuSpec, LinkKind};
pub use speculative::{speculative, SpecEstimate, SpecParams, MAX_SPEC_K};

//! Typed errors of the GPU baseline. Payloads name the field, the value and
//! the allowed range (or the numbers that do not fit); the CLI renders them.

/// Why a GPU spec could not be read or a GPU estimate could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuError {
    #[error("unknown GPU `{name}`; presets: {presets}")]
    UnknownGpu { name: String, presets: String },
    #[error("{source_name}: not a valid GPU spec: {message}")]
    Toml { source_name: String, message: String },
    #[error("{source_name}: field `{field}` is {value}; allowed: {allowed}")]
    InvalidSpec { source_name: String, field: &'static str, value: String, allowed: String },
    #[error("{source_name}: line {line}: {message}")]
    Table { source_name: String, line: usize, message: String },
    #[error("{gpus} GPU(s) cannot split {heads} attention heads; allowed GPU counts: {allowed}")]
    GpuCount { gpus: u32, heads: u64, allowed: String },
    #[error(
        "{model} does not fit: it needs {need_gb:.1} GB per GPU (weights {weights_gb:.1} GB + KV cache {kv_gb:.1} GB in all) \
         on {gpus} x {gpu} with {have_gb:.0} GB each; {advice}"
    )]
    DoesNotFit {
        model: String,
        gpu: String,
        gpus: u32,
        need_gb: f64,
        have_gb: f64,
        weights_gb: f64,
        kv_gb: f64,
        /// The fewest GPUs whose memory holds it (ignoring how heads split), if any count does.
        min_gpus: Option<u32>,
        /// The smallest tensor-parallel count (a divisor of the head count) that holds it, if any.
        min_tp_gpus: Option<u32>,
        /// The two numbers above, in words.
        advice: String,
    },
    #[error("{gpu} has no {dtype} compute figure (field `{field}`); give it in a TOML spec or pick another activation dtype")]
    NoComputeFigure { gpu: String, dtype: String, field: &'static str },
    #[error("calibration row {id}: {message}")]
    Calibration { id: String, message: String },
}

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
    #[error(transparent)]
    DoesNotFit(Box<DoesNotFit>),
    #[error("{gpu} has no {dtype} compute figure (field `{field}`); give it in a TOML spec or pick another activation dtype")]
    NoComputeFigure { gpu: String, dtype: String, field: &'static str },
    #[error("--{field} is {value}; allowed: {allowed}")]
    InvalidOption { field: &'static str, value: String, allowed: String },
    #[error("calibration row {id}: {message}")]
    Calibration { id: String, message: String },
    #[error(
        "the decoders' KV cache and the new prompt's do not fit beside the weights on each {gpu}: they need {need_gb:.2} GB \
         per GPU, {usable_gb:.2} GB is usable; a smaller --batch, a shorter prompt, more GPUs or a lower --gpu-mem-headroom"
    )]
    MixedDoesNotFit { gpu: String, need_gb: f64, usable_gb: f64 },
    #[error("the mixed step's graph cannot be built: {message}")]
    MixedGraph { message: String },
}

/// A model whose weights and KV cache do not fit in the GPUs' memory.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{model} does not fit on {gpus} × {gpu}{stages} ({have_gb:.0} GB each, {usable_gb:.1} GB of it for weights and KV cache \
     after the {headroom_pct:.0}% headroom): it needs {need_gb:.1} GB per GPU \
     ({weights_gb:.1} GB of weights and {kv_gb:.1} GB of KV cache in all); {advice}",
    stages = if *pipeline_stages > 1 { format!(" in each of {pipeline_stages} pipeline stages") } else { String::new() }
)]
pub struct DoesNotFit {
    pub model: String,
    pub gpu: String,
    /// GPUs in each stage's tensor-parallel group.
    pub gpus: u32,
    /// Pipeline stages asked for (1: tensor parallelism alone).
    pub pipeline_stages: u32,
    pub need_gb: f64,
    pub have_gb: f64,
    /// What weights and KV cache may fill on each GPU: capacity less the headroom, GB.
    pub usable_gb: f64,
    /// The headroom, % of capacity.
    pub headroom_pct: f64,
    pub weights_gb: f64,
    pub kv_gb: f64,
    /// The fewest GPUs whose memory holds it (ignoring how heads split), if any count does.
    pub min_gpus: Option<u32>,
    /// The smallest tensor-parallel count (a divisor of the head count) that holds it, if any.
    pub min_tp_gpus: Option<u32>,
    /// A (tensor-parallel GPUs, stages) split that holds it: the fewest stages with
    /// this group, else the fewest GPUs in all; `None` if none does.
    pub min_pipeline: Option<(u32, u32)>,
    /// The two numbers above, in words.
    pub advice: String,
}

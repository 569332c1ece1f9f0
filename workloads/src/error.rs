//! Typed errors of the workloads crate. Payloads name the source, the field
//! and the allowed range; the CLI renders them once.

/// A model description that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}: not valid JSON: {message}")]
    Json { source_name: String, message: String },
    #[error("{source_name}: expected a JSON object at the top level")]
    NotObject { source_name: String },
    #[error("{source_name}: missing field `{field}` ({expected})")]
    Missing { source_name: String, field: String, expected: String },
    #[error("{source_name}: field `{field}` is {value}; allowed: {allowed}")]
    Invalid { source_name: String, field: String, value: String, allowed: String },
    #[error("{source_name}: unknown model_type `{found}`; supported model types: {supported}")]
    UnknownModelType { source_name: String, found: String, supported: String },
    #[error("{source_name}: {message}")]
    Inconsistent { source_name: String, message: String },
    #[error("unknown model `{name}`: not a preset name and not a path to a config.json; presets: {presets}")]
    UnknownPreset { name: String, presets: String },
}

/// Decode parameters that cannot build a graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{field} is {value}; allowed: {allowed}")]
    Invalid { field: &'static str, value: String, allowed: String },
}

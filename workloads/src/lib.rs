//! wafer-workloads: models as users have them, and the decode graphs they imply.
//!
//! * [`model`]: `ModelConfig`, the description every later stage reads.
//! * [`hf`]: the Hugging Face `config.json` reader (text in, config out).
//! * [`presets`](fn@presets): built-in configs (the `presets/` folder, embedded).
//! * [`decode`]: the decode-step graph builder.
//! * [`prefill`]: the prefill-step graph builder (N prompt tokens over C cached).
//!
//! Architecture invariant: no I/O — callers read files and pass their text.

pub mod decode;
pub mod error;
pub mod hf;
pub mod model;
pub mod prefill;

pub use decode::{decode_graph, DecodeParams};
pub use error::{BuildError, ConfigError};
pub use hf::parse_hf_config;
pub use model::{Family, MlpStyle, ModelConfig, NormStyle};
pub use prefill::{prefill_graph, PrefillParams};

/// Built-in presets: name and embedded `config.json` text.
const PRESETS: &[(&str, &str)] = &[
    ("llama-3.2-1b", include_str!("../presets/llama-3.2-1b.json")),
    ("llama-3.2-3b", include_str!("../presets/llama-3.2-3b.json")),
    ("llama-3.1-8b", include_str!("../presets/llama-3.1-8b.json")),
    ("llama-3.1-70b", include_str!("../presets/llama-3.1-70b.json")),
    ("llama-3.1-405b", include_str!("../presets/llama-3.1-405b.json")),
    ("llama-2-7b", include_str!("../presets/llama-2-7b.json")),
    ("llama-2-13b", include_str!("../presets/llama-2-13b.json")),
    ("llama-2-70b", include_str!("../presets/llama-2-70b.json")),
    ("codellama-34b", include_str!("../presets/codellama-34b.json")),
    ("mistral-7b-v0.1", include_str!("../presets/mistral-7b-v0.1.json")),
    ("mixtral-8x7b", include_str!("../presets/mixtral-8x7b.json")),
    ("qwen2.5-7b", include_str!("../presets/qwen2.5-7b.json")),
    ("qwen2.5-72b", include_str!("../presets/qwen2.5-72b.json")),
    ("gpt2", include_str!("../presets/gpt2.json")),
    ("gpt-j-6b", include_str!("../presets/gpt-j-6b.json")),
];

/// Aliases: other released checkpoints with identical shapes.
const ALIASES: &[(&str, &str)] = &[("llama-3-8b", "llama-3.1-8b"), ("llama-3.3-70b", "llama-3.1-70b")];

/// Names of all presets and aliases, in listing order.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.0).chain(ALIASES.iter().map(|a| a.0)).collect()
}

/// The preset called `name` (or an alias), named as asked.
pub fn preset(name: &str) -> Result<ModelConfig, ConfigError> {
    let target = ALIASES.iter().find(|a| a.0 == name).map_or(name, |a| a.1);
    let Some((_, text)) = PRESETS.iter().find(|p| p.0 == target) else {
        return Err(ConfigError::UnknownPreset { name: name.into(), presets: preset_names().join(", ") });
    };
    parse_hf_config(text, &format!("preset {target}"), name)
}

/// Every preset and alias, parsed.
pub fn presets() -> Vec<ModelConfig> {
    preset_names().into_iter().map(|n| preset(n).expect("built-in presets parse")).collect()
}

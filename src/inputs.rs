//! Turning flag values into domain inputs: model names or files, dtypes.
//! The only place (with output writing) where the CLI touches the file system.

use crate::Exit;
use std::path::Path;
use wafer_workloads::{parse_hf_config, preset, preset_names, ModelConfig};

/// A preset name, or a path to a Hugging Face `config.json` (or a folder holding one).
pub fn load_model(spec: &str) -> Result<ModelConfig, Exit> {
    if preset_names().contains(&spec) {
        return Ok(preset(spec)?);
    }
    let path = Path::new(spec);
    let looks_like_path = spec.contains('/') || spec.contains('\\') || spec.ends_with(".json") || path.exists();
    if !looks_like_path {
        return Err(preset(spec).unwrap_err().into());
    }
    let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Exit { code: 2, message: format!("cannot read model config {}: {e}", file.display()) })?;
    let name = model_name(&file);
    Ok(parse_hf_config(&text, &file.display().to_string(), &name)?)
}

/// `.../Llama-3.1-8B/config.json` -> `Llama-3.1-8B`; `foo.json` -> `foo`.
fn model_name(file: &Path) -> String {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "config" {
        if let Some(parent) = file.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str()) {
            return parent.to_string();
        }
    }
    stem.to_string()
}

/// A GPU preset name (see `wafer gpu --list`), or a path to a TOML GPU spec.
pub fn load_gpu(spec: &str) -> Result<wafer_gpu::GpuSpec, Exit> {
    if spec.ends_with(".toml") || spec.contains('/') || spec.contains('\\') {
        let text = std::fs::read_to_string(spec)
            .map_err(|e| Exit { code: 2, message: format!("cannot read GPU spec {spec}: {e}") })?;
        return Ok(wafer_gpu::GpuSpec::from_toml(&text, spec)?);
    }
    Ok(wafer_gpu::gpu_preset(spec)?)
}

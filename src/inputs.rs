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

/// An arch preset (`wse2`, `wse3`, `mesh:WxH`) or a path to a TOML arch spec.
pub fn load_arch(spec: &str) -> Result<wafer_ir::ArchSpec, Exit> {
    if spec.ends_with(".toml") || spec.contains('/') || spec.contains('\\') {
        let text = std::fs::read_to_string(spec)
            .map_err(|e| Exit { code: 2, message: format!("cannot read arch spec {spec}: {e}") })?;
        return Ok(wafer_ir::ArchSpec::from_toml(&text, spec)?);
    }
    Ok(wafer_ir::arch_preset(spec)?)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename,
/// so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Exit> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| Exit { code: 2, message: format!("cannot write {}: {e}", path.display()) };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

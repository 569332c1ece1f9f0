//! Turning flag values into domain inputs: model names or files, dtypes; and
//! writing output files (atomically, with the umask's mode). The only place
//! (with `report_out`) where the CLI touches the file system.

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

/// Fails early (before any work) unless `path` can be an output file: its
/// folder exists and it is not itself a folder.
pub fn check_output_file(path: &Path) -> Result<(), Exit> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let bad = |why: String| Err(Exit { code: 2, message: format!("cannot write {}: {why}", path.display()) });
    if path.is_dir() {
        return bad("it is a folder".into());
    }
    if !dir.is_dir() {
        return bad(format!("folder {} does not exist", dir.display()));
    }
    Ok(())
}

/// The mode new files ask for (0666), narrowed by the umask as `open` does
/// (tempfile's own default is 0600 whatever the umask).
pub fn file_permissions() -> Option<std::fs::Permissions> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(std::fs::Permissions::from_mode(0o666))
    }
    #[cfg(not(unix))]
    None
}

/// The mode new folders ask for (0777), narrowed by the umask as `mkdir` does.
pub fn dir_permissions() -> Option<std::fs::Permissions> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(std::fs::Permissions::from_mode(0o777))
    }
    #[cfg(not(unix))]
    None
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename,
/// so a reader never sees half a file. The file gets the umask's mode, like
/// any file a shell redirection makes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Exit> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| Exit { code: 2, message: format!("cannot write {}: {e}", path.display()) };
    let mut b = tempfile::Builder::new();
    if let Some(perm) = file_permissions() {
        b.permissions(perm);
    }
    let mut tmp = b.tempfile_in(dir).map_err(fail)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(fail)?;
    // Replacing a file keeps its mode (as an editor does).
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions()).map_err(fail)?;
    }
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

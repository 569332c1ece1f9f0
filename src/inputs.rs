//! Turning flag values into domain inputs: model names or files, dtypes; the
//! memory budget (`--max-memory`) every engine and the compiler are given; and
//! writing output files (atomically, with the umask's mode). The only place
//! (with `report_out`) where the CLI touches the file system: every input file
//! is read through [`read_input`], with a size cap.

use crate::Exit;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;
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
    let text = read_input(&file, "model config", MAX_INPUT_BYTES)?;
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
        let text = read_input(Path::new(spec), "GPU spec", MAX_INPUT_BYTES)?;
        return Ok(wafer_gpu::GpuSpec::from_toml(&text, spec)?);
    }
    Ok(wafer_gpu::gpu_preset(spec)?)
}

/// An arch preset (`wse2`, `wse3`, `mesh:WxH`) or a path to a TOML arch spec.
pub fn load_arch(spec: &str) -> Result<wafer_ir::ArchSpec, Exit> {
    if spec.ends_with(".toml") || spec.contains('/') || spec.contains('\\') {
        let text = read_input(Path::new(spec), "arch spec", MAX_INPUT_BYTES)?;
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

/// Largest input file read: 64 MiB (a full-wafer program is ~1 MB, a config
/// a few KB). `sweep.json` shards get [`MAX_SWEEP_JSON_BYTES`].
pub const MAX_INPUT_BYTES: u64 = 64 << 20;
/// Largest `sweep.json` `wafer merge` reads: 1 GiB (~1.5 million rows).
pub const MAX_SWEEP_JSON_BYTES: u64 = 1 << 30;

/// Reads a text input of at most `cap` bytes; `what` names it in errors
/// ("model config", "sweep spec", …). A larger file, or a device that never
/// ends (`/dev/zero`), is an error after reading `cap + 1` bytes at most.
pub fn read_input(path: &Path, what: &str, cap: u64) -> Result<String, Exit> {
    let fail = |m: String| Exit { code: 2, message: format!("cannot read {what} {}: {m}", path.display()) };
    let f = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(fail("is a folder".into()));
    }
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > cap {
        return Err(fail(format!("larger than the {} MiB an input may be", cap >> 20)));
    }
    String::from_utf8(bytes).map_err(|e| fail(format!("not UTF-8 text ({e})")))
}

static MAX_MEMORY: OnceLock<u64> = OnceLock::new();

/// Sets the memory budget for this process (from `--max-memory`, or the default).
pub fn set_max_memory(bytes: u64) {
    let _ = MAX_MEMORY.set(bytes);
}

/// The memory budget, bytes, that engines and the compiler must stay within.
pub fn max_memory() -> u64 {
    *MAX_MEMORY.get_or_init(default_max_memory)
}

/// Half the machine's physical memory, and at most half of the address-space
/// limit (`ulimit -v`) when one is set: the engines' estimates are rough, and
/// the allocator and threads need room of their own.
pub fn default_max_memory() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf and getrlimit only read process and system figures.
        let (pages, page, limit) = unsafe {
            let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            let limit = if libc::getrlimit(libc::RLIMIT_AS, &mut rl) == 0 && rl.rlim_cur != libc::RLIM_INFINITY {
                #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
                Some(rl.rlim_cur as u64)
            } else {
                None
            };
            (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE), limit)
        };
        let phys = if pages > 0 && page > 0 { pages as u64 * page as u64 } else { 8 << 30 };
        (phys / 2).min(limit.map_or(u64::MAX, |l| l / 2))
    }
    #[cfg(not(unix))]
    {
        4 << 30
    }
}

/// `--max-memory`: bytes, with an optional binary suffix: `4G`, `512M`, `64K`, `1T`
/// (`GiB`, `GB` and `g` read the same: powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let scale: u64 = match unit.trim().to_ascii_lowercase().trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("`{s}` is not a size; expected bytes such as 4G, 512M or 1073741824")),
    };
    let x: f64 =
        num.parse().map_err(|_| format!("`{s}` is not a size; expected bytes such as 4G, 512M or 1073741824"))?;
    let bytes = x * scale as f64;
    if !(bytes >= (1 << 20) as f64 && bytes <= (1u64 << 50) as f64) {
        return Err(format!("`{s}` is out of range; allowed: 1M..=1024T"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_binary_suffixes() {
        assert_eq!(parse_bytes("4G"), Ok(4 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("1073741824"), Ok(1 << 30));
        assert!(parse_bytes("4X").is_err() && parse_bytes("").is_err() && parse_bytes("10").is_err());
    }
}

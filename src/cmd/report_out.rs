//! Writing a report folder (`--out DIR`) so that readers never see half of one.
//!
//! The files are written into a fresh sibling folder `.DIR.tmp-*`, then renamed
//! to `DIR` in one step. An existing non-empty `DIR` is refused unless
//! `--force`; with `--force` the old folder is renamed aside, the new one
//! renamed in, and only then is the old one deleted. An empty `DIR` is replaced.

use crate::Exit;
use std::path::Path;
use wafer_reports::OutFile;

/// The `--out DIR` and `--force` flags of the commands that write report folders.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutArgs {
    /// Write a report folder here (report.json, summary.md, report.html, charts, ...).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Replace an existing non-empty report folder.
    #[arg(long, requires = "out")]
    pub force: bool,
}

fn io<'a>(what: &str, path: &'a Path) -> impl Fn(std::io::Error) -> Exit + 'a {
    let what = what.to_string();
    move |e| Exit { code: 2, message: format!("cannot {what} {}: {e}", path.display()) }
}

/// Fails early (before any work) when `dir` exists, is not empty and `force` is off.
pub fn check_target(dir: &Path, force: bool) -> Result<(), Exit> {
    if dir.exists() && !force {
        let empty = std::fs::read_dir(dir).map_err(io("read", dir))?.next().is_none();
        if !empty {
            return Err(Exit {
                code: 2,
                message: format!("{} exists and is not empty; pass --force to replace it", dir.display()),
            });
        }
    }
    Ok(())
}

/// Writes `files` as the folder `dir`, atomically (see the module doc).
pub fn write_folder(dir: &Path, files: &[OutFile], force: bool) -> Result<(), Exit> {
    check_target(dir, force)?;
    let parent = dir.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let stem = dir.file_name().and_then(|s| s.to_str()).unwrap_or("report");
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}.tmp-"))
        .tempdir_in(parent)
        .map_err(io("create a folder in", parent))?;
    for f in files {
        let path = tmp.path().join(&f.name);
        std::fs::write(&path, &f.bytes).map_err(io("write", &path))?;
    }
    if dir.exists() {
        let is_empty = std::fs::read_dir(dir).map_err(io("read", dir))?.next().is_none();
        if is_empty {
            std::fs::remove_dir(dir).map_err(io("replace", dir))?;
        } else {
            // force: swap the old folder aside, the new one in, then delete the old.
            let old = tempfile::Builder::new()
                .prefix(&format!(".{stem}.old-"))
                .tempdir_in(parent)
                .map_err(io("create a folder in", parent))?;
            let aside = old.path().join("previous");
            std::fs::rename(dir, &aside).map_err(io("move aside", dir))?;
            std::fs::rename(tmp.path(), dir).map_err(io("create", dir))?;
            let _ = tmp.keep();
            drop(old); // deletes the previous report
            return Ok(());
        }
    }
    std::fs::rename(tmp.path(), dir).map_err(io("create", dir))?;
    let _ = tmp.keep();
    Ok(())
}

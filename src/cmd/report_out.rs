//! Writing a report folder (`--out DIR`) so that readers never see half of
//! one and nothing that is not a wafer report is ever replaced.
//!
//! [`prepare`] runs before any work: it resolves `DIR` (its parent
//! canonicalised, so `cd report && wafer run --out ../report` names the same
//! folder however it is spelled), decides whether it may be replaced, and
//! creates the hidden sibling folder `.DIR.tmp-*` the files go into (so an
//! unwritable place fails at once, not after the simulation). A `DIR` that is
//! absent or empty is written; one that holds a wafer report (`report.json`,
//! `sweep.json` or `frontier.json` with a `schema_version`, and only files a
//! report writes) is
//! replaced only with `--force`; anything else — a file, a folder of other
//! things — is refused, `--force` or not.
//!
//! [`Target::write`] fills the temporary folder, checks `DIR` again, moves the
//! old folder aside, renames the new one in, and only then deletes the old
//! one. If the new one cannot be put in place, the old one is moved back, and
//! the message says where it is. Files and folders get the umask's mode.

use crate::inputs::dir_permissions;
use crate::Exit;
use std::io;
use std::path::{Component, Path, PathBuf};
use wafer_reports::folder::{is_report_file, report_marker, MARKER_FILES};
use wafer_reports::OutFile;

/// The `--out DIR` and `--force` flags of the commands that write report folders.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutArgs {
    /// Write a report folder here (report.json, summary.md, report.html, charts, ...).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace an existing report folder (only one wafer wrote, or an empty one).
    #[arg(long, requires = "out")]
    pub force: bool,
}

impl OutArgs {
    /// [`prepare`] for `--out`, when given.
    pub fn prepare(&self) -> Result<Option<Target>, Exit> {
        self.out.as_deref().map(|d| prepare(d, self.force)).transpose()
    }
}

fn err(message: String) -> Exit {
    Exit { code: 2, message }
}

/// A resolved output folder with its temporary sibling, ready to be written.
#[derive(Debug)]
pub struct Target {
    /// As the user wrote it, for messages.
    shown: PathBuf,
    /// Absolute, with a canonical parent.
    dir: PathBuf,
    force: bool,
    tmp: tempfile::TempDir,
}

/// What is at the output path now.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Absent,
    Empty,
    /// A folder wafer wrote (its marker file is named).
    Report(&'static str),
}

/// Resolves `dir`, checks it may be written (see the module doc) and creates
/// the temporary folder beside it. Creates missing parent folders.
pub fn prepare(dir: &Path, force: bool) -> Result<Target, Exit> {
    let shown = dir.to_path_buf();
    let resolved = resolve(dir)?;
    state(&resolved, &shown, force)?;
    let (parent, stem) = split(&resolved, &shown)?;
    let prefix = format!(".{stem}.tmp-");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    if let Some(p) = dir_permissions() {
        b.permissions(p);
    }
    let tmp = b.tempdir_in(&parent).map_err(|e| {
        err(format!("cannot write {}: cannot create a folder in {}: {e}", shown.display(), parent.display()))
    })?;
    Ok(Target { shown, dir: resolved, force, tmp })
}

/// `dir` made absolute with its parent canonicalised (created when missing);
/// an existing `dir` is canonicalised itself, so `.` and `..` work.
fn resolve(dir: &Path) -> Result<PathBuf, Exit> {
    let shown = dir.display();
    if dir.as_os_str().is_empty() {
        return Err(err("--out is empty; give a folder".into()));
    }
    if std::fs::symlink_metadata(dir).is_ok() {
        return std::fs::canonicalize(dir).map_err(|e| err(format!("cannot resolve {shown}: {e}")));
    }
    let name = match dir.components().next_back() {
        Some(Component::Normal(n)) => n.to_owned(),
        _ => return Err(err(format!("cannot resolve {shown}: it does not end in a folder name"))),
    };
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
    let parent = std::fs::canonicalize(parent).map_err(|e| err(format!("cannot resolve {}: {e}", parent.display())))?;
    Ok(parent.join(name))
}

/// The parent folder and the name of a resolved path.
fn split(dir: &Path, shown: &Path) -> Result<(PathBuf, String), Exit> {
    match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => Ok((p.to_path_buf(), n.to_string_lossy().into_owned())),
        _ => Err(err(format!("refusing to write a report folder over {} ({})", shown.display(), dir.display()))),
    }
}

/// What `dir` holds, and whether it may be replaced (`force`).
fn state(dir: &Path, shown: &Path, force: bool) -> Result<State, Exit> {
    let shown = shown.display();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::Absent),
        Err(e) => return Err(err(format!("cannot read {shown}: {e}"))),
    };
    if !meta.is_dir() {
        return Err(err(format!("{shown} exists and is not a folder; refusing to replace it (choose another --out)")));
    }
    let mut odd = Vec::new();
    let mut marker = None;
    let mut count = 0usize;
    for entry in std::fs::read_dir(dir).map_err(|e| err(format!("cannot read {shown}: {e}")))? {
        let entry = entry.map_err(|e| err(format!("cannot read {shown}: {e}")))?;
        count += 1;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file || !is_report_file(&name) {
            odd.push(if is_file { name } else { format!("{name}/") });
            continue;
        }
        if let Some(m) = MARKER_FILES.iter().find(|m| **m == name) {
            // Reports are megabytes at most; a huge file is not one.
            let small = entry.metadata().map(|md| md.len() <= 256 << 20).unwrap_or(false);
            if small && std::fs::read_to_string(entry.path()).is_ok_and(|t| report_marker(&name, &t)) {
                marker = Some(*m);
            }
        }
    }
    if count == 0 {
        return Ok(State::Empty);
    }
    let Some(marker) = marker.filter(|_| odd.is_empty()) else {
        odd.sort();
        let why = if odd.is_empty() {
            "it has no report.json, sweep.json, frontier.json or roundtrip.json with a schema_version".to_string()
        } else {
            let shown_odd: Vec<&str> = odd.iter().take(5).map(String::as_str).collect();
            let more = if odd.len() > 5 { format!(" and {} more", odd.len() - 5) } else { String::new() };
            format!("it holds {}{more}, which no wafer report writes", shown_odd.join(", "))
        };
        return Err(err(format!(
            "{shown} is not a wafer report folder ({why}); --force replaces only a folder wafer wrote or an empty one, \
             so choose another --out or move it away"
        )));
    };
    if !force {
        return Err(err(format!("{shown} holds a wafer report ({marker}); pass --force to replace it")));
    }
    Ok(State::Report(marker))
}

/// Renames, as `std::fs::rename` (a seam for the failure tests).
type Mv<'a> = &'a dyn Fn(&Path, &Path) -> io::Result<()>;

impl Target {
    /// Where the folder goes, as the user wrote it.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Writes `files` as the folder (see the module doc).
    pub fn write(self, files: &[OutFile]) -> Result<(), Exit> {
        self.write_with(files, &|a, b| std::fs::rename(a, b))
    }

    fn write_with(self, files: &[OutFile], mv: Mv) -> Result<(), Exit> {
        let shown = self.shown.display().to_string();
        for f in files {
            let path = self.tmp.path().join(&f.name);
            std::fs::write(&path, &f.bytes)
                .map_err(|e| err(format!("cannot write {}: {e}; {shown} was not changed", path.display())))?;
        }
        // It may have changed while the run ran: the same rules again.
        let now = state(&self.dir, &self.shown, self.force)
            .map_err(|e| err(format!("{}; nothing was written", e.message)))?;
        let (parent, stem) = split(&self.dir, &self.shown)?;
        if now == State::Absent {
            mv(self.tmp.path(), &self.dir)
                .map_err(|e| err(format!("cannot create {shown}: {e}; nothing was changed")))?;
            let _ = self.tmp.keep();
            return Ok(());
        }
        let old = tempfile::Builder::new()
            .prefix(&format!(".{stem}.old-"))
            .tempdir_in(&parent)
            .map_err(|e| err(format!("cannot replace {shown}: {e}; {shown} was not changed")))?;
        let aside = old.path().join("previous");
        mv(&self.dir, &aside).map_err(|e| err(format!("cannot move {shown} aside: {e}; {shown} was not changed")))?;
        if let Err(e) = mv(self.tmp.path(), &self.dir) {
            return Err(match mv(&aside, &self.dir) {
                Ok(()) => err(format!(
                    "cannot put the new report in place at {shown}: {e}; the previous folder is back in place"
                )),
                Err(e2) => {
                    let kept = old.keep();
                    err(format!(
                        "cannot put the new report in place at {shown}: {e}; the previous folder could not be moved back \
                         ({e2}): it is at {}",
                        kept.join("previous").display()
                    ))
                }
            });
        }
        let _ = self.tmp.keep();
        let old_path = old.path().to_path_buf();
        if let Err(e) = old.close() {
            eprintln!(
                "warning: the new report is in place, but the previous one could not be deleted ({e}): it is in {}",
                old_path.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn report(dir: &Path, extra: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("report.json"), format!("{{\"schema_version\": 1, \"v\": \"{extra}\"}}")).unwrap();
        std::fs::write(dir.join("summary.md"), extra).unwrap();
    }

    #[test]
    fn when_the_new_folder_cannot_be_put_in_place_the_previous_one_is_moved_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("report");
        report(&dir, "old");
        let t = prepare(&dir, true).unwrap();
        let calls = Cell::new(0);
        // The second rename (new folder into place) fails; the others work.
        let mv = |a: &Path, b: &Path| {
            calls.set(calls.get() + 1);
            if calls.get() == 2 {
                Err(io::Error::other("disk says no"))
            } else {
                std::fs::rename(a, b)
            }
        };
        let e = t.write_with(&[OutFile::new("report.json", "{\"schema_version\": 1}")], &mv).unwrap_err();
        assert!(
            e.message.contains("disk says no") && e.message.contains("the previous folder is back in place"),
            "{}",
            e.message
        );
        assert_eq!(std::fs::read_to_string(dir.join("summary.md")).unwrap(), "old");
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("report")], "no hidden folders are left behind");
    }

    #[test]
    fn when_the_previous_folder_cannot_be_moved_back_the_message_says_where_it_is() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("report");
        report(&dir, "old");
        let t = prepare(&dir, true).unwrap();
        let calls = Cell::new(0);
        let mv = |a: &Path, b: &Path| {
            calls.set(calls.get() + 1);
            if calls.get() >= 2 {
                Err(io::Error::other("disk says no"))
            } else {
                std::fs::rename(a, b)
            }
        };
        let e = t.write_with(&[OutFile::new("report.json", "{}")], &mv).unwrap_err();
        let at = e.message.rsplit("it is at ").next().unwrap();
        assert_eq!(std::fs::read_to_string(Path::new(at).join("summary.md")).unwrap(), "old", "{}", e.message);
    }

    #[test]
    fn a_folder_that_changed_during_the_run_is_checked_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        let t = prepare(&dir, true).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let e = t.write(&[OutFile::new("report.json", "{}")]).unwrap_err();
        assert!(e.message.contains("notes.txt") && e.message.contains("nothing was written"), "{}", e.message);
        assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
    }
}

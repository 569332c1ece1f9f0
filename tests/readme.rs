//! Every command the README shows runs as written, on the files this
//! repository ships.
//!
//! The test reads README.md, takes every line of its ```sh code blocks that
//! runs `wafer` (a line starting with `wafer ` or a `for … do wafer …` loop),
//! and runs each through `sh -c` in one scratch folder, in README order (so
//! `wafer compile -o llama.wafer` precedes `wafer simulate llama.wafer` and the
//! shards precede their merge), with the built binary first on `PATH` and the
//! repository's `examples/` and `ci/` reachable as they are from a checkout.
//! A block that is a Slurm job-array script (`#SBATCH --array=A-B`) runs once
//! per array index with `SLURM_ARRAY_TASK_ID` set, as Slurm would. Each
//! command must exit 0. `cargo …` lines (the set-up) are not run here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One command to run, with the environment its block gives it.
#[derive(Debug)]
struct Example {
    line: String,
    env: Vec<(String, String)>,
}

/// The `wafer` commands of the README's ```sh blocks, in order.
fn readme_examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match &mut block {
            None if line.trim_start().starts_with("```sh") => block = Some(Vec::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                let lines = block.take().unwrap_or_default();
                out.extend(block_examples(&lines));
            }
            Some(b) => b.push(line),
        }
    }
    out
}

fn block_examples(lines: &[&str]) -> Vec<Example> {
    // A Slurm array script: its commands run once per index.
    let array = lines.iter().find_map(|l| l.trim().strip_prefix("#SBATCH --array=")).map(|r| {
        let (a, b) = r.split_once('-').expect("--array=A-B");
        a.trim().parse::<u32>().expect("array start")..=b.trim().parse::<u32>().expect("array end")
    });
    let commands: Vec<String> = lines
        .iter()
        .map(|l| strip_comment(l.trim()))
        .filter(|l| l.starts_with("wafer ") || (l.starts_with("for ") && l.contains("do wafer ")))
        .collect();
    match array {
        None => commands.into_iter().map(|line| Example { line, env: vec![] }).collect(),
        Some(ids) => ids
            .flat_map(|i| {
                commands
                    .iter()
                    .map(move |c| Example { line: c.clone(), env: vec![("SLURM_ARRAY_TASK_ID".into(), i.to_string())] })
            })
            .collect(),
    }
}

/// The command without its trailing `# comment` (two spaces or more before `#`).
fn strip_comment(line: &str) -> String {
    match line.find("  #") {
        Some(at) => line[..at].trim_end().to_string(),
        None => line.to_string(),
    }
}

#[cfg(unix)]
fn link(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).expect("symlink");
}

#[cfg(unix)]
#[test]
fn every_readme_command_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let examples = readme_examples(&readme);
    // The Usage block alone lists more than twenty; fewer means the extraction broke.
    assert!(examples.len() >= 25, "only {} README commands found: {examples:#?}", examples.len());
    for needle in ["wafer run --model examples/", "wafer gpu --model llama-3.1-8b --gpu examples/", "wafer merge "] {
        assert!(examples.iter().any(|e| e.line.contains(needle)), "no README command contains {needle:?}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    link(Path::new(env!("CARGO_BIN_EXE_wafer")), &bin.join("wafer"));
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    for shipped in ["examples", "ci"] {
        link(&repo().join(shipped), &work.join(shipped));
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let mut failures = Vec::new();
    for e in &examples {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&e.line)
            .current_dir(&work)
            .env("PATH", &path)
            .env_remove("GITHUB_STEP_SUMMARY")
            .envs(e.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run sh");
        if !out.status.success() {
            failures.push(format!(
                "`{}` {:?} exited {:?}:\n{}",
                e.line,
                e.env,
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} README commands failed:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );

    // What the examples promise to leave behind.
    for file in ["report/report.html", "sweep-sram/sweep.csv", "sweep-fabric/sweep.csv", "llama.wafer", "trace.json"] {
        assert!(work.join(file).is_file(), "{file} was not written");
    }
}

#[test]
fn the_extraction_finds_loops_arrays_and_strips_comments() {
    let md = "text\n```sh\nwafer run   # the default\ncargo test\nfor i in 0 1; do wafer x $i; done\n```\n\
              ```toml\nwafer = 1\n```\n```sh\n#SBATCH --array=0-2\nwafer sweep --shard $SLURM_ARRAY_TASK_ID/3\n```\n";
    let ex = readme_examples(md);
    let lines: Vec<_> = ex.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(lines[..2], ["wafer run", "for i in 0 1; do wafer x $i; done"]);
    assert_eq!(ex.len(), 5);
    assert_eq!(ex[4].env, vec![("SLURM_ARRAY_TASK_ID".to_string(), "2".to_string())]);
}

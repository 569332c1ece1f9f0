//! The regression corpus of issue 9 (`tests/corpus/`, listed in its README):
//! every malformed input once found to exhaust memory, run without end or
//! print a wrong number ends quickly, under a 4 GB address-space limit, with
//! exit 2 and a message naming the file, field or flag.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `tests/corpus/cases.txt` says one case must do.
struct Case {
    name: String,
    exit: i32,
    /// Phrases that must all appear on stderr.
    needles: Vec<String>,
    args: Vec<String>,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let text = std::fs::read_to_string(dir.join("cases.txt")).expect("cases.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '|').collect();
            assert_eq!(f.len(), 4, "malformed case line: {l}");
            Case {
                name: f[0].trim().into(),
                exit: f[1].trim().parse().expect("exit code"),
                needles: f[2].split(" && ").map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
                args: f[3].split_whitespace().map(str::to_string).collect(),
            }
        })
        .collect()
}

/// Runs the binary in `tests/corpus` with an address-space limit; kills it
/// past `budget` (a guard against unbounded runs, not a performance target).
fn run(args: &[String], budget: Duration) -> (Option<i32>, String, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafer"));
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit { rlim_cur: 4_000_000 * 1024, rlim_max: 4_000_000 * 1024 };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let t = Instant::now();
    let mut child = cmd.spawn().expect("spawn wafer");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if t.elapsed() > budget {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = t.elapsed();
    let err = reader.join().unwrap_or_default();
    (status.and_then(|s| s.code()), err, elapsed)
}

#[test]
fn every_corpus_case_ends_quickly_with_its_exit_code_and_names_the_field() {
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus lists {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let (code, err, took) = run(&c.args, Duration::from_secs(20));
        let ok = code == Some(c.exit) && c.needles.iter().all(|n| err.contains(n)) && !err.contains("panicked");
        if !ok {
            failures.push(format!(
                "{}: exit {code:?} (want {}) after {took:.2?}; stderr: {}",
                c.name,
                c.exit,
                err.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_readme_lists_every_corpus_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
    for c in cases() {
        assert!(readme.contains(&format!("`{}`", c.name)), "README.md does not list {}", c.name);
    }
}

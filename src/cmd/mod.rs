//! One module per subcommand: its flags (`Args`) and its `run`.

pub mod archs;
pub mod check;
pub mod compare;
pub mod compile;
pub mod gpu;
pub mod graph;
pub mod kernel;
pub mod merge;
pub mod models;
pub mod report_out;
pub mod run;
pub mod simulate;
pub mod sweep;
pub mod trace;

/// Output format shared by the commands that print results.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Pretty JSON followed by a newline, for stdout.
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("report types serialise");
    s.push('\n');
    s
}

//! wafer-reports: everything a person reads — tables, Markdown, HTML, JSON
//! layouts, charts, traces — and the plain data of sweeps and CI baselines.
//!
//! * [`table`]: aligned text / Markdown / HTML tables and number formatting.
//! * [`run`]: `RunReport`, the JSON source of truth of a run, and its text form.
//! * [`charts`]: plotters charts (stacked bars, curves, wafer heatmaps) as SVG + PNG.
//! * [`heatmap`]: per-PE maps of a program (SRAM, busy, link load) downsampled to cells.
//! * [`trace`]: Chrome trace-event JSON of a simulated step (Perfetto).
//! * [`doc`]: a document rendered as Markdown and as one self-contained HTML page.
//! * [`folder`]: the files of a run's report folder.
//! * [`frontier`]: operating points, their Pareto frontier per side, its CSV / JSON / chart.
//! * [`sweep`]: sweep specs, their grid, shards, result rows, CSV/JSON/curves, merging.
//! * [`check`]: CI baselines: parsing, comparing within tolerance, the diff table.
//!
//! Architecture invariant: reports render results they are given; they never
//! compile or simulate, and perform no file I/O (the CLI writes what they render).

pub mod charts;
pub mod check;
pub mod doc;
pub mod energy;
pub mod folder;
pub mod frontier;
pub mod heatmap;
pub mod run;
pub mod sweep;
pub mod table;
pub mod trace;

pub use energy::{Energy, EnergyFigure};
pub use folder::{roundtrip_folder, run_folder, OutFile, RoundTripSide};
pub use run::{Comparison, RunInputs, RunReport, Timings, SCHEMA_VERSION};
pub use table::{bytes, si, thousands, Table};

/// What can go wrong while rendering or reading report inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error("drawing a chart failed: {0}")]
    Draw(String),
    #[error("{source_name}: {message}")]
    Spec { source_name: String, message: String },
    #[error("{0}")]
    Merge(String),
}

/// Pretty JSON with a trailing newline.
pub fn to_json_pretty<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("report types serialise");
    s.push('\n');
    s
}

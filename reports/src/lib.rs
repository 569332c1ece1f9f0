//! wafer-reports: everything a person reads — tables, Markdown, JSON layouts, charts.
//!
//! * [`table`]: aligned text / Markdown tables and number formatting.
//! * [`run`]: `RunReport`, the JSON source of truth of a run, and its text form.
//!
//! Architecture invariant: reports render results they are given; they never
//! compile or simulate, and perform no file I/O (the CLI writes what they render).

pub mod run;
pub mod table;

pub use run::{Comparison, RunInputs, RunReport, SCHEMA_VERSION};
pub use table::{bytes, si, thousands, Table};

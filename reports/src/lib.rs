//! wafer-reports: everything a person reads — tables, Markdown, JSON layouts, charts.
//!
//! * [`table`]: aligned text / Markdown tables and number formatting.
//!
//! Architecture invariant: reports render results they are given; they never
//! compile or simulate, and perform no file I/O (the CLI writes what they render).

pub mod table;

pub use table::{bytes, si, thousands, Table};

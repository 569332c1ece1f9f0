//! A minimal reader for the embedded reference CSV files.
//!
//! Owns: splitting header + rows into named fields. Must not: interpret
//! values. The reference files quote nothing and hold no commas inside
//! fields; a row with the wrong number of fields is an error, not a guess.

use crate::error::GpuError;

/// Rows of a CSV text as (line number, fields), with a header lookup.
pub(crate) struct Csv<'a> {
    pub header: Vec<&'a str>,
    pub rows: Vec<(usize, Vec<&'a str>)>,
}

impl<'a> Csv<'a> {
    pub fn parse(text: &'a str, source_name: &str) -> Result<Csv<'a>, GpuError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, head)) = lines.next() else {
            return Err(GpuError::Table { source_name: source_name.into(), line: 1, message: "empty table".into() });
        };
        let header: Vec<&str> = head.split(',').map(str::trim).collect();
        let mut rows = Vec::new();
        for (i, l) in lines {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            if f.len() != header.len() {
                return Err(GpuError::Table {
                    source_name: source_name.into(),
                    line: i + 1,
                    message: format!("{} fields, the header has {}", f.len(), header.len()),
                });
            }
            rows.push((i + 1, f));
        }
        Ok(Csv { header, rows })
    }

    /// Index of column `name`.
    pub fn col(&self, name: &str, source_name: &str) -> Result<usize, GpuError> {
        self.header.iter().position(|h| *h == name).ok_or_else(|| GpuError::Table {
            source_name: source_name.into(),
            line: 1,
            message: format!("missing column `{name}`"),
        })
    }
}

/// An optional number: empty is `None`, anything else must parse.
pub(crate) fn opt_f64(s: &str, source_name: &str, line: usize, field: &str) -> Result<Option<f64>, GpuError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<f64>().map(Some).map_err(|_| GpuError::Table {
        source_name: source_name.into(),
        line,
        message: format!("field `{field}` is `{s}`, not a number"),
    })
}

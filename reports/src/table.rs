//! Plain-text and Markdown tables, and human number formatting.
//!
//! Owns: column alignment and unit formatting used by every text report.
//! Must not: decide what goes into a report.

use std::fmt::Write;

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row; cells are pre-formatted strings.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns whose name starts with `>` are right-aligned (the `>` is dropped).
    pub fn new(cols: &[&str]) -> Table {
        let align = cols.iter().map(|c| if c.starts_with('>') { Align::Right } else { Align::Left }).collect();
        let header = cols.iter().map(|c| c.trim_start_matches('>').to_string()).collect();
        Table { header, align, rows: Vec::new() }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut r: Vec<String> = cells.into_iter().map(Into::into).collect();
        r.resize(self.header.len(), String::new());
        self.rows.push(r);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        w
    }

    fn cell(&self, s: &str, i: usize, w: usize) -> String {
        match self.align[i] {
            Align::Left => format!("{s:<w$}"),
            Align::Right => format!("{s:>w$}"),
        }
    }

    /// Aligned columns separated by two spaces, with a rule under the header.
    pub fn to_text(&self) -> String {
        let w = self.widths();
        let mut out = String::new();
        let line = |cells: &[String]| -> String {
            let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| self.cell(c, i, w[i])).collect();
            parts.join("  ").trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(&self.header));
        let rule: Vec<String> = w.iter().map(|n| "-".repeat(*n)).collect();
        let _ = writeln!(out, "{}", rule.join("  "));
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        out
    }

    /// A GitHub-flavoured Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let rule: Vec<&str> = self.align.iter().map(|a| if *a == Align::Right { "---:" } else { "---" }).collect();
        let _ = writeln!(out, "| {} |", rule.join(" | "));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

impl Table {
    /// An HTML `<table>` (cells escaped; right-aligned columns get `class="num"`).
    pub fn to_html(&self) -> String {
        let mut out = String::from("<table>\n<thead><tr>");
        for (h, a) in self.header.iter().zip(&self.align) {
            let cls = if *a == Align::Right { " class=\"num\"" } else { "" };
            let _ = write!(out, "<th{cls}>{}</th>", html_escape(h));
        }
        out += "</tr></thead>\n<tbody>\n";
        for r in &self.rows {
            out += "<tr>";
            for (c, a) in r.iter().zip(&self.align) {
                let cls = if *a == Align::Right { " class=\"num\"" } else { "" };
                let _ = write!(out, "<td{cls}>{}</td>", html_escape(c));
            }
            out += "</tr>\n";
        }
        out += "</tbody>\n</table>\n";
        out
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// 1234567 -> "1.23 M" style with SI prefixes (k, M, G, T, P).
pub fn si(x: f64, unit: &str) -> String {
    let a = x.abs();
    let (v, p) = if a >= 1e15 {
        (x / 1e15, "P")
    } else if a >= 1e12 {
        (x / 1e12, "T")
    } else if a >= 1e9 {
        (x / 1e9, "G")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let digits = if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 10.0 {
        2
    } else {
        3
    };
    format!("{v:.digits$} {p}{unit}")
}

/// Bytes with binary prefixes (KiB, MiB, GiB, TiB).
pub fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}

/// Integer with thousands separators: 8030261248 -> "8,030,261,248".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(8030261248), "8,030,261,248");
        assert_eq!(thousands(12), "12");
        assert_eq!(si(16.06e9, "FLOP"), "16.06 GFLOP");
        assert_eq!(bytes(131072), "128.00 KiB");
        assert_eq!(bytes(100), "100 B");
    }

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&["name", ">n"]);
        t.row(["a", "1"]);
        t.row(["bbb", "100"]);
        assert_eq!(t.to_text(), "name    n\n----  ---\na       1\nbbb   100\n");
        assert!(t.to_markdown().contains("| --- | ---: |"));
    }
}

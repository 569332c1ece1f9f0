//! A small document model rendered twice: Markdown (`summary.md`) and one
//! self-contained HTML page (`report.html`: inline CSS and inline SVG, no
//! scripts, no links to anything outside the file).
//!
//! Owns: the page layout and styling. Must not: choose the content.

use crate::charts::Chart;
use crate::table::{html_escape, Table};
use std::fmt::Write;

#[derive(Debug, Clone)]
pub enum Block {
    Heading(String),
    /// Plain text (Markdown-safe: no markup is interpreted in HTML).
    Para(String),
    /// Preformatted text.
    Pre(String),
    Table(Table),
    /// A chart by index into `Doc::charts`.
    Chart(usize),
}

#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub title: String,
    pub blocks: Vec<Block>,
    pub charts: Vec<Chart>,
}

impl Doc {
    pub fn new(title: impl Into<String>) -> Doc {
        Doc { title: title.into(), ..Default::default() }
    }
    pub fn h(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Heading(s.into()));
    }
    pub fn p(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Para(s.into()));
    }
    pub fn pre(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Pre(s.into()));
    }
    pub fn table(&mut self, t: Table) {
        self.blocks.push(Block::Table(t));
    }
    pub fn chart(&mut self, c: Chart) {
        self.charts.push(c);
        self.blocks.push(Block::Chart(self.charts.len() - 1));
    }

    /// Markdown; charts become image links to `NAME.png` beside the file.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("# {}\n", self.title);
        for b in &self.blocks {
            out.push('\n');
            match b {
                Block::Heading(s) => {
                    let _ = writeln!(out, "## {s}");
                }
                Block::Para(s) => {
                    let _ = writeln!(out, "{s}");
                }
                Block::Pre(s) => {
                    let _ = write!(out, "```\n{}{}```\n", s, if s.ends_with('\n') { "" } else { "\n" });
                }
                Block::Table(t) => out += &t.to_markdown(),
                Block::Chart(i) => {
                    let c = &self.charts[*i];
                    let _ = writeln!(out, "![{}]({}.png) ([SVG]({}.svg))", c.title, c.name, c.name);
                }
            }
        }
        out
    }

    /// One HTML file holding everything it shows.
    pub fn to_html(&self) -> String {
        let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        let _ = writeln!(out, "<title>{}</title>", html_escape(&self.title));
        out += "<style>\n";
        out += "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1280px;margin:2em auto;padding:0 1em;color:#222}\n";
        out += "h1{font-size:1.6em;border-bottom:2px solid #0072b2;padding-bottom:.3em}h2{font-size:1.25em;margin-top:1.8em}\n";
        out += "table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .7em}th{background:#f2f2f2}\n";
        out += "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}\n";
        out += "figure{margin:1em 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.9em}\n";
        out += "</style>\n</head>\n<body>\n";
        let _ = writeln!(out, "<h1>{}</h1>", html_escape(&self.title));
        for b in &self.blocks {
            match b {
                Block::Heading(s) => {
                    let _ = writeln!(out, "<h2>{}</h2>", html_escape(s));
                }
                Block::Para(s) => {
                    let _ = writeln!(out, "<p>{}</p>", html_escape(s));
                }
                Block::Pre(s) => {
                    let _ = writeln!(out, "<pre>{}</pre>", html_escape(s));
                }
                Block::Table(t) => out += &t.to_html(),
                Block::Chart(i) => {
                    let c = &self.charts[*i];
                    let _ = writeln!(
                        out,
                        "<figure>\n{}\n<figcaption>{} (files: {}.svg, {}.png)</figcaption>\n</figure>",
                        inline_svg(&c.svg),
                        html_escape(&c.title),
                        html_escape(&c.name),
                        html_escape(&c.name)
                    );
                }
            }
        }
        out += "</body>\n</html>\n";
        out
    }
}

/// An SVG document as an element inside HTML: no XML declaration, and no
/// namespace URL (HTML parsers put `<svg>` in the SVG namespace themselves).
pub fn inline_svg(svg: &str) -> String {
    let s = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    };
    s.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
        .replace(" xmlns:xlink=\"http://www.w3.org/1999/xlink\"", "")
        .trim_end()
        .to_string()
}

//! Charts: every picture wafer draws, each as SVG text and PNG bytes.
//!
//! Owns: the drawing (plotters' SVG backend: every chart is drawn once, as
//! SVG), the PNG of each chart (the final SVG rasterised by `resvg` with the
//! bundled DejaVu Sans, so PNG and SVG are the same picture and glyphs sit
//! where the font says — plotters' own bitmap text drops each glyph's side
//! bearing), the palette, and PNG encoding. Must not: decide what a figure
//! means (callers pass plain series) or write files.

use crate::ReportError;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use resvg::{tiny_skia, usvg};
use std::sync::OnceLock;

/// DejaVu Sans (Bitstream Vera licence, `reports/fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// SVG parsing options with the bundled font as every generic family, built once.
fn svg_options() -> &'static usvg::Options<'static> {
    static OPTIONS: OnceLock<usvg::Options<'static>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut o = usvg::Options::default();
        let db = o.fontdb_mut();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        db.set_serif_family("DejaVu Sans");
        db.set_monospace_family("DejaVu Sans");
        o
    })
}

/// Narrowest PNG drawn: a full-width slide at 1080p (1,920 px). Charts are
/// laid out at 800–1,400 px and scaled up as a whole, text included, so a PNG
/// reads on a slide as its SVG does on screen.
pub const PNG_MIN_WIDTH: u32 = 1920;

/// Rasterises an SVG document (as drawn by [`render`]) to PNG bytes, scaled
/// so it is at least [`PNG_MIN_WIDTH`] pixels wide.
pub fn rasterize(svg: &str) -> Result<Vec<u8>, ReportError> {
    let tree = usvg::Tree::from_str(svg, svg_options()).map_err(err)?;
    let size = tree.size();
    let scale = (PNG_MIN_WIDTH as f32 / size.width()).max(1.0);
    let (w, h) = ((size.width() * scale).ceil() as u32, (size.height() * scale).ceil() as u32);
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or_else(|| ReportError::Draw(format!("empty canvas {w}×{h}")))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(err)
}

/// One rendered chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File stem (`latency`, `heatmap-sram`, …).
    pub name: String,
    pub title: String,
    pub svg: String,
    pub png: Vec<u8>,
}

fn err<E: std::fmt::Debug>(e: E) -> ReportError {
    ReportError::Draw(format!("{e:?}"))
}

type Area<DB> = DrawingArea<DB, Shift>;

/// Draws with `draw` into an SVG document of `size` pixels.
fn render_svg(
    size: (u32, u32),
    draw: impl Fn(&Area<SVGBackend>) -> Result<(), ReportError>,
) -> Result<String, ReportError> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(text)
}

/// A chart from its SVG: the PNG is the same document rasterised.
fn chart(name: &str, title: &str, svg: String) -> Result<Chart, ReportError> {
    let png = rasterize(&svg)?;
    Ok(Chart { name: name.into(), title: title.into(), svg, png })
}

/// Draws with `draw` and returns the chart (SVG and PNG).
fn render(
    name: &str,
    title: &str,
    size: (u32, u32),
    draw: impl Fn(&Area<SVGBackend>) -> Result<(), ReportError>,
) -> Result<Chart, ReportError> {
    chart(name, title, render_svg(size, draw)?)
}

/// RGB8 pixels to PNG bytes.
pub fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>, ReportError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        let mut wr = enc.write_header().map_err(err)?;
        wr.write_image_data(rgb).map_err(err)?;
    }
    Ok(out)
}

/// Series colours: colour-blind-safe (Okabe–Ito), then greys.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // green
    RGBColor(204, 121, 167), // pink
    RGBColor(86, 180, 233),  // sky
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(240, 228, 66),  // yellow
    RGBColor(120, 120, 120),
    RGBColor(60, 60, 60),
    RGBColor(180, 180, 180),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

// Font sizes in SVG pixels (the PNG scales them with the chart): large enough
// that tick labels stay legible on a projected slide.
const TITLE: u32 = 24;
const LABEL: u32 = 18;
const TICK: u32 = 15;
const LEGEND: u32 = 15;
/// Characters per legend line at [`LEGEND`] px in [`LEGEND_W`].
const LEGEND_CHARS: usize = 28;

fn title_font() -> TextStyle<'static> {
    ("sans-serif", TITLE).into_font().style(FontStyle::Bold).color(&BLACK)
}

/// A round upper bound for an axis holding `max`, with headroom for labels.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let m = max * 1.12;
    let p = 10f64.powf(m.log10().floor());
    for f in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if f * p >= m {
            return f * p;
        }
    }
    10.0 * p
}

/// Short human number for labels: 3 significant figures, k / M suffixes.
pub fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.3}M", x / 1e6).replace(".000M", "M")
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        trim_zeros(format!("{x:.1}"))
    } else if a >= 1.0 {
        trim_zeros(format!("{x:.2}"))
    } else if a == 0.0 {
        "0".into()
    } else if a >= 0.001 {
        trim_zeros(format!("{x:.3}"))
    } else {
        format!("{x:.1e}")
    }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A legend drawn in its own area (beside the plot, so it never hides data).
fn draw_legend<DB: DrawingBackend>(
    area: &Area<DB>,
    items: &[(String, RGBColor)],
    line: bool,
) -> Result<(), ReportError> {
    let font = ("sans-serif", LEGEND).into_font();
    let step = LEGEND as i32 + 3;
    let mut y = 60;
    for (i, (name, c)) in items.iter().enumerate() {
        if line {
            area.draw(&PathElement::new(vec![(6, y + 6), (30, y + 6)], c.stroke_width(2))).map_err(err)?;
            draw_marker(area, i, (18, y + 6), *c)?;
        } else {
            area.draw(&Rectangle::new([(10, y), (24, y + 12)], c.filled())).map_err(err)?;
        }
        let lines = wrap(name, LEGEND_CHARS);
        for (k, part) in lines.iter().enumerate() {
            area.draw(&Text::new(part.clone(), (36, y + k as i32 * step), font.clone())).map_err(err)?;
        }
        y += step * lines.len() as i32 + 8;
    }
    Ok(())
}

/// Pixel height a legend of `items` needs.
fn legend_height(items: &[String]) -> u32 {
    60 + items.iter().map(|n| (LEGEND + 3) * wrap(n, LEGEND_CHARS).len() as u32 + 8).sum::<u32>() + 20
}

/// Series `i`'s marker: a circle, square, triangle or cross (then again), so
/// series that share a colour (more than the palette holds) stay apart.
fn draw_marker<DB: DrawingBackend>(
    area: &Area<DB>,
    i: usize,
    (x, y): (i32, i32),
    c: RGBColor,
) -> Result<(), ReportError> {
    match (i / PALETTE.len()) % 4 {
        0 => area.draw(&Circle::new((x, y), 4, c.filled())),
        1 => area.draw(&Rectangle::new([(x - 4, y - 4), (x + 4, y + 4)], c.filled())),
        2 => area.draw(&TriangleMarker::new((x, y), 5, c.filled())),
        _ => area.draw(&Cross::new((x, y), 4, c.stroke_width(2))),
    }
    .map_err(err)
}

/// Greedy word wrap at `width` characters.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for w in text.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + w.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

const LEGEND_W: u32 = 270;

// ---------------------------------------------------------------- stacked bars

/// Bars made of stacked parts: `bars[i] = (category label, part values)`,
/// parts named by `parts` (a part whose values are all zero is left out of the legend).
#[derive(Debug, Clone)]
pub struct StackedBars {
    pub name: String,
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub parts: Vec<String>,
    pub bars: Vec<(String, Vec<f64>)>,
    /// A note printed above each bar (e.g. its total), or empty.
    pub notes: Vec<String>,
    /// Colour index per part (into [`PALETTE`]).
    pub colors: Vec<usize>,
    /// Numeric x axis (layer numbers) instead of one label per bar.
    pub numeric_x: bool,
}

impl StackedBars {
    pub fn render(&self) -> Result<Chart, ReportError> {
        let n = self.bars.len().max(1);
        let width = LEGEND_W + if self.numeric_x { 1000 } else { (240 + 110 * n as u32).clamp(640, 1100) };
        render(&self.name, &self.title, (width, 560), |a| self.draw(a))
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Result<(), ReportError> {
        let n = self.bars.len().max(1);
        let ymax = nice_max(self.bars.iter().map(|b| b.1.iter().sum::<f64>()).fold(0.0, f64::max));
        let labels: Vec<String> = self.bars.iter().map(|b| b.0.clone()).collect();
        let (w, _) = root.dim_in_pixel();
        let (root, legend) = root.split_horizontally(w.saturating_sub(LEGEND_W));
        let mut items = Vec::new();
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, title_font())
            .margin(16)
            .x_label_area_size(if self.numeric_x { 45 } else { 60 })
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)
            .map_err(err)?;
        let fmt = |x: &f64| -> String {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            labels.get(i as usize).cloned().unwrap_or_default()
        };
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh()
            .y_desc(&self.y_desc)
            .x_desc(&self.x_desc)
            .axis_desc_style(("sans-serif", LABEL))
            .label_style(("sans-serif", TICK))
            .y_label_formatter(&|y| short(*y))
            .light_line_style(RGBColor(238, 238, 238))
            .max_light_lines(1);
        if self.numeric_x {
            mesh.x_labels(12).x_label_formatter(&fmt);
        } else {
            mesh.x_labels(n).x_label_formatter(&fmt);
        }
        mesh.draw().map_err(err)?;
        let half = if self.numeric_x { 0.42 } else { 0.32 };
        for (p, part) in self.parts.iter().enumerate() {
            if self.bars.iter().all(|b| b.1.get(p).copied().unwrap_or(0.0) <= 0.0) {
                continue;
            }
            let c = color(self.colors.get(p).copied().unwrap_or(p));
            let rects = self.bars.iter().enumerate().filter_map(move |(i, b)| {
                let v = b.1.get(p).copied().unwrap_or(0.0);
                if v <= 0.0 {
                    return None;
                }
                let base: f64 = b.1[..p].iter().sum();
                let x = i as f64;
                Some(Rectangle::new([(x - half, base), (x + half, base + v)], c.filled()))
            });
            chart.draw_series(rects).map_err(err)?;
            items.push((part.clone(), c));
        }
        for (i, note) in self.notes.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let top: f64 = self.bars.get(i).map_or(0.0, |b| b.1.iter().sum());
            let style = ("sans-serif", TICK).into_font().color(&BLACK).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Bottom,
            ));
            chart
                .draw_series(std::iter::once(Text::new(note.clone(), (i as f64, top + ymax * 0.01), style)))
                .map_err(err)?;
        }
        draw_legend(&legend, &items, false)
    }
}

// -------------------------------------------------------------------- curves

/// Lines of (x, y) points, one per series, with markers.
#[derive(Debug, Clone)]
pub struct Curves {
    pub name: String,
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Logarithmic x axis (when the swept values span a wide range).
    pub log_x: bool,
    /// Axes whose values are whole numbers (wafers, counts): integer ticks only.
    pub integer_x: bool,
    pub integer_y: bool,
    /// Discrete choices along a series: `(series index, x, label, changes)`,
    /// the label beside the point (e.g. "2 wafers"), and where `changes` (the
    /// choice differs from the point before) a dashed vertical line in the
    /// series' colour.
    pub marks: Vec<(usize, f64, String, bool)>,
}

/// Tick label of an integer axis: whole numbers only (plotters may place ticks at halves).
fn integer_label(v: f64) -> String {
    if (v - v.round()).abs() > 1e-9 {
        String::new()
    } else {
        short(v.round())
    }
}

impl Curves {
    pub fn render(&self) -> Result<Chart, ReportError> {
        let names: Vec<String> = self.series.iter().map(|s| s.0.clone()).collect();
        let h = legend_height(&names).max(600);
        render(&self.name, &self.title, (960 + LEGEND_W, h), |a| self.draw(a))
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Result<(), ReportError> {
        let (w, _) = root.dim_in_pixel();
        let (root, legend) = root.split_horizontally(w.saturating_sub(LEGEND_W));
        let items: Vec<(String, RGBColor)> =
            self.series.iter().enumerate().map(|(i, s)| (s.0.clone(), color(i))).collect();
        draw_legend(&legend, &items, true)?;
        let root = &root;
        let pts = || self.series.iter().flat_map(|s| s.1.iter().copied());
        let (mut x0, mut x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let mut ymax = nice_max(pts().map(|p| p.1).fold(0.0, f64::max));
        if self.integer_y {
            ymax = ymax.ceil().max(1.0);
        }
        // Integer axes with few values: one tick per whole number.
        let y_ticks = if self.integer_y && ymax <= 20.0 { ymax as usize + 1 } else { 10 };
        let y_fmt = |y: &f64| if self.integer_y { integer_label(*y) } else { short(*y) };
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            (x0, x1) = (x0 - 0.5 * x0.abs().max(1.0), x1 + 0.5 * x1.abs().max(1.0));
        }
        if self.log_x && x0 > 0.0 {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.title, title_font())
                .margin(16)
                .x_label_area_size(50)
                .y_label_area_size(80)
                .build_cartesian_2d(
                    (x0 / 1.15..x1 * 1.15).log_scale().base(if self.pow2() { 2.0 } else { 10.0 }),
                    0f64..ymax,
                )
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(&self.x_desc)
                .y_desc(&self.y_desc)
                .axis_desc_style(("sans-serif", LABEL))
                .label_style(("sans-serif", TICK))
                .x_label_formatter(&|x| if self.integer_x { integer_label(*x) } else { short(*x) })
                .y_label_formatter(&y_fmt)
                .y_labels(y_ticks)
                .light_line_style(RGBColor(238, 238, 238))
                .max_light_lines(1)
                .bold_line_style(RGBColor(215, 215, 215))
                .draw()
                .map_err(err)?;
            self.lines(&mut chart, ymax)
        } else {
            let pad = (x1 - x0) * 0.04;
            let x_ticks = if self.integer_x && x1 - x0 <= 20.0 { (x1 - x0) as usize + 1 } else { 10 };
            let mut chart = ChartBuilder::on(root)
                .caption(&self.title, title_font())
                .margin(16)
                .x_label_area_size(50)
                .y_label_area_size(80)
                .build_cartesian_2d(x0 - pad..x1 + pad, 0f64..ymax)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(&self.x_desc)
                .y_desc(&self.y_desc)
                .axis_desc_style(("sans-serif", LABEL))
                .label_style(("sans-serif", TICK))
                .x_label_formatter(&|x| if self.integer_x { integer_label(*x) } else { short(*x) })
                .x_labels(x_ticks)
                .y_label_formatter(&y_fmt)
                .y_labels(y_ticks)
                .light_line_style(RGBColor(238, 238, 238))
                .max_light_lines(1)
                .bold_line_style(RGBColor(215, 215, 215))
                .draw()
                .map_err(err)?;
            self.lines(&mut chart, ymax)
        }
    }

    /// Every x is a power of two (SRAM sizes, widths): label the log axis in powers of two.
    fn pow2(&self) -> bool {
        self.series.iter().flat_map(|s| &s.1).all(|p| p.0 > 0.0 && p.0.log2().fract() == 0.0)
    }

    fn lines<'a, DB: DrawingBackend + 'a, X>(
        &self,
        chart: &mut ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
        ymax: f64,
    ) -> Result<(), ReportError>
    where
        X: Ranged<ValueType = f64>,
    {
        // Discrete changes first, so the curves draw over their lines.
        for (i, x, label, changes) in &self.marks {
            let c = color(*i);
            let dash = (0..40).filter(|k| *changes && k % 2 == 0).map(|k| {
                let (a, b) = (ymax * k as f64 / 40.0, ymax * (k + 1) as f64 / 40.0);
                PathElement::new(vec![(*x, a), (*x, b)], c.mix(0.7).stroke_width(2))
            });
            chart.draw_series(dash).map_err(err)?;
            let y = self.series.get(*i).and_then(|s| s.1.iter().find(|p| p.0 == *x)).map_or(ymax * 0.9, |p| p.1);
            let style = ("sans-serif", TICK).into_font().style(FontStyle::Bold).color(&c);
            chart
                .draw_series(std::iter::once(EmptyElement::at((*x, y)) + Text::new(label.clone(), (8, -22), style)))
                .map_err(err)?;
        }
        for (i, (_, pts)) in self.series.iter().enumerate() {
            let c = color(i);
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2))).map_err(err)?;
            let style = c.filled();
            match (i / PALETTE.len()) % 4 {
                0 => chart.draw_series(pts.iter().map(|&p| EmptyElement::at(p) + Circle::new((0, 0), 4, style))),
                1 => chart
                    .draw_series(pts.iter().map(|&p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], style))),
                2 => {
                    chart.draw_series(pts.iter().map(|&p| EmptyElement::at(p) + TriangleMarker::new((0, 0), 5, style)))
                }
                _ => chart
                    .draw_series(pts.iter().map(|&p| EmptyElement::at(p) + Cross::new((0, 0), 4, c.stroke_width(2)))),
            }
            .map_err(err)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ frontier

/// One side of a frontier chart (the wafer, or the GPU baseline).
#[derive(Debug, Clone)]
pub struct FrontierSide {
    pub label: String,
    /// The Pareto-optimal points, in increasing x; joined by a line.
    pub frontier: Vec<(f64, f64)>,
    /// A short label per frontier point (e.g. `pipeline B4 U16`), or empty.
    pub frontier_labels: Vec<String>,
    /// Every other operating point, drawn faint.
    pub others: Vec<(f64, f64)>,
    /// Points left off the frontier because their memory does not fit, faint crosses.
    pub over_memory: Vec<(f64, f64)>,
}

/// Operating points of several sides on log–log axes: each side's frontier
/// joined and marked, its other points faint, a legend beside the plot.
#[derive(Debug, Clone)]
pub struct FrontierChart {
    pub name: String,
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub sides: Vec<FrontierSide>,
}

/// `c` mixed with white: `f` = 0 is `c`, 1 is white.
fn lighten(c: RGBColor, f: f64) -> RGBColor {
    let m = |v: u8| (v as f64 + (255.0 - v as f64) * f).round() as u8;
    RGBColor(m(c.0), m(c.1), m(c.2))
}

/// A log axis range holding `lo..=hi` (both > 0) with some margin, its ends
/// a power of ten below and 1, 2 or 5 times one above (so both carry tick labels).
fn log_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if !(lo.is_finite() && hi.is_finite() && lo > 0.0) {
        return 1.0..10.0;
    }
    let steps = |v: f64| {
        let p = 10f64.powf(v.log10().floor());
        [p, 2.0 * p, 5.0 * p, 10.0 * p]
    };
    // The low end at a whole decade: plotters labels a log axis from its first decade up.
    let a = 10f64.powf((lo / 1.25).log10().floor());
    let b = steps(hi * 1.25).into_iter().find(|&s| s >= hi * 1.25).unwrap_or(hi * 1.25);
    a..b
}

impl FrontierChart {
    pub fn render(&self) -> Result<Chart, ReportError> {
        render(&self.name, &self.title, (1000 + LEGEND_W, 680), |a| self.draw(a))
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Result<(), ReportError> {
        let (w, _) = root.dim_in_pixel();
        let (plot, legend) = root.split_horizontally(w.saturating_sub(LEGEND_W));
        let all = || self.sides.iter().flat_map(|s| s.frontier.iter().chain(&s.others).chain(&s.over_memory).copied());
        let pos = |v: f64| v.is_finite() && v > 0.0;
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, 0f64, f64::INFINITY, 0f64);
        for (x, y) in all().filter(|p| pos(p.0) && pos(p.1)) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, title_font())
            .margin(16)
            .margin_right(30)
            .x_label_area_size(55)
            .y_label_area_size(90)
            .build_cartesian_2d(log_range(x0, x1).log_scale(), log_range(y0, y1).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .axis_desc_style(("sans-serif", LABEL))
            .label_style(("sans-serif", TICK))
            .x_label_formatter(&|x| log_tick(*x))
            .y_label_formatter(&|y| log_tick(*y))
            .x_labels(40)
            .y_labels(40)
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(228, 228, 228))
            .draw()
            .map_err(err)?;
        for (i, s) in self.sides.iter().enumerate() {
            let c = color(i);
            let faint = lighten(c, 0.6);
            let others = s.others.iter().copied().filter(|p| pos(p.0) && pos(p.1));
            chart.draw_series(others.map(|p| Circle::new(p, 3, faint.filled()))).map_err(err)?;
            let over = s.over_memory.iter().copied().filter(|p| pos(p.0) && pos(p.1));
            chart.draw_series(over.map(|p| Cross::new(p, 4, lighten(c, 0.5).stroke_width(2)))).map_err(err)?;
        }
        for (i, s) in self.sides.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = s.frontier.iter().copied().filter(|p| pos(p.0) && pos(p.1)).collect();
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(3))).map_err(err)?;
            if i % 2 == 0 {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 6, c.filled()))).map_err(err)?;
            } else {
                chart
                    .draw_series(
                        pts.iter().map(|&p| EmptyElement::at(p) + Rectangle::new([(-5, -5), (5, 5)], c.filled())),
                    )
                    .map_err(err)?;
            }
            if s.frontier_labels.len() <= 14 {
                let style = ("sans-serif", 12).into_font().color(&lighten(c, 0.0));
                let labels =
                    s.frontier.iter().zip(&s.frontier_labels).filter(|(p, l)| pos(p.0) && pos(p.1) && !l.is_empty());
                chart
                    .draw_series(
                        labels.map(|(&p, l)| EmptyElement::at(p) + Text::new(l.clone(), (8, 4), style.clone())),
                    )
                    .map_err(err)?;
            }
        }
        // Legend: per side, the frontier (line and marker), the other points (faint
        // dots) and those whose memory does not fit (faint crosses), where there are any.
        let font = ("sans-serif", LEGEND).into_font();
        let step = LEGEND as i32 + 3;
        let mut y = 60;
        let text = |y: &mut i32, s: &str| -> Result<(), ReportError> {
            for part in wrap(s, LEGEND_CHARS) {
                legend.draw(&Text::new(part, (36, *y), font.clone())).map_err(err)?;
                *y += step;
            }
            *y += 6;
            Ok(())
        };
        for (i, s) in self.sides.iter().enumerate() {
            let c = color(i);
            for part in wrap(&s.label, LEGEND_CHARS) {
                legend.draw(&Text::new(part, (36, y), font.clone().style(FontStyle::Bold))).map_err(err)?;
                y += step;
            }
            legend.draw(&PathElement::new(vec![(4, y + 7), (32, y + 7)], c.stroke_width(3))).map_err(err)?;
            if i % 2 == 0 {
                legend.draw(&Circle::new((18, y + 7), 6, c.filled())).map_err(err)?;
            } else {
                legend.draw(&Rectangle::new([(13, y + 2), (23, y + 12)], c.filled())).map_err(err)?;
            }
            text(&mut y, "Pareto frontier")?;
            if !s.others.is_empty() {
                legend.draw(&Circle::new((18, y + 7), 3, lighten(c, 0.6).filled())).map_err(err)?;
                text(&mut y, "other operating points")?;
            }
            if !s.over_memory.is_empty() {
                legend.draw(&Cross::new((18, y + 7), 4, lighten(c, 0.5).stroke_width(2))).map_err(err)?;
                text(&mut y, "memory does not hold their KV cache")?;
            }
            y += 14;
        }
        Ok(())
    }
}

/// A log axis' tick label: 1, 2 and 5 times a power of ten, written short
/// (`200`, `5k`, `100k`); the other ticks (grid lines only) get none.
fn log_tick(v: f64) -> String {
    if !(v.is_finite() && v > 0.0) {
        return String::new();
    }
    let p = 10f64.powf(v.log10().floor());
    let m = (v / p * 1000.0).round() / 1000.0;
    if ![1.0, 2.0, 5.0].contains(&m) {
        return String::new();
    }
    let whole = |x: f64| trim_zeros(format!("{x:.3}"));
    if v >= 1e6 {
        format!("{}M", whole(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", whole(v / 1e3))
    } else {
        whole(v)
    }
}

// ------------------------------------------------------------------- heatmap

/// Values painted over one wafer's mesh, downsampled to cells of `cell`×`cell` PEs.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub wafer: u32,
    /// Mesh size in PEs.
    pub mesh: (u32, u32),
    /// PEs per cell side.
    pub cell: u32,
    /// Cells per row and per column.
    pub cols: u32,
    pub rows: u32,
    /// Row-major, `NaN` where the cell holds no used PE.
    pub values: Vec<f64>,
}

impl Grid {
    pub fn get(&self, c: u32, r: u32) -> f64 {
        self.values[(r * self.cols + c) as usize]
    }
    pub fn max(&self) -> f64 {
        self.values.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max)
    }
}

/// A heatmap chart: one panel per grid (wafer), one colour scale.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub name: String,
    pub title: String,
    /// What the colour means, with its unit (shown beside the colour bar).
    pub scale_desc: String,
    pub grids: Vec<Grid>,
    /// Colour scale; values are clamped into it.
    pub min: f64,
    pub max: f64,
    /// Multiplies values for the colour-bar labels (e.g. 100 for percent, 1/1024 for KiB).
    pub label_factor: f64,
    /// Written after every colour-bar label ("%" for percentages, so "0.6%" never reads as 60%).
    pub label_suffix: String,
    /// A line under the title (e.g. "wafers 0–3 of 8 shown").
    pub subtitle: String,
}

/// A perceptually ordered colour map (dark blue → green → yellow), linear between stops.
pub fn colormap(t: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 5] = [
        (0.0, (68.0, 1.0, 84.0)),
        (0.25, (59.0, 82.0, 139.0)),
        (0.5, (33.0, 145.0, 140.0)),
        (0.75, (94.0, 201.0, 98.0)),
        (1.0, (253.0, 231.0, 37.0)),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    for w in STOPS.windows(2) {
        let ((a, ca), (b, cb)) = (w[0], w[1]);
        if t <= b {
            let f = (t - a) / (b - a);
            let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
            return RGBColor(mix(ca.0, cb.0), mix(ca.1, cb.1), mix(ca.2, cb.2));
        }
    }
    RGBColor(253, 231, 37)
}

/// Colour levels the map is quantised to (so equal neighbours merge into one rectangle).
const LEVELS: f64 = 64.0;
const EMPTY: RGBColor = RGBColor(225, 225, 225);
/// Width of the colour bar with its labels and description.
const COLOUR_BAR_W: u32 = 190;
/// Narrowest heatmap canvas (SVG px): 1,200 × 690, so its PNG is 1,920 × 1,104.
const HEATMAP_MIN_W: u32 = 1200;

impl Heatmap {
    pub fn render(&self) -> Result<Chart, ReportError> {
        let n = self.grids.len().max(1) as u32;
        let (mw, mh) = self.grids.first().map_or((1, 1), |g| g.mesh);
        let panel_h = 560u32;
        let panel_w = ((panel_h as f64 * mw as f64 / mh.max(1) as f64) as u32 + 90).clamp(260, 760);
        // Landscape, as a slide is: a single near-square panel sits centred in
        // a wider canvas rather than making the PNG taller than it is wide.
        let width = (panel_w * n + COLOUR_BAR_W).max(HEATMAP_MIN_W);
        // Axes as vectors, each panel's cells as one embedded PNG (a data URI),
        // so a full wafer stays small.
        let placed = std::cell::RefCell::new(Vec::new());
        let mut svg = render_svg((width, panel_h + 130), |a| self.draw(a, &placed))?;
        let mut images = String::new();
        for (i, (x, y)) in placed.into_inner() {
            let g = &self.grids[i];
            let mut rgb = Vec::with_capacity((g.cols * g.rows * 3) as usize);
            for r in 0..g.rows {
                for c in 0..g.cols {
                    let lv = self.level(g.get(c, r));
                    let col = if lv < 0 { EMPTY } else { colormap(lv as f64 / (LEVELS - 1.0)) };
                    rgb.extend([col.0, col.1, col.2]);
                }
            }
            let png = encode_png(&rgb, (g.cols, g.rows))?;
            images += &format!(
                "<image x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"none\" \
                 style=\"image-rendering:pixelated\" href=\"data:image/png;base64,{}\"/>\n",
                x.start,
                y.start,
                x.end - x.start,
                y.end - y.start,
                base64(&png)
            );
        }
        if let Some(at) = svg.rfind("</svg>") {
            svg.insert_str(at, &images);
        }
        chart(&self.name, &self.title, svg)
    }

    fn level(&self, v: f64) -> i32 {
        if !v.is_finite() {
            return -1;
        }
        let span = (self.max - self.min).max(1e-300);
        (((v - self.min) / span).clamp(0.0, 1.0) * (LEVELS - 1.0)).round() as i32
    }

    /// Draws titles, axes and the colour bar, and records each panel's plotting
    /// area in `placed` (its cells are embedded afterwards as one image).
    #[allow(clippy::type_complexity)]
    fn draw<DB: DrawingBackend>(
        &self,
        root: &Area<DB>,
        placed: &std::cell::RefCell<Vec<(usize, (std::ops::Range<i32>, std::ops::Range<i32>))>>,
    ) -> Result<(), ReportError> {
        let root = root.titled(&self.title, title_font()).map_err(err)?;
        let (w, _) = root.dim_in_pixel();
        let (sub, body) = root.split_vertically(44);
        let per_line = ((w as usize).saturating_sub(40) / 8).max(30);
        for (k, line) in wrap(&self.subtitle, per_line).iter().take(2).enumerate() {
            sub.draw(&Text::new(line.clone(), (20, 2 + 20 * k as i32), ("sans-serif", TICK).into_font()))
                .map_err(err)?;
        }
        // Panels and colour bar as one group, centred.
        let (mw, mh) = self.grids.first().map_or((1, 1), |g| g.mesh);
        let (_, bh) = body.dim_in_pixel();
        let n = self.grids.len().max(1) as u32;
        let panel_w = ((bh.saturating_sub(14) as f64 * mw as f64 / mh.max(1) as f64) as u32 + 90).clamp(260, 760);
        let group = (panel_w * n + COLOUR_BAR_W).min(w);
        let (_, body) = body.split_horizontally((w - group) / 2);
        let (panels, rest) = body.split_horizontally(group - COLOUR_BAR_W);
        let (bar, _) = rest.split_horizontally(COLOUR_BAR_W);
        let areas = panels.split_evenly((1, self.grids.len().max(1)));
        for (gi, (g, area)) in self.grids.iter().zip(areas.iter()).enumerate() {
            let (mw, mh) = (g.mesh.0 as f64, g.mesh.1 as f64);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("wafer {}", g.wafer), ("sans-serif", LABEL))
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..mw, mh..0f64)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("PE column")
                .y_desc("PE row")
                .axis_desc_style(("sans-serif", TICK))
                .label_style(("sans-serif", TICK))
                .x_labels(4)
                .y_labels(6)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .map_err(err)?;
            placed.borrow_mut().push((gi, chart.plotting_area().get_pixel_range()));
        }
        // Colour bar.
        let mut cb = ChartBuilder::on(&bar)
            .margin_top(60)
            .margin_bottom(60)
            .margin_left(10)
            .margin_right(60)
            .y_label_area_size(0)
            .right_y_label_area_size(75)
            .build_cartesian_2d(
                0f64..1f64,
                self.min * self.label_factor..self.max.max(self.min + 1e-12) * self.label_factor,
            )
            .map_err(err)?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_desc(&self.scale_desc)
            .axis_desc_style(("sans-serif", TICK))
            .label_style(("sans-serif", TICK))
            .y_label_formatter(&|y| format!("{}{}", short(*y), self.label_suffix))
            .draw()
            .map_err(err)?;
        let (lo, hi) = (self.min * self.label_factor, self.max.max(self.min + 1e-12) * self.label_factor);
        let steps = LEVELS as usize;
        cb.draw_series((0..steps).map(|i| {
            let a = lo + (hi - lo) * i as f64 / steps as f64;
            let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, a), (1.0, b)], colormap(i as f64 / (steps - 1) as f64).filled())
        }))
        .map_err(err)?;
        Ok(())
    }
}

/// Standard base64 with padding (for data URIs).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= ch.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_examples() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }

    use super::*;

    #[test]
    fn nice_max_rounds_up_with_headroom() {
        assert_eq!(nice_max(0.0), 1.0);
        assert!(nice_max(2090.0) >= 2090.0 * 1.12 && nice_max(2090.0) <= 3000.0);
        assert_eq!(nice_max(9.0), 12.0);
    }

    #[test]
    fn colormap_runs_dark_to_bright() {
        let lum = |c: RGBColor| 0.3 * c.0 as f64 + 0.59 * c.1 as f64 + 0.11 * c.2 as f64;
        let mut last = -1.0;
        for i in 0..=20 {
            let l = lum(colormap(i as f64 / 20.0));
            assert!(l > last, "not increasing at {i}");
            last = l;
        }
    }

    #[test]
    fn renders_valid_svg_and_png() {
        let c = StackedBars {
            name: "t".into(),
            title: "test".into(),
            x_desc: "x".into(),
            y_desc: "µs".into(),
            parts: vec!["a".into(), "b".into()],
            bars: vec![("one".into(), vec![1.0, 2.0]), ("two".into(), vec![3.0, 0.0])],
            notes: vec!["3".into(), "3".into()],
            colors: vec![0, 1],
            numeric_x: false,
        }
        .render()
        .unwrap();
        assert!(c.svg.contains("<svg") && c.svg.contains("test"));
        assert_eq!(&c.png[..8], b"\x89PNG\r\n\x1a\n");
    }
}

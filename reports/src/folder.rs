//! The report folder of one run: every file `wafer run --out DIR` writes,
//! rendered to bytes (the CLI writes them).
//!
//! Owns: which files a run folder holds and what each chart shows, and how to
//! recognise a folder wafer wrote ([`report_marker`], [`is_report_file`]) so
//! `--force` replaces nothing else. Must not: compute results or touch the
//! file system.

use crate::charts::{Chart, Heatmap, StackedBars};
use crate::doc::Doc;
use crate::heatmap::wafer_maps;
use crate::run::RunReport;
use crate::table::{bytes, thousands, Table};
use crate::trace::chrome_trace;
use crate::ReportError;
use wafer_ir::Program;

/// One file of a report folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    /// Name inside the folder (no directories).
    pub name: String,
    pub bytes: Vec<u8>,
}

impl OutFile {
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> OutFile {
        OutFile { name: name.into(), bytes: bytes.into() }
    }
}

/// The files whose presence (with a `schema_version`) marks a folder as one
/// wafer wrote: `report.json` for run and compare folders, `sweep.json` for
/// sweep and merge folders, `frontier.json` for frontier folders,
/// `frontier-shard.json` for frontier shards, `roundtrip.json` for round-trip folders.
pub const MARKER_FILES: [&str; 5] =
    ["report.json", "sweep.json", "frontier.json", "frontier-shard.json", "roundtrip.json"];

/// True when `text`, the content of the file `name`, marks a wafer report
/// folder: `name` is one of [`MARKER_FILES`] and the text is a JSON object with
/// a whole-number `schema_version`.
pub fn report_marker(name: &str, text: &str) -> bool {
    MARKER_FILES.contains(&name)
        && serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("schema_version").and_then(serde_json::Value::as_u64))
            .is_some()
}

/// True for a name a report folder's files can have (what run, compare,
/// sweep and merge write: JSON, Markdown, HTML, CSV, SVG and PNG files).
pub fn is_report_file(name: &str) -> bool {
    !name.starts_with('.')
        && name
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.is_empty() && ["json", "md", "html", "csv", "svg", "png"].contains(&ext))
}

/// Heatmap panels drawn at most (the first wafers; the rest are summarised in the subtitle).
pub const MAX_PANELS: usize = 4;

const WAFER_PARTS: [&str; 4] = ["compute", "on-wafer communication", "inter-wafer links", "waiting (contention)"];

/// Every chart of a run, in the order the report shows them.
pub fn run_charts(r: &RunReport, p: &Program) -> Result<Vec<Chart>, ReportError> {
    let s = &r.simulation;
    let to_us = |c: f64| c / (s.clock_ghz * 1e3);
    let parts =
        |b: &wafer_simulator::Breakdown| vec![to_us(b.compute), to_us(b.comm), to_us(b.inter_wafer), to_us(b.wait)];
    let mut charts = Vec::new();

    // Wafer vs GPU, in ms when either bar passes 10 ms (so ticks read "20", not "20.0k").
    let longest_us = s.tpot_us.max(r.gpu.as_ref().map_or(0.0, |g| g.tpot_ms * 1e3));
    let (unit, per_us) = if longest_us > 10_000.0 { ("ms", 1e-3) } else { ("µs", 1.0) };
    let time = |t_us: f64| if unit == "ms" { format!("{:.2} ms", t_us * 1e-3) } else { format!("{t_us:.1} µs") };
    let mut names: Vec<String> = WAFER_PARTS.iter().map(|n| format!("wafer: {n}")).collect();
    let mut wafer_bar: Vec<f64> = parts(&s.breakdown).iter().map(|v| v * per_us).collect();
    let mut bars = Vec::new();
    let mut notes = vec![format!("{} · {:.0} tokens/s", time(s.tpot_us), s.tokens_per_s)];
    if let Some(g) = &r.gpu {
        let b = &g.breakdown;
        let gpu_parts = [
            ("GPU: weights (HBM)", b.weights_ms),
            ("GPU: KV cache (HBM)", b.kv_cache_ms),
            ("GPU: activations (HBM)", b.activations_ms),
            ("GPU: compute", b.compute_ms),
            ("GPU: kernel overhead", b.kernel_overhead_ms),
            ("GPU: communication", b.communication_ms),
        ];
        names.extend(gpu_parts.iter().map(|p| p.0.to_string()));
        wafer_bar.extend([0.0; 6]);
        let mut gpu_bar = vec![0.0; 4];
        gpu_bar.extend(gpu_parts.iter().map(|p| p.1 * 1e3 * per_us));
        bars.push((format!("wafer: {} × {}", s.wafers, r.inputs.arch), wafer_bar));
        bars.push((format!("GPU: {} × {}", g.n_gpus, g.gpu), gpu_bar));
        notes.push(format!("{} · {:.0} tokens/s", time(g.tpot_ms * 1e3), g.tokens_per_s));
    } else {
        bars.push((format!("wafer: {} × {}", s.wafers, r.inputs.arch), wafer_bar));
    }
    let title = match &r.comparison {
        Some(c) if c.speedup >= 1.0 => format!(
            "{}: {} × {} is {:.2}× faster than {} × {}",
            r.inputs.model, c.wafers, c.wafer_arch, c.speedup, c.gpus, c.gpu
        ),
        Some(c) => format!(
            "{}: {} × {} is {:.2}× slower than {} × {}",
            r.inputs.model,
            c.wafers,
            c.wafer_arch,
            1.0 / c.speedup,
            c.gpus,
            c.gpu
        ),
        None => format!("{}: per-token latency on the wafer", r.inputs.model),
    };
    charts.push(
        StackedBars {
            name: "latency".into(),
            title,
            x_desc: format!("context {}, batch {}", r.inputs.context, r.inputs.batch),
            y_desc: format!("time per output token ({unit})"),
            colors: (0..names.len()).collect(),
            parts: names,
            bars,
            notes,
            numeric_x: false,
        }
        .render()?,
    );

    // Per layer.
    let layers: Vec<_> = s.by_layer.iter().filter_map(|l| l.layer.map(|i| (i, l.breakdown))).collect();
    if !layers.is_empty() {
        charts.push(
            StackedBars {
                name: "breakdown-layers".into(),
                title: format!("{}: critical-path time per decoder layer", r.inputs.model),
                x_desc: "decoder layer".into(),
                y_desc: "time on the critical path (µs)".into(),
                parts: WAFER_PARTS.iter().map(|s| s.to_string()).collect(),
                bars: layers.iter().map(|(i, b)| (i.to_string(), parts(b))).collect(),
                notes: vec![],
                colors: vec![0, 1, 2, 3],
                numeric_x: true,
            }
            .render()?,
        );
    }

    // Per op kind.
    let mut kinds: Vec<_> = s.by_kind.iter().filter(|(_, b)| b.total() > 0.0).collect();
    kinds.sort_by(|a, b| b.1.total().total_cmp(&a.1.total()).then(a.0.cmp(b.0)));
    let total = s.breakdown.total().max(1e-12);
    charts.push(
        StackedBars {
            name: "breakdown-kinds".into(),
            title: format!("{}: critical-path time per op kind", r.inputs.model),
            x_desc: "region role (all layers together)".into(),
            y_desc: "time on the critical path (µs)".into(),
            parts: WAFER_PARTS.iter().map(|s| s.to_string()).collect(),
            notes: kinds.iter().map(|(_, b)| format!("{:.1}%", 100.0 * b.total() / total)).collect(),
            bars: kinds.iter().map(|(k, b)| (k.to_string(), parts(b))).collect(),
            colors: vec![0, 1, 2, 3],
            numeric_x: false,
        }
        .render()?,
    );

    // Wafer maps.
    let maps = wafer_maps(p, s);
    let shown = (p.wafers as usize).min(MAX_PANELS);
    let subtitle = |what: &str| {
        let cells = maps.sram.first().map_or(1, |g| g.cell);
        let mut t = format!("{what}; each cell {cells}×{cells} PEs, grey: no PE used");
        if shown < p.wafers as usize {
            t += &format!("; wafers 0–{} of {} shown", shown - 1, p.wafers);
        }
        t
    };
    let take = |v: &[crate::charts::Grid]| v.iter().take(shown).cloned().collect::<Vec<_>>();
    let tag = format!("{} on {} × {}", r.inputs.model, p.wafers, p.arch.name);
    charts.push(
        Heatmap {
            name: "heatmap-sram".into(),
            title: format!("SRAM allocated per PE — {tag}"),
            scale_desc: format!("KiB per PE (of {})", bytes(p.arch.pe.sram_bytes)),
            grids: take(&maps.sram),
            min: 0.0,
            max: p.arch.pe.sram_bytes as f64,
            label_factor: 1.0 / 1024.0,
            label_suffix: String::new(),
            subtitle: subtitle("weights, KV cache, buffers and code reserve of each region's largest PE"),
        }
        .render()?,
    );
    let busy_max = maps.busy.iter().map(|g| g.max()).fold(0.0, f64::max);
    charts.push(
        Heatmap {
            name: "heatmap-busy".into(),
            title: format!("PE busy fraction — {tag}"),
            scale_desc: format!(
                "% of the step spent computing (scale: 0 to the busiest cell, {}%)",
                crate::charts::short(100.0 * busy_max)
            ),
            grids: take(&maps.busy),
            min: 0.0,
            max: if busy_max > 0.0 { busy_max } else { 1.0 },
            label_factor: 100.0,
            label_suffix: "%".into(),
            subtitle: subtitle(&format!("{} engine", s.engine)),
        }
        .render()?,
    );
    let link_max = maps.link.iter().map(|g| g.max()).fold(0.0, f64::max);
    charts.push(
        Heatmap {
            name: "heatmap-links".into(),
            title: format!("Link load — {tag}"),
            scale_desc: format!(
                "mean link busy, % of the step (scale: 0 to the busiest cell, {}%)",
                crate::charts::short(100.0 * link_max)
            ),
            grids: take(&maps.link),
            min: 0.0,
            max: if link_max > 0.0 { link_max } else { 1.0 },
            label_factor: 100.0,
            label_suffix: "%".into(),
            subtitle: subtitle("the program's messages on their X-then-Y paths, per outgoing link"),
        }
        .render()?,
    );
    Ok(charts)
}

/// The run as a document (summary.md and report.html share it).
pub fn run_doc(r: &RunReport, p: &Program, charts: Vec<Chart>) -> Doc {
    let s = &r.simulation;
    let i = &r.inputs;
    let mut d = Doc::new(format!("{} on {} × {}", i.model, s.wafers, i.arch));
    d.p(format!(
        "Context {}, batch {}, weights {}, KV cache {}; {} engine. Per-token latency {:.1} µs, {:.0} tokens/s ({} cycles at {} GHz).",
        i.context,
        i.batch,
        i.weight_dtype,
        i.kv_dtype,
        s.engine,
        s.tpot_us,
        s.tokens_per_s,
        thousands(s.cycles.round() as u64),
        s.clock_ghz
    ));
    d.p(format!(
        "{}. {}.",
        crate::run::limit_line(s.tpot_us, &r.machine_limit),
        crate::run::floors_line(&r.machine_limit)
    ));
    if let Some((t, verdict)) = r.comparison_table() {
        d.h("Wafer against GPU");
        d.table(t);
        d.p(verdict);
    }
    d.h("Reading these figures");
    for e in r.explanations() {
        d.p(e);
    }
    let mut charts = charts.into_iter();
    if let Some(c) = charts.next() {
        d.chart(c);
    }
    d.h("Where the time goes");
    let total = s.breakdown.total().max(1e-9);
    let us = |c: f64| format!("{:.1}", c / (s.clock_ghz * 1e3));
    let pct = |c: f64| format!("{:.1}%", 100.0 * c / total);
    let mut t = Table::new(&["critical path", ">µs", ">share"]);
    for (name, v) in
        WAFER_PARTS.iter().zip([s.breakdown.compute, s.breakdown.comm, s.breakdown.inter_wafer, s.breakdown.wait])
    {
        t.row([name.to_string(), us(v), pct(v)]);
    }
    d.table(t);
    let mut k = Table::new(&["op kind", ">compute µs", ">comm µs", ">inter-wafer µs", ">wait µs", ">share"]);
    let mut kinds: Vec<_> = s.by_kind.iter().filter(|(_, b)| b.total() > 0.0).collect();
    kinds.sort_by(|a, b| b.1.total().total_cmp(&a.1.total()).then(a.0.cmp(b.0)));
    for (name, b) in kinds {
        k.row([name.clone(), us(b.compute), us(b.comm), us(b.inter_wafer), us(b.wait), pct(b.total())]);
    }
    d.table(k);
    for c in charts.by_ref().take(2) {
        d.chart(c);
    }
    d.h("Mapping");
    let cs = &r.compile;
    let mut m = Table::new(&["figure", ">value"]);
    m.row(["wafers".to_string(), cs.wafers.to_string()]);
    m.row([
        "PEs used".to_string(),
        format!(
            "{} of {} ({:.1}%)",
            thousands(cs.pes_used),
            thousands(cs.pes_available),
            100.0 * cs.pes_used as f64 / cs.pes_available.max(1) as f64
        ),
    ]);
    m.row(["regions / routes".to_string(), format!("{} / {}", cs.regions, cs.routes)]);
    m.row([
        "SRAM per PE (mean / max)".to_string(),
        format!(
            "{} / {} of {}",
            bytes(cs.sram_mean_bytes as u64),
            bytes(cs.sram_max_bytes),
            bytes(p.arch.pe.sram_bytes)
        ),
    ]);
    m.row(["colors per router (max)".to_string(), format!("{} of {}", cs.colors_max_per_router, cs.colors_available)]);
    m.row(["longest route".to_string(), format!("{} hops", cs.longest_route_hops)]);
    m.row(["PE busy (mean)".to_string(), format!("{:.1}%", 100.0 * s.pe_busy_mean)]);
    d.table(m);
    for c in charts {
        d.chart(c);
    }
    d.h("Critical path");
    d.p(format!(
        "{} regions, from {} to {}. trace.json holds the timeline (open it in Perfetto or chrome://tracing): one track per region, grouped by wafer, plus the critical path.",
        s.critical_path.len(),
        s.critical_path.first().map_or("-", |x| x.as_str()),
        s.critical_path.last().map_or("-", |x| x.as_str())
    ));
    d
}

/// Each chart as `NAME.svg` and `NAME.png`, in chart order.
pub fn chart_files(charts: &[Chart]) -> Vec<OutFile> {
    charts
        .iter()
        .flat_map(|c| {
            [
                OutFile::new(format!("{}.svg", c.name), c.svg.clone()),
                OutFile::new(format!("{}.png", c.name), c.png.clone()),
            ]
        })
        .collect()
}

/// All files of the run folder, in a fixed order: report.json, summary.md,
/// report.html, trace.json, then each chart as .svg and .png.
/// `df` is `p` lowered (`wafer_ir::lower`): the trace lists each region's tasks.
pub fn run_folder(r: &RunReport, p: &Program, df: &wafer_ir::Dataflow) -> Result<Vec<OutFile>, ReportError> {
    let charts = run_charts(r, p)?;
    let mut files = vec![OutFile::new("report.json", crate::to_json_pretty(r))];
    let chart_files = chart_files(&charts);
    let doc = run_doc(r, p, charts);
    files.push(OutFile::new("summary.md", doc.to_markdown()));
    files.push(OutFile::new("report.html", doc.to_html()));
    files.push(OutFile::new("trace.json", chrome_trace(p, df, &r.simulation)));
    files.extend(chart_files);
    Ok(files)
}

/// One side of a round trip for [`roundtrip_folder`]: its label, time to
/// first token and answer time, µs.
#[derive(Debug, Clone)]
pub struct RoundTripSide {
    pub system: String,
    pub ttft_us: f64,
    pub decode_us: f64,
}

/// The files of `wafer roundtrip --out`: `roundtrip.json` (`json`, as
/// printed), `summary.md` (`text` in a block, then a table), and the
/// timeline chart `roundtrip.svg` / `.png` — per side, the wait for the first
/// token and then the answer, stacked on one time axis.
pub fn roundtrip_folder(
    title: &str,
    what: &str,
    json: &str,
    text: &str,
    sides: &[RoundTripSide],
) -> Result<Vec<OutFile>, ReportError> {
    let longest = sides.iter().map(|s| s.ttft_us + s.decode_us).fold(0.0, f64::max);
    let (unit, scale) = if longest >= 2e6 { ("s", 1e-6) } else { ("ms", 1e-3) };
    let chart = StackedBars {
        name: "roundtrip".into(),
        title: title.into(),
        x_desc: what.into(),
        y_desc: format!("time since the prompt was sent ({unit})"),
        parts: vec!["time to first token (prefill)".into(), "the answer (decode)".into()],
        bars: sides.iter().map(|s| (s.system.clone(), vec![s.ttft_us * scale, s.decode_us * scale])).collect(),
        notes: sides.iter().map(|s| format!("{:.3} {unit}", (s.ttft_us + s.decode_us) * scale)).collect(),
        colors: vec![1, 0],
        numeric_x: false,
    }
    .render()?;
    let mut t = Table::new(&["", ">time to first token (ms)", ">answer (ms)", ">round trip (ms)"]);
    for s in sides {
        t.row([
            s.system.clone(),
            format!("{:.2}", s.ttft_us / 1e3),
            format!("{:.2}", s.decode_us / 1e3),
            format!("{:.2}", (s.ttft_us + s.decode_us) / 1e3),
        ]);
    }
    let md = format!("# {title}\n\n```text\n{text}```\n\n{}\n![round trip](roundtrip.svg)\n", t.to_markdown());
    let mut files = vec![OutFile::new("roundtrip.json", json.to_string()), OutFile::new("summary.md", md)];
    files.extend(chart_files(&[chart]));
    Ok(files)
}

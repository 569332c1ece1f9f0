//! Wafer maps and traces on a tiny model compiled onto small meshes.

use wafer_compiler::{compile, CompileOptions, Wafers};
use wafer_ir::{arch_preset, verify_graph, Program};
use wafer_reports::heatmap::wafer_maps;
use wafer_reports::trace::chrome_trace;
use wafer_simulator::{simulate_analytical, FinishedSim};
use wafer_workloads::{decode_graph, parse_hf_config, DecodeParams};

const TINY: &str = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}"#;

fn tiny(mesh: &str) -> (Program, FinishedSim) {
    let (p, sim, _) = tiny_lowered(mesh);
    (p, sim)
}

/// The tiny program, its analytical run, and the program lowered to its task lists.
fn tiny_lowered(mesh: &str) -> (Program, FinishedSim, wafer_ir::Dataflow) {
    let cfg = parse_hf_config(TINY, "tiny.json", "tiny").unwrap();
    let g = decode_graph(&cfg, &DecodeParams { context: 16, ..Default::default() }).unwrap();
    verify_graph(&g).unwrap();
    let opts =
        CompileOptions { wafers: Wafers::Fixed(1), strategy: wafer_compiler::Strategy::Pipeline, ..Default::default() };
    let c = compile(&g, &arch_preset(mesh).unwrap(), &opts).unwrap();
    let sim = simulate_analytical(&c.program, &c.info).finished().unwrap();
    let df = wafer_ir::lower(&c.program, &c.info);
    (c.program, sim, df)
}

#[test]
fn maps_paint_regions_where_they_are() {
    let (p, sim) = tiny("mesh:32x32");
    let m = wafer_maps(&p, &sim);
    assert_eq!((m.sram.len(), m.busy.len(), m.link.len()), (1, 1, 1));
    let g = &m.sram[0];
    assert_eq!((g.cell, g.cols, g.rows), (1, 32, 32), "a small mesh is not downsampled");
    // Every PE of a region shows that region's SRAM; PEs of no region are NaN.
    for r in &p.regions {
        assert_eq!(g.get(r.rect.x, r.rect.y), r.sram.total() as f64, "{}", r.name);
    }
    let used: u64 = p.regions.iter().map(|r| r.rect.pes()).sum();
    assert_eq!(g.values.iter().filter(|v| v.is_finite()).count() as u64, used);
    assert!(m.busy[0].values.iter().filter(|v| v.is_finite()).all(|v| (0.0..=1.0).contains(v)));
    assert!(m.busy[0].max() > 0.0);
    assert!(m.link[0].max() > 0.0, "messages load some links");
}

#[test]
fn big_meshes_are_downsampled_to_a_few_hundred_cells() {
    let (p, sim) = tiny("mesh:1000x700");
    let g = &wafer_maps(&p, &sim).sram[0];
    assert!(g.cols <= 240 && g.rows <= 240 && g.cell == 5, "{} x {} cells of {}", g.cols, g.rows, g.cell);
}

#[test]
fn trace_has_a_track_per_region_and_the_critical_path() {
    let (p, sim, df) = tiny_lowered("mesh:32x32");
    let t: serde_json::Value = serde_json::from_str(&chrome_trace(&p, &df, &sim)).unwrap();
    let ev = t["traceEvents"].as_array().unwrap();
    let region_slices: Vec<_> = ev.iter().filter(|e| e["cat"] == "region").collect();
    assert_eq!(region_slices.len(), p.regions.iter().filter(|r| r.active).count());
    // Each region's slice lists the tasks its PEs run, in the dataflow level's order:
    // one compute, every route of its task list once, sends last.
    for e in &region_slices {
        let name = e["args"]["region"].as_str().unwrap();
        let i = p.regions.iter().position(|r| r.name == name).unwrap();
        let tasks: Vec<&str> = e["args"]["tasks"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(tasks.len(), df.region(wafer_ir::RegionId(i as u32)).tasks.len(), "{name}: {tasks:?}");
        assert_eq!(tasks.iter().filter(|t| t.starts_with("compute")).count(), 1, "{name}: {tasks:?}");
        let first_send = tasks.iter().position(|t| t.starts_with("send")).unwrap_or(tasks.len());
        assert!(tasks[first_send..].iter().all(|t| t.starts_with("send")), "{name}: {tasks:?}");
    }
    // A Gemv fed by a forward route receives its column input before it computes.
    let fed = region_slices
        .iter()
        .map(|e| e["args"]["tasks"].as_array().unwrap())
        .find(|ts| {
            ts.iter().any(|t| t.as_str().unwrap().starts_with("recv") && t.as_str().unwrap().contains("ColumnInput"))
        })
        .expect("a region with a column input");
    let pos = |pat: &str| fed.iter().position(|t| t.as_str().unwrap().starts_with(pat)).unwrap();
    assert!(pos("recv") < pos("compute"), "{fed:?}");
    let crit: Vec<_> = ev.iter().filter(|e| e["cat"] == "critical" && e["name"] != "transfer").collect();
    assert_eq!(crit.len(), sim.critical_path.len());
    // The critical path ends when the step ends.
    let last = crit.last().unwrap();
    let end = last["ts"].as_f64().unwrap() + last["dur"].as_f64().unwrap();
    assert!((end - sim.tpot_us).abs() < 1e-2, "{end} vs {}", sim.tpot_us);
    // Phases nest inside their region's slice.
    let phases: Vec<_> = ev.iter().filter(|e| e["cat"] == "phase").collect();
    assert!(!phases.is_empty());
    for e in phases {
        let parent = ev.iter().find(|r| r["cat"] == "region" && r["pid"] == e["pid"] && r["tid"] == e["tid"]).unwrap();
        let (ps, pd) = (parent["ts"].as_f64().unwrap(), parent["dur"].as_f64().unwrap());
        let (s, d) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
        assert!(s >= ps - 1e-3 && s + d <= ps + pd + 1e-3, "{e}");
    }
}

#[test]
fn a_pe_shared_by_regions_shows_everything_stacked_on_it() {
    let cfg = parse_hf_config(TINY, "tiny.json", "tiny").unwrap();
    let g = decode_graph(&cfg, &DecodeParams { context: 16, ..Default::default() }).unwrap();
    let opts =
        CompileOptions { wafers: Wafers::Fixed(1), strategy: wafer_compiler::Strategy::Spread, ..Default::default() };
    let c = compile(&g, &arch_preset("mesh:32x32").unwrap(), &opts).unwrap();
    let sim = simulate_analytical(&c.program, &c.info).finished().unwrap();
    let m = wafer_maps(&c.program, &sim);
    let grid = &m.sram[0];
    // PE (0, 0) lies in the first block: every region covering it adds its weights and KV.
    let mut want = wafer_ir::Sram::default();
    let mut n = 0;
    for r in c.program.regions.iter().filter(|r| r.rect.x == 0 && r.rect.y == 0) {
        want.stack(&r.sram);
        n += 1;
    }
    assert!(n >= 2, "PE (0,0) is shared");
    assert_eq!(grid.get(0, 0), want.total() as f64);
    assert_eq!(grid.values.iter().filter(|v| v.is_finite()).count() as u64, c.info.pes_used);
}

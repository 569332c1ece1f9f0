//! Timeline of one decode step in Chrome trace-event JSON (Perfetto, chrome://tracing).
//!
//! Owns: the layout of the trace — one process per wafer with one thread per
//! region (a slice from its input being ready to its output, carrying its
//! share of the critical path by part; with its phases nested inside for the
//! analytical engine, whose region times are that closed form — the event
//! engine records no time per phase, so its slices have none), a
//! "critical path" process whose single track alternates transfers and
//! regions, and a counter of PEs computing over time. Region-level, so a full
//! wafer stays a few hundred kilobytes. Must not: time anything itself.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use wafer_ir::{Dataflow, Members, Program, RegionId};
use wafer_simulator::{region_cost_rows, FinishedSim};

#[derive(Serialize)]
struct Event {
    name: String,
    ph: &'static str,
    pid: u32,
    tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    #[serde(skip_serializing_if = "Value::is_null")]
    args: Value,
}

/// Microseconds, rounded to the nanosecond (keeps the file small and stable).
fn us(cycles: f64, ghz: f64) -> f64 {
    (cycles / (ghz * 1e3) * 1e3).round() / 1e3
}

fn meta(name: &'static str, pid: u32, tid: u32, args: Value) -> Event {
    Event { name: name.into(), ph: "M", pid, tid, cat: None, ts: None, dur: None, args }
}

fn slice(name: String, cat: &'static str, pid: u32, tid: u32, ts: f64, dur: f64, args: Value) -> Event {
    Event { name, ph: "X", pid, tid, cat: Some(cat), ts: Some(ts), dur: Some(dur), args }
}

/// A region's task list as the engines execute it (`wafer_ir::dataflow`):
/// `recv(rt3) column_input @ all`, `compute`, `send(rt7) residual @ outputs`.
fn task_lines(df: &Dataflow, region: usize) -> Vec<String> {
    df.region(RegionId(region as u32))
        .tasks
        .iter()
        .map(|t| {
            let purposes: Vec<String> = t.purposes.iter().map(|u| format!("{u:?}")).collect();
            let at = match t.at {
                Members::All => "all",
                Members::Outputs => "outputs",
                Members::Row0 => "row 0",
                Members::Col0 => "column 0",
            };
            if purposes.is_empty() {
                format!("{t} @ {at}")
            } else {
                format!("{t} {} @ {at}", purposes.join("+"))
            }
        })
        .collect()
}

/// The trace of `sim` (regions matched to `p.regions` by name), as JSON
/// text; each region's slice lists its tasks from `df` (the program lowered
/// by `wafer_ir::lower`), in the order its PEs run them.
pub fn chrome_trace(p: &Program, df: &Dataflow, sim: &FinishedSim) -> String {
    let ghz = sim.clock_ghz.max(1e-9);
    let t = |c: f64| us(c, ghz);
    let crit_pid = p.wafers;
    let mut ev = Vec::new();
    for w in 0..p.wafers {
        ev.push(meta("process_name", w, 0, json!({ "name": format!("wafer {w}") })));
        ev.push(meta("process_sort_index", w, 0, json!({ "sort_index": w + 1 })));
    }
    ev.push(meta("process_name", crit_pid, 0, json!({ "name": "critical path" })));
    ev.push(meta("process_sort_index", crit_pid, 0, json!({ "sort_index": 0 })));
    ev.push(meta("thread_name", crit_pid, 1, json!({ "name": "critical path" })));

    let region_of: BTreeMap<&str, usize> = p.regions.iter().enumerate().map(|(i, r)| (r.name.as_str(), i)).collect();
    // PEs computing over time, per wafer: +pes at start, -pes at end.
    let mut active: Vec<BTreeMap<u64, i64>> = vec![BTreeMap::new(); p.wafers as usize];
    for rt in &sim.regions {
        let Some(&i) = region_of.get(rt.region.as_str()) else { continue };
        let r = &p.regions[i];
        if !r.active || rt.end <= rt.start || r.wafer >= p.wafers {
            continue;
        }
        let tid = i as u32 + 1;
        ev.push(meta("thread_name", r.wafer, tid, json!({ "name": format!("{} ({})", r.name, r.work.mnemonic()) })));
        ev.push(meta("thread_sort_index", r.wafer, tid, json!({ "sort_index": tid })));
        let args = json!({
            "region": r.name,
            "layer": r.layer,
            "kind": r.work.mnemonic(),
            "pes": r.rect.pes(),
            "rect": format!("{}×{} at ({},{})", r.rect.w, r.rect.h, r.rect.x, r.rect.y),
            "busy_fraction": rt.busy_fraction,
            "sram_bytes_per_pe": r.sram.total(),
            "ops": r.ops,
            "turn": r.turn,
            "tasks": task_lines(df, i),
            // This region's share of the critical path, from the engine (zero off the path).
            "critical_path_cycles": {
                "compute_cycles": rt.breakdown.compute,
                "comm_cycles": rt.breakdown.comm,
                "inter_wafer_cycles": rt.breakdown.inter_wafer,
                "wait_cycles": rt.breakdown.wait,
            },
        });
        let (ts, te) = (t(rt.start), t(rt.end));
        ev.push(slice(rt.role.clone(), "region", r.wafer, tid, ts, (te - ts).max(0.0), args));
        // Phases, when the engine's region time is the closed form (the analytical engine).
        let c = region_cost_rows(&p.arch, &r.work, r.rect, p.rows(), p.new_tokens, p.weight_dtype, p.kv_dtype);
        if sim.engine == "analytical" && (c.total() - (rt.end - rt.start)).abs() <= 1e-6 * c.total().max(1.0) {
            let mut at = rt.start;
            for (name, len) in [
                ("prologue: norm + multicast", c.prologue_comm),
                ("compute", c.compute),
                ("reduce + epilogue", c.reduce_comm + c.reduce_compute),
            ] {
                if len > 0.0 {
                    ev.push(slice(
                        name.into(),
                        "phase",
                        r.wafer,
                        tid,
                        t(at),
                        t(at + len) - t(at),
                        json!({ "cycles": len }),
                    ));
                }
                at += len;
            }
        }
        let a = &mut active[r.wafer as usize];
        *a.entry(t(rt.start).to_bits()).or_default() += r.rect.pes() as i64;
        *a.entry(t(rt.end).to_bits()).or_default() -= r.rect.pes() as i64;
    }
    for (w, a) in active.iter().enumerate() {
        // Keys are bit patterns of non-negative floats: their order is the numeric order.
        let mut level = 0i64;
        for (&bits, &d) in a {
            level += d;
            ev.push(Event {
                name: "PEs in active regions".into(),
                ph: "C",
                pid: w as u32,
                tid: 0,
                cat: Some("counter"),
                ts: Some(f64::from_bits(bits)),
                dur: None,
                args: json!({ "pes": level }),
            });
        }
    }
    // The critical path: transfer, region, transfer, region, ...
    let mut prev_end: Option<f64> = None;
    let timing: BTreeMap<&str, _> = sim.regions.iter().map(|r| (r.region.as_str(), r)).collect();
    for name in &sim.critical_path {
        let Some(rt) = timing.get(name.as_str()) else { continue };
        if let Some(pe) = prev_end {
            if rt.start > pe {
                ev.push(slice("transfer".into(), "critical", crit_pid, 1, t(pe), t(rt.start) - t(pe), Value::Null));
            }
        }
        let b = &rt.breakdown;
        ev.push(slice(
            name.clone(),
            "critical",
            crit_pid,
            1,
            t(rt.start),
            (t(rt.end) - t(rt.start)).max(0.0),
            json!({ "compute_cycles": b.compute, "comm_cycles": b.comm, "inter_wafer_cycles": b.inter_wafer, "wait_cycles": b.wait }),
        ));
        prev_end = Some(rt.end);
    }
    let doc = json!({
        "displayTimeUnit": "ns",
        "otherData": {
            "model": sim.model, "arch": sim.arch, "engine": sim.engine, "wafers": sim.wafers,
            "context": sim.context, "batch": sim.batch, "cycles": sim.cycles, "clock_ghz": sim.clock_ghz,
        },
        "traceEvents": ev,
    });
    let mut s = serde_json::to_string(&doc).expect("trace serialises");
    s.push('\n');
    s
}

//! Runs the event and analytical engines on a compiled model and prints both.
//! `cargo run --release -p wafer-simulator --example event_probe -- llama-3.1-8b 4096 [wafers]`

use std::time::Instant;
use wafer_compiler::{compile, CompileOptions, Wafers};
use wafer_ir::arch_preset;
use wafer_simulator::{simulate_analytical, simulate_event_with_stats, EventLimits};
use wafer_workloads::{decode_graph, preset, DecodeParams};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("llama-3.1-8b", |s| s.as_str());
    let context: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let wafers = args.get(3).and_then(|s| s.parse().ok()).map_or(Wafers::Auto, Wafers::Fixed);
    let cfg = preset(model).expect("preset");
    let g = match decode_graph(&cfg, &DecodeParams { context, ..Default::default() }) {
        Ok(g) => g,
        Err(e) => {
            println!("{model} ctx {context}: no decode graph: {e}");
            return;
        }
    };
    let t = Instant::now();
    let c = match compile(&g, &arch_preset("wse3").unwrap(), &CompileOptions { wafers, ..Default::default() }) {
        Ok(c) => c,
        Err(e) => {
            println!("{model} ctx {context}: does not compile: {e}");
            return;
        }
    };
    eprintln!("compile {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let (e, st) = simulate_event_with_stats(&c.program, &c.info, &EventLimits::default());
    let dt = t.elapsed().as_secs_f64();
    let a = simulate_analytical(&c.program, &c.info);
    println!(
        "{model} ctx {context}: {} wafers, {} regions, {} msgs, {} events, {} crossings, event {:.3} s ({:.2} M ev/s)",
        c.program.wafers,
        c.program.regions.len(),
        st.messages,
        st.events,
        st.link_crossings,
        dt,
        st.events as f64 / dt / 1e6
    );
    println!("event      {:?} cycles {:.0} tpot {:.1} us  {:?}", e.outcome, e.cycles, e.tpot_us, e.breakdown);
    println!("analytical {:?} cycles {:.0} tpot {:.1} us  {:?}", a.outcome, a.cycles, a.tpot_us, a.breakdown);
    println!("ratio event/analytical {:.4}", e.cycles / a.cycles);
    println!("link load {:?}, pe busy {:.4}", e.link_load, e.pe_busy_mean);
    if args.iter().any(|s| s == "-v") {
        for (re, ra) in e.regions.iter().zip(a.regions.iter().filter(|r| r.end > 0.0 || r.pes > 0)) {
            println!(
                "{:<24} ev [{:>9.0} {:>9.0}] dur {:>7.0} | an [{:>9.0} {:>9.0}] dur {:>7.0}",
                re.region,
                re.start,
                re.end,
                re.end - re.start,
                ra.start,
                ra.end,
                ra.end - ra.start
            );
            if re.breakdown.total() > 0.0 {
                println!("    critical: {:?}", re.breakdown);
            }
        }
    }
}

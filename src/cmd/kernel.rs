//! `wafer kernel`: one published wafer kernel built as a spatial-IR program and
//! timed by the normal verifier and engines, or (`--calibration`) every
//! measured silicon row replayed, with the fit of the constants the rows pin
//! down (MeshGEMV: the ramp latency; MeshGEMM: the Cannon step's three fixed costs).

use super::{to_json, Format};
use crate::inputs::load_arch;
use crate::Exit;
use wafer_ir::ArchSpec;
use wafer_kernels::{
    calibrate_gemm, calibrate_gemv, fit_gemm, fit_ramp, time_kernel, Calibration, Engine, GemmCalibration, GemmFit,
    MeshGemm, MeshGemv, RampFit, SHIFT_UNSUPPORTED,
};
use wafer_reports::Table;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    kernel: Option<Kernel>,
    /// Replay every measured row of the kernel's silicon CSV: measured vs
    /// predicted, signed error, median and max, and the fit of the constants
    /// the rows pin down with leave-one-P-out cross-validation.
    #[arg(long)]
    calibration: bool,
    /// With `--calibration`: which kernel's rows (`gemv` or `gemm`; `shift` has no replay yet).
    #[arg(long = "kernel", value_enum, default_value_t = KernelName::Gemv, requires = "calibration")]
    rows: KernelName,
    #[arg(long, value_enum, default_value_t = EngineArg::Event, global = true)]
    engine: EngineArg,
    /// Machine preset or arch TOML (the measurements are WSE-3).
    #[arg(long, default_value = "wse3", global = true)]
    arch: String,
    #[arg(long, value_enum, default_value_t, global = true)]
    format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum KernelName {
    Gemv,
    Gemm,
    Shift,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EngineArg {
    Event,
    Analytical,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Event => Engine::Event,
            EngineArg::Analytical => Engine::Analytical,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
enum Kernel {
    /// MeshGEMV (WaferLLM): y[1×N] = x[1×M]·W[M×N] on a P×P square, two-chain
    /// two-level all-reduce along each PE line, broadcast back; fp16.
    Gemv {
        /// Side P of the PE square.
        #[arg(long)]
        grid: u32,
        /// Input length M (a multiple of P).
        #[arg(long)]
        m: u64,
        /// Output length N (a multiple of P).
        #[arg(long)]
        n: u64,
        /// group_num: groups per line in the reduction's first phase.
        #[arg(long, default_value_t = 8)]
        groups: u32,
        /// Skip the local multiply-accumulate, as the measured kernel source does.
        #[arg(long)]
        no_mac: bool,
    },
    /// Shift a tile L PEs along x: not expressible in the spatial IR yet.
    Shift {
        #[arg(long)]
        grid: u32,
        #[arg(long)]
        distance: u32,
        #[arg(long)]
        m: u64,
        #[arg(long)]
        n: u64,
    },
    /// MeshGEMM (WaferLLM): C[M×N] = A[M×K]·B[K×N], Cannon-style on a P×P
    /// square (P steps of local rank-1 updates while A tiles move along rows
    /// and B tiles along columns, two-hop ring); fp16.
    Gemm {
        /// Side P of the PE square.
        #[arg(long)]
        grid: u32,
        /// Rows M of A and C (a multiple of P).
        #[arg(long)]
        m: u64,
        /// Inner dimension K (a multiple of P).
        #[arg(long)]
        k: u64,
        /// Columns N of B and C (a multiple of P).
        #[arg(long)]
        n: u64,
    },
}

pub fn run(a: Args) -> Result<(), Exit> {
    let arch = load_arch(&a.arch)?;
    let engine = Engine::from(a.engine);
    if a.calibration {
        return match a.rows {
            KernelName::Shift => Err(SHIFT_UNSUPPORTED.into()),
            KernelName::Gemv => calibration(&arch, engine, a.format),
            KernelName::Gemm => gemm_calibration(&arch, engine, a.format),
        };
    }
    match a.kernel {
        None => Err(Exit {
            code: 2,
            message: "name a kernel (`wafer kernel gemv --grid P --m M --n N`) or pass --calibration".into(),
        }),
        Some(Kernel::Shift { .. }) => Err(SHIFT_UNSUPPORTED.into()),
        Some(Kernel::Gemm { grid, m, k, n }) => {
            let kern = MeshGemm { grid, m, k, n };
            let prog = kern.program(&arch)?;
            let (info, r) = time_kernel(&prog, engine, &super::run::event_limits())?;
            let p = grid as u64;
            let flops = 2.0 * m as f64 * k as f64 * n as f64;
            // Achieved multiply-adds per PE per cycle against the spec's fp16 rate.
            let macs_per_pe_cycle = flops / 2.0 / (p * p) as f64 / r.cycles.max(1.0);
            match a.format {
                Format::Json => {
                    let out = serde_json::json!({
                        "kernel": "meshgemm",
                        "grid": grid, "m": m, "k": k, "n": n,
                        "tile_m": m / p, "tile_k": k / p, "tile_n": n / p,
                        "arch": arch.name, "engine": engine.name(),
                        "pes": info.pes_used, "sram_max_bytes": info.sram_max,
                        "flops": flops,
                        "macs_per_pe_cycle": macs_per_pe_cycle,
                        "cycles": r.cycles,
                        "time_us": r.tpot_us,
                        "breakdown": r.breakdown,
                    });
                    print!("{}", to_json(&out));
                }
                Format::Text => {
                    let mut s = format!(
                        "MeshGEMM C[{m}×{n}] = A[{m}×{k}]·B[{k}×{n}] on {grid}×{grid} PEs of {} ({} engine)\n",
                        arch.name,
                        engine.name()
                    );
                    s += &format!(
                        "tiles A {}×{}, B {}×{}, C {}×{} fp16; {grid} Cannon steps, tile moves two hops on the \
                         interleaved ring, overlapped with the compute\n",
                        m / p,
                        k / p,
                        k / p,
                        n / p,
                        m / p,
                        n / p
                    );
                    s += &format!("program: {} PEs, {} B SRAM per PE at most\n", info.pes_used, info.sram_max);
                    let b = &r.breakdown;
                    s += &format!(
                        "cycles:  {} ({:.2} µs at {} GHz) — compute {}, exposed tile moves {}; {:.2} multiply-adds \
                         per PE per cycle\n",
                        r.cycles, r.tpot_us, arch.clock_ghz, b.compute, b.comm, macs_per_pe_cycle
                    );
                    print!("{s}");
                }
            }
            Ok(())
        }
        Some(Kernel::Gemv { grid, m, n, groups, no_mac }) => {
            let k = MeshGemv { grid, m, n, groups, mac: !no_mac };
            let prog = k.program(&arch)?;
            let (info, r) = time_kernel(&prog, engine, &super::run::event_limits())?;
            match a.format {
                Format::Json => {
                    let out = serde_json::json!({
                        "kernel": "meshgemv",
                        "grid": grid, "m": m, "n": n, "groups": groups, "group_len": k.group_len(), "mac": !no_mac,
                        "arch": arch.name, "engine": engine.name(),
                        "pes": info.pes_used, "messages": info.messages, "colors_max": info.colors_max,
                        "sram_max_bytes": info.sram_max,
                        "cycles": r.cycles,
                        "time_us": r.tpot_us,
                        "breakdown": r.breakdown,
                    });
                    print!("{}", to_json(&out));
                }
                Format::Text => {
                    let mut s = format!(
                        "MeshGEMV y[1×{n}] = x[1×{m}]·W[{m}×{n}] on {grid}×{grid} PEs of {} ({} engine)\n",
                        arch.name,
                        engine.name()
                    );
                    s += &format!(
                        "tiles {}×{} fp16, all-reduce: groups of {} PEs (group_num {groups}), two chains meeting \
                         in the middle, then over the group roots, then broadcast back{}\n",
                        m / grid as u64,
                        n / grid as u64,
                        k.group_len(),
                        if no_mac { "; local multiply-accumulate skipped" } else { "" }
                    );
                    s += &format!(
                        "program: {} PEs, {} messages, {} colors per router at most, {} B SRAM per PE at most\n",
                        info.pes_used, info.messages, info.colors_max, info.sram_max
                    );
                    let b = &r.breakdown;
                    s += &format!(
                        "cycles:  {} ({:.2} µs at {} GHz) — compute {}, on-wafer communication {}, waiting {}\n",
                        r.cycles, r.tpot_us, arch.clock_ghz, b.compute, b.comm, b.wait
                    );
                    print!("{s}");
                }
            }
            Ok(())
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn calibration(arch: &ArchSpec, engine: Engine, format: Format) -> Result<(), Exit> {
    let c = calibrate_gemv(arch, engine)?;
    // The fit replays every row three times: the closed form, which matches the
    // event engine to a few cycles on every row (a kernels test), keeps it fast.
    let f = fit_ramp(arch, Engine::Analytical)?;
    if format == Format::Json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            calibration: &'a Calibration,
            fit: &'a RampFit,
        }
        print!("{}", to_json(&Out { calibration: &c, fit: &f }));
        return Ok(());
    }
    print!("{}", render_calibration(&c, &f));
    Ok(())
}

fn render_calibration(c: &Calibration, f: &RampFit) -> String {
    let mut t = Table::new(&[">P", ">M", ">N", ">group_num", ">measured", ">predicted", ">error"]);
    for r in &c.rows {
        t.row([
            r.row.grid.to_string(),
            r.row.m.to_string(),
            r.row.n.to_string(),
            r.row.groups.to_string(),
            format!("{:.1}", r.row.measured_cycles),
            format!("{:.0}", r.predicted_cycles),
            pct(r.error),
        ]);
    }
    let mut s = format!(
        "MeshGEMV on {} silicon (CS-3, kernels/data/meshgemv_wse3.csv), replayed as measured (local \
         multiply-accumulate off) by the {} engine, ramp {} cycles:\n\n",
        c.arch,
        c.engine.name(),
        c.ramp_latency_cycles
    );
    s += &t.to_text();
    s += &format!(
        "\n{} rows: median |error| {:.1}%, max {:.1}%, mean signed {}\n",
        c.rows.len(),
        c.median_abs_error * 100.0,
        c.max_abs_error * 100.0,
        pct(c.mean_error)
    );
    s += &format!(
        "fit of router.ramp_latency_cycles ({} engine, least squares on relative error, {} rows): {:.2} → {} \
         (median |error| {:.1}%, max {:.1}%)\n",
        f.engine.name(),
        f.rows,
        f.value,
        f.rounded,
        f.median_abs_error * 100.0,
        f.max_abs_error * 100.0
    );
    s += &format!(
        "leave-one-P-out: median |error| {:.1}%, max {:.1}%; ramp per fold {}\n",
        f.loo_median_abs_error * 100.0,
        f.loo_max_abs_error * 100.0,
        f.folds.iter().map(|x| format!("{:.2}", x.ramp_fit)).collect::<Vec<_>>().join(" ")
    );
    s += "not constrained by these rows: the hop latency (kept at 1 cycle, sourced; every row has group_num 8, so \
          hops and relays grow together), the local multiply-accumulate (commented out in the measured source).\n";
    s
}

fn gemm_calibration(arch: &ArchSpec, engine: Engine, format: Format) -> Result<(), Exit> {
    let c = calibrate_gemm(arch, engine)?;
    let f = fit_gemm(arch, Engine::Analytical)?;
    if format == Format::Json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            calibration: &'a GemmCalibration,
            fit: &'a GemmFit,
        }
        print!("{}", to_json(&Out { calibration: &c, fit: &f }));
        return Ok(());
    }
    print!("{}", render_gemm_calibration(&c, &f));
    Ok(())
}

fn render_gemm_calibration(c: &GemmCalibration, f: &GemmFit) -> String {
    let mut t = Table::new(&[">P", ">M", ">K", ">N", ">measured", ">predicted", ">error"]);
    for r in &c.rows {
        t.row([
            r.row.grid.to_string(),
            r.row.m.to_string(),
            r.row.k.to_string(),
            r.row.n.to_string(),
            format!("{:.1}", r.row.measured_cycles),
            format!("{:.0}", r.predicted_cycles),
            pct(r.error),
        ]);
    }
    let k = &c.constants;
    let mut s = format!(
        "MeshGEMM on {} silicon (CS-3, kernels/data/meshgemm_wse3.csv), replayed by the {} engine; per Cannon step \
         {} + tile_k·({} + tile_n·({} + ⌈tile_m / rate⌉)) cycles:\n\n",
        c.arch,
        c.engine.name(),
        k.gemm_step_overhead_cycles,
        k.loop_iteration_cycles,
        k.mapped_op_overhead_cycles
    );
    s += &t.to_text();
    s += &format!(
        "\n{} rows: median |error| {:.1}%, max {:.1}%, mean signed {}\n",
        c.rows.len(),
        c.median_abs_error * 100.0,
        c.max_abs_error * 100.0,
        pct(c.mean_error)
    );
    let v = &f.value;
    s += &format!(
        "fit ({} engine, least squares on relative error, {} rows): pe.gemm_step_overhead_cycles {:.2}, \
         pe.loop_iteration_cycles {:.2}, pe.mapped_op_overhead_cycles {:.2} → {}, {}, {} \
         (median |error| {:.1}%, max {:.1}%)\n",
        f.engine.name(),
        f.rows,
        v.gemm_step_overhead_cycles,
        v.loop_iteration_cycles,
        v.mapped_op_overhead_cycles,
        f.rounded.gemm_step_overhead_cycles,
        f.rounded.loop_iteration_cycles,
        f.rounded.mapped_op_overhead_cycles,
        f.median_abs_error * 100.0,
        f.max_abs_error * 100.0
    );
    s += &format!(
        "leave-one-P-out: median |error| {:.1}%, max {:.1}%\n",
        f.loo_median_abs_error * 100.0,
        f.loo_max_abs_error * 100.0
    );
    s += "not constrained by these rows: the link (every row's tile moves finish inside its compute), the SIMD rate \
          (kept at the spec's fp16 rate), tiles larger than 8.\n";
    s
}

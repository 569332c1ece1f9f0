//! `wafer archs`: the machine presets and their key figures.

use super::{to_json, Format};
use crate::Exit;
use serde::Serialize;
use wafer_ir::{arch_preset, ArchSpec, ARCH_PRESETS};
use wafer_reports::{si, thousands, Table};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Serialize)]
struct Row {
    name: String,
    pes: u64,
    sram_total_bytes: u64,
    sram_usable_bytes: u64,
    peak_fp16_flops: f64,
    spec: ArchSpec,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let rows: Vec<Row> = ARCH_PRESETS
        .iter()
        .chain(&["mesh:64x64"])
        .map(|n| {
            let s = arch_preset(n).expect("presets are valid");
            Row {
                name: n.to_string(),
                pes: s.pes(),
                sram_total_bytes: s.pes() * s.pe.sram_bytes,
                sram_usable_bytes: s.pes() * s.usable_sram(),
                // Two FLOPs per 16-bit x 16-bit -> fp32 FMA lane per cycle, on every PE.
                peak_fp16_flops: s.pes() as f64 * s.pe.simd_mixed as f64 * 2.0 * s.clock_ghz * 1e9,
                spec: s,
            }
        })
        .collect();
    match a.format {
        Format::Json => print!("{}", to_json(&rows)),
        Format::Text => {
            let mut t = Table::new(&[
                "arch",
                ">mesh",
                ">PEs",
                ">SRAM/PE",
                ">reserved",
                ">SRAM total",
                ">usable",
                ">clock",
                ">fp16×fp16→fp32 peak",
                ">link",
                ">colors",
            ]);
            for r in &rows {
                let s = &r.spec;
                t.row([
                    r.name.clone(),
                    format!("{}×{}", s.mesh_width, s.mesh_height),
                    thousands(r.pes),
                    format!("{} KiB", s.pe.sram_bytes / 1024),
                    format!("{} KiB", s.pe.sram_reserved_bytes / 1024),
                    si(r.sram_total_bytes as f64, "B"),
                    si(r.sram_usable_bytes as f64, "B"),
                    format!("{} GHz", s.clock_ghz),
                    si(r.peak_fp16_flops, "FLOP/s"),
                    format!("{} B/cycle", s.router.link_bytes_per_cycle),
                    format!("{} ({} for programs)", s.router.colors, s.program_colors()),
                ]);
            }
            print!("{}", t.to_text());
            println!("\n`mesh:WxH` gives any small mesh of WSE-3-like PEs; `--arch FILE.toml` reads a spec");
            println!("(`wafer archs --format json` prints every field, with units and sources in ir/src/arch.rs).");
        }
    }
    Ok(())
}

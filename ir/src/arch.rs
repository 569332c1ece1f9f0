//! Architecture spec of a spatial-dataflow machine: a 2D mesh of PEs with
//! local SRAM, routers with colored virtual channels, and wafers joined by a
//! system link.
//!
//! Owns: the parameters (each with its unit and source), the `wse2`, `wse3`
//! and `mesh:WxH` presets, TOML (de)serialisation and validation. Must not:
//! read files (callers pass text) or know about models.
//!
//! Sources are tagged as in `shared/reference/hardware.md`: [DOC] vendor
//! documentation, [V] vendor claim, [M] third-party measurement, [CODE] value
//! in public code, [I] arithmetic from those, [A] our assumption (no public figure),
//! [FIT] fitted to measured kernel rows (the fit is re-run in a test).

use serde::{Deserialize, Serialize};

/// Per-PE compute and memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeSpec {
    /// Local SRAM per PE, bytes. WSE-2/3: 48 KiB [DOC SDK appendix].
    pub sram_bytes: u64,
    /// SRAM held back on every PE for code, runtime and stack, bytes. The one
    /// published per-PE budget of a real decode kernel (CS-3) spends 22.6 KB on
    /// code and ~3.6 KB on the system [M EPCC notes]; Cerebras's "70B on as few as
    /// four CS-3" [V] implies at most ~8 KiB. Default 16 KiB, between the two:
    /// a compiler that places one op per region replicates only that op's code.
    /// Sweep it: it decides how many wafers a model needs.
    pub sram_reserved_bytes: u64,
    /// SRAM read bytes per cycle: 2 read ports x 64 bit [V Hot Chips 34; the
    /// 21 PB/s headline over 900k PEs at 1.1 GHz is ~21 B/cycle, fitting 64-bit ports, I].
    pub sram_read_bytes_per_cycle: u32,
    /// SRAM write bytes per cycle: 1 write port x 64 bit [same sources].
    pub sram_write_bytes_per_cycle: u32,
    /// fp32 FMAs per cycle.
    pub simd_f32: u32,
    /// 16-bit x 16-bit -> fp32 FMAs per cycle (`@fmachs`: WSE-2 2, WSE-3 4) [DOC].
    /// Used for every weight format narrower than 32 bits: they are unpacked to
    /// 16 bit, so narrow weights save SRAM but not cycles.
    pub simd_mixed: u32,
    /// Element-wise fp32 ops (add, max, scale) per cycle (`@fadds`: WSE-2 2, WSE-3 4) [DOC].
    pub simd_elementwise: u32,
    /// Fixed cycles per vector instruction (DSD op): a 14-element FMACS costs
    /// ~58 cycles, 15 of them pure [M csl-experiments SUMMA model], and a 16x16
    /// fp32 mat-vec 765 cycles = 16 x (16/4 + 43.8) [M MIMD_dataflow, I].
    pub vector_op_overhead_cycles: u32,
    /// Fixed cycles to activate a task (wake on data, set up DSDs) [A].
    pub task_overhead_cycles: u32,
    /// Fixed cycles per iteration of a kernel's inner software loop that
    /// reloads its DSD registers and starts a mapped vector op (MeshGEMM's
    /// per-`k` cost: three `@load_to_dsr`, a `@map`, two offset increments).
    /// **Fitted** with the next two to the 96 MeshGEMM rows measured on a CS-3
    /// (`kernels/data/meshgemm_wse3.csv`; `kernels::fit_gemm` re-runs the fit)
    /// [FIT]. WSE-2 is assumed to share them [A].
    #[serde(default = "default_loop_iteration")]
    pub loop_iteration_cycles: u32,
    /// Fixed cycles per vector op issued from pre-loaded DSD registers inside
    /// a `@map` (one per element of the mapped operand), on top of its
    /// elements at the SIMD rate: no DSD set-up, unlike
    /// `vector_op_overhead_cycles` [FIT, as above].
    #[serde(default = "default_mapped_op")]
    pub mapped_op_overhead_cycles: u32,
    /// Fixed cycles per step of a Cannon GEMM beyond its multiply-accumulates:
    /// the step's task activations (both tile moves' completions, the next
    /// step), the buffer swaps, starting both tile moves, and the initial
    /// skew's share of the `P` steps [FIT, as above].
    #[serde(default = "default_gemm_step")]
    pub gemm_step_overhead_cycles: u32,
}

/// The fitted MeshGEMM constants of the presets, cycles (see
/// [`PeSpec::loop_iteration_cycles`]; `kernels::fit_gemm` re-runs the fit).
pub const LOOP_ITERATION_CYCLES: u32 = 40;
/// See [`LOOP_ITERATION_CYCLES`].
pub const MAPPED_OP_OVERHEAD_CYCLES: u32 = 1;
/// See [`LOOP_ITERATION_CYCLES`].
pub const GEMM_STEP_OVERHEAD_CYCLES: u32 = 120;

fn default_loop_iteration() -> u32 {
    LOOP_ITERATION_CYCLES
}
fn default_mapped_op() -> u32 {
    MAPPED_OP_OVERHEAD_CYCLES
}
fn default_gemm_step() -> u32 {
    GEMM_STEP_OVERHEAD_CYCLES
}

/// Per-router fabric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    /// Bytes per cycle per link per direction: one 32-bit wavelet [DOC].
    pub link_bytes_per_cycle: u32,
    /// Cycles per hop: ~1, inferred from clock-skew correction code [CODE WaferLLM, I];
    /// the WSE collective model of Luczynski et al. (HPDC 2024) also charges one
    /// cycle per hop of distance [M].
    pub hop_latency_cycles: u32,
    /// Cycles between a PE's router and its compute engine, each way (the
    /// "ramp"): a message leaving memory pays it once, a message landing in
    /// memory once, and a PE that adds a streamed partial and passes it on
    /// (a pipelined chain step) pays `2·ramp + 1` on top of the hop — the
    /// per-step structure of Luczynski et al.'s model (`(2·T_R + 1)` per
    /// dependent step) [M]. Not published as a number: **fitted** to the 192
    /// MeshGEMV rows measured on a CS-3 (`kernels/data/meshgemv_wse3.csv`; the
    /// fit is re-run by `kernels` tests and `wafer kernel --calibration`),
    /// which pin `2·ramp + 1` through the growth of the two-chain all-reduce
    /// with the column length [FIT]. WSE-2 is assumed to share it [A].
    pub ramp_latency_cycles: u32,
    /// Routable colors (virtual channels): 24 [DOC].
    pub colors: u32,
    /// Colors the runtime keeps for itself: about 6 [DOC].
    pub reserved_colors: u32,
    /// A router can forward one wavelet to several output ports [DOC].
    pub multicast: bool,
}

/// Multi-wafer system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSpec {
    /// Wafers used when the user does not say (`--wafers`).
    pub wafers: u32,
    /// Bytes per second between consecutive wafers: 12 x 100 GbE = 150 GB/s [V].
    pub inter_wafer_bytes_per_s: f64,
    /// One-way latency between wafers, ns. Not published; 5 us is typical of
    /// RDMA over 100 GbE NIC to NIC [A].
    pub inter_wafer_latency_ns: f64,
}

/// A whole machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    pub name: String,
    /// Usable mesh width in PEs (the rectangle a program may use).
    pub mesh_width: u32,
    /// Usable mesh height in PEs.
    pub mesh_height: u32,
    /// Core clock, GHz. Sources disagree: 1.1 GHz [V Hot Chips 34; CODE WaferLLM]
    /// vs 0.85 GHz (SDK examples convert cycles at 850 MHz) [DOC]. Default 1.1.
    pub clock_ghz: f64,
    pub pe: PeSpec,
    pub router: RouterSpec,
    pub system: SystemSpec,
}

/// A spec that cannot describe a machine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArchError {
    #[error("{source_name}: field `{field}` is {value}; allowed: {allowed}")]
    Invalid { source_name: String, field: &'static str, value: String, allowed: String },
    #[error("{source_name}: not a valid arch spec: {message}")]
    Parse { source_name: String, message: String },
    #[error("unknown arch `{name}`: presets are {presets}, `mesh:WxH` (e.g. mesh:8x8), or a path to a TOML file")]
    Unknown { name: String, presets: String },
}

use crate::limits::{fmt_f64, MAX_CLOCK_GHZ, MAX_MESH_SIDE, MAX_WAFERS, MIN_CLOCK_GHZ};

/// The fitted router-to-compute ramp latency of the presets, cycles (see
/// [`RouterSpec::ramp_latency_cycles`]; `kernels::fit_ramp` re-runs the fit).
pub const RAMP_LATENCY_CYCLES: u32 = 14;

impl ArchSpec {
    pub fn pes(&self) -> u64 {
        self.mesh_width as u64 * self.mesh_height as u64
    }

    /// SRAM per PE left for weights, KV cache and buffers.
    pub fn usable_sram(&self) -> u64 {
        self.pe.sram_bytes.saturating_sub(self.pe.sram_reserved_bytes)
    }

    /// Colors available to programs.
    pub fn program_colors(&self) -> u32 {
        self.router.colors.saturating_sub(self.router.reserved_colors)
    }

    pub fn cycles_to_us(&self, cycles: f64) -> f64 {
        cycles / (self.clock_ghz * 1e3)
    }

    pub fn inter_wafer_latency_cycles(&self) -> f64 {
        self.system.inter_wafer_latency_ns * self.clock_ghz
    }

    pub fn inter_wafer_bytes_per_cycle(&self) -> f64 {
        self.system.inter_wafer_bytes_per_s / (self.clock_ghz * 1e9)
    }

    /// Checks every field's range; `source_name` prefixes the error.
    pub fn validate(&self, source_name: &str) -> Result<(), ArchError> {
        let bad = |field: &'static str, value: String, allowed: &str| {
            Err(ArchError::Invalid { source_name: source_name.into(), field, value, allowed: allowed.into() })
        };
        let side = format!("1..={MAX_MESH_SIDE}");
        if self.mesh_width == 0 || self.mesh_width > MAX_MESH_SIDE {
            return bad("mesh_width", self.mesh_width.to_string(), &side);
        }
        if self.mesh_height == 0 || self.mesh_height > MAX_MESH_SIDE {
            return bad("mesh_height", self.mesh_height.to_string(), &side);
        }
        if !(self.clock_ghz >= MIN_CLOCK_GHZ && self.clock_ghz <= MAX_CLOCK_GHZ) {
            return bad(
                "clock_ghz",
                fmt_f64(self.clock_ghz),
                &format!("a number in {MIN_CLOCK_GHZ}..={MAX_CLOCK_GHZ}"),
            );
        }
        let pe = &self.pe;
        if pe.sram_bytes == 0 || pe.sram_bytes > 1 << 30 {
            return bad("pe.sram_bytes", pe.sram_bytes.to_string(), "1..=1073741824");
        }
        if pe.sram_reserved_bytes >= pe.sram_bytes {
            return bad(
                "pe.sram_reserved_bytes",
                pe.sram_reserved_bytes.to_string(),
                &format!("less than pe.sram_bytes ({})", pe.sram_bytes),
            );
        }
        for (f, v) in [
            ("pe.sram_read_bytes_per_cycle", pe.sram_read_bytes_per_cycle),
            ("pe.sram_write_bytes_per_cycle", pe.sram_write_bytes_per_cycle),
            ("pe.simd_f32", pe.simd_f32),
            ("pe.simd_mixed", pe.simd_mixed),
            ("pe.simd_elementwise", pe.simd_elementwise),
            ("router.link_bytes_per_cycle", self.router.link_bytes_per_cycle),
        ] {
            if v == 0 || v > 4096 {
                return bad(f, v.to_string(), "1..=4096");
            }
        }
        for (f, v) in [
            ("pe.vector_op_overhead_cycles", pe.vector_op_overhead_cycles),
            ("pe.task_overhead_cycles", pe.task_overhead_cycles),
            ("pe.loop_iteration_cycles", pe.loop_iteration_cycles),
            ("pe.mapped_op_overhead_cycles", pe.mapped_op_overhead_cycles),
            ("pe.gemm_step_overhead_cycles", pe.gemm_step_overhead_cycles),
        ] {
            if v > 100_000 {
                return bad(f, v.to_string(), "0..=100000");
            }
        }
        if self.router.hop_latency_cycles > 1000 {
            return bad("router.hop_latency_cycles", self.router.hop_latency_cycles.to_string(), "0..=1000");
        }
        if self.router.ramp_latency_cycles > 1000 {
            return bad("router.ramp_latency_cycles", self.router.ramp_latency_cycles.to_string(), "0..=1000");
        }
        if self.router.colors == 0 || self.router.colors > 256 {
            return bad("router.colors", self.router.colors.to_string(), "1..=256");
        }
        if self.router.reserved_colors >= self.router.colors {
            return bad(
                "router.reserved_colors",
                self.router.reserved_colors.to_string(),
                &format!("fewer than router.colors ({})", self.router.colors),
            );
        }
        if self.system.wafers == 0 || self.system.wafers > MAX_WAFERS {
            return bad("system.wafers", self.system.wafers.to_string(), &format!("1..={MAX_WAFERS}"));
        }
        // 1 MB/s to 1 PB/s (150 GB/s today); up to one second of latency (5 us today).
        if !(self.system.inter_wafer_bytes_per_s >= 1e6 && self.system.inter_wafer_bytes_per_s <= 1e15) {
            return bad(
                "system.inter_wafer_bytes_per_s",
                fmt_f64(self.system.inter_wafer_bytes_per_s),
                "a number in 1e6..=1e15",
            );
        }
        if !(self.system.inter_wafer_latency_ns >= 0.0 && self.system.inter_wafer_latency_ns <= 1e9) {
            return bad(
                "system.inter_wafer_latency_ns",
                fmt_f64(self.system.inter_wafer_latency_ns),
                "a number in 0..=1e9",
            );
        }
        Ok(())
    }

    /// Parses and validates a TOML spec.
    pub fn from_toml(text: &str, source_name: &str) -> Result<ArchSpec, ArchError> {
        let a: ArchSpec = toml::from_str(text)
            .map_err(|e| ArchError::Parse { source_name: source_name.into(), message: e.to_string() })?;
        a.validate(source_name)?;
        Ok(a)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("arch specs serialise")
    }
}

fn wse(name: &str, w: u32, h: u32, simd_mixed: u32, simd_elementwise: u32) -> ArchSpec {
    ArchSpec {
        name: name.into(),
        mesh_width: w,
        mesh_height: h,
        clock_ghz: 1.1,
        pe: PeSpec {
            sram_bytes: 48 * 1024,
            sram_reserved_bytes: 16 * 1024,
            sram_read_bytes_per_cycle: 16,
            sram_write_bytes_per_cycle: 8,
            simd_f32: simd_elementwise,
            simd_mixed,
            simd_elementwise,
            vector_op_overhead_cycles: 43,
            task_overhead_cycles: 20,
            loop_iteration_cycles: LOOP_ITERATION_CYCLES,
            mapped_op_overhead_cycles: MAPPED_OP_OVERHEAD_CYCLES,
            gemm_step_overhead_cycles: GEMM_STEP_OVERHEAD_CYCLES,
        },
        router: RouterSpec {
            link_bytes_per_cycle: 4,
            hop_latency_cycles: 1,
            ramp_latency_cycles: RAMP_LATENCY_CYCLES,
            colors: 24,
            reserved_colors: 6,
            multicast: true,
        },
        system: SystemSpec { wafers: 1, inter_wafer_bytes_per_s: 150e9, inter_wafer_latency_ns: 5000.0 },
    }
}

/// Preset names, for listings and errors.
pub const ARCH_PRESETS: [&str; 2] = ["wse2", "wse3"];

/// A preset by name: `wse2`, `wse3`, or `mesh:WxH` (a WSE-3-like PE on a small mesh).
pub fn arch_preset(name: &str) -> Result<ArchSpec, ArchError> {
    match name {
        // Program rectangle of a CS-2: 750 x 994 = 745,500 PEs [DOC csl-examples; M Miyajima 2026].
        "wse2" => Ok(wse("wse2", 750, 994, 2, 2)),
        // Program rectangle of a CS-3: 755 x 1170 = 883,350 PEs (fabric 762 x 1172 less the memcpy halo) [DOC, CODE].
        "wse3" => Ok(wse("wse3", 755, 1170, 4, 4)),
        _ => {
            if let Some(dims) = name.strip_prefix("mesh:") {
                let parsed = dims
                    .split_once(['x', 'X'])
                    .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
                let Some((w, h)) = parsed else {
                    return Err(ArchError::Invalid {
                        source_name: name.into(),
                        field: "mesh",
                        value: dims.into(),
                        allowed: "WxH with positive integers, e.g. mesh:8x8".into(),
                    });
                };
                let a = wse(name, w, h, 4, 4);
                a.validate(name)?;
                return Ok(a);
            }
            Err(ArchError::Unknown { name: name.into(), presets: ARCH_PRESETS.join(", ") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_toml() {
        for n in ARCH_PRESETS.iter().copied().chain(["mesh:4x3"]) {
            let a = arch_preset(n).unwrap();
            a.validate(n).unwrap();
            assert_eq!(ArchSpec::from_toml(&a.to_toml(), n).unwrap(), a);
        }
        assert_eq!(arch_preset("wse3").unwrap().pes(), 883_350);
        assert_eq!(arch_preset("wse2").unwrap().pes(), 745_500);
    }

    #[test]
    fn invalid_specs_are_clear_errors() {
        let base = arch_preset("wse3").unwrap();
        let check = |f: &dyn Fn(&mut ArchSpec), needle: &str| {
            let mut a = base.clone();
            f(&mut a);
            let e = a.validate("x.toml").unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("x.toml"), "{e}");
        };
        check(&|a| a.mesh_width = 0, "mesh_width");
        check(&|a| a.pe.sram_bytes = 0, "pe.sram_bytes");
        check(&|a| a.router.reserved_colors = 30, "router.reserved_colors");
        check(&|a| a.pe.sram_reserved_bytes = 1 << 20, "pe.sram_reserved_bytes");
        check(&|a| a.mesh_width = 40000, "mesh_width` is 40000; allowed: 1..=4096");
        check(&|a| a.clock_ghz = 1e-300, "clock_ghz` is 1e-300; allowed");
        check(&|a| a.pe.task_overhead_cycles = 200_000, "pe.task_overhead_cycles` is 200000; allowed: 0..=100000");
        check(&|a| a.system.wafers = 100_000, "system.wafers` is 100000; allowed: 1..=10000");
        assert!(arch_preset("mesh:0x4").is_err());
        assert!(arch_preset("mesh:banana").unwrap_err().to_string().contains("WxH"));
        assert!(arch_preset("tpu").unwrap_err().to_string().contains("wse3"));
        let e = ArchSpec::from_toml("mesh_width = 3", "a.toml").unwrap_err().to_string();
        assert!(e.contains("a.toml") && e.contains("missing"), "{e}");
    }
}

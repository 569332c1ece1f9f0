//! MeshGEMM (WaferLLM, OSDI 2025) as a spatial-IR program.
//!
//! Owns: the one place that turns a published MeshGEMM configuration (grid
//! `P`, `M`, `K`, `N`) into a [`Program`]: one `P × P` [`Work::Gemm`] region
//! with fp16 operands and an fp16 product (`@fmach`, as the published source).
//! Must not: time anything (the engines do, through the normal verifier) or
//! know the measured rows.
//!
//! Orientation: MeshGEMM computes `C[M×N] = A[M×K]·B[K×N]` with PE (row `i`,
//! column `j`) holding tiles `(i, j)` of `A`, `B` and `C`; the IR's Gemm
//! states the same layout (`tile_m = M / P`, `tile_k = K / P`, `tile_n = N / P`).

use crate::KernelError;
use wafer_ir::{ArchSpec, DType, Program, Work};

/// A MeshGEMM configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshGemm {
    /// Side of the PE square.
    pub grid: u32,
    /// Rows of `A` and `C`.
    pub m: u64,
    /// Columns of `A`, rows of `B`.
    pub k: u64,
    /// Columns of `B` and `C`.
    pub n: u64,
}

impl MeshGemm {
    /// Checks the configuration against the published kernel's constraints and the machine.
    pub fn validate(&self, arch: &ArchSpec) -> Result<(), KernelError> {
        let bad =
            |field: &'static str, value: String, allowed: String| Err(KernelError::Invalid { field, value, allowed });
        let side = arch.mesh_width.min(arch.mesh_height);
        // The two-hop ring needs at least two PEs per line.
        if self.grid < 2 || self.grid > side {
            return bad("--grid", self.grid.to_string(), format!("2..={side} (the {} mesh)", arch.name));
        }
        let p = self.grid as u64;
        for (field, v) in [("--m", self.m), ("--k", self.k), ("--n", self.n)] {
            if v == 0 || v % p != 0 || v / p > 4096 {
                return bad(field, v.to_string(), format!("a multiple of --grid {p}, at most {}", 4096 * p));
            }
        }
        Ok(())
    }

    /// The kernel as a program on `arch` (not verified: run the verifier,
    /// which also checks that the tiles fit in a PE's SRAM).
    pub fn program(&self, arch: &ArchSpec) -> Result<Program, KernelError> {
        self.validate(arch)?;
        let p = self.grid as u64;
        let work = Work::Gemm {
            m: self.m,
            k: self.k,
            n: self.n,
            tile_m: self.m / p,
            tile_k: self.k / p,
            tile_n: self.n / p,
            acc: DType::F16,
        };
        let prog = crate::square_program(
            format!("meshgemm P={} M={} K={} N={}", self.grid, self.m, self.k, self.n),
            arch,
            "meshgemm",
            self.grid,
            work,
        );
        Ok(prog)
    }
}

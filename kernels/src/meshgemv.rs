//! MeshGEMV (WaferLLM, OSDI 2025) as a spatial-IR program.
//!
//! Owns: the one place that turns a published MeshGEMV configuration (grid `P`,
//! `M`, `N`, `group_num`) into a [`Program`]: one `P × P` Gemv region with the
//! [`Reduce::Meet`] shape (groups of `P / group_num` PEs, as the published
//! launcher computes them), fp16 partials, and a `bcast` route sending every
//! row root's output back along its row. Must not: time anything (the engines
//! do, through the normal verifier) or know the measured rows.
//!
//! Orientation: MeshGEMV computes `y[1×N] = x[1×M]·W[M×N]` with PE (row `i`,
//! column `j`) holding block `(i, j)` of `W` and slice `i` of `x`, and
//! all-reduces along PE *columns*. The spatial IR's Gemv is `y = x·Wᵀ` with `W`
//! stored `[n, k]` and reduces along PE *rows*: the same kernel transposed, with
//! `n = N`, `k = M`, `tile_n = N / P`, `tile_k = M / P`. On a square with
//! identical links in both directions the timing is the same.

use crate::KernelError;
use wafer_ir::{route_messages, ArchSpec, DType, Program, Reduce, RegionId, Route, RouteId, RouteKind, Step, Work};

/// A MeshGEMV configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshGemv {
    /// Side of the PE square.
    pub grid: u32,
    /// Input length (rows of `W`).
    pub m: u64,
    /// Output length (columns of `W`).
    pub n: u64,
    /// `group_num`: groups per column in the reduction's first phase.
    pub groups: u32,
    /// Run the local multiply-accumulate. The measured rows were taken with it
    /// commented out in the kernel source, so their replay sets this to `false`.
    pub mac: bool,
}

impl MeshGemv {
    /// PEs per group, as the published launcher computes it (`P / group_num`).
    pub fn group_len(&self) -> u32 {
        self.grid / self.groups.max(1)
    }

    /// Checks the configuration against the published kernel's constraints and the machine.
    pub fn validate(&self, arch: &ArchSpec) -> Result<(), KernelError> {
        let bad =
            |field: &'static str, value: String, allowed: String| Err(KernelError::Invalid { field, value, allowed });
        let side = arch.mesh_width.min(arch.mesh_height);
        if self.grid < 3 || self.grid > side {
            // The kernel asserts P >= 3.
            return bad("--grid", self.grid.to_string(), format!("3..={side} (the {} mesh)", arch.name));
        }
        let p = self.grid as u64;
        for (field, v) in [("--m", self.m), ("--n", self.n)] {
            if v == 0 || v % p != 0 || v / p > 4096 {
                return bad(field, v.to_string(), format!("a multiple of --grid {p}, at most {}", 4096 * p));
            }
        }
        if self.groups == 0 || self.groups > self.grid {
            return bad("--groups", self.groups.to_string(), format!("1..={}", self.grid));
        }
        Ok(())
    }

    /// The kernel as a program on `arch` (not verified: run the verifier).
    pub fn program(&self, arch: &ArchSpec) -> Result<Program, KernelError> {
        self.validate(arch)?;
        let p = self.grid as u64;
        let work = Work::Gemv {
            n: self.n,
            k: self.m,
            tile_n: self.n / p,
            tile_k: self.m / p,
            reduce: Reduce::Meet { group: self.group_len() },
            glu: false,
            norm: false,
            argmax: false,
            epilogue_ops: 0,
            acc: DType::F16,
            mac: self.mac,
            batch_chunk: 0,
        };
        let mut prog = crate::square_program(
            format!("meshgemv P={} M={} N={} group_num={}", self.grid, self.m, self.n, self.groups),
            arch,
            "meshgemv",
            self.grid,
            work,
        );
        let me = RegionId(0);
        // Reduce on colors 0-1, the broadcast back on 2-3 (east and west).
        for (i, kind) in [RouteKind::Reduce, RouteKind::Bcast].into_iter().enumerate() {
            prog.routes.push(Route { kind, src: me, dst: me, color: 2 * i as u32, colors: 2, bytes: 0 });
            let id = RouteId(i as u32);
            let bytes = route_messages(&prog, id).iter().map(|m| m.bytes).sum();
            prog.routes[i].bytes = bytes;
            prog.regions[0].steps.push(Step::Collective { route: id });
        }
        Ok(prog)
    }
}

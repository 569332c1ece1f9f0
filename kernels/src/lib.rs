//! `wafer-kernels`: published wafer kernels built as spatial-IR programs and
//! replayed against cycle counts measured on WSE-3 silicon.
//!
//! Owns: the kernel builders ([`MeshGemv`], [`MeshGemm`]), timing one through
//! the normal verifier and engines ([`time_kernel`]: no special-case timing
//! path), the embedded measurements (`data/`, verbatim copies with their
//! source), the calibration reports ([`calibrate_gemv`], [`calibrate_gemm`])
//! and the fits of the micro-timing constants the rows pin down ([`fit_ramp`],
//! [`fit_gemm`], each with leave-one-P-out cross-validation). Must not: read files, print, or change the micro-timing
//! model (that is `wafer_cost::timing`; the fitted value lives in the
//! arch presets, and a test here re-runs the fit against it).
//!
//! Kernels the IR cannot express yet are typed errors, not guesses: Shift moves
//! a tile L PEs by relaying it through every PE on the way (a task per hop;
//! the spatial IR routes messages through routers only).

pub mod calibrate;
pub mod calibrate_gemm;
pub mod meshgemm;
pub mod meshgemv;

pub use calibrate::{
    calibrate_gemv, fit_ramp, gemv_rows, Calibration, GemvRow, LooFold, RampFit, RowResult, MESHGEMV_CSV,
};
pub use calibrate_gemm::{
    calibrate_gemm, fit_gemm, gemm_rows, GemmCalibration, GemmConstants, GemmFit, GemmFold, GemmRow, GemmRowResult,
    MESHGEMM_CSV,
};
pub use meshgemm::MeshGemm;
pub use meshgemv::MeshGemv;

use wafer_ir::{sram_need, verify_program, ArchSpec, DType, Program, ProgramInfo, Rect, Region, Step, Work};
#[cfg(doc)]
use wafer_simulator::SimResult;
use wafer_simulator::{simulate_analytical, try_simulate_event, EventLimits, FinishedSim};

/// Which timing engine replays a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Event,
    Analytical,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Event => "event",
            Engine::Analytical => "analytical",
        }
    }
}

/// Why a kernel cannot be built or timed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    #[error("`{field}` is {value}; allowed: {allowed}")]
    Invalid { field: &'static str, value: String, allowed: String },
    #[error("the kernel program does not verify: {0}")]
    Verify(String),
    #[error("{0}")]
    Unfinished(String),
    #[error("{0}")]
    Budget(String),
    #[error("{kernel}: {why}")]
    Unsupported { kernel: &'static str, why: &'static str },
    #[error("embedded {file}, line {line}: {message}")]
    Data { file: &'static str, line: usize, message: String },
    #[error("the fit is not affine in {what} for row {row}: {replayed} cycles replayed at the check point, {expected} from the fit points")]
    NotAffine { what: &'static str, row: String, replayed: f64, expected: f64 },
}

/// `wafer kernel shift`: why the IR cannot express it yet.
pub const SHIFT_UNSUPPORTED: KernelError = KernelError::Unsupported {
    kernel: "shift",
    why: "the measured kernel relays each tile through every PE on the way (a receive and a send per hop, \
          ~70-80 cycles per PE of distance); the spatial IR moves data only as routed messages (1 cycle per hop) \
          and cannot state a relayed move yet (it needs the per-PE task lists of the dataflow level)",
};

/// A one-region fp16 kernel program on `arch`: the region `name` is a
/// `grid × grid` square running `work` (its SRAM from the IR's rule) with one
/// compute step; callers add routes.
pub(crate) fn square_program(model: String, arch: &ArchSpec, name: &str, grid: u32, work: Work) -> Program {
    let mut prog = Program {
        model,
        batch: 1,
        new_tokens: 1,
        context: 1,
        weight_dtype: DType::F16,
        act_dtype: DType::F16,
        kv_dtype: DType::F16,
        wafers: 1,
        arch: arch.clone(),
        regions: Vec::new(),
        routes: Vec::new(),
    };
    let sram = sram_need(&prog, &work);
    prog.regions.push(Region {
        name: name.into(),
        layer: None,
        wafer: 0,
        rect: Rect { x: 0, y: 0, w: grid, h: grid },
        turn: 0,
        active: true,
        ops: vec![work.mnemonic().into()],
        work,
        sram,
        steps: vec![Step::Compute],
    });
    prog
}

/// Verifies `p` and times it with `engine` within `limits` (the event
/// engine's memory and event budgets); a run that does not finish is an error,
/// through the same [`SimResult::finished`] gate as every decode step.
pub fn time_kernel(
    p: &Program,
    engine: Engine,
    limits: &EventLimits,
) -> Result<(ProgramInfo, FinishedSim), KernelError> {
    let info = verify_program(p).map_err(|e| KernelError::Verify(e.to_string()))?;
    let r = match engine {
        Engine::Event => try_simulate_event(p, &info, limits).map_err(|e| KernelError::Budget(e.to_string()))?,
        Engine::Analytical => simulate_analytical(p, &info),
    };
    let done = r.finished().map_err(|e| KernelError::Unfinished(e.to_string()))?;
    Ok((info, done))
}

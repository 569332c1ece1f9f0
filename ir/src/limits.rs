//! Input ranges and resource budgets shared by every crate.
//!
//! Owns: the ranges of the machine-level quantities a program or an arch may
//! hold (mesh sides, wafers, clock), the [`ResourceError`] an engine or a
//! builder returns when what it is about to allocate exceeds its budget, and
//! the byte formatting that error uses. Must not: read the machine's memory
//! size or any other environment (the CLI does, and passes a plain number).
//!
//! The ranges are generous on purpose, about ten times the largest real
//! system (a WSE-3 program rectangle is 755 x 1170 PEs; the largest published
//! Cerebras cluster has 2,048 wafers): they exist so that one mistyped number
//! is a clear error instead of an allocation of the whole machine, not to
//! second-guess a design study. Quantities that can still be large within
//! these ranges (the fabric of 10,000 wafers) are refused by the engines'
//! memory estimates instead, against the caller's budget.

/// Largest mesh side, PEs (WSE-3: 1,170).
pub const MAX_MESH_SIDE: u32 = 4096;
/// Largest wafer count of a system or a program (largest announced cluster: 2,048).
pub const MAX_WAFERS: u32 = 10_000;
/// Largest turn of a region (its position in the step's schedule): ten
/// times the regions of the largest preset program stacked one per turn.
pub const MAX_TURN: u32 = 1 << 20;
/// Clock range, GHz: 10 MHz to 10 GHz (WSE-3: 1.1 GHz).
pub const MIN_CLOCK_GHZ: f64 = 0.01;
pub const MAX_CLOCK_GHZ: f64 = 10.0;

/// Largest batch (sequences decoded together) and context (positions) of a
/// step or a program: 65,536 sequences; 16 Mi positions (largest released
/// context: 10 M).
pub const MAX_BATCH: u64 = 1 << 16;
pub const MAX_CONTEXT: u64 = 1 << 24;

/// Most messages a program may expand to: 2^30, thirty times the largest
/// preset program (llama-3.1-405b at context 4096 on 43 WSE-3 wafers: 32.4
/// million, verified in about 0.4 s). Each message costs the event engine
/// about 200 bytes; `--max-memory` decides whether a program this large is
/// simulated.
pub const MAX_PROGRAM_MESSAGES: u64 = 1 << 30;

/// The budget a library call may spend, in bytes. `u64::MAX` means no limit
/// (library default: the caller decides; the CLI passes `--max-memory`).
pub const UNLIMITED: u64 = u64::MAX;

/// What a run would need is above its budget: refused before allocating.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error(
        "{what} needs ~{} of memory, above --max-memory {}; use a smaller model, mesh or wafer count, or raise --max-memory",
        fmt_bytes(*.needed),
        fmt_bytes(*.limit)
    )]
    Memory { what: String, needed: u64, limit: u64 },
    #[error("{what} needs ~{needed} {unit}, above the limit of {limit}")]
    Work { what: String, needed: u64, limit: u64, unit: &'static str },
    #[error("{what} overflows 64-bit arithmetic")]
    Overflow { what: String },
}

impl ResourceError {
    /// `Ok` when `needed <= limit`, else a [`ResourceError::Memory`] naming `what`.
    pub fn check_memory(what: &str, needed: u64, limit: u64) -> Result<(), ResourceError> {
        if needed > limit {
            Err(ResourceError::Memory { what: what.into(), needed, limit })
        } else {
            Ok(())
        }
    }
}

/// `1.5 GiB`, `640.0 MiB`, `12.0 KiB`, `7 bytes` (binary units, as `--max-memory` reads them).
pub fn fmt_bytes(b: u64) -> String {
    let x = b as f64;
    for (unit, scale) in [("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        let scale = (1u64 << scale) as f64;
        if x >= scale {
            return format!("{:.1} {unit}", x / scale);
        }
    }
    format!("{b} bytes")
}

/// A float as a person would write it: `1.1`, `150000000000`, but `1e-300`
/// rather than three hundred digits.
pub fn fmt_f64(x: f64) -> String {
    if x != 0.0 && x.is_finite() && (x.abs() < 1e-4 || x.abs() >= 1e16) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// Sums `parts` without wrapping: `None` on overflow.
pub fn checked_sum(parts: &[u64]) -> Option<u64> {
    parts.iter().try_fold(0u64, |acc, &x| acc.checked_add(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_errors_name_the_need_and_the_limit() {
        let e = ResourceError::check_memory("the event engine", 206_000_000_000, 4_000_000_000).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("the event engine") && s.contains("191.9 GiB") && s.contains("3.7 GiB"), "{s}");
        assert!(ResourceError::check_memory("x", 10, 10).is_ok());
        assert_eq!(fmt_bytes(7), "7 bytes");
        assert_eq!(fmt_f64(1e-300), "1e-300");
        assert_eq!(fmt_f64(1.1), "1.1");
        assert_eq!(checked_sum(&[u64::MAX, 1]), None);
        assert_eq!(checked_sum(&[2, 3]), Some(5));
    }
}

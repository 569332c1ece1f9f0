//! Speculative decoding on the GPU baseline: a draft model proposes `k`
//! tokens one decode step at a time, the target verifies them in one
//! `(k + 1)`-token step, and with a per-token acceptance rate `α` (each
//! drafted token accepted independently with probability α, the first
//! rejection ending the run, plus the target's own token) a verify step
//! yields on average `E = (1 − α^(k+1)) / (1 − α)` tokens (`k + 1` at α = 1).
//! Effective time per token = `(k · t_draft + t_verify) / E`.
//!
//! Owns: that arithmetic and the validation of `k` and `α`. The step times
//! come from the decode model (`model`): the caller prices the draft's decode
//! step and the target's `(k + 1)`-token step. Must not: read files or print.

use crate::error::GpuError;
use serde::{Deserialize, Serialize};

/// Most drafted tokens per verify step.
pub const MAX_SPEC_K: u32 = 32;

/// Drafted tokens per verify step and the acceptance rate, checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpecParams {
    pub k: u32,
    pub accept: f64,
}

impl SpecParams {
    /// `k` in 1..=32, `accept` in [0, 1].
    pub fn new(k: u32, accept: f64) -> Result<SpecParams, GpuError> {
        if !(1..=MAX_SPEC_K).contains(&k) {
            return Err(GpuError::InvalidOption {
                field: "spec-k",
                value: k.to_string(),
                allowed: format!("1..={MAX_SPEC_K} drafted tokens per verify step"),
            });
        }
        if !(0.0..=1.0).contains(&accept) {
            return Err(GpuError::InvalidOption {
                field: "accept",
                value: accept.to_string(),
                allowed: "an acceptance rate per drafted token, 0 <= a <= 1".into(),
            });
        }
        Ok(SpecParams { k, accept })
    }

    /// Expected tokens per verify step, `(1 − α^(k+1)) / (1 − α)`; `k + 1` at α = 1.
    pub fn expected_tokens(&self) -> f64 {
        let (a, n) = (self.accept, self.k as i32 + 1);
        if a >= 1.0 {
            n as f64
        } else {
            (1.0 - a.powi(n)) / (1.0 - a)
        }
    }
}

/// Speculative decoding of one sequence: the step times and what they give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecEstimate {
    pub draft_model: String,
    pub k: u32,
    pub accept: f64,
    /// Tokens per verify step on average.
    pub expected_tokens_per_step: f64,
    /// One decode step of the draft model, ms.
    pub draft_step_ms: f64,
    /// The target's (k + 1)-token verify step, ms.
    pub verify_step_ms: f64,
    /// `k × draft + verify`, ms.
    pub round_ms: f64,
    /// Round over expected tokens, ms per token.
    pub effective_tpot_ms: f64,
    /// Tokens per second of the whole batch.
    pub effective_tokens_per_s: f64,
    /// Plain decode of the target, ms per token, and effective over plain tokens/s.
    pub plain_tpot_ms: f64,
    pub speedup: f64,
}

/// The effective figures from the three step times (ms) at `batch` sequences.
pub fn speculative(
    draft_model: &str,
    p: SpecParams,
    draft_step_ms: f64,
    verify_step_ms: f64,
    plain_tpot_ms: f64,
    batch: u64,
) -> SpecEstimate {
    let e = p.expected_tokens();
    let round_ms = p.k as f64 * draft_step_ms + verify_step_ms;
    let effective_tpot_ms = round_ms / e;
    SpecEstimate {
        draft_model: draft_model.to_string(),
        k: p.k,
        accept: p.accept,
        expected_tokens_per_step: e,
        draft_step_ms,
        verify_step_ms,
        round_ms,
        effective_tpot_ms,
        effective_tokens_per_s: batch as f64 * 1e3 / effective_tpot_ms,
        plain_tpot_ms,
        speedup: plain_tpot_ms / effective_tpot_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_tokens_follow_the_geometric_series() {
        assert_eq!(SpecParams::new(4, 0.0).unwrap().expected_tokens(), 1.0);
        assert_eq!(SpecParams::new(4, 1.0).unwrap().expected_tokens(), 5.0);
        // 1 + α + α² at k = 2.
        assert!((SpecParams::new(2, 0.5).unwrap().expected_tokens() - 1.75).abs() < 1e-12);
        // Continuous at α → 1.
        let near = SpecParams::new(7, 1.0 - 1e-9).unwrap().expected_tokens();
        assert!((near - 8.0).abs() < 1e-6, "{near}");
    }

    #[test]
    fn k_and_the_acceptance_rate_are_range_checked() {
        for (k, a) in [(0, 0.5), (33, 0.5), (4, -0.1), (4, 1.1), (4, f64::NAN)] {
            let e = SpecParams::new(k, a).unwrap_err().to_string();
            assert!(e.contains("allowed"), "{e}");
        }
    }

    #[test]
    fn at_zero_acceptance_it_is_no_faster_and_at_one_it_tends_to_k_plus_one_per_round() {
        // A verify step never cheaper than a plain step (it reads the same weights and more).
        let (plain, draft, verify) = (7.0, 1.2, 7.3);
        let s0 = speculative("d", SpecParams::new(4, 0.0).unwrap(), draft, verify, plain, 1);
        assert!(s0.effective_tokens_per_s <= 1e3 / plain);
        let s1 = speculative("d", SpecParams::new(4, 1.0).unwrap(), draft, verify, plain, 1);
        assert!((s1.effective_tokens_per_s - 5.0 * 1e3 / (4.0 * draft + verify)).abs() < 1e-9);
    }
}

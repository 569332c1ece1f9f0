//! Builds the graph IR of one prefill step (or chunk of one) from a `ModelConfig`.
//!
//! Owns: the prefill parameters (batch, prompt tokens, cached positions,
//! dtypes) and their checks. The op sequence is the decode step's
//! (`crate::decode`) with `batch × prompt` rows: the prompt's tokens attend
//! causally over the `cached` positions already in the KV cache and over
//! themselves (chunked prefill is the same step with `cached > 0`), write
//! their K and V into the cache, and only the last token of each sequence
//! goes through the final norm and the LM head to sample the first output
//! token. Must not: cost or map anything.

use crate::decode::{build, DecodeParams, StepShape};
use crate::error::BuildError;
use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};
use wafer_ir::{DType, Graph};

/// What one prefill step computes: `batch` sequences, each adding `prompt`
/// new tokens after `cached` positions already in the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefillParams {
    pub batch: u64,
    pub prompt: u64,
    pub cached: u64,
    pub weight_dtype: DType,
    pub act_dtype: DType,
    pub kv_dtype: DType,
}

impl Default for PrefillParams {
    fn default() -> Self {
        PrefillParams {
            batch: 1,
            prompt: 1,
            cached: 0,
            weight_dtype: DType::Bf16,
            act_dtype: DType::Bf16,
            kv_dtype: DType::Bf16,
        }
    }
}

impl PrefillParams {
    /// The last prompt token's context: `cached + prompt` positions.
    pub fn context(&self) -> u64 {
        self.cached.saturating_add(self.prompt)
    }

    pub fn validate(&self, cfg: &ModelConfig) -> Result<(), BuildError> {
        if self.prompt == 0 {
            return Err(BuildError::Invalid {
                field: "prompt",
                value: "0".into(),
                allowed: "at least 1 new token".into(),
            });
        }
        let d = DecodeParams {
            batch: self.batch,
            context: self.context(),
            weight_dtype: self.weight_dtype,
            act_dtype: self.act_dtype,
            kv_dtype: self.kv_dtype,
        };
        d.validate(cfg).map_err(|e| match e {
            BuildError::Invalid { field: "context", allowed, .. } => BuildError::Invalid {
                field: "prompt + cached",
                value: format!("{} + {} = {}", self.prompt, self.cached, self.context()),
                allowed,
            },
            e => e,
        })
    }
}

/// The prefill-step graph of `cfg` under `p`. The result passes `verify_graph`;
/// with `prompt = 1` it is exactly the decode step at context `cached + 1`.
pub fn prefill_graph(cfg: &ModelConfig, p: &PrefillParams) -> Result<Graph, BuildError> {
    p.validate(cfg)?;
    Ok(build(
        cfg,
        &StepShape {
            batch: p.batch,
            new_tokens: p.prompt,
            context: p.context(),
            weight_dtype: p.weight_dtype,
            act_dtype: p.act_dtype,
            kv_dtype: p.kv_dtype,
        },
    ))
}

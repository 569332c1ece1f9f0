//! The model description: every shape and structural choice the decode graph needs.
//!
//! Owns: `ModelConfig` (plain data) and its derived figures. Must not: parse
//! files (see `hf`) or build graphs (see `decode`).

use serde::{Deserialize, Serialize};
use std::fmt;
use wafer_ir::ActFn;

/// Model families whose Hugging Face `config.json` we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Mixtral,
    Qwen2,
    Qwen3,
    Gemma2,
    Phi3,
    Gpt2,
    Gptj,
}

impl Family {
    pub const ALL: [Family; 9] = [
        Family::Llama,
        Family::Mistral,
        Family::Mixtral,
        Family::Qwen2,
        Family::Qwen3,
        Family::Gemma2,
        Family::Phi3,
        Family::Gpt2,
        Family::Gptj,
    ];

    /// The `model_type` string of the Hugging Face config.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Mixtral => "mixtral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gemma2 => "gemma2",
            Family::Phi3 => "phi3",
            Family::Gpt2 => "gpt2",
            Family::Gptj => "gptj",
        }
    }

    pub fn from_model_type(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.model_type() == s)
    }

    pub fn supported_list() -> String {
        Family::ALL.map(|f| f.model_type()).join(", ")
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormStyle {
    /// RMSNorm with a weight vector.
    Rms,
    /// RMSNorm scaling by (1 + weight) (Gemma).
    RmsUnitOffset,
    /// LayerNorm with weight and bias.
    Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpStyle {
    /// down(act(gate(x)) * up(x)).
    Gated,
    /// proj(act(fc(x))).
    Plain,
}

/// A decoder-only transformer, as far as decode cost and structure go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub family: Family,
    pub hidden: u64,
    /// MLP inner width (per expert for MoE).
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub vocab: u64,
    /// LM head shares the input embedding table.
    pub tied_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub lm_head_bias: bool,
    pub norm: NormStyle,
    pub mlp: MlpStyle,
    pub act: ActFn,
    /// 0 for dense models.
    pub experts: u64,
    pub experts_per_tok: u64,
    /// Local attention window (positions attended), if any.
    pub sliding_window: Option<u64>,
    /// 1: every layer uses the window; 2: every other layer, starting with layer 0 (Gemma-2).
    pub sliding_window_every: u64,
    /// Per-head RMSNorm on q and k (Qwen3).
    pub qk_norm: bool,
    /// Dims of each head that RoPE rotates; 0 when positions are learned.
    pub rotary_dim: u64,
    /// Learned absolute position embeddings of `max_positions` rows (GPT-2).
    pub learned_positions: bool,
    pub max_positions: u64,
    /// Attention and MLP read the same normed input and add in parallel (GPT-J).
    pub parallel_block: bool,
    /// Extra norms after attention and after the MLP (Gemma-2 "sandwich").
    pub post_norms: bool,
    /// Embeddings multiplied by sqrt(hidden) (Gemma).
    pub embed_scale: bool,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    pub norm_eps: f64,
    pub rope_theta: f64,
}

impl ModelConfig {
    pub fn is_moe(&self) -> bool {
        self.experts > 0
    }

    pub fn q_dim(&self) -> u64 {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> u64 {
        self.kv_heads * self.head_dim
    }

    /// Window of layer `l`, if that layer attends locally.
    pub fn window_for_layer(&self, l: u64) -> Option<u64> {
        let w = self.sliding_window?;
        if l % self.sliding_window_every.max(1) == 0 {
            Some(w)
        } else {
            None
        }
    }

    /// KV-cache elements one token adds across all layers (K and V).
    pub fn kv_elems_per_token(&self) -> u64 {
        2 * self.layers * self.kv_dim()
    }
}

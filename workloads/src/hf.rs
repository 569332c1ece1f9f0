//! Reader for Hugging Face `config.json` files.
//!
//! Owns: mapping each supported `model_type` onto `ModelConfig`, with the
//! family's defaults, and every validation a config needs before a graph is
//! built from it. Takes text, not paths: the caller does the I/O.

use crate::error::ConfigError;
use crate::model::{Family, MlpStyle, ModelConfig, NormStyle};
use serde_json::{Map, Value};
use wafer_ir::ActFn;

/// Largest value accepted for each integer field, about ten times the largest
/// released model (Llama-3.1-405B: hidden 16,384, 126 layers, 128 heads,
/// FFN 53,248; vocabularies up to 256k; 256 experts; 10M positions). Every
/// name a config may use for the field is listed.
pub const INT_LIMITS: &[(&str, u64)] = &[
    ("hidden_size", 1 << 18),
    ("n_embd", 1 << 18),
    ("intermediate_size", 1 << 20),
    ("n_inner", 1 << 20),
    ("num_hidden_layers", 10_000),
    ("n_layer", 10_000),
    ("num_attention_heads", 4096),
    ("n_head", 4096),
    ("num_key_value_heads", 4096),
    ("head_dim", 4096),
    ("rotary_dim", 4096),
    ("vocab_size", 1 << 22),
    ("num_local_experts", 4096),
    ("num_experts_per_tok", 4096),
    ("sliding_window", 1 << 27),
    ("max_position_embeddings", 1 << 27),
    ("n_positions", 1 << 27),
];

/// Range `(lo, hi]` of each float field (`lo` excluded, `hi` included).
pub const FLOAT_LIMITS: &[(&str, f64, f64)] = &[
    ("partial_rotary_factor", 0.0, 1.0),
    ("rms_norm_eps", 0.0, 1.0),
    ("layer_norm_epsilon", 0.0, 1.0),
    ("rope_theta", 0.0, 1e12),
    ("attn_logit_softcapping", 0.0, 1e6),
    ("final_logit_softcapping", 0.0, 1e6),
];

/// Most parameters a model may have: 10^14, fifty times the largest released
/// dense or MoE model (~2 x 10^12). Keeps every byte and FLOP count of the
/// decode graph far inside 64-bit arithmetic.
pub const MAX_PARAMS: u128 = 100_000_000_000_000;

fn int_limit(key: &str) -> u64 {
    INT_LIMITS.iter().find(|(k, _)| *k == key).map_or(1 << 40, |(_, m)| *m)
}

struct Fields<'a> {
    src: &'a str,
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn invalid(&self, field: &str, v: &Value, allowed: &str) -> ConfigError {
        ConfigError::Invalid {
            source_name: self.src.into(),
            field: field.into(),
            value: v.to_string(),
            allowed: allowed.into(),
        }
    }

    /// First present, non-null key among `keys`.
    fn raw(&self, keys: &[&'static str]) -> Option<(&'static str, &'a Value)> {
        keys.iter().find_map(|k| match self.obj.get(*k) {
            Some(Value::Null) | None => None,
            Some(v) => Some((*k, v)),
        })
    }

    fn opt_pos(&self, keys: &[&'static str]) -> Result<Option<u64>, ConfigError> {
        match self.raw(keys) {
            None => Ok(None),
            Some((k, v)) => {
                let max = int_limit(k);
                match v.as_u64() {
                    Some(n) if n > 0 && n <= max => Ok(Some(n)),
                    _ => Err(self.invalid(k, v, &format!("an integer in 1..={max}"))),
                }
            }
        }
    }

    fn pos(&self, keys: &[&'static str]) -> Result<u64, ConfigError> {
        self.opt_pos(keys)?.ok_or_else(|| ConfigError::Missing {
            source_name: self.src.into(),
            field: keys[0].into(),
            expected: format!("an integer in 1..={}", int_limit(keys[0])),
        })
    }

    fn bool_or(&self, key: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(&[key]) {
            None => Ok(default),
            Some((k, v)) => v.as_bool().ok_or_else(|| self.invalid(k, v, "true or false")),
        }
    }

    fn f64_or(&self, key: &'static str, default: f64) -> Result<f64, ConfigError> {
        let (lo, hi) = FLOAT_LIMITS.iter().find(|l| l.0 == key).map_or((0.0, f64::MAX), |l| (l.1, l.2));
        match self.raw(&[key]) {
            None => Ok(default),
            Some((k, v)) => match v.as_f64() {
                Some(x) if x > lo && x <= hi => Ok(x),
                _ => Err(self.invalid(k, v, &format!("a number in ({lo}, {}]", wafer_ir::limits::fmt_f64(hi)))),
            },
        }
    }

    fn opt_f64(&self, key: &'static str) -> Result<Option<f64>, ConfigError> {
        match self.raw(&[key]) {
            None => Ok(None),
            Some(_) => self.f64_or(key, 0.0).map(Some),
        }
    }

    fn act(&self, keys: &[&'static str], default: ActFn) -> Result<ActFn, ConfigError> {
        match self.raw(keys) {
            None => Ok(default),
            Some((k, v)) => match v.as_str() {
                Some("silu" | "swish") => Ok(ActFn::Silu),
                Some("gelu") => Ok(ActFn::Gelu),
                Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_tanh") => Ok(ActFn::GeluTanh),
                Some("relu") => Ok(ActFn::Relu),
                _ => Err(self.invalid(k, v, "one of silu, gelu, gelu_new, gelu_pytorch_tanh, relu")),
            },
        }
    }
}

/// Parses a Hugging Face `config.json`. `source_name` (usually the path)
/// prefixes every error; `name` becomes the model's name.
pub fn parse_hf_config(text: &str, source_name: &str, name: &str) -> Result<ModelConfig, ConfigError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::Json { source_name: source_name.into(), message: e.to_string() })?;
    let obj = v.as_object().ok_or_else(|| ConfigError::NotObject { source_name: source_name.into() })?;
    let f = Fields { src: source_name, obj };
    let model_type = match f.raw(&["model_type"]) {
        None => {
            return Err(ConfigError::Missing {
                source_name: source_name.into(),
                field: "model_type".into(),
                expected: format!("one of {}", Family::supported_list()),
            })
        }
        Some((k, v)) => match v.as_str() {
            Some(t) => t.to_string(),
            None => return Err(f.invalid(k, v, &format!("a string, one of {}", Family::supported_list()))),
        },
    };
    let family = Family::from_model_type(&model_type).ok_or_else(|| ConfigError::UnknownModelType {
        source_name: source_name.into(),
        found: model_type.clone(),
        supported: Family::supported_list(),
    })?;
    let cfg = match family {
        Family::Gpt2 | Family::Gptj => parse_gpt(&f, family, name)?,
        _ => parse_llama_like(&f, family, name)?,
    };
    validate(&cfg, source_name)?;
    Ok(cfg)
}

fn head_dim(f: &Fields, hidden: u64, heads: u64) -> Result<u64, ConfigError> {
    if let Some(d) = f.opt_pos(&["head_dim"])? {
        return Ok(d);
    }
    if hidden % heads != 0 {
        return Err(ConfigError::Inconsistent {
            source_name: f.src.into(),
            message: format!(
                "num_attention_heads ({heads}) does not divide hidden_size ({hidden}) and no head_dim is given"
            ),
        });
    }
    Ok(hidden / heads)
}

fn parse_llama_like(f: &Fields, family: Family, name: &str) -> Result<ModelConfig, ConfigError> {
    let hidden = f.pos(&["hidden_size"])?;
    let intermediate = f.pos(&["intermediate_size"])?;
    let layers = f.pos(&["num_hidden_layers"])?;
    let heads = f.pos(&["num_attention_heads"])?;
    let kv_heads = f.opt_pos(&["num_key_value_heads"])?.unwrap_or(heads);
    let vocab = f.pos(&["vocab_size"])?;
    let head_dim = head_dim(f, hidden, heads)?;
    let gemma = family == Family::Gemma2;
    let (experts, experts_per_tok) = if family == Family::Mixtral {
        (f.pos(&["num_local_experts"])?, f.pos(&["num_experts_per_tok"])?)
    } else {
        (0, 0)
    };
    // Sliding windows: Mistral/Phi-3 apply `sliding_window` whenever it is set;
    // Qwen2/Qwen3 only with `use_sliding_window`; Gemma-2 on every other layer.
    let window = f.opt_pos(&["sliding_window"])?;
    let sliding_window = match family {
        Family::Qwen2 | Family::Qwen3 => {
            if f.bool_or("use_sliding_window", false)? {
                window
            } else {
                None
            }
        }
        Family::Gemma2 => Some(window.unwrap_or(4096)),
        _ => window,
    };
    let partial = f.f64_or("partial_rotary_factor", 1.0)?;
    let rotary_dim = ((head_dim as f64 * partial).round() as u64) & !1;
    let attention_bias = f.bool_or("attention_bias", false)?;
    Ok(ModelConfig {
        name: name.to_string(),
        family,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        head_dim,
        vocab,
        tied_embeddings: f.bool_or("tie_word_embeddings", gemma)?,
        qkv_bias: family == Family::Qwen2 || attention_bias,
        o_bias: attention_bias && family != Family::Qwen2,
        mlp_bias: f.bool_or("mlp_bias", false)?,
        lm_head_bias: false,
        norm: if gemma { NormStyle::RmsUnitOffset } else { NormStyle::Rms },
        mlp: MlpStyle::Gated,
        act: f.act(&["hidden_activation", "hidden_act"], if gemma { ActFn::GeluTanh } else { ActFn::Silu })?,
        experts,
        experts_per_tok,
        sliding_window,
        sliding_window_every: if gemma { 2 } else { 1 },
        qk_norm: family == Family::Qwen3,
        rotary_dim,
        learned_positions: false,
        max_positions: f.opt_pos(&["max_position_embeddings"])?.unwrap_or(4096),
        parallel_block: false,
        post_norms: gemma,
        embed_scale: gemma,
        attn_softcap: if gemma { f.opt_f64("attn_logit_softcapping")? } else { None },
        final_softcap: if gemma { f.opt_f64("final_logit_softcapping")? } else { None },
        norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta: f.f64_or("rope_theta", 10_000.0)?,
    })
}

fn parse_gpt(f: &Fields, family: Family, name: &str) -> Result<ModelConfig, ConfigError> {
    let hidden = f.pos(&["n_embd", "hidden_size"])?;
    let layers = f.pos(&["n_layer", "num_hidden_layers"])?;
    let heads = f.pos(&["n_head", "num_attention_heads"])?;
    let vocab = f.pos(&["vocab_size"])?;
    let intermediate = f.opt_pos(&["n_inner"])?.unwrap_or(4 * hidden);
    let max_positions = f.opt_pos(&["n_positions", "max_position_embeddings"])?.unwrap_or(1024);
    if hidden % heads != 0 {
        return Err(ConfigError::Inconsistent {
            source_name: f.src.into(),
            message: format!("n_head ({heads}) does not divide n_embd ({hidden})"),
        });
    }
    let head_dim = hidden / heads;
    let gptj = family == Family::Gptj;
    Ok(ModelConfig {
        name: name.to_string(),
        family,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads: heads,
        head_dim,
        vocab,
        // GPT2LMHeadModel always ties; GPT-J has its own head (with a bias).
        tied_embeddings: if gptj { f.bool_or("tie_word_embeddings", false)? } else { true },
        qkv_bias: !gptj,
        o_bias: !gptj,
        mlp_bias: true,
        lm_head_bias: gptj,
        norm: NormStyle::Layer,
        mlp: MlpStyle::Plain,
        act: f.act(&["activation_function"], ActFn::GeluTanh)?,
        experts: 0,
        experts_per_tok: 0,
        sliding_window: None,
        sliding_window_every: 1,
        qk_norm: false,
        rotary_dim: if gptj { f.opt_pos(&["rotary_dim"])?.unwrap_or(head_dim) } else { 0 },
        learned_positions: !gptj,
        max_positions,
        parallel_block: gptj,
        post_norms: false,
        embed_scale: false,
        attn_softcap: None,
        final_softcap: None,
        norm_eps: f.f64_or("layer_norm_epsilon", 1e-5)?,
        rope_theta: 10_000.0,
    })
}

/// Cross-field rules every `ModelConfig` must satisfy, however it was made.
pub fn validate(c: &ModelConfig, source_name: &str) -> Result<(), ConfigError> {
    let bad = |message: String| Err(ConfigError::Inconsistent { source_name: source_name.into(), message });
    for (field, v) in [
        ("hidden_size", c.hidden),
        ("intermediate_size", c.intermediate),
        ("num_hidden_layers", c.layers),
        ("num_attention_heads", c.heads),
        ("num_key_value_heads", c.kv_heads),
        ("head_dim", c.head_dim),
        ("vocab_size", c.vocab),
    ] {
        let max = int_limit(field);
        if v == 0 || v > max {
            return bad(format!("field `{field}` is {v}; allowed: 1..={max}"));
        }
    }
    if c.is_moe() && c.experts > int_limit("num_local_experts") {
        return bad(format!(
            "field `num_local_experts` is {}; allowed: 1..={}",
            c.experts,
            int_limit("num_local_experts")
        ));
    }
    let params = param_bound(c);
    if params > MAX_PARAMS {
        return bad(format!(
            "the model would have ~{params:.3e} parameters (hidden_size {}, intermediate_size {}, num_hidden_layers {}, \
             vocab_size {}, experts {}); allowed: at most {MAX_PARAMS:.0e}",
            c.hidden,
            c.intermediate,
            c.layers,
            c.vocab,
            c.experts.max(1),
            params = params as f64,
            MAX_PARAMS = MAX_PARAMS as f64
        ));
    }
    if c.heads % c.kv_heads != 0 {
        return bad(format!("num_key_value_heads ({}) does not divide num_attention_heads ({})", c.kv_heads, c.heads));
    }
    if c.is_moe() && (c.experts_per_tok == 0 || c.experts_per_tok > c.experts) {
        return bad(format!(
            "num_experts_per_tok ({}) must be in 1..={} (num_local_experts)",
            c.experts_per_tok, c.experts
        ));
    }
    if c.rotary_dim > c.head_dim || c.rotary_dim % 2 != 0 {
        return bad(format!("rotary_dim ({}) must be even and at most head_dim ({})", c.rotary_dim, c.head_dim));
    }
    if c.rotary_dim == 0 && !c.learned_positions {
        return bad("the model has neither rotary nor learned position embeddings".into());
    }
    Ok(())
}

/// An upper bound of the parameter count, in 128-bit arithmetic (so no
/// config can wrap it): embeddings and head, attention and MLP matrices.
pub fn param_bound(c: &ModelConfig) -> u128 {
    let (h, i, l, v) = (c.hidden as u128, c.intermediate as u128, c.layers as u128, c.vocab as u128);
    let q = c.heads as u128 * c.head_dim as u128;
    let kv = c.kv_heads as u128 * c.head_dim as u128;
    let attn = h * (q + 2 * kv) + q * h;
    let mlp = 3 * h * i * (c.experts.max(1) as u128) + h * c.experts as u128;
    2 * v * h + l * (attn + mlp + 4 * h) + c.max_positions.min(1 << 27) as u128 * h * c.learned_positions as u128
}

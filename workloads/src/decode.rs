//! Builds the graph IR of one decode step from a `ModelConfig`.
//!
//! Owns: the op sequence of each family (pre-norm decoder, GPT-J parallel
//! block, Gemma-2 sandwich norms, MoE), tensor naming, and the decode
//! parameters (batch, context, dtypes). The same op sequence builds a
//! prefill step (`crate::prefill`), with N rows per sequence. Must not: cost
//! or map anything.

use crate::error::BuildError;
use crate::model::{MlpStyle, ModelConfig, NormStyle};
use serde::{Deserialize, Serialize};
use wafer_ir::{DType, Elementwise, Graph, GraphBuilder, NormKind, OpKind, TensorId, TensorKind};

/// What one decode step computes: `batch` sequences, each attending over
/// `context` positions (the new token included, so `context = 1` is the very
/// first token), with separate weight, activation and KV-cache dtypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeParams {
    pub batch: u64,
    pub context: u64,
    pub weight_dtype: DType,
    pub act_dtype: DType,
    pub kv_dtype: DType,
}

impl Default for DecodeParams {
    fn default() -> Self {
        DecodeParams { batch: 1, context: 1, weight_dtype: DType::Bf16, act_dtype: DType::Bf16, kv_dtype: DType::Bf16 }
    }
}

/// Largest batch and context we accept (documented in `wafer_ir::limits`).
pub use wafer_ir::limits::{MAX_BATCH, MAX_CONTEXT};
/// Largest KV-cache byte count or FLOP count of one step: 2^60 (~10^18),
/// so sums over ops never wrap u64.
pub const MAX_STEP_QUANTITY: u128 = 1 << 60;

impl DecodeParams {
    pub fn validate(&self, cfg: &ModelConfig) -> Result<(), BuildError> {
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(BuildError::Invalid {
                field: "batch",
                value: self.batch.to_string(),
                allowed: format!("1..={MAX_BATCH}"),
            });
        }
        let max_ctx = if cfg.learned_positions { cfg.max_positions } else { MAX_CONTEXT };
        if self.context == 0 || self.context > max_ctx {
            let why = if cfg.learned_positions { " (the model learns only that many positions)" } else { "" };
            return Err(BuildError::Invalid {
                field: "context",
                value: self.context.to_string(),
                allowed: format!("1..={max_ctx}{why}"),
            });
        }
        // The graph holds ~20 ops per layer (~9 KB): the layer range bounds its memory.
        let max_layers = crate::hf::INT_LIMITS.iter().find(|l| l.0 == "num_hidden_layers").map_or(10_000, |l| l.1);
        if cfg.layers == 0 || cfg.layers > max_layers {
            return Err(BuildError::Invalid {
                field: "num_hidden_layers",
                value: cfg.layers.to_string(),
                allowed: format!("1..={max_layers}"),
            });
        }
        // Byte and FLOP counts of the step stay far inside u64 (checked here in u128).
        let kv = cfg.layers as u128
            * cfg.kv_heads as u128
            * cfg.head_dim as u128
            * 2
            * 4
            * self.context as u128
            * self.batch as u128;
        let attn_flops = 4
            * cfg.layers as u128
            * cfg.heads as u128
            * cfg.head_dim as u128
            * self.context as u128
            * self.batch as u128;
        let mat_flops = 2 * crate::hf::param_bound(cfg) * self.batch as u128;
        for (what, v) in [("KV-cache bytes", kv), ("attention FLOPs", attn_flops), ("matrix FLOPs", mat_flops)] {
            if v > MAX_STEP_QUANTITY {
                return Err(BuildError::Invalid {
                    field: "context x batch",
                    value: format!("{} x {} ({what} of the step: ~{:.3e})", self.context, self.batch, v as f64),
                    allowed: format!("{what} at most {:.3e}", MAX_STEP_QUANTITY as f64),
                });
            }
        }
        for (field, d) in
            [("activation dtype", self.act_dtype), ("kv dtype", self.kv_dtype), ("weight dtype", self.weight_dtype)]
        {
            if d == DType::I32 || (field == "activation dtype" && !d.is_activation_legal()) {
                let allowed = if field == "activation dtype" {
                    "fp32, bf16, fp16, fp8, int8"
                } else {
                    "fp32, bf16, fp16, fp8, int8, int4"
                };
                return Err(BuildError::Invalid { field, value: d.to_string(), allowed: allowed.into() });
            }
        }
        Ok(())
    }
}

/// The step being built: `batch` sequences of `new_tokens` tokens, the last
/// attending over `context` positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepShape {
    pub batch: u64,
    pub new_tokens: u64,
    pub context: u64,
    pub weight_dtype: DType,
    pub act_dtype: DType,
    pub kv_dtype: DType,
}

struct B<'a> {
    g: GraphBuilder,
    c: &'a ModelConfig,
}

impl B<'_> {
    fn norm(&mut self, name: &str, layer: Option<u32>, x: TensorId, width: u64, groups: u64) -> TensorId {
        let gamma = self.g.weight(&format!("{name}.weight"), vec![width]);
        let (kind, ins) = match self.c.norm {
            NormStyle::Rms => (NormKind::Rms { unit_offset: false }, vec![x, gamma]),
            NormStyle::RmsUnitOffset => (NormKind::Rms { unit_offset: true }, vec![x, gamma]),
            NormStyle::Layer => {
                let beta = self.g.weight(&format!("{name}.bias"), vec![width]);
                (NormKind::Layer, vec![x, gamma, beta])
            }
        };
        self.g.one(name, OpKind::Norm { kind, groups, eps: self.c.norm_eps }, layer, &ins)
    }

    fn linear(&mut self, name: &str, layer: Option<u32>, x: TensorId, out: u64, inp: u64, bias: bool) -> TensorId {
        let w = self.g.weight(&format!("{name}.weight"), vec![out, inp]);
        let mut ins = vec![x, w];
        if bias {
            ins.push(self.g.weight(&format!("{name}.bias"), vec![out]));
        }
        self.g.one(name, OpKind::MatMul, layer, &ins)
    }

    fn mlp(&mut self, p: &str, l: Option<u32>, h: TensorId) -> TensorId {
        let c = self.c;
        if c.is_moe() {
            let (e, i, hd) = (c.experts, c.intermediate, c.hidden);
            let wr = self.g.weight(&format!("{p}.router.weight"), vec![e, hd]);
            let r = self.g.one(
                &format!("{p}.router"),
                OpKind::MoeRouter { experts: e, top_k: c.experts_per_tok },
                l,
                &[h, wr],
            );
            let wg = self.g.weight(&format!("{p}.experts.gate.weight"), vec![e, i, hd]);
            let wu = self.g.weight(&format!("{p}.experts.up.weight"), vec![e, i, hd]);
            let wd = self.g.weight(&format!("{p}.experts.down.weight"), vec![e, hd, i]);
            let kind = OpKind::MoeExperts { experts: e, top_k: c.experts_per_tok, func: c.act };
            return self.g.one(&format!("{p}.experts"), kind, l, &[h, r, wg, wu, wd]);
        }
        match c.mlp {
            MlpStyle::Gated => {
                let g = self.linear(&format!("{p}.gate_proj"), l, h, c.intermediate, c.hidden, c.mlp_bias);
                let u = self.linear(&format!("{p}.up_proj"), l, h, c.intermediate, c.hidden, c.mlp_bias);
                let a = self.g.one(&format!("{p}.act"), OpKind::GatedAct { func: c.act }, l, &[g, u]);
                self.linear(&format!("{p}.down_proj"), l, a, c.hidden, c.intermediate, c.mlp_bias)
            }
            MlpStyle::Plain => {
                let f = self.linear(&format!("{p}.fc_in"), l, h, c.intermediate, c.hidden, c.mlp_bias);
                let a = self.g.one(&format!("{p}.act"), OpKind::Act { func: c.act }, l, &[f]);
                self.linear(&format!("{p}.fc_out"), l, a, c.hidden, c.intermediate, c.mlp_bias)
            }
        }
    }

    fn attention(&mut self, li: u64, h: TensorId, p: &StepShape) -> TensorId {
        let c = self.c;
        let l = Some(li as u32);
        let a = format!("l{li}.attn");
        let mut q = self.linear(&format!("{a}.q_proj"), l, h, c.q_dim(), c.hidden, c.qkv_bias);
        let mut k = self.linear(&format!("{a}.k_proj"), l, h, c.kv_dim(), c.hidden, c.qkv_bias);
        let v = self.linear(&format!("{a}.v_proj"), l, h, c.kv_dim(), c.hidden, c.qkv_bias);
        if c.qk_norm {
            q = self.norm(&format!("{a}.q_norm"), l, q, c.head_dim, c.heads);
            k = self.norm(&format!("{a}.k_norm"), l, k, c.head_dim, c.kv_heads);
        }
        if c.rotary_dim > 0 {
            let kind = OpKind::Rope {
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                rotary_dim: c.rotary_dim,
                theta: c.rope_theta,
            };
            let qk = self.g.op(&format!("{a}.rope"), kind, l, &[q, k]);
            (q, k) = (qk[0], qk[1]);
        }
        let window = c.window_for_layer(li);
        let past = (p.context - p.new_tokens).min(window.unwrap_or(u64::MAX));
        let shape = vec![p.batch, c.kv_heads, past, c.head_dim];
        let kc = self.g.input(&format!("l{li}.k_cache"), shape.clone(), p.kv_dtype, TensorKind::KvCache);
        let vc = self.g.input(&format!("l{li}.v_cache"), shape, p.kv_dtype, TensorKind::KvCache);
        let kv = self.g.op(&format!("{a}.kv_append"), OpKind::KvAppend { window }, l, &[k, v, kc, vc]);
        let dims = (c.heads, c.kv_heads, c.head_dim);
        let mut s = self.g.one(
            &format!("{a}.scores"),
            OpKind::AttnScores { heads: dims.0, kv_heads: dims.1, head_dim: dims.2 },
            l,
            &[q, kv[0]],
        );
        if let Some(cap) = c.attn_softcap {
            s = self.g.one(&format!("{a}.softcap"), OpKind::Elementwise { func: Elementwise::Softcap(cap) }, l, &[s]);
        }
        let pr = self.g.one(&format!("{a}.softmax"), OpKind::Softmax, l, &[s]);
        let o = self.g.one(
            &format!("{a}.value"),
            OpKind::AttnValue { heads: dims.0, kv_heads: dims.1, head_dim: dims.2 },
            l,
            &[pr, kv[1]],
        );
        self.linear(&format!("{a}.o_proj"), l, o, c.hidden, c.q_dim(), c.o_bias)
    }
}

/// The decode-step graph of `cfg` under `p`. The result passes `verify_graph`.
pub fn decode_graph(cfg: &ModelConfig, p: &DecodeParams) -> Result<Graph, BuildError> {
    p.validate(cfg)?;
    Ok(build(
        cfg,
        &StepShape {
            batch: p.batch,
            new_tokens: 1,
            context: p.context,
            weight_dtype: p.weight_dtype,
            act_dtype: p.act_dtype,
            kv_dtype: p.kv_dtype,
        },
    ))
}

/// The graph of a step of shape `p` (already validated).
pub(crate) fn build(cfg: &ModelConfig, p: &StepShape) -> Graph {
    let mut b = B {
        g: GraphBuilder::new(&cfg.name, p.batch, p.context, p.weight_dtype, p.act_dtype, p.kv_dtype)
            .with_new_tokens(p.new_tokens),
        c: cfg,
    };
    let tokens = b.g.input("tokens", vec![p.batch * p.new_tokens], DType::I32, TensorKind::Input);
    let table = b.g.weight("embed.weight", vec![cfg.vocab, cfg.hidden]);
    let mut x = b.g.one("embed", OpKind::Embedding, None, &[tokens, table]);
    if cfg.embed_scale {
        let s = (cfg.hidden as f64).sqrt();
        x = b.g.one("embed.scale", OpKind::Elementwise { func: Elementwise::Scale(s) }, None, &[x]);
    }
    if cfg.learned_positions {
        let pos = b.g.weight("pos_embed.weight", vec![cfg.max_positions, cfg.hidden]);
        x = b.g.one("pos_embed", OpKind::PosEmbedding, None, &[x, pos]);
    }
    for li in 0..cfg.layers {
        let l = Some(li as u32);
        let h = b.norm(&format!("l{li}.attn_norm"), l, x, cfg.hidden, 1);
        let mut o = b.attention(li, h, p);
        if cfg.post_norms {
            o = b.norm(&format!("l{li}.post_attn_norm"), l, o, cfg.hidden, 1);
        }
        if cfg.parallel_block {
            let m = b.mlp(&format!("l{li}.mlp"), l, h);
            let x1 = b.g.one(&format!("l{li}.attn_residual"), OpKind::Add, l, &[x, o]);
            x = b.g.one(&format!("l{li}.mlp_residual"), OpKind::Add, l, &[x1, m]);
        } else {
            x = b.g.one(&format!("l{li}.attn_residual"), OpKind::Add, l, &[x, o]);
            let h2 = b.norm(&format!("l{li}.mlp_norm"), l, x, cfg.hidden, 1);
            let mut m = b.mlp(&format!("l{li}.mlp"), l, h2);
            if cfg.post_norms {
                m = b.norm(&format!("l{li}.post_mlp_norm"), l, m, cfg.hidden, 1);
            }
            x = b.g.one(&format!("l{li}.mlp_residual"), OpKind::Add, l, &[x, m]);
        }
    }
    if p.new_tokens > 1 {
        x = b.g.one("last_token", OpKind::LastToken { tokens: p.new_tokens }, None, &[x]);
    }
    let h = b.norm("final_norm", None, x, cfg.hidden, 1);
    let mut logits = if cfg.tied_embeddings {
        b.g.one("lm_head", OpKind::MatMul, None, &[h, table])
    } else {
        b.linear("lm_head", None, h, cfg.vocab, cfg.hidden, cfg.lm_head_bias)
    };
    if let Some(cap) = cfg.final_softcap {
        logits = b.g.one("lm_head.softcap", OpKind::Elementwise { func: Elementwise::Softcap(cap) }, None, &[logits]);
    }
    b.g.one("sample", OpKind::Sample, None, &[logits]);
    b.g.finish()
}

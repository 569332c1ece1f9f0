//! Graph IR: one step of a transformer as typed tensor ops — a decode step
//! (one new token per sequence) or a prefill step (`new_tokens` = N prompt
//! tokens per sequence attending causally over the cache and themselves).
//!
//! Owns: the plain-data graph (tensors and ops in arena order), each op kind's
//! shape rule (`OpKind::infer`), and the builder that applies it. The arena
//! order of `Graph::ops` is a topological order: an op may only read tensors
//! that are graph inputs (weights, token ids, KV-cache state) or outputs of
//! earlier ops. Must not: know about models, meshes or hardware.
//!
//! Multi-token steps use the same ops: activations are `[B·N, features]`
//! (sequence-major: row `b·N + i` is token `i` of sequence `b`), the KV cache
//! stays `[B, kv_heads, S, D]`, and the attention ops infer N as the ratio of
//! their rows to the cache's batch. Query `i` of a sequence sits at the
//! cache's position `S' - N + i` and attends causally: over the positions up
//! to its own, within the layer's window (that of the `KvAppend` that made the
//! cache). With N = 1 every rule is the decode rule.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of a tensor in `Graph::tensors`. Prints as `%N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TensorId(pub u32);

/// Index of an op in `Graph::ops`. Prints as `opN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpId(pub u32);

impl fmt::Display for TensorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}
impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// Where a tensor's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// Fed in for each step (token ids).
    Input,
    /// A model parameter, resident for the whole run.
    Weight,
    /// KV-cache state: the cache as it was before this step (a graph input),
    /// or the cache after `KvAppend` (an op output).
    KvCache,
    /// Produced by exactly one op during the step.
    Activation,
}

impl TensorKind {
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::Input => "input",
            TensorKind::Weight => "weight",
            TensorKind::KvCache => "kv",
            TensorKind::Activation => "act",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: DType,
    pub kind: TensorKind,
}

impl Tensor {
    /// Elements (saturating; the verifier rejects shapes whose counts do not fit).
    pub fn elems(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
    pub fn bytes(&self) -> u64 {
        self.dtype.bytes_for(self.elems())
    }
}

/// Activation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActFn {
    Silu,
    /// Exact (erf) GELU.
    Gelu,
    /// tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl ActFn {
    pub fn name(self) -> &'static str {
        match self {
            ActFn::Silu => "silu",
            ActFn::Gelu => "gelu",
            ActFn::GeluTanh => "gelu_tanh",
            ActFn::Relu => "relu",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// RMSNorm: x / rms(x) * gamma. `unit_offset` scales by (1 + gamma) (Gemma).
    Rms { unit_offset: bool },
    /// LayerNorm with gamma and beta.
    Layer,
}

/// Element-wise ops with a constant parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Elementwise {
    /// x * c
    Scale(f64),
    /// c * tanh(x / c) (Gemma-2 logit soft-capping)
    Softcap(f64),
}

/// What an op computes. Shapes are `[batch, features]` for activations unless
/// stated; matrix weights are `[out, in]` (the `nn.Linear` layout, so a tied
/// LM head is the embedding table itself); the KV cache is `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum OpKind {
    /// (tokens i32[B], table[V,H]) -> [B,H]: gathers B rows.
    Embedding,
    /// (x[B,H], table[P,H]) -> [B,H]: adds the learned row of the current position.
    PosEmbedding,
    /// (x[B,G*D], gamma[D] (, beta[D] for LayerNorm)) -> [B,G*D]; normalises each
    /// of the G groups of D features (G > 1 for per-head q/k norms).
    Norm { kind: NormKind, groups: u64, eps: f64 },
    /// (x[B,K], w[N,K] (, bias[N])) -> [B,N].
    MatMul,
    /// (q[B,Hq*D], k[B,Hk*D]) -> (q', k'): rotary embedding on the first
    /// `rotary_dim` dims of each head (pairs `(i, i + rotary_dim/2)`, the
    /// Llama/NeoX convention), at base frequency `theta`, for position `context - 1`
    /// (in a prefill of N tokens, row `i` of each sequence at `context - N + i`).
    Rope { heads: u64, kv_heads: u64, head_dim: u64, rotary_dim: u64, theta: f64 },
    /// (k[B·N,Hk*D], v[B·N,Hk*D], kcache[B,Hk,S,D], vcache[B,Hk,S,D]) ->
    /// (kcache'[B,Hk,S',D], vcache'[B,Hk,S',D]): appends N tokens per sequence,
    /// S' = S + N, or with a window min(S + N, window + N - 1): every position
    /// one of the N new queries can see (N = 1: min(S+1, window)).
    KvAppend { window: Option<u64> },
    /// (q[B·N,Hq*D], kcache[B,Hk,S,D]) -> scores[B·N,Hq,S] = q·k / sqrt(D); query head
    /// `h` reads KV head `h / (Hq/Hk)`; causal when N > 1 (see the module doc).
    AttnScores { heads: u64, kv_heads: u64, head_dim: u64 },
    /// (scores[B·N,Hq,S]) -> probs[B·N,Hq,S], over the last axis (masked positions excluded).
    Softmax,
    /// (probs[B·N,Hq,S], vcache[B,Hk,S,D]) -> [B·N,Hq*D].
    AttnValue { heads: u64, kv_heads: u64, head_dim: u64 },
    /// (x) -> act(x).
    Act { func: ActFn },
    /// (gate[B,N], up[B,N]) -> act(gate) * up.
    GatedAct { func: ActFn },
    /// (a, b) -> a + b (residual adds).
    Add,
    /// (x) -> f(x).
    Elementwise { func: Elementwise },
    /// (x[B,H], w[E,H]) -> routing[B,k]: softmax-top-k gate weights (indices implied).
    MoeRouter { experts: u64, top_k: u64 },
    /// (x[B,H], routing[B,k], w_gate[E,I,H], w_up[E,I,H], w_down[E,H,I]) -> [B,H]:
    /// the k routed gated-MLP experts per token, combined with the gate weights.
    MoeExperts { experts: u64, top_k: u64, func: ActFn },
    /// (logits[B,V]) -> i32[B] (greedy arg-max).
    Sample,
    /// (x[B·N,H]) -> [B,H]: the last of each sequence's N rows. A prefill
    /// computes the final norm and the logits only for the token it samples.
    LastToken { tokens: u64 },
}

impl OpKind {
    /// Short stable name used in the textual form and in breakdowns.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            OpKind::Embedding => "embedding",
            OpKind::PosEmbedding => "pos_embedding",
            OpKind::Norm { .. } => "norm",
            OpKind::MatMul => "matmul",
            OpKind::Rope { .. } => "rope",
            OpKind::KvAppend { .. } => "kv_append",
            OpKind::AttnScores { .. } => "attn_scores",
            OpKind::Softmax => "softmax",
            OpKind::AttnValue { .. } => "attn_value",
            OpKind::Act { .. } => "act",
            OpKind::GatedAct { .. } => "gated_act",
            OpKind::Add => "add",
            OpKind::Elementwise { .. } => "elementwise",
            OpKind::MoeRouter { .. } => "moe_router",
            OpKind::MoeExperts { .. } => "moe_experts",
            OpKind::Sample => "sample",
            OpKind::LastToken { .. } => "last_token",
        }
    }

    /// Attributes printed after the mnemonic in the textual form.
    pub fn attrs(&self) -> String {
        match self {
            OpKind::Norm { kind, groups, eps } => {
                let k = match kind {
                    NormKind::Rms { unit_offset: false } => "rms".to_string(),
                    NormKind::Rms { unit_offset: true } => "rms+1".to_string(),
                    NormKind::Layer => "layer".to_string(),
                };
                format!("{k} groups={groups} eps={eps}")
            }
            OpKind::Rope { heads, kv_heads, head_dim, rotary_dim, theta } => {
                format!("heads={heads} kv_heads={kv_heads} head_dim={head_dim} rotary_dim={rotary_dim} theta={theta}")
            }
            OpKind::KvAppend { window: Some(w) } => format!("window={w}"),
            OpKind::KvAppend { window: None } => String::new(),
            OpKind::AttnScores { heads, kv_heads, head_dim } | OpKind::AttnValue { heads, kv_heads, head_dim } => {
                format!("heads={heads} kv_heads={kv_heads} head_dim={head_dim}")
            }
            OpKind::Act { func } | OpKind::GatedAct { func } => func.name().to_string(),
            OpKind::Elementwise { func: Elementwise::Scale(c) } => format!("scale={c}"),
            OpKind::Elementwise { func: Elementwise::Softcap(c) } => format!("softcap={c}"),
            OpKind::MoeRouter { experts, top_k } => format!("experts={experts} top_k={top_k}"),
            OpKind::MoeExperts { experts, top_k, func } => {
                format!("experts={experts} top_k={top_k} {}", func.name())
            }
            OpKind::LastToken { tokens } => format!("tokens={tokens}"),
            _ => String::new(),
        }
    }

    /// The output shapes and dtypes this op produces from `inputs`, or why the
    /// inputs are not acceptable. `act` is the graph's activation dtype. This is
    /// the single shape rule used by the builder and by the verifier.
    pub fn infer(&self, inputs: &[&Tensor], act: DType) -> Result<Vec<(Vec<u64>, DType)>, String> {
        use TensorKind::*;
        let arity = |lo: usize, hi: usize| -> Result<(), String> {
            if inputs.len() < lo || inputs.len() > hi {
                let want = if lo == hi { format!("{lo}") } else { format!("{lo} to {hi}") };
                Err(format!("takes {want} inputs, got {}", inputs.len()))
            } else {
                Ok(())
            }
        };
        let rank = |i: usize, r: usize| -> Result<&[u64], String> {
            let t = inputs[i];
            if t.shape.len() != r {
                Err(format!("input {i} `{}` must have rank {r}, has shape {:?}", t.name, t.shape))
            } else {
                Ok(&t.shape)
            }
        };
        let kind = |i: usize, k: TensorKind| -> Result<(), String> {
            if inputs[i].kind != k {
                Err(format!(
                    "input {i} `{}` must be a {} tensor, is {}",
                    inputs[i].name,
                    k.name(),
                    inputs[i].kind.name()
                ))
            } else {
                Ok(())
            }
        };
        let not_weight = |i: usize| -> Result<(), String> {
            if matches!(inputs[i].kind, Weight | KvCache) {
                Err(format!("input {i} `{}` must be an activation, is {}", inputs[i].name, inputs[i].kind.name()))
            } else {
                Ok(())
            }
        };
        let eq = |what: &str, a: u64, b: u64| -> Result<(), String> {
            if a != b {
                Err(format!("{what}: {a} != {b}"))
            } else {
                Ok(())
            }
        };
        let heads_ok = |heads: u64, kv_heads: u64, head_dim: u64| -> Result<(), String> {
            if heads == 0 || kv_heads == 0 || head_dim == 0 || heads % kv_heads != 0 {
                Err(format!(
                    "heads={heads} must be a positive multiple of kv_heads={kv_heads}, head_dim={head_dim} positive"
                ))
            } else {
                Ok(())
            }
        };
        // New tokens per sequence: `rows` over the cache's batch, a whole number >= 1.
        let new_tokens = |what: &str, rows: u64, batch: u64| -> Result<u64, String> {
            if batch == 0 || rows == 0 || rows % batch != 0 {
                Err(format!("{what}: {rows} rows are not a positive multiple of {batch}"))
            } else {
                Ok(rows / batch)
            }
        };
        match self {
            OpKind::Embedding => {
                arity(2, 2)?;
                let tok = rank(0, 1)?;
                if inputs[0].dtype != DType::I32 {
                    return Err(format!("input 0 `{}` must be i32 token ids", inputs[0].name));
                }
                kind(1, Weight)?;
                let tab = rank(1, 2)?;
                Ok(vec![(vec![tok[0], tab[1]], act)])
            }
            OpKind::PosEmbedding => {
                arity(2, 2)?;
                not_weight(0)?;
                let x = rank(0, 2)?;
                kind(1, Weight)?;
                let tab = rank(1, 2)?;
                eq("hidden of x vs position table", x[1], tab[1])?;
                Ok(vec![(x.to_vec(), inputs[0].dtype)])
            }
            OpKind::Norm { kind: nk, groups, .. } => {
                let n = if matches!(nk, NormKind::Layer) { 3 } else { 2 };
                arity(n, n)?;
                not_weight(0)?;
                let x = rank(0, 2)?;
                for i in 1..n {
                    kind(i, Weight)?;
                    let g = rank(i, 1)?;
                    eq("features of x vs groups*norm width", x[1], groups * g[0])?;
                }
                Ok(vec![(x.to_vec(), inputs[0].dtype)])
            }
            OpKind::MatMul => {
                arity(2, 3)?;
                not_weight(0)?;
                let x = rank(0, 2)?;
                kind(1, Weight)?;
                let w = rank(1, 2)?;
                eq("inner dimension of x vs weight columns", x[1], w[1])?;
                if inputs.len() == 3 {
                    kind(2, Weight)?;
                    let b = rank(2, 1)?;
                    eq("bias length vs weight rows", b[0], w[0])?;
                }
                Ok(vec![(vec![x[0], w[0]], inputs[0].dtype)])
            }
            OpKind::Rope { heads, kv_heads, head_dim, rotary_dim, .. } => {
                arity(2, 2)?;
                heads_ok(*heads, *kv_heads, *head_dim)?;
                if *rotary_dim == 0 || rotary_dim > head_dim || rotary_dim % 2 != 0 {
                    return Err(format!("rotary_dim={rotary_dim} must be even and in 2..={head_dim}"));
                }
                not_weight(0)?;
                not_weight(1)?;
                let q = rank(0, 2)?;
                let k = rank(1, 2)?;
                eq("q features vs heads*head_dim", q[1], heads * head_dim)?;
                eq("k features vs kv_heads*head_dim", k[1], kv_heads * head_dim)?;
                Ok(vec![(q.to_vec(), inputs[0].dtype), (k.to_vec(), inputs[1].dtype)])
            }
            OpKind::KvAppend { window } => {
                arity(4, 4)?;
                not_weight(0)?;
                not_weight(1)?;
                kind(2, KvCache)?;
                kind(3, KvCache)?;
                let k = rank(0, 2)?;
                let v = rank(1, 2)?;
                let kc = rank(2, 4)?;
                let vc = rank(3, 4)?;
                if kc != vc || inputs[2].dtype != inputs[3].dtype {
                    return Err(format!("k cache {:?} and v cache {:?} differ", kc, vc));
                }
                let n = new_tokens("k rows vs cache batch", k[0], kc[0])?;
                eq("k features vs kv_heads*head_dim", k[1], kc[1] * kc[3])?;
                eq("v features vs k features", v[1], k[1])?;
                eq("v rows vs k rows", v[0], k[0])?;
                let s = match window {
                    Some(w) if *w == 0 => return Err("window must be positive".into()),
                    Some(w) if kc[2] > *w => {
                        return Err(format!("cache holds {} positions, more than the window {w}", kc[2]))
                    }
                    Some(w) => (kc[2] + n).min(*w + n - 1),
                    None => kc[2] + n,
                };
                let shape = vec![kc[0], kc[1], s, kc[3]];
                Ok(vec![(shape.clone(), inputs[2].dtype), (shape, inputs[2].dtype)])
            }
            OpKind::AttnScores { heads, kv_heads, head_dim } => {
                arity(2, 2)?;
                heads_ok(*heads, *kv_heads, *head_dim)?;
                not_weight(0)?;
                kind(1, KvCache)?;
                let q = rank(0, 2)?;
                let kc = rank(1, 4)?;
                eq("q features vs heads*head_dim", q[1], heads * head_dim)?;
                eq("cache kv_heads", kc[1], *kv_heads)?;
                eq("cache head_dim", kc[3], *head_dim)?;
                let n = new_tokens("q rows vs cache batch", q[0], kc[0])?;
                if kc[2] == 0 {
                    return Err("attends over an empty cache (append the new token first)".into());
                }
                if n > kc[2] {
                    return Err(format!("{n} queries per sequence but the cache holds {} positions", kc[2]));
                }
                Ok(vec![(vec![q[0], *heads, kc[2]], inputs[0].dtype)])
            }
            OpKind::Softmax => {
                arity(1, 1)?;
                not_weight(0)?;
                let s = rank(0, 3)?;
                Ok(vec![(s.to_vec(), inputs[0].dtype)])
            }
            OpKind::AttnValue { heads, kv_heads, head_dim } => {
                arity(2, 2)?;
                heads_ok(*heads, *kv_heads, *head_dim)?;
                not_weight(0)?;
                kind(1, KvCache)?;
                let p = rank(0, 3)?;
                let vc = rank(1, 4)?;
                eq("probs heads", p[1], *heads)?;
                eq("probs positions vs cache positions", p[2], vc[2])?;
                eq("cache kv_heads", vc[1], *kv_heads)?;
                eq("cache head_dim", vc[3], *head_dim)?;
                new_tokens("probs rows vs cache batch", p[0], vc[0])?;
                Ok(vec![(vec![p[0], heads * head_dim], inputs[0].dtype)])
            }
            OpKind::Act { .. } | OpKind::Elementwise { .. } => {
                arity(1, 1)?;
                not_weight(0)?;
                Ok(vec![(inputs[0].shape.clone(), inputs[0].dtype)])
            }
            OpKind::GatedAct { .. } | OpKind::Add => {
                arity(2, 2)?;
                not_weight(0)?;
                not_weight(1)?;
                if inputs[0].shape != inputs[1].shape {
                    return Err(format!("operand shapes differ: {:?} vs {:?}", inputs[0].shape, inputs[1].shape));
                }
                Ok(vec![(inputs[0].shape.clone(), inputs[0].dtype)])
            }
            OpKind::MoeRouter { experts, top_k } => {
                arity(2, 2)?;
                if *top_k == 0 || top_k > experts {
                    return Err(format!("top_k={top_k} must be in 1..={experts}"));
                }
                not_weight(0)?;
                kind(1, Weight)?;
                let x = rank(0, 2)?;
                let w = rank(1, 2)?;
                eq("router columns vs hidden", w[1], x[1])?;
                eq("router rows vs experts", w[0], *experts)?;
                Ok(vec![(vec![x[0], *top_k], inputs[0].dtype)])
            }
            OpKind::MoeExperts { experts, top_k, .. } => {
                arity(5, 5)?;
                not_weight(0)?;
                not_weight(1)?;
                let x = rank(0, 2)?;
                let r = rank(1, 2)?;
                eq("routing batch", r[0], x[0])?;
                eq("routing width vs top_k", r[1], *top_k)?;
                for i in 2..5 {
                    kind(i, Weight)?;
                    let w = rank(i, 3)?;
                    eq("expert count", w[0], *experts)?;
                }
                let g = &inputs[2].shape;
                eq("gate columns vs hidden", g[2], x[1])?;
                if inputs[3].shape != *g {
                    return Err(format!("up {:?} differs from gate {:?}", inputs[3].shape, g));
                }
                let d = &inputs[4].shape;
                eq("down columns vs intermediate", d[2], g[1])?;
                eq("down rows vs hidden", d[1], x[1])?;
                Ok(vec![(x.to_vec(), inputs[0].dtype)])
            }
            OpKind::Sample => {
                arity(1, 1)?;
                not_weight(0)?;
                let l = rank(0, 2)?;
                Ok(vec![(vec![l[0]], DType::I32)])
            }
            OpKind::LastToken { tokens } => {
                arity(1, 1)?;
                not_weight(0)?;
                let x = rank(0, 2)?;
                if *tokens == 0 || x[0] % tokens != 0 {
                    return Err(format!("{} rows are not a positive multiple of tokens={tokens}", x[0]));
                }
                Ok(vec![(vec![x[0] / tokens, x[1]], inputs[0].dtype)])
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Stable dotted name, e.g. `l3.attn.q_proj`.
    pub name: String,
    pub kind: OpKind,
    /// Decoder layer this op belongs to; `None` for embedding, final norm, head.
    pub layer: Option<u32>,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
}

/// One step: `batch` sequences each adding `new_tokens` tokens (1 for decode,
/// N for a prefill of N prompt tokens), the last of which attends over
/// `context` positions (itself included; a prefill's first new token sees
/// `context - new_tokens + 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    pub batch: u64,
    pub context: u64,
    /// Tokens per sequence this step computes (activation rows = batch × new_tokens).
    #[serde(default = "one")]
    pub new_tokens: u64,
    pub weight_dtype: DType,
    pub act_dtype: DType,
    pub kv_dtype: DType,
    pub tensors: Vec<Tensor>,
    pub ops: Vec<Op>,
}

fn one() -> u64 {
    1
}

impl Graph {
    /// A prefill (or prefill chunk): more than one new token per sequence.
    pub fn is_prefill(&self) -> bool {
        self.new_tokens > 1
    }
    /// Positions already in the cache before this step (the last token's context less the new tokens).
    pub fn cached(&self) -> u64 {
        self.context - self.new_tokens
    }
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0 as usize]
    }
    pub fn op(&self, id: OpId) -> &Op {
        &self.ops[id.0 as usize]
    }
    pub fn op_ids(&self) -> impl Iterator<Item = OpId> + '_ {
        (0..self.ops.len() as u32).map(OpId)
    }
    pub fn num_layers(&self) -> u32 {
        self.ops.iter().filter_map(|o| o.layer).max().map_or(0, |l| l + 1)
    }
}

/// Builds a graph op by op, inferring each output's shape with `OpKind::infer`.
#[derive(Debug)]
pub struct GraphBuilder {
    g: Graph,
}

impl GraphBuilder {
    pub fn new(name: &str, batch: u64, context: u64, weight_dtype: DType, act_dtype: DType, kv_dtype: DType) -> Self {
        GraphBuilder {
            g: Graph {
                name: name.to_string(),
                batch,
                context,
                new_tokens: 1,
                weight_dtype,
                act_dtype,
                kv_dtype,
                tensors: Vec::new(),
                ops: Vec::new(),
            },
        }
    }

    /// Makes the graph a step of `n` new tokens per sequence (a prefill when n > 1).
    pub fn with_new_tokens(mut self, n: u64) -> Self {
        self.g.new_tokens = n;
        self
    }

    /// Declares a graph input (weight, token ids, KV-cache state).
    pub fn input(&mut self, name: &str, shape: Vec<u64>, dtype: DType, kind: TensorKind) -> TensorId {
        let id = TensorId(self.g.tensors.len() as u32);
        self.g.tensors.push(Tensor { name: name.to_string(), shape, dtype, kind });
        id
    }

    pub fn weight(&mut self, name: &str, shape: Vec<u64>) -> TensorId {
        let dt = self.g.weight_dtype;
        self.input(name, shape, dt, TensorKind::Weight)
    }

    /// Appends an op; its outputs are named `{name}` (or `{name}.{i}` when several).
    /// Panics if the inputs do not satisfy the op's shape rule: the builder is
    /// driven by code that has already validated the model description.
    pub fn op(&mut self, name: &str, kind: OpKind, layer: Option<u32>, inputs: &[TensorId]) -> Vec<TensorId> {
        self.try_op(name, kind, layer, inputs).unwrap_or_else(|e| panic!("building `{name}`: {e}"))
    }

    /// Like `op`, returning the shape error instead of panicking.
    pub fn try_op(
        &mut self,
        name: &str,
        kind: OpKind,
        layer: Option<u32>,
        inputs: &[TensorId],
    ) -> Result<Vec<TensorId>, String> {
        let ins: Vec<&Tensor> = inputs.iter().map(|t| self.g.tensor(*t)).collect();
        let outs = kind.infer(&ins, self.g.act_dtype)?;
        let many = outs.len() > 1;
        let mut ids = Vec::with_capacity(outs.len());
        for (i, (shape, dtype)) in outs.into_iter().enumerate() {
            let tkind =
                if matches!(kind, OpKind::KvAppend { .. }) { TensorKind::KvCache } else { TensorKind::Activation };
            let tname = if many { format!("{name}.{i}") } else { name.to_string() };
            ids.push(self.input(&tname, shape, dtype, tkind));
        }
        self.g.ops.push(Op { name: name.to_string(), kind, layer, inputs: inputs.to_vec(), outputs: ids.clone() });
        Ok(ids)
    }

    pub fn one(&mut self, name: &str, kind: OpKind, layer: Option<u32>, inputs: &[TensorId]) -> TensorId {
        self.op(name, kind, layer, inputs)[0]
    }

    pub fn finish(self) -> Graph {
        self.g
    }
}

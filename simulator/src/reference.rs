//! Dense reference: the graph IR interpreted op by op in fp32 with ndarray.
//!
//! Owns: seeded random model weights ([`Weights`]), the KV-cache state carried
//! between decode steps ([`KvState`]), the element-wise math every engine must
//! agree on (activations, RoPE angles), and [`run_reference`], one decode (or prefill) step
//! computed straight from each [`OpKind`]'s documented semantics on whole
//! tensors. Must not: look at a spatial program, a mesh or a tiling — it is the
//! independent side of the functional engine's comparison, so it shares no
//! partitioning logic with the compiler or with [`crate::functional`].

use ndarray::{s, Array1, Array2, Array4, ArrayD, Axis, IxDyn};
use std::collections::BTreeMap;
use wafer_ir::{ActFn, Elementwise, Graph, NormKind, OpKind, TensorId, TensorKind};

/// Why the reference cannot run a step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    #[error("weight `{name}` is missing")]
    MissingWeight { name: String },
    #[error("weight `{name}` has shape {got:?}, the graph expects {expected:?}")]
    WeightShape { name: String, expected: Vec<u64>, got: Vec<usize> },
    #[error("{got} token ids given for {expected} (batch × new tokens, sequence-major)")]
    TokenCount { expected: u64, got: usize },
    #[error("token {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u64, vocab: u64 },
    #[error("KV cache `{name}` holds shape {got:?}, the graph expects {expected:?}")]
    KvShape { name: String, expected: Vec<u64>, got: Vec<usize> },
    #[error("position {pos} is outside the learned table of {len} positions (op `{op}`)")]
    Position { op: String, pos: u64, len: u64 },
    #[error("op `{op}`: {why}")]
    Op { op: String, why: String },
    #[error("the graph has no `sample` op, so it produces no logits")]
    NoSample,
}

/// A SplitMix64 stream: small, fast and good enough for test weights.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller, one value per call).
    pub fn next_normal(&mut self) -> f64 {
        let (u, v) = (self.next_open01(), self.next_open01());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

/// Model parameters by tensor name, as fp32 arrays of the graph's shapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, ArrayD<f32>>,
}

/// What a rank-1 weight is used as, which decides its distribution.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    Gamma,
    GammaOffset,
    Shift,
    Matrix,
}

impl Weights {
    /// Deterministic random weights for every weight tensor of `g`: each tensor
    /// draws from its own stream seeded by `seed` and its name, so the values
    /// depend neither on graph order nor on the step's context. Matrices
    /// (`[.., out, in]`) are N(0, 1/in); norm gammas 1 + N(0, 0.1²) (N(0, 0.1²)
    /// for Gemma's unit offset); biases and LayerNorm betas N(0, 0.1²).
    pub fn random(g: &Graph, seed: u64) -> Weights {
        let mut uses: BTreeMap<TensorId, Use> = BTreeMap::new();
        for op in &g.ops {
            match op.kind {
                OpKind::Norm { kind, .. } => {
                    let gamma =
                        if kind == (NormKind::Rms { unit_offset: true }) { Use::GammaOffset } else { Use::Gamma };
                    uses.insert(op.inputs[1], gamma);
                    if let Some(&b) = op.inputs.get(2) {
                        uses.insert(b, Use::Shift);
                    }
                }
                OpKind::MatMul => {
                    if let Some(&b) = op.inputs.get(2) {
                        uses.insert(b, Use::Shift);
                    }
                }
                _ => {}
            }
        }
        let mut tensors = BTreeMap::new();
        for (i, t) in g.tensors.iter().enumerate() {
            if t.kind != TensorKind::Weight {
                continue;
            }
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let mut rng = SplitMix64::new(seed ^ fnv1a(&t.name));
            let usage = uses.get(&TensorId(i as u32)).copied().unwrap_or(Use::Matrix);
            let fan_in = *t.shape.last().unwrap_or(&1) as f64;
            let (mean, sd) = match usage {
                Use::Gamma => (1.0, 0.1),
                Use::GammaOffset | Use::Shift => (0.0, 0.1),
                Use::Matrix => (0.0, 1.0 / fan_in.max(1.0).sqrt()),
            };
            let n: usize = shape.iter().product();
            let vals: Vec<f32> = (0..n).map(|_| (mean + sd * rng.next_normal()) as f32).collect();
            if let Ok(a) = ArrayD::from_shape_vec(IxDyn(&shape), vals) {
                tensors.insert(t.name.clone(), a);
            }
        }
        Weights { tensors }
    }

    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.tensors.get(name)
    }

    /// Replaces or adds one tensor (tests that want hand-picked values).
    pub fn insert(&mut self, name: &str, value: ArrayD<f32>) {
        self.tensors.insert(name.to_string(), value);
    }

    /// The weight `name` checked against the graph's shape for it.
    pub fn checked(&self, name: &str, shape: &[u64]) -> Result<&ArrayD<f32>, ReferenceError> {
        let a = self.get(name).ok_or_else(|| ReferenceError::MissingWeight { name: name.into() })?;
        if a.shape().len() != shape.len() || a.shape().iter().zip(shape).any(|(&x, &y)| x as u64 != y) {
            return Err(ReferenceError::WeightShape {
                name: name.into(),
                expected: shape.to_vec(),
                got: a.shape().to_vec(),
            });
        }
        Ok(a)
    }

    /// A rank-2 weight as a 2-D view.
    pub fn matrix(&self, name: &str, shape: &[u64]) -> Result<ndarray::ArrayView2<'_, f32>, ReferenceError> {
        let a = self.checked(name, shape)?;
        a.view().into_dimensionality().map_err(|_| ReferenceError::WeightShape {
            name: name.into(),
            expected: shape.to_vec(),
            got: a.shape().to_vec(),
        })
    }

    /// A rank-1 weight as a 1-D view.
    pub fn vector(&self, name: &str, len: u64) -> Result<ndarray::ArrayView1<'_, f32>, ReferenceError> {
        let a = self.checked(name, &[len])?;
        a.view().into_dimensionality().map_err(|_| ReferenceError::WeightShape {
            name: name.into(),
            expected: vec![len],
            got: a.shape().to_vec(),
        })
    }
}

/// KV caches carried between decode steps, by the name of the graph's cache
/// input (`l0.k_cache`, …), each `[batch, kv_heads, positions, head_dim]`. A
/// cache not yet present is empty. The engine that fills a state decides the
/// order of its positions (the reference keeps them oldest first; the
/// functional engine keeps them in the program's slot order), so a state
/// belongs to one engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvState {
    pub caches: BTreeMap<String, Array4<f32>>,
}

impl KvState {
    pub fn new() -> Self {
        Self::default()
    }
    /// Positions held by cache `name` (0 when absent).
    pub fn len(&self, name: &str) -> usize {
        self.caches.get(name).map_or(0, |c| c.shape()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.caches.values().all(|c| c.shape()[2] == 0)
    }

    /// Seeded caches for the past positions of the step `g` (every cache
    /// tensor `g` reads), so a check can start at any context: the first is
    /// laid out as [`run_reference`] holds it (oldest position first), the
    /// second as a compiled program holds it (a sliding window is a ring:
    /// position `p` at slot `p mod window`). Both hold the same values.
    pub fn random_past(g: &Graph, seed: u64) -> (KvState, KvState) {
        let mut window: BTreeMap<TensorId, Option<u64>> = BTreeMap::new();
        for op in &g.ops {
            if let OpKind::KvAppend { window: w } = op.kind {
                for &t in op.inputs.iter().skip(2) {
                    window.insert(t, w);
                }
            }
        }
        let past = g.context.saturating_sub(g.new_tokens) as usize;
        let (mut dense, mut slots) = (KvState::new(), KvState::new());
        for (id, w) in window {
            let t = g.tensor(id);
            let [b, h, s, d] = [0, 1, 2, 3].map(|i| t.shape.get(i).copied().unwrap_or(0) as usize);
            let mut rng = SplitMix64::new(seed ^ fnv1a(&t.name));
            let a = Array4::from_shape_fn((b, h, s, d), |_| rng.next_normal() as f32);
            let mut ring = a.clone();
            if let Some(w) = w.filter(|&w| w > 0) {
                // Entry j of the dense cache is position past - s + j.
                for j in 0..s {
                    let slot = (past - s + j) % w as usize;
                    if slot < s {
                        ring.slice_mut(s![.., .., slot, ..]).assign(&a.slice(s![.., .., j, ..]));
                    }
                }
            }
            dense.caches.insert(t.name.clone(), a);
            slots.caches.insert(t.name.clone(), ring);
        }
        (dense, slots)
    }
}

/// The result of one decode step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// `[batch, vocab]`: the input of the `sample` op.
    pub logits: Array2<f32>,
    /// The greedy token per sequence.
    pub sampled: Vec<u64>,
}

/// erf(x) in f64: the Maclaurin series below |x| = 4.5 (terms stay under
/// ~1e6, so rounding stays near 1e-10), and ±1 beyond (erfc(4.5) < 3e-10).
fn erf(x: f64) -> f64 {
    if x.abs() >= 4.5 {
        return x.signum();
    }
    let x2 = x * x;
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x2 / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 * sum.abs().max(1e-300) {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// An activation function on one value (computed in f64, rounded to f32).
pub fn activate(func: ActFn, x: f32) -> f32 {
    let v = x as f64;
    let y = match func {
        ActFn::Silu => v / (1.0 + (-v).exp()),
        ActFn::Gelu => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
        ActFn::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        }
        ActFn::Relu => v.max(0.0),
    };
    y as f32
}

/// An element-wise op with a constant on one value.
pub fn elementwise(func: Elementwise, x: f32) -> f32 {
    match func {
        Elementwise::Scale(c) => (x as f64 * c) as f32,
        Elementwise::Softcap(c) => (c * (x as f64 / c).tanh()) as f32,
    }
}

/// `(cos, sin)` of the RoPE angle for pair `i` of `rotary_dim` at `pos`.
pub fn rope_angle(theta: f64, rotary_dim: u64, i: u64, pos: u64) -> (f32, f32) {
    let freq = theta.powf(-(2.0 * i as f64) / rotary_dim as f64);
    let a = pos as f64 * freq;
    (a.cos() as f32, a.sin() as f32)
}

/// Greedy arg-max of one row (the first of equal maxima).
pub fn argmax(row: ndarray::ArrayView1<'_, f32>) -> u64 {
    let mut best: Option<(f32, u64)> = None;
    for (i, &v) in row.iter().enumerate() {
        if best.is_none_or(|(b, _)| v > b) {
            best = Some((v, i as u64));
        }
    }
    best.map_or(0, |b| b.1)
}

fn to2(a: &ArrayD<f32>) -> Array2<f32> {
    let s = a.shape();
    let (b, n) = (s[0], s[1..].iter().product());
    a.to_shape((b, n)).map(|v| v.to_owned()).unwrap_or_else(|_| Array2::zeros((b, n)))
}

/// One step of `g` on whole tensors: a decode step, or a prefill of
/// `g.new_tokens` tokens per sequence (causal attention, the graph IR's
/// semantics). `tokens` holds `new_tokens` ids per sequence, sequence-major;
/// `kv` holds the caches of the previous steps (empty before the first) and
/// is advanced to include this step's tokens (a windowed cache keeps the
/// last `window` positions).
pub fn run_reference(
    g: &Graph,
    weights: &Weights,
    tokens: &[u64],
    kv: &mut KvState,
) -> Result<StepOutput, ReferenceError> {
    // Rows are sequence-major: row b·n + i is new token i of sequence b, at
    // position context - n + i.
    let n = g.new_tokens.max(1) as usize;
    let rows = g.batch as usize * n;
    if tokens.len() != rows {
        return Err(ReferenceError::TokenCount { expected: rows as u64, got: tokens.len() });
    }
    let pos_of = |r: usize| g.context - n as u64 + (r % n) as u64;
    // The window of each cache a KvAppend produced (the attention ops mask by it).
    let mut window_of: BTreeMap<TensorId, Option<u64>> = BTreeMap::new();
    for op in &g.ops {
        if let OpKind::KvAppend { window } = op.kind {
            for &o in &op.outputs {
                window_of.insert(o, window);
            }
        }
    }
    let mut vals: Vec<Option<ArrayD<f32>>> = vec![None; g.tensors.len()];
    let mut tok_of: BTreeMap<TensorId, Vec<u64>> = BTreeMap::new();
    let mut topk_of: BTreeMap<TensorId, Vec<Vec<usize>>> = BTreeMap::new();
    for (i, t) in g.tensors.iter().enumerate() {
        let id = TensorId(i as u32);
        match t.kind {
            TensorKind::Input => {
                tok_of.insert(id, tokens.to_vec());
            }
            TensorKind::KvCache if !g.ops.iter().any(|o| o.outputs.contains(&id)) => {
                let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
                let c = match kv.caches.get(&t.name) {
                    Some(c) => c.clone().into_dyn(),
                    None => ArrayD::zeros(IxDyn(&[want[0], want[1], 0, want[3]])),
                };
                if c.shape() != want.as_slice() {
                    return Err(ReferenceError::KvShape {
                        name: t.name.clone(),
                        expected: t.shape.clone(),
                        got: c.shape().to_vec(),
                    });
                }
                vals[i] = Some(c);
            }
            TensorKind::Weight => {
                vals[i] = Some(weights.checked(&t.name, &t.shape)?.clone());
            }
            _ => {}
        }
    }
    let mut sampled = None;
    let mut logits = None;
    for op in &g.ops {
        let err = |why: String| ReferenceError::Op { op: op.name.clone(), why };
        let input = |k: usize| -> Result<&ArrayD<f32>, ReferenceError> {
            op.inputs
                .get(k)
                .and_then(|t| vals[t.0 as usize].as_ref())
                .ok_or_else(|| err(format!("input {k} has no value")))
        };
        let outs: Vec<ArrayD<f32>> = match &op.kind {
            OpKind::Embedding => {
                let toks = op.inputs.first().and_then(|t| tok_of.get(t)).ok_or_else(|| err("no token ids".into()))?;
                let table = to2(input(1)?);
                let vocab = table.nrows() as u64;
                let mut out = Array2::zeros((toks.len(), table.ncols()));
                for (b, &t) in toks.iter().enumerate() {
                    if t >= vocab {
                        return Err(ReferenceError::TokenOutOfRange { token: t, vocab });
                    }
                    out.row_mut(b).assign(&table.row(t as usize));
                }
                vec![out.into_dyn()]
            }
            OpKind::PosEmbedding => {
                let mut x = to2(input(0)?);
                let table = to2(input(1)?);
                for (r, mut row) in x.rows_mut().into_iter().enumerate() {
                    let pos = pos_of(r);
                    if pos >= table.nrows() as u64 {
                        return Err(ReferenceError::Position { op: op.name.clone(), pos, len: table.nrows() as u64 });
                    }
                    row += &table.row(pos as usize);
                }
                vec![x.into_dyn()]
            }
            OpKind::Norm { kind, groups, eps } => {
                let x = to2(input(0)?);
                let gamma = input(1)?.iter().copied().collect::<Vec<f32>>();
                let beta =
                    if op.inputs.len() > 2 { Some(input(2)?.iter().copied().collect::<Vec<f32>>()) } else { None };
                let d = gamma.len();
                let mut out = x.clone();
                for mut row in out.rows_mut() {
                    for gi in 0..*groups as usize {
                        let mut seg = row.slice_mut(s![gi * d..(gi + 1) * d]);
                        let n = d as f64;
                        let mean =
                            if *kind == NormKind::Layer { seg.iter().map(|&v| v as f64).sum::<f64>() / n } else { 0.0 };
                        let var = seg.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                        let inv = 1.0 / (var + eps).sqrt();
                        for (j, v) in seg.iter_mut().enumerate() {
                            let gm = match kind {
                                NormKind::Rms { unit_offset: true } => 1.0 + gamma[j] as f64,
                                _ => gamma[j] as f64,
                            };
                            let sh = beta.as_ref().map_or(0.0, |b| b[j] as f64);
                            *v = ((*v as f64 - mean) * inv * gm + sh) as f32;
                        }
                    }
                }
                vec![out.into_dyn()]
            }
            OpKind::MatMul => {
                let x = to2(input(0)?);
                let w = to2(input(1)?);
                let mut y = x.dot(&w.t());
                if op.inputs.len() > 2 {
                    let b = input(2)?.iter().copied().collect::<Array1<f32>>();
                    y += &b;
                }
                vec![y.into_dyn()]
            }
            OpKind::Rope { heads, kv_heads, head_dim, rotary_dim, theta } => {
                let rot = |a: &ArrayD<f32>, nh: u64| -> Array2<f32> {
                    let mut x = to2(a);
                    let half = rotary_dim / 2;
                    for (r, mut row) in x.rows_mut().into_iter().enumerate() {
                        let pos = pos_of(r);
                        for h in 0..nh {
                            for i in 0..half {
                                let (c, s) = rope_angle(*theta, *rotary_dim, i, pos);
                                let (ia, ib) = ((h * head_dim + i) as usize, (h * head_dim + i + half) as usize);
                                let (a, b) = (row[ia], row[ib]);
                                row[ia] = a * c - b * s;
                                row[ib] = b * c + a * s;
                            }
                        }
                    }
                    x
                };
                vec![rot(input(0)?, *heads).into_dyn(), rot(input(1)?, *kv_heads).into_dyn()]
            }
            OpKind::KvAppend { window } => {
                let kc = input(2)?;
                let (b, hk, s, d) = (kc.shape()[0], kc.shape()[1], kc.shape()[2], kc.shape()[3]);
                let mut res = Vec::new();
                for (new, cache) in [(input(0)?, kc), (input(1)?, input(3)?)] {
                    let new = to2(new);
                    let mut c = Array4::<f32>::zeros((b, hk, s + n, d));
                    c.slice_mut(s![.., .., ..s, ..]).assign(
                        &cache
                            .view()
                            .into_dimensionality::<ndarray::Ix4>()
                            .map_err(|_| err("cache is not rank 4".into()))?,
                    );
                    for bi in 0..b {
                        for i in 0..n {
                            for h in 0..hk {
                                c.slice_mut(s![bi, h, s + i, ..])
                                    .assign(&new.slice(s![bi * n + i, h * d..(h + 1) * d]));
                            }
                        }
                    }
                    // Every position one of the n new queries can see.
                    let keep = window.map_or(s + n, |w| (s + n).min(w as usize + n - 1));
                    let c = c.slice(s![.., .., (s + n - keep).., ..]).to_owned();
                    res.push(c.into_dyn());
                }
                res
            }
            OpKind::AttnScores { heads, kv_heads, head_dim } => {
                let q = to2(input(0)?);
                let kc = input(1)?;
                let (hd, group) = (*head_dim as usize, (*heads / *kv_heads) as usize);
                let s = kc.shape()[2];
                let scale = 1.0 / (*head_dim as f32).sqrt();
                let window = op.inputs.get(1).and_then(|t| window_of.get(t)).copied().flatten();
                let mut out = ArrayD::zeros(IxDyn(&[rows, *heads as usize, s]));
                for r in 0..rows {
                    let (b, i) = (r / n, r % n);
                    // Causal: query i sits at cache index s - n + i and sees the window up to it.
                    let own = s - n + i;
                    let first = window.map_or(0, |w| (own + 1).saturating_sub(w as usize));
                    for h in 0..*heads as usize {
                        let qh = q.slice(s![r, h * hd..(h + 1) * hd]);
                        for p in 0..s {
                            out[[r, h, p]] = if p < first || p > own {
                                f32::NEG_INFINITY
                            } else {
                                qh.dot(&kc.slice(s![b, h / group, p, ..])) * scale
                            };
                        }
                    }
                }
                vec![out]
            }
            OpKind::Softmax => {
                let mut x = input(0)?.clone();
                for mut lane in x.lanes_mut(Axis(2)) {
                    let m = lane.fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    lane.mapv_inplace(|v| (v - m).exp());
                    let sum: f32 = lane.sum();
                    lane.mapv_inplace(|v| v / sum);
                }
                vec![x]
            }
            OpKind::AttnValue { heads, kv_heads, head_dim } => {
                let p = input(0)?;
                let vc = input(1)?;
                let (hd, group) = (*head_dim as usize, (*heads / *kv_heads) as usize);
                let s = vc.shape()[2];
                let mut out = Array2::<f32>::zeros((rows, *heads as usize * hd));
                for r in 0..rows {
                    let b = r / n;
                    for h in 0..*heads as usize {
                        for pos in 0..s {
                            let w = p[[r, h, pos]]; // 0 where masked
                            for d in 0..hd {
                                out[[r, h * hd + d]] += w * vc[[b, h / group, pos, d]];
                            }
                        }
                    }
                }
                vec![out.into_dyn()]
            }
            OpKind::Act { func } => vec![input(0)?.mapv(|v| activate(*func, v))],
            OpKind::GatedAct { func } => {
                let (gt, up) = (input(0)?, input(1)?);
                let mut out = gt.mapv(|v| activate(*func, v));
                out *= up;
                vec![out]
            }
            OpKind::Add => vec![input(0)? + input(1)?],
            OpKind::Elementwise { func } => vec![input(0)?.mapv(|v| elementwise(*func, v))],
            OpKind::MoeRouter { experts, top_k } => {
                let x = to2(input(0)?);
                let w = to2(input(1)?);
                let l = x.dot(&w.t());
                let (k, _e) = (*top_k as usize, *experts as usize);
                let mut weights_out = Array2::<f32>::zeros((x.nrows(), k));
                let mut picks = Vec::new();
                for b in 0..x.nrows() {
                    let mut idx: Vec<usize> = (0..l.ncols()).collect();
                    idx.sort_by(|&i, &j| l[[b, j]].total_cmp(&l[[b, i]]).then(i.cmp(&j)));
                    idx.truncate(k);
                    let m = l[[b, idx[0]]];
                    let ex: Vec<f32> = idx.iter().map(|&i| (l[[b, i]] - m).exp()).collect();
                    let sum: f32 = ex.iter().sum();
                    for (j, e) in ex.iter().enumerate() {
                        weights_out[[b, j]] = e / sum;
                    }
                    picks.push(idx);
                }
                if let Some(&o) = op.outputs.first() {
                    topk_of.insert(o, picks);
                }
                vec![weights_out.into_dyn()]
            }
            OpKind::MoeExperts { func, .. } => {
                let x = to2(input(0)?);
                let r = to2(input(1)?);
                let picks = op
                    .inputs
                    .get(1)
                    .and_then(|t| topk_of.get(t))
                    .ok_or_else(|| err("routing without a router".into()))?;
                let (wg, wu, wd) = (input(2)?, input(3)?, input(4)?);
                let mut out = Array2::<f32>::zeros(x.dim());
                for b in 0..x.nrows() {
                    for (j, &e) in picks[b].iter().enumerate() {
                        let as2 =
                            |w: &ArrayD<f32>| -> Array2<f32> { to2(&w.index_axis(Axis(0), e).to_owned().into_dyn()) };
                        let (g2, u2, d2) = (as2(wg), as2(wu), as2(wd));
                        let xb = x.row(b);
                        let h: Array1<f32> = g2.dot(&xb).mapv(|v| activate(*func, v)) * u2.dot(&xb);
                        let y = d2.dot(&h) * r[[b, j]];
                        let mut ob = out.row_mut(b);
                        ob += &y;
                    }
                }
                vec![out.into_dyn()]
            }
            OpKind::LastToken { tokens } => {
                let x = to2(input(0)?);
                let t = *tokens as usize;
                let last: Vec<usize> = (0..x.nrows() / t.max(1)).map(|b| b * t + t - 1).collect();
                vec![x.select(Axis(0), &last).into_dyn()]
            }
            OpKind::Sample => {
                let l = to2(input(0)?);
                let toks: Vec<u64> = l.rows().into_iter().map(argmax).collect();
                if let Some(&o) = op.outputs.first() {
                    tok_of.insert(o, toks.clone());
                }
                sampled = Some(toks.clone());
                logits = Some(l);
                vec![toks.iter().map(|&t| t as f32).collect::<Array1<f32>>().into_dyn()]
            }
        };
        if outs.len() != op.outputs.len() {
            return Err(err(format!("produced {} outputs for {}", outs.len(), op.outputs.len())));
        }
        for (t, v) in op.outputs.iter().zip(outs) {
            vals[t.0 as usize] = Some(v);
        }
    }
    // Advance the caches (a windowed cache keeps the window: what the next step reads).
    for op in &g.ops {
        if let OpKind::KvAppend { window } = op.kind {
            for (i, o) in [(2usize, 0usize), (3, 1)] {
                let (Some(&inp), Some(&out)) = (op.inputs.get(i), op.outputs.get(o)) else { continue };
                if let Some(v) = vals[out.0 as usize].take() {
                    let v4 = v
                        .into_dimensionality::<ndarray::Ix4>()
                        .map_err(|e| ReferenceError::Op { op: op.name.clone(), why: e.to_string() })?;
                    let len = v4.shape()[2];
                    let keep = window.map_or(len, |w| len.min(w as usize));
                    let v4 = v4.slice(s![.., .., (len - keep).., ..]).to_owned();
                    kv.caches.insert(g.tensor(inp).name.clone(), v4);
                }
            }
        }
    }
    match (logits, sampled) {
        (Some(logits), Some(sampled)) => Ok(StepOutput { logits, sampled }),
        _ => Err(ReferenceError::NoSample),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265_0),
            (3.5, 0.999_999_256_9),
        ] {
            assert!((erf(x) - want).abs() < 1e-9, "erf({x}) = {} want {want}", erf(x));
        }
    }

    #[test]
    fn weights_are_seeded_and_independent_of_order() {
        let mut r = SplitMix64::new(7);
        let a: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut r = SplitMix64::new(7);
        assert_eq!(a, (0..3).map(|_| r.next_u64()).collect::<Vec<_>>());
        let mean: f64 = (0..20000).map(|_| r.next_normal()).sum::<f64>() / 20000.0;
        assert!(mean.abs() < 0.03, "{mean}");
    }
}

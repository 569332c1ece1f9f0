//! Functional engine: a verified program run with real numbers, as partitioned.
//!
//! Owns: executing each active region of a [`Program`] the way its PEs would —
//! every Gemv PE `(r, c)` multiplies only its own weight tile (`rows_of(r)` ×
//! `cols_of(c)` of the region's fused matrix) by the input slice its column
//! received; partial sums are combined in exactly the order of the region's
//! [`Reduce::rounds`]; the norm prologue all-reduces its statistics over the
//! column heads with the `norm` route's tree; the fused epilogue runs at each
//! row root on that row's slice only; attention PEs hold their positions of the
//! KV cache and merge partial softmax states (log-sum-exp rescaling) along the
//! rows and then down column 0; and data moves between regions only as the
//! routes' slices (`out_slice` → `cols_of`, head blocks, row roots). A wrong
//! tiling, fusion order, route or KV slot therefore gives wrong numbers (or a
//! typed error naming the region), which the dense reference
//! ([`crate::reference`]) exposes.
//!
//! Conventions it relies on (the compiler's side of the contract): a region's
//! `ops` list the fused graph ops in graph order; a Gemv stacks the rows of its
//! MatMuls in listed order, or with `glu` interleaves the first two (row `2i`
//! from the first, `2i+1` from the second) and the root computes
//! `act(even) · odd`; a Norm before the MatMuls is the prologue; everything
//! after is the epilogue. All arithmetic is fp32 whatever the program's dtypes
//! (this engine checks the partitioning, not quantisation), except a Gemv's
//! accumulator when the region says `acc=fp16`: each PE's partial sums and every
//! add of the reduction are then rounded to fp16 (round to nearest even), as
//! `@fmach`/`@faddh` would. A sum of `n` terms so accumulated is within
//! `γ_n = n·u / (1 − n·u)` (u = 2⁻¹¹, Higham's bound) of the exact sum, relative
//! to the sum of the terms' magnitudes, with `n = tile_k + w − 1` per output
//! (`tile_k` local AXPYs, `w − 1` adds along the row) — about 0.4% for `n = 8`
//! and 3.5% for `n = 72`; fp32 accumulation is the default for that reason.
//!
//! A prompt chunk (`Program::new_tokens = c > 1`, from
//! `wafer_compiler::prefill_chunk`) runs the same partition on `batch · c`
//! rows, sequence-major (row `b·c + i` is token `i` of sequence `b`, at
//! position `context − c + i`): every Gemv tile multiplies all rows, RoPE and
//! learned positions use each row's own position, each attention PE scores
//! the `c` queries against the positions it holds — query `i` only up to its
//! own position (causal) — and the `c` new K/V rows are appended in order, so
//! the program's `slot` is the chunk's last position. The output is the
//! logits of each sequence's last chunk token, as the prefill graph's
//! `last_token` gives the reference. A windowed (ring) cache that the chunk
//! would wrap is refused ([`FunctionalError::ChunkWindow`]): a later token's
//! K/V would overwrite a position an earlier query of the chunk still reads.
//!
//! Must not: time anything, choose or repair a mapping, or call the reference.
//! The KV state it advances keeps positions in the program's slot order, so it
//! is not interchangeable with the reference's state.

use crate::reference::{activate, argmax, elementwise, rope_angle, KvState, ReferenceError, Weights};
use ndarray::{concatenate, s, Array1, Array2, Array4, Axis};
use std::collections::BTreeMap;
use wafer_ir::{
    Graph, NormKind, Op, OpKind, Program, ProgramInfo, Reduce, Region, RegionId, RouteKind, TensorId, Work,
};

/// Why a program cannot be run functionally.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FunctionalError {
    #[error("the program is for batch {program_batch} x {program_new_tokens} new token(s) at context {program_context}; the graph is for batch {graph_batch} x {graph_new_tokens} at context {graph_context}")]
    Mismatch {
        program_batch: u64,
        program_new_tokens: u64,
        program_context: u64,
        graph_batch: u64,
        graph_new_tokens: u64,
        graph_context: u64,
    },
    #[error("{got} token ids given for {expected} (batch x new tokens, sequence-major)")]
    TokenCount { expected: u64, got: usize },
    #[error("region {region} `{name}`: {why}")]
    Region { region: RegionId, name: String, why: String },
    #[error(transparent)]
    Weights(#[from] ReferenceError),
    #[error("no active Gemv region with `argmax` ends the program, so it samples nothing")]
    NoSample,
    #[error("region {region}: a chunk of {chunk} tokens at context {context} wraps the {window}-position sliding-window ring, overwriting positions its earlier queries still read; run chunks only while the context fits the window")]
    ChunkWindow { region: RegionId, chunk: u64, window: u64, context: u64 },
}

/// What one functional step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionalOutput {
    /// `[batch, vocab]`, read back from the LM head's row roots: each
    /// sequence's row (its chunk's last token in a prompt chunk).
    pub logits: Array2<f32>,
    /// The token each sequence's arg-max reduction delivered to the head's
    /// PE (0, 0) (for its chunk's last token).
    pub sampled: Vec<u64>,
    /// Slices moved between PEs (route pieces and reduction transfers).
    pub transfers: u64,
}

/// Elements `[lo, hi)` of a vector, for batch rows `row0..row0 + v.nrows()`
/// (every row, except an attention sub-block's line, which holds its
/// sequences only): `v` is `[rows, hi - lo]`.
#[derive(Debug, Clone)]
struct Piece {
    lo: u64,
    hi: u64,
    row0: usize,
    v: Array2<f32>,
}

/// A destination slice `[lo, hi)` filled from routed pieces, counting how
/// often each element arrived.
struct Gather {
    lo: u64,
    hi: u64,
    /// Batch rows `[r0, r1)` it gathers.
    r0: usize,
    r1: usize,
    v: Array2<f32>,
    /// Arrivals per (row, element), row-major.
    got: Vec<u32>,
}

impl Gather {
    fn new(batch: usize, slice: (u64, u64)) -> Self {
        Gather::rows((0, batch), slice)
    }
    /// A slice for batch rows `[r0, r1)` only (an attention sub-block's sequences).
    fn rows((r0, r1): (usize, usize), (lo, hi): (u64, u64)) -> Self {
        let n = hi.saturating_sub(lo) as usize;
        let m = r1.saturating_sub(r0);
        Gather { lo, hi, r0, r1, v: Array2::zeros((m, n)), got: vec![0; m * n] }
    }
    /// Copies the part of `p` that falls in this slice and these rows; true if anything moved.
    fn put(&mut self, p: &Piece) -> bool {
        let (plo, phi) = (p.lo as i128, p.hi as i128);
        let a = plo.max(self.lo as i128);
        let b = phi.min(self.hi as i128);
        let (ra, rb) = (p.row0.max(self.r0), (p.row0 + p.v.nrows()).min(self.r1));
        if a >= b || ra >= rb {
            return false;
        }
        let (src_a, src_b) = ((a - plo) as usize, (b - plo) as usize);
        let (dst_a, dst_b) = ((a - self.lo as i128) as usize, (b - self.lo as i128) as usize);
        self.v
            .slice_mut(s![ra - self.r0..rb - self.r0, dst_a..dst_b])
            .assign(&p.v.slice(s![ra - p.row0..rb - p.row0, src_a..src_b]));
        let n = self.v.ncols();
        for r in ra - self.r0..rb - self.r0 {
            for g in &mut self.got[r * n + dst_a..r * n + dst_b] {
                *g += 1;
            }
        }
        true
    }
    /// The assembled slice, or the first element that arrived other than once.
    fn finish(self) -> Result<Array2<f32>, String> {
        let n = self.v.ncols().max(1);
        if let Some((i, &k)) = self.got.iter().enumerate().find(|(_, &k)| k != 1) {
            let what = if k == 0 { "never arrived".to_string() } else { format!("arrived {k} times") };
            return Err(format!(
                "element {} of slice [{}, {}) for batch row {} {what}",
                self.lo + (i % n) as u64,
                self.lo,
                self.hi,
                self.r0 + i / n
            ));
        }
        Ok(self.v)
    }
}

/// A region's output as held on the mesh: one piece per output line.
#[derive(Debug, Clone)]
struct RegionOut {
    lines: Vec<Piece>,
    /// Graph tensors the output vector stacks, in order.
    tensors: Vec<TensorId>,
}

/// A stacked segment of a region's output: the graph tensor now held there.
#[derive(Debug, Clone, Copy)]
struct Seg {
    t: TensorId,
    off: u64,
}

struct Ctx<'a> {
    g: &'a Graph,
    w: &'a Weights,
    by_name: BTreeMap<&'a str, &'a Op>,
    /// Rows every activation carries: sequences × new tokens.
    batch: usize,
    /// New tokens per sequence (`Program::new_tokens`).
    n: usize,
    /// Position of the step's last token (`context − 1`).
    last_pos: u64,
    transfers: u64,
}

type Res<T> = Result<T, FunctionalError>;

fn rerr(id: usize, r: &Region, why: impl Into<String>) -> FunctionalError {
    FunctionalError::Region { region: RegionId(id as u32), name: r.name.clone(), why: why.into() }
}

impl Ctx<'_> {
    /// Position of activation row `r`: token `r mod n` of its sequence.
    fn pos_of(&self, r: usize) -> u64 {
        self.last_pos + 1 - self.n as u64 + (r % self.n) as u64
    }
    fn weight_name(&self, t: TensorId) -> &str {
        &self.g.tensor(t).name
    }
    fn matrix(&self, t: TensorId) -> Res<Array2<f32>> {
        let ten = self.g.tensor(t);
        Ok(self.w.matrix(&ten.name, &ten.shape)?.to_owned())
    }
    fn vector(&self, t: TensorId) -> Res<Array1<f32>> {
        let ten = self.g.tensor(t);
        let len = ten.shape.first().copied().unwrap_or(0);
        Ok(self.w.vector(&ten.name, len)?.to_owned())
    }
}

/// A partial softmax state of one attention PE: running max, sum and `P·V`,
/// per batch row and query head of the group.
#[derive(Clone)]
struct AttnState {
    m: Array2<f32>,
    l: Array2<f32>,
    acc: ndarray::Array3<f32>,
}

impl AttnState {
    fn empty(b: usize, g: usize, d: usize) -> Self {
        AttnState {
            m: Array2::from_elem((b, g), f32::NEG_INFINITY),
            l: Array2::zeros((b, g)),
            acc: ndarray::Array3::zeros((b, g, d)),
        }
    }
    /// Folds `o` into `self` with log-sum-exp rescaling.
    fn merge(&mut self, o: &AttnState) {
        for ((b, g), m1) in self.m.clone().indexed_iter() {
            let m2 = o.m[[b, g]];
            let m = m1.max(m2);
            if m == f32::NEG_INFINITY {
                continue;
            }
            let (s1, s2) = ((m1 - m).exp(), (m2 - m).exp());
            self.l[[b, g]] = self.l[[b, g]] * s1 + o.l[[b, g]] * s2;
            let mut a = self.acc.slice_mut(s![b, g, ..]);
            a.zip_mut_with(&o.acc.slice(s![b, g, ..]), |x, &y| *x = *x * s1 + y * s2);
            self.m[[b, g]] = m;
        }
    }
}

/// Bytes a functional check of `g`'s model over `steps` decode steps needs,
/// roughly: every weight in f32 two and a half times over (the seeded
/// weights, and the tiles and intermediate arrays of the two engines: gpt2's
/// 0.5 GB of f32 weights peak at 1.15 GB resident), both engines' KV caches
/// in f32 at the last step's context, and a margin for one step's
/// activations. `g` is the graph of any one step.
pub fn estimate_functional_bytes(g: &Graph, steps: u64) -> u64 {
    let params = g
        .tensors
        .iter()
        .filter(|t| t.kind == wafer_ir::TensorKind::Weight)
        .fold(0u64, |acc, t| acc.saturating_add(t.elems()));
    // K and V elements one position adds, over all layers and sequences.
    let kv_per_pos = g
        .ops
        .iter()
        .filter(|op| matches!(op.kind, wafer_ir::OpKind::KvAppend { .. }))
        .map(|op| g.tensor(op.inputs[0]).elems().saturating_add(g.tensor(op.inputs[1]).elems()))
        .fold(0u64, u64::saturating_add);
    let positions = steps.max(g.context);
    let kv = kv_per_pos.saturating_mul(positions).saturating_mul(2);
    params.saturating_mul(5).div_ceil(2).saturating_add(kv).saturating_mul(4).saturating_add(64 << 20)
}

/// Refuses a functional check whose [`estimate_functional_bytes`] is above `max_memory_bytes`.
pub fn check_functional_budget(g: &Graph, steps: u64, max_memory_bytes: u64) -> Result<(), wafer_ir::ResourceError> {
    wafer_ir::ResourceError::check_memory(
        &format!("the functional check of {} ({steps} step(s), weights in f32)", g.name),
        estimate_functional_bytes(g, steps),
        max_memory_bytes,
    )
}

/// Runs one step of the verified program `p` (built from the graph `g` of
/// the same step: a decode graph, or for a prompt chunk of `c` tokens the
/// prefill graph of `c` tokens at the same context) on `weights`, with
/// `new_tokens` token ids per sequence (sequence-major), advancing `kv` (this
/// engine's own slot-ordered state; empty before the first step).
pub fn run_functional(
    p: &Program,
    _info: &ProgramInfo,
    g: &Graph,
    weights: &Weights,
    tokens: &[u64],
    kv: &mut KvState,
) -> Result<FunctionalOutput, FunctionalError> {
    let n = p.new_tokens.max(1);
    if p.batch != g.batch || p.context != g.context || n != g.new_tokens.max(1) {
        return Err(FunctionalError::Mismatch {
            program_batch: p.batch,
            program_new_tokens: p.new_tokens,
            program_context: p.context,
            graph_batch: g.batch,
            graph_new_tokens: g.new_tokens,
            graph_context: g.context,
        });
    }
    let rows = p.batch.saturating_mul(n);
    if tokens.len() as u64 != rows {
        return Err(FunctionalError::TokenCount { expected: rows, got: tokens.len() });
    }
    let mut cx = Ctx {
        g,
        w: weights,
        by_name: g.ops.iter().map(|o| (o.name.as_str(), o)).collect(),
        batch: rows as usize,
        n: n as usize,
        last_pos: p.context.saturating_sub(1),
        transfers: 0,
    };
    let mut outs: Vec<Option<RegionOut>> = vec![None; p.regions.len()];
    let mut sample: Option<(Array2<f32>, Vec<u64>)> = None;
    for (id, reg) in p.regions.iter().enumerate() {
        if !reg.active {
            continue;
        }
        let ops: Vec<&Op> = reg
            .ops
            .iter()
            .map(|n| {
                cx.by_name
                    .get(n.as_str())
                    .copied()
                    .ok_or_else(|| rerr(id, reg, format!("lists op `{n}`, which the graph lacks")))
            })
            .collect::<Res<_>>()?;
        let mut forward: Vec<&RegionOut> = Vec::new();
        let mut residual: Vec<&RegionOut> = Vec::new();
        for rt in p.routes.iter().filter(|rt| rt.dst.0 as usize == id && !rt.kind.is_collective()) {
            let src = outs
                .get(rt.src.0 as usize)
                .and_then(|o| o.as_ref())
                .ok_or_else(|| rerr(id, reg, format!("reads region {}, which has not produced output", rt.src)))?;
            match rt.kind {
                RouteKind::Residual => residual.push(src),
                _ => forward.push(src),
            }
        }
        let out = match reg.work {
            Work::Embedding { .. } => run_embedding(&mut cx, id, reg, &ops, tokens)?,
            Work::Attention { .. } => run_attention(&mut cx, id, reg, &ops, &forward, kv)?,
            Work::Gemm { .. } => {
                return Err(rerr(
                    id,
                    reg,
                    String::from(
                        "is a gemm region: a kernel-level work with resident operands, which no decode step holds",
                    ),
                ))
            }
            Work::Gemv { .. } => {
                let (o, s) = run_gemv(&mut cx, id, reg, &ops, &forward, &residual)?;
                if s.is_some() {
                    sample = s;
                }
                o
            }
        };
        outs[id] = Some(out);
    }
    let (logits, sampled) = sample.ok_or(FunctionalError::NoSample)?;
    // Each sequence's last token (every row in a decode step).
    let last: Vec<usize> = (0..p.batch as usize).map(|b| b * cx.n + cx.n - 1).collect();
    let logits = logits.select(Axis(0), &last);
    let sampled = last.iter().map(|&r| sampled[r]).collect();
    Ok(FunctionalOutput { logits, sampled, transfers: cx.transfers })
}

/// The residual operand at a row root: the slice delivered there (in the
/// region's output coordinates) and the graph tensors the residual routes carry.
#[derive(Clone, Copy)]
struct Resid<'a> {
    piece: Option<&'a Piece>,
    tensors: &'a [TensorId],
}

/// Element-wise ops run at a line's root on the slices it holds. `resid`
/// (the residual slice delivered to this root, in the region's output
/// coordinates) feeds an `Add` whose other operand is not local.
fn epilogue(
    cx: &Ctx,
    id: usize,
    reg: &Region,
    ops: &[&Op],
    env: &mut BTreeMap<TensorId, Piece>,
    segs: &mut [Seg],
    resid: Resid,
) -> Res<()> {
    let Resid { piece: resid, tensors: resid_tensors } = resid;
    let e = |why: String| rerr(id, reg, why);
    for op in ops {
        let local = |k: usize| op.inputs.get(k).and_then(|t| env.get(t)).cloned();
        let mut produced: Vec<(TensorId, TensorId, Piece)> = Vec::new(); // (from, to, piece)
        match &op.kind {
            OpKind::Act { func } => {
                if let Some(x) = local(0) {
                    produced.push((op.inputs[0], op.outputs[0], Piece { v: x.v.mapv(|v| activate(*func, v)), ..x }));
                }
            }
            OpKind::Elementwise { func } => {
                if let Some(x) = local(0) {
                    produced.push((op.inputs[0], op.outputs[0], Piece { v: x.v.mapv(|v| elementwise(*func, v)), ..x }));
                }
            }
            OpKind::GatedAct { func } => match (local(0), local(1)) {
                (Some(gt), Some(up)) if gt.lo == up.lo && gt.hi == up.hi => {
                    let v = gt.v.mapv(|v| activate(*func, v)) * &up.v;
                    produced.push((op.inputs[0], op.outputs[0], Piece { v, ..gt }));
                }
                (None, None) => {}
                _ => return Err(e(format!("`{}`: gate and up slices are not held together", op.name))),
            },
            OpKind::PosEmbedding => {
                if let Some(x) = local(0) {
                    let table = cx.matrix(op.inputs[1])?;
                    let mut v = x.v.clone();
                    for (r, mut row) in v.rows_mut().into_iter().enumerate() {
                        let pos = cx.pos_of(x.row0 + r);
                        if pos >= table.nrows() as u64 {
                            return Err(e(format!("`{}`: position {pos} beyond the table", op.name)));
                        }
                        row += &table.slice(s![pos as usize, x.lo as usize..x.hi as usize]);
                    }
                    produced.push((op.inputs[0], op.outputs[0], Piece { v, ..x }));
                }
            }
            OpKind::Add => match (local(0), local(1)) {
                (Some(a), Some(b)) if a.lo == b.lo && a.hi == b.hi => {
                    produced.push((op.inputs[0], op.outputs[0], Piece { v: &a.v + &b.v, ..a }));
                }
                (Some(x), None) | (None, Some(x)) => {
                    let (li, oi) = if local(0).is_some() { (0, 1) } else { (1, 0) };
                    if !resid_tensors.contains(&op.inputs[oi]) {
                        return Err(e(format!(
                            "`{}` adds `{}`, which no residual route into this region carries",
                            op.name,
                            cx.g.tensor(op.inputs[oi]).name
                        )));
                    }
                    let seg = segs.iter().find(|s| s.t == op.inputs[li]).copied();
                    let (Some(seg), Some(r)) = (seg, resid) else {
                        return Err(e(format!("`{}`: no residual slice at this row root", op.name)));
                    };
                    let (a, b) = (seg.off + x.lo, seg.off + x.hi);
                    if a < r.lo || b > r.hi {
                        return Err(e(format!("`{}`: residual holds [{}, {}), needs [{a}, {b})", op.name, r.lo, r.hi)));
                    }
                    let add = r.v.slice(s![.., (a - r.lo) as usize..(b - r.lo) as usize]);
                    produced.push((op.inputs[li], op.outputs[0], Piece { v: &x.v + &add, ..x }));
                }
                (None, None) => {}
                _ => return Err(e(format!("`{}`: operand slices differ", op.name))),
            },
            OpKind::Norm { kind, groups, eps } => {
                if let Some(x) = local(0) {
                    let gamma = cx.vector(op.inputs[1])?;
                    let beta = if op.inputs.len() > 2 { Some(cx.vector(op.inputs[2])?) } else { None };
                    let d = gamma.len() as u64;
                    if d == 0 || x.lo % d != 0 || x.hi % d != 0 || x.hi / d > *groups {
                        return Err(e(format!(
                            "`{}` normalises groups of {d} features but this root holds [{}, {}): a group spans rows",
                            op.name, x.lo, x.hi
                        )));
                    }
                    let mut v = x.v.clone();
                    for mut row in v.rows_mut() {
                        for mut grp in row.exact_chunks_mut(d as usize) {
                            let n = d as f32;
                            let mean = if *kind == NormKind::Layer { grp.sum() / n } else { 0.0 };
                            let var = grp.iter().map(|&t| (t - mean) * (t - mean)).sum::<f32>() / n;
                            let inv = 1.0 / (var + *eps as f32).sqrt();
                            for (j, t) in grp.iter_mut().enumerate() {
                                let gm = if *kind == (NormKind::Rms { unit_offset: true }) {
                                    1.0 + gamma[j]
                                } else {
                                    gamma[j]
                                };
                                *t = (*t - mean) * inv * gm + beta.as_ref().map_or(0.0, |b| b[j]);
                            }
                        }
                    }
                    produced.push((op.inputs[0], op.outputs[0], Piece { v, ..x }));
                }
            }
            OpKind::Rope { heads: _, kv_heads: _, head_dim, rotary_dim, theta } => {
                let half = rotary_dim / 2;
                for k in 0..2 {
                    let Some(x) = local(k) else { continue };
                    let mut v = x.v.clone();
                    for el in x.lo..x.hi {
                        let i = el % head_dim;
                        if i >= *rotary_dim {
                            continue;
                        }
                        let (first, partner) = if i < half { (true, el + half) } else { (false, el - half) };
                        if partner < x.lo || partner >= x.hi {
                            return Err(e(format!(
                                "`{}`: element {el} and its rotary partner {partner} are on different rows ([{}, {}) here)",
                                op.name, x.lo, x.hi
                            )));
                        }
                        let (ia, ib) = ((el - x.lo) as usize, (partner - x.lo) as usize);
                        for b in 0..v.nrows() {
                            let pos = cx.pos_of(x.row0 + b);
                            let (c, sn) = rope_angle(*theta, *rotary_dim, if first { i } else { i - half }, pos);
                            let (me, other) = (x.v[[b, ia]], x.v[[b, ib]]);
                            // first of the pair: a·cos − b·sin; second: b·cos + a·sin.
                            v[[b, ia]] = if first { me * c - other * sn } else { me * c + other * sn };
                        }
                    }
                    produced.push((op.inputs[k], op.outputs[k], Piece { v, ..x }));
                }
            }
            other => {
                return Err(e(format!("`{}` ({}) cannot run in a fused epilogue", op.name, other.mnemonic())));
            }
        }
        for (from, to, piece) in produced {
            for sg in segs.iter_mut().filter(|sg| sg.t == from) {
                sg.t = to;
            }
            env.insert(to, piece);
        }
    }
    Ok(())
}

/// The output slice of a line: the segments' current pieces, side by side.
fn assemble(
    id: usize,
    reg: &Region,
    batch: usize,
    (lo, hi): (u64, u64),
    env: &BTreeMap<TensorId, Piece>,
    segs: &[Seg],
) -> Res<Piece> {
    let mut parts = Vec::new();
    let mut at = lo;
    for sg in segs {
        if let Some(pc) = env.get(&sg.t) {
            if sg.off + pc.lo != at {
                return Err(rerr(id, reg, format!("output slice [{lo}, {hi}) has a gap or overlap at {at}")));
            }
            at = sg.off + pc.hi;
            parts.push(pc.v.view());
        }
    }
    if at != hi {
        return Err(rerr(id, reg, format!("output slice [{lo}, {hi}) ends at {at}")));
    }
    let v = if parts.is_empty() {
        Array2::zeros((batch, 0))
    } else {
        concatenate(Axis(1), &parts).map_err(|x| rerr(id, reg, x.to_string()))?
    };
    Ok(Piece { lo, hi, row0: 0, v })
}

fn run_embedding(cx: &mut Ctx, id: usize, reg: &Region, ops: &[&Op], tokens: &[u64]) -> Res<RegionOut> {
    let Work::Embedding { vocab, hidden, rows_per_pe, .. } = reg.work else { unreachable!("checked by caller") };
    let e = |why: String| rerr(id, reg, why);
    let emb = match ops.first() {
        Some(o) if o.kind == OpKind::Embedding => *o,
        _ => return Err(e("an Embedding region must list the `embedding` op first".into())),
    };
    let table = cx.matrix(emb.inputs[1])?;
    if table.dim() != (vocab as usize, hidden as usize) {
        return Err(e(format!(
            "work says a {vocab}x{hidden} table, weight `{}` is {:?}",
            cx.weight_name(emb.inputs[1]),
            table.dim()
        )));
    }
    let mut v = Array2::zeros((cx.batch, hidden as usize));
    for (b, &t) in tokens.iter().enumerate() {
        if t >= vocab {
            return Err(e(format!("token {t} is outside the vocabulary of {vocab}")));
        }
        // The PE holding table row `t` (row-major, `rows_per_pe` each) sends it.
        let pe = t / rows_per_pe.max(1);
        if pe >= reg.rect.pes() {
            return Err(e(format!("row {t} would live on PE {pe} of {}", reg.rect.pes())));
        }
        v.row_mut(b).assign(&table.row(t as usize));
    }
    let mut env = BTreeMap::from([(emb.outputs[0], Piece { lo: 0, hi: hidden, row0: 0, v })]);
    let mut segs = vec![Seg { t: emb.outputs[0], off: 0 }];
    epilogue(cx, id, reg, &ops[1..], &mut env, &mut segs, Resid { piece: None, tensors: &[] })?;
    let line = assemble(id, reg, cx.batch, (0, hidden), &env, &segs)?;
    Ok(RegionOut { lines: vec![line], tensors: segs.iter().map(|s| s.t).collect() })
}

#[allow(clippy::type_complexity)]
fn run_gemv(
    cx: &mut Ctx,
    id: usize,
    reg: &Region,
    ops: &[&Op],
    forward: &[&RegionOut],
    residual: &[&RegionOut],
) -> Res<(RegionOut, Option<(Array2<f32>, Vec<u64>)>)> {
    let Work::Gemv { n, k, reduce, glu, norm, argmax: is_argmax, acc, mac, .. } = reg.work else {
        unreachable!("checked by caller")
    };
    let e = |why: String| rerr(id, reg, why);
    if !mac {
        return Err(e(
            "skips its multiply-accumulate (`mac=0`, a timing-only kernel replay): nothing to compute".into()
        ));
    }
    let f16 = acc == wafer_ir::DType::F16;
    let round = |a: &mut Array2<f32>| {
        if f16 {
            a.mapv_inplace(|v| half::f16::from_f32(v).to_f32());
        }
    };
    let batch = cx.batch;
    let (w, h) = (reg.rect.w, reg.rect.h);

    // Split the op list: prologue norm, MatMuls, epilogue.
    let first_mm = ops.iter().position(|o| o.kind == OpKind::MatMul).ok_or_else(|| e("lists no MatMul".into()))?;
    let end_mm = first_mm + ops[first_mm..].iter().take_while(|o| o.kind == OpKind::MatMul).count();
    let (pro, mats, epi) = (&ops[..first_mm], &ops[first_mm..end_mm], &ops[end_mm..]);
    let pro_norm = match pro {
        [] => None,
        [o] if matches!(o.kind, OpKind::Norm { .. }) => Some(*o),
        _ => return Err(e("only one Norm may precede the MatMuls (the prologue)".into())),
    };
    if pro_norm.is_some() != norm {
        return Err(e(format!(
            "work says norm={norm} but the op list {} a prologue Norm",
            if norm { "lacks" } else { "has" }
        )));
    }
    let x_in = mats[0].inputs[0];
    if mats.iter().any(|m| m.inputs[0] != x_in) {
        return Err(e("fused MatMuls read different inputs".into()));
    }
    if let Some(nm) = pro_norm {
        if nm.outputs[0] != x_in {
            return Err(e(format!("prologue `{}` does not feed the MatMuls", nm.name)));
        }
    }
    let mut ws = Vec::new();
    for m in mats {
        let wm = cx.matrix(m.inputs[1])?;
        if wm.ncols() as u64 != k {
            return Err(e(format!("`{}` has {} inputs, the work says k={k}", m.name, wm.ncols())));
        }
        let bias = if m.inputs.len() > 2 { Some(cx.vector(m.inputs[2])?) } else { None };
        ws.push((wm, bias));
    }
    let total: u64 = ws.iter().map(|(wm, _)| wm.nrows() as u64).sum();
    if total != n {
        return Err(e(format!("fused MatMuls have {total} rows, the work says n={n}")));
    }
    // The fused matrix and bias, rows as the compiler places them.
    let mut wf = Array2::<f32>::zeros((n as usize, k as usize));
    let mut bf = Array1::<f32>::zeros(n as usize);
    let mut segs0: Vec<Seg> = Vec::new();
    if glu {
        let gated = match (mats.len(), epi.first()) {
            (2, Some(ga)) if matches!(ga.kind, OpKind::GatedAct { .. }) => *ga,
            _ => return Err(e("a glu region fuses exactly two MatMuls followed by a GatedAct".into())),
        };
        let mut ins = gated.inputs.clone();
        ins.sort();
        let mut mo = vec![mats[0].outputs[0], mats[1].outputs[0]];
        mo.sort();
        if ins != mo {
            return Err(e(format!("`{}` does not combine the two fused MatMuls", gated.name)));
        }
        if ws[0].0.nrows() != ws[1].0.nrows() {
            return Err(e("gate and up projections differ in size".into()));
        }
        for (j, (wm, b)) in ws.iter().enumerate() {
            for i in 0..wm.nrows() {
                wf.row_mut(2 * i + j).assign(&wm.row(i));
                bf[2 * i + j] = b.as_ref().map_or(0.0, |b| b[i]);
            }
        }
        segs0.push(Seg { t: gated.outputs[0], off: 0 });
    } else {
        let mut off = 0u64;
        for ((wm, b), m) in ws.iter().zip(mats) {
            let r = wm.nrows();
            wf.slice_mut(s![off as usize..off as usize + r, ..]).assign(wm);
            if let Some(b) = b {
                bf.slice_mut(s![off as usize..off as usize + r]).assign(b);
            }
            segs0.push(Seg { t: m.outputs[0], off });
            off += r as u64;
        }
    }

    // Inputs: column slices at the column heads.
    let mut cols: Vec<Gather> = (0..w).map(|c| Gather::new(batch, reg.cols_of(c))).collect();
    for src in forward {
        for line in &src.lines {
            for g in cols.iter_mut() {
                if g.put(line) {
                    cx.transfers += 1;
                }
            }
        }
    }
    let mut xs: Vec<Array2<f32>> = Vec::with_capacity(w as usize);
    for (c, g) in cols.into_iter().enumerate() {
        xs.push(g.finish().map_err(|m| e(format!("input of column {c}: {m}")))?);
    }

    // Norm prologue: (sum, sum of squares) per column head, all-reduced along row 0.
    if let Some(nm) = pro_norm {
        let OpKind::Norm { kind, groups, eps } = nm.kind else { unreachable!("matched above") };
        if groups != 1 {
            return Err(e(format!("prologue `{}` normalises {groups} groups; only whole-vector norms fuse", nm.name)));
        }
        let gamma = cx.vector(nm.inputs[1])?;
        let beta = if nm.inputs.len() > 2 { Some(cx.vector(nm.inputs[2])?) } else { None };
        if gamma.len() as u64 != k {
            return Err(e(format!("prologue gamma has {} features, k={k}", gamma.len())));
        }
        let mut stats: Vec<(Array1<f32>, Array1<f32>)> =
            xs.iter().map(|x| (x.sum_axis(Axis(1)), x.mapv(|v| v * v).sum_axis(Axis(1)))).collect();
        for round in Reduce::Tree.rounds(w) {
            for (a, z) in round {
                let (sa, qa) = stats[a as usize].clone();
                stats[z as usize].0 += &sa;
                stats[z as usize].1 += &qa;
                cx.transfers += 1;
            }
        }
        let (sum, sq) = stats[0].clone(); // broadcast back along row 0
        let kf = k as f32;
        for (c, x) in xs.iter_mut().enumerate() {
            let (lo, hi) = reg.cols_of(c as u32);
            for (b, mut row) in x.rows_mut().into_iter().enumerate() {
                let (mean, inv) = if kind == NormKind::Layer {
                    let mean = sum[b] / kf;
                    (mean, 1.0 / (sq[b] / kf - mean * mean + eps as f32).sqrt())
                } else {
                    (0.0, 1.0 / (sq[b] / kf + eps as f32).sqrt())
                };
                for (j, v) in row.iter_mut().enumerate() {
                    let f = lo as usize + j;
                    let gm = if kind == (NormKind::Rms { unit_offset: true }) { 1.0 + gamma[f] } else { gamma[f] };
                    *v = (*v - mean) * inv * gm + beta.as_ref().map_or(0.0, |bt| bt[f]);
                }
            }
            debug_assert_eq!((hi - lo) as usize, x.ncols());
        }
    }

    // Residual slices delivered to each row root.
    let mut resid_tensors = Vec::new();
    let mut resid: Vec<Option<Piece>> = vec![None; h as usize];
    if !residual.is_empty() {
        for (r, slot) in resid.iter_mut().enumerate() {
            let sl = reg.out_slice(r as u32);
            if sl.0 >= sl.1 {
                continue;
            }
            let mut gth = Gather::new(batch, sl);
            for src in residual {
                for line in &src.lines {
                    if gth.put(line) {
                        cx.transfers += 1;
                    }
                }
            }
            let v = gth.finish().map_err(|m| e(format!("residual at row {r}: {m}")))?;
            *slot = Some(Piece { lo: sl.0, hi: sl.1, row0: 0, v });
        }
        for src in residual {
            resid_tensors.extend(src.tensors.iter().copied());
        }
    }

    // Each PE's partial sums, reduced along its row in the region's rounds.
    let rounds = reduce.rounds(w);
    let (mut epi_ops, sample_op): (Vec<&Op>, Option<&Op>) = (epi.to_vec(), None);
    if glu {
        epi_ops.remove(0); // the GatedAct is computed from the interleaved rows below
    }
    let sample_op = match epi_ops.last() {
        Some(o) if o.kind == OpKind::Sample => {
            let so = *o;
            epi_ops.pop();
            Some(so)
        }
        _ => sample_op,
    };
    if sample_op.is_some() != is_argmax {
        return Err(e(format!(
            "work says argmax={is_argmax} but the op list {} with `sample`",
            if is_argmax { "does not end" } else { "ends" }
        )));
    }
    let mut lines = Vec::with_capacity(h as usize);
    let mut final_segs = segs0.clone();
    for r in 0..h {
        let (lo, hi) = reg.rows_of(r);
        if lo >= hi {
            lines.push(Piece { lo: reg.out_slice(r).0, hi: reg.out_slice(r).0, row0: 0, v: Array2::zeros((batch, 0)) });
            continue;
        }
        let mut parts: Vec<Array2<f32>> = (0..w)
            .map(|c| {
                let (cl, ch) = reg.cols_of(c);
                let wt = wf.slice(s![lo as usize..hi as usize, cl as usize..ch as usize]);
                if f16 {
                    // One rounded AXPY per input element, as the PE accumulates.
                    let x = &xs[c as usize];
                    let mut part = Array2::<f32>::zeros((batch, (hi - lo) as usize));
                    for j in 0..wt.ncols() {
                        for b in 0..batch {
                            let xv = x[[b, j]];
                            for i in 0..wt.nrows() {
                                part[[b, i]] = half::f16::from_f32(part[[b, i]] + xv * wt[[i, j]]).to_f32();
                            }
                        }
                    }
                    part
                } else {
                    xs[c as usize].dot(&wt.t())
                }
            })
            .collect();
        for round_ in &rounds {
            for &(a, z) in round_ {
                let pa = parts[a as usize].clone();
                parts[z as usize] += &pa;
                round(&mut parts[z as usize]);
                cx.transfers += 1;
            }
        }
        let acc = &parts[reduce.root(w) as usize] + &bf.slice(s![lo as usize..hi as usize]);
        let mut env = BTreeMap::new();
        let mut segs = segs0.clone();
        if glu {
            if lo % 2 != 0 || hi % 2 != 0 {
                return Err(e(format!("row {r} holds rows [{lo}, {hi}), splitting a gate/up pair")));
            }
            let func = match epi[0].kind {
                OpKind::GatedAct { func } => func,
                _ => unreachable!("checked above"),
            };
            let half = ((hi - lo) / 2) as usize;
            let v =
                Array2::from_shape_fn((batch, half), |(b, i)| activate(func, acc[[b, 2 * i]]) * acc[[b, 2 * i + 1]]);
            env.insert(segs[0].t, Piece { lo: lo / 2, hi: hi / 2, row0: 0, v });
        } else {
            for (sg, (wm, _)) in segs.iter().zip(&ws) {
                let (a, b) = (lo.max(sg.off), hi.min(sg.off + wm.nrows() as u64));
                if a < b {
                    let v = acc.slice(s![.., (a - lo) as usize..(b - lo) as usize]).to_owned();
                    env.insert(sg.t, Piece { lo: a - sg.off, hi: b - sg.off, row0: 0, v });
                }
            }
        }
        let rs = Resid { piece: resid[r as usize].as_ref(), tensors: &resid_tensors };
        epilogue(cx, id, reg, &epi_ops, &mut env, &mut segs, rs)?;
        lines.push(assemble(id, reg, batch, reg.out_slice(r), &env, &segs)?);
        final_segs = segs;
    }
    let tensors: Vec<TensorId> = final_segs.iter().map(|s| s.t).collect();
    let Some(so) = sample_op else {
        return Ok((RegionOut { lines, tensors }, None));
    };
    // Arg-max: each row root's best (value, index), tree-reduced down column 0.
    if final_segs.len() != 1 || so.inputs[0] != final_segs[0].t {
        return Err(e(format!("`{}` does not sample the region's output", so.name)));
    }
    let mut best: Vec<Vec<Option<(f32, u64)>>> = lines
        .iter()
        .map(|pc| {
            (0..batch)
                .map(|b| {
                    if pc.hi > pc.lo {
                        let i = argmax(pc.v.row(b));
                        Some((pc.v[[b, i as usize]], pc.lo + i))
                    } else {
                        None
                    }
                })
                .collect()
        })
        .collect();
    for round in Reduce::Tree.rounds(h) {
        for (a, z) in round {
            let from = best[a as usize].clone();
            for (x, y) in best[z as usize].iter_mut().zip(from) {
                *x = match (*x, y) {
                    (Some(p), Some(q)) => Some(if q.0 > p.0 || (q.0 == p.0 && q.1 < p.1) { q } else { p }),
                    (p, q) => p.or(q),
                };
            }
            cx.transfers += 1;
        }
    }
    let sampled: Vec<u64> = best[0].iter().map(|x| x.map_or(0, |v| v.1)).collect();
    let views: Vec<_> = lines.iter().map(|l| l.v.view()).collect();
    let logits = concatenate(Axis(1), &views).map_err(|x| e(x.to_string()))?;
    let tok = Array2::from_shape_fn((batch, 1), |(b, _)| sampled[b] as f32);
    Ok((
        RegionOut { lines: vec![Piece { lo: 0, hi: 1, row0: 0, v: tok }], tensors: so.outputs.clone() },
        Some((logits, sampled)),
    ))
}

fn run_attention(
    cx: &mut Ctx,
    id: usize,
    reg: &Region,
    ops: &[&Op],
    forward: &[&RegionOut],
    kv: &mut KvState,
) -> Res<RegionOut> {
    let Work::Attention { kv_heads, group, head_dim, positions, slot, pos_per_pe, reduce, batch_split, .. } = reg.work
    else {
        unreachable!("checked by caller")
    };
    let e = |why: String| rerr(id, reg, why);
    // Sequences (one KV cache each) and new tokens per sequence: activation
    // row `b·n + i` is token `i` of sequence `b`.
    let n = cx.n;
    let batch = cx.batch / n;
    let (hk, gq, d) = (kv_heads as usize, group as usize, head_dim as usize);
    // kv_append, scores, (softcap), softmax, value.
    let kinds: Vec<&str> = ops.iter().map(|o| o.kind.mnemonic()).collect();
    let softcap = match kinds.as_slice() {
        ["kv_append", "attn_scores", "softmax", "attn_value"] => None,
        ["kv_append", "attn_scores", "elementwise", "softmax", "attn_value"] => match ops[2].kind {
            OpKind::Elementwise { func } => Some(func),
            _ => None,
        },
        _ => {
            return Err(e(format!(
                "an Attention region lists kv_append, scores, (softcap), softmax, value; got {kinds:?}"
            )))
        }
    };
    let (app, scores, value) = (ops[0], ops[1], ops[ops.len() - 1]);
    match scores.kind {
        OpKind::AttnScores { heads, kv_heads: hk2, head_dim: d2 }
            if heads == kv_heads * group && hk2 == kv_heads && d2 == head_dim => {}
        _ => {
            return Err(e(format!(
                "work ({kv_heads} KV heads x group {group}, head_dim {head_dim}) differs from `{}`",
                scores.name
            )))
        }
    }
    // This step's q, k, v per head sub-block (line `h · split + j`: sub-block
    // `j` of head `h`, its sequences' rows only), as the forward routes deliver them.
    let (qw, kbase) = (group * head_dim, kv_heads * group * head_dim);
    let split = batch_split.max(1);
    let seqs = |line: u64| {
        let (lo, hi) = reg.work.seq_range(line % split, batch as u64);
        (lo as usize * n, hi as usize * n)
    };
    let mut gathers: Vec<[Gather; 3]> = (0..kv_heads * split)
        .map(|line| {
            let (hh, rows) = (line / split, seqs(line));
            [
                Gather::rows(rows, (hh * qw, (hh + 1) * qw)),
                Gather::rows(rows, (kbase + hh * head_dim, kbase + (hh + 1) * head_dim)),
                Gather::rows(rows, (kbase + (kv_heads + hh) * head_dim, kbase + (kv_heads + hh + 1) * head_dim)),
            ]
        })
        .collect();
    for src in forward {
        for line in &src.lines {
            for gs in gathers.iter_mut() {
                for g in gs.iter_mut() {
                    if g.put(line) {
                        cx.transfers += 1;
                    }
                }
            }
        }
    }
    let mut qkv: Vec<[Array2<f32>; 3]> = Vec::with_capacity(hk * split as usize);
    for (line, [q, k, v]) in gathers.into_iter().enumerate() {
        let (hh, j) = (line as u64 / split, line as u64 % split);
        let f =
            |g: Gather, what: &str| g.finish().map_err(|m| e(format!("{what} of head {hh} (sequence group {j}): {m}")));
        qkv.push([f(q, "q")?, f(k, "k")?, f(v, "v")?]);
    }
    // The caches, slot-ordered; the new token goes to `slot`, a chunk's `n`
    // new tokens to the `n` positions ending at `slot`, in order.
    let names = [cx.g.tensor(app.inputs[2]).name.clone(), cx.g.tensor(app.inputs[3]).name.clone()];
    if let OpKind::KvAppend { window: Some(wnd) } = app.kind {
        if n > 1 && cx.last_pos + 1 > wnd {
            return Err(FunctionalError::ChunkWindow {
                region: RegionId(id as u32),
                chunk: n as u64,
                window: wnd,
                context: cx.last_pos + 1,
            });
        }
    }
    let mut caches = Vec::new();
    for (part, name) in names.iter().enumerate() {
        let mut c = kv.caches.get(name).cloned().unwrap_or_else(|| Array4::zeros((batch, hk, 0, d)));
        let (b0, h0, s0, d0) = c.dim();
        if (b0, h0, d0) != (batch, hk, d) {
            return Err(e(format!("KV state `{name}` is {:?}, expected [{batch}, {hk}, _, {d}]", c.dim())));
        }
        // The chunk's first position; a decode step's (n = 1) is `slot`.
        let Some(first) = (slot as usize + 1).checked_sub(n) else {
            return Err(e(format!("slot {slot} cannot be the last of a chunk of {n} positions")));
        };
        if first == s0 {
            let mut grown = Array4::zeros((batch, hk, s0 + n, d));
            grown.slice_mut(s![.., .., ..s0, ..]).assign(&c);
            c = grown;
        } else if first > s0 || n > 1 {
            return Err(e(format!(
                "the new positions [{first}, {slot}] do not follow the {s0} positions `{name}` holds"
            )));
        }
        // Each sub-block's slot holder appends its sequences' new K/V, token by token.
        for (line, parts) in qkv.iter().enumerate() {
            let ((r0, r1), hh) = (seqs(line as u64), line / split as usize);
            for r in r0..r1 {
                let (b, i) = (r / n, r % n);
                c.slice_mut(s![b, hh, first + i, ..]).assign(&parts[1 + part].row(r - r0));
            }
        }
        if c.dim().2 as u64 != positions {
            return Err(e(format!("work attends over {positions} positions, `{name}` holds {}", c.dim().2)));
        }
        caches.push(c);
    }
    let scale = 1.0 / (head_dim as f32).sqrt();
    let (w, rph) = (reg.rect.w, reg.work.block_rows());
    let mut lines = Vec::with_capacity(qkv.len());
    for (line, parts) in qkv.iter().enumerate() {
        let ((r0, r1), hh) = (seqs(line as u64), line / split as usize);
        let q = &parts[0];
        // Per PE of the sub-block (row-major), its positions' partial state
        // for the sub-block's sequences (state row `b - r0` is sequence `b`).
        let mut st: Vec<AttnState> = (0..(w * rph) as u64)
            .map(|i| {
                let mut s_ = AttnState::empty(r1 - r0, gq, d);
                let (p0, p1) = ((i * pos_per_pe).min(positions), ((i + 1) * pos_per_pe).min(positions));
                for row in r0..r1 {
                    // Query `t` of the chunk sees the positions up to its own
                    // (causal): all but the chunk's `n − 1 − t` later ones.
                    let (sb, b, t) = (row - r0, row / n, row % n);
                    let p1 = p1.min(positions.saturating_sub((n - 1 - t) as u64));
                    let p0 = p0.min(p1);
                    for g in 0..gq {
                        let qg = q.slice(s![sb, g * d..(g + 1) * d]);
                        let sc: Vec<f32> = (p0..p1)
                            .map(|p| {
                                let v = qg.dot(&caches[0].slice(s![b, hh, p as usize, ..])) * scale;
                                softcap.map_or(v, |f| elementwise(f, v))
                            })
                            .collect();
                        let Some(m) = sc.iter().copied().reduce(f32::max) else { continue };
                        s_.m[[sb, g]] = m;
                        for (j, &sv) in sc.iter().enumerate() {
                            let pw = (sv - m).exp();
                            s_.l[[sb, g]] += pw;
                            let vrow = caches[1].slice(s![b, hh, (p0 as usize) + j, ..]);
                            s_.acc.slice_mut(s![sb, g, ..]).scaled_add(pw, &vrow);
                        }
                    }
                }
                s_
            })
            .collect();
        let at = |r: u32, c: u32| (r * w + c) as usize;
        for r in 0..rph {
            for round in reduce.rounds(w) {
                for (a, z) in round {
                    let src = st[at(r, a)].clone();
                    st[at(r, z)].merge(&src);
                    cx.transfers += 1;
                }
            }
        }
        for round in Reduce::Chain.rounds(rph) {
            for (a, z) in round {
                let src = st[at(a, 0)].clone();
                st[at(z, 0)].merge(&src);
                cx.transfers += 1;
            }
        }
        let fin = &st[0];
        let v = Array2::from_shape_fn((r1 - r0, gq * d), |(b, j)| {
            let (g, dd) = (j / d, j % d);
            fin.acc[[b, g, dd]] / fin.l[[b, g]]
        });
        let (lo, hi) = reg.out_slice(line as u32);
        lines.push(Piece { lo, hi, row0: r0, v });
    }
    for (name, c) in names.into_iter().zip(caches) {
        kv.caches.insert(name, c);
    }
    Ok(RegionOut { lines, tensors: value.outputs.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_partial_softmax_states_equal_one_softmax() {
        // Scores 0.5, 2.0 | -1.0, 3.0 | (empty), values 1..=4 in one dimension.
        let (sc, vals) = ([0.5f32, 2.0, -1.0, 3.0], [1.0f32, 2.0, 3.0, 4.0]);
        let part = |idx: &[usize]| {
            let mut s = AttnState::empty(1, 1, 1);
            if let Some(m) = idx.iter().map(|&i| sc[i]).reduce(f32::max) {
                s.m[[0, 0]] = m;
                for &i in idx {
                    s.l[[0, 0]] += (sc[i] - m).exp();
                    s.acc[[0, 0, 0]] += (sc[i] - m).exp() * vals[i];
                }
            }
            s
        };
        let (mut a, b, c) = (part(&[0, 1]), part(&[2, 3]), part(&[]));
        a.merge(&c);
        a.merge(&b);
        let m = 3.0f32;
        let den: f32 = sc.iter().map(|s| (s - m).exp()).sum();
        let num: f32 = sc.iter().zip(vals).map(|(s, v)| (s - m).exp() * v).sum();
        assert!((a.acc[[0, 0, 0]] / a.l[[0, 0]] - num / den).abs() < 1e-6);
    }

    #[test]
    fn a_gather_rejects_missing_and_doubled_elements() {
        let piece =
            |lo: u64, hi: u64| Piece { lo, hi, row0: 0, v: Array2::from_elem((1, (hi - lo) as usize), lo as f32) };
        let mut g = Gather::new(1, (2, 6));
        assert!(g.put(&piece(0, 4)));
        assert!(!g.put(&piece(6, 9)));
        let e = g.finish().unwrap_err();
        assert!(e.contains("element 4") && e.contains("never arrived"), "{e}");
        let mut g = Gather::new(1, (2, 6));
        g.put(&piece(0, 5));
        g.put(&piece(4, 6));
        assert!(g.finish().unwrap_err().contains("arrived 2 times"));
        let mut g = Gather::new(1, (2, 6));
        g.put(&piece(0, 4));
        g.put(&piece(4, 8));
        assert_eq!(g.finish().unwrap().row(0).to_vec(), vec![0.0, 0.0, 4.0, 4.0]);
    }
}

//! Pass `fuse`: groups graph ops into the regions they will run in.
//!
//! Owns: which ops share a region — MatMuls reading the same input fuse into
//! one GEMV (q/k/v; gate/up, which become a GLU), a norm feeding GEMVs becomes
//! their prologue, element-wise ops (bias, RoPE, activation, residual add,
//! soft-cap, sampling) join the epilogue of the region producing their input,
//! and the KV append, scores, softmax and value ops form one attention region.
//! MoE experts become one GLU and one down GEMV per expert; the first `top_k`
//! are the active ones (latency does not depend on which experts a token picks
//! in this model, so the choice is fixed for determinism). Must not: size or place anything.

use crate::CompileError;
use std::collections::HashMap;
use wafer_ir::{ActFn, Elementwise, Graph, NormKind, OpId, OpKind, TensorId, TensorKind};

/// What a group computes, before tiling.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupKind {
    Embedding {
        vocab: u64,
        hidden: u64,
    },
    /// `align`: rows per PE row must be a multiple of it (2 for GLU pairs; the
    /// head size when the epilogue works per head: RoPE pairs, q/k norms).
    Gemv {
        n: u64,
        k: u64,
        glu: bool,
        norm: bool,
        argmax: bool,
        epilogue_ops: u32,
        align: u64,
    },
    Attention {
        kv_heads: u64,
        group: u64,
        head_dim: u64,
        positions: u64,
        slot: u64,
    },
}

/// A future region: its ops and where its inputs come from.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub layer: Option<u32>,
    pub ops: Vec<OpId>,
    pub kind: GroupKind,
    /// Group feeding the main input (GEMV column heads / attention heads).
    pub input: Option<usize>,
    /// Groups whose output the epilogue adds (residual stream, expert partial sums).
    pub residuals: Vec<usize>,
    pub active: bool,
    /// Weight bytes stored in this group.
    pub weight_bytes: u64,
}

fn ew_ops(kind: &OpKind) -> u32 {
    let act = |f: ActFn| match f {
        ActFn::Silu => 4,
        ActFn::Gelu | ActFn::GeluTanh => 8,
        ActFn::Relu => 1,
    };
    match kind {
        OpKind::Rope { .. } | OpKind::Elementwise { func: Elementwise::Softcap(_) } => 3,
        OpKind::Act { func } => act(*func),
        OpKind::GatedAct { func } => act(*func) + 1,
        OpKind::Norm { kind: NormKind::Layer, .. } => 7,
        OpKind::Norm { .. } => 4,
        OpKind::Add | OpKind::Elementwise { .. } | OpKind::MoeRouter { .. } => 1,
        _ => 0,
    }
}

fn role(g: &Graph, op: OpId) -> String {
    let name = &g.op(op).name;
    let last = name.rsplit('.').next().unwrap_or(name);
    match last {
        "q_proj" => "qkv".into(),
        "gate_proj" | "fc_in" | "up_proj" => "mlp_up".into(),
        "down_proj" | "fc_out" => "mlp_down".into(),
        other => other.to_string(),
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    let gcd = |mut x: u64, mut y: u64| {
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    a / gcd(a, b) * b
}

/// Groups `g`'s ops. The graph must have passed the verifier.
pub fn fuse(g: &Graph) -> Result<Vec<Group>, CompileError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut producer: HashMap<TensorId, usize> = HashMap::new();
    let mut pending_norm: HashMap<TensorId, OpId> = HashMap::new();
    let mut consumers: HashMap<TensorId, Vec<OpId>> = HashMap::new();
    for id in g.op_ids() {
        for &t in &g.op(id).inputs {
            consumers.entry(t).or_default().push(id);
        }
    }
    let mut done = vec![false; g.ops.len()];
    let unsupported =
        |op: OpId, why: &str| CompileError::Unsupported { op: g.op(op).name.clone(), why: why.to_string() };
    let prod = |producer: &HashMap<TensorId, usize>, t: TensorId| producer.get(&t).copied();
    for id in g.op_ids() {
        if done[id.0 as usize] {
            continue;
        }
        let op = g.op(id);
        let layer = op.layer;
        match &op.kind {
            OpKind::LastToken { .. } => return Err(unsupported(id, "prefill is not mapped onto the wafer yet")),
            OpKind::Embedding => {
                let t = g.tensor(op.inputs[1]);
                groups.push(Group {
                    name: "embed".into(),
                    layer,
                    ops: vec![id],
                    kind: GroupKind::Embedding { vocab: t.shape[0], hidden: t.shape[1] },
                    input: None,
                    residuals: vec![],
                    active: true,
                    weight_bytes: t.bytes(),
                });
                producer.insert(op.outputs[0], groups.len() - 1);
            }
            OpKind::PosEmbedding => {
                let gi =
                    prod(&producer, op.inputs[0]).ok_or_else(|| unsupported(id, "input not produced by a region"))?;
                groups[gi].ops.push(id);
                groups[gi].weight_bytes += g.tensor(op.inputs[1]).bytes();
                producer.insert(op.outputs[0], gi);
            }
            OpKind::Norm { groups: 1, .. }
                if consumers.get(&op.outputs[0]).is_some_and(|cs| {
                    cs.iter().all(|c| {
                        matches!(g.op(*c).kind, OpKind::MatMul | OpKind::MoeRouter { .. } | OpKind::MoeExperts { .. })
                    })
                }) =>
            {
                pending_norm.insert(op.outputs[0], id);
            }
            OpKind::MatMul | OpKind::MoeRouter { .. } => {
                let x = op.inputs[0];
                let mut mm = vec![id];
                if matches!(op.kind, OpKind::MatMul) {
                    let mut j = id.0 as usize + 1;
                    while j < g.ops.len() && matches!(g.ops[j].kind, OpKind::MatMul) && g.ops[j].inputs[0] == x {
                        mm.push(OpId(j as u32));
                        j += 1;
                    }
                }
                let (src, norm_op) = match pending_norm.get(&x) {
                    Some(&n) => (g.op(n).inputs[0], Some(n)),
                    None => (x, None),
                };
                let n: u64 = mm.iter().map(|&m| g.tensor(g.op(m).inputs[1]).shape[0]).sum();
                let k = g.tensor(x).shape[1];
                let next = g.ops.get(id.0 as usize + mm.len());
                let glu = mm.len() == 2
                    && next.is_some_and(|o| {
                        matches!(o.kind, OpKind::GatedAct { .. })
                            && o.inputs == [g.op(mm[0]).outputs[0], g.op(mm[1]).outputs[0]]
                    });
                let mut ops: Vec<OpId> = norm_op.into_iter().collect();
                ops.extend(&mm);
                let mut weight_bytes: u64 =
                    mm.iter().flat_map(|&m| g.op(m).inputs[1..].iter()).map(|&w| g.tensor(w).bytes()).sum();
                if let Some(n) = norm_op {
                    weight_bytes += g.op(n).inputs[1..].iter().map(|&w| g.tensor(w).bytes()).sum::<u64>();
                }
                let epi = if matches!(op.kind, OpKind::MoeRouter { .. }) { 1 } else { 0 }
                    + mm.iter().any(|&m| g.op(m).inputs.len() == 3) as u32;
                let name = match layer {
                    Some(l) => format!("l{l}.{}", role(g, id)),
                    None => role(g, id),
                };
                groups.push(Group {
                    name,
                    layer,
                    ops,
                    kind: GroupKind::Gemv {
                        n,
                        k,
                        glu,
                        norm: norm_op.is_some(),
                        argmax: false,
                        epilogue_ops: epi,
                        align: if glu { 2 } else { 1 },
                    },
                    input: prod(&producer, src),
                    residuals: vec![],
                    active: true,
                    weight_bytes,
                });
                for &m in &mm {
                    done[m.0 as usize] = true;
                    producer.insert(g.op(m).outputs[0], groups.len() - 1);
                }
            }
            OpKind::MoeExperts { experts, top_k, .. } => {
                let (e, k_act) = (*experts, *top_k);
                let wg = g.tensor(op.inputs[2]);
                let (inter, hidden) = (wg.shape[1], wg.shape[2]);
                let x = op.inputs[0];
                let (src, norm_op) = match pending_norm.get(&x) {
                    Some(&n) => (g.op(n).inputs[0], Some(n)),
                    None => (x, None),
                };
                let router =
                    prod(&producer, op.inputs[1]).ok_or_else(|| unsupported(id, "routing not produced by a region"))?;
                let per_expert = |t: TensorId| g.tensor(t).bytes() / e;
                let mut prev_down = router;
                let l = layer.unwrap_or(0);
                for ex in 0..e {
                    let mut ops: Vec<OpId> = norm_op.into_iter().collect();
                    ops.push(id);
                    groups.push(Group {
                        name: format!("l{l}.expert{ex}.up"),
                        layer,
                        ops,
                        kind: GroupKind::Gemv {
                            n: 2 * inter,
                            k: hidden,
                            glu: true,
                            norm: norm_op.is_some(),
                            argmax: false,
                            epilogue_ops: 5,
                            align: 2,
                        },
                        input: prod(&producer, src),
                        residuals: vec![],
                        active: ex < k_act,
                        weight_bytes: per_expert(op.inputs[2]) + per_expert(op.inputs[3]),
                    });
                    let up = groups.len() - 1;
                    groups.push(Group {
                        name: format!("l{l}.expert{ex}.down"),
                        layer,
                        ops: vec![id],
                        kind: GroupKind::Gemv {
                            n: hidden,
                            k: inter,
                            glu: false,
                            norm: false,
                            argmax: false,
                            epilogue_ops: 2,
                            align: 1,
                        },
                        input: Some(up),
                        residuals: if ex < k_act { vec![prev_down] } else { vec![] },
                        active: ex < k_act,
                        weight_bytes: per_expert(op.inputs[4]),
                    });
                    if ex < k_act {
                        prev_down = groups.len() - 1;
                    }
                }
                producer.insert(op.outputs[0], prev_down);
            }
            OpKind::KvAppend { window } => {
                let kc = g.tensor(op.outputs[0]);
                let positions = kc.shape[2];
                let slot = match window {
                    Some(w) if g.context > *w => (g.context - 1) % w,
                    _ => positions - 1,
                };
                let qkv = prod(&producer, op.inputs[0]).ok_or_else(|| unsupported(id, "k not produced by a region"))?;
                // Query heads per KV head, from the scores op that reads this cache.
                let scores = consumers.get(&op.outputs[0]).and_then(|c| c.first()).map(|c| &g.op(*c).kind);
                let Some(OpKind::AttnScores { heads, kv_heads, head_dim }) = scores else {
                    return Err(unsupported(id, "KV cache not read by an attention-scores op"));
                };
                groups.push(Group {
                    name: format!("l{}.attention", layer.unwrap_or(0)),
                    layer,
                    ops: vec![id],
                    kind: GroupKind::Attention {
                        kv_heads: *kv_heads,
                        group: heads / kv_heads,
                        head_dim: *head_dim,
                        positions,
                        slot,
                    },
                    input: Some(qkv),
                    residuals: vec![],
                    active: true,
                    weight_bytes: 0,
                });
                for &o in &op.outputs {
                    producer.insert(o, groups.len() - 1);
                }
            }
            OpKind::AttnScores { .. } => {
                let gi =
                    prod(&producer, op.inputs[1]).ok_or_else(|| unsupported(id, "cache not produced by a region"))?;
                groups[gi].ops.push(id);
                producer.insert(op.outputs[0], gi);
            }
            OpKind::Sample
            | OpKind::Softmax
            | OpKind::AttnValue { .. }
            | OpKind::Rope { .. }
            | OpKind::Act { .. }
            | OpKind::GatedAct { .. }
            | OpKind::Add
            | OpKind::Elementwise { .. }
            | OpKind::Norm { .. } => {
                // An add joins the later of its operands' regions; the other operand is a residual input.
                let gi = op
                    .inputs
                    .iter()
                    .take(if matches!(op.kind, OpKind::Add) { 2 } else { 1 })
                    .filter_map(|&t| prod(&producer, t))
                    .max()
                    .ok_or_else(|| unsupported(id, "input not produced by a region"))?;
                groups[gi].ops.push(id);
                if let OpKind::Norm { .. } = op.kind {
                    groups[gi].weight_bytes += op.inputs[1..].iter().map(|&w| g.tensor(w).bytes()).sum::<u64>();
                }
                let ew = ew_ops(&op.kind);
                // Per-head epilogues need whole heads on each row.
                let head = match op.kind {
                    OpKind::Rope { head_dim, .. } => head_dim,
                    OpKind::Norm { groups, .. } if groups > 1 => g.tensor(op.inputs[1]).shape[0],
                    _ => 1,
                };
                if let GroupKind::Gemv { epilogue_ops, argmax, align, .. } = &mut groups[gi].kind {
                    *align = lcm(*align, head);
                    *epilogue_ops += ew;
                    if matches!(op.kind, OpKind::Sample) {
                        *argmax = true;
                    }
                }
                if matches!(op.kind, OpKind::Add) {
                    for &t in &op.inputs {
                        if g.tensor(t).kind == TensorKind::Activation {
                            if let Some(o) = prod(&producer, t).filter(|&o| o != gi) {
                                if !groups[gi].residuals.contains(&o) {
                                    groups[gi].residuals.push(o);
                                }
                            }
                        }
                    }
                }
                for &o in &op.outputs {
                    producer.insert(o, gi);
                }
            }
        }
        done[id.0 as usize] = true;
    }
    Ok(groups)
}

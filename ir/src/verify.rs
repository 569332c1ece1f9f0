//! Graph IR verifier.
//!
//! Owns: the rules a graph must satisfy before anything else reads it —
//! every input defined before use, the dependency graph acyclic, each
//! activation produced exactly once, shapes equal to each op's shape rule,
//! dtypes legal for their role, every cost figure and total within 64 bits
//! ([`crate::cost::check_costs`]). Diagnostics are collected, not fail-fast.
//! Must not: repair graphs.

use crate::dtype::DType;
use crate::graph::{Graph, OpId, OpKind, TensorId, TensorKind};
use petgraph::algo::toposort;
use petgraph::graph::DiGraph;
use std::fmt;

/// One problem found in a graph, naming the op or tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphDiag {
    #[error("{op} `{name}`: {msg}")]
    Op { op: OpId, name: String, msg: String },
    #[error("tensor {tensor} `{name}`: {msg}")]
    Tensor { tensor: TensorId, name: String, msg: String },
    #[error("graph: {0}")]
    Graph(String),
}

/// Every problem the verifier found, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphErrors(pub Vec<GraphDiag>);

impl fmt::Display for GraphErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph verification failed with {} error(s)", self.0.len())?;
        for d in &self.0 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}
impl std::error::Error for GraphErrors {}

/// Checks `g`; `Ok` means every later stage may rely on the graph's invariants.
pub fn verify_graph(g: &Graph) -> Result<(), GraphErrors> {
    let mut diags = Vec::new();
    let n_t = g.tensors.len();
    if g.batch == 0 {
        diags.push(GraphDiag::Graph("batch must be at least 1".into()));
    }
    if g.context == 0 {
        diags.push(GraphDiag::Graph("context must be at least 1".into()));
    }
    if g.new_tokens == 0 || g.new_tokens > g.context {
        diags.push(GraphDiag::Graph(format!(
            "new_tokens is {}; allowed 1..={} (the context, which includes them)",
            g.new_tokens, g.context
        )));
    }
    if !g.act_dtype.is_activation_legal() {
        diags.push(GraphDiag::Graph(format!("{} is not a legal activation dtype", g.act_dtype)));
    }

    // Tensors: shapes and dtypes legal for their role.
    for (i, t) in g.tensors.iter().enumerate() {
        let tid = TensorId(i as u32);
        let mut bad = |msg: String| diags.push(GraphDiag::Tensor { tensor: tid, name: t.name.clone(), msg });
        if t.shape.is_empty() {
            bad("has no dimensions".into());
        }
        for (d, &n) in t.shape.iter().enumerate() {
            let may_be_empty = t.kind == TensorKind::KvCache && d == 2;
            if n == 0 && !may_be_empty {
                bad(format!("dimension {d} is zero in {:?}", t.shape));
            }
        }
        let legal = match t.kind {
            TensorKind::Input => t.dtype == DType::I32,
            TensorKind::Weight | TensorKind::KvCache => t.dtype != DType::I32,
            TensorKind::Activation => t.dtype.is_activation_legal() || t.dtype == DType::I32,
        };
        if !legal {
            bad(format!("dtype {} is not legal for a {} tensor", t.dtype, t.kind.name()));
        }
    }

    // Producers: each op output produced once; inputs in range.
    let mut producer: Vec<Option<usize>> = vec![None; n_t];
    let mut ids_ok = true;
    for (oi, op) in g.ops.iter().enumerate() {
        let oid = OpId(oi as u32);
        for &t in op.inputs.iter().chain(op.outputs.iter()) {
            if t.0 as usize >= n_t {
                diags.push(GraphDiag::Op {
                    op: oid,
                    name: op.name.clone(),
                    msg: format!("refers to undefined tensor {t}"),
                });
                ids_ok = false;
            }
        }
        if !ids_ok {
            continue;
        }
        for &t in &op.outputs {
            let tt = g.tensor(t);
            if matches!(tt.kind, TensorKind::Weight | TensorKind::Input) {
                diags.push(GraphDiag::Op {
                    op: oid,
                    name: op.name.clone(),
                    msg: format!("writes {t} `{}`, a {} tensor", tt.name, tt.kind.name()),
                });
            }
            if let Some(p) = producer[t.0 as usize] {
                diags.push(GraphDiag::Op {
                    op: oid,
                    name: op.name.clone(),
                    msg: format!("output {t} `{}` is already produced by op{p}", tt.name),
                });
            }
            producer[t.0 as usize] = Some(oi);
        }
    }
    if !ids_ok {
        return Err(GraphErrors(diags));
    }
    for (i, t) in g.tensors.iter().enumerate() {
        if t.kind == TensorKind::Activation && producer[i].is_none() {
            diags.push(GraphDiag::Tensor {
                tensor: TensorId(i as u32),
                name: t.name.clone(),
                msg: "activation is never produced by any op".into(),
            });
        }
    }

    // Acyclicity over op dependencies, then def-before-use in arena order.
    let mut dg: DiGraph<usize, ()> = DiGraph::with_capacity(g.ops.len(), g.ops.len() * 2);
    let nodes: Vec<_> = (0..g.ops.len()).map(|i| dg.add_node(i)).collect();
    for (oi, op) in g.ops.iter().enumerate() {
        for &t in &op.inputs {
            if let Some(p) = producer[t.0 as usize] {
                dg.add_edge(nodes[p], nodes[oi], ());
            }
        }
    }
    if let Err(cycle) = toposort(&dg, None) {
        let oi = dg[cycle.node_id()];
        diags.push(GraphDiag::Op {
            op: OpId(oi as u32),
            name: g.ops[oi].name.clone(),
            msg: "is part of a dependency cycle".into(),
        });
    } else {
        for (oi, op) in g.ops.iter().enumerate() {
            for &t in &op.inputs {
                if let Some(p) = producer[t.0 as usize] {
                    if p >= oi {
                        diags.push(GraphDiag::Op {
                            op: OpId(oi as u32),
                            name: op.name.clone(),
                            msg: format!("reads {t} `{}` before op{p} defines it", g.tensor(t).name),
                        });
                    }
                }
            }
        }
    }

    // Shapes and dtypes against each op's shape rule.
    for (oi, op) in g.ops.iter().enumerate() {
        let oid = OpId(oi as u32);
        let ins: Vec<_> = op.inputs.iter().map(|&t| g.tensor(t)).collect();
        match op.kind.infer(&ins, g.act_dtype) {
            Err(msg) => diags.push(GraphDiag::Op { op: oid, name: op.name.clone(), msg }),
            Ok(expect) => {
                if expect.len() != op.outputs.len() {
                    diags.push(GraphDiag::Op {
                        op: oid,
                        name: op.name.clone(),
                        msg: format!("has {} outputs, {} takes {}", op.outputs.len(), op.kind.mnemonic(), expect.len()),
                    });
                    continue;
                }
                for (j, (shape, dtype)) in expect.iter().enumerate() {
                    let t = g.tensor(op.outputs[j]);
                    if &t.shape != shape || t.dtype != *dtype {
                        diags.push(GraphDiag::Op {
                            op: oid,
                            name: op.name.clone(),
                            msg: format!(
                                "output {j} `{}` is {}{:?}, the op produces {}{:?}",
                                t.name, t.dtype, t.shape, dtype, shape
                            ),
                        });
                    }
                    let want_kind = if matches!(op.kind, OpKind::KvAppend { .. }) {
                        TensorKind::KvCache
                    } else {
                        TensorKind::Activation
                    };
                    if t.kind != want_kind {
                        diags.push(GraphDiag::Op {
                            op: oid,
                            name: op.name.clone(),
                            msg: format!("output {j} `{}` must be a {} tensor", t.name, want_kind.name()),
                        });
                    }
                }
            }
        }
    }
    // Costs: only once shapes are known good (op_cost reads them).
    if diags.is_empty() {
        if let Err(e) = crate::cost::check_costs(g) {
            diags.push(GraphDiag::Graph(e.to_string()));
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(GraphErrors(diags))
    }
}

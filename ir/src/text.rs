//! Deterministic textual form of the graph IR (for `--dump` and golden tests).
//!
//! Owns: printing. The format lists tensors that are graph inputs, then ops
//! in arena order with their outputs' types. Must not: depend on hash order.

use crate::cost::op_cost;
use crate::graph::{Graph, TensorId, TensorKind};
use std::fmt::Write;

fn ty(g: &Graph, id: TensorId) -> String {
    let t = g.tensor(id);
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", t.dtype, dims.join(","))
}

/// Prints `g` in the textual form.
pub fn print_graph(g: &Graph) -> String {
    let mut s = String::new();
    let prefill = if g.is_prefill() { format!(" new_tokens={}", g.new_tokens) } else { String::new() };
    let _ = writeln!(
        s,
        "graph \"{}\" batch={} context={}{prefill} weights={} acts={} kv={}",
        g.name, g.batch, g.context, g.weight_dtype, g.act_dtype, g.kv_dtype
    );
    let mut produced = vec![false; g.tensors.len()];
    for o in g.ops.iter().flat_map(|o| o.outputs.iter()) {
        produced[o.0 as usize] = true;
    }
    for (i, t) in g.tensors.iter().enumerate() {
        if t.kind != TensorKind::Activation && !produced[i] {
            let id = TensorId(i as u32);
            let _ = writeln!(s, "  {id} = {} \"{}\" {}", t.kind.name(), t.name, ty(g, id));
        }
    }
    for (i, op) in g.ops.iter().enumerate() {
        let outs: Vec<String> = op.outputs.iter().map(|&o| format!("{}: {}", o, ty(g, o))).collect();
        let ins: Vec<String> = op.inputs.iter().map(|i| i.to_string()).collect();
        let attrs = op.kind.attrs();
        let layer = op.layer.map_or("-".to_string(), |l| l.to_string());
        let c = op_cost(g, op);
        let _ = writeln!(
            s,
            "  op{i} \"{}\" [{layer}] {} = {}{}({})  ; flops={} w={}B kv_r={}B kv_w={}B",
            op.name,
            outs.join(", "),
            op.kind.mnemonic(),
            if attrs.is_empty() { String::new() } else { format!("{{{attrs}}}") },
            ins.join(", "),
            c.flops,
            c.weight_bytes,
            c.kv_read_bytes,
            c.kv_write_bytes
        );
    }
    s
}

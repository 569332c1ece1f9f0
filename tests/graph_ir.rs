//! The graph IR's textual form is deterministic (golden file), and the
//! verifier rejects hand-broken graphs with a message naming the op.

use wafer_ir::{print_graph, verify_graph, DType, Graph, OpKind, TensorId, TensorKind};
use wafer_workloads::{decode_graph, parse_hf_config, DecodeParams};

const TINY_LLAMA: &str = r#"{"model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
  "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16}"#;

fn tiny(context: u64) -> Graph {
    let cfg = parse_hf_config(TINY_LLAMA, "tiny", "tiny-llama").unwrap();
    let p = DecodeParams { context, batch: 2, ..Default::default() };
    let g = decode_graph(&cfg, &p).unwrap();
    verify_graph(&g).unwrap();
    g
}

#[test]
fn textual_form_of_a_tiny_model_is_golden() {
    let text = print_graph(&tiny(3));
    assert_eq!(text, print_graph(&tiny(3)), "printing twice gives the same text");
    insta::assert_snapshot!("tiny_llama_decode_step", text);
}

fn broken(mutate: impl FnOnce(&mut Graph)) -> String {
    let mut g = tiny(3);
    mutate(&mut g);
    verify_graph(&g).expect_err("the verifier must reject this graph").to_string()
}

fn op_index(g: &Graph, name: &str) -> usize {
    g.ops.iter().position(|o| o.name == name).unwrap()
}

#[test]
fn verifier_rejects_hand_broken_graphs_naming_the_op() {
    // (what is broken, mutation, text the error must contain)
    type Mutation = Box<dyn FnOnce(&mut Graph)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "weight of the wrong width",
            Box::new(|g| {
                let i = op_index(g, "l0.attn.q_proj");
                let w = g.ops[i].inputs[1];
                g.tensors[w.0 as usize].shape = vec![8, 7];
            }),
            "`l0.attn.q_proj`: inner dimension",
        ),
        (
            "output shape that does not follow the rule",
            Box::new(|g| {
                let i = op_index(g, "l0.mlp.act");
                let o = g.ops[i].outputs[0];
                g.tensors[o.0 as usize].shape = vec![2, 15];
            }),
            "`l0.mlp.act`: output 0",
        ),
        (
            "input used before it is defined",
            Box::new(|g| {
                let a = op_index(g, "l0.attn.q_proj");
                let late = g.ops[op_index(g, "l0.mlp.down_proj")].outputs[0];
                g.ops[a].inputs[0] = late;
                // keep shapes consistent so only the order is wrong
                let w = g.ops[a].inputs[1];
                g.tensors[w.0 as usize].shape = vec![16, 8];
            }),
            "`l0.attn.q_proj`",
        ),
        (
            "undefined tensor",
            Box::new(|g| {
                let i = op_index(g, "l0.attn_residual");
                g.ops[i].inputs[1] = TensorId(9999);
            }),
            "`l0.attn_residual`: refers to undefined tensor %9999",
        ),
        (
            "int4 activations",
            Box::new(|g| {
                let i = op_index(g, "l0.attn.softmax");
                let o = g.ops[i].outputs[0];
                g.tensors[o.0 as usize].dtype = DType::Int4;
            }),
            "dtype int4 is not legal for a act tensor",
        ),
        (
            "weight written by an op",
            Box::new(|g| {
                let i = op_index(g, "final_norm");
                let o = g.ops[i].outputs[0];
                g.tensors[o.0 as usize].kind = TensorKind::Weight;
            }),
            "`final_norm`: writes",
        ),
        (
            "cycle",
            Box::new(|g| {
                let a = op_index(g, "l0.attn_residual");
                let b = op_index(g, "l0.mlp_residual");
                let out_b = g.ops[b].outputs[0];
                g.ops[a].inputs[0] = out_b;
            }),
            "dependency cycle",
        ),
        (
            "attention over the wrong cache",
            Box::new(|g| {
                let i = op_index(g, "l0.attn.scores");
                g.ops[i].kind = OpKind::AttnScores { heads: 2, kv_heads: 2, head_dim: 4 };
            }),
            "`l0.attn.scores`",
        ),
    ];
    for (what, m, needle) in cases {
        let e = broken(m);
        assert!(e.contains(needle), "{what}: error `{e}` does not contain `{needle}`");
    }
}

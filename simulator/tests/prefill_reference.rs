//! The prefill step's semantics, proven on the dense reference: a prefill of
//! N prompt tokens over C cached positions gives the same last-token logits
//! and leaves the same KV cache as N decode steps one token at a time — for
//! GQA with RoPE, learned positions, a sliding window narrower than the
//! prompt, and MoE.

use wafer_ir::verify_graph;
use wafer_simulator::{run_reference, KvState, Weights};
use wafer_workloads::{decode_graph, parse_hf_config, prefill_graph, DecodeParams, ModelConfig, PrefillParams};

const MODELS: &[(&str, &str)] = &[
    (
        "gqa-rope",
        r#"{"model_type": "llama", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50}"#,
    ),
    (
        "learned-positions",
        r#"{"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 50, "n_positions": 64}"#,
    ),
    (
        "sliding-window",
        r#"{"model_type": "mistral", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 50, "sliding_window": 4}"#,
    ),
    (
        "moe",
        r#"{"model_type": "mixtral", "hidden_size": 32, "intermediate_size": 24, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50,
            "num_local_experts": 4, "num_experts_per_tok": 2}"#,
    ),
];

fn cfg(name: &str, json: &str) -> ModelConfig {
    parse_hf_config(json, name, name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn a_prefill_equals_decoding_its_prompt_one_token_at_a_time() {
    for &(name, json) in MODELS {
        let c = cfg(name, json);
        for (batch, cached, prompt) in [(1u64, 0u64, 7u64), (2, 3, 6)] {
            // The same seeded past for both, laid out as the reference holds it.
            let first = decode_graph(&c, &DecodeParams { batch, context: cached + 1, ..Default::default() }).unwrap();
            let weights = Weights::random(&first, 7);
            let (past, _) = KvState::random_past(&first, 11);
            let tokens: Vec<Vec<u64>> =
                (0..batch).map(|b| (0..prompt).map(|i| (b * 13 + i * 7 + 1) % c.vocab).collect()).collect();

            let pf = prefill_graph(&c, &PrefillParams { batch, prompt, cached, ..Default::default() }).unwrap();
            verify_graph(&pf).unwrap();
            let flat: Vec<u64> = tokens.iter().flatten().copied().collect();
            let mut kv_p = past.clone();
            let out_p = run_reference(&pf, &weights, &flat, &mut kv_p).unwrap();

            let mut kv_d = past.clone();
            let mut last = None;
            for i in 0..prompt {
                let g =
                    decode_graph(&c, &DecodeParams { batch, context: cached + i + 1, ..Default::default() }).unwrap();
                let step: Vec<u64> = tokens.iter().map(|t| t[i as usize]).collect();
                last = Some(run_reference(&g, &weights, &step, &mut kv_d).unwrap());
            }
            let out_d = last.unwrap();
            let (lp, ld) =
                (out_p.logits.iter().copied().collect::<Vec<_>>(), out_d.logits.iter().copied().collect::<Vec<_>>());
            assert_eq!(out_p.logits.dim(), out_d.logits.dim(), "{name}: logits of the last token per sequence");
            let e = max_rel(&lp, &ld);
            assert!(e <= 1e-4, "{name} B={batch} C={cached} N={prompt}: logits differ by {e}");
            assert_eq!(out_p.sampled, out_d.sampled, "{name}: the first output token");
            for l in 0..c.layers {
                for kind in ["k", "v"] {
                    let key = format!("l{l}.{kind}_cache");
                    let (a, b) = (&kv_p.caches[&key], &kv_d.caches[&key]);
                    assert_eq!(a.dim(), b.dim(), "{name}: {key} holds what the next decode step reads");
                    let e = max_rel(&a.iter().copied().collect::<Vec<_>>(), &b.iter().copied().collect::<Vec<_>>());
                    assert!(e <= 1e-4, "{name}: {key} differs by {e}");
                }
            }
        }
    }
}

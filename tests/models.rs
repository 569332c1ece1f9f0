//! Specification of the model zoo and the decode-step graph: presets equal the
//! reference table, costs scale the way physics says, real configs of every
//! supported family load with no code change.

use wafer_ir::{graph_stats, verify_graph, DType, GraphStats, OpKind};
use wafer_workloads::{decode_graph, parse_hf_config, preset, DecodeParams, ModelConfig};

struct Ref {
    name: String,
    params_total: u64,
    params_active: u64,
    kv_bytes: u64,
}

fn reference_table() -> Vec<Ref> {
    let text = include_str!("data/models.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let (c_name, c_tot, c_act, c_kv) =
        (col("name"), col("params_total"), col("params_active"), col("kv_bytes_per_token_bf16"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Ref {
                name: f[c_name].into(),
                params_total: f[c_tot].parse().unwrap(),
                params_active: f[c_act].parse().unwrap(),
                kv_bytes: f[c_kv].parse().unwrap(),
            }
        })
        .collect()
}

fn stats(cfg: &ModelConfig, p: DecodeParams) -> GraphStats {
    let g = decode_graph(cfg, &p).unwrap();
    verify_graph(&g).unwrap();
    graph_stats(&g)
}

fn at(context: u64) -> DecodeParams {
    DecodeParams { context, ..Default::default() }
}

fn rel(a: u64, b: u64) -> f64 {
    (a as f64 - b as f64).abs() / b as f64
}

#[test]
fn vendored_table_equals_shared_reference_when_present() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/models.tsv");
    if let Ok(orig) = std::fs::read_to_string(shared) {
        assert_eq!(orig, include_str!("data/models.tsv"), "tests/data/models.tsv is out of date");
    }
}

#[test]
fn every_reference_row_has_a_preset_with_its_counts() {
    let table = reference_table();
    assert_eq!(table.len(), 15);
    for r in table {
        let cfg = preset(&r.name).unwrap_or_else(|e| panic!("{}: {e}", r.name));
        let s = stats(&cfg, at(1));
        assert!(
            rel(s.params_total, r.params_total) <= 1e-3,
            "{}: total {} vs {}",
            r.name,
            s.params_total,
            r.params_total
        );
        assert!(
            rel(s.params_active, r.params_active) <= 1e-3,
            "{}: active {} vs {}",
            r.name,
            s.params_active,
            r.params_active
        );
        if r.name == "gpt-j-6b" {
            assert!(rel(s.kv_bytes_per_token, r.kv_bytes) <= 1e-3, "{}", r.name);
        } else {
            assert_eq!(s.kv_bytes_per_token, r.kv_bytes, "{}: KV bytes per token", r.name);
        }
        // Dense models: exact. (Mixtral differs in `active` only, see below.)
        if r.name != "mixtral-8x7b" {
            assert_eq!(s.params_total, r.params_total, "{}", r.name);
            assert_eq!(s.params_active, r.params_active, "{}", r.name);
        }
    }
}

#[test]
fn aliases_share_shapes_with_their_targets() {
    for (alias, target) in [("llama-3-8b", "llama-3.1-8b"), ("llama-3.3-70b", "llama-3.1-70b")] {
        let a = preset(alias).unwrap();
        let t = preset(target).unwrap();
        assert_eq!(a.name, alias);
        assert_eq!(stats(&a, at(1)).params_total, stats(&t, at(1)).params_total);
    }
}

/// Embedding gathers do no arithmetic, so FLOPs ~ 2 x (active params that
/// multiply): the active count less the input table when it is not tied (and
/// less GPT-2's learned position table). For tied models that is the active
/// count itself.
#[test]
fn flops_at_context_one_are_two_per_active_matmul_param() {
    for name in wafer_workloads::preset_names() {
        let cfg = preset(name).unwrap();
        let s = stats(&cfg, at(1));
        let mut multiplying = s.params_active;
        if !cfg.tied_embeddings {
            multiplying -= cfg.vocab * cfg.hidden;
        }
        if cfg.learned_positions {
            multiplying -= cfg.max_positions * cfg.hidden;
        }
        let err = rel(s.flops_per_token, 2 * multiplying);
        assert!(err <= 0.02, "{name}: flops {} vs 2x{} ({:.2}%)", s.flops_per_token, multiplying, err * 100.0);
        if cfg.tied_embeddings && !cfg.learned_positions {
            assert!(rel(s.flops_per_token, 2 * s.params_active) <= 0.02, "{name}");
        }
    }
}

#[test]
fn attention_flops_and_kv_reads_grow_linearly_with_context() {
    let cfg = preset("llama-3.1-8b").unwrap();
    let attn = |s: &GraphStats| s.by_kind["attn_scores"].flops + s.by_kind["attn_value"].flops;
    let (s1, s2, s4) = (stats(&cfg, at(1000)), stats(&cfg, at(2000)), stats(&cfg, at(4000)));
    assert_eq!(attn(&s2), 2 * attn(&s1));
    assert_eq!(attn(&s4), 4 * attn(&s1));
    assert_eq!(s4.step.kv_read_bytes, 4 * s1.step.kv_read_bytes);
    // Per attended position: 2 (K and V) x layers x kv_dim x 2 bytes.
    assert_eq!(s1.step.kv_read_bytes, 1000 * 131072);
    // Non-attention work does not depend on context.
    assert_eq!(s2.by_kind["matmul"], s1.by_kind["matmul"]);
}

#[test]
fn kv_bytes_grow_linearly_with_context_and_batch() {
    let cfg = preset("qwen2.5-7b").unwrap();
    let kv = |batch, context| stats(&cfg, DecodeParams { batch, context, ..Default::default() }).step.kv_read_bytes;
    assert_eq!(kv(1, 2048), 2 * kv(1, 1024));
    assert_eq!(kv(4, 1024), 4 * kv(1, 1024));
    assert_eq!(kv(4, 2048), 8 * kv(1, 1024));
    let w = stats(&cfg, DecodeParams { batch: 8, ..Default::default() }).step.kv_write_bytes;
    assert_eq!(w, 8 * 57344);
}

#[test]
fn weight_bytes_scale_with_the_weight_dtype() {
    let cfg = preset("llama-3.1-8b").unwrap();
    let wb = |d: DType| stats(&cfg, DecodeParams { weight_dtype: d, ..Default::default() }).weight_bytes;
    let bf16 = wb(DType::Bf16);
    assert_eq!(bf16, 2 * 8_030_261_248);
    assert_eq!(wb(DType::Int4) * 4, bf16);
    assert_eq!(wb(DType::Int8) * 2, bf16);
    assert_eq!(wb(DType::Fp8) * 2, bf16);
    assert_eq!(wb(DType::F32), 2 * bf16);
    let kv = |d: DType| stats(&cfg, DecodeParams { kv_dtype: d, ..Default::default() }).kv_bytes_per_token;
    assert_eq!(kv(DType::Fp8) * 2, kv(DType::Bf16));
}

#[test]
fn mixtral_counts_all_experts_in_total_and_routed_ones_in_active_and_flops() {
    let cfg = preset("mixtral-8x7b").unwrap();
    let s = stats(&cfg, at(1));
    let expert = 3 * cfg.hidden * cfg.intermediate;
    let attn = cfg.hidden * (cfg.q_dim() + 2 * cfg.kv_dim()) + cfg.q_dim() * cfg.hidden;
    let router = cfg.experts * cfg.hidden;
    let per_layer_total = attn + router + cfg.experts * expert + 2 * cfg.hidden;
    let per_layer_active = attn + router + cfg.experts_per_tok * expert + 2 * cfg.hidden;
    let outside = 2 * cfg.vocab * cfg.hidden + cfg.hidden;
    assert_eq!(s.params_total, cfg.layers * per_layer_total + outside);
    assert_eq!(s.params_active, cfg.layers * per_layer_active + outside);
    // The reference table leaves the router (32 x 32768 = 1,048,576 params,
    // 0.008%) out of "active"; we count it, since every token runs it.
    assert_eq!(s.params_active - 12_878_876_672, cfg.layers * router);
    // FLOPs follow the 2 routed experts, not all 8.
    let moe = s.by_kind["moe_experts"].flops;
    assert!(rel(moe, 2 * cfg.layers * cfg.experts_per_tok * expert) < 0.01);
    let dense_equiv = 2 * cfg.layers * cfg.experts * expert;
    assert!(moe * 3 < dense_equiv);
    // At batch 1 only the two routed experts' weights are read.
    assert_eq!(s.by_kind["moe_experts"].weight_bytes, 2 * cfg.layers * 2 * expert);
}

fn fixture(name: &str) -> ModelConfig {
    let path = format!("{}/tests/data/configs/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    parse_hf_config(&text, &path, name).unwrap_or_else(|e| panic!("{e}"))
}

fn weight_shape(cfg: &ModelConfig, tensor: &str) -> Vec<u64> {
    let g = decode_graph(cfg, &at(1)).unwrap();
    g.tensors.iter().find(|t| t.name == tensor).unwrap_or_else(|| panic!("no tensor {tensor}")).shape.clone()
}

/// Parameter counts of public checkpoints (model cards / safetensors totals),
/// each re-derived by hand in the comment next to it.
#[test]
fn real_configs_of_other_families_load_without_code_changes() {
    // Qwen3-0.6B: explicit head_dim 128 with hidden 1024 / 16 heads; per-head q/k RMSNorm; tied.
    // 151936*1024 + 28*(1024*2048 + 2*1024*1024 + 2048*1024 + 2*128 + 3*1024*3072 + 2*1024) + 1024
    let q3 = fixture("qwen3-0.6b");
    assert_eq!(q3.head_dim, 128);
    assert_eq!(weight_shape(&q3, "l0.attn.q_proj.weight"), vec![2048, 1024]);
    assert_eq!(weight_shape(&q3, "l0.attn.q_norm.weight"), vec![128]);
    assert_eq!(stats(&q3, at(1)).params_total, 596_049_920);

    // Mistral-Nemo: head_dim 128 with hidden 5120 / 32 heads. 12,247,782,400 parameters.
    let nemo = fixture("mistral-nemo");
    assert_eq!(weight_shape(&nemo, "l0.attn.o_proj.weight"), vec![5120, 4096]);
    assert_eq!(stats(&nemo, at(1)).params_total, 12_247_782_400);

    // Phi-3-mini-4k: 3,821,079,552 parameters; sliding window 2047 on every layer.
    let phi = fixture("phi-3-mini-4k");
    assert_eq!(stats(&phi, at(1)).params_total, 3_821_079_552);
    assert_eq!(phi.window_for_layer(5), Some(2047));
    let long = stats(&phi, at(4000)).step.kv_read_bytes;
    assert_eq!(long, stats(&phi, at(2047)).step.kv_read_bytes, "the window caps what is attended");

    // TinyLlama-1.1B (GQA 32/4, no head_dim field): 1,100,048,384 parameters.
    let tiny = fixture("tinyllama-1.1b");
    assert_eq!(stats(&tiny, at(1)).params_total, 1_100_048_384);

    // Gemma-2-9B: head_dim 256 with hidden 3584 / 16 heads, tied, four norms per layer,
    // 9,241,705,984 parameters (model card),
    // window 4096 on even layers only. Hand count:
    // 256000*3584 + 42*(3584*4096*2 + 2*3584*2048 + 3*3584*14336 + 4*3584) + 3584
    let gemma = fixture("gemma-2-9b");
    assert_eq!(weight_shape(&gemma, "l0.attn.q_proj.weight"), vec![4096, 3584]);
    assert_eq!(stats(&gemma, at(1)).params_total, 9_241_705_984);
    assert_eq!((gemma.window_for_layer(0), gemma.window_for_layer(1)), (Some(4096), None));
    let g = decode_graph(&gemma, &at(8192)).unwrap();
    verify_graph(&g).unwrap();
    let scores: Vec<u64> = g
        .ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::AttnScores { .. }))
        .map(|o| g.tensor(o.outputs[0]).shape[2])
        .take(2)
        .collect();
    assert_eq!(scores, vec![4096, 8192]);
}

#[test]
fn learned_positions_bound_the_context() {
    let gpt2 = preset("gpt2").unwrap();
    assert!(decode_graph(&gpt2, &at(1024)).is_ok());
    let e = decode_graph(&gpt2, &at(1025)).unwrap_err().to_string();
    assert!(e.contains("context is 1025") && e.contains("1..=1024"), "{e}");
}

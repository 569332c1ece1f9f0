//! Property: random small models on random small meshes either compile to a
//! program that verifies (and round-trips), or fail with a clear capacity
//! error — never a panic.

use proptest::prelude::*;
use wafer_compiler::{compile, CompileError, CompileOptions, Wafers};
use wafer_ir::{arch_preset, parse_program, print_program, verify_program, DType};
use wafer_workloads::{decode_graph, parse_hf_config, DecodeParams};

fn model_json(
    family: u8,
    hidden_per_head: u64,
    heads: u64,
    kv_div: u64,
    layers: u64,
    vocab: u64,
    inter: u64,
) -> String {
    let hidden = hidden_per_head * heads;
    let kv = (heads / kv_div).max(1);
    match family {
        0 => format!(
            r#"{{"model_type":"llama","hidden_size":{hidden},"intermediate_size":{inter},"num_hidden_layers":{layers},
                "num_attention_heads":{heads},"num_key_value_heads":{kv},"vocab_size":{vocab}}}"#
        ),
        1 => format!(
            r#"{{"model_type":"gpt2","n_embd":{hidden},"n_layer":{layers},"n_head":{heads},"n_positions":64,"vocab_size":{vocab}}}"#
        ),
        _ => format!(
            r#"{{"model_type":"mixtral","hidden_size":{hidden},"intermediate_size":{inter},"num_hidden_layers":{layers},
                "num_attention_heads":{heads},"num_key_value_heads":{kv},"vocab_size":{vocab},"num_local_experts":4,"num_experts_per_tok":2}}"#
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn compiles_to_a_verified_program_or_a_clear_capacity_error(
        family in 0u8..3,
        hidden_per_head in prop::sample::select(vec![2u64, 4, 8]),
        heads in prop::sample::select(vec![1u64, 2, 4, 8]),
        kv_div in prop::sample::select(vec![1u64, 2, 4]),
        layers in 1u64..3,
        vocab in 8u64..80,
        inter in 4u64..48,
        context in 1u64..40,
        batch in 1u64..3,
        mesh_w in 2u32..20,
        mesh_h in 2u32..20,
        sram in prop::sample::select(vec![512u64, 1024, 4096, 49152]),
        wafers in prop::sample::select(vec![0u32, 1, 2]),
    ) {
        let json = model_json(family, hidden_per_head, heads, kv_div, layers, vocab, inter);
        let cfg = parse_hf_config(&json, "prop", "prop").unwrap();
        let p = DecodeParams { context, batch, weight_dtype: DType::F32, act_dtype: DType::F32, kv_dtype: DType::F32 };
        let g = decode_graph(&cfg, &p).unwrap();
        let mut arch = arch_preset(&format!("mesh:{mesh_w}x{mesh_h}")).unwrap();
        arch.pe.sram_bytes = sram;
        arch.pe.sram_reserved_bytes = 64;
        let w = if wafers == 0 { Wafers::Auto } else { Wafers::Fixed(wafers) };
        match compile(&g, &arch, &CompileOptions { wafers: w, verify_each: true, dump_after: vec![], ..Default::default() }) {
            Ok(c) => {
                verify_program(&c.program).unwrap();
                prop_assert_eq!(parse_program(&print_program(&c.program)).unwrap(), c.program);
            }
            Err(e @ (CompileError::DoesNotFit(_)
                | CompileError::ContextTooLong { .. }
                | CompileError::BatchTooLarge { .. }
                | CompileError::Untileable { .. }
                | CompileError::Packing { .. }
                | CompileError::RegionTooLarge { .. }
                | CompileError::TooManyWafers { .. }
                | CompileError::Colors { .. })) => {
                prop_assert!(!e.to_string().is_empty());
            }
            Err(e) => prop_assert!(false, "unexpected error: {e}"),
        }
    }
}

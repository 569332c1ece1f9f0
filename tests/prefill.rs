//! The prefill step in the graph IR: N new tokens per sequence attending
//! causally over C cached positions and themselves. Its costs are checked
//! against closed forms written from the model's shapes, not from the cost
//! model; with N = 1 it is exactly the decode step.

use wafer_compiler::{compile, CompileError, CompileOptions};
use wafer_ir::{arch_preset, graph_stats, verify_graph, DType, Graph, OpKind, TensorKind};
use wafer_workloads::{decode_graph, prefill_graph, preset, presets, DecodeParams, ModelConfig, PrefillParams};

fn prefill(cfg: &ModelConfig, batch: u64, prompt: u64, cached: u64) -> Graph {
    let p = PrefillParams { batch, prompt, cached, ..Default::default() };
    let g = prefill_graph(cfg, &p).unwrap();
    verify_graph(&g).unwrap_or_else(|e| panic!("{} N={prompt} C={cached}: {e}", cfg.name));
    g
}

/// Parameters of every matrix that multiplies activations (rank ≥ 2 weights,
/// routed experts at top_k/E), less the embedding and position tables, which
/// are gathered; and the LM head's share of them.
fn multiplying_params(g: &Graph) -> (u64, u64) {
    let mut head = 0;
    let mut all = 0;
    for op in &g.ops {
        match op.kind {
            OpKind::MatMul => {
                let w = g.tensor(op.inputs[1]);
                all += w.elems();
                if op.name == "lm_head" {
                    head += w.elems();
                }
            }
            OpKind::MoeRouter { .. } => all += g.tensor(op.inputs[1]).elems(),
            OpKind::MoeExperts { experts, top_k, .. } => {
                all += (2..5).map(|i| g.tensor(op.inputs[i]).elems() / experts * top_k).sum::<u64>()
            }
            _ => {}
        }
    }
    (all, head)
}

/// Positions query i (1-based, of n) sees, summed by brute force.
fn brute_attended(cached: u64, n: u64, window: Option<u64>) -> u64 {
    (1..=n).map(|i| (cached + i).min(window.unwrap_or(u64::MAX))).sum()
}

#[test]
fn a_one_token_prefill_is_the_decode_step() {
    for cfg in presets() {
        for cached in [0, 7, 5000] {
            let d = DecodeParams { batch: 2, context: cached + 1, ..Default::default() };
            if d.validate(&cfg).is_err() {
                continue;
            }
            assert_eq!(prefill(&cfg, 2, 1, cached), decode_graph(&cfg, &d).unwrap(), "{} C={cached}", cfg.name);
        }
    }
}

#[test]
fn prefill_flops_are_two_per_multiplying_parameter_per_token_plus_the_causal_triangle() {
    for name in ["llama-3.1-8b", "llama-2-7b", "qwen2.5-7b", "gpt2", "mixtral-8x7b", "mistral-7b-v0.1"] {
        let cfg = preset(name).unwrap();
        for (b, n, c) in [(1, 2048, 0), (2, 300, 5000), (1, 17, 4090)] {
            if c + n > cfg.max_positions && cfg.learned_positions {
                continue;
            }
            let g = prefill(&cfg, b, n, c);
            let s = graph_stats(&g);
            let (p_mult, p_head) = multiplying_params(&g);
            // Matrices: 2 FLOPs per parameter per token, the LM head on the last token only;
            // biases add one FLOP per output; experts and router as routed.
            let matmul = s.by_kind["matmul"].flops;
            let dense_part = 2 * b * n * (p_mult - p_head) + 2 * b * p_head;
            let biases: u64 = g
                .ops
                .iter()
                .filter(|o| o.kind == OpKind::MatMul && o.inputs.len() == 3)
                .map(|o| g.tensor(o.outputs[0]).elems())
                .sum();
            let moe_mult = if cfg.is_moe() {
                let per = 2 * cfg.hidden * cfg.experts + 2 * 3 * cfg.hidden * cfg.intermediate * cfg.experts_per_tok;
                cfg.layers * b * n * per
            } else {
                0
            };
            assert_eq!(matmul + moe_mult, dense_part + biases, "{name} B={b} N={n} C={c}: matmul FLOPs");
            // Attention: scores and value, 2·Hq·D per attended position each, per layer.
            let attn = s.by_kind["attn_scores"].flops + s.by_kind["attn_value"].flops;
            let want: u64 = (0..cfg.layers)
                .map(|l| 4 * b * cfg.heads * cfg.head_dim * brute_attended(c, n, cfg.window_for_layer(l)))
                .sum();
            assert_eq!(attn, want, "{name} B={b} N={n} C={c}: attention FLOPs");
            // The whole step: those two plus element-wise work (< 3% here).
            let total = s.step.flops as f64;
            let closed = (2 * b * n * (p_mult - p_head) + 2 * b * p_head + want) as f64;
            assert!(
                (total - closed).abs() / closed < 0.03 || cfg.is_moe(),
                "{name}: total {total} vs closed form {closed}"
            );
            // KV written: N tokens per sequence, each kv_bytes_per_token.
            let kv_per_token = 2 * cfg.layers * cfg.kv_heads * cfg.head_dim * 2; // K and V, bf16
            assert_eq!(s.step.kv_write_bytes, b * n * kv_per_token, "{name}: KV written");
            assert_eq!(s.kv_bytes_per_token, kv_per_token);
            // Weights are read once per step, whatever N (dense models: every matrix once).
            if !cfg.is_moe() {
                let d = decode_graph(&cfg, &DecodeParams { batch: b, context: c + n, ..Default::default() }).unwrap();
                let embed = |g: &Graph| graph_stats(g).by_kind["embedding"].weight_bytes;
                assert_eq!(
                    s.step.weight_bytes - embed(&g),
                    graph_stats(&d).step.weight_bytes - embed(&d),
                    "{name}: weights read once"
                );
            }
        }
    }
}

#[test]
fn the_causal_triangle_closed_form_without_a_window() {
    // llama-3.1-8b, N = 2048 from scratch: 4·L·Hq·D·N(N+1)/2.
    let cfg = preset("llama-3.1-8b").unwrap();
    let s = graph_stats(&prefill(&cfg, 1, 2048, 0));
    let attn = s.by_kind["attn_scores"].flops + s.by_kind["attn_value"].flops;
    assert_eq!(attn, 4 * 32 * 32 * 128 * (2048 * 2049 / 2));
    // And as 2 × active params × N: the step is within 1% of 2·P·N + attention.
    let (p_mult, _) = multiplying_params(&prefill(&cfg, 1, 2048, 0));
    let approx = 2.0 * p_mult as f64 * 2048.0 + attn as f64;
    let rel = (s.step.flops as f64 - approx).abs() / approx;
    assert!(rel < 0.07, "LM head on the last token only accounts for the difference: {rel}");
}

#[test]
fn sliding_windows_bound_what_each_prompt_token_sees() {
    let cfg = preset("mistral-7b-v0.1").unwrap();
    let w = cfg.sliding_window.unwrap();
    for (n, c) in [(100, w - 30), (50, w + 1000), (w + 10, 0)] {
        let g = prefill(&cfg, 1, n, c);
        let kv = g.ops.iter().find(|o| matches!(o.kind, OpKind::KvAppend { .. })).unwrap();
        let past = g.tensor(kv.inputs[2]).shape[2];
        let after = g.tensor(kv.outputs[0]).shape[2];
        assert_eq!(past, c.min(w), "the cache holds at most the window before the prompt");
        assert_eq!(after, (c.min(w) + n).min(w + n - 1), "every position one of the prompt's queries sees");
        let s = graph_stats(&g);
        let want = cfg.layers * 2 * 2 * cfg.heads * cfg.head_dim * brute_attended(c, n, Some(w));
        assert_eq!(s.by_kind["attn_scores"].flops + s.by_kind["attn_value"].flops, want, "N={n} C={c}");
    }
}

#[test]
fn prefill_graphs_have_rows_per_token_and_sample_the_last_one() {
    let cfg = preset("llama-3.2-1b").unwrap();
    let g = prefill(&cfg, 3, 5, 2);
    assert_eq!((g.batch, g.new_tokens, g.context, g.cached()), (3, 5, 7, 2));
    let tokens = g.tensors.iter().find(|t| t.kind == TensorKind::Input).unwrap();
    assert_eq!(tokens.shape, vec![15]);
    let last = g.ops.iter().find(|o| matches!(o.kind, OpKind::LastToken { .. })).unwrap();
    assert_eq!(g.tensor(last.inputs[0]).shape, vec![15, cfg.hidden]);
    assert_eq!(g.tensor(last.outputs[0]).shape, vec![3, cfg.hidden]);
    let sample = g.ops.last().unwrap();
    assert_eq!(g.tensor(sample.outputs[0]).shape, vec![3]);
}

#[test]
fn bad_prefill_parameters_name_the_field_and_range() {
    let cfg = preset("gpt2").unwrap();
    let e = prefill_graph(&cfg, &PrefillParams { prompt: 0, ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("prompt") && e.contains("at least 1"), "{e}");
    let e = prefill_graph(&cfg, &PrefillParams { prompt: 1000, cached: 100, ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("prompt + cached") && e.contains("1..=1024"), "{e}");
    let e = prefill_graph(&cfg, &PrefillParams { prompt: 4, act_dtype: DType::Int4, ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("activation dtype"), "{e}");
}

#[test]
fn the_verifier_checks_new_tokens_against_the_context() {
    let cfg = preset("gpt2").unwrap();
    let mut g = prefill(&cfg, 1, 4, 0);
    g.new_tokens = 5;
    let e = verify_graph(&g).unwrap_err().to_string();
    assert!(e.contains("new_tokens is 5"), "{e}");
}

#[test]
fn the_compiler_refuses_prefill_with_a_typed_error() {
    let cfg = preset("gpt2").unwrap();
    let g = prefill(&cfg, 1, 16, 0);
    let arch = arch_preset("wse3").unwrap();
    let Err(e) = compile(&g, &arch, &CompileOptions::default()) else { panic!("prefill does not compile yet") };
    assert!(matches!(e, CompileError::Prefill { new_tokens: 16, .. }), "{e:?}");
    assert!(e.to_string().contains("prefill is not mapped onto the wafer yet"), "{e}");
}

fn wafer(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wafer")).args(args).output().expect("run wafer")
}

fn json(args: &[&str]) -> serde_json::Value {
    let o = wafer(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn cli_graph_prompt_prints_the_prefill_step() {
    let v = json(&["graph", "--model", "llama-3.2-1b", "--prompt", "512", "--cached", "100", "--format", "json"]);
    assert_eq!((v["prompt"].as_u64(), v["cached"].as_u64(), v["context"].as_u64()), (Some(512), Some(100), Some(612)));
    let per_token = v["kv_bytes_per_token"].as_u64().unwrap();
    assert_eq!(v["step"]["kv_write_bytes"].as_u64().unwrap(), 512 * per_token);
    let d = json(&["graph", "--model", "llama-3.2-1b", "--format", "json"]);
    assert!(d.get("prompt").is_none(), "decode output is unchanged: no prefill fields");
    let text = String::from_utf8_lossy(&wafer(&["graph", "--model", "gpt2", "--prompt", "8"]).stdout).into_owned();
    assert!(
        text.contains("prefill step: batch 1, 8 prompt tokens over 0 cached") && text.contains("KV written"),
        "{text}"
    );
}

#[test]
fn cli_gpu_prompt_prints_ttft_beside_tpot() {
    let v = json(&["gpu", "--model", "llama-3.1-8b", "--prompt", "2048", "--cached", "1000", "--format", "json"]);
    let (ttft, tpot) = (v["ttft_ms"].as_f64().unwrap(), v["tpot_ms"].as_f64().unwrap());
    assert!(ttft > 5.0 * tpot, "a 2k prompt takes far longer than one token: {ttft} vs {tpot}");
    assert_eq!(v["prefill"]["ttft_ms"].as_f64().unwrap(), ttft);
    assert_eq!(v["context"].as_u64(), Some(3049), "the decode step after the prompt");
    let cal = json(&["gpu", "--calibration", "--format", "json"]);
    assert_eq!(cal["ttft"]["rows"].as_array().unwrap().len(), 13);
    assert!(cal["median_abs_rel_error"].as_f64().is_some(), "the TPOT report keeps its fields");
}

#[test]
fn cli_prefill_flags_are_checked() {
    for (args, needle) in [
        (vec!["graph", "--cached", "5"], "--prompt"),
        (vec!["graph", "--prompt", "0"], "0 is out of range; allowed 1..="),
        (vec!["gpu", "--prompt", "-3"], "-3 is negative"),
        (vec!["graph", "--prompt", "4", "--context", "9"], "cannot be used with"),
        (vec!["graph", "--model", "gpt2", "--prompt", "1000", "--cached", "100"], "1..=1024"),
    ] {
        let o = wafer(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn cli_compare_prompt_shows_time_to_first_token_on_both_sides() {
    let args = ["compare", "--model", "llama-3.2-1b", "--prompt", "512", "--cached", "100", "--engine", "analytical"];
    let mut j = args.to_vec();
    j.extend(["--format", "json"]);
    let v = json(&j);
    let p = &v["prefill"];
    assert_eq!((p["prompt"].as_u64(), p["cached"].as_u64()), (Some(512), Some(100)));
    let (wafer_ttft, gpu_ttft) = (p["ttft_us"].as_f64().unwrap(), p["gpu_ttft_us"].as_f64().unwrap());
    // The first token waits for the whole prompt: longer than one decode step on both sides.
    assert!(wafer_ttft > v["simulation"]["tpot_us"].as_f64().unwrap(), "{p}");
    assert!(gpu_ttft > 1e3 * v["gpu"]["tpot_ms"].as_f64().unwrap(), "{p}");
    assert_eq!(v["inputs"]["context"].as_u64(), Some(613), "the decode step after the prompt");
    let text = String::from_utf8_lossy(&wafer(&args).stdout).into_owned();
    assert!(text.contains("time to first token (512 new over 100 cached)") && text.contains("round trip"), "{text}");
    // The wafer's cell says how the prompt ran.
    let row = text.lines().find(|l| l.starts_with("time to first token")).unwrap();
    assert!(["streamed", "GEMMs"].iter().any(|w| row.contains(w)), "{row}");
    // Without --prompt, compare is unchanged.
    let v = json(&["compare", "--model", "gpt2", "--engine", "analytical", "--format", "json"]);
    assert!(v["prefill"].is_null());
}

/// llama-3.2-1b's decode mapping on one WSE-3 at `context`, with room for `chunk`.
fn decode_mapping(strategy: wafer_compiler::Strategy, chunk: u64) -> wafer_ir::Program {
    let cfg = preset("llama-3.2-1b").unwrap();
    let g = decode_graph(&cfg, &DecodeParams { context: 2048, ..Default::default() }).unwrap();
    let opts = CompileOptions { strategy, prefill_chunk: chunk, ..Default::default() };
    compile(&g, &arch_preset("wse3").unwrap(), &opts).unwrap().program
}

#[test]
fn a_prompt_chunk_is_the_decode_mapping_with_chunk_rows_and_one_kv_cache_per_sequence() {
    use wafer_compiler::{prefill_chunk, Strategy};
    let p = decode_mapping(Strategy::Spread, 4);
    let (c, info) = prefill_chunk(&p, 4).unwrap();
    assert_eq!((c.new_tokens, c.rows(), c.batch), (4, 4, 1));
    assert_eq!(info.pes_used, wafer_ir::verify_program(&p).unwrap().pes_used, "the same PEs");
    for (a, b) in p.regions.iter().zip(&c.regions) {
        assert_eq!((a.rect, &a.work), (b.rect, &b.work), "{}: same place and tiling", a.name);
        assert_eq!(a.sram.kv, b.sram.kv, "{}: one KV cache per sequence", a.name);
        assert!(b.sram.buffers >= a.sram.buffers, "{}", a.name);
    }
    // Activations carry 4 rows: every forward and residual route carries 4× the bytes (bf16, no packing).
    for (a, b) in p.routes.iter().zip(&c.routes) {
        if matches!(a.kind, wafer_ir::RouteKind::Forward | wafer_ir::RouteKind::Residual) {
            assert_eq!(b.bytes, 4 * a.bytes, "{:?}", a.kind);
        }
    }
    // The textual form states the chunk and reads back.
    let text = wafer_ir::print_program(&c);
    assert!(text.lines().next().unwrap().contains("new_tokens=4"));
    assert_eq!(wafer_ir::parse_program(&text).unwrap(), c);
    assert!(!wafer_ir::print_program(&p).lines().next().unwrap().contains("new_tokens"), "decode text unchanged");
}

#[test]
fn a_chunk_the_mapping_has_no_room_for_is_the_verifiers_sram_error() {
    use wafer_compiler::{prefill_chunk, Strategy};
    let p = decode_mapping(Strategy::Spread, 1);
    let e = (1..=12).map(|k| prefill_chunk(&p, 1 << k)).find_map(Result::err).expect("some chunk overflows a PE");
    assert!(matches!(e, CompileError::Verify { .. }), "{e:?}");
    assert!(e.to_string().contains("SRAM") || format!("{e:?}").contains("sram"), "{e}");
}

#[test]
fn chunks_amortise_a_shared_mapping_and_the_engines_price_them() {
    use wafer_compiler::{prefill_chunk, Strategy};
    use wafer_simulator::{simulate_analytical, streamed_prefill};
    let p = decode_mapping(Strategy::Spread, 4);
    let info = wafer_ir::verify_program(&p).unwrap();
    let one = streamed_prefill(&p, &simulate_analytical(&p, &info).finished().unwrap(), 512);
    let (c, ci) = prefill_chunk(&p, 4).unwrap();
    let step4 = simulate_analytical(&c, &ci).finished().unwrap();
    let four = streamed_prefill(&c, &step4, 512);
    assert_eq!((one.chunk, four.chunk), (1, 4));
    // A spread mapping runs every region on the same PEs: token by token, the
    // prompt pays ~512 whole steps; in chunks of 4, 128 steps of a bigger one.
    assert!(four.ttft_us < 0.8 * one.ttft_us, "{} vs {}", four.ttft_us, one.ttft_us);
    assert!(step4.cycles > one.step_cycles, "a chunk step does more work than a token step");
}

#[test]
fn cli_run_prompt_streams_in_the_fastest_chunk_the_mapping_holds() {
    let v = json(&[
        "run",
        "--model",
        "llama-3.2-1b",
        "--strategy",
        "spread",
        "--prefill-chunk",
        "4",
        "--prompt",
        "512",
        "--no-gpu",
        "--engine",
        "analytical",
        "--format",
        "json",
    ]);
    let p = &v["prefill"];
    let chunks: Vec<u64> = p["chunks"].as_array().unwrap().iter().map(|c| c["chunk"].as_u64().unwrap()).collect();
    assert_eq!(&chunks[..3], &[1, 2, 4], "{p}");
    let best =
        |k: &str| p[k].as_array().unwrap().iter().map(|c| c["ttft_us"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    // Room for chunks of 4 is room for the gemm way's blocks too: the faster way is kept.
    assert_eq!(p["ttft_us"].as_f64().unwrap(), best("chunks").min(best("gemm_blocks")), "{p}");
    let stream_best = p["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .min_by(|a, b| a["ttft_us"].as_f64().unwrap().total_cmp(&b["ttft_us"].as_f64().unwrap()));
    assert!(stream_best.unwrap()["chunk"].as_u64().unwrap() >= 2, "{p}");
}

/// The gemm way (`wafer_cost::prefill`) on `p`: the fastest block size.
fn gemm_way(p: &wafer_ir::Program, prompt: u64) -> Result<wafer_cost::GemmSearch, wafer_cost::GemmPrefillError> {
    let info = wafer_ir::verify_program(p).unwrap();
    wafer_cost::search_gemm_prefill(p, &info, prompt, 4096)
}

#[test]
fn on_a_layer_pipeline_the_gemm_way_beats_streaming_the_prompt() {
    use wafer_compiler::{prefill_chunk, Strategy};
    use wafer_simulator::{simulate_analytical, streamed_prefill};
    let p = decode_mapping(Strategy::Pipeline, 1);
    let info = wafer_ir::verify_program(&p).unwrap();
    let mut stream = streamed_prefill(&p, &simulate_analytical(&p, &info).finished().unwrap(), 512).ttft_cycles;
    for c in [2u64, 4, 8] {
        if let Ok((q, qi)) = prefill_chunk(&p, c) {
            stream =
                stream.min(streamed_prefill(&q, &simulate_analytical(&q, &qi).finished().unwrap(), 512).ttft_cycles);
        }
    }
    let g = gemm_way(&p, 512).unwrap();
    // Streaming holds a region's PEs while they wait for their inputs and
    // reductions; as GEMMs a PE takes the next block once it has computed and
    // added the last one.
    assert!(g.best.ttft_cycles < stream, "gemm {} vs stream {}", g.best.ttft_cycles, stream);
    assert_eq!(g.best.ttft_cycles, g.tried.iter().map(|t| t.2).fold(f64::MAX, f64::min), "the fastest block kept");
    assert_eq!(g.best.blocks, 512u64.div_ceil(g.best.tile_m));
    assert_eq!(
        g.best.ttft_cycles,
        g.best.fill_cycles + (g.best.blocks - 1) as f64 * g.best.block_cycles + g.best.tail_cycles
    );
}

#[test]
fn the_gemm_way_is_never_faster_than_every_pe_computing_at_its_peak() {
    use wafer_compiler::Strategy;
    let cfg = preset("llama-3.2-1b").unwrap();
    let arch = arch_preset("wse3").unwrap();
    let p = decode_mapping(Strategy::Pipeline, 1);
    for prompt in [64u64, 512, 1536] {
        let g = gemm_way(&p, prompt).unwrap().best;
        let flops = graph_stats(&prefill(&cfg, 1, prompt, 0)).flops_per_token as f64;
        let pes = (arch.mesh_width as u64 * arch.mesh_height as u64) as f64;
        let peak = 2.0 * arch.pe.simd_mixed as f64; // FLOP per cycle per PE at the 16-bit multiply-add width
        let floor = flops / (pes * peak);
        assert!(
            g.ttft_cycles > floor,
            "prompt {prompt}: {} cycles under the {floor:.0}-cycle compute floor",
            g.ttft_cycles
        );
    }
}

#[test]
fn a_longer_prompt_takes_longer_by_its_blocks_at_the_bottleneck() {
    use wafer_cost::GemmSchedule::Pipelined;
    let p = decode_mapping(wafer_compiler::Strategy::Pipeline, 1);
    let info = wafer_ir::verify_program(&p).unwrap();
    let a = wafer_cost::gemm_prefill(&p, &info, 512, 1, Pipelined).unwrap();
    let b = wafer_cost::gemm_prefill(&p, &info, 1024, 1, Pipelined).unwrap();
    assert_eq!((a.fill_cycles, a.block_cycles), (b.fill_cycles, b.block_cycles), "same mapping, same blocks");
    assert!((b.ttft_cycles - a.ttft_cycles - 512.0 * a.block_cycles).abs() < 1e-6 * b.ttft_cycles);
    // One token is a trip through the layers, as a decode step is: within 25% of the closed form's.
    let one = wafer_cost::gemm_prefill(&p, &info, 1, 1, Pipelined).unwrap();
    let step = wafer_cost::estimate(&p, &info).unwrap().cycles;
    assert!((one.ttft_cycles / step - 1.0).abs() < 0.25, "{} vs decode step {step}", one.ttft_cycles);
}

#[test]
fn blocks_whose_tiles_do_not_fit_are_refused_naming_the_pe_and_the_bytes() {
    use wafer_cost::{GemmPrefillError, GemmSchedule};
    // A spread mapping stacks every layer on the same PEs: with a block in
    // flight in every layer their tiles add up, and it has no room for them;
    // layer by layer, one region's tiles and the staged prompt fit.
    let p = decode_mapping(wafer_compiler::Strategy::Spread, 1);
    let info = wafer_ir::verify_program(&p).unwrap();
    let e = wafer_cost::gemm_prefill(&p, &info, 512, 1, GemmSchedule::Pipelined).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, GemmPrefillError::DoesNotFit { tile_m: 1, .. }), "{e:?}");
    assert!(text.starts_with("pipelined blocks of 1 tokens do not fit: pe("), "{text}");
    assert!(text.contains("regions from `") && text.contains("> 49152 per PE"), "{text}");
    let layers = wafer_cost::gemm_prefill(&p, &info, 512, 1, GemmSchedule::LayerByLayer).unwrap();
    assert_eq!(layers.schedule, GemmSchedule::LayerByLayer);
    let big = wafer_cost::gemm_prefill(&p, &info, 2048, 2048, GemmSchedule::LayerByLayer).unwrap_err();
    assert!(matches!(big, GemmPrefillError::DoesNotFit { schedule: GemmSchedule::LayerByLayer, .. }), "{big:?}");
    assert!(big.to_string().starts_with("layer_by_layer blocks of 2048 tokens do not fit: pe("), "{big}");
    // A prompt longer than the positions the mapping holds has nowhere for its KV.
    let long = wafer_cost::gemm_prefill(&p, &info, p.context + 1, 1, GemmSchedule::LayerByLayer).unwrap_err();
    assert!(matches!(long, GemmPrefillError::PromptTooLong { .. }), "{long:?}");
    // The search stops each schedule at its first block size that does not
    // fit, keeps the best before it, and doubles in between.
    let g = gemm_way(&p, 512).unwrap();
    assert_ne!(g.best.schedule, GemmSchedule::Pipelined);
    assert!(g.tried.iter().all(|t| t.0 != GemmSchedule::Pipelined), "{:?}", g.tried);
    for s in [GemmSchedule::LayerByLayer, GemmSchedule::Cannon] {
        let sizes: Vec<u64> = g.tried.iter().filter(|t| t.0 == s).map(|t| t.1).collect();
        assert!(sizes.first() == Some(&1) && sizes.windows(2).all(|w| w[1] == 2 * w[0]), "{s:?}: {sizes:?}");
    }
    assert!(g
        .limits
        .iter()
        .any(|l| matches!(l, GemmPrefillError::DoesNotFit { schedule: GemmSchedule::Pipelined, tile_m: 1, .. })));
}

#[test]
fn layer_by_layer_costs_a_layer_pipeline_its_overlap_and_little_on_stacked_layers() {
    use wafer_cost::GemmSchedule::{LayerByLayer, Pipelined};
    let p = decode_mapping(wafer_compiler::Strategy::Pipeline, 1);
    let info = wafer_ir::verify_program(&p).unwrap();
    let pipe = wafer_cost::gemm_prefill(&p, &info, 512, 1, Pipelined).unwrap();
    let layers = wafer_cost::gemm_prefill(&p, &info, 512, 1, LayerByLayer).unwrap();
    // Disjoint regions overlap when pipelined: one at a time is several times slower.
    assert!(layers.ttft_cycles > 3.0 * pipe.ttft_cycles, "{} vs {}", layers.ttft_cycles, pipe.ttft_cycles);
    // A region alone on its PEs: layer by layer, a block costs the sum of the regions' paces.
    assert!(layers.block_cycles >= pipe.block_cycles);
}

#[test]
fn cli_run_prompt_takes_the_faster_way_and_shows_both() {
    let v = json(&[
        "run",
        "--model",
        "llama-3.2-1b",
        "--strategy",
        "pipeline",
        "--prompt",
        "512",
        "--no-gpu",
        "--engine",
        "analytical",
        "--format",
        "json",
    ]);
    let p = &v["prefill"];
    let best =
        |k: &str| p[k].as_array().unwrap().iter().map(|c| c["ttft_us"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    let (stream, gemm) = (best("chunks"), best("gemm_blocks"));
    assert_eq!(p["ttft_us"].as_f64().unwrap(), stream.min(gemm), "{p}");
    assert!(gemm < stream, "a layer pipeline runs a prompt faster as GEMMs: {p}");
    assert_eq!(p["way"], "gemm", "pipelined through its layers: {p}");
    let schedules: std::collections::BTreeSet<&str> =
        p["gemm_blocks"].as_array().unwrap().iter().map(|b| b["schedule"].as_str().unwrap()).collect();
    assert_eq!(schedules, ["layer_by_layer", "pipelined"].into_iter().collect(), "{p}");
    let text = String::from_utf8(
        wafer(&[
            "run",
            "--model",
            "llama-3.2-1b",
            "--strategy",
            "pipeline",
            "--prompt",
            "512",
            "--no-gpu",
            "--engine",
            "analytical",
        ])
        .stdout,
    )
    .unwrap();
    assert!(
        text.contains("as GEMMs over the mapping's resident weights in blocks of")
            && text.contains("streamed in chunks of"),
        "{text}"
    );
}

#[test]
fn played_block_by_block_the_pipelined_gemm_way_takes_what_its_closed_form_says() {
    use wafer_cost::GemmSchedule::{LayerByLayer, Pipelined};
    // Disjoint regions (a layer pipeline): the replay is the closed form;
    // four layers stacked per block (hybrid:4): PEs shared by 14 regions, a
    // region's PEs starting apart, the first blocks crowding each other —
    // the closed form's pace is still what the replay reaches once full.
    let cases = [
        (wafer_compiler::Strategy::Pipeline, [1e-9, 1e-9, 1e-9]),
        (wafer_compiler::Strategy::Hybrid(4), [1e-9, 0.25, 0.10]),
    ];
    for (strategy, tolerance) in cases {
        let p = decode_mapping(strategy, 1);
        let info = wafer_ir::verify_program(&p).unwrap();
        for (prompt, tol) in [1u64, 64, 512].into_iter().zip(tolerance) {
            let plan = wafer_cost::gemm_plan(&p, &info, prompt, 1, Pipelined).unwrap();
            let r = wafer_simulator::replay_gemm_prefill(&plan).unwrap();
            assert_eq!(r.blocks, prompt);
            let v = r.vs_closed_form;
            assert!(v > 1.0 - 1e-9, "{strategy:?} prompt {prompt}: no schedule beats the busiest PEs ({v:.4})");
            assert!(v < 1.0 + tol, "{strategy:?} prompt {prompt}: replay {v:.4}× the closed form");
        }
        let plan = wafer_cost::gemm_plan(&p, &info, 64, 1, LayerByLayer).unwrap();
        assert!(matches!(
            wafer_simulator::replay_gemm_prefill(&plan),
            Err(wafer_simulator::GemmReplayError::NotPipelined)
        ));
    }
}

#[test]
fn on_square_blocks_cannon_runs_the_calibrated_meshgemm_over_the_whole_prompt() {
    use wafer_cost::GemmSchedule::{Cannon, LayerByLayer};
    use wafer_ir::Work;
    let cfg = preset("llama-3.2-1b").unwrap();
    let g = decode_graph(&cfg, &DecodeParams { context: 2048, ..Default::default() }).unwrap();
    let opts = CompileOptions { strategy: wafer_compiler::Strategy::Spread, grid: Some(512), ..Default::default() };
    let p = compile(&g, &arch_preset("wse3").unwrap(), &opts).unwrap().program;
    let info = wafer_ir::verify_program(&p).unwrap();
    let (prompt, tile_m) = (1024u64, 2u64);
    let plan = wafer_cost::gemm_plan(&p, &info, prompt, tile_m, Cannon).unwrap();
    let layers = wafer_cost::gemm_plan(&p, &info, prompt, tile_m, LayerByLayer).unwrap();
    let mut squares = 0;
    for (i, (r, pr)) in p.regions.iter().zip(&plan.regions).enumerate() {
        let square = matches!(r.work, Work::Gemv { argmax: false, .. }) && r.rect.w == r.rect.h;
        assert_eq!(pr.whole.is_some(), square, "{}", r.name);
        assert!(layers.regions[i].whole.is_none());
        if let (Some(t), Work::Gemv { tile_k, tile_n, acc, epilogue_ops, glu, norm: false, .. }) = (pr.whole, &r.work) {
            // One pass of P · tile_m rows: MeshGEMM's P steps on the square,
            // priced by the kernel model fitted to the WSE-3 MeshGEMM rows.
            let grid = r.rect.w as u64;
            let passes = prompt.div_ceil(grid * tile_m);
            let (c, m) = wafer_cost::timing::gemm(&p.arch, grid, tile_m, *tile_k, *tile_n, p.weight_dtype, *acc);
            let out = if *glu { tile_n / 2 } else { *tile_n };
            let ew = wafer_cost::timing::elementwise(&p.arch, tile_m * out, *epilogue_ops);
            assert_eq!(t, (passes * (c + m + ew)) as f64, "{}", r.name);
            squares += 1;
            // The next square GEMM on the same PEs finds its input in place.
            for x in &pr.inputs {
                let src = &p.regions[x.src];
                assert!(plan.regions[x.src].whole.is_none() || src.rect != r.rect, "{} <- {}", r.name, src.name);
            }
        }
    }
    assert!(squares >= 16, "o_proj and mlp_down of every layer are squares on a 512 grid ({squares})");
    // The search weighs Cannon beside the other schedules.
    let s = wafer_cost::search_gemm_prefill(&p, &info, prompt, 4096).unwrap();
    assert!(s.tried.iter().any(|t| t.0 == Cannon) && s.tried.iter().any(|t| t.0 == LayerByLayer), "{:?}", s.tried);
}

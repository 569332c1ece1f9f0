//! A compiled prefill, run by the functional engine, equals the dense
//! reference: the prompt streams through the decode mapping in chunks
//! (`wafer_compiler::prefill_chunk` of the mapping compiled at each chunk's
//! last position; a last partial chunk gets a smaller chunk program, a last
//! single token the decode program itself), then decode steps run on the
//! decode programs. The last chunk's logits equal the reference prefill's
//! (each sequence's last prompt token), the KV cache the chunks leave equals
//! the reference's, and the decode steps after it agree — for tiny llama
//! (GQA + RoPE) and gpt2 (learned positions) on three meshes, pipeline and
//! spread mappings, chunks of 2, 3 and 5, from an empty and a seeded cache;
//! for a sliding window while the context fits it (and a typed refusal once
//! a chunk would wrap the ring). Broken chunk programs are caught.

use ndarray::Array2;
use wafer_compiler::{prefill_chunk, CompileOptions, Strategy};
use wafer_ir::{arch_preset, ArchSpec, DType, Graph, Program, ProgramInfo, Work};
use wafer_simulator::{run_functional, run_reference, FunctionalError, KvState, Weights};
use wafer_workloads::{decode_graph, parse_hf_config, prefill_graph, DecodeParams, ModelConfig, PrefillParams};

const LLAMA: &str = r#"{"model_type":"llama","hidden_size":16,"intermediate_size":32,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":64}"#;
const GPT2: &str = r#"{"model_type":"gpt2","n_embd":16,"n_layer":2,"n_head":4,"n_positions":64,"vocab_size":64}"#;
const MISTRAL: &str = r#"{"model_type":"mistral","hidden_size":16,"intermediate_size":32,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":1,"vocab_size":64,"sliding_window":6}"#;

const F: DType = DType::F32;
const TOL: f64 = 1e-4;

fn model(json: &str, name: &str) -> ModelConfig {
    parse_hf_config(json, "test", name).unwrap()
}

fn decode_at(cfg: &ModelConfig, context: u64, batch: u64) -> Graph {
    decode_graph(cfg, &DecodeParams { batch, context, weight_dtype: F, act_dtype: F, kv_dtype: F }).unwrap()
}

fn prefill_of(cfg: &ModelConfig, cached: u64, prompt: u64, batch: u64) -> Graph {
    let p = PrefillParams { batch, prompt, cached, weight_dtype: F, act_dtype: F, kv_dtype: F };
    prefill_graph(cfg, &p).unwrap()
}

/// A `mesh:WxH` machine with `usable` bytes of SRAM per PE after a 1 KiB code
/// reserve, so the tiny models' matrices are tiled over many PEs.
fn small_mesh(w: u32, h: u32, usable: u64) -> ArchSpec {
    let mut a = arch_preset(&format!("mesh:{w}x{h}")).unwrap();
    a.pe.sram_reserved_bytes = 1024;
    a.pe.sram_bytes = 1024 + usable;
    a
}

const MESHES: [(u32, u32, u64); 3] = [(24, 24, 4096), (32, 16, 4096), (40, 40, 8192)];

/// Max |a − b| / max(|b|∞, tiny).
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}

fn rel2(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    assert_eq!(a.dim(), b.dim(), "logits shape");
    rel(a.as_slice().unwrap(), b.as_slice().unwrap())
}

/// One streamed prompt: how it is mapped and cut.
struct Case<'a> {
    cfg: &'a ModelConfig,
    arch: &'a ArchSpec,
    strategy: Strategy,
    batch: u64,
    /// Positions already cached before the prompt (seeded identically on both sides).
    cached: u64,
    prompt: u64,
    chunk: u64,
    decode_steps: u64,
}

/// What the comparison measured.
#[derive(Debug)]
struct Errors {
    /// The last chunk's logits vs the reference prefill's.
    prefill: f64,
    /// The KV caches the chunks left vs the reference's, worst layer.
    kv: f64,
    /// Each decode step after the prompt.
    decode: Vec<f64>,
    /// Tokens of the programs run, per step: the chunk sizes, then 1s.
    chunks: Vec<u64>,
}

impl Errors {
    fn max(&self) -> f64 {
        self.decode.iter().copied().fold(self.prefill.max(self.kv), f64::max)
    }
}

/// The decode mapping of the step at `context`, with room for `chunk` tokens.
fn compile(c: &Case, context: u64) -> Program {
    let g = decode_at(c.cfg, context, c.batch);
    let opts = CompileOptions { strategy: c.strategy, prefill_chunk: c.chunk, ..Default::default() };
    wafer_compiler::compile(&g, c.arch, &opts)
        .unwrap_or_else(|e| panic!("{:?} at context {context}: {e}", c.strategy))
        .program
}

/// Streams the case's prompt through the functional engine and the same
/// prompt through the reference's prefill graph, then decodes; `mutate`
/// may break the program of step `i` (0-based, chunks first).
fn stream(c: &Case, mutate: &dyn Fn(usize, &mut Program)) -> Result<Errors, FunctionalError> {
    let (cfg, batch) = (c.cfg, c.batch);
    let weights = Weights::random(&decode_at(cfg, 1, batch), 42);
    let (kv_ref0, kv_fun0) = if c.cached > 0 {
        KvState::random_past(&decode_at(cfg, c.cached + 1, batch), 11)
    } else {
        (KvState::new(), KvState::new())
    };
    let (mut kv_ref, mut kv_fun) = (kv_ref0, kv_fun0);
    let tok = |b: u64, i: u64| (b * 13 + i * 7 + 1) % cfg.vocab;

    // The reference: one prefill step of the whole prompt.
    let pf = prefill_of(cfg, c.cached, c.prompt, batch);
    let flat: Vec<u64> = (0..batch).flat_map(|b| (0..c.prompt).map(move |i| tok(b, i))).collect();
    let want = run_reference(&pf, &weights, &flat, &mut kv_ref).unwrap();

    // The functional engine: the prompt in chunks, each on the decode
    // mapping compiled at the chunk's last position, restated for its size.
    let (mut done, mut step, mut chunks, mut last) = (0u64, 0usize, Vec::new(), None);
    while done < c.prompt {
        let n = c.chunk.min(c.prompt - done);
        let context = c.cached + done + n;
        let decode = compile(c, context);
        let (mut p, g) = if n > 1 {
            let (p, _) = prefill_chunk(&decode, n).unwrap_or_else(|e| panic!("chunk of {n}: {e}"));
            (p, prefill_of(cfg, c.cached + done, n, batch))
        } else {
            (decode, decode_at(cfg, context, batch))
        };
        mutate(step, &mut p);
        let info: ProgramInfo = wafer_ir::verify_program(&p).unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<u64> = (0..batch).flat_map(|b| (done..done + n).map(move |i| tok(b, i))).collect();
        last = Some(run_functional(&p, &info, &g, &weights, &ids, &mut kv_fun)?);
        chunks.push(n);
        done += n;
        step += 1;
    }
    let got = last.expect("a prompt of at least one token");
    let prefill = rel2(&got.logits, &want.logits);
    if prefill <= TOL {
        assert_eq!(got.sampled, want.sampled, "the first output token");
    }
    // Before any ring wraps, the engine's slot order is the reference's position order.
    let mut kv = 0f64;
    for l in 0..cfg.layers {
        for kind in ["k", "v"] {
            let key = format!("l{l}.{kind}_cache");
            let (a, b) = (&kv_fun.caches[&key], &kv_ref.caches[&key]);
            assert_eq!(a.dim(), b.dim(), "{key}: positions after the prompt");
            kv = kv.max(rel(&a.iter().copied().collect::<Vec<_>>(), &b.iter().copied().collect::<Vec<_>>()));
        }
    }

    // Decode steps on the decode mappings, the answer tokens teacher-forced.
    let mut decode = Vec::new();
    for s in 0..c.decode_steps {
        let context = c.cached + c.prompt + s + 1;
        let g = decode_at(cfg, context, batch);
        let mut p = compile(c, context);
        mutate(step, &mut p);
        let info = wafer_ir::verify_program(&p).unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<u64> = (0..batch).map(|b| tok(b, c.prompt + s)).collect();
        let want = run_reference(&g, &weights, &ids, &mut kv_ref).unwrap();
        let got = run_functional(&p, &info, &g, &weights, &ids, &mut kv_fun)?;
        let e = rel2(&got.logits, &want.logits);
        if e <= TOL {
            assert_eq!(got.sampled, want.sampled, "decode step {s}: sampled tokens");
        }
        decode.push(e);
        chunks.push(1);
        step += 1;
    }
    Ok(Errors { prefill, kv, decode, chunks })
}

fn no_change(_: usize, _: &mut Program) {}

fn run_grid(cfg: &ModelConfig, name: &str, batch: u64) -> f64 {
    let mut worst = 0f64;
    for (w, h, usable) in MESHES {
        let arch = small_mesh(w, h, usable);
        for strategy in [Strategy::Pipeline, Strategy::Spread] {
            for (chunk, cached) in [(2, 0), (3, 0), (5, 2)] {
                let case = Case { cfg, arch: &arch, strategy, batch, cached, prompt: 8, chunk, decode_steps: 3 };
                let e = stream(&case, &no_change)
                    .unwrap_or_else(|e| panic!("{name} {strategy:?} mesh:{w}x{h} chunk {chunk}: {e}"));
                println!(
                    "{name} batch {batch} {strategy:?} mesh:{w}x{h} chunks {:?} (cached {cached}): prefill {:.2e}, kv {:.2e}, decode {:?}",
                    e.chunks,
                    e.prefill,
                    e.kv,
                    e.decode.iter().map(|x| format!("{x:.2e}")).collect::<Vec<_>>()
                );
                assert!(e.chunks.contains(&chunk), "{:?}", e.chunks);
                assert!(e.max() <= TOL, "{name} {strategy:?} mesh:{w}x{h} chunk {chunk}: {e:?}");
                worst = worst.max(e.max());
            }
        }
    }
    worst
}

#[test]
fn tiny_llama_gqa_rope_prefilled_in_chunks_matches_the_reference() {
    let cfg = model(LLAMA, "tiny-llama");
    assert_eq!((cfg.heads, cfg.kv_heads), (4, 2));
    let worst = run_grid(&cfg, "tiny llama", 2);
    println!("tiny llama: worst max rel err {worst:.2e}");
}

#[test]
fn tiny_gpt2_learned_positions_prefilled_in_chunks_matches_the_reference() {
    let cfg = model(GPT2, "tiny-gpt2");
    assert!(cfg.learned_positions);
    let worst = run_grid(&cfg, "tiny gpt2", 1);
    println!("tiny gpt2: worst max rel err {worst:.2e}");
}

#[test]
fn a_sliding_window_prefills_in_chunks_while_the_context_fits_it_then_decodes_past_it() {
    // Window 6: a prompt of 6 in chunks of 3 and 3 fills the ring exactly;
    // the 3 decode steps then overwrite its oldest slots.
    let cfg = model(MISTRAL, "tiny-mistral");
    let arch = small_mesh(24, 24, 4096);
    for strategy in [Strategy::Pipeline, Strategy::Spread] {
        let case = Case { cfg: &cfg, arch: &arch, strategy, batch: 1, cached: 0, prompt: 6, chunk: 3, decode_steps: 3 };
        let e = stream(&case, &no_change).unwrap();
        println!("tiny mistral (window 6) {strategy:?}: {e:?}");
        assert_eq!(e.chunks, vec![3, 3, 1, 1, 1]);
        assert!(e.max() <= TOL, "{e:?}");
    }
    // A chunk that would wrap the ring is refused, naming the sizes.
    let case = Case {
        cfg: &cfg,
        arch: &arch,
        strategy: Strategy::Pipeline,
        batch: 1,
        cached: 0,
        prompt: 8,
        chunk: 4,
        decode_steps: 0,
    };
    let e = stream(&case, &no_change).unwrap_err();
    assert!(matches!(e, FunctionalError::ChunkWindow { chunk: 4, window: 6, context: 8, .. }), "{e:?}");
}

/// The first region whose op list contains `needle`.
fn region_with(p: &Program, needle: &str) -> usize {
    p.regions.iter().position(|r| r.ops.iter().any(|o| o.contains(needle))).unwrap()
}

#[test]
fn broken_chunk_programs_are_caught() {
    let cfg = model(LLAMA, "tiny-llama");
    let arch = small_mesh(24, 24, 4096);
    let case = Case {
        cfg: &cfg,
        arch: &arch,
        strategy: Strategy::Pipeline,
        batch: 2,
        cached: 0,
        prompt: 6,
        chunk: 3,
        decode_steps: 2,
    };
    // Baseline: the unbroken programs match.
    assert!(stream(&case, &no_change).unwrap().max() <= TOL);

    // 1. The second chunk's K/V appended one position early in layer 0
    // (over the first chunk's last token): refused, naming the region.
    let early = |step: usize, p: &mut Program| {
        if step == 1 {
            let r = region_with(p, "l0.attn.kv_append");
            if let Work::Attention { slot, .. } = &mut p.regions[r].work {
                *slot -= 1;
            }
        }
    };
    let e = stream(&case, &early).unwrap_err().to_string();
    println!("K/V appended one position early: {e}");
    assert!(e.contains("l0.attention") && e.contains("do not follow"), "{e}");

    // 2. q and k rows stacked the wrong way round in layer 1's fused qkv
    // region of the chunk programs only: the prompt's logits and KV go wrong
    // (and so do the decode steps that read that KV).
    let swap_qk = |step: usize, p: &mut Program| {
        if p.new_tokens > 1 && step < 2 {
            let r = region_with(p, "l1.attn.q_proj");
            p.regions[r].ops.swap(1, 2);
        }
    };
    let e = stream(&case, &swap_qk).unwrap();
    println!("q/k swapped in the chunk programs: {e:?}");
    assert!(e.prefill > 1e-2 && e.kv > 1e-2, "{e:?}");

    // 3. A chunk program run against the decode graph of its context: a
    // typed mismatch, not numbers for the wrong step.
    let decode = compile(&case, 3);
    let (p, info) = prefill_chunk(&decode, 3).unwrap();
    let g = decode_at(&cfg, 3, 2);
    let w = Weights::random(&g, 42);
    let e = run_functional(&p, &info, &g, &w, &[1, 2, 3, 4, 5, 6], &mut KvState::new()).unwrap_err();
    assert!(matches!(e, FunctionalError::Mismatch { program_new_tokens: 3, graph_new_tokens: 1, .. }), "{e:?}");
    // And with the prefill graph but one token per sequence: a typed count error.
    let g = prefill_of(&cfg, 0, 3, 2);
    let e = run_functional(&p, &info, &g, &w, &[1, 2], &mut KvState::new()).unwrap_err();
    assert!(matches!(e, FunctionalError::TokenCount { expected: 6, got: 2 }), "{e:?}");
}

//! Functional engine vs the dense reference: tiny llama (GQA) and gpt2 models
//! on small meshes — hand-mapped and compiled by `wafer_compiler::compile` —
//! over six decode steps with a growing KV cache, and deliberately broken
//! partitions that must be caught.

use ndarray::Array2;
use std::collections::BTreeMap;
use wafer_ir::{
    arch_preset, route_messages, sram_need, verify_program, Graph, OpKind, Program, ProgramInfo, Rect, Reduce, Region,
    RegionId, Route, RouteId, RouteKind, Step, Work,
};
use wafer_simulator::{run_functional, run_reference, FunctionalError, KvState, Weights};
use wafer_workloads::{decode_graph, parse_hf_config, DecodeParams, ModelConfig};

const LLAMA: &str = r#"{"model_type":"llama","hidden_size":16,"intermediate_size":32,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":64}"#;
const GPT2: &str = r#"{"model_type":"gpt2","n_embd":16,"n_layer":2,"n_head":4,"n_positions":64,"vocab_size":64}"#;

fn model(json: &str, name: &str) -> ModelConfig {
    parse_hf_config(json, "test", name).unwrap()
}

fn graph(cfg: &ModelConfig, context: u64, batch: u64) -> Graph {
    let f = wafer_ir::DType::F32;
    decode_graph(cfg, &DecodeParams { batch, context, weight_dtype: f, act_dtype: f, kv_dtype: f }).unwrap()
}

/// Grid shape and reduce shape a hand-built region gets: (rows, cols, reduce).
type Shape = (u32, u32, Reduce);

/// A hand mapping, independent of the compiler: fuses the graph by the
/// compiler's conventions and tiles each Gemv over the grid `shape(region
/// index, n, k)` picks (uneven edge tiles, chain / tree / two-level reduces,
/// several rows per attention head — shapes the compiler's search may not
/// pick), regions side by side on row 0.
fn hand_compile(g: &Graph, shape: &dyn Fn(usize, u64, u64) -> Shape, attn_cols: u32, rows_per_head: u32) -> Program {
    hand_compile_split(g, shape, attn_cols, rows_per_head, 1)
}

/// [`hand_compile`] with every attention head block split into `split`
/// sub-blocks by sequence (`rows_per_head / split` rows each).
fn hand_compile_split(
    g: &Graph,
    shape: &dyn Fn(usize, u64, u64) -> Shape,
    attn_cols: u32,
    rows_per_head: u32,
    split: u64,
) -> Program {
    // 1. Fusion groups, in graph order.
    #[derive(PartialEq, Clone, Copy)]
    enum K {
        Emb,
        Gemv,
        Attn,
    }
    let mut groups: Vec<(K, Vec<usize>)> = Vec::new();
    for (i, op) in g.ops.iter().enumerate() {
        let last = groups.last_mut();
        match &op.kind {
            OpKind::Embedding => groups.push((K::Emb, vec![i])),
            OpKind::Norm { .. } => groups.push((K::Gemv, vec![i])),
            OpKind::MatMul => {
                let join = last.is_some_and(|(k, ops)| {
                    *k == K::Gemv
                        && ops
                            .iter()
                            .all(|&j| !matches!(g.ops[j].kind, OpKind::MatMul) || g.ops[j].inputs[0] == op.inputs[0])
                        && ops.iter().all(|&j| matches!(g.ops[j].kind, OpKind::MatMul | OpKind::Norm { .. }))
                });
                if join {
                    groups.last_mut().unwrap().1.push(i);
                } else {
                    groups.push((K::Gemv, vec![i]));
                }
            }
            OpKind::KvAppend { .. } => groups.push((K::Attn, vec![i])),
            _ => groups.last_mut().unwrap().1.push(i),
        }
    }
    let region_of: BTreeMap<usize, usize> =
        groups.iter().enumerate().flat_map(|(r, (_, ops))| ops.iter().map(move |&o| (o, r))).collect();
    let producer = |t: wafer_ir::TensorId| g.ops.iter().position(|o| o.outputs.contains(&t)).map(|o| region_of[&o]);

    // 2. Regions.
    let mut regions = Vec::new();
    let mut x = 0u32;
    let mut height = 1u32;
    for (ri, (kind, ops)) in groups.iter().enumerate() {
        let names: Vec<String> = ops.iter().map(|&o| g.ops[o].name.clone()).collect();
        let layer = g.ops[ops[0]].layer;
        let (rect, work) = match kind {
            K::Emb => {
                let t = g.tensor(g.ops[ops[0]].inputs[1]);
                let (vocab, hidden) = (t.shape[0], t.shape[1]);
                let rect = Rect { x, y: 0, w: 2, h: 2 };
                (rect, Work::Embedding { vocab, hidden, rows_per_pe: vocab.div_ceil(4), token: 0 })
            }
            K::Gemv => {
                let mats: Vec<usize> = ops.iter().copied().filter(|&o| g.ops[o].kind == OpKind::MatMul).collect();
                let n: u64 = mats.iter().map(|&m| g.tensor(g.ops[m].inputs[1]).shape[0]).sum();
                let k = g.tensor(g.ops[mats[0]].inputs[1]).shape[1];
                let norm = matches!(g.ops[ops[0]].kind, OpKind::Norm { .. });
                let glu = ops.iter().any(|&o| matches!(g.ops[o].kind, OpKind::GatedAct { .. }));
                let argmax = ops.iter().any(|&o| g.ops[o].kind == OpKind::Sample);
                let (rows, cols, reduce) = shape(ri, n, k);
                let mut tile_n = n.div_ceil(rows as u64);
                if glu {
                    tile_n += tile_n % 2;
                }
                let tile_k = k.div_ceil(cols as u64);
                let rect = Rect { x, y: 0, w: cols, h: rows };
                let epi =
                    ops.iter().filter(|&&o| !matches!(g.ops[o].kind, OpKind::MatMul | OpKind::Norm { .. })).count();
                (
                    rect,
                    Work::Gemv {
                        n,
                        k,
                        tile_n,
                        tile_k,
                        reduce,
                        glu,
                        norm,
                        argmax,
                        epilogue_ops: epi as u32,
                        acc: wafer_ir::DType::F32,
                        mac: true,
                        batch_chunk: 0,
                    },
                )
            }
            K::Attn => {
                let OpKind::AttnScores { heads, kv_heads, head_dim } = g.ops[ops[1]].kind else { panic!() };
                let positions = g.context;
                let rect = Rect { x, y: 0, w: attn_cols, h: kv_heads as u32 * rows_per_head };
                let pos_per_pe = positions.div_ceil(attn_cols as u64 * (rows_per_head as u64 / split)).max(1);
                (
                    rect,
                    Work::Attention {
                        kv_heads,
                        group: heads / kv_heads,
                        head_dim,
                        positions,
                        slot: positions - 1,
                        rows_per_head,
                        pos_per_pe,
                        reduce: Reduce::Tree,
                        batch_split: split,
                    },
                )
            }
        };
        x += rect.w;
        height = height.max(rect.h);
        regions.push(Region {
            name: names[0].clone(),
            layer,
            wafer: 0,
            rect,
            turn: 0,
            active: true,
            ops: names,
            work,
            sram: Default::default(),
            steps: Vec::new(),
        });
    }

    // 3. Routes: forward from the producer of each region's input, residual
    // from the producer of the other operand of an epilogue Add, collectives.
    let mut routes: Vec<Route> = Vec::new();
    let mk = |kind, src: usize, dst: usize| Route {
        kind,
        src: RegionId(src as u32),
        dst: RegionId(dst as u32),
        color: 0,
        colors: 1,
        bytes: 0,
    };
    for (ri, (kind, ops)) in groups.iter().enumerate() {
        let first = &g.ops[ops[0]];
        if *kind != K::Emb {
            let src = producer(first.inputs[0]).unwrap();
            routes.push(mk(RouteKind::Forward, src, ri));
        }
        for &o in ops {
            if g.ops[o].kind == OpKind::Add {
                for &t in &g.ops[o].inputs {
                    let p = producer(t).unwrap();
                    if p != ri {
                        routes.push(mk(RouteKind::Residual, p, ri));
                    }
                }
            }
        }
        match regions[ri].work {
            Work::Gemv { reduce, norm, argmax, .. } => {
                if regions[ri].rect.w > 1 {
                    routes.push(Route { colors: reduce.colors(), ..mk(RouteKind::Reduce, ri, ri) });
                    if norm {
                        routes.push(Route { colors: 2, ..mk(RouteKind::Norm, ri, ri) });
                    }
                }
                if argmax && regions[ri].rect.h > 1 {
                    routes.push(Route { colors: 2, ..mk(RouteKind::Argmax, ri, ri) });
                }
            }
            Work::Attention { .. } => routes.push(Route { colors: 2, ..mk(RouteKind::Reduce, ri, ri) }),
            Work::Embedding { .. } | Work::Gemm { .. } => {}
        }
    }
    let mut arch = arch_preset(&format!("mesh:{x}x{height}")).unwrap();
    arch.router.colors = 64;
    let mut p = Program {
        model: g.name.clone(),
        batch: g.batch,
        new_tokens: 1,
        context: g.context,
        weight_dtype: g.weight_dtype,
        act_dtype: g.act_dtype,
        kv_dtype: g.kv_dtype,
        wafers: 1,
        arch,
        regions,
        routes,
    };
    // Colors: each route its own range (the test mesh is tiny; 64 colors suffice).
    let mut next = 0;
    for rt in &mut p.routes {
        rt.color = next;
        next += rt.colors;
    }
    assert!(next <= p.arch.program_colors(), "{next} colors");
    for i in 0..p.routes.len() {
        let bytes = route_messages(&p, RouteId(i as u32)).iter().map(|m| m.bytes).sum();
        p.routes[i].bytes = bytes;
    }
    for ri in 0..p.regions.len() {
        let mut steps = Vec::new();
        for (i, rt) in p.routes.iter().enumerate() {
            if rt.dst.0 as usize == ri && !rt.kind.is_collective() {
                steps.push(Step::Recv { route: RouteId(i as u32), bytes: rt.bytes });
            }
        }
        // The norm's all-reduce scales the input: it precedes the compute.
        let norm = |rt: &Route| rt.kind == RouteKind::Norm;
        for (i, rt) in p.routes.iter().enumerate() {
            if rt.src.0 as usize == ri && norm(rt) {
                steps.push(Step::Collective { route: RouteId(i as u32) });
            }
        }
        steps.push(Step::Compute);
        for (i, rt) in p.routes.iter().enumerate() {
            if rt.src.0 as usize == ri && rt.kind.is_collective() && !norm(rt) {
                steps.push(Step::Collective { route: RouteId(i as u32) });
            }
        }
        for (i, rt) in p.routes.iter().enumerate() {
            if rt.src.0 as usize == ri && !rt.kind.is_collective() {
                steps.push(Step::Send { route: RouteId(i as u32), bytes: rt.bytes });
            }
        }
        p.regions[ri].steps = steps;
        p.regions[ri].sram = sram_need(&p, &p.regions[ri].work);
    }
    p
}

/// The mapping a model is compiled with, per step (context).
type Compile<'a> = &'a dyn Fn(&Graph) -> Program;

/// Max |a - b| / max(|b|∞, tiny) over a step's logits.
fn rel_err(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}

/// Runs `steps` decode steps through both engines (teacher-forced tokens),
/// returning each step's max relative error of the logits, or the
/// functional engine's error.
fn compare(
    cfg: &ModelConfig,
    batch: u64,
    steps: u64,
    compile: Compile,
    mutate: &dyn Fn(u64, &mut Program),
) -> Result<Vec<f64>, FunctionalError> {
    let weights = Weights::random(&graph(cfg, 1, batch), 42);
    let (mut kv_ref, mut kv_fun) = (KvState::new(), KvState::new());
    let mut errs = Vec::new();
    for t in 1..=steps {
        let g = graph(cfg, t, batch);
        let tokens: Vec<u64> = (0..batch).map(|b| (7 * t + 13 * b + 3) % cfg.vocab).collect();
        let mut p = compile(&g);
        mutate(t, &mut p);
        let info: ProgramInfo = verify_program(&p).unwrap_or_else(|e| panic!("{e}"));
        let want = run_reference(&g, &weights, &tokens, &mut kv_ref).unwrap();
        let got = run_functional(&p, &info, &g, &weights, &tokens, &mut kv_fun)?;
        let err = rel_err(&got.logits, &want.logits);
        if err <= 1e-4 {
            assert_eq!(got.sampled, want.sampled, "step {t}: sampled tokens differ");
        }
        errs.push(err);
    }
    Ok(errs)
}

fn llama_shapes(_ri: usize, n: u64, _k: u64) -> Shape {
    // Varied grids and reduce shapes; qkv rows stay head-aligned for RoPE.
    match n {
        32 => (4, 3, Reduce::Tree),                  // q,k,v stacked: 8 rows (two heads) per row root
        64 => (4, 3, Reduce::TwoLevel { group: 2 }), // gate/up interleaved; the LM head (vocab 64)
        _ => (3, 3, Reduce::Chain),                  // o_proj, down: uneven 6,6,4 tiles both ways
    }
}

#[test]
fn tiny_llama_gqa_matches_reference_over_6_steps() {
    let cfg = model(LLAMA, "tiny-llama");
    assert_eq!((cfg.heads, cfg.kv_heads), (4, 2));
    for (batch, attn_cols, rph) in [(1, 2, 1), (2, 3, 2)] {
        let c = |g: &Graph| hand_compile(g, &llama_shapes, attn_cols, rph);
        let errs = compare(&cfg, batch, 6, &c, &|_, _| {}).unwrap();
        println!("tiny llama (hand-compiled, batch {batch}): max rel err per step {}", fmt_errs(&errs));
        assert!(errs.iter().all(|&e| e <= 1e-4), "{errs:?}");
    }
}

#[test]
fn tiny_gpt2_matches_reference_over_6_steps() {
    let cfg = model(GPT2, "tiny-gpt2");
    let shapes = |ri: usize, n: u64, _k: u64| -> Shape {
        match n {
            48 => (6, 2, Reduce::Tree), // q,k,v stacked, 8 rows per root (two heads)
            64 if ri % 2 == 0 => (5, 3, Reduce::Chain),
            _ => (3, 4, Reduce::TwoLevel { group: 2 }),
        }
    };
    let c = |g: &Graph| hand_compile(g, &shapes, 2, 2);
    let errs = compare(&cfg, 1, 6, &c, &|_, _| {}).unwrap();
    println!("tiny gpt2 (hand-compiled): max rel err per step {}", fmt_errs(&errs));
    assert!(errs.iter().all(|&e| e <= 1e-4), "{errs:?}");
}

/// The first region whose op list contains `needle`.
fn region_with(p: &Program, needle: &str) -> usize {
    p.regions.iter().position(|r| r.ops.iter().any(|o| o.contains(needle))).unwrap()
}

#[test]
fn broken_partitions_are_caught() {
    let cfg = model(LLAMA, "tiny-llama");
    let c = |g: &Graph| hand_compile(g, &llama_shapes, 2, 1);
    // Baseline: the unmutated program matches.
    let ok = compare(&cfg, 1, 4, &c, &|_, _| {}).unwrap();
    assert!(ok.iter().all(|&e| e <= 1e-4));

    // 1. q and k rows stacked in the wrong order in layer 1's fused qkv region.
    let swap_qk = |_: u64, p: &mut Program| {
        let r = region_with(p, "l1.attn.q_proj");
        p.regions[r].ops.swap(1, 2);
    };
    let errs = compare(&cfg, 1, 4, &c, &swap_qk).unwrap();
    println!("q/k rows swapped: max rel err per step {}", fmt_errs(&errs));
    // At step 1 there is one position: softmax is 1 whatever q is, so the
    // swap cannot show yet; from step 2 on it must.
    assert!(errs[1..].iter().all(|&e| e > 1e-2), "{errs:?}");

    // 2. gate and up rows interleaved the wrong way round in layer 0's MLP.
    let swap_gate_up = |_: u64, p: &mut Program| {
        let r = region_with(p, "l0.mlp.gate_proj");
        p.regions[r].ops.swap(1, 2);
    };
    let errs = compare(&cfg, 1, 4, &c, &swap_gate_up).unwrap();
    println!("gate/up interleave swapped: max rel err per step {}", fmt_errs(&errs));
    assert!(errs.iter().all(|&e| e > 1e-2), "{errs:?}");

    // 3. At step 4, layer 0 writes the new token's K/V over slot 0 (the PE
    // holding the oldest position) instead of extending the cache.
    let bad_slot = |t: u64, p: &mut Program| {
        if t == 4 {
            let r = region_with(p, "l0.attn.kv_append");
            if let Work::Attention { positions, slot, .. } = &mut p.regions[r].work {
                *positions -= 1;
                *slot = 0;
            }
            p.regions[r].sram = sram_need(p, &p.regions[r].work);
        }
    };
    let errs = compare(&cfg, 1, 4, &c, &bad_slot).unwrap();
    println!("K/V written to the wrong slot: max rel err per step {}", fmt_errs(&errs));
    assert!(errs[..3].iter().all(|&e| e <= 1e-4) && errs[3] > 1e-3, "{errs:?}");

    // 4. A route from the wrong producer: layer 1's attention residual reads
    // layer 0's attention residual instead of layer 0's MLP output. The
    // engine refuses: the added tensor is not what the route carries.
    let bad_residual = |_: u64, p: &mut Program| {
        let dst = region_with(p, "l1.attn_residual");
        let wrong = region_with(p, "l0.attn_residual");
        let i = p.routes.iter().position(|rt| rt.kind == RouteKind::Residual && rt.dst.0 as usize == dst).unwrap();
        let old = p.routes[i].src.0 as usize;
        p.routes[i].src = RegionId(wrong as u32);
        let s = p.regions[old]
            .steps
            .iter()
            .position(|s| matches!(s, Step::Send { route, .. } if route.0 as usize == i))
            .unwrap();
        let st = p.regions[old].steps.remove(s);
        p.regions[wrong].steps.push(st);
    };
    let e = compare(&cfg, 1, 2, &c, &bad_residual).unwrap_err().to_string();
    println!("residual from the wrong region: {e}");
    assert!(e.contains("residual"), "{e}");
}

fn fmt_errs(errs: &[f64]) -> String {
    errs.iter().map(|e| format!("{e:.2e}")).collect::<Vec<_>>().join(" ")
}

// ---- compiled by wafer_compiler::compile ----

/// A `mesh:WxH` machine with `usable` bytes of SRAM per PE after a 1 KiB code
/// reserve, so the tiny models' matrices must be tiled over many PEs.
fn small_mesh(w: u32, h: u32, usable: u64) -> wafer_ir::ArchSpec {
    let mut a = arch_preset(&format!("mesh:{w}x{h}")).unwrap();
    a.pe.sram_reserved_bytes = 1024;
    a.pe.sram_bytes = 1024 + usable;
    a
}

fn compiled(arch: &wafer_ir::ArchSpec, g: &Graph) -> Program {
    let c =
        wafer_compiler::compile(g, arch, &wafer_compiler::CompileOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    c.program
}

/// Gemv regions tiled over several PEs in both directions.
fn tiled_both_ways(p: &Program) -> usize {
    p.regions.iter().filter(|r| matches!(r.work, Work::Gemv { .. }) && r.rect.w > 1 && r.rect.h > 1).count()
}

#[test]
fn compiled_tiny_llama_matches_reference() {
    let cfg = model(LLAMA, "tiny-llama");
    // 40x40 and 64x64 once split RoPE pairs across rows (tile_n not a multiple of head_dim).
    for (w, h, usable) in [(24, 24, 768), (32, 16, 512), (40, 40, 768), (64, 64, 4096)] {
        let arch = small_mesh(w, h, usable);
        let c = |g: &Graph| compiled(&arch, g);
        let p = c(&graph(&cfg, 4, 1));
        assert!(tiled_both_ways(&p) >= 3, "{} Gemv regions tiled both ways", tiled_both_ways(&p));
        let errs = compare(&cfg, 1, 6, &c, &|_, _| {}).unwrap_or_else(|e| panic!("{e}"));
        println!("tiny llama on mesh:{w}x{h} ({usable} B/PE): max rel err per step {}", fmt_errs(&errs));
        assert!(errs.iter().all(|&e| e <= 1e-4), "{errs:?}");
        // The same compiled program with q and k rows stacked the wrong way round.
        let swap_qk = |_: u64, p: &mut Program| {
            let r = region_with(p, "l1.attn.q_proj");
            p.regions[r].ops.swap(1, 2);
        };
        let bad = compare(&cfg, 1, 4, &c, &swap_qk).unwrap_or_else(|e| panic!("{e}"));
        println!("  compiled, q/k rows swapped: {}", fmt_errs(&bad));
        assert!(bad[1..].iter().all(|&e| e > 1e-2), "{bad:?}");
    }
}

#[test]
fn compiled_tiny_gpt2_matches_reference() {
    let cfg = model(GPT2, "tiny-gpt2");
    for (w, h, usable) in [(24, 24, 768), (32, 16, 512)] {
        let arch = small_mesh(w, h, usable);
        let c = |g: &Graph| compiled(&arch, g);
        let p = c(&graph(&cfg, 4, 1));
        assert!(tiled_both_ways(&p) >= 3, "{} Gemv regions tiled both ways", tiled_both_ways(&p));
        let errs = compare(&cfg, 1, 6, &c, &|_, _| {}).unwrap_or_else(|e| panic!("{e}"));
        println!("tiny gpt2 on mesh:{w}x{h} ({usable} B/PE): max rel err per step {}", fmt_errs(&errs));
        assert!(errs.iter().all(|&e| e <= 1e-4), "{errs:?}");
    }
}

#[test]
fn compiled_programs_use_the_meet_reduction_and_still_match() {
    // The compiler picks MeshGEMV's two-chain shape where it is fastest; its
    // roots sit mid-row, so a wrong root index would give wrong logits above.
    let cfg = model(LLAMA, "tiny-llama");
    let arch = small_mesh(24, 24, 768);
    let p = compiled(&arch, &graph(&cfg, 4, 1));
    let meet = p.regions.iter().filter(|r| matches!(r.work, Work::Gemv { reduce: Reduce::Meet { .. }, .. })).count();
    assert!(meet >= 3, "{meet} regions use `meet`");
}

#[test]
fn fp16_accumulation_is_honoured_within_its_error_bound() {
    // Every Gemv switched to fp16 partials: the logits move off the fp32
    // reference by more than fp32 rounding but stay within the documented
    // γ_n bound (n = tile_k + w − 1 terms per output, u = 2⁻¹¹), here taken
    // against the largest logit as the engine's comparison does.
    let cfg = model(LLAMA, "tiny-llama");
    let arch = small_mesh(24, 24, 768);
    let c = |g: &Graph| compiled(&arch, g);
    let mut n_max = 0u64;
    let to_f16 = |_: u64, p: &mut Program| {
        for r in &mut p.regions {
            if let Work::Gemv { acc, .. } = &mut r.work {
                *acc = wafer_ir::DType::F16;
            }
        }
        // The reductions now carry half the bytes.
        for i in 0..p.routes.len() {
            p.routes[i].bytes = wafer_ir::route_messages(p, wafer_ir::RouteId(i as u32)).iter().map(|m| m.bytes).sum();
        }
    };
    let p = c(&graph(&cfg, 4, 1));
    for r in &p.regions {
        if let Work::Gemv { tile_k, .. } = r.work {
            n_max = n_max.max(tile_k + r.rect.w as u64 - 1);
        }
    }
    let errs = compare(&cfg, 1, 3, &c, &to_f16).unwrap_or_else(|e| panic!("{e}"));
    println!("fp16 accumulation: max rel err per step {}", fmt_errs(&errs));
    assert!(errs.iter().any(|&e| e > 1e-4), "fp16 rounding left no trace: {errs:?}");
    // Errors compound over layers; a generous multiple of one GEMV's bound.
    let u = 2f64.powi(-11);
    let gamma = n_max as f64 * u / (1.0 - n_max as f64 * u);
    assert!(errs.iter().all(|&e| e < 20.0 * gamma), "{errs:?} vs γ = {gamma}");
}

// ---- mappings that share PEs over time ----

fn compiled_with(arch: &wafer_ir::ArchSpec, g: &Graph, strategy: wafer_compiler::Strategy) -> Program {
    compiled_opts(arch, g, strategy, None)
}

fn compiled_opts(
    arch: &wafer_ir::ArchSpec,
    g: &Graph,
    strategy: wafer_compiler::Strategy,
    attention_strip: Option<bool>,
) -> Program {
    let opts = wafer_compiler::CompileOptions { strategy, attention_strip, ..Default::default() };
    wafer_compiler::compile(g, arch, &opts).unwrap_or_else(|e| panic!("{strategy:?}: {e}")).program
}

/// PEs covered by more than one region (the mapping really shares them).
fn shared_pes(p: &Program) -> u64 {
    let total: u64 = p.regions.iter().map(|r| r.rect.pes()).sum();
    total - wafer_ir::Occupancy::new(&p.regions.iter().map(|r| (r.wafer, r.rect)).collect::<Vec<_>>()).pes()
}

#[test]
fn spread_and_hybrid_mappings_match_the_reference_on_three_meshes() {
    use wafer_compiler::Strategy;
    let mut strips = 0;
    for (cfg, name) in [(model(LLAMA, "tiny-llama"), "tiny llama"), (model(GPT2, "tiny-gpt2"), "tiny gpt2")] {
        for (w, h, usable) in [(24, 24, 4096), (32, 16, 4096), (40, 40, 8192)] {
            let arch = small_mesh(w, h, usable);
            // Attention inside the blocks, and in a strip of its own (no weights under it)
            // where the mesh has the rows for one.
            for (strategy, strip) in
                [(Strategy::Spread, Some(false)), (Strategy::Spread, Some(true)), (Strategy::Hybrid(1), None)]
            {
                let opts = wafer_compiler::CompileOptions { strategy, attention_strip: strip, ..Default::default() };
                if strip == Some(true) && wafer_compiler::compile(&graph(&cfg, 4, 1), &arch, &opts).is_err() {
                    continue;
                }
                strips += (strip == Some(true)) as u32;
                let c = |g: &Graph| compiled_opts(&arch, g, strategy, strip);
                let p = c(&graph(&cfg, 4, 1));
                assert!(shared_pes(&p) > 0, "{name} {strategy:?} on mesh:{w}x{h} shares no PE");
                if strip == Some(true) {
                    let attn = |r: &wafer_ir::Region| matches!(r.work, wafer_ir::Work::Attention { .. });
                    let under = p.regions.iter().filter(|a| attn(a)).any(|a| {
                        p.regions
                            .iter()
                            .any(|g| matches!(g.work, wafer_ir::Work::Gemv { .. }) && g.rect.overlaps(&a.rect))
                    });
                    assert!(!under, "{name} on mesh:{w}x{h}: attention strip overlaps a Gemv");
                }
                assert!(p.regions.windows(2).all(|r| r[0].turn < r[1].turn), "every region its own turn");
                let errs = compare(&cfg, 1, 6, &c, &|_, _| {}).unwrap_or_else(|e| panic!("{e}"));
                println!(
                    "{name} {strategy:?} (strip {strip:?}) on mesh:{w}x{h}: max rel err per step {}",
                    fmt_errs(&errs)
                );
                assert!(errs.iter().all(|&e| e <= 1e-4), "{name} {strategy:?} mesh:{w}x{h}: {errs:?}");
            }
        }
    }
    assert!(strips >= 4, "the attention strip ran on {strips} of 6 model-mesh pairs");
}

#[test]
fn a_broken_spread_partition_is_caught() {
    let cfg = model(LLAMA, "tiny-llama");
    let arch = small_mesh(24, 24, 4096);
    let c = |g: &Graph| compiled_with(&arch, g, wafer_compiler::Strategy::Spread);
    // q and k rows stacked the wrong way round in layer 1: wrong numbers, not a crash.
    let swap_qk = |_: u64, p: &mut Program| {
        let r = region_with(p, "l1.attn.q_proj");
        p.regions[r].ops.swap(1, 2);
    };
    let bad = compare(&cfg, 1, 4, &c, &swap_qk).unwrap_or_else(|e| panic!("{e}"));
    assert!(bad[1..].iter().all(|&e| e > 1e-2), "{bad:?}");
    // Two regions sharing PEs in one turn are refused by the verifier.
    let mut p = c(&graph(&cfg, 4, 1));
    let i = (0..p.regions.len() - 1)
        .find(|&i| p.regions[i].wafer == p.regions[i + 1].wafer && p.regions[i].rect.overlaps(&p.regions[i + 1].rect))
        .expect("a spread mapping stacks successive regions");
    let t = p.regions[i].turn;
    p.regions[i + 1].turn = t;
    let errs = verify_program(&p).unwrap_err();
    assert!(errs.to_string().contains("same turn"), "{errs}");
}

// ---- attention split by sequence (batch > 1) ----

#[test]
fn attention_split_by_sequence_matches_the_reference() {
    // Batch 4, head blocks of 4 rows cut into 2 sub-blocks (2 sequences
    // each) and into 4 (one each): every sub-block holds only its sequences'
    // caches, and the o-projection gathers each sequence's output from the
    // sub-block that serves it.
    let cfg = model(LLAMA, "tiny-llama");
    for split in [2, 4] {
        let c = |g: &Graph| hand_compile_split(g, &llama_shapes, 2, 4, split);
        let p = c(&graph(&cfg, 3, 4));
        let at = region_with(&p, "l0.attn.kv_append");
        assert_eq!(p.regions[at].work.attn_blocks(), 2 * split);
        let errs = compare(&cfg, 4, 6, &c, &|_, _| {}).unwrap_or_else(|e| panic!("{e}"));
        println!("tiny llama, batch 4, attention split {split}: max rel err per step {}", fmt_errs(&errs));
        assert!(errs.iter().all(|&e| e <= 1e-4), "{errs:?}");
    }
}

#[test]
fn the_compiler_splits_attention_when_the_batch_overflows_a_pe_and_still_matches() {
    // 512 B per PE: one cached position of all 4 sequences with their query
    // and softmax states needs 672 B, so no unsplit head block fits.
    let cfg = model(LLAMA, "tiny-llama");
    let arch = small_mesh(32, 16, 512);
    let c = |g: &Graph| compiled(&arch, g);
    let p = c(&graph(&cfg, 4, 4));
    let split = p.regions.iter().filter(|r| matches!(r.work, Work::Attention { batch_split: 2.., .. })).count();
    assert_eq!(split, 2, "both layers' attention split by sequence");
    let errs = compare(&cfg, 4, 6, &c, &|_, _| {}).unwrap_or_else(|e| panic!("{e}"));
    println!("tiny llama compiled at batch 4 on mesh:32x16 (512 B/PE): {}", fmt_errs(&errs));
    assert!(errs.iter().all(|&e| e <= 1e-4), "{errs:?}");
}

#[test]
fn a_broken_split_is_caught() {
    let cfg = model(LLAMA, "tiny-llama");
    let g = graph(&cfg, 5, 4);
    let good = hand_compile_split(&g, &llama_shapes, 2, 4, 2);
    verify_program(&good).unwrap_or_else(|e| panic!("{e}"));
    let at = region_with(&good, "l0.attn.kv_append");
    let with = |f: &dyn Fn(&mut Work)| {
        let mut p = good.clone();
        f(&mut p.regions[at].work);
        verify_program(&p).map(|_| ()).unwrap_err().to_string()
    };
    // Three sub-blocks cannot share four rows.
    let e = with(&|w| {
        if let Work::Attention { batch_split, .. } = w {
            *batch_split = 3
        }
    });
    assert!(e.contains("batch_split=3"), "{e}");
    // More groups than sequences leaves a sub-block with none.
    let e = with(&|w| {
        if let Work::Attention { batch_split, rows_per_head, .. } = w {
            (*batch_split, *rows_per_head) = (8, 8)
        }
    });
    assert!(e.contains("batch_split=8"), "{e}");
    // Undoing the split puts every sequence on every PE: the SRAM the region
    // declared (sized for 2 sequences per PE) no longer covers its work.
    let e = with(&|w| {
        if let Work::Attention { batch_split, .. } = w {
            *batch_split = 1
        }
    });
    assert!(e.contains("declares SRAM"), "{e}");
    // A sub-block too small for the cache it must hold.
    let e = with(&|w| {
        if let Work::Attention { pos_per_pe, .. } = w {
            *pos_per_pe = 1
        }
    });
    assert!(e.contains("per sub-block do not hold 5"), "{e}");
}

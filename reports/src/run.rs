//! The run report: what `wafer run` and `wafer compare` print and save.
//!
//! Owns: `RunReport` — the versioned JSON source of truth (inputs, the
//! compiled mapping's stats, the simulation, the GPU baseline and the
//! comparison) — and its text rendering. It takes only a [`FinishedSim`], so a
//! simulation that did not finish has no report. Must not: compute results.

use crate::energy::Energy;
use crate::table::{si, Table};
use serde::Serialize;
use wafer_compiler::CompileStats;
use wafer_gpu::GpuEstimate;
use wafer_simulator::{Breakdown, FinishedSim, MachineBound, Pipelining};

/// Bumped whenever a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 4;

/// What was asked.
#[derive(Debug, Clone, Serialize)]
pub struct RunInputs {
    pub model: String,
    pub arch: String,
    pub wafers: u32,
    pub context: u64,
    pub batch: u64,
    pub weight_dtype: String,
    pub kv_dtype: String,
    pub engine: String,
    pub gpu: Option<String>,
    pub gpus: Option<u32>,
}

/// Wafer against GPU: whole systems, each side's device count named.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Wafers the program uses, and their arch.
    pub wafers: u32,
    pub wafer_arch: String,
    /// GPUs in the tensor-parallel group, and their model.
    pub gpus: u32,
    pub gpu: String,
    pub wafer_tpot_us: f64,
    pub gpu_tpot_us: f64,
    /// GPU time per token over wafer time per token (×), system against system.
    pub speedup: f64,
    pub wafer_bound: String,
    pub gpu_bound: String,
}

/// How well the GPU model reproduces the measured decode latencies
/// (`wafer gpu --calibration`); the wafer side has no such measurement.
#[derive(Debug, Clone, Serialize)]
pub struct GpuCalibration {
    /// Measured rows with a time per output token.
    pub rows: usize,
    pub median_abs_error_pct: f64,
    pub max_abs_error_pct: f64,
    /// The row with the largest error.
    pub max_row: String,
}

/// Wall-clock time of the run's stages, reported only when asked for
/// (`--timings`): it differs between runs, the rest of the report does not.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timings {
    pub compile_ms: f64,
    pub simulate_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub inputs: RunInputs,
    // Headline figures at the top level, for scripts and CI.
    pub tpot_us: f64,
    pub tokens_per_s: f64,
    pub cycles: f64,
    pub clock_ghz: f64,
    pub wafers: u32,
    pub engine: String,
    pub breakdown: Breakdown,
    /// The machine's limit (a lower bound on the step for any mapping on
    /// these wafers), µs, and the achieved latency over it (≥ 1).
    pub bound_us: f64,
    pub bound_ratio: f64,
    /// The bound's floors and the figures they come from.
    pub machine_limit: MachineBound,
    pub compile: CompileStats,
    pub simulation: FinishedSim,
    pub gpu: Option<GpuEstimate>,
    /// The GPU model's error on the measured rows, when a GPU is compared.
    pub gpu_calibration: Option<GpuCalibration>,
    pub comparison: Option<Comparison>,
    /// Energy and cost per token, wafer and GPU (`crate::energy`).
    pub energy: Energy,
    /// Users in flight (`wafer run --users U`): the steady state of `U`
    /// sequences pipelined through the mapping (`wafer_simulator::steady`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Pipelining>,
    /// Time to first token (`wafer run --prompt N [--cached C]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill: Option<RunPrefill>,
    /// Speculative decoding (`--draft M --spec-k K --accept A`), wafer and GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speculative: Option<RunSpeculative>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// Where the time of a simulated step goes: totals, then per op kind.
pub fn breakdown_text(s: &FinishedSim) -> String {
    let mut out = String::new();
    let total = s.breakdown.total().max(1e-9);
    let us = |c: f64| format!("{:.1}", c / (s.clock_ghz * 1e3));
    let pct = |c: f64| format!("{:.1}%", 100.0 * c / total);
    let mut t = Table::new(&["where the time goes", ">µs", ">share"]);
    for (name, v) in [
        ("compute", s.breakdown.compute),
        ("on-wafer communication", s.breakdown.comm),
        ("inter-wafer links", s.breakdown.inter_wafer),
        ("waiting (contention)", s.breakdown.wait),
    ] {
        t.row([name.to_string(), us(v), pct(v)]);
    }
    out += &t.to_text();
    out += "\n";
    let mut k = Table::new(&["op kind", ">compute µs", ">comm µs", ">inter-wafer µs", ">wait µs", ">share"]);
    let mut kinds: Vec<_> = s.by_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.total().total_cmp(&a.1.total()).then(a.0.cmp(b.0)));
    for (name, b) in kinds.into_iter().filter(|(_, b)| b.total() > 0.0) {
        k.row([name.clone(), us(b.compute), us(b.comm), us(b.inter_wafer), us(b.wait), pct(b.total())]);
    }
    out += &k.to_text();
    out
}

/// A simulation on its own (`wafer simulate`): headline and breakdown.
pub fn sim_text(s: &FinishedSim) -> String {
    let mut out = format!(
        "{} on {} × {} — context {}, batch {} ({} engine)\n",
        s.model, s.wafers, s.arch, s.context, s.batch, s.engine
    );
    out += &format!(
        "per-token latency {:.1} µs  ·  {:.0} tokens/s  ·  {} cycles at {} GHz\n\n",
        s.tpot_us,
        s.tokens_per_s,
        si(s.cycles, "").trim_end(),
        s.clock_ghz
    );
    out += &breakdown_text(s);
    out
}

/// Achieved latency over the machine's limit.
pub fn bound_ratio(tpot_us: f64, b: &MachineBound) -> f64 {
    tpot_us / b.bound_us.max(1e-12)
}

/// The machine-limit line: `machine limit: X µs (memory-bound floor); this mapping is N× above it`.
pub fn limit_line(tpot_us: f64, b: &MachineBound) -> String {
    format!(
        "machine limit: {} µs ({}-bound floor); this mapping is {}× above it",
        sig(b.bound_us),
        b.binding_floor.name(),
        sig(bound_ratio(tpot_us, b))
    )
}

/// The three floors, one line.
pub fn floors_line(b: &MachineBound) -> String {
    format!(
        "floors: compute {} µs · SRAM reads {} µs · dependency chain {} µs ({} stages{})",
        sig(b.compute_floor_us),
        sig(b.memory_floor_us),
        sig(b.communication_floor_us),
        b.chain_stages,
        if b.inter_wafer_crossings > 0 { ", one system-link crossing" } else { "" }
    )
}

/// Three significant figures, without an exponent for the sizes we show.
fn sig(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The J/token and $/Mtok cells of a table row ("-" where a figure is missing).
pub fn energy_cells(e: Option<&crate::energy::EnergyFigure>) -> (String, String) {
    let j = e.and_then(|e| e.joules_per_token).map_or("-".to_string(), |j| format!("{j:.3}"));
    let c = e.and_then(|e| e.usd_per_mtok).map_or("-".to_string(), crate::energy::money);
    (j, c)
}

/// What dominates a breakdown.
pub fn wafer_bound(b: &Breakdown) -> &'static str {
    let parts = [
        (b.compute, "compute"),
        (b.comm, "on-wafer communication"),
        (b.inter_wafer, "inter-wafer links"),
        (b.wait, "contention"),
    ];
    parts.iter().max_by(|a, b| a.0.total_cmp(&b.0)).map_or("compute", |p| p.1)
}

impl RunReport {
    pub fn new(
        inputs: RunInputs,
        compile: CompileStats,
        sim: FinishedSim,
        bound: MachineBound,
        gpu: Option<GpuEstimate>,
        energy: Energy,
    ) -> RunReport {
        let comparison = gpu.as_ref().map(|g| Comparison {
            wafers: sim.wafers,
            wafer_arch: inputs.arch.clone(),
            gpus: g.n_gpus,
            gpu: g.gpu.clone(),
            wafer_tpot_us: sim.tpot_us,
            gpu_tpot_us: g.tpot_ms * 1e3,
            speedup: g.tpot_ms * 1e3 / sim.tpot_us.max(1e-12),
            wafer_bound: wafer_bound(&sim.breakdown).into(),
            gpu_bound: g.bound.name().into(),
        });
        RunReport {
            schema_version: SCHEMA_VERSION,
            tpot_us: sim.tpot_us,
            tokens_per_s: sim.tokens_per_s,
            cycles: sim.cycles,
            clock_ghz: sim.clock_ghz,
            wafers: sim.wafers,
            engine: sim.engine.clone(),
            breakdown: sim.breakdown,
            bound_us: bound.bound_us,
            bound_ratio: bound_ratio(sim.tpot_us, &bound),
            machine_limit: bound,
            inputs,
            compile,
            simulation: sim,
            gpu,
            gpu_calibration: None,
            comparison,
            energy,
            users: None,
            prefill: None,
            speculative: None,
            timings: None,
        }
    }

    /// The report with the GPU model's calibration error attached (only when a GPU is compared).
    pub fn with_gpu_calibration(mut self, c: GpuCalibration) -> RunReport {
        if self.gpu.is_some() {
            self.gpu_calibration = Some(c);
        }
        self
    }

    /// The sentences a reader needs to read the figures right: what "bound by"
    /// means beside the PE busy fraction, and which side is calibrated.
    pub fn explanations(&self) -> Vec<String> {
        let s = &self.simulation;
        let total = s.breakdown.total().max(1e-12);
        let bound = wafer_bound(&s.breakdown);
        let share = match bound {
            "compute" => s.breakdown.compute,
            "on-wafer communication" => s.breakdown.comm,
            "inter-wafer links" => s.breakdown.inter_wafer,
            _ => s.breakdown.wait,
        } / total;
        let mut out = vec![format!(
            "Wafer \"bound by {bound}\": {bound} is the largest part ({:.0}%) of the critical path, the chain of \
             regions that each wait for the one before. It does not mean the PEs are busy: a decode step runs its \
             layers one after another, so while one region computes, the PEs of all the others wait for their \
             input, and the mean PE computes for {:.1}% of the step ({} of {} PEs hold a region).",
            100.0 * share,
            100.0 * s.pe_busy_mean,
            crate::table::thousands(self.compile.pes_used),
            crate::table::thousands(self.compile.pes_available),
        )];
        let b = &self.machine_limit;
        out.push(format!(
            "The machine limit is a lower bound on the step for any mapping on {} PEs: the largest of the step's \
             {:.1} GFLOP at every PE's peak ({} FLOP/cycle), the {:.1} GB of weights and KV cache it must read \
             spread over every PE's SRAM port, and the chain of {} stages (each ended by a full-width norm or \
             the sampling) whose data must cross at least half the span of the PEs that could hold its weights{}. \
             It assumes nothing of this mapping; {:.0}× above it is how much a better mapping could at most gain.",
            crate::table::thousands(b.pes),
            b.step_flops as f64 / 1e9,
            b.peak_flops_per_pe_cycle,
            b.sram_read_bytes as f64 / 1e9,
            b.chain_stages,
            if b.inter_wafer_crossings > 0 { ", and one crossing of the system link" } else { "" },
            self.bound_ratio
        ));
        if let (Some(g), Some(c)) = (&self.gpu, &self.comparison) {
            out.push(format!(
                "The comparison is system against system: {} × {} against {} × {}{}. GPU \"bound by {}\": \
                 the roofline term with the most time. Each {} holds {:.1} GB of weights and KV cache in the {:.1} GB \
                 usable after a {:.0}% headroom for activations and the runtime ({:.1} GB free).",
                c.wafers,
                c.wafer_arch,
                c.gpus,
                c.gpu,
                if g.pipeline_stages > 1 {
                    format!(" ({} pipeline stages of {} tensor-parallel GPUs)", g.pipeline_stages, g.tensor_parallel)
                } else if c.gpus > 1 {
                    " (tensor parallel)".to_string()
                } else {
                    String::new()
                },
                g.bound.name(),
                g.gpu,
                (g.memory.weight_bytes_per_gpu + g.memory.kv_bytes_per_gpu) as f64 / 1e9,
                g.memory.usable_bytes_per_gpu as f64 / 1e9,
                100.0 * g.memory.headroom_fraction,
                g.memory.free_bytes_per_gpu as f64 / 1e9
            ));
            let cal = match &self.gpu_calibration {
                Some(k) => format!(
                    "calibrated: three constants fitted to {} measured decode latencies, median error {:.1}%, \
                     max {:.1}% (row {}; wafer gpu --calibration)",
                    k.rows, k.median_abs_error_pct, k.max_abs_error_pct, k.max_row
                ),
                None => "calibrated against measured decode latencies (wafer gpu --calibration)".into(),
            };
            out.push(format!(
                "The GPU figures are a roofline model, {cal}. The wafer figures are model predictions ({} engine) \
                 from public per-PE and fabric parameters, their reduction timing checked against kernels measured \
                 on WSE-3 silicon (wafer kernel --calibration); the end-to-end decode latency is not calibrated: \
                 none of the wafer's is public with its conditions.",
                s.engine
            ));
        } else {
            out.push(format!(
                "The wafer figures are model predictions ({} engine) from public per-PE and fabric parameters, their \
                 reduction timing checked against kernels measured on WSE-3 silicon (wafer kernel --calibration); \
                 not calibrated against measured decode latency.",
                s.engine
            ));
        }
        out.push(self.energy_explanation());
        out
    }

    /// What the energy and cost figures rest on, one paragraph.
    pub fn energy_explanation(&self) -> String {
        let mut s = format!(
            "Energy per token is the machines' power over the tokens per second; cost per million tokens is their \
             price per hour over the tokens per hour. Wafer {} × {}: {}, {}.",
            self.energy.wafer.machines,
            self.energy.wafer.machine,
            self.energy.wafer.joules_text(),
            self.energy.wafer.cost_text()
        );
        if let Some(g) = &self.energy.gpu {
            s += &format!(" GPU {} × {}: {}, {}.", g.machines, g.machine, g.joules_text(), g.cost_text());
        }
        s += " Sources: ";
        s += &self.energy.wafer.sources_text();
        if let Some(g) = &self.energy.gpu {
            s += " ";
            s += &g.sources_text();
        }
        s += " The wafer's figure is a whole system's (low confidence), the GPU's its board power only; neither \
              includes the facility.";
        s
    }

    /// Wafer and GPU side by side, and the verdict sentence; `None` without a GPU.
    pub fn comparison_table(&self) -> Option<(Table, String)> {
        let (Some(g), Some(c)) = (&self.gpu, &self.comparison) else { return None };
        let s = &self.simulation;
        let mut t = Table::new(&["", ">per-token latency", ">tokens/s", ">J/token", ">$/Mtok", "bound by", "figures"]);
        let (jw, cw) = energy_cells(Some(&self.energy.wafer));
        let (jg, cg) = energy_cells(self.energy.gpu.as_ref());
        t.row([
            format!("wafer: {} × {}", s.wafers, self.inputs.arch),
            format!("{:.1} µs", c.wafer_tpot_us),
            format!("{:.0}", s.tokens_per_s),
            jw,
            cw,
            c.wafer_bound.clone(),
            "model prediction".into(),
        ]);
        t.row([
            format!("GPU: {} × {}", g.n_gpus, g.gpu),
            format!("{:.1} µs", c.gpu_tpot_us),
            format!("{:.0}", g.tokens_per_s),
            jg,
            cg,
            c.gpu_bound.clone(),
            match &self.gpu_calibration {
                Some(k) => format!("calibrated (median error {:.1}%)", k.median_abs_error_pct),
                None => "calibrated".into(),
            },
        ]);
        let verdict = format!(
            "{} × {} is {:.2}× {} per token than {} × {}.",
            c.wafers,
            c.wafer_arch,
            if c.speedup >= 1.0 { c.speedup } else { 1.0 / c.speedup },
            if c.speedup >= 1.0 { "faster" } else { "slower" },
            c.gpus,
            c.gpu
        );
        Some((t, verdict))
    }

    /// The human summary: headline, where the time goes, and the GPU side by side.
    pub fn to_text(&self) -> String {
        let s = &self.simulation;
        let i = &self.inputs;
        let mut out = format!(
            "{} on {} × {} — context {}, batch {}, weights {}, KV {} ({} engine)\n",
            i.model, s.wafers, i.arch, i.context, i.batch, i.weight_dtype, i.kv_dtype, s.engine
        );
        out += &format!(
            "per-token latency {:.1} µs  ·  {:.0} tokens/s  ·  {} cycles at {} GHz\n",
            s.tpot_us,
            s.tokens_per_s,
            si(s.cycles, "").trim_end(),
            s.clock_ghz
        );
        out += &limit_line(s.tpot_us, &self.machine_limit);
        out += "\n";
        out += &floors_line(&self.machine_limit);
        out += "\n";
        out += &format!(
            "mapping: {}, {} regions on {} of {} PEs; SRAM mean {:.1} KiB per PE; at most {} colors per router\n\n",
            self.compile.strategy,
            self.compile.regions,
            crate::table::thousands(self.compile.pes_used),
            crate::table::thousands(self.compile.pes_available),
            self.compile.sram_mean_bytes / 1024.0,
            self.compile.colors_max_per_router
        );
        if let Some(f) = &self.prefill {
            let tokens = |n: u64| format!("{n} token{}", if n == 1 { "" } else { "s" });
            let how = if f.way == "gemm" {
                format!(
                    "as GEMMs over the mapping's resident weights in blocks of {} pipelined through the layers, one per \
                     bottleneck",
                    tokens(f.chunk)
                )
            } else if f.way == "gemm_layers" {
                format!(
                    "as GEMMs over the mapping's resident weights, layer by layer in blocks of {}, each block the sum \
                     of every region's pace, the largest",
                    tokens(f.chunk)
                )
            } else if f.way == "gemm_cannon" {
                format!(
                    "layer by layer, every square region's GEMM Cannon-style over the whole prompt in passes of {} \
                     per PE row, the others in blocks of as many tokens; the largest share",
                    tokens(f.chunk)
                )
            } else if f.chunk == 1 {
                "streamed through the mapping one token per bottleneck".to_string()
            } else {
                format!("streamed through the mapping in chunks of {} tokens, one per bottleneck", f.chunk)
            };
            out += &format!(
                "time to first token: {:.2} ms for {} prompt tokens over {} cached ({:.0} prompt tokens/s, {how}: {})",
                f.ttft_us / 1e3,
                f.prompt,
                f.cached,
                f.prompt_tokens_per_s,
                f.bottleneck
            );
            // The way not taken, so the choice can be read.
            let other = if f.way != "stream" {
                f.chunks
                    .iter()
                    .min_by(|a, b| a.ttft_us.total_cmp(&b.ttft_us))
                    .map(|c| format!("streamed in chunks of {}: {:.2} ms", c.chunk, c.ttft_us / 1e3))
            } else {
                f.gemm_blocks.iter().min_by(|a, b| a.ttft_us.total_cmp(&b.ttft_us)).map(|c| {
                    format!(
                        "as GEMMs ({}) in blocks of {}: {:.2} ms",
                        c.schedule.replace('_', " "),
                        c.block,
                        c.ttft_us / 1e3
                    )
                })
            };
            if let Some(r) = &f.replay {
                out += &format!(
                    " (replayed block by block: {:.2} ms, {:+.1}%)",
                    r.ttft_us / 1e3,
                    (r.vs_closed_form - 1.0) * 100.0
                );
            }
            match (other, &f.gemm_limit) {
                (Some(o), _) => out += &format!("; {o}"),
                (None, Some(why)) if f.gemm_blocks.is_empty() => out += &format!("; not as GEMMs: {why}"),
                _ => {}
            }
            if let Some(g) = f.gpu_ttft_us {
                out += &format!("; GPU {:.2} ms", g / 1e3);
            }
            out += "\n";
        }
        if let Some(u) = &self.users {
            out += &users_line(u);
            out += "\n";
        }
        if let Some(x) = &self.speculative {
            out += &x.to_text();
        }
        out += &breakdown_text(s);
        if let Some((table, verdict)) = self.comparison_table() {
            out += "\n";
            out += &table.to_text();
            out += &verdict;
            out += "\n";
        } else {
            let w = &self.energy.wafer;
            out += &format!("\nenergy: {}; cost: {}\n", w.joules_text(), w.cost_text());
        }
        for e in self.explanations() {
            out += "\n";
            for line in crate::charts::wrap(&e, 100) {
                out += &line;
                out += "\n";
            }
        }
        if let Some(t) = &self.timings {
            out += &format!("\nwall clock: compile {:.1} ms, simulate {:.1} ms\n", t.compile_ms, t.simulate_ms);
        }
        out
    }
}

/// The users-in-flight line of `wafer run --users U`.
pub fn users_line(u: &Pipelining) -> String {
    let head = if u.users == 1 {
        "users in flight: 1".to_string()
    } else {
        format!(
            "users in flight: {} — {:.0} tokens/s in all, {:.0} tokens/s each ({:.1} µs between a user's tokens)",
            u.users, u.aggregate_tokens_per_s, u.per_user_tokens_per_s, u.per_user_token_us
        )
    };
    let mut out = format!(
        "{head}; up to {} ride along at full speed before {} binds ({:.1} µs per token)\n",
        u.stages, u.bottleneck, u.bottleneck_us
    );
    if let Some(r) = &u.replay {
        out += &format!(
            "  replayed over {} tokens each: {:.0} tokens/s in all ({:+.1}% vs the closed form), busiest PEs held {:.0}% of the time\n",
            r.tokens,
            r.aggregate_tokens_per_s,
            (r.vs_closed_form - 1.0) * 100.0,
            r.bottleneck_occupancy * 100.0
        );
    }
    if let Some(e) = &u.event {
        out += &format!(
            "  event engine over {} tokens each ({} messages): {:.0} tokens/s in all ({:+.1}% vs the closed form), {:.0} each, busiest PEs computing {:.0}% of the run{}\n",
            e.tokens,
            e.messages,
            e.aggregate_tokens_per_s,
            (e.vs_closed_form - 1.0) * 100.0,
            e.per_user_tokens_per_s,
            e.busiest_compute * 100.0,
            if u.users > u.stages { " — past the stage count, not yet a figure to trust" } else { "" }
        );
    }
    if let Some(why) = &u.event_skipped {
        out += &format!("  event engine: not run ({why})\n");
    }
    out
}

/// One prompt chunk size tried, with its time to first token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChunkTtft {
    pub chunk: u64,
    pub ttft_us: f64,
}

impl RunPrefill {
    /// The way the prompt ran, in a few words: `streamed, chunks of 2`,
    /// `as GEMMs, blocks of 1`, `GEMMs layer by layer, blocks of 4`,
    /// `Cannon GEMMs, 4 rows per PE`.
    pub fn way_short(&self) -> String {
        match self.way.as_str() {
            "gemm" => format!("as GEMMs, blocks of {}", self.chunk),
            "gemm_layers" => format!("GEMMs layer by layer, blocks of {}", self.chunk),
            "gemm_cannon" => format!("Cannon GEMMs, {} rows per PE", self.chunk),
            _ if self.chunk == 1 => "streamed token by token".to_string(),
            _ => format!("streamed, chunks of {}", self.chunk),
        }
    }
}

/// The gemm way's blocks replayed one by one.
#[derive(Debug, Clone, Serialize)]
pub struct PrefillReplay {
    pub ttft_us: f64,
    /// `ttft_us` over the closed form's.
    pub vs_closed_form: f64,
}

/// One schedule and block size of the gemm way, with its time to first token.
#[derive(Debug, Clone, Serialize)]
pub struct GemmTtft {
    /// `pipelined` (a block in flight in every layer), `layer_by_layer` or `cannon`.
    pub schedule: String,
    /// Tokens of one sequence per block.
    pub block: u64,
    pub ttft_us: f64,
}

/// Time to first token of `wafer run --prompt`.
#[derive(Debug, Clone, Serialize)]
pub struct RunPrefill {
    pub prompt: u64,
    pub cached: u64,
    /// The faster of the two ways to run the prompt on the wafer's mapping
    /// (`way`), at its fastest chunk or block size.
    pub ttft_us: f64,
    pub prompt_tokens_per_s: f64,
    /// What sets the time between prompt chunks.
    pub bottleneck: String,
    /// The fastest way: `stream` (chunks through the decode mapping), `gemm`
    /// (weight-stationary GEMMs over its resident weights, blocks pipelined
    /// through the layers: `wafer_cost::prefill`), `gemm_layers` (the same
    /// GEMMs one region at a time over every block) or `gemm_cannon` (layer by
    /// layer, square regions as Cannon GEMMs over the whole prompt).
    pub way: String,
    /// Prompt tokens of each sequence per step of that way (a chunk; a GEMM block).
    pub chunk: u64,
    /// Every chunk streamed (powers of two), with its time to first token.
    pub chunks: Vec<ChunkTtft>,
    /// Why no larger chunk was tried (SRAM), if one was refused.
    pub chunk_limit: Option<String>,
    /// Every schedule and block size of the gemm way (powers of two), with its time to first token.
    pub gemm_blocks: Vec<GemmTtft>,
    /// Per schedule, why no larger block fitted (or, with no blocks, why the gemm way cannot run).
    pub gemm_limit: Option<String>,
    /// With `way: gemm`, the same blocks played one by one through the
    /// regions' PEs and links (`wafer_simulator::replay_gemm_prefill`), when
    /// small enough to play; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<PrefillReplay>,
    /// The GPU baseline's calibrated TTFT, µs (null without a GPU).
    pub gpu_ttft_us: Option<f64>,
}

/// Speculative decoding of `wafer run` / `wafer compare --draft`: `k` draft
/// decode steps, then one `(k + 1)`-token verify step of the target, each
/// drafted token accepted with probability `accept`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSpeculative {
    pub draft: String,
    pub k: u32,
    pub accept: f64,
    /// `(1 − α^(k+1)) / (1 − α)` tokens per round on average.
    pub expected_tokens_per_step: f64,
    pub wafer: WaferSpeculative,
    /// The GPU baseline's round on the target's GPUs (null without a GPU, or when it cannot run: `gpu_error`).
    pub gpu: Option<GpuSpeculative>,
    /// Why the GPU side has no speculative figures (the draft does not fit beside the target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_error: Option<String>,
}

/// The wafer's round: each step timed as its own program.
#[derive(Debug, Clone, Serialize)]
pub struct WaferSpeculative {
    /// One draft decode step, µs, and the engine that timed it.
    pub draft_step_us: f64,
    pub draft_engine: String,
    /// The target's `(k + 1)`-token verify step, µs, and its engine.
    pub verify_step_us: f64,
    pub verify_engine: String,
    /// `k × draft + verify`, µs.
    pub round_us: f64,
    /// Round over expected tokens, µs per token, and tokens/s of the batch.
    pub effective_us_per_token: f64,
    pub effective_tokens_per_s: f64,
    /// Plain decode tokens/s over effective (> 1: speculation pays).
    pub speedup: f64,
    /// `shared` (the draft on the target's wafers) or `own wafers`.
    pub placement: String,
    /// How it shares: stacked in later turns (and how oriented), or side by side (the split).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Why it does not share (the verifier's first diagnostic), with `own wafers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not_shared: Option<String>,
    /// Wafers the round uses (the target's, plus the draft's own) and the draft's.
    pub machines: u32,
    pub draft_wafers: u32,
    /// The target's mapping for the round when it is not the plain one, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_mapping: Option<String>,
    /// Energy and cost per token at the effective rate on `machines` wafers.
    pub energy: crate::EnergyFigure,
}

/// The GPU baseline's round (`wafer gpu --draft`'s pricing), on the target's GPUs.
#[derive(Debug, Clone, Serialize)]
pub struct GpuSpeculative {
    #[serde(flatten)]
    pub estimate: wafer_gpu::SpecEstimate,
    /// Energy and cost per token at the effective rate.
    pub energy: crate::EnergyFigure,
}

impl RunSpeculative {
    /// The text block of `run`'s output.
    pub fn to_text(&self) -> String {
        let w = &self.wafer;
        let mut out = format!(
            "speculative decoding: draft {} proposes k = {} tokens, each accepted with probability {}: {:.3} tokens \
             per round on average\n",
            self.draft, self.k, self.accept, self.expected_tokens_per_step
        );
        out += &format!(
            "  wafer: {} × {:.1} µs draft ({}) + {:.1} µs verify ({}-token step, {}) = {:.1} µs per round; \
             {:.1} µs per token, {:.0} tokens/s ({:.2}× plain); draft placement: {} ({} wafer(s) in all)\n",
            self.k,
            w.draft_step_us,
            w.draft_engine,
            w.verify_step_us,
            self.k + 1,
            w.verify_engine,
            w.round_us,
            w.effective_us_per_token,
            w.effective_tokens_per_s,
            w.speedup,
            w.placement,
            w.machines
        );
        for (what, line) in
            [("layout", &w.layout), ("not shared", &w.why_not_shared), ("target mapping", &w.target_mapping)]
        {
            if let Some(l) = line {
                out += &format!("    {what}: {l}\n");
            }
        }
        out += &format!("    energy: {}; cost: {}\n", w.energy.joules_text(), w.energy.cost_text());
        if let Some(g) = &self.gpu {
            let e = &g.estimate;
            out += &format!(
                "  GPU: {} × {:.3} ms draft + {:.3} ms verify = {:.3} ms per round; {:.3} ms per token, {:.0} \
                 tokens/s ({:.2}× plain); energy: {}; cost: {}\n",
                self.k,
                e.draft_step_ms,
                e.verify_step_ms,
                e.round_ms,
                e.effective_tpot_ms,
                e.effective_tokens_per_s,
                e.speedup,
                g.energy.joules_text(),
                g.energy.cost_text()
            );
        }
        if let Some(e) = &self.gpu_error {
            out += &format!("  GPU: no speculative figures: {e}\n");
        }
        out
    }
}

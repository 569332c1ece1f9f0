//! Spatial IR: a decode step mapped onto a mesh of PEs.
//!
//! Owns: the plain data of a compiled program — regions (PE rectangles and the
//! work they do), per-PE task templates, routes (with colors) and per-PE SRAM
//! — and the geometry every consumer must agree on: which PE holds which
//! slice ([`Region::rows_of`] and friends) and which messages a route sends
//! ([`route_messages`]). Must not: choose mappings (compiler) or time anything
//! (simulator).
//!
//! # Semantics (the contract between compiler and engines)
//! Coordinates are per wafer: `x` in `0..mesh_width` (columns), `y` in
//! `0..mesh_height` (rows). A region's PE `(r, c)` is at `(rect.x + c, rect.y + r)`.
//! All vectors carry `batch · new_tokens` rows ([`Program::rows`]: one per
//! sequence in a decode step, one per token of each sequence in a prompt
//! chunk); byte counts include them. KV caches are per sequence.
//!
//! * **Gemv** `y = x Wᵀ` (`W` is `[n, k]`): PE `(r, c)` holds `W[r·tile_n.., c·tile_k..]`
//!   (edge tiles smaller). The input slice `c` arrives at the column head `(c, 0)`
//!   and is multicast down the column. With `norm`, the column heads first
//!   all-reduce two fp32 statistics (sum and sum of squares) along row 0 (route kind `norm`). Each PE
//!   computes its partial `tile_n` sums (in its `acc` dtype: fp32 or fp16); partials
//!   are reduced along each row to the row root `(r, Reduce::root(w))` — column 0
//!   except for `Meet` — with the region's [`Reduce`] shape (route kind `reduce`).
//!   The root runs the fused epilogue (`epilogue_ops` element-wise ops per output
//!   element: bias, RoPE, activation, residual add). With `glu`, rows hold gate and
//!   up rows interleaved, so the root of row `r` emits `tile_n / 2` outputs
//!   `act(gate) · up`. With `argmax`, row roots reduce (value, index) pairs down
//!   column 0 to `(0, 0)` (route kind `argmax`): the sampled token. With a `bcast`
//!   route, each row root then multicasts its finished output back along its row
//!   (east and west), so every PE of row `r` holds it (an all-reduce, as MeshGEMV).
//!   With `batch_chunk=C`, each PE computes its partials `C` batch rows at a
//!   time and streams each chunk out before the next (its partial buffers hold
//!   `C` rows); the `reduce` messages and the arithmetic are those of the
//!   unchunked Gemv.
//! * **Attention**: rows `[h·rows_per_head, (h+1)·rows_per_head)` serve KV head `h`
//!   and its `group` query heads. The head's `positions` cached positions are laid
//!   row-major over its block, `pos_per_pe` per PE (for each of the `batch`
//!   sequences: every sequence has its own cache). Its `group·head_dim` query
//!   values arrive at the block's first PE and are multicast over the block; the new
//!   token's K and V go to the PE holding position `slot`. Each PE computes scores,
//!   its local softmax statistics and partial `P·V` (fp32); partial states
//!   `(max, sum, acc[group·head_dim])` are combined along each row to column 0 with
//!   `reduce`, then down column 0 of the block (a chain). The block's first PE holds
//!   the head group's output.
//! * **Embedding**: table rows laid row-major over the region, `rows_per_pe` per PE;
//!   the PE holding row `token` sends it on. A `forward` route into it carries the
//!   sampled token ids (`i32`, one per row) from its source's first output line to
//!   that PE, which then starts (a token fed back to the next step: users in
//!   flight, `wafer_compiler::unroll`); without one it starts with its data.
//! * **Gemm** `C = A·B` Cannon-style (MeshGEMM) on a square region, every
//!   operand resident and every tile move inside the region (see [`Work::Gemm`]);
//!   the product stays distributed, one `C` tile per PE. A kernel-level work
//!   today: the verifier lets no route into or out of it.
//! * **Routes** carry a region's output to the next: `forward` (to a Gemv's column
//!   heads, or an Attention's head blocks), `residual` (to a Gemv's row roots, for
//!   the epilogue's add), and the region-internal `reduce`, `norm` and `argmax`.
//!   Messages follow dimension-ordered (X then Y) paths. A route whose regions lie on
//!   different wafers crosses the system link.

use crate::arch::ArchSpec;
use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Index into `Program::regions`. Prints as `rN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RegionId(pub u32);
/// Index into `Program::routes`. Prints as `rtN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteId(pub u32);

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}
impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rt{}", self.0)
    }
}

/// A PE, in wafer-local coordinates. Prints as `pe(x,y)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pe {
    pub x: u32,
    pub y: u32,
}
impl fmt::Display for Pe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pe({},{})", self.x, self.y)
    }
}

/// A rectangle of PEs: `w` columns by `h` rows from `(x, y)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn pes(&self) -> u64 {
        self.w as u64 * self.h as u64
    }
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
    pub fn pe(&self, r: u32, c: u32) -> Pe {
        Pe { x: self.x + c, y: self.y + r }
    }
}

/// Shape of a reduction along a line of `n` PEs towards index 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// Pipelined chain: `n-1 → n-2 → … → 0`, each PE adding as data streams through.
    Chain,
    /// Binary tree: at level `l`, index `i + 2^l` sends to `i` for `i` a multiple of `2^(l+1)`.
    Tree,
    /// Chains within groups of `group` consecutive PEs to each group's first PE,
    /// then a binary tree over the group leaders.
    TwoLevel { group: u32 },
    /// MeshGEMV's two-level shape (WaferLLM, OSDI 2025): the line splits into
    /// groups of `group` consecutive PEs; in each, two pipelined chains, one
    /// from each end, meet at the group's middle PE (local index `len / 2`);
    /// then two chains over the group roots meet at the root of group
    /// `groups / 2`, which is the line's root ([`Reduce::root`]), not index 0.
    Meet { group: u32 },
}

impl Reduce {
    /// Colors the shape needs on each line (a tree alternates two to keep
    /// consecutive levels apart; a two-level shape needs one per level).
    pub fn colors(&self) -> u32 {
        match self {
            Reduce::Chain => 1,
            Reduce::Tree | Reduce::TwoLevel { .. } | Reduce::Meet { .. } => 2,
        }
    }

    /// Index of the PE that ends up with the reduced value on a line of `n`.
    pub fn root(&self, n: u32) -> u32 {
        match *self {
            Reduce::Chain | Reduce::Tree | Reduce::TwoLevel { .. } => 0,
            Reduce::Meet { group } => {
                let groups = meet_groups(n, group);
                groups.get(groups.len() / 2).map_or(0, |g| g.root)
            }
        }
    }

    /// True when PE `idx` of a line of `n` is a pipelined relay: it adds the
    /// partial streaming in from its chain predecessor (its last receive) to its
    /// own and passes the sum on as it arrives, without first landing it in
    /// memory. Its other receives (a Meet group root's phase-one partials) are
    /// added first.
    pub fn relays(&self, n: u32, idx: u32) -> bool {
        if idx >= n {
            return false;
        }
        match *self {
            Reduce::Chain => idx > 0 && idx + 1 < n,
            Reduce::Tree => false,
            Reduce::TwoLevel { group } => {
                let g = group.max(1);
                let s = idx - idx % g;
                let last = (s + g).min(n) - 1;
                idx != s && idx != last
            }
            Reduce::Meet { group } => {
                let groups = meet_groups(n, group);
                let gi = (idx / group.clamp(1, n)) as usize;
                let Some(g) = groups.get(gi) else { return false };
                let center = groups.len() / 2;
                if idx == g.root {
                    gi != center && gi != 0 && gi + 1 != groups.len()
                } else {
                    idx != g.start && idx != g.end
                }
            }
        }
    }

    /// The reduction as rounds of (src index, dst index) transfers along a line of `n`.
    /// Transfers in one round are independent; a chain is one round per hop.
    pub fn rounds(&self, n: u32) -> Vec<Vec<(u32, u32)>> {
        let tree = |idx: &[u32]| -> Vec<Vec<(u32, u32)>> {
            let mut out = Vec::new();
            let mut step = 1usize;
            while step < idx.len() {
                let round: Vec<(u32, u32)> = (0..idx.len())
                    .step_by(2 * step)
                    .filter(|i| i + step < idx.len())
                    .map(|i| (idx[i + step], idx[i]))
                    .collect();
                out.push(round);
                step *= 2;
            }
            out
        };
        match *self {
            Reduce::Chain => (1..n).rev().map(|i| vec![(i, i - 1)]).collect(),
            Reduce::Tree => tree(&(0..n).collect::<Vec<_>>()),
            Reduce::TwoLevel { group } => {
                let g = group.max(1);
                let mut out: Vec<Vec<(u32, u32)>> = Vec::new();
                for step in (1..g).rev() {
                    let round: Vec<(u32, u32)> =
                        (0..n).step_by(g as usize).filter(|s| s + step < n).map(|s| (s + step, s + step - 1)).collect();
                    if !round.is_empty() {
                        out.push(round);
                    }
                }
                let leaders: Vec<u32> = (0..n).step_by(g as usize).collect();
                out.extend(tree(&leaders));
                out
            }
            Reduce::Meet { group } => {
                let groups = meet_groups(n, group);
                let mut out: Vec<Vec<(u32, u32)>> = Vec::new();
                // Phase one: in every group, both ends step towards the group root.
                let depth = groups.iter().map(|g| (g.root - g.start).max(g.end - g.root)).max().unwrap_or(0);
                for j in 0..depth {
                    let mut round = Vec::new();
                    for g in &groups {
                        if g.start + j < g.root {
                            round.push((g.start + j, g.start + j + 1));
                        }
                        if g.end > g.root + j {
                            round.push((g.end - j, g.end - j - 1));
                        }
                    }
                    out.push(round);
                }
                // Phase two: the same over the group roots, towards the centre group's root.
                let c = groups.len() / 2;
                let last = groups.len().saturating_sub(1);
                for j in 0..c.max(last - c) {
                    let mut round = Vec::new();
                    if j < c {
                        round.push((groups[j].root, groups[j + 1].root));
                    }
                    if last > c + j {
                        round.push((groups[last - j].root, groups[last - j - 1].root));
                    }
                    out.push(round);
                }
                out
            }
        }
    }
}

/// One group of a [`Reduce::Meet`] line: PEs `start..=end`, reduced to `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MeetGroup {
    start: u32,
    end: u32,
    root: u32,
}

fn meet_groups(n: u32, group: u32) -> Vec<MeetGroup> {
    let g = group.clamp(1, n.max(1));
    (0..n)
        .step_by(g as usize)
        .map(|start| {
            let len = g.min(n - start);
            MeetGroup { start, end: start + len - 1, root: start + len / 2 }
        })
        .collect()
}

fn default_acc() -> DType {
    DType::F32
}
fn default_true() -> bool {
    true
}
fn default_one() -> u64 {
    1
}

/// What a region computes, with its tiling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Work {
    Gemv {
        n: u64,
        k: u64,
        tile_n: u64,
        tile_k: u64,
        reduce: Reduce,
        glu: bool,
        norm: bool,
        argmax: bool,
        epilogue_ops: u32,
        /// Accumulator of the partial sums, what the reduction carries and adds:
        /// `fp32` (`@fmachs`, the default) or `fp16` (`@fmach`, twice the SIMD
        /// rate and half the bytes on the fabric, as MeshGEMV does; error bound
        /// in `wafer_simulator::functional`).
        #[serde(default = "default_acc")]
        acc: DType,
        /// The PEs run the local multiply-accumulate. `false` only replays a
        /// measurement harness that skips it (the published MeshGEMV source has
        /// it commented out): the PEs zero their partials and go straight to the
        /// reduction. Such a region computes nothing the functional engine can check.
        #[serde(default = "default_true")]
        mac: bool,
        /// Batch rows per pass (0: the whole batch in one pass). With `C` set,
        /// the PEs compute their partials `C` batch rows at a time and stream
        /// each chunk into the row's reduction before the next, reusing one
        /// chunk's partial buffers: what lets a Gemv of a large batch fit SRAM.
        /// The timing engines price it as the unchunked Gemv (every chunk's
        /// AXPYs, then the batch's partials along the row, the same messages):
        /// an upper bound, since a chunk's reduction could overlap the next
        /// chunk's compute.
        #[serde(default)]
        batch_chunk: u64,
    },
    Attention {
        kv_heads: u64,
        group: u64,
        head_dim: u64,
        positions: u64,
        slot: u64,
        rows_per_head: u32,
        pos_per_pe: u64,
        reduce: Reduce,
        /// Sequences split over the head block (1: every PE serves every
        /// sequence). With `S`, head block `h` is cut into `S` sub-blocks of
        /// `rows_per_head / S` rows; sub-block `j` serves sequences
        /// [`Work::seq_range`] `j` only (its query, KV cache, scores and
        /// partial states), so a PE's buffers hold `⌈batch / S⌉` sequences.
        #[serde(default = "default_one")]
        batch_split: u64,
    },
    Embedding {
        vocab: u64,
        hidden: u64,
        rows_per_pe: u64,
        token: u64,
    },
    /// `C[m×n] = A[m×k]·B[k×n]`, Cannon-style (MeshGEMM) on a square region of
    /// `P × P` PEs: PE (row `i`, column `j`) holds one `tile_m × tile_k` tile of
    /// `A`, one `tile_k × tile_n` tile of `B` (operands in the program's weight
    /// dtype) and its own `tile_m × tile_n` tile of `C` (in `acc`), which never
    /// moves. After an initial skew there are `P` steps; in each, every PE adds
    /// its `tile_k` rank-1 updates into `C`, while its `A` tile moves one ring
    /// position along its row and its `B` tile one along its column (the
    /// "two-hop" interleaved ring: every logical neighbour at most two physical
    /// hops away), into spare buffers. The tile moves are part of the work, not
    /// routes: they are lockstep, stay inside the region and overlap the
    /// compute (their cost is in `wafer_cost::timing::gemm_step`). `m` counts
    /// every row the step multiplies (a batch's tokens included): the
    /// program's batch does not scale it again.
    Gemm {
        m: u64,
        k: u64,
        n: u64,
        tile_m: u64,
        tile_k: u64,
        tile_n: u64,
        acc: DType,
    },
}

impl Work {
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Work::Gemv { .. } => "gemv",
            Work::Attention { .. } => "attention",
            Work::Embedding { .. } => "embedding",
            Work::Gemm { .. } => "gemm",
        }
    }

    /// Elements of the region's output vector (per batch row).
    pub fn out_elems(&self) -> u64 {
        match *self {
            Work::Gemv { n, glu, argmax, .. } => {
                if argmax {
                    1
                } else if glu {
                    n / 2
                } else {
                    n
                }
            }
            Work::Attention { kv_heads, group, head_dim, .. } => kv_heads * group * head_dim,
            Work::Embedding { hidden, .. } => hidden,
            Work::Gemm { m, n, .. } => m * n,
        }
    }

    /// Attention: head sub-blocks (`kv_heads · batch_split`), each one output line.
    pub fn attn_blocks(&self) -> u64 {
        match *self {
            Work::Attention { kv_heads, batch_split, .. } => kv_heads * batch_split.max(1),
            _ => 0,
        }
    }

    /// Attention: PE rows of one sub-block (`rows_per_head / batch_split`).
    pub fn block_rows(&self) -> u32 {
        match *self {
            Work::Attention { rows_per_head, batch_split, .. } => {
                (rows_per_head as u64 / batch_split.max(1)).max(1) as u32
            }
            _ => 0,
        }
    }

    /// Batch rows `[lo, hi)` served by attention sub-block `j` of a head (all
    /// rows for other work): consecutive groups of `⌈batch / batch_split⌉`.
    pub fn seq_range(&self, j: u64, batch: u64) -> (u64, u64) {
        match *self {
            Work::Attention { batch_split, .. } if batch_split > 1 => {
                let per = batch.div_ceil(batch_split);
                ((j * per).min(batch), ((j + 1) * per).min(batch))
            }
            _ => (0, batch),
        }
    }

    /// Sequences one PE serves: the largest sub-block's for attention, else the batch.
    pub fn seqs_per_pe(&self, batch: u64) -> u64 {
        match *self {
            Work::Attention { batch_split, .. } => batch.div_ceil(batch_split.max(1)),
            _ => batch,
        }
    }

    /// Gemv: batch rows of one pass (the chunk, or the whole batch).
    pub fn chunk_rows(&self, batch: u64) -> u64 {
        match *self {
            Work::Gemv { batch_chunk, .. } if batch_chunk > 0 => batch_chunk.min(batch),
            _ => batch,
        }
    }

    /// Elements of the input vector (per batch row) the region consumes.
    pub fn in_elems(&self) -> u64 {
        match *self {
            Work::Gemv { k, .. } => k,
            Work::Attention { kv_heads, group, head_dim, .. } => kv_heads * group * head_dim + 2 * kv_heads * head_dim,
            Work::Embedding { .. } => 0,
            Work::Gemm { m, k, .. } => m * k,
        }
    }
}

/// Per-PE SRAM, bytes (the largest PE of the region).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sram {
    pub code: u64,
    pub weights: u64,
    pub kv: u64,
    pub buffers: u64,
}

impl Sram {
    /// The sum, saturating at `u64::MAX` (the verifier uses [`Sram::checked_total`]).
    pub fn total(&self) -> u64 {
        self.checked_total().unwrap_or(u64::MAX)
    }
    /// Adds what region `o` keeps on a PE this one's regions share, in another
    /// turn: the code reserve is one (the larger), weights and KV caches are
    /// resident side by side, and the buffers are scratch the turns reuse
    /// (the larger: regions of different turns never compute together).
    pub fn stack(&mut self, o: &Sram) {
        self.code = self.code.max(o.code);
        self.weights = self.weights.saturating_add(o.weights);
        self.kv = self.kv.saturating_add(o.kv);
        self.buffers = self.buffers.max(o.buffers);
    }
    /// The sum, `None` if it does not fit in 64 bits.
    pub fn checked_total(&self) -> Option<u64> {
        crate::limits::checked_sum(&[self.code, self.weights, self.kv, self.buffers])
    }
}

/// One step of the per-PE task template, run in order by the PEs that take part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// Wait for the payload of `route`; `bytes` is what the whole region receives.
    Recv { route: RouteId, bytes: u64 },
    /// The region's local compute (its `Work`).
    Compute,
    /// Take part in the region-internal collective `route`.
    Collective { route: RouteId },
    /// Send the region's output on `route`; `bytes` is what the whole region sends.
    Send { route: RouteId, bytes: u64 },
}

impl Step {
    /// The same step with its route's id moved up by `by` (routes appended
    /// after `by` others: a program joined to another, a copy of a step).
    pub fn with_route_offset(self, by: u32) -> Step {
        let r = |id: RouteId| RouteId(id.0 + by);
        match self {
            Step::Recv { route, bytes } => Step::Recv { route: r(route), bytes },
            Step::Send { route, bytes } => Step::Send { route: r(route), bytes },
            Step::Collective { route } => Step::Collective { route: r(route) },
            Step::Compute => Step::Compute,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    pub layer: Option<u32>,
    pub wafer: u32,
    pub rect: Rect,
    /// Position in the step's schedule. Regions of one turn may run at the
    /// same time and must not share a PE; a PE shared by regions of different
    /// turns runs them one after the other, in turn order. Turns never
    /// decrease along `Program::regions`. A pipeline of disjoint regions is
    /// all turn 0; a mapping that stacks layers on the same PEs gives every
    /// region its own turn.
    #[serde(default)]
    pub turn: u32,
    /// Resident but not run this step (MoE experts the token is not routed to).
    pub active: bool,
    /// Graph ops fused into this region, by name.
    pub ops: Vec<String>,
    pub work: Work,
    pub sram: Sram,
    pub steps: Vec<Step>,
}

impl Region {
    /// Output rows `[lo, hi)` held by row `r` of a Gemv (before the GLU halving).
    pub fn rows_of(&self, r: u32) -> (u64, u64) {
        match self.work {
            Work::Gemv { n, tile_n, .. } => ((r as u64 * tile_n).min(n), ((r as u64 + 1) * tile_n).min(n)),
            _ => (0, 0),
        }
    }
    /// Input columns `[lo, hi)` held by column `c` of a Gemv.
    pub fn cols_of(&self, c: u32) -> (u64, u64) {
        match self.work {
            Work::Gemv { k, tile_k, .. } => ((c as u64 * tile_k).min(k), ((c as u64 + 1) * tile_k).min(k)),
            _ => (0, 0),
        }
    }

    /// Output elements `[lo, hi)` (after GLU) held at the root of row `r` of a
    /// Gemv, or at the first PE of head block `r` of an Attention.
    pub fn out_slice(&self, r: u32) -> (u64, u64) {
        match self.work {
            Work::Gemv { glu, .. } => {
                let (lo, hi) = self.rows_of(r);
                if glu {
                    (lo / 2, hi / 2)
                } else {
                    (lo, hi)
                }
            }
            Work::Attention { group, head_dim, kv_heads, batch_split, .. } => {
                let w = group * head_dim;
                let h = r as u64 / batch_split.max(1);
                if h < kv_heads {
                    (h * w, (h + 1) * w)
                } else {
                    (0, 0)
                }
            }
            Work::Embedding { hidden, .. } => {
                if r == 0 {
                    (0, hidden)
                } else {
                    (0, 0)
                }
            }
            // The product stays distributed over the square (one tile per PE).
            Work::Gemm { m, n, .. } => {
                if r == 0 {
                    (0, m * n)
                } else {
                    (0, 0)
                }
            }
        }
    }

    /// Batch rows `[lo, hi)` output line `r` holds: every row, except on an
    /// Attention split by sequence (line `h · batch_split + j` holds sub-block
    /// `j`'s sequences).
    pub fn out_rows(&self, r: u32, batch: u64) -> (u64, u64) {
        match self.work {
            Work::Attention { batch_split, .. } => self.work.seq_range(r as u64 % batch_split.max(1), batch),
            _ => (0, batch),
        }
    }

    /// Lines (rows for Gemv, head sub-blocks for Attention) that hold output.
    pub fn out_lines(&self) -> u32 {
        self.work.out_lines_on(self.rect)
    }

    /// The PE holding output line `r`.
    pub fn out_pe(&self, r: u32) -> Pe {
        self.work.out_pe_on(self.rect, r)
    }

    /// Whether region-local PE (`row`, `col`) holds one of the output lines.
    pub fn holds_output(&self, row: u32, col: u32) -> bool {
        self.work.holds_output_on(self.rect, row, col)
    }
}

impl Work {
    /// [`Region::out_lines`] of this work on `rect`.
    pub fn out_lines_on(&self, rect: Rect) -> u32 {
        match self {
            Work::Gemv { argmax: true, .. } | Work::Embedding { .. } | Work::Gemm { .. } => 1,
            Work::Gemv { .. } => rect.h,
            Work::Attention { .. } => self.attn_blocks() as u32,
        }
    }

    /// [`Region::out_pe`] of this work on `rect`.
    pub fn out_pe_on(&self, rect: Rect, r: u32) -> Pe {
        match *self {
            Work::Gemv { argmax: true, .. } => rect.pe(0, 0),
            Work::Gemv { reduce, .. } => rect.pe(r, reduce.root(rect.w)),
            Work::Attention { .. } => rect.pe(r * self.block_rows(), 0),
            Work::Embedding { rows_per_pe, token, .. } => {
                let i = (token / rows_per_pe.max(1)) as u32;
                rect.pe(i / rect.w, i % rect.w)
            }
            Work::Gemm { .. } => rect.pe(0, 0),
        }
    }

    /// The output line region-local row `row` sends from or receives at: its
    /// row for a Gemv, its head sub-block for an Attention, else the one line.
    pub fn line_of_row(&self, row: u32) -> u32 {
        match self {
            Work::Gemv { argmax: true, .. } | Work::Embedding { .. } | Work::Gemm { .. } => 0,
            Work::Gemv { .. } => row,
            Work::Attention { .. } => row / self.block_rows().max(1),
        }
    }

    /// [`Region::holds_output`] of this work on `rect`.
    pub fn holds_output_on(&self, rect: Rect, row: u32, col: u32) -> bool {
        let line = self.line_of_row(row);
        line < self.out_lines_on(rect) && self.out_pe_on(rect, line) == rect.pe(row, col)
    }
}

/// Kinds of route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    Forward,
    Residual,
    Reduce,
    Norm,
    Argmax,
    /// A Gemv's row roots send their finished output back along their row, so
    /// every PE of the row ends up holding it (MeshGEMV's all-reduce).
    Bcast,
}

impl RouteKind {
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Forward => "forward",
            RouteKind::Residual => "residual",
            RouteKind::Reduce => "reduce",
            RouteKind::Norm => "norm",
            RouteKind::Argmax => "argmax",
            RouteKind::Bcast => "bcast",
        }
    }
    pub fn is_collective(self) -> bool {
        matches!(self, RouteKind::Reduce | RouteKind::Norm | RouteKind::Argmax | RouteKind::Bcast)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub kind: RouteKind,
    pub src: RegionId,
    pub dst: RegionId,
    /// First color; a route needing several (trees) uses `color..color+colors`.
    pub color: u32,
    pub colors: u32,
    /// Bytes the route moves in total for one step (all messages, batch included).
    pub bytes: u64,
}

/// A compiled decode step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub model: String,
    /// Sequences, each with its own KV cache.
    pub batch: u64,
    /// Tokens of each sequence the step computes: 1 for a decode step, `c`
    /// for a chunk of `c` prompt tokens run through the same mapping (every
    /// activation then carries `batch · new_tokens` rows; the KV cache stays
    /// one per sequence, `context` positions including the chunk's).
    #[serde(default = "default_one")]
    pub new_tokens: u64,
    pub context: u64,
    pub weight_dtype: DType,
    pub act_dtype: DType,
    pub kv_dtype: DType,
    pub wafers: u32,
    pub arch: ArchSpec,
    pub regions: Vec<Region>,
    pub routes: Vec<Route>,
}

impl Program {
    pub fn region(&self, id: RegionId) -> &Region {
        &self.regions[id.0 as usize]
    }
    pub fn route(&self, id: RouteId) -> &Route {
        &self.routes[id.0 as usize]
    }
    pub fn pes_used(&self) -> u64 {
        self.regions.iter().map(|r| r.rect.pes()).sum()
    }
    /// Rows every activation carries: `batch · new_tokens`.
    pub fn rows(&self) -> u64 {
        self.batch.saturating_mul(self.new_tokens)
    }
}

/// The name of user `user`'s token `token` copy of region `region` in a
/// program unrolled over users in flight (`wafer_compiler::unroll_users`):
/// how the steady state reads each copy's timing back (`@` is not in any
/// compiled region's name).
pub fn copy_name(region: &str, user: u32, token: u32) -> String {
    format!("{region}@u{user}t{token}")
}

/// The inverse of [`copy_name`]: `(region, user, token)`, or `None` for a
/// name that is not a copy's.
pub fn parse_copy_name(name: &str) -> Option<(&str, u32, u32)> {
    let (region, tag) = name.rsplit_once('@')?;
    let (u, t) = tag.strip_prefix('u')?.split_once('t')?;
    Some((region, u.parse().ok()?, t.parse().ok()?))
}

/// What a message carries, set where [`route_messages`] makes it, so that no
/// consumer has to infer it from the message's geometry (which changes when a
/// router without multicast turns one tail into many unicasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A `forward` slice into a Gemv's column (multicast down the column).
    ColumnInput,
    /// A `forward` slice of an Attention head block's query (multicast over the block).
    Query,
    /// A `forward` slice of the new token's K or V, to the PE holding position `slot`.
    KvAppend,
    /// A `residual` slice into a Gemv's row root, for the epilogue's add.
    Residual,
    /// One round of a region-internal collective (`reduce`, `norm`'s tree, `argmax`).
    Collective,
    /// The norm's statistics broadcast back along row 0 (its last round).
    NormBcast,
    /// A Gemv row root's finished output sent back along its row (`bcast`).
    RowBcast,
    /// A sampled token id fed back into an Embedding, to the PE holding its row.
    Token,
}

/// One point-to-point transfer of a route, with an optional multicast tail:
/// after reaching `to`, the payload continues to `fan_cols` further PEs to the
/// east (to the west when `west`) and then `fan_rows` further rows south of
/// every PE it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub from: Pe,
    pub to: Pe,
    pub bytes: u64,
    pub fan_cols: u32,
    pub fan_rows: u32,
    /// The column tail runs west of `to` instead of east.
    pub west: bool,
    /// What it carries; kept by the unicast copies of a multicast.
    pub purpose: Purpose,
    /// Round of a collective (messages of round `i+1` start after round `i`
    /// delivered to their sender); 0 for non-collective routes.
    pub round: u32,
    /// Crosses the system link between wafers.
    pub inter_wafer: bool,
}

impl Message {
    /// Hops from `from` to `to` (Manhattan distance; X then Y), plus the multicast tail.
    pub fn hops(&self) -> u32 {
        self.from.x.abs_diff(self.to.x) + self.from.y.abs_diff(self.to.y) + self.fan_cols + self.fan_rows
    }

    /// The multicast tail after `to`: along `to`'s row (east, or west when
    /// `west`) for `fan_cols` links, then south for `fan_rows` links down
    /// every column the row reached (one leg of `fan_cols + 1` lanes, from the
    /// row's westmost PE). Either leg may be empty.
    pub fn tail(&self) -> [Leg; 2] {
        tail_legs(self.to, self.fan_cols, self.fan_rows, self.west)
    }

    /// Every link the message crosses on its wafer, as non-empty legs in
    /// order: its path ([`xy_path`]), then its tail ([`Message::tail`]).
    pub fn legs(&self) -> impl Iterator<Item = Leg> {
        xy_path(self.from, self.to).into_iter().chain(self.tail()).filter(|l| l.len > 0)
    }
}

/// A direction on the mesh: `E` is +x, `W` −x, `S` +y, `N` −y.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    E,
    W,
    N,
    S,
}

/// A straight run of links: `len` links in direction `dir`, the first leaving
/// PE `from`, each next one leaving the PE the previous one reached; `lanes`
/// such runs side by side, east of `from` (only a multicast tail's columns
/// have more than one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    pub from: Pe,
    pub dir: Dir,
    pub len: u32,
    pub lanes: u32,
}

impl Leg {
    /// The PE that link `i` (of the first lane) leaves.
    #[inline]
    pub fn link(&self, i: u32) -> Pe {
        let Pe { x, y } = self.from;
        match self.dir {
            Dir::E => Pe { x: x + i, y },
            Dir::W => Pe { x: x - i, y },
            Dir::S => Pe { x, y: y + i },
            Dir::N => Pe { x, y: y - i },
        }
    }

    /// The PEs the leg's links leave (a link is charged to the PE it leaves).
    pub fn senders(&self) -> Rect {
        let Pe { x, y } = self.from;
        let back = |v: u32| (v + 1).saturating_sub(self.len);
        match self.dir {
            Dir::E => Rect { x, y, w: self.len, h: self.lanes },
            Dir::W => Rect { x: back(x), y, w: self.len, h: self.lanes },
            Dir::S => Rect { x, y, w: self.lanes, h: self.len },
            Dir::N => Rect { x, y: back(y), w: self.lanes, h: self.len },
        }
    }
}

/// A multicast tail from `to` ([`Message::tail`]): `fan_cols` links along
/// its row (west when `west`), then `fan_rows` south down every column reached.
pub fn tail_legs(to: Pe, fan_cols: u32, fan_rows: u32, west: bool) -> [Leg; 2] {
    let row = Leg { from: to, dir: if west { Dir::W } else { Dir::E }, len: fan_cols, lanes: 1 };
    let x0 = if west { to.x.saturating_sub(fan_cols) } else { to.x };
    let fan = Leg { from: Pe { x: x0, y: to.y }, dir: Dir::S, len: fan_rows, lanes: fan_cols + 1 };
    [row, fan]
}

/// The dimension-ordered path every message takes from `from` to `to`: X
/// along the source row, then Y along the destination column (either leg
/// may be empty). The one statement of the rule: the engines, the cost
/// model and the heatmap walk these legs.
pub fn xy_path(from: Pe, to: Pe) -> [Leg; 2] {
    let x = Leg { from, dir: if to.x >= from.x { Dir::E } else { Dir::W }, len: from.x.abs_diff(to.x), lanes: 1 };
    let corner = Pe { x: to.x, y: from.y };
    let y =
        Leg { from: corner, dir: if to.y >= from.y { Dir::S } else { Dir::N }, len: from.y.abs_diff(to.y), lanes: 1 };
    [x, y]
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> u64 {
    a.1.min(b.1).saturating_sub(a.0.max(b.0))
}

/// The messages `route` sends, in a deterministic order. On routers without
/// multicast, each multicast tail becomes one unicast message per PE it reached. Collectives list
/// every line's transfers (rows of the region for `reduce`, row 0 for `norm`,
/// column 0 for `argmax`), round by round.
pub fn route_messages(p: &Program, id: RouteId) -> Vec<Message> {
    let mut out = Vec::new();
    for_each_message(p, id, |m| out.push(*m));
    out
}

/// Hands `f` the messages of `route`, in [`route_messages`]'s order, without
/// collecting them: a full-wafer reduction sends millions.
pub fn for_each_message(p: &Program, id: RouteId, mut f: impl FnMut(&Message)) {
    if p.arch.router.multicast {
        multicast_messages(p, id, |m| f(&m));
        return;
    }
    // Without multicast, every PE a tail would reach gets its own copy from the source.
    multicast_messages(p, id, |m| {
        for dy in 0..=m.fan_rows {
            for dx in 0..=m.fan_cols {
                f(&Message {
                    to: Pe { x: if m.west { m.to.x - dx } else { m.to.x + dx }, y: m.to.y + dy },
                    fan_cols: 0,
                    fan_rows: 0,
                    west: false,
                    ..m
                })
            }
        }
    });
}

/// The messages of `route` with multicast tails, in order.
fn multicast_messages(p: &Program, id: RouteId, mut out: impl FnMut(Message)) {
    let rt = p.route(id);
    let src = p.region(rt.src);
    let dst = p.region(rt.dst);
    let act = p.act_dtype;
    let b = p.rows();
    let inter = src.wafer != dst.wafer;
    let msg = |purpose: Purpose, from: Pe, to: Pe, bytes: u64, fan_cols: u32, fan_rows: u32, round: u32| Message {
        from,
        to,
        bytes,
        fan_cols,
        fan_rows,
        west: false,
        purpose,
        round,
        inter_wafer: inter,
    };
    match rt.kind {
        RouteKind::Forward => {
            for r in 0..src.out_lines() {
                let s = src.out_slice(r);
                if s.0 >= s.1 {
                    continue;
                }
                let from = src.out_pe(r);
                let rows = src.out_rows(r, b);
                let b = rows.1 - rows.0;
                match dst.work {
                    Work::Gemv { .. } => {
                        // Columns hold ascending input slices: start at the first that ends past `s`.
                        let first = partition_point(dst.rect.w, |c| dst.cols_of(c).1 <= s.0);
                        for c in (first..dst.rect.w).take_while(|&c| dst.cols_of(c).0 < s.1) {
                            let n = overlap(s, dst.cols_of(c));
                            if n > 0 {
                                out(msg(
                                    Purpose::ColumnInput,
                                    from,
                                    dst.rect.pe(0, c),
                                    act.bytes_for(n * b),
                                    0,
                                    dst.rect.h - 1,
                                    0,
                                ));
                            }
                        }
                    }
                    Work::Attention { kv_heads, group, head_dim, pos_per_pe, slot, batch_split, .. } => {
                        let (qw, kw) = (group * head_dim, head_dim);
                        let split = batch_split.max(1);
                        let brows = dst.work.block_rows();
                        for h in 0..kv_heads {
                            for j in 0..split {
                                // The sequences this sub-block serves that the source line holds.
                                let n_seq = overlap(rows, dst.work.seq_range(j, b));
                                if n_seq == 0 {
                                    continue;
                                }
                                let base = (h * split + j) as u32 * brows;
                                let top = dst.rect.pe(base, 0);
                                let q = overlap(s, (h * qw, (h + 1) * qw));
                                if q > 0 {
                                    out(msg(
                                        Purpose::Query,
                                        from,
                                        top,
                                        act.bytes_for(q * n_seq),
                                        dst.rect.w - 1,
                                        brows - 1,
                                        0,
                                    ));
                                }
                                let i = (slot / pos_per_pe.max(1)) as u32;
                                let holder = dst.rect.pe(base + i / dst.rect.w, i % dst.rect.w);
                                let kbase = kv_heads * qw;
                                for part in 0..2u64 {
                                    let lo = kbase + part * kv_heads * kw + h * kw;
                                    let n = overlap(s, (lo, lo + kw));
                                    if n > 0 {
                                        out(msg(Purpose::KvAppend, from, holder, act.bytes_for(n * n_seq), 0, 0, 0));
                                    }
                                }
                            }
                        }
                    }
                    // The sampled token id (i32 per row) from the source's first line to
                    // the PE holding row `token`: a token fed back (users in flight).
                    Work::Embedding { .. } if r == 0 => {
                        out(msg(Purpose::Token, from, dst.out_pe(0), DType::I32.bytes_for(b), 0, 0, 0));
                    }
                    Work::Embedding { .. } | Work::Gemm { .. } => {}
                }
            }
        }
        RouteKind::Residual => {
            for r in 0..src.out_lines() {
                let s = src.out_slice(r);
                // Output lines hold ascending slices: start at the first that ends past `s`.
                let first = partition_point(dst.out_lines(), |r2| dst.out_slice(r2).1 <= s.0);
                for r2 in (first..dst.out_lines()).take_while(|&r2| dst.out_slice(r2).0 < s.1) {
                    let n = overlap(s, dst.out_slice(r2));
                    let rows = overlap(src.out_rows(r, b), dst.out_rows(r2, b));
                    if n > 0 && rows > 0 {
                        out(msg(Purpose::Residual, src.out_pe(r), dst.out_pe(r2), act.bytes_for(n * rows), 0, 0, 0));
                    }
                }
            }
        }
        RouteKind::Reduce => match src.work {
            Work::Gemv { reduce, acc, .. } => {
                for (round, pairs) in reduce.rounds(src.rect.w).iter().enumerate() {
                    for r in 0..src.rect.h {
                        let (lo, hi) = src.rows_of(r);
                        let bytes = acc.bytes_for((hi - lo) * b);
                        if bytes == 0 {
                            continue;
                        }
                        for &(a, z) in pairs {
                            out(msg(
                                Purpose::Collective,
                                src.rect.pe(r, a),
                                src.rect.pe(r, z),
                                bytes,
                                0,
                                0,
                                round as u32,
                            ));
                        }
                    }
                }
            }
            Work::Attention { group, head_dim, reduce, batch_split, .. } => {
                // (max, sum) per query head plus the fp32 accumulator, for the sub-block's sequences.
                let split = batch_split.max(1);
                let brows = src.work.block_rows();
                let blocks = src.work.attn_blocks() as u32;
                let bytes_of = |blk: u32| {
                    let (lo, hi) = src.work.seq_range(blk as u64 % split, b);
                    4 * group * (head_dim + 2) * (hi - lo)
                };
                let row_rounds = reduce.rounds(src.rect.w);
                let nrow = row_rounds.len();
                for (round, pairs) in row_rounds.iter().enumerate() {
                    for r in 0..(blocks * brows) {
                        let bytes = bytes_of(r / brows);
                        if bytes == 0 {
                            continue;
                        }
                        for &(a, z) in pairs {
                            out(msg(
                                Purpose::Collective,
                                src.rect.pe(r, a),
                                src.rect.pe(r, z),
                                bytes,
                                0,
                                0,
                                round as u32,
                            ));
                        }
                    }
                }
                for (i, pairs) in Reduce::Chain.rounds(brows).iter().enumerate() {
                    for blk in 0..blocks {
                        let bytes = bytes_of(blk);
                        if bytes == 0 {
                            continue;
                        }
                        for &(a, z) in pairs {
                            let base = blk * brows;
                            out(msg(
                                Purpose::Collective,
                                src.rect.pe(base + a, 0),
                                src.rect.pe(base + z, 0),
                                bytes,
                                0,
                                0,
                                (nrow + i) as u32,
                            ));
                        }
                    }
                }
            }
            Work::Embedding { .. } | Work::Gemm { .. } => {}
        },
        RouteKind::Norm => {
            // All-reduce of two fp32 statistics per batch row along row 0: tree up, then broadcast back.
            let rounds = Reduce::Tree.rounds(src.rect.w);
            let n = rounds.len();
            for (i, pairs) in rounds.iter().enumerate() {
                for &(a, z) in pairs {
                    out(msg(Purpose::Collective, src.rect.pe(0, a), src.rect.pe(0, z), 8 * b, 0, 0, i as u32));
                }
            }
            if src.rect.w > 1 {
                out(msg(Purpose::NormBcast, src.rect.pe(0, 0), src.rect.pe(0, 1), 8 * b, src.rect.w - 2, 0, n as u32));
            }
        }
        RouteKind::Bcast => {
            // Each row root multicasts its output segment east and west along its row.
            if let Work::Gemv { .. } = src.work {
                let w = src.rect.w;
                for r in 0..src.out_lines() {
                    let (lo, hi) = src.out_slice(r);
                    if lo >= hi || w < 2 {
                        continue;
                    }
                    let root = src.out_pe(r);
                    let bytes = act.bytes_for((hi - lo) * b);
                    let c = root.x - src.rect.x;
                    if c + 1 < w {
                        out(msg(Purpose::RowBcast, root, Pe { x: root.x + 1, y: root.y }, bytes, w - c - 2, 0, 0));
                    }
                    if c > 0 {
                        out(Message {
                            west: true,
                            ..msg(Purpose::RowBcast, root, Pe { x: root.x - 1, y: root.y }, bytes, c - 1, 0, 0)
                        });
                    }
                }
            }
        }
        RouteKind::Argmax => {
            for (i, pairs) in Reduce::Tree.rounds(src.rect.h).iter().enumerate() {
                for &(a, z) in pairs {
                    out(msg(Purpose::Collective, src.rect.pe(a, 0), src.rect.pe(z, 0), 8 * b, 0, 0, i as u32));
                }
            }
        }
    }
}

/// The first `i` in `0..n` where `pred` is false (`pred` true on a prefix).
fn partition_point(n: u32, pred: impl Fn(u32) -> bool) -> u32 {
    let (mut lo, mut hi) = (0u32, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The SRAM a region's PEs need (the largest PE), from its work and the
/// program's dtypes: weights (+ bias), KV cache, and buffers for the input
/// slice, fp32 partial sums and one incoming partial.
pub fn sram_need(p: &Program, work: &Work) -> Sram {
    let (b, seqs) = (p.rows(), p.batch);
    let (wd, ad, kd) = (p.weight_dtype, p.act_dtype, p.kv_dtype);
    let code = p.arch.pe.sram_reserved_bytes;
    match *work {
        Work::Gemv { tile_n, tile_k, acc, .. } => Sram {
            code,
            weights: wd.bytes_for(tile_n * tile_k) + wd.bytes_for(tile_n),
            kv: 0,
            // The input slice of the whole batch; partials (own and one incoming) of one chunk.
            buffers: ad.bytes_for(tile_k * b) + 2 * acc.bytes_for(tile_n * work.chunk_rows(b)),
        },
        Work::Attention { group, head_dim, pos_per_pe, batch_split, .. } => {
            // A PE serves its sub-block's sequences only: their KV caches, and
            // the query rows (`new_tokens` per sequence) and softmax states.
            let seqs = seqs.div_ceil(batch_split.max(1));
            let b = seqs * p.new_tokens.max(1);
            Sram {
                code,
                weights: 0,
                kv: 2 * kd.bytes_for(pos_per_pe * head_dim * seqs),
                buffers: ad.bytes_for(group * head_dim * b)
                    + 4 * group * pos_per_pe * b
                    + 2 * 4 * group * (head_dim + 2) * b,
            }
        }
        Work::Embedding { hidden, rows_per_pe, .. } => {
            Sram { code, weights: wd.bytes_for(rows_per_pe * hidden), kv: 0, buffers: 0 }
        }
        // The resident A and B tiles, their spare buffers for the moves, and the C tile.
        Work::Gemm { tile_m, tile_k, tile_n, acc, .. } => Sram {
            code,
            weights: wd.bytes_for(tile_k * tile_n),
            kv: 0,
            buffers: 2 * wd.bytes_for(tile_m * tile_k) + wd.bytes_for(tile_k * tile_n) + acc.bytes_for(tile_m * tile_n),
        },
    }
}

/// Where a route's messages can run, per wafer: the bounding box of its
/// source and destination regions when both are on one wafer (dimension-ordered
/// paths between two rectangles stay inside it); for a route between wafers,
/// each end's region on its own wafer (the system link joins them).
pub fn route_footprint(p: &Program, rt: &Route) -> Vec<(u32, Rect)> {
    let (s, t) = (p.region(rt.src), p.region(rt.dst));
    if s.wafer != t.wafer {
        return vec![(s.wafer, s.rect), (t.wafer, t.rect)];
    }
    let (a, b) = (s.rect, t.rect);
    let (x0, y0) = (a.x.min(b.x), a.y.min(b.y));
    let (x1, y1) = ((a.x + a.w).max(b.x + b.w), (a.y + a.h).max(b.y + b.h));
    vec![(s.wafer, Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 })]
}

/// True when two routes' footprints share a router.
pub fn footprints_meet(a: &[(u32, Rect)], b: &[(u32, Rect)]) -> bool {
    a.iter().any(|(wa, ra)| b.iter().any(|(wb, rb)| wa == wb && ra.overlaps(rb)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_name_reads_back_as_its_region_user_and_token() {
        assert_eq!(parse_copy_name(&copy_name("l3.mlp_up", 7, 12)), Some(("l3.mlp_up", 7, 12)));
        assert_eq!(parse_copy_name("l3.mlp_up"), None);
        assert_eq!(parse_copy_name("x@u1"), None);
        assert_eq!(parse_copy_name("x@uat2"), None);
    }

    /// Every PE but the root sends exactly once, and everything reaches the root.
    fn reaches_root(shape: Reduce, n: u32) {
        let mut sent = vec![0u32; n as usize];
        let mut holds: Vec<u64> = (0..n).map(|i| 1u64 << (i % 64)).collect();
        let mut count: Vec<u32> = vec![1; n as usize];
        for round in shape.rounds(n) {
            for (a, z) in round {
                sent[a as usize] += 1;
                holds[z as usize] |= holds[a as usize];
                count[z as usize] += count[a as usize];
            }
        }
        let root = shape.root(n);
        assert_eq!(count[root as usize], n, "{shape:?} over {n}");
        for i in 0..n {
            assert_eq!(sent[i as usize], (i != root) as u32, "{shape:?} over {n}: PE {i}");
        }
    }

    #[test]
    fn a_message_crosses_x_along_its_source_row_then_y_then_its_tail() {
        let pe = |x, y| Pe { x, y };
        let m = Message {
            from: pe(5, 1),
            to: pe(2, 4),
            bytes: 8,
            fan_cols: 2,
            fan_rows: 3,
            west: true,
            purpose: Purpose::Query,
            round: 0,
            inter_wafer: false,
        };
        let legs: Vec<Leg> = m.legs().collect();
        let rect = |x, y, w, h| Rect { x, y, w, h };
        // West along row 1 (links leave x = 5, 4, 3), south down column 2
        // (y = 1, 2, 3), the tail west from (2, 4) (x = 2, 1), then south
        // from row 4 down columns 0..=2.
        let senders: Vec<(Dir, Rect)> = legs.iter().map(|l| (l.dir, l.senders())).collect();
        assert_eq!(
            senders,
            vec![
                (Dir::W, rect(3, 1, 3, 1)),
                (Dir::S, rect(2, 1, 1, 3)),
                (Dir::W, rect(1, 4, 2, 1)),
                (Dir::S, rect(0, 4, 3, 3)),
            ]
        );
        assert_eq!(legs[0].link(0), pe(5, 1));
        assert_eq!(legs[1].link(2), pe(2, 3));
        // Every link once: the path's hops plus every lane of the tail.
        let links: u32 = legs.iter().map(|l| l.len * l.lanes).sum();
        assert_eq!(links, 3 + 3 + 2 + 3 * 3);
        // A message to itself crosses nothing.
        assert_eq!(Message { to: m.from, fan_cols: 0, fan_rows: 0, ..m }.legs().count(), 0);
    }

    #[test]
    fn every_shape_reduces_a_line_to_its_root() {
        for n in [1, 2, 3, 7, 16, 90, 720] {
            for shape in [
                Reduce::Chain,
                Reduce::Tree,
                Reduce::TwoLevel { group: 8 },
                Reduce::Meet { group: 1 },
                Reduce::Meet { group: 2 },
                Reduce::Meet { group: 7 },
                Reduce::Meet { group: n.max(1) },
            ] {
                reaches_root(shape, n);
            }
        }
    }

    #[test]
    fn meshgemv_groups_meet_in_the_middle_as_the_published_launcher_places_them() {
        // P = 720, group_num = 8: 90 PEs per group, group roots at 45 + 90·i,
        // the line's root at (8 / 2)·90 + 45 = 405 (run_device.sh's root_2nd_phase).
        let m = Reduce::Meet { group: 90 };
        assert_eq!(m.root(720), 405);
        let rounds = m.rounds(720);
        // Phase one: 45 steps (0 -> 45 is the longer chain), phase two: 4 (45 -> 405).
        assert_eq!(rounds.len(), 45 + 4);
        assert!(rounds[0].contains(&(0, 1)) && rounds[0].contains(&(89, 88)));
        assert_eq!(rounds[45], vec![(45, 135), (675, 585)]);
        // Relays: the chain interiors and the intermediate group roots, not the ends or the roots.
        assert!(m.relays(720, 1) && m.relays(720, 44) && m.relays(720, 46) && m.relays(720, 88));
        assert!(!m.relays(720, 0) && !m.relays(720, 89) && !m.relays(720, 45) && !m.relays(720, 405));
        assert!(m.relays(720, 135) && m.relays(720, 585) && !m.relays(720, 675));
        assert_eq!(Reduce::Chain.root(9), 0);
        assert!(Reduce::Chain.relays(9, 4) && !Reduce::Chain.relays(9, 8));
    }
}

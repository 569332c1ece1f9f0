//! Dataflow: the executable level under the spatial IR.
//!
//! Owns: what every PE of a region does, in order — the tasks it receives,
//! computes, takes part in (collectives) and sends — lowered once from a
//! program's per-region [`Step`] templates ([`lower`]), each task naming its
//! route, the [`Purpose`]s of the messages it moves and the PEs of the region
//! that run it ([`Members`]: every PE, the output PEs, the first row or the
//! first column), with the region, layer and turn it serves. The order is the
//! compiler's `schedule`: the engines execute it, so a change to a task list
//! changes what they do. Also the rules a task list must satisfy
//! ([`check_tasks`], run by the spatial verifier on `Region::steps`).
//!
//! Compact by construction: one template per region, never a list per PE (a
//! spread mapping stacks hundreds of regions on ~900k PEs). A PE's view
//! ([`Dataflow::tasks_at`]: the tasks of every region stacked on it, in turn
//! order) is computed on demand through the program's [`Occupancy`].
//!
//! # Semantics (what the engines execute)
//! * A PE runs its tasks in order. `Recv` tasks before `Compute` gate the
//!   compute: it starts once all of them arrived. A `Recv` after `Compute`
//!   (only a `residual`, and only after the region's reduction) gates only
//!   what follows it: the epilogue and what comes after.
//! * A `norm` collective precedes `Compute` (it scales the input); `reduce`,
//!   `argmax` and `bcast` follow it, in that order.
//! * `Send`s are last and leave an output PE in the listed order through its
//!   one output port.
//!
//! Must not: time anything (cost, simulator), or choose the order (compiler).

use crate::occupancy::Occupancy;
use crate::spatial::{Pe, Program, Purpose, Region, RegionId, RouteId, RouteKind, Step, Work};
use crate::spatial_verify::ProgramInfo;
use std::fmt;

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Recv,
    Compute,
    Collective,
    Send,
}

/// Which of a region's PEs run a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Members {
    /// Every PE of the region.
    All,
    /// The PE of each output line ([`Region::out_pe`]): a Gemv's row roots
    /// (its root for an arg-max), an Attention head block's first PE, the
    /// embedding's holder.
    Outputs,
    /// The first row (a Gemv's column heads: the norm's all-reduce).
    Row0,
    /// The first column (the arg-max tree).
    Col0,
}

/// A set of [`Purpose`]s (what the messages of one route carry for one region).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Purposes(u8);

const PURPOSES: [Purpose; 7] = [
    Purpose::ColumnInput,
    Purpose::Query,
    Purpose::KvAppend,
    Purpose::Residual,
    Purpose::Collective,
    Purpose::NormBcast,
    Purpose::RowBcast,
];

fn bit(p: Purpose) -> u8 {
    1 << PURPOSES.iter().position(|&q| q == p).unwrap_or(0)
}

impl Purposes {
    pub fn of(ps: &[Purpose]) -> Purposes {
        Purposes(ps.iter().fold(0, |acc, &p| acc | bit(p)))
    }
    pub fn contains(self, p: Purpose) -> bool {
        self.0 & bit(p) != 0
    }
    pub fn iter(self) -> impl Iterator<Item = Purpose> {
        PURPOSES.into_iter().filter(move |&p| self.contains(p))
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One task of a region's template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub kind: TaskKind,
    /// The route it receives, sends or takes part in (`None` for `Compute`).
    pub route: Option<RouteId>,
    /// What the route's messages carry (empty for `Compute`).
    pub purposes: Purposes,
    /// Bytes the whole region receives or sends (0 for `Compute` and collectives).
    pub bytes: u64,
    /// The PEs of the region that run it.
    pub at: Members,
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind {
            TaskKind::Recv => "recv",
            TaskKind::Compute => "compute",
            TaskKind::Collective => "collective",
            TaskKind::Send => "send",
        };
        match self.route {
            Some(r) => write!(f, "{k}({r})"),
            None => write!(f, "{k}"),
        }
    }
}

/// A region's ordered tasks and what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionTasks {
    pub region: RegionId,
    pub layer: Option<u32>,
    pub turn: u32,
    pub wafer: u32,
    pub tasks: Vec<Task>,
}

impl RegionTasks {
    /// Index of the `Compute` task (the verifier guarantees exactly one).
    pub fn compute(&self) -> usize {
        self.tasks.iter().position(|t| t.kind == TaskKind::Compute).unwrap_or(0)
    }
    /// Position of the task on `route` of `kind`, if listed.
    pub fn position(&self, kind: TaskKind, route: RouteId) -> Option<usize> {
        self.tasks.iter().position(|t| t.kind == kind && t.route == Some(route))
    }
    /// A `Recv` carrying `purpose` listed before `Compute`: the compute waits for it.
    pub fn gates_compute(&self, purpose: Purpose) -> bool {
        self.tasks[..self.compute()].iter().any(|t| t.kind == TaskKind::Recv && t.purposes.contains(purpose))
    }
}

/// One task as a PE sees it: the task and the region, layer and turn it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeTask<'d> {
    pub region: RegionId,
    pub layer: Option<u32>,
    pub turn: u32,
    /// Position in the region's template.
    pub index: usize,
    pub task: &'d Task,
}

/// The executable level of a verified program (see the module doc).
#[derive(Debug, Clone)]
pub struct Dataflow {
    /// One per region, in program order.
    pub regions: Vec<RegionTasks>,
    /// The regions' rectangles, for [`Dataflow::tasks_at`].
    rects: Vec<(u32, crate::spatial::Rect)>,
    works: Vec<Work>,
    /// Built on the first [`Dataflow::tasks_at`]: the engines, which take only
    /// the templates, never pay for it.
    pe_index: std::sync::OnceLock<PeIndex>,
}

/// Which regions cover each PE: the program's occupancy cells, and per cell
/// the regions covering it in turn (then program) order.
#[derive(Debug, Clone)]
struct PeIndex {
    occ: Occupancy,
    stacked: Vec<Vec<u32>>,
}

/// The purposes route `route`'s messages carry (as [`crate::route_messages`] tags them).
pub fn route_purposes(p: &Program, route: RouteId) -> Purposes {
    let rt = p.route(route);
    Purposes::of(match rt.kind {
        RouteKind::Forward => match p.region(rt.dst).work {
            Work::Gemv { .. } => &[Purpose::ColumnInput],
            Work::Attention { .. } => &[Purpose::Query, Purpose::KvAppend],
            Work::Embedding { .. } => &[Purpose::Token],
            Work::Gemm { .. } => &[],
        },
        RouteKind::Residual => &[Purpose::Residual],
        RouteKind::Reduce | RouteKind::Argmax => &[Purpose::Collective],
        RouteKind::Norm => &[Purpose::Collective, Purpose::NormBcast],
        RouteKind::Bcast => &[Purpose::RowBcast],
    })
}

/// The PEs of `r` that run a task of `kind` on a route of `route_kind`.
fn members(r: &Region, kind: TaskKind, route_kind: Option<RouteKind>) -> Members {
    match (kind, route_kind) {
        (TaskKind::Compute, _) => match r.work {
            Work::Embedding { .. } => Members::Outputs,
            _ => Members::All,
        },
        (TaskKind::Send, _) | (TaskKind::Recv, Some(RouteKind::Residual)) => Members::Outputs,
        (TaskKind::Collective, Some(RouteKind::Norm)) => Members::Row0,
        (TaskKind::Collective, Some(RouteKind::Argmax)) => Members::Col0,
        _ => Members::All,
    }
}

/// Region `i`'s task list, from its steps (routes resolved; unchecked).
fn lower_region(p: &Program, i: usize) -> RegionTasks {
    let r = &p.regions[i];
    let tasks = r
        .steps
        .iter()
        .map(|st| {
            let (kind, route, bytes) = match *st {
                Step::Recv { route, bytes } => (TaskKind::Recv, Some(route), bytes),
                Step::Compute => (TaskKind::Compute, None, 0),
                Step::Collective { route } => (TaskKind::Collective, Some(route), 0),
                Step::Send { route, bytes } => (TaskKind::Send, Some(route), bytes),
            };
            let nreg = p.regions.len() as u32;
            let known =
                route.filter(|rt| p.routes.get(rt.0 as usize).is_some_and(|r| r.src.0 < nreg && r.dst.0 < nreg));
            Task {
                kind,
                route,
                purposes: known.map(|rt| route_purposes(p, rt)).unwrap_or_default(),
                bytes,
                at: members(r, kind, known.map(|rt| p.route(rt).kind)),
            }
        })
        .collect();
    RegionTasks { region: RegionId(i as u32), layer: r.layer, turn: r.turn, wafer: r.wafer, tasks }
}

/// Lowers a verified program to its dataflow level: O(regions + steps), no per-PE list.
pub fn lower(p: &Program, _info: &ProgramInfo) -> Dataflow {
    let regions: Vec<RegionTasks> = (0..p.regions.len()).map(|i| lower_region(p, i)).collect();
    let rects: Vec<(u32, crate::spatial::Rect)> = p.regions.iter().map(|r| (r.wafer, r.rect)).collect();
    let works = p.regions.iter().map(|r| r.work.clone()).collect();
    Dataflow { regions, rects, works, pe_index: std::sync::OnceLock::new() }
}

impl Dataflow {
    /// Region `id`'s tasks.
    pub fn region(&self, id: RegionId) -> &RegionTasks {
        &self.regions[id.0 as usize]
    }

    /// Whether region-local PE (`row`, `col`) of region `i` runs tasks at `m`.
    fn is_member(&self, i: usize, m: Members, row: u32, col: u32) -> bool {
        let rect = self.rects[i].1;
        match m {
            Members::All => true,
            Members::Row0 => row == 0,
            Members::Col0 => col == 0,
            Members::Outputs => self.works[i].holds_output_on(rect, row, col),
        }
    }

    /// The tasks PE (`x`, `y`) of `wafer` runs for every region stacked on it,
    /// in turn order (regions of one turn never share a PE), each region's in
    /// its template's order; empty for a PE no region covers.
    pub fn tasks_at(&self, wafer: u32, x: u32, y: u32) -> Vec<PeTask<'_>> {
        let index = self.pe_index.get_or_init(|| {
            let occ = Occupancy::new(&self.rects);
            let mut stacked = vec![Vec::new(); occ.cells().len()];
            let mut order: Vec<usize> = (0..self.regions.len()).collect();
            order.sort_by_key(|&i| (self.regions[i].turn, i));
            for i in order {
                for c in occ.cells_of(self.rects[i].0, self.rects[i].1) {
                    stacked[c].push(i as u32);
                }
            }
            PeIndex { occ, stacked }
        });
        let Some(cell) = index.occ.cell_at(wafer, Pe { x, y }) else { return Vec::new() };
        let mut out = Vec::new();
        for &i in &index.stacked[cell] {
            let i = i as usize;
            let rect = self.rects[i].1;
            let (row, col) = (y - rect.y, x - rect.x);
            let rt = &self.regions[i];
            for (index, task) in rt.tasks.iter().enumerate() {
                if self.is_member(i, task.at, row, col) {
                    out.push(PeTask { region: rt.region, layer: rt.layer, turn: rt.turn, index, task });
                }
            }
        }
        out
    }
}

/// The routes each region takes part in, and how: a `Send` of every
/// non-collective route it starts, a `Recv` of every one it ends, a
/// `Collective` of every collective route of its own. One pass over the routes.
fn roles(p: &Program) -> Vec<Vec<(TaskKind, RouteId)>> {
    let nreg = p.regions.len();
    let mut out = vec![Vec::new(); nreg];
    for (j, rt) in p.routes.iter().enumerate() {
        let id = RouteId(j as u32);
        let (s, d) = (rt.src.0 as usize, rt.dst.0 as usize);
        if rt.kind.is_collective() {
            if s < nreg {
                out[s].push((TaskKind::Collective, id));
            }
        } else {
            if s < nreg {
                out[s].push((TaskKind::Send, id));
            }
            if d < nreg && d != s {
                out[d].push((TaskKind::Recv, id));
            }
        }
    }
    out
}

/// The rules the task lists of `p` break (see the module doc), as (region,
/// message naming the task); empty when every list is executable. Regions
/// for which `skip` holds are not checked (the verifier skips those whose
/// steps it already refused). Routes named by steps must exist.
pub fn check_tasks(p: &Program, skip: impl Fn(usize) -> bool) -> Vec<(RegionId, String)> {
    let roles = roles(p);
    let mut out = Vec::new();
    for (i, expected) in roles.iter().enumerate() {
        if !skip(i) {
            out.extend(check_region(p, i, expected).into_iter().map(|m| (RegionId(i as u32), m)));
        }
    }
    out
}

/// The rules region `i`'s task list breaks, given the routes it takes part in.
fn check_region(p: &Program, i: usize, expected: &[(TaskKind, RouteId)]) -> Vec<String> {
    let rt = lower_region(p, i);
    let mut out = Vec::new();
    let computes: Vec<usize> =
        rt.tasks.iter().enumerate().filter(|(_, t)| t.kind == TaskKind::Compute).map(|(k, _)| k).collect();
    if computes.len() != 1 {
        out.push(format!("has {} compute tasks; a region computes exactly once", computes.len()));
    }
    let compute = computes.first().copied().unwrap_or(usize::MAX);
    let nroutes = p.routes.len();
    let kind_of = |t: &Task| t.route.filter(|r| (r.0 as usize) < nroutes).map(|r| p.route(r).kind);
    // Every route the region takes part in, exactly once.
    for &(kind, id) in expected {
        let n = rt.tasks.iter().filter(|t| t.kind == kind && t.route == Some(id)).count();
        if n != 1 {
            let what = Task { kind, route: Some(id), purposes: Purposes::default(), bytes: 0, at: Members::All };
            out.push(format!(
                "takes part in {} route {id} but lists `{what}` {n} times (exactly once)",
                p.route(id).kind.name()
            ));
        }
    }
    let reduce = rt.tasks.iter().position(|t| t.kind == TaskKind::Collective && kind_of(t) == Some(RouteKind::Reduce));
    let first_send = rt.tasks.iter().position(|t| t.kind == TaskKind::Send);
    for (k, t) in rt.tasks.iter().enumerate() {
        let Some(kind) = kind_of(t) else { continue };
        let before = k < compute;
        let bad = match (t.kind, kind) {
            (TaskKind::Recv, RouteKind::Forward) if !before => Some("a forward input is received before compute"),
            (TaskKind::Recv, RouteKind::Residual) if before && !matches!(p.regions[i].work, Work::Gemv { .. }) => {
                Some("only a gemv's row roots can wait on a residual before computing")
            }
            (TaskKind::Recv, RouteKind::Residual) if !before && reduce.is_some_and(|r| k < r) => {
                Some("a residual received after compute feeds the epilogue: it follows the reduction")
            }
            (TaskKind::Collective, RouteKind::Norm) if !before => Some("the norm's all-reduce precedes compute"),
            (TaskKind::Collective, RouteKind::Reduce | RouteKind::Argmax | RouteKind::Bcast) if before => {
                Some("a reduction, arg-max or broadcast follows compute")
            }
            (TaskKind::Collective, RouteKind::Argmax | RouteKind::Bcast) if reduce.is_some_and(|r| k < r) => {
                Some("the arg-max and the row broadcast follow the reduction")
            }
            (TaskKind::Recv, RouteKind::Residual) if !before && follows_epilogue(&rt.tasks[..k], &kind_of) => {
                Some("a residual received after compute feeds the epilogue: it precedes the arg-max and the broadcast")
            }
            _ => None,
        };
        if let Some(msg) = bad {
            out.push(format!("task {k} `{t}`: {msg}"));
        }
        if t.kind != TaskKind::Send && first_send.is_some_and(|s| k > s) {
            out.push(format!("task {k} `{t}` follows a send: sends come last"));
        }
    }
    out
}

/// True when an arg-max or broadcast collective is among `tasks`.
fn follows_epilogue(tasks: &[Task], kind_of: &dyn Fn(&Task) -> Option<RouteKind>) -> bool {
    tasks
        .iter()
        .any(|t| t.kind == TaskKind::Collective && matches!(kind_of(t), Some(RouteKind::Argmax | RouteKind::Bcast)))
}

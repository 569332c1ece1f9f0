//! Wafer maps: per-PE figures of a compiled program painted over its mesh.
//!
//! Owns: downsampling a mesh to at most [`MAX_CELLS`] cells per side and three
//! maps — SRAM allocated per PE, PE busy fraction (from the simulation), and
//! link load (the program's own messages laid on their dimension-ordered
//! paths: bytes per link over the step's cycles, the same for every engine).
//! Must not: time anything; the busy fractions and cycles come from the (finished) `SimResult`.

use crate::charts::Grid;
use std::collections::BTreeMap;
use wafer_ir::{route_messages, Program, Rect, RouteId};
use wafer_simulator::FinishedSim;

/// Cells per side at most (a WSE-3 mesh of 755 x 1170 becomes 151 x 234 cells of 5 x 5 PEs).
pub const MAX_CELLS: u32 = 240;

/// How a wafer's mesh is cut into cells.
#[derive(Debug, Clone, Copy)]
struct Geom {
    w: u32,
    h: u32,
    cell: u32,
    cols: u32,
    rows: u32,
}

impl Geom {
    fn of(p: &Program) -> Geom {
        let (w, h) = (p.arch.mesh_width, p.arch.mesh_height);
        let cell = w.max(h).div_ceil(MAX_CELLS).max(1);
        Geom { w, h, cell, cols: w.div_ceil(cell), rows: h.div_ceil(cell) }
    }

    fn cells(&self) -> usize {
        (self.cols * self.rows) as usize
    }

    /// Calls `f(cell index, PEs of r in that cell)` for every cell `r` overlaps.
    fn cover(&self, r: Rect, mut f: impl FnMut(usize, u64)) {
        let (x1, y1) = ((r.x + r.w).min(self.w), (r.y + r.h).min(self.h));
        if x1 <= r.x || y1 <= r.y {
            return;
        }
        for cy in r.y / self.cell..=(y1 - 1) / self.cell {
            let oy = (y1.min((cy + 1) * self.cell)).saturating_sub(r.y.max(cy * self.cell)) as u64;
            for cx in r.x / self.cell..=(x1 - 1) / self.cell {
                let ox = (x1.min((cx + 1) * self.cell)).saturating_sub(r.x.max(cx * self.cell)) as u64;
                if ox * oy > 0 {
                    f((cy * self.cols + cx) as usize, ox * oy);
                }
            }
        }
    }

    /// PEs of the mesh inside cell `i` (edge cells are smaller).
    fn cell_pes(&self, i: usize) -> u64 {
        let (cx, cy) = (i as u32 % self.cols, i as u32 / self.cols);
        let w = ((cx + 1) * self.cell).min(self.w) - cx * self.cell;
        let h = ((cy + 1) * self.cell).min(self.h) - cy * self.cell;
        w as u64 * h as u64
    }
}

/// Per-cell sums for one wafer and the used PEs under them.
struct Acc {
    sum: Vec<f64>,
    used: Vec<u64>,
}

impl Acc {
    fn new(g: &Geom) -> Acc {
        Acc { sum: vec![0.0; g.cells()], used: vec![0; g.cells()] }
    }

    /// Mean per PE of the cell — over its used PEs (`per_used`, so region edges
    /// keep their region's colour) or over all its PEs — times `scale`; NaN where
    /// nothing is used.
    fn finish(self, g: &Geom, wafer: u32, scale: f64, per_used: bool) -> Grid {
        let values = (0..self.sum.len())
            .map(|i| {
                let n = if per_used { self.used[i] } else { g.cell_pes(i) };
                if self.used[i] == 0 {
                    f64::NAN
                } else {
                    self.sum[i] / n as f64 * scale
                }
            })
            .collect();
        Grid { wafer, mesh: (g.w, g.h), cell: g.cell, cols: g.cols, rows: g.rows, values }
    }
}

/// The three maps, one grid per wafer each.
#[derive(Debug, Clone)]
pub struct WaferMaps {
    /// SRAM allocated per PE, bytes (each region's largest PE; regions sharing a PE stacked).
    pub sram: Vec<Grid>,
    /// Fraction of the step each PE computes.
    pub busy: Vec<Grid>,
    /// Mean busy fraction of the cell's outgoing links (4 per PE) over the step.
    pub link: Vec<Grid>,
}

/// Builds the maps of `p` with the busy fractions and cycles of `sim`.
/// Regions are matched to `sim.regions` by name.
pub fn wafer_maps(p: &Program, sim: &FinishedSim) -> WaferMaps {
    let g = Geom::of(p);
    let busy_of: BTreeMap<&str, f64> = sim.regions.iter().map(|r| (r.region.as_str(), r.busy_fraction)).collect();
    let mk = || (0..p.wafers).map(|_| Acc::new(&g)).collect::<Vec<_>>();
    let (mut sram, mut busy, mut link) = (mk(), mk(), mk());
    // Per physical PE (cells of the occupancy): what every region there keeps
    // (`Sram::stack`, as the verifier counts it) and the sum of their busy fractions.
    let mine: Vec<&wafer_ir::Region> = p.regions.iter().filter(|r| r.wafer < p.wafers).collect();
    let occ = wafer_ir::Occupancy::new(&mine.iter().map(|r| (r.wafer, r.rect)).collect::<Vec<_>>());
    let cells = occ.cells();
    let mut stacked = vec![(wafer_ir::Sram::default(), 0.0f64); cells.len()];
    for r in &mine {
        let b = if r.active { busy_of.get(r.name.as_str()).copied().unwrap_or(0.0) } else { 0.0 };
        for c in occ.cells_of(r.wafer, r.rect) {
            stacked[c].0.stack(&r.sram);
            stacked[c].1 += b;
        }
    }
    for (cell, (s, b)) in cells.iter().zip(&stacked) {
        let w = cell.wafer as usize;
        for (acc, v) in [(&mut sram[w], s.total() as f64), (&mut busy[w], *b), (&mut link[w], 0.0)] {
            g.cover(cell.rect, |i, n| {
                acc.sum[i] += v * n as f64;
                acc.used[i] += n;
            });
        }
    }
    // Link load: each message's bytes on every link of its path and multicast tail.
    let lbpc = p.arch.router.link_bytes_per_cycle.max(1) as f64;
    for (i, rt) in p.routes.iter().enumerate() {
        let src = p.region(rt.src);
        if !src.active || !p.region(rt.dst).active || src.wafer >= p.wafers {
            continue;
        }
        let acc = &mut link[src.wafer as usize];
        for m in route_messages(p, RouteId(i as u32)) {
            if m.inter_wafer {
                continue;
            }
            let busy = m.bytes as f64 / lbpc;
            // X first along the source row, then Y along the destination
            // column, then the tail (`Message::legs`); a link is charged to
            // the PE it leaves.
            for leg in m.legs() {
                g.cover(leg.senders(), |c, n| {
                    acc.sum[c] += busy * n as f64;
                    acc.used[c] += 1;
                });
            }
        }
    }
    // Busy cycles per PE -> mean over its 4 outgoing links, as a fraction of the step.
    let link_scale = 1.0 / (4.0 * sim.cycles.max(1.0));
    let finish = |v: Vec<Acc>, scale: f64, per_used: bool| {
        v.into_iter().enumerate().map(|(w, a)| a.finish(&g, w as u32, scale, per_used)).collect::<Vec<_>>()
    };
    WaferMaps { sram: finish(sram, 1.0, true), busy: finish(busy, 1.0, true), link: finish(link, link_scale, false) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_splits_a_rect_over_cells() {
        let a = Geom { w: 10, h: 10, cell: 4, cols: 3, rows: 3 };
        let mut got = BTreeMap::new();
        a.cover(Rect { x: 3, y: 0, w: 6, h: 5 }, |i, n| *got.entry(i).or_insert(0) += n);
        // columns 3 | 4..8 | 8 ; rows 0..4 | 4
        assert_eq!(got, BTreeMap::from([(0, 4), (1, 16), (2, 4), (3, 1), (4, 4), (5, 1)]));
        assert_eq!(got.values().sum::<u64>(), 30);
        assert_eq!(a.cell_pes(8), 4); // the 2 x 2 corner
    }
}

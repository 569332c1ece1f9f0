//! Occupancy: the physical PEs a program's regions cover, cut into cells.
//!
//! Owns: per wafer, the grid that the regions' rectangle edges cut the mesh
//! into (a coordinate-compressed grid: a cell is a rectangle no region edge
//! crosses, so every region covers whole cells), which cells are covered, and
//! a dense index over the covered PEs. Regions that share PEs over time (see
//! [`crate::Region::turn`]) and the SRAM they hold together are summed per
//! cell by the verifier; the event engine indexes its per-PE resources (the
//! compute unit, the output port) with it, so two regions on one PE contend.
//! Sizes are O(regions²) cells at worst, independent of the mesh size.
//! Must not: know what regions compute.

use crate::spatial::{Pe, Rect};

const NONE: u64 = u64::MAX;

#[derive(Debug, Clone)]
struct Grid {
    wafer: u32,
    /// Sorted distinct x edges and y edges of the wafer's rectangles.
    xs: Vec<u32>,
    ys: Vec<u32>,
    /// Per cell `(i, j)` (row-major over `j`): dense index of its first PE, or `NONE`.
    base: Vec<u64>,
    /// Per cell: its id in [`Occupancy::cells`] order, or `usize::MAX`.
    ids: Vec<usize>,
}

impl Grid {
    fn nx(&self) -> usize {
        self.xs.len().saturating_sub(1)
    }
    fn cell_rect(&self, i: usize, j: usize) -> Rect {
        Rect { x: self.xs[i], y: self.ys[j], w: self.xs[i + 1] - self.xs[i], h: self.ys[j + 1] - self.ys[j] }
    }
    /// Cell column / row ranges a rectangle of this wafer covers (its edges are grid edges).
    fn span(&self, r: Rect) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let at = |v: &[u32], e: u32| v.binary_search(&e).unwrap_or_else(|i| i);
        (at(&self.xs, r.x)..at(&self.xs, r.x + r.w), at(&self.ys, r.y)..at(&self.ys, r.y + r.h))
    }
}

/// The covered PEs of a set of rectangles, per wafer (see the module doc).
#[derive(Debug, Clone)]
pub struct Occupancy {
    grids: Vec<Grid>,
    pes: u64,
}

/// One covered cell: a rectangle of PEs on a wafer, with the dense index of its first PE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub wafer: u32,
    pub rect: Rect,
    /// Index of the cell in [`Occupancy::cells`] order.
    pub id: usize,
    /// Dense index of the cell's first PE; the cell's PEs follow row-major.
    pub base: u64,
}

impl Occupancy {
    /// The cells of `rects` (each `(wafer, rect)`, non-empty rectangles).
    pub fn new(rects: &[(u32, Rect)]) -> Occupancy {
        let mut wafers: Vec<u32> = rects.iter().map(|r| r.0).collect();
        wafers.sort_unstable();
        wafers.dedup();
        let mut grids = Vec::with_capacity(wafers.len());
        let (mut pes, mut ncells) = (0u64, 0usize);
        for wafer in wafers {
            let mine = || rects.iter().filter(move |r| r.0 == wafer).map(|r| r.1);
            let mut xs: Vec<u32> = mine().flat_map(|r| [r.x, r.x + r.w]).collect();
            let mut ys: Vec<u32> = mine().flat_map(|r| [r.y, r.y + r.h]).collect();
            xs.sort_unstable();
            xs.dedup();
            ys.sort_unstable();
            ys.dedup();
            let mut g = Grid { wafer, xs, ys, base: Vec::new(), ids: Vec::new() };
            let (nx, ny) = (g.nx(), g.ys.len().saturating_sub(1));
            let mut covered = vec![false; nx * ny];
            for r in mine() {
                let (cx, cy) = g.span(r);
                for j in cy {
                    covered[j * nx + cx.start..j * nx + cx.end].iter_mut().for_each(|c| *c = true);
                }
            }
            g.base = vec![NONE; nx * ny];
            g.ids = vec![usize::MAX; nx * ny];
            for j in 0..ny {
                for i in 0..nx {
                    if covered[j * nx + i] {
                        g.base[j * nx + i] = pes;
                        g.ids[j * nx + i] = ncells;
                        ncells += 1;
                        pes += g.cell_rect(i, j).pes();
                    }
                }
            }
            grids.push(g);
        }
        Occupancy { grids, pes }
    }

    /// PEs covered by at least one rectangle.
    pub fn pes(&self) -> u64 {
        self.pes
    }

    /// Cells in a stable order (wafer, then row-major).
    pub fn cells(&self) -> Vec<Cell> {
        let mut out = Vec::new();
        for g in &self.grids {
            let nx = g.nx();
            for (k, &base) in g.base.iter().enumerate() {
                if base != NONE {
                    out.push(Cell { wafer: g.wafer, rect: g.cell_rect(k % nx, k / nx), id: out.len(), base });
                }
            }
        }
        out
    }

    /// The ids (in [`Occupancy::cells`] order) of the cells `rect` on `wafer` covers;
    /// empty when it is not one of the rectangles the occupancy was built from.
    pub fn cells_of(&self, wafer: u32, rect: Rect) -> Vec<usize> {
        let Some(g) = self.grids.iter().find(|g| g.wafer == wafer) else { return Vec::new() };
        let nx = g.nx();
        let (cx, cy) = g.span(rect);
        cy.flat_map(|j| cx.clone().map(move |i| j * nx + i)).map(|k| g.ids[k]).filter(|&id| id != usize::MAX).collect()
    }

    /// The grid of `wafer` and the grid cell `(i, j)` holding `pe`, if inside the grid.
    fn locate(&self, wafer: u32, pe: Pe) -> Option<(&Grid, usize, usize)> {
        let g = self.grids.iter().find(|g| g.wafer == wafer)?;
        let i = g.xs.partition_point(|&x| x <= pe.x).checked_sub(1)?;
        let j = g.ys.partition_point(|&y| y <= pe.y).checked_sub(1)?;
        (i < g.nx() && j + 1 < g.ys.len()).then_some((g, i, j))
    }

    /// Id (in [`Occupancy::cells`] order) of the cell holding `pe` on `wafer`, if a rectangle covers it.
    pub fn cell_at(&self, wafer: u32, pe: Pe) -> Option<usize> {
        let (g, i, j) = self.locate(wafer, pe)?;
        Some(g.ids[j * g.nx() + i]).filter(|&id| id != usize::MAX)
    }

    /// Dense index of `pe` on `wafer`, if a rectangle covers it.
    pub fn index(&self, wafer: u32, pe: Pe) -> Option<u64> {
        let (g, i, j) = self.locate(wafer, pe)?;
        let base = g.base[j * g.nx() + i];
        if base == NONE {
            return None;
        }
        let c = g.cell_rect(i, j);
        Some(base + (pe.y - c.y) as u64 * c.w as u64 + (pe.x - c.x) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    #[test]
    fn overlapping_rectangles_cover_their_union_once() {
        // A 4x4 block, a 2x2 block inside it, and a disjoint 1x3 strip on another wafer.
        let occ = Occupancy::new(&[(0, rect(0, 0, 4, 4)), (0, rect(1, 1, 2, 2)), (1, rect(5, 0, 1, 3))]);
        assert_eq!(occ.pes(), 16 + 3);
        let mut seen = vec![false; occ.pes() as usize];
        for (w, r) in [(0u32, rect(0, 0, 4, 4)), (1, rect(5, 0, 1, 3))] {
            for y in r.y..r.y + r.h {
                for x in r.x..r.x + r.w {
                    let i = occ.index(w, Pe { x, y }).expect("covered") as usize;
                    assert!(!seen[i], "index {i} given twice");
                    seen[i] = true;
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(occ.index(0, Pe { x: 4, y: 0 }), None);
        assert_eq!(occ.index(1, Pe { x: 0, y: 0 }), None);
        assert_eq!(occ.index(2, Pe { x: 0, y: 0 }), None);
        // The inner block covers one cell; the outer covers all nine of wafer 0.
        assert_eq!(occ.cells_of(0, rect(1, 1, 2, 2)).len(), 1);
        assert_eq!(occ.cells_of(0, rect(0, 0, 4, 4)).len(), 9);
        let cells = occ.cells();
        let area: u64 = occ.cells_of(0, rect(0, 0, 4, 4)).iter().map(|&c| cells[c].rect.pes()).sum();
        assert_eq!(area, 16);
        assert_eq!(cells[occ.cells_of(1, rect(5, 0, 1, 3))[0]].wafer, 1);
    }
}

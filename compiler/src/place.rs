//! Pass `place`: coordinates for every region.
//!
//! Owns: strip packing in execution order — strips `strip` columns wide span
//! the wafer's height; regions stack down the first strip, up the next
//! (boustrophedon), so consecutive regions, and the layers they form, stay
//! adjacent and the hidden vector travels little; a region that does not fit
//! what is left of the current strip opens the next, and a later small region
//! may fill such a gap (`partition::pack_strips`). Must not: change shapes.

use crate::partition::{pack_strips, Plan};
use crate::CompileError;
use wafer_ir::{ArchSpec, Rect};

/// Rects (and wafers) for the plan's shapes, in order.
pub fn place(arch: &ArchSpec, plan: &Plan) -> Result<Vec<(u32, Rect)>, CompileError> {
    let (mw, mh) = (arch.mesh_width, arch.mesh_height);
    let mut out = Vec::with_capacity(plan.shapes.len());
    for wafer in 0..plan.wafers {
        let shapes: Vec<_> = plan.shapes.iter().filter(|s| s.wafer == wafer).collect();
        let ws = plan.strip[wafer as usize];
        let heights: Vec<u32> = shapes.iter().map(|s| s.h).collect();
        let at = pack_strips(&heights, mh, mw / ws.max(1), plan.packing)
            .ok_or(CompileError::Packing { wafers: plan.wafers })?;
        for (s, (strip, off)) in shapes.iter().zip(at) {
            let x = strip * ws;
            if x + s.w > mw {
                return Err(CompileError::Packing { wafers: plan.wafers });
            }
            let y = if strip % 2 == 0 { off } else { mh - off - s.h };
            out.push((wafer, Rect { x, y, w: s.w, h: s.h }));
        }
    }
    Ok(out)
}

//! Pass `place`: coordinates for every region.
//!
//! Owns: strip packing in execution order — strips `strip` columns wide span
//! the wafer's height; regions stack down the first strip, up the next
//! (boustrophedon), so consecutive regions, and the layers they form, stay
//! adjacent and the hidden vector travels little. Must not: change shapes.

use crate::partition::Plan;
use crate::CompileError;
use wafer_ir::{ArchSpec, Rect};

/// Rects (and wafers) for the plan's shapes, in order.
pub fn place(arch: &ArchSpec, plan: &Plan) -> Result<Vec<(u32, Rect)>, CompileError> {
    let (mw, mh) = (arch.mesh_width, arch.mesh_height);
    let mut out = Vec::with_capacity(plan.shapes.len());
    let mut cur_wafer = u32::MAX;
    let (mut strip, mut used) = (0u32, 0u32);
    for s in &plan.shapes {
        if s.wafer != cur_wafer {
            cur_wafer = s.wafer;
            strip = 0;
            used = 0;
        }
        let ws = plan.strip[s.wafer as usize];
        if used + s.h > mh {
            strip += 1;
            used = 0;
        }
        let x = strip * ws;
        if x + s.w > mw || s.h > mh {
            return Err(CompileError::Packing { wafers: plan.wafers });
        }
        let y = if strip % 2 == 0 { used } else { mh - used - s.h };
        used += s.h;
        out.push((s.wafer, Rect { x, y, w: s.w, h: s.h }));
    }
    Ok(out)
}

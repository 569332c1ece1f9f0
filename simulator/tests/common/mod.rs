//! Shared by the simulator's tests: small programs built by hand.
#![allow(dead_code)]

use wafer_ir::{
    arch_preset, route_messages, sram_need, verify_program, DType, Program, ProgramInfo, Rect, Reduce, Region,
    RegionId, Route, RouteId, RouteKind, Step, Work,
};

/// Builds small programs region by region; routes get their bytes and the
/// matching send/receive steps from the IR's own geometry.
pub struct Builder {
    pub p: Program,
}

impl Builder {
    pub fn new(arch: &str) -> Builder {
        Builder {
            p: Program {
                model: "hand".into(),
                batch: 1,
                new_tokens: 1,
                context: 8,
                weight_dtype: DType::Bf16,
                act_dtype: DType::Bf16,
                kv_dtype: DType::Bf16,
                wafers: 1,
                arch: arch_preset(arch).unwrap(),
                regions: Vec::new(),
                routes: Vec::new(),
            },
        }
    }

    pub fn region(&mut self, name: &str, x: u32, y: u32, w: u32, h: u32, work: Work) -> RegionId {
        let sram = sram_need(&self.p, &work);
        self.p.regions.push(Region {
            name: name.into(),
            layer: None,
            wafer: 0,
            rect: Rect { x, y, w, h },
            turn: 0,
            active: true,
            ops: vec![],
            work,
            sram,
            steps: vec![Step::Compute],
        });
        RegionId(self.p.regions.len() as u32 - 1)
    }

    pub fn route(&mut self, kind: RouteKind, src: RegionId, dst: RegionId, color: u32) -> RouteId {
        let colors = if kind.is_collective() { 2 } else { 1 };
        self.p.routes.push(Route { kind, src, dst, color, colors, bytes: 0 });
        let id = RouteId(self.p.routes.len() as u32 - 1);
        let bytes: u64 = route_messages(&self.p, id).iter().map(|m| m.bytes).sum();
        self.p.routes[id.0 as usize].bytes = bytes;
        if kind.is_collective() {
            self.p.regions[src.0 as usize].steps.push(Step::Collective { route: id });
        } else {
            self.p.regions[src.0 as usize].steps.push(Step::Send { route: id, bytes });
            self.p.regions[dst.0 as usize].steps.insert(0, Step::Recv { route: id, bytes });
        }
        id
    }

    /// The program, each region's steps in the compiler's schedule order
    /// (forward inputs, the norm, compute, the reduction, the residual, the
    /// arg-max or broadcast, sends), verified.
    pub fn build(mut self) -> (Program, ProgramInfo) {
        let routes = self.p.routes.clone();
        for r in &mut self.p.regions {
            r.steps.sort_by_key(|st| match *st {
                Step::Recv { route, .. } if routes[route.0 as usize].kind == RouteKind::Forward => 0,
                Step::Collective { route } if routes[route.0 as usize].kind == RouteKind::Norm => 1,
                Step::Compute => 2,
                Step::Collective { route } if routes[route.0 as usize].kind == RouteKind::Reduce => 3,
                Step::Recv { .. } => 4,
                Step::Collective { .. } => 5,
                Step::Send { .. } => 6,
            });
        }
        self.build_as_is()
    }

    /// The program with its steps as they stand, verified.
    pub fn build_as_is(self) -> (Program, ProgramInfo) {
        let info = verify_program(&self.p).unwrap_or_else(|e| panic!("{e}"));
        (self.p, info)
    }
}

pub fn emb(hidden: u64) -> Work {
    Work::Embedding { vocab: 1, hidden, rows_per_pe: 1, token: 0 }
}

pub fn gemv(n: u64, k: u64, tile_n: u64, tile_k: u64, reduce: Reduce, norm: bool, epilogue_ops: u32) -> Work {
    Work::Gemv {
        n,
        k,
        tile_n,
        tile_k,
        reduce,
        glu: false,
        norm,
        argmax: false,
        epilogue_ops,
        acc: DType::F32,
        mac: true,
        batch_chunk: 0,
    }
}

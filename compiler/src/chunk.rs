//! Prompt chunks on a decode mapping: the same regions, routes and placement,
//! computing `c` tokens of each sequence at once.
//!
//! Owns: [`prefill_chunk`], which restates a compiled decode program for a
//! chunk of `c` prompt tokens per sequence (`Program::new_tokens = c`): every
//! activation carries `batch · c` rows, so each Gemv multiplies a `c`-row
//! skinny GEMM with its resident weights, each reduction carries `c` rows of
//! partials, each attention PE scores `c` queries against the positions it
//! holds, and the KV cache stays one per sequence. SRAM, route and step bytes
//! are recomputed from the IR's own rules and the program is verified again,
//! so a chunk whose buffers do not fit is the verifier's clear error. Must
//! not: change the placement (prefill runs where decode will read the KV
//! cache) or time anything.
//!
//! What a chunk leaves out (so its timing is an upper bound): queries of a
//! chunk see only the positions before them (causality), but every query is
//! priced over every position its PE holds; and the chunk's K and V land on
//! the PE holding `slot` (the decode step's new position, which is the
//! chunk's last), not spread over the PEs their positions belong to. The
//! functional engine appends the chunk's `c` rows at the `c` positions ending
//! at `slot`, in order, and masks each query causally.

use crate::CompileError;
use wafer_ir::{for_each_message, sram_need, verify_program, Program, ProgramInfo, RouteId, Step};

/// `decode` restated for `chunk` prompt tokens per sequence, verified.
pub fn prefill_chunk(decode: &Program, chunk: u64) -> Result<(Program, ProgramInfo), CompileError> {
    let mut p = decode.clone();
    p.new_tokens = chunk;
    for i in 0..p.regions.len() {
        p.regions[i].sram = sram_need(&p, &p.regions[i].work);
    }
    for i in 0..p.routes.len() {
        let mut bytes = 0u64;
        for_each_message(&p, RouteId(i as u32), |m| bytes = bytes.saturating_add(m.bytes));
        p.routes[i].bytes = bytes;
    }
    let route_bytes: Vec<u64> = p.routes.iter().map(|r| r.bytes).collect();
    for r in &mut p.regions {
        for st in &mut r.steps {
            if let Step::Recv { route, bytes } | Step::Send { route, bytes } = st {
                *bytes = route_bytes[route.0 as usize];
            }
        }
    }
    let info =
        verify_program(&p).map_err(|errors| CompileError::Verify { pass: format!("chunk of {chunk}"), errors })?;
    Ok((p, info))
}

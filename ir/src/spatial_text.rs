//! Textual form of the spatial IR: compact (one line per region, step list and
//! route, whatever the region's size) and round-tripping (`parse ∘ print = id`).
//!
//! ```text
//! program "m" batch=1 context=4 weights=bf16 acts=bf16 kv=bf16 wafers=1
//! arch "mesh:8x8" mesh=8x8 clock_ghz=1.1 sram=49152 reserved=16384 rd=16 wr=8 f32=4 mixed=4 ew=4 vec_ovh=43 task_ovh=20 link=4 hop=1 colors=24 reserved_colors=6 multicast=1 sys_wafers=1 iw_bytes_per_s=150000000000 iw_latency_ns=5000
//! r0 "embed" layer=- wafer=0 rect=0,0,2x1 active=1 ops=embed embedding vocab=16 hidden=8 rows_per_pe=8 token=8 sram=16384,128,0,0 steps=send(rt0,16)
//! rt0 forward r0 -> r1 color=0 colors=1 bytes=16
//! ```
//! Must not: hide state that is not in the `Program` value.

use crate::arch::{ArchSpec, PeSpec, RouterSpec, SystemSpec};
use crate::limits::{MAX_BATCH, MAX_CONTEXT, MAX_MESH_SIDE, MAX_TURN, MAX_WAFERS};
use crate::spatial::*;
use std::collections::HashMap;
use std::fmt::Write;

fn reduce_str(r: Reduce) -> String {
    match r {
        Reduce::Chain => "chain".into(),
        Reduce::Tree => "tree".into(),
        Reduce::TwoLevel { group } => format!("two_level:{group}"),
        Reduce::Meet { group } => format!("meet:{group}"),
    }
}

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Prints `p` in the textual form.
pub fn print_program(p: &Program) -> String {
    let mut s = String::with_capacity(256 * (p.regions.len() + p.routes.len()));
    let _ = writeln!(
        s,
        "program {} batch={}{} context={} weights={} acts={} kv={} wafers={}",
        q(&p.model),
        p.batch,
        // Printed only for a prompt chunk, so decode programs read and print unchanged.
        if p.new_tokens == 1 { String::new() } else { format!(" new_tokens={}", p.new_tokens) },
        p.context,
        p.weight_dtype,
        p.act_dtype,
        p.kv_dtype,
        p.wafers
    );
    let a = &p.arch;
    let _ = writeln!(
        s,
        "arch {} mesh={}x{} clock_ghz={} sram={} reserved={} rd={} wr={} f32={} mixed={} ew={} vec_ovh={} task_ovh={} loop_iter={} map_op={} gemm_step={} link={} hop={} ramp={} colors={} reserved_colors={} multicast={} sys_wafers={} iw_bytes_per_s={} iw_latency_ns={}",
        q(&a.name),
        a.mesh_width,
        a.mesh_height,
        a.clock_ghz,
        a.pe.sram_bytes,
        a.pe.sram_reserved_bytes,
        a.pe.sram_read_bytes_per_cycle,
        a.pe.sram_write_bytes_per_cycle,
        a.pe.simd_f32,
        a.pe.simd_mixed,
        a.pe.simd_elementwise,
        a.pe.vector_op_overhead_cycles,
        a.pe.task_overhead_cycles,
        a.pe.loop_iteration_cycles,
        a.pe.mapped_op_overhead_cycles,
        a.pe.gemm_step_overhead_cycles,
        a.router.link_bytes_per_cycle,
        a.router.hop_latency_cycles,
        a.router.ramp_latency_cycles,
        a.router.colors,
        a.router.reserved_colors,
        a.router.multicast as u8,
        a.system.wafers,
        a.system.inter_wafer_bytes_per_s,
        a.system.inter_wafer_latency_ns
    );
    for (i, r) in p.regions.iter().enumerate() {
        let work = match &r.work {
            Work::Gemv { n, k, tile_n, tile_k, reduce, glu, norm, argmax, epilogue_ops, acc, mac, batch_chunk } => format!(
                "gemv n={n} k={k} tile_n={tile_n} tile_k={tile_k} reduce={} glu={} norm={} argmax={} epilogue_ops={epilogue_ops}{}{}{}",
                reduce_str(*reduce),
                *glu as u8,
                *norm as u8,
                *argmax as u8,
                // Printed only when not the default, so older programs read and print unchanged.
                if *acc == crate::DType::F32 { String::new() } else { format!(" acc={acc}") },
                if *mac { "" } else { " mac=0" },
                if *batch_chunk == 0 { String::new() } else { format!(" batch_chunk={batch_chunk}") }
            ),
            Work::Attention { kv_heads, group, head_dim, positions, slot, rows_per_head, pos_per_pe, reduce, batch_split } => format!(
                "attention kv_heads={kv_heads} group={group} head_dim={head_dim} positions={positions} slot={slot} rows_per_head={rows_per_head} pos_per_pe={pos_per_pe} reduce={}{}",
                reduce_str(*reduce),
                if *batch_split == 1 { String::new() } else { format!(" batch_split={batch_split}") }
            ),
            Work::Embedding { vocab, hidden, rows_per_pe, token } => {
                format!("embedding vocab={vocab} hidden={hidden} rows_per_pe={rows_per_pe} token={token}")
            }
            Work::Gemm { m, k, n, tile_m, tile_k, tile_n, acc } => {
                format!("gemm m={m} k={k} n={n} tile_m={tile_m} tile_k={tile_k} tile_n={tile_n} acc={acc}")
            }
        };
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|st| match st {
                Step::Recv { route, bytes } => format!("recv({route},{bytes})"),
                Step::Compute => "compute".into(),
                Step::Collective { route } => format!("collective({route})"),
                Step::Send { route, bytes } => format!("send({route},{bytes})"),
            })
            .collect();
        let _ = writeln!(
            s,
            "r{i} {} layer={} wafer={} rect={},{},{}x{}{} active={} ops={} {work} sram={},{},{},{} steps={}",
            q(&r.name),
            r.layer.map_or("-".to_string(), |l| l.to_string()),
            r.wafer,
            r.rect.x,
            r.rect.y,
            r.rect.w,
            r.rect.h,
            if r.turn > 0 { format!(" turn={}", r.turn) } else { String::new() },
            r.active as u8,
            if r.ops.is_empty() { "-".to_string() } else { r.ops.join(",") },
            r.sram.code,
            r.sram.weights,
            r.sram.kv,
            r.sram.buffers,
            steps.join(";")
        );
    }
    for (i, rt) in p.routes.iter().enumerate() {
        let _ = writeln!(
            s,
            "rt{i} {} {} -> {} color={} colors={} bytes={}",
            rt.kind.name(),
            rt.src,
            rt.dst,
            rt.color,
            rt.colors,
            rt.bytes
        );
    }
    s
}

/// A line of the textual form that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

struct Line<'a> {
    no: usize,
    /// Positional tokens (before the first `key=value`), quoted strings unquoted.
    pos: Vec<String>,
    kv: HashMap<&'a str, &'a str>,
}

fn tokenize(no: usize, s: &str) -> Result<Line<'_>, ParseError> {
    let mut pos = Vec::new();
    let mut kv = HashMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' {
            i += 1;
            continue;
        }
        if b[i] == b'"' {
            let mut out = String::new();
            i += 1;
            loop {
                if i >= b.len() {
                    return Err(ParseError { line: no, message: "unterminated string".into() });
                }
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        out.push(b[i + 1] as char);
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        break;
                    }
                    _ => {
                        let ch = s[i..].chars().next().unwrap();
                        out.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            pos.push(out);
            continue;
        }
        let start = i;
        while i < b.len() && b[i] != b' ' {
            i += 1;
        }
        let tok = &s[start..i];
        if let Some((k, v)) = tok.split_once('=') {
            if kv.insert(k, v).is_some() {
                return Err(ParseError { line: no, message: format!("key `{k}=` appears twice") });
            }
        } else {
            pos.push(tok.to_string());
        }
    }
    Ok(Line { no, pos, kv })
}

impl Line<'_> {
    fn err(&self, m: impl Into<String>) -> ParseError {
        ParseError { line: self.no, message: m.into() }
    }
    fn get(&self, k: &str) -> Result<&str, ParseError> {
        self.kv.get(k).copied().ok_or_else(|| self.err(format!("missing `{k}=`")))
    }
    fn num<T: std::str::FromStr>(&self, k: &str) -> Result<T, ParseError> {
        let v = self.get(k)?;
        v.parse().map_err(|_| self.err(format!("`{k}={v}` is not a valid number")))
    }
    /// An optional number: `default` when the key is absent.
    fn num_or<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, ParseError> {
        if self.kv.contains_key(k) {
            self.num(k)
        } else {
            Ok(default)
        }
    }
    /// An integer field within `lo..=hi` (the field's documented range).
    fn int(&self, k: &str, lo: u64, hi: u64) -> Result<u64, ParseError> {
        let v: u64 = self.num(k)?;
        if v < lo || v > hi {
            return Err(self.err(format!("`{k}={v}` is out of range; allowed: {lo}..={hi}")));
        }
        Ok(v)
    }
    fn int32(&self, k: &str, lo: u64, hi: u64) -> Result<u32, ParseError> {
        // `hi` never exceeds u32::MAX at the call sites.
        Ok(self.int(k, lo, hi.min(u32::MAX as u64))? as u32)
    }
    /// Rejects keys this kind of line does not have (a typo would otherwise be ignored).
    fn only(&self, allowed: &[&str]) -> Result<(), ParseError> {
        let mut unknown: Vec<&str> = self.kv.keys().copied().filter(|k| !allowed.contains(k)).collect();
        unknown.sort_unstable();
        match unknown.first() {
            None => Ok(()),
            Some(k) => Err(self.err(format!("unknown key `{k}=`; this line has {}", allowed.join(", ")))),
        }
    }
    fn flag(&self, k: &str) -> Result<bool, ParseError> {
        match self.get(k)? {
            "0" => Ok(false),
            "1" => Ok(true),
            v => Err(self.err(format!("`{k}={v}` must be 0 or 1"))),
        }
    }
    fn dtype(&self, k: &str) -> Result<crate::DType, ParseError> {
        let v = self.get(k)?;
        v.parse().map_err(|e: crate::dtype::UnknownDType| self.err(e.to_string()))
    }
}

fn parse_reduce(l: &Line, v: &str) -> Result<Reduce, ParseError> {
    match v {
        "chain" => Ok(Reduce::Chain),
        "tree" => Ok(Reduce::Tree),
        _ => {
            let shape = |prefix: &str| v.strip_prefix(prefix).map(|g| g.parse::<u32>().ok());
            let (name, group) = match (shape("two_level:"), shape("meet:")) {
                (Some(g), _) => ("two_level", g),
                (_, Some(g)) => ("meet", g),
                _ => return Err(l.err(format!("unknown reduce shape `{v}` (chain, tree, two_level:G, meet:G)"))),
            };
            match group {
                Some(group) if (1..=MAX_MESH_SIDE).contains(&group) => {
                    Ok(if name == "meet" { Reduce::Meet { group } } else { Reduce::TwoLevel { group } })
                }
                _ => Err(l.err(format!("`reduce={v}`: the group is out of range; allowed: 1..={MAX_MESH_SIDE}"))),
            }
        }
    }
}

// Ranges of the textual form's fields (see ARCHITECTURE.md, "Limits"): a
// program a compiler could write for any config the model reader accepts.
/// Matrix dimensions, tile sizes, positions, rows per PE: 2^24.
const MAX_DIM: u64 = 1 << 24;
/// Heads, query-group size, head dim: 4096.
const MAX_HEADS: u64 = 4096;
/// Per-PE SRAM fields of a region, bytes: 2^40 (a PE has at most 2^30).
const MAX_SRAM_FIELD: u64 = 1 << 40;
/// Bytes a route or a step carries: 2^50.
const MAX_BYTES: u64 = 1 << 50;

fn parse_id(l: &Line, s: &str, prefix: &str) -> Result<u32, ParseError> {
    s.strip_prefix(prefix).and_then(|n| n.parse().ok()).ok_or_else(|| l.err(format!("expected {prefix}N, got `{s}`")))
}

/// Parses the textual form back into a `Program` (not verified: run the verifier).
pub fn parse_program(text: &str) -> Result<Program, ParseError> {
    let mut lines = text.lines().enumerate().map(|(i, s)| (i + 1, s.trim())).filter(|(_, s)| !s.is_empty());
    let (no, s) = lines.next().ok_or(ParseError { line: 1, message: "empty program".into() })?;
    let h = tokenize(no, s)?;
    if h.pos.first().map(String::as_str) != Some("program") || h.pos.len() < 2 {
        return Err(h.err("expected `program \"NAME\" …`"));
    }
    let (no, s) = lines.next().ok_or(ParseError { line: no + 1, message: "missing `arch` line".into() })?;
    let a = tokenize(no, s)?;
    if a.pos.first().map(String::as_str) != Some("arch") {
        return Err(a.err("expected `arch …`"));
    }
    h.only(&["batch", "new_tokens", "context", "weights", "acts", "kv", "wafers"])?;
    a.only(&[
        "mesh",
        "clock_ghz",
        "sram",
        "reserved",
        "rd",
        "wr",
        "f32",
        "mixed",
        "ew",
        "vec_ovh",
        "task_ovh",
        "loop_iter",
        "map_op",
        "gemm_step",
        "link",
        "hop",
        "ramp",
        "colors",
        "reserved_colors",
        "multicast",
        "sys_wafers",
        "iw_bytes_per_s",
        "iw_latency_ns",
    ])?;
    let (mw, mh) = a.get("mesh")?.split_once('x').ok_or_else(|| a.err("mesh must be WxH"))?;
    let arch = ArchSpec {
        name: a.pos.get(1).cloned().ok_or_else(|| a.err("missing arch name"))?,
        mesh_width: mw.parse().map_err(|_| a.err("bad mesh width"))?,
        mesh_height: mh.parse().map_err(|_| a.err("bad mesh height"))?,
        clock_ghz: a.num("clock_ghz")?,
        pe: PeSpec {
            sram_bytes: a.num("sram")?,
            sram_reserved_bytes: a.num("reserved")?,
            sram_read_bytes_per_cycle: a.num("rd")?,
            sram_write_bytes_per_cycle: a.num("wr")?,
            simd_f32: a.num("f32")?,
            simd_mixed: a.num("mixed")?,
            simd_elementwise: a.num("ew")?,
            vector_op_overhead_cycles: a.num("vec_ovh")?,
            task_overhead_cycles: a.num("task_ovh")?,
            // Optional (programs printed before the MeshGEMM fit lack them): the presets' fitted values.
            loop_iteration_cycles: a.num_or("loop_iter", crate::arch::LOOP_ITERATION_CYCLES)?,
            mapped_op_overhead_cycles: a.num_or("map_op", crate::arch::MAPPED_OP_OVERHEAD_CYCLES)?,
            gemm_step_overhead_cycles: a.num_or("gemm_step", crate::arch::GEMM_STEP_OVERHEAD_CYCLES)?,
        },
        router: RouterSpec {
            link_bytes_per_cycle: a.num("link")?,
            hop_latency_cycles: a.num("hop")?,
            ramp_latency_cycles: a.num("ramp")?,
            colors: a.num("colors")?,
            reserved_colors: a.num("reserved_colors")?,
            multicast: a.flag("multicast")?,
        },
        system: SystemSpec {
            wafers: a.num("sys_wafers")?,
            inter_wafer_bytes_per_s: a.num("iw_bytes_per_s")?,
            inter_wafer_latency_ns: a.num("iw_latency_ns")?,
        },
    };
    let mut p = Program {
        model: h.pos[1].clone(),
        batch: h.int("batch", 1, MAX_BATCH)?,
        new_tokens: if h.kv.contains_key("new_tokens") { h.int("new_tokens", 1, MAX_CONTEXT)? } else { 1 },
        context: h.int("context", 1, MAX_CONTEXT)?,
        weight_dtype: h.dtype("weights")?,
        act_dtype: h.dtype("acts")?,
        kv_dtype: h.dtype("kv")?,
        wafers: h.int32("wafers", 1, MAX_WAFERS as u64)?,
        arch,
        regions: Vec::new(),
        routes: Vec::new(),
    };
    for (no, s) in lines {
        let l = tokenize(no, s)?;
        let head = l.pos.first().cloned().unwrap_or_default();
        if head.starts_with("rt") {
            let id = parse_id(&l, &head, "rt")?;
            if id as usize != p.routes.len() {
                return Err(l.err(format!("routes must be numbered in order: expected rt{}", p.routes.len())));
            }
            if l.pos.len() < 5 || l.pos[3] != "->" {
                return Err(l.err("expected `rtN KIND rA -> rB …`"));
            }
            let kind = match l.pos[1].as_str() {
                "forward" => RouteKind::Forward,
                "residual" => RouteKind::Residual,
                "reduce" => RouteKind::Reduce,
                "norm" => RouteKind::Norm,
                "argmax" => RouteKind::Argmax,
                "bcast" => RouteKind::Bcast,
                k => return Err(l.err(format!("unknown route kind `{k}`"))),
            };
            l.only(&["color", "colors", "bytes"])?;
            p.routes.push(Route {
                kind,
                src: RegionId(parse_id(&l, &l.pos[2], "r")?),
                dst: RegionId(parse_id(&l, &l.pos[4], "r")?),
                color: l.int32("color", 0, 255)?,
                colors: l.int32("colors", 1, 256)?,
                bytes: l.int("bytes", 0, MAX_BYTES)?,
            });
        } else if head.starts_with('r') {
            let id = parse_id(&l, &head, "r")?;
            if id as usize != p.regions.len() {
                return Err(l.err(format!("regions must be numbered in order: expected r{}", p.regions.len())));
            }
            let name = l.pos.get(1).cloned().ok_or_else(|| l.err("missing region name"))?;
            let kind = l.pos.get(2).map(String::as_str).unwrap_or("");
            const COMMON: [&str; 8] = ["layer", "wafer", "rect", "turn", "active", "ops", "sram", "steps"];
            let keys = |work: &[&'static str]| -> Vec<&'static str> { COMMON.iter().chain(work).copied().collect() };
            let work = match kind {
                "gemv" => {
                    l.only(&keys(&[
                        "n",
                        "k",
                        "tile_n",
                        "tile_k",
                        "reduce",
                        "glu",
                        "norm",
                        "argmax",
                        "epilogue_ops",
                        "acc",
                        "mac",
                        "batch_chunk",
                    ]))?;
                    Work::Gemv {
                        n: l.int("n", 1, MAX_DIM)?,
                        k: l.int("k", 1, MAX_DIM)?,
                        tile_n: l.int("tile_n", 1, MAX_DIM)?,
                        tile_k: l.int("tile_k", 1, MAX_DIM)?,
                        reduce: parse_reduce(&l, l.get("reduce")?)?,
                        glu: l.flag("glu")?,
                        norm: l.flag("norm")?,
                        argmax: l.flag("argmax")?,
                        epilogue_ops: l.int32("epilogue_ops", 0, 1024)?,
                        // Optional: printed only when not the default.
                        acc: match l.kv.get("acc") {
                            Some(_) => l.dtype("acc")?,
                            None => crate::DType::F32,
                        },
                        mac: match l.kv.get("mac") {
                            Some(_) => l.flag("mac")?,
                            None => true,
                        },
                        batch_chunk: match l.kv.get("batch_chunk") {
                            Some(_) => l.int("batch_chunk", 1, MAX_BATCH)?,
                            None => 0,
                        },
                    }
                }
                "attention" => {
                    l.only(&keys(&[
                        "kv_heads",
                        "group",
                        "head_dim",
                        "positions",
                        "slot",
                        "rows_per_head",
                        "pos_per_pe",
                        "reduce",
                        "batch_split",
                    ]))?;
                    Work::Attention {
                        kv_heads: l.int("kv_heads", 1, MAX_HEADS)?,
                        group: l.int("group", 1, MAX_HEADS)?,
                        head_dim: l.int("head_dim", 1, MAX_HEADS)?,
                        positions: l.int("positions", 1, MAX_DIM)?,
                        slot: l.int("slot", 0, MAX_DIM)?,
                        rows_per_head: l.int32("rows_per_head", 1, MAX_MESH_SIDE as u64)?,
                        pos_per_pe: l.int("pos_per_pe", 1, MAX_DIM)?,
                        reduce: parse_reduce(&l, l.get("reduce")?)?,
                        batch_split: match l.kv.get("batch_split") {
                            Some(_) => l.int("batch_split", 1, MAX_BATCH)?,
                            None => 1,
                        },
                    }
                }
                "embedding" => {
                    l.only(&keys(&["vocab", "hidden", "rows_per_pe", "token"]))?;
                    Work::Embedding {
                        vocab: l.int("vocab", 1, MAX_DIM)?,
                        hidden: l.int("hidden", 1, MAX_DIM)?,
                        rows_per_pe: l.int("rows_per_pe", 1, MAX_DIM)?,
                        token: l.int("token", 0, MAX_DIM)?,
                    }
                }
                "gemm" => {
                    l.only(&keys(&["m", "k", "n", "tile_m", "tile_k", "tile_n", "acc"]))?;
                    Work::Gemm {
                        m: l.int("m", 1, MAX_DIM)?,
                        k: l.int("k", 1, MAX_DIM)?,
                        n: l.int("n", 1, MAX_DIM)?,
                        tile_m: l.int("tile_m", 1, MAX_DIM)?,
                        tile_k: l.int("tile_k", 1, MAX_DIM)?,
                        tile_n: l.int("tile_n", 1, MAX_DIM)?,
                        acc: l.dtype("acc")?,
                    }
                }
                k => return Err(l.err(format!("unknown work kind `{k}`"))),
            };
            let rect = l.get("rect")?;
            let parsed = (|| {
                let (xy, wh) = rect.split_once(',').and_then(|(x, rest)| Some((x, rest.split_once(',')?)))?;
                let (y, wh) = wh;
                let (w, hh) = wh.split_once('x')?;
                Some(Rect { x: xy.parse().ok()?, y: y.parse().ok()?, w: w.parse().ok()?, h: hh.parse().ok()? })
            })();
            let rect = parsed.ok_or_else(|| l.err(format!("rect `{rect}` must be X,Y,WxH")))?;
            let sram: Vec<u64> = l
                .get("sram")?
                .split(',')
                .map(|v| v.parse())
                .collect::<Result<_, _>>()
                .map_err(|_| l.err("bad sram"))?;
            if sram.len() != 4 {
                return Err(l.err("sram must be code,weights,kv,buffers"));
            }
            if let Some(v) = sram.iter().find(|&&v| v > MAX_SRAM_FIELD) {
                return Err(l.err(format!("`sram=` holds {v}, out of range; allowed: 0..={MAX_SRAM_FIELD} per field")));
            }
            let mut steps = Vec::new();
            for st in l.get("steps")?.split(';').filter(|s| !s.is_empty()) {
                let step = if st == "compute" {
                    Step::Compute
                } else {
                    let (name, args) = st
                        .strip_suffix(')')
                        .and_then(|s| s.split_once('('))
                        .ok_or_else(|| l.err(format!("bad step `{st}`")))?;
                    let mut it = args.split(',');
                    let route = RouteId(parse_id(&l, it.next().unwrap_or(""), "rt")?);
                    let bytes = || -> Result<u64, ParseError> {
                        args.split(',')
                            .nth(1)
                            .and_then(|b| b.parse().ok())
                            .filter(|&b| b <= MAX_BYTES)
                            .ok_or_else(|| l.err(format!("bad step `{st}` (bytes: 0..={MAX_BYTES})")))
                    };
                    match name {
                        "recv" => Step::Recv { route, bytes: bytes()? },
                        "send" => Step::Send { route, bytes: bytes()? },
                        "collective" => Step::Collective { route },
                        _ => return Err(l.err(format!("unknown step `{name}`"))),
                    }
                };
                steps.push(step);
            }
            let layer = match l.get("layer")? {
                "-" => None,
                v => Some(v.parse().map_err(|_| l.err(format!("bad layer `{v}`")))?),
            };
            let ops = match l.get("ops")? {
                "-" => Vec::new(),
                v => v.split(',').map(str::to_string).collect(),
            };
            p.regions.push(Region {
                name,
                layer,
                wafer: l.int32("wafer", 0, MAX_WAFERS as u64 - 1)?,
                rect,
                turn: match l.kv.get("turn") {
                    Some(_) => l.int32("turn", 0, MAX_TURN as u64)?,
                    None => 0,
                },
                active: l.flag("active")?,
                ops,
                work,
                sram: Sram { code: sram[0], weights: sram[1], kv: sram[2], buffers: sram[3] },
                steps,
            });
        } else {
            return Err(l.err(format!("unexpected `{head}`")));
        }
    }
    Ok(p)
}

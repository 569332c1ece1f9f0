//! `wafer models`: the preset table.

use super::{to_json, Format};
use crate::Exit;
use serde::Serialize;
use wafer_ir::{graph_stats, DType};
use wafer_reports::{bytes, si, Table};
use wafer_workloads::{decode_graph, presets, DecodeParams};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Serialize)]
struct Row {
    name: String,
    model_type: String,
    layers: u64,
    hidden: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    experts: u64,
    params_total: u64,
    params_active: u64,
    weight_bytes_16bit: u64,
    kv_bytes_per_token_16bit: u64,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let mut rows = Vec::new();
    for cfg in presets() {
        let p = DecodeParams { weight_dtype: DType::Bf16, kv_dtype: DType::Bf16, ..Default::default() };
        let g = decode_graph(&cfg, &p)?;
        let s = graph_stats(&g);
        rows.push(Row {
            name: cfg.name.clone(),
            model_type: cfg.family.to_string(),
            layers: cfg.layers,
            hidden: cfg.hidden,
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            experts: cfg.experts,
            params_total: s.params_total,
            params_active: s.params_active,
            weight_bytes_16bit: s.weight_bytes,
            kv_bytes_per_token_16bit: s.kv_bytes_per_token,
        });
    }
    match a.format {
        Format::Json => print!("{}", to_json(&rows)),
        Format::Text => {
            let mut t = Table::new(&[
                "preset",
                "type",
                ">layers",
                ">hidden",
                ">heads/kv",
                ">params",
                ">active",
                ">weights@16b",
                ">KV/token@16b",
            ]);
            for r in &rows {
                t.row([
                    r.name.clone(),
                    r.model_type.clone(),
                    r.layers.to_string(),
                    r.hidden.to_string(),
                    format!("{}/{}", r.heads, r.kv_heads),
                    si(r.params_total as f64, ""),
                    si(r.params_active as f64, ""),
                    format!("{:.2} GB", r.weight_bytes_16bit as f64 / 1e9),
                    bytes(r.kv_bytes_per_token_16bit),
                ]);
            }
            print!("{}", t.to_text());
        }
    }
    Ok(())
}

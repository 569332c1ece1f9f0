//! `wafer merge DIR... --out DIR`: joins the shards of one sweep (`sweep.json`)
//! or of one frontier (`frontier-shard.json`) into the folder an unsharded
//! run would have written, byte for byte.

use super::report_out::prepare;
use crate::Exit;
use wafer_reports::frontier::{merge_shards, FrontierShard};
use wafer_reports::sweep::{merge, sweep_files, SweepOutput};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shard folders written by `wafer sweep --shard I/N --out DIR` or `wafer
    /// frontier --shard I/N --out DIR` (or their sweep.json / frontier-shard.json files).
    #[arg(required = true)]
    pub shards: Vec<std::path::PathBuf>,
    /// The merged sweep folder.
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Replace an existing sweep folder (only one wafer wrote, or an empty one).
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let frontier = |s: &std::path::Path| {
        if s.is_dir() {
            s.join("frontier-shard.json").is_file()
        } else {
            s.file_name().is_some_and(|n| n == "frontier-shard.json")
        }
    };
    let n = a.shards.iter().filter(|s| frontier(s)).count();
    if n > 0 && n < a.shards.len() {
        return Err(Exit {
            code: 2,
            message: "some shards are a frontier's (frontier-shard.json) and some a sweep's: merge one run at a time"
                .into(),
        });
    }
    let target = prepare(&a.out, a.force)?;
    if n > 0 {
        let mut parts = Vec::new();
        for s in &a.shards {
            let file = if s.is_dir() { s.join("frontier-shard.json") } else { s.clone() };
            let text = crate::inputs::read_input(&file, "frontier shard", crate::inputs::MAX_SWEEP_JSON_BYTES)?;
            let name = file.display().to_string();
            parts.push((name.clone(), FrontierShard::from_json(&text, &name)?));
        }
        let r = merge_shards(&parts)?;
        target.write(&r.files()?)?;
        eprintln!("merged {} frontier shard(s) into {}", parts.len(), a.out.display());
        return Ok(());
    }
    let mut parts = Vec::new();
    for s in &a.shards {
        let file = if s.is_dir() { s.join("sweep.json") } else { s.clone() };
        let text = crate::inputs::read_input(&file, "sweep shard", crate::inputs::MAX_SWEEP_JSON_BYTES)?;
        let name = file.display().to_string();
        parts.push((name.clone(), SweepOutput::from_json(&text, &name)?));
    }
    let merged = merge(&parts)?;
    target.write(&sweep_files(&merged)?)?;
    eprintln!("merged {} shard(s), {} points, into {}", parts.len(), merged.rows.len(), a.out.display());
    Ok(())
}

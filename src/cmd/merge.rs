//! `wafer merge DIR... --out DIR`: joins the shards of one sweep into the
//! folder an unsharded run would have written, byte for byte.

use super::report_out::prepare;
use crate::Exit;
use wafer_reports::sweep::{merge, sweep_files, SweepOutput};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shard folders written by `wafer sweep --shard I/N --out DIR` (or their sweep.json files).
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
    let target = prepare(&a.out, a.force)?;
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

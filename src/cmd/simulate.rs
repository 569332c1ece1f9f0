//! `wafer simulate FILE`: time a compiled program (the textual spatial IR).

use super::run::{simulate_program, Engine};
use super::{to_json, Format};
use crate::Exit;
use wafer_ir::{parse_program, verify_program};
use wafer_reports::run::sim_text;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A program written by `wafer compile -o FILE`.
    file: std::path::PathBuf,
    #[arg(long, value_enum, default_value_t)]
    engine: Engine,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(a: Args) -> Result<(), Exit> {
    let text = crate::inputs::read_input(&a.file, "program", crate::inputs::MAX_INPUT_BYTES)?;
    let p = parse_program(&text).map_err(|e| Exit { code: 2, message: format!("{}: {e}", a.file.display()) })?;
    let info = verify_program(&p).map_err(|e| Exit { code: 2, message: format!("{}: {e}", a.file.display()) })?;
    if a.engine == Engine::Functional {
        return Err(Exit {
            code: 2,
            message: "the functional engine needs the model's weights and every step's program: use `wafer run --engine functional`".into(),
        });
    }
    let sim = simulate_program(a.engine, &p, &info)
        .map_err(|e| Exit { message: format!("{}: {}", a.file.display(), e.message), ..e })?;
    match a.format {
        Format::Json => print!("{}", to_json(&sim)),
        Format::Text => print!("{}", sim_text(&sim)),
    }
    Ok(())
}

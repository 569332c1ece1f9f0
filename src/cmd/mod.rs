//! One module per subcommand: its flags (`Args`) and its `run`.

pub mod archs;
pub mod check;
pub mod compare;
pub mod compile;
pub mod frontier;
pub mod gpu;
pub mod graph;
pub mod kernel;
pub mod merge;
pub mod models;
pub mod report_out;
pub mod roundtrip;
pub mod run;
pub mod simulate;
pub mod speculate;
pub mod sweep;
pub mod trace;

/// Output format shared by the commands that print results.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Pretty JSON followed by a newline, for stdout.
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("report types serialise");
    s.push('\n');
    s
}

/// The ranges of the CLI's whole-number flags (generous: well beyond any real
/// system; the model, arch and program limits apply on top).
pub mod limits {
    pub const CONTEXT: (i128, i128) = (1, 16_777_216);
    pub const CACHED: (i128, i128) = (0, 16_777_216);
    pub const BATCH: (i128, i128) = (1, 65_536);
    pub const GPUS: (i128, i128) = (1, 1024);
    pub const STEPS: (i128, i128) = (1, 1024);
    pub const TOKENS: (i128, i128) = (1, 1_000_000_000);
    pub const USERS: (i128, i128) = (1, 65_536);
    pub const PP: (i128, i128) = (1, 1024);
    pub const SPEC_K: (i128, i128) = (1, 32);
}

/// A whole-number flag value in `range`, parsed as signed so that `-1` gets
/// "is negative" rather than clap's "unexpected argument" (the flags using it
/// set `allow_negative_numbers`). Clap prefixes the flag's name.
pub fn whole<T: TryFrom<i128>>(s: &str, (lo, hi): (i128, i128)) -> Result<T, String> {
    let allowed = format!("allowed {lo}..={hi}");
    let t = s.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("`{s}` is not a whole number; {allowed}"));
    }
    let v: i128 = match t.parse() {
        Ok(v) => v,
        Err(_) if t.starts_with('-') => return Err(format!("{t} is negative; {allowed}")),
        Err(_) => return Err(format!("{t} is out of range; {allowed}")),
    };
    if v < 0 {
        return Err(format!("{v} is negative; {allowed}"));
    }
    if !(lo..=hi).contains(&v) {
        return Err(format!("{v} is out of range; {allowed}"));
    }
    T::try_from(v).map_err(|_| format!("{v} is out of range; {allowed}"))
}

pub fn context_flag(s: &str) -> Result<u64, String> {
    whole(s, limits::CONTEXT)
}
pub fn cached_flag(s: &str) -> Result<u64, String> {
    whole(s, limits::CACHED)
}
pub fn batch_flag(s: &str) -> Result<u64, String> {
    whole(s, limits::BATCH)
}
pub fn gpus_flag(s: &str) -> Result<u32, String> {
    whole(s, limits::GPUS)
}
pub fn steps_flag(s: &str) -> Result<u64, String> {
    whole(s, limits::STEPS)
}
pub fn users_flag(s: &str) -> Result<u32, String> {
    whole(s, limits::USERS)
}
pub fn tokens_flag(s: &str) -> Result<u64, String> {
    whole(s, limits::TOKENS)
}

/// A price per machine-hour, USD: finite, above 0, at most 1,000,000.
pub fn price_flag(s: &str) -> Result<f64, String> {
    positive(s, 1e6, "USD per machine-hour")
}

/// A wafer system's power, kW: finite, above 0, at most 10,000 (a CS-3 draws ~23).
pub fn power_kw_flag(s: &str) -> Result<f64, String> {
    positive(s, 1e4, "kW per wafer system")
}

/// A number in (0, hi], finite.
fn positive(s: &str, hi: f64, unit: &str) -> Result<f64, String> {
    let allowed = format!("allowed: a number above 0 and at most {hi} ({unit})");
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number; {allowed}"))?;
    if !v.is_finite() || v <= 0.0 || v > hi {
        return Err(format!("{s} is out of range; {allowed}"));
    }
    Ok(v)
}

/// Pipeline stages (the model's layer count is checked on top).
pub fn pp_flag(s: &str) -> Result<u32, String> {
    whole(s, limits::PP)
}

/// Drafted tokens per verify step.
pub fn spec_k_flag(s: &str) -> Result<u32, String> {
    whole(s, limits::SPEC_K)
}

/// An acceptance rate, 0..=1.
pub fn accept_flag(s: &str) -> Result<f64, String> {
    let allowed = "allowed: a probability per drafted token, 0 <= a <= 1";
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number; {allowed}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s} is out of range; {allowed}"));
    }
    Ok(v)
}

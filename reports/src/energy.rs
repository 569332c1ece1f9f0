//! Energy and cost per token: power × time per token, price × machines ÷ tokens/s.
//!
//! Owns: the embedded power and price table (`data/power.toml`: wafer system
//! power per arch preset, copied with its source from
//! `shared/reference/hardware.md`, and the default price per machine-hour,
//! each labelled an assumption), GPU power (`tdp_w` of the GPU spec, board
//! power only), and the arithmetic:
//! * joules per token = machines × power per machine ÷ aggregate tokens/s
//!   (at batch 1 that is power × time per token);
//! * USD per million tokens = machines × price per machine-hour ÷ (tokens/s ×
//!   3,600) × 10⁶.
//!
//! The wafer's power is the whole system's (a CS-2 or CS-3 with its power
//! supplies and cooling); a GPU's is its board's TDP, without the host, the
//! network or the cooling, so the GPU figure is the lower of the two kinds of
//! bound. Neither includes the facility (PUE). Must not: read files, time
//! anything.

use serde::{Deserialize, Serialize};

/// The embedded table (see its comments for every figure's source).
pub const POWER_TOML: &str = include_str!("../data/power.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    wafer: Vec<WaferRow>,
    price: Vec<PriceRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaferRow {
    arch: String,
    #[allow(dead_code)]
    system: String,
    kw: f64,
    low_kw: f64,
    high_kw: f64,
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceRow {
    machine: String,
    usd_per_hour: f64,
    basis: String,
}

fn table() -> Table {
    toml::from_str(POWER_TOML).expect("the embedded power table parses (tested)")
}

/// Power of one machine (one wafer system or one GPU), W, with its range and source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Power {
    pub watts: f64,
    /// The range the source gives (equal to `watts` where it gives one figure).
    pub low_watts: f64,
    pub high_watts: f64,
    pub source: String,
}

/// Price of one machine-hour, USD, and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub usd_per_hour: f64,
    /// True for the built-in defaults (all assumptions), false for a price given on the command line.
    pub assumed: bool,
    pub basis: String,
}

/// The documented system power of a wafer arch preset (`wse2`, `wse3`); none for other archs.
pub fn wafer_power(arch: &str) -> Option<Power> {
    table().wafer.into_iter().find(|r| r.arch == arch).map(|r| Power {
        watts: r.kw * 1e3,
        low_watts: r.low_kw * 1e3,
        high_watts: r.high_kw * 1e3,
        source: r.source,
    })
}

/// A wafer system power given on the command line, kW.
pub fn given_wafer_power(kw: f64) -> Power {
    Power { watts: kw * 1e3, low_watts: kw * 1e3, high_watts: kw * 1e3, source: "--wafer-power-kw".into() }
}

/// A GPU's board power: its spec's `tdp_w` (from gpu_specs.csv for presets); none without one.
pub fn gpu_power(gpu: &wafer_gpu::GpuSpec) -> Option<Power> {
    gpu.tdp_w.map(|w| Power {
        watts: w,
        low_watts: w,
        high_watts: w,
        source: format!(
            "tdp_w of {} ({}); board power only: host, network and cooling excluded",
            gpu.name,
            if gpu.source.is_empty() { "its GPU spec" } else { gpu.source.as_str() }
        ),
    })
}

/// The default (assumed) price of one machine-hour of a wafer arch or GPU preset.
pub fn default_price(machine: &str) -> Option<Price> {
    table().price.into_iter().find(|r| r.machine == machine).map(|r| Price {
        usd_per_hour: r.usd_per_hour,
        assumed: true,
        basis: r.basis,
    })
}

/// A price given on the command line (`flag` names it).
pub fn given_price(usd_per_hour: f64, flag: &str) -> Price {
    Price { usd_per_hour, assumed: false, basis: flag.to_string() }
}

/// Energy and cost per token of one machine kind running at `tokens_per_s`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyFigure {
    /// Arch or GPU name.
    pub machine: String,
    /// Wafers or GPUs.
    pub machines: u32,
    /// Aggregate tokens per second the figures divide by.
    pub tokens_per_s: f64,
    /// Power of one machine; null when no figure is known (give `--wafer-power-kw`, or `tdp_w` in a GPU TOML).
    pub power: Option<Power>,
    /// All machines together, W.
    pub total_power_w: Option<f64>,
    pub joules_per_token: Option<f64>,
    /// At the low and high ends of the power range.
    pub joules_per_token_low: Option<f64>,
    pub joules_per_token_high: Option<f64>,
    pub price: Option<Price>,
    pub usd_per_mtok: Option<f64>,
}

/// The figures for `machines` machines of `machine` at `tokens_per_s`.
pub fn energy(
    machine: &str,
    machines: u32,
    tokens_per_s: f64,
    power: Option<Power>,
    price: Option<Price>,
) -> EnergyFigure {
    let m = machines as f64;
    let per_token = |w: f64| m * w / tokens_per_s;
    EnergyFigure {
        machine: machine.to_string(),
        machines,
        tokens_per_s,
        total_power_w: power.as_ref().map(|p| m * p.watts),
        joules_per_token: power.as_ref().map(|p| per_token(p.watts)),
        joules_per_token_low: power.as_ref().map(|p| per_token(p.low_watts)),
        joules_per_token_high: power.as_ref().map(|p| per_token(p.high_watts)),
        usd_per_mtok: price.as_ref().map(|p| m * p.usd_per_hour / (tokens_per_s * 3600.0) * 1e6),
        power,
        price,
    }
}

/// Wafer and GPU side of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Energy {
    pub wafer: EnergyFigure,
    pub gpu: Option<EnergyFigure>,
}

/// Watts as `700 W` or `23 kW`, `17.5 kW`.
fn watts(w: f64) -> String {
    if w >= 1e3 {
        format!("{} kW", (w / 1e3 * 100.0).round() / 100.0)
    } else {
        format!("{} W", w.round())
    }
}

/// Joules with a unit that keeps three significant figures readable.
fn joules(j: f64) -> String {
    if j >= 1.0 {
        format!("{j:.2} J")
    } else {
        format!("{:.1} mJ", j * 1e3)
    }
}

impl EnergyFigure {
    /// `0.53 J/token (23 kW × 1; range …)` or what is missing.
    pub fn joules_text(&self) -> String {
        match (&self.power, self.joules_per_token) {
            (Some(p), Some(j)) => {
                let range = match (self.joules_per_token_low, self.joules_per_token_high) {
                    (Some(lo), Some(hi)) if hi > lo => format!(", {}–{}", joules(lo), joules(hi)),
                    _ => String::new(),
                };
                format!("{}/token ({} × {}{range})", joules(j), self.machines, watts(p.watts))
            }
            _ => "no power figure".into(),
        }
    }

    /// `$0.05/Mtok ($76/h × 1, assumed)` or what is missing.
    pub fn cost_text(&self) -> String {
        match (&self.price, self.usd_per_mtok) {
            (Some(p), Some(c)) => format!(
                "${} per million tokens (${}/h × {}{})",
                money(c),
                money(p.usd_per_hour),
                self.machines,
                if p.assumed { ", assumed price" } else { "" }
            ),
            _ => "no price (give one per machine-hour)".into(),
        }
    }

    /// The sources, one sentence.
    pub fn sources_text(&self) -> String {
        let power = match &self.power {
            Some(p) => format!("power: {}", p.source),
            None => "no power figure".into(),
        };
        let price = match &self.price {
            Some(p) => format!("price: {}", p.basis),
            None => "no price".into(),
        };
        format!("{}: {power}; {price}.", self.machine)
    }
}

/// Dollars with the precision their size needs.
pub fn money(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else if x >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_the_reference_power_row_for_both_presets() {
        // hardware.md: "~15–20 kW" (WSE-2), "~23 kW" (WSE-3).
        let w2 = wafer_power("wse2").unwrap();
        assert_eq!((w2.low_watts, w2.watts, w2.high_watts), (15e3, 17.5e3, 20e3));
        let w3 = wafer_power("wse3").unwrap();
        assert_eq!((w3.low_watts, w3.watts, w3.high_watts), (23e3, 23e3, 23e3));
        assert!(w3.source.contains("low confidence"));
        assert!(wafer_power("mesh:32x32").is_none());
        for a in wafer_ir::ARCH_PRESETS {
            assert!(wafer_power(a).is_some() && default_price(a).is_some(), "{a} has no power or price row");
        }
    }

    #[test]
    fn every_gpu_preset_has_a_board_power_and_an_assumed_price() {
        for g in wafer_gpu::gpu_presets().unwrap() {
            let p = gpu_power(&g).unwrap_or_else(|| panic!("{} has no tdp_w", g.name));
            assert_eq!(p.watts, g.tdp_w.unwrap());
            let price = default_price(&g.name).unwrap_or_else(|| panic!("{} has no default price", g.name));
            assert!(price.assumed && price.basis.starts_with("assumed"), "{}", g.name);
        }
    }

    #[test]
    fn joules_per_token_is_power_over_tokens_per_second_and_cost_scales_with_machines() {
        let p = Power { watts: 1000.0, low_watts: 500.0, high_watts: 2000.0, source: "test".into() };
        let e = energy("x", 4, 200.0, Some(p), Some(given_price(3.6, "--price-per-hour")));
        assert_eq!(e.total_power_w, Some(4000.0));
        assert_eq!(e.joules_per_token, Some(20.0)); // 4 kW / 200 tokens/s
        assert_eq!((e.joules_per_token_low, e.joules_per_token_high), (Some(10.0), Some(40.0)));
        // 4 × $3.60/h = $14.40/h over 720,000 tokens/h = $20 per million.
        assert!((e.usd_per_mtok.unwrap() - 20.0).abs() < 1e-9);
        let none = energy("x", 1, 10.0, None, None);
        assert_eq!((none.joules_per_token, none.usd_per_mtok), (None, None));
        assert_eq!(none.joules_text(), "no power figure");
    }
}

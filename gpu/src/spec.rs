//! GPU specifications: the datasheet figures the baseline model runs on.
//!
//! Owns: `GpuSpec`, the built-in presets (parsed from the embedded copy of
//! `shared/reference/gpu_specs.csv`), the TOML reader for user specs, and the
//! validation of every field. Must not: model time (that is `model`) or read
//! files (callers pass text).

use crate::csv::{opt_f64, Csv};
use crate::error::GpuError;
use serde::{Deserialize, Serialize};
use wafer_ir::DType;

/// The embedded datasheet table (a verbatim copy of `shared/reference/gpu_specs.csv`).
pub const SPECS_CSV: &str = include_str!("../data/gpu_specs.csv");
const SPECS_SOURCE: &str = "gpu_specs.csv";

/// PCI Express x16 bandwidth per direction in GB/s, for GPUs without NVLink:
/// lanes x transfer rate x 128b/130b encoding / 8 bits. Gen4 runs 16 GT/s per
/// lane, Gen5 32 GT/s (PCI-SIG, PCI Express Base Specification 4.0 and 5.0).
/// Gen4 x16 is what the RTX 4090 has (NVIDIA GeForce RTX 4090 specifications).
pub fn pcie_x16_gb_per_s_per_direction(gen: u8) -> f64 {
    let gt_per_s = if gen >= 5 { 32.0 } else { 16.0 };
    16.0 * gt_per_s * (128.0 / 130.0) / 8.0
}

/// How the GPUs of a tensor-parallel group talk to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    Nvlink,
    PcieGen4,
    PcieGen5,
}

impl LinkKind {
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Nvlink => "NVLink",
            LinkKind::PcieGen4 => "PCIe Gen4 x16",
            LinkKind::PcieGen5 => "PCIe Gen5 x16",
        }
    }
}

/// One GPU model. Units are the datasheets': GB = 1e9 bytes, TFLOP/s dense
/// (no structured sparsity), link bandwidth bidirectional as NVIDIA quotes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub name: String,
    /// HBM (or GDDR) capacity, GB.
    pub hbm_gb: f64,
    /// Peak memory bandwidth, GB/s.
    pub hbm_gb_per_s: f64,
    /// Dense bf16/fp16 tensor-core peak, TFLOP/s.
    pub bf16_dense_tflops: f64,
    /// Dense fp8 tensor-core peak, TFLOP/s; absent on GPUs without fp8.
    #[serde(default)]
    pub fp8_dense_tflops: Option<f64>,
    /// fp32 peak, TFLOP/s; not in the reference table, so only from TOML.
    #[serde(default)]
    pub fp32_tflops: Option<f64>,
    pub link: LinkKind,
    /// GPU-to-GPU bandwidth, GB/s, both directions together. Optional for
    /// PCIe links (the x16 figure of the generation is used).
    #[serde(default)]
    pub link_gb_per_s_bidir: Option<f64>,
    #[serde(default)]
    pub tdp_w: Option<f64>,
    /// Where the figures come from.
    #[serde(default)]
    pub source: String,
}

/// The names accepted besides the preset names themselves.
const ALIASES: &[(&str, &str)] = &[
    ("A100-40GB", "A100-40GB-SXM"),
    ("A100-80GB", "A100-80GB-SXM"),
    ("A100", "A100-80GB-SXM"),
    ("H100", "H100-SXM"),
    ("H200", "H200-SXM"),
    ("B200", "B200-HGX"),
];

impl GpuSpec {
    /// Capacity in bytes.
    pub fn hbm_bytes(&self) -> f64 {
        self.hbm_gb * 1e9
    }

    /// Peak memory bandwidth in bytes/s.
    pub fn hbm_bytes_per_s(&self) -> f64 {
        self.hbm_gb_per_s * 1e9
    }

    /// Link bandwidth one GPU can send at, bytes/s (half the bidirectional figure).
    pub fn link_bytes_per_s(&self) -> f64 {
        let bidir = self.link_gb_per_s_bidir.unwrap_or_else(|| match self.link {
            LinkKind::PcieGen5 => 2.0 * pcie_x16_gb_per_s_per_direction(5),
            _ => 2.0 * pcie_x16_gb_per_s_per_direction(4),
        });
        bidir / 2.0 * 1e9
    }

    /// Dense peak FLOP/s for math in `act` (the activation dtype: weight-only
    /// quantised weights are widened to it before the multiply). int8
    /// activations use the fp8 figure (equal to the dense int8 figure on
    /// Hopper, Ada and Blackwell) and fall back to bf16 where there is none.
    pub fn peak_flops(&self, act: DType) -> Result<f64, GpuError> {
        let tflops = match act {
            DType::Bf16 | DType::F16 => self.bf16_dense_tflops,
            DType::Fp8 | DType::Int8 => self.fp8_dense_tflops.unwrap_or(self.bf16_dense_tflops),
            DType::F32 => self.fp32_tflops.ok_or_else(|| GpuError::NoComputeFigure {
                gpu: self.name.clone(),
                dtype: "fp32".into(),
                field: "fp32_tflops",
            })?,
            DType::Int4 | DType::I32 => {
                return Err(GpuError::NoComputeFigure { gpu: self.name.clone(), dtype: act.to_string(), field: "-" })
            }
        };
        Ok(tflops * 1e12)
    }

    /// Reads a spec from TOML text (same field names as the struct) and validates it.
    pub fn from_toml(text: &str, source_name: &str) -> Result<GpuSpec, GpuError> {
        let spec: GpuSpec = toml::from_str(text).map_err(|e| {
            // Name the line (and so the field) the parser stopped at.
            // (A span from the start is the whole document: a missing field, named in the message.)
            let at = e.span().filter(|s| s.start > 0).map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count();
                format!("line {} (`{}`): ", line + 1, text.lines().nth(line).unwrap_or("").trim())
            });
            GpuError::Toml {
                source_name: source_name.into(),
                message: format!("{}{}", at.unwrap_or_default(), e.message()),
            }
        })?;
        spec.validate(source_name)?;
        Ok(spec)
    }

    /// Checks every field against its allowed range.
    pub fn validate(&self, source_name: &str) -> Result<(), GpuError> {
        let bad = |field: &'static str, value: String, allowed: &str| GpuError::InvalidSpec {
            source_name: source_name.into(),
            field,
            value,
            allowed: allowed.into(),
        };
        if self.name.trim().is_empty() {
            return Err(bad("name", "empty".into(), "a non-empty name"));
        }
        // Sanity ranges for user input: positive, finite and well beyond any shipping GPU.
        let ranged: [(&'static str, Option<f64>, f64); 7] = [
            ("hbm_gb", Some(self.hbm_gb), 1e5),
            ("hbm_gb_per_s", Some(self.hbm_gb_per_s), 1e6),
            ("bf16_dense_tflops", Some(self.bf16_dense_tflops), 1e6),
            ("fp8_dense_tflops", self.fp8_dense_tflops, 1e6),
            ("fp32_tflops", self.fp32_tflops, 1e6),
            ("link_gb_per_s_bidir", self.link_gb_per_s_bidir, 1e6),
            ("tdp_w", self.tdp_w, 1e5),
        ];
        for (field, v, max) in ranged {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0 && v <= max) {
                    return Err(bad(field, v.to_string(), &format!("a number > 0 and <= {max}")));
                }
            }
        }
        if self.link == LinkKind::Nvlink && self.link_gb_per_s_bidir.is_none() {
            return Err(bad("link_gb_per_s_bidir", "missing".into(), "a number > 0 (required when link = \"nvlink\")"));
        }
        Ok(())
    }
}

/// Every preset, in the order of the reference table.
pub fn gpu_presets() -> Result<Vec<GpuSpec>, GpuError> {
    let csv = Csv::parse(SPECS_CSV, SPECS_SOURCE)?;
    let c = |n: &str| csv.col(n, SPECS_SOURCE);
    let (c_name, c_cap, c_bw, c_bf16, c_fp8, c_nvl, c_tdp, c_src) = (
        c("gpu")?,
        c("hbm_gb")?,
        c("hbm_gb_per_s")?,
        c("bf16_dense_tflops")?,
        c("fp8_dense_tflops")?,
        c("nvlink_gb_per_s_bidir")?,
        c("tdp_w")?,
        c("source")?,
    );
    let mut out = Vec::new();
    for (line, f) in &csv.rows {
        let num = |i: usize, field: &str| opt_f64(f[i], SPECS_SOURCE, *line, field);
        let req = |i: usize, field: &str| -> Result<f64, GpuError> {
            num(i, field)?.ok_or_else(|| GpuError::Table {
                source_name: SPECS_SOURCE.into(),
                line: *line,
                message: format!("field `{field}` is empty"),
            })
        };
        let nvlink = num(c_nvl, "nvlink_gb_per_s_bidir")?;
        let spec = GpuSpec {
            name: f[c_name].to_string(),
            hbm_gb: req(c_cap, "hbm_gb")?,
            hbm_gb_per_s: req(c_bw, "hbm_gb_per_s")?,
            bf16_dense_tflops: req(c_bf16, "bf16_dense_tflops")?,
            fp8_dense_tflops: num(c_fp8, "fp8_dense_tflops")?,
            fp32_tflops: None,
            // No NVLink in the table (RTX 4090): GPUs talk over PCIe Gen4 x16.
            link: if nvlink.is_some() { LinkKind::Nvlink } else { LinkKind::PcieGen4 },
            link_gb_per_s_bidir: nvlink,
            tdp_w: num(c_tdp, "tdp_w")?,
            source: f[c_src].to_string(),
        };
        spec.validate(&format!("{SPECS_SOURCE} line {line}"))?;
        out.push(spec);
    }
    Ok(out)
}

/// Names of the presets, in table order.
pub fn gpu_names() -> Vec<String> {
    gpu_presets().map(|v| v.into_iter().map(|s| s.name).collect()).unwrap_or_default()
}

/// The preset called `name`: exact or case-insensitive, or an alias
/// (`A100-80GB` is `A100-80GB-SXM`, `H100` is `H100-SXM`, ...).
pub fn gpu_preset(name: &str) -> Result<GpuSpec, GpuError> {
    let all = gpu_presets()?;
    let want = ALIASES.iter().find(|a| a.0.eq_ignore_ascii_case(name.trim())).map_or(name.trim(), |a| a.1);
    all.iter().find(|s| s.name.eq_ignore_ascii_case(want)).cloned().ok_or_else(|| GpuError::UnknownGpu {
        name: name.into(),
        presets: all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_gpu_is_a_preset_with_its_datasheet_figures() {
        let all = gpu_presets().unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["A100-40GB-SXM", "A100-80GB-SXM", "H100-SXM", "H100-PCIe", "H200-SXM", "B200-HGX", "RTX-4090"]
        );
        let h100 = gpu_preset("H100-SXM").unwrap();
        assert_eq!((h100.hbm_gb, h100.hbm_gb_per_s, h100.bf16_dense_tflops), (80.0, 3350.0, 989.4));
        assert_eq!(h100.link_bytes_per_s(), 450e9);
        assert_eq!(gpu_preset("A100-80GB-SXM").unwrap().fp8_dense_tflops, None);
    }

    #[test]
    fn a_gpu_without_nvlink_talks_over_pcie_gen4() {
        let g = gpu_preset("RTX-4090").unwrap();
        assert_eq!(g.link, LinkKind::PcieGen4);
        // 16 lanes x 16 GT/s x 128/130 / 8 = 31.5 GB/s each way.
        assert!((g.link_bytes_per_s() / 1e9 - 31.51).abs() < 0.01);
    }

    #[test]
    fn aliases_and_case_resolve_and_unknown_names_list_the_presets() {
        assert_eq!(gpu_preset("A100-80GB").unwrap().name, "A100-80GB-SXM");
        assert_eq!(gpu_preset("h100-sxm").unwrap().name, "H100-SXM");
        let e = gpu_preset("V100").unwrap_err().to_string();
        assert!(e.contains("unknown GPU `V100`") && e.contains("H200-SXM"), "{e}");
    }

    #[test]
    fn toml_specs_are_read_and_checked_field_by_field() {
        let ok = "name = \"X\"\nhbm_gb = 96\nhbm_gb_per_s = 4000\nbf16_dense_tflops = 900\nlink = \"nvlink\"\nlink_gb_per_s_bidir = 900\n";
        let s = GpuSpec::from_toml(ok, "x.toml").unwrap();
        assert_eq!(s.hbm_bytes_per_s(), 4e12);
        let neg = ok.replace("hbm_gb_per_s = 4000", "hbm_gb_per_s = -1");
        let e = GpuSpec::from_toml(&neg, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("`hbm_gb_per_s`") && e.contains("> 0"), "{e}");
        let no_link_bw = ok.replace("link_gb_per_s_bidir = 900\n", "");
        let e = GpuSpec::from_toml(&no_link_bw, "x.toml").unwrap_err().to_string();
        assert!(e.contains("link_gb_per_s_bidir"), "{e}");
        let typo = ok.replace("hbm_gb =", "hbm_gbs =");
        assert!(matches!(GpuSpec::from_toml(&typo, "x.toml"), Err(GpuError::Toml { .. })));
        let pcie = ok.replace("link = \"nvlink\"\nlink_gb_per_s_bidir = 900\n", "link = \"pcie-gen5\"\n");
        assert!((GpuSpec::from_toml(&pcie, "x.toml").unwrap().link_bytes_per_s() / 1e9 - 63.02).abs() < 0.01);
    }

    #[test]
    fn compute_peaks_follow_the_activation_dtype() {
        let a100 = gpu_preset("A100-80GB-SXM").unwrap();
        assert_eq!(a100.peak_flops(DType::Bf16).unwrap(), 312e12);
        assert_eq!(a100.peak_flops(DType::Fp8).unwrap(), 312e12, "no fp8 on A100: bf16 math");
        assert_eq!(gpu_preset("H100-SXM").unwrap().peak_flops(DType::Fp8).unwrap(), 1978.9e12);
        assert!(matches!(a100.peak_flops(DType::F32), Err(GpuError::NoComputeFigure { .. })));
    }
}

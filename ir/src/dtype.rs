//! Element types and their storage sizes.
//!
//! Owns: the closed set of dtypes wafer models and the byte arithmetic for
//! packed tensors (int4 packs two elements per byte). Must not: know about ops.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An element type. `I32` exists only for token ids; the others are the
/// numeric formats a user may pick for weights, activations or the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    Bf16,
    F16,
    Fp8,
    Int8,
    Int4,
    I32,
}

impl DType {
    /// The numeric formats a user may choose (everything but the index type).
    pub const NUMERIC: [DType; 6] = [DType::F32, DType::Bf16, DType::F16, DType::Fp8, DType::Int8, DType::Int4];

    /// Storage bits per element.
    pub fn bits(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 32,
            DType::Bf16 | DType::F16 => 16,
            DType::Fp8 | DType::Int8 => 8,
            DType::Int4 => 4,
        }
    }

    /// Bytes needed to store `elems` elements, packed, rounded up to a byte.
    pub fn bytes_for(self, elems: u64) -> u64 {
        elems.saturating_mul(self.bits()).div_ceil(8)
    }

    /// True for formats that may hold activations (values computed at run time).
    /// int4 is a weight-only format: no datapath produces int4 activations.
    pub fn is_activation_legal(self) -> bool {
        !matches!(self, DType::Int4 | DType::I32)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "fp32",
            DType::Bf16 => "bf16",
            DType::F16 => "fp16",
            DType::Fp8 => "fp8",
            DType::Int8 => "int8",
            DType::Int4 => "int4",
            DType::I32 => "i32",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a dtype name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype `{0}` (expected one of fp32, bf16, fp16, fp8, int8, int4)")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => DType::F32,
            "bf16" | "bfloat16" => DType::Bf16,
            "fp16" | "f16" | "float16" | "half" => DType::F16,
            "fp8" | "f8" | "e4m3" => DType::Fp8,
            "int8" | "i8" => DType::Int8,
            "int4" | "i4" => DType::Int4,
            "i32" | "int32" => DType::I32,
            _ => return Err(UnknownDType(s.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_packs_two_per_byte_and_rounds_up() {
        assert_eq!(DType::Int4.bytes_for(4096), 2048);
        assert_eq!(DType::Int4.bytes_for(3), 2);
        assert_eq!(DType::Bf16.bytes_for(3), 6);
    }

    #[test]
    fn names_round_trip() {
        for d in DType::NUMERIC {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert!("int3".parse::<DType>().is_err());
    }
}

//! The format table: where each GGUF block format keeps its scale, minimum, high bits and codes, and how
//! its codes become the integers the kernels dot with the activations. Adding a 32-element format is one
//! row in each `match` here plus its unpacking in `scalar`, `x86`, `neon`, `interleave` and the group kernels
//! (`x86_group`, `x86_group_avx2`); the K-quants (256-element super-blocks) have their own kernels in
//! `kquant`, `x86_kquant`, `x86_kquant_avx2` and `neon_kquant`.
//!
//! Layouts (ggml's, little-endian; `d`, `m` are f16): Q4_0 `d, qs[16]`; Q4_1 `d, m, qs[16]`;
//! Q5_0 `d, qh[4], qs[16]`; Q5_1 `d, m, qh[4], qs[16]`; Q8_0 `d, qs[32]` (i8); IQ4_NL `d, qs[16]`.
//! Nibble formats keep element j in the low nibble of `qs[j]` and element j + 16 in its high nibble; the
//! 5-bit formats add bit j of `qh` as bit 4 of element j.

use edgeforge_core::GgmlType;

/// Elements per block.
pub(crate) const BLOCK: usize = 32;

/// A weight format with a native integer kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum BlockFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    IQ4_NL,
    /// K-quant super-blocks of 256 (`kquant`).
    Q4_K,
    Q6_K,
    /// IEEE halves, one per element (multiplied in f32 by `f16`, not by the integer kernels).
    F16,
    /// bfloat16 (the upper half of an f32), one per element (multiplied in f32 by `f16` as F16 is).
    BF16,
}

/// What the per-block term added beside the integer dot product is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Offset {
    /// Codes are signed already: no term.
    None,
    /// Unsigned codes stored `k` above the value: `−k · d · Σx`.
    Const(f32),
    /// A stored minimum `m` (value = d·q + m): `m · Σx`, with Σx rounded as llama.cpp's `q8_1` rounds it.
    Min,
}

impl BlockFormat {
    /// The formats of the integer kernels (every one but the K-quants, F16 and BF16).
    pub const ALL: [BlockFormat; 6] = [Self::Q4_0, Self::Q4_1, Self::Q5_0, Self::Q5_1, Self::Q8_0, Self::IQ4_NL];

    /// The K-quant formats (their own activation blocks and kernels, `kquant`).
    pub const K: [BlockFormat; 2] = [Self::Q4_K, Self::Q6_K];

    /// The 16-bit float formats (one element per block, `f16`'s kernels).
    pub const HALVES: [BlockFormat; 2] = [Self::F16, Self::BF16];

    /// Elements per block: 32, 256 for the K-quants, or 1 for F16 and BF16.
    pub const fn block_elems(self) -> usize {
        match self {
            Self::F16 | Self::BF16 => 1,
            Self::Q4_K | Self::Q6_K => super::kquant::QK,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::IQ4_NL => BLOCK,
        }
    }

    /// Whether this is a K-quant format.
    pub const fn is_k(self) -> bool {
        matches!(self, Self::Q4_K | Self::Q6_K)
    }

    pub fn of(ty: GgmlType) -> Option<Self> {
        Some(match ty {
            GgmlType::Q4_0 => Self::Q4_0,
            GgmlType::Q4_1 => Self::Q4_1,
            GgmlType::Q5_0 => Self::Q5_0,
            GgmlType::Q5_1 => Self::Q5_1,
            GgmlType::Q8_0 => Self::Q8_0,
            GgmlType::IQ4_NL => Self::IQ4_NL,
            GgmlType::Q4_K => Self::Q4_K,
            GgmlType::Q6_K => Self::Q6_K,
            GgmlType::F16 => Self::F16,
            GgmlType::BF16 => Self::BF16,
            _ => return None,
        })
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
            Self::Q5_0 => GgmlType::Q5_0,
            Self::Q5_1 => GgmlType::Q5_1,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::IQ4_NL => GgmlType::IQ4_NL,
            Self::Q4_K => GgmlType::Q4_K,
            Self::Q6_K => GgmlType::Q6_K,
            Self::F16 => GgmlType::F16,
            Self::BF16 => GgmlType::BF16,
        }
    }

    /// Bytes per block (as `GgmlType::block_bytes`; kept here so the hot loops inline it).
    #[inline]
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 | Self::IQ4_NL => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4_K => 144,
            Self::Q6_K => 210,
            Self::F16 | Self::BF16 => 2,
        }
    }

    /// Byte offset of the codes in a block.
    pub(crate) fn qs_at(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q8_0 | Self::IQ4_NL => 2,
            // (The K-quants' codes are not one run: `kquant` reads them.)
            Self::F16 | Self::BF16 | Self::Q4_K | Self::Q6_K => 0,
            Self::Q4_1 => 4,
            Self::Q5_0 => 6,
            Self::Q5_1 => 8,
        }
    }

    /// Byte offset of the 32 high bits of the 5-bit formats.
    pub(crate) fn qh_at(self) -> Option<usize> {
        match self {
            Self::Q5_0 => Some(2),
            Self::Q5_1 => Some(4),
            _ => None,
        }
    }

    pub(crate) fn offset(self) -> Offset {
        match self {
            Self::Q4_0 => Offset::Const(8.0),
            Self::Q5_0 => Offset::Const(16.0),
            Self::Q4_1 | Self::Q5_1 => Offset::Min,
            Self::Q8_0 | Self::IQ4_NL | Self::F16 | Self::BF16 | Self::Q4_K | Self::Q6_K => Offset::None,
        }
    }
}

/// An IEEE half from the two bytes at `b[at..]`.
#[inline(always)]
pub(crate) fn half_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `$kernel!(index)` for the format's index in `BlockFormat::ALL` (the SIMD row kernels' const parameter, `x86`
/// and `neon`; F16, BF16 and K-quant rows never reach those kernels: `RowDot::new` refuses them).
macro_rules! with_format {
    ($format:expr, $kernel:ident) => {{
        use $crate::kernels::blocks::BlockFormat as F;
        match $format {
            F::Q4_0 => $kernel!(0),
            F::Q4_1 => $kernel!(1),
            F::Q5_0 => $kernel!(2),
            F::Q5_1 => $kernel!(3),
            F::Q8_0 => $kernel!(4),
            F::IQ4_NL => $kernel!(5),
            F::F16 | F::BF16 | F::Q4_K | F::Q6_K => {}
        }
    }};
}

#[allow(unused_imports)] // Used by the SIMD kernels only (none on other targets).
pub(crate) use with_format;

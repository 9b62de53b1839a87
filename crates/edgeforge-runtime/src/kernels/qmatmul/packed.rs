//! Packed integer weights as the kernels read them: INT4 or INT8 codes, one f32 scale (and, when
//! asymmetric, one u8 zero point) per group, as in `edgeforge_core::QuantTensor`, re-laid once at load time
//! so the inner loops need no per-element bookkeeping:
//! - each row has its own bytes (`row_bytes`), starting at a byte boundary;
//! - 4-bit codes are stored in blocks of 32 elements, 16 bytes each: byte j of a block holds element j in
//!   its low nibble and element j + 16 in its high nibble (the core's order is element 2j low, 2j + 1
//!   high). Zero-extending the 16 bytes to 32-bit lanes then gives elements 0..16 with one AND and elements
//!   16..32 with one shift, already in order: no byte shuffles in the hot loop. Rows are padded with zero
//!   codes to whole blocks (none for SmolLM2's rows of 576 and 1536);
//! - scales are widened from f16 to f32 (exact), so no conversion happens per group.

use std::cell::RefCell;

use edgeforge_core::quantized::QuantTensor;
use rayon::prelude::*;

use super::interleave::{self, Interleaved};
use crate::error::RuntimeError;
use crate::kernels::blocks::Rounding;

/// Elements per 4-bit block.
pub(crate) const BLOCK: usize = 32;

/// Byte index within a row and nibble shift (0 or 4) of 4-bit element `i`.
#[inline(always)]
pub(crate) fn nibble_at(i: usize) -> (usize, u32) {
    let j = i % BLOCK;
    ((i / BLOCK) * (BLOCK / 2) + j % (BLOCK / 2), 4 * (j / (BLOCK / 2)) as u32)
}

/// Code width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    /// Two codes per byte, in blocks of 32 elements (see the module comment).
    Four,
    /// One code per byte.
    Eight,
}

impl Bits {
    fn of(bits: u8) -> Option<Self> {
        match bits {
            4 => Some(Self::Four),
            8 => Some(Self::Eight),
            _ => None,
        }
    }

    pub fn count(self) -> u8 {
        match self {
            Self::Four => 4,
            Self::Eight => 8,
        }
    }

    /// Bytes of the core's packing of `elems` codes (`QuantTensor::codes`).
    fn core_bytes(self, elems: usize) -> usize {
        match self {
            Self::Four => elems.div_ceil(2),
            Self::Eight => elems,
        }
    }

    /// Bytes of one packed row of `len` codes (4-bit rows padded to whole blocks of 32).
    pub(crate) fn row_bytes(self, len: usize) -> usize {
        match self {
            Self::Four => len.div_ceil(BLOCK) * (BLOCK / 2),
            Self::Eight => len,
        }
    }

    /// Mid-range code: the zero point of symmetric formats.
    fn symmetric_zero(self) -> u8 {
        match self {
            Self::Four => 8,
            Self::Eight => 128,
        }
    }
}

/// A `[out_dim, in_dim]` linear weight kept as integer codes. Fields are private: construction checks
/// every length once, and the kernels rely on those invariants (see `Row`).
#[derive(Debug, Clone)]
pub struct PackedLinear {
    bits: Bits,
    group_size: usize,
    symmetric: bool,
    out_dim: usize,
    in_dim: usize,
    groups_per_row: usize,
    row_bytes: usize,
    /// `out_dim × row_bytes`.
    codes: Vec<u8>,
    /// `out_dim × groups_per_row`.
    scales: Vec<f32>,
    /// `out_dim × groups_per_row` when asymmetric, empty when symmetric.
    zeros: Vec<u8>,
    /// How products round their activations (`set_rounding`).
    rounding: Rounding,
    /// The codes interleaved for the integer path (then `codes` is empty), made by `set_rounding`.
    interleaved: Option<Interleaved>,
}

thread_local! {
    /// A row's codes put back in the row-major layout when the weight is interleaved (grows, is reused).
    static ROW_CODES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Zero points of one row.
#[derive(Clone, Copy)]
pub(crate) enum Zeros<'a> {
    Symmetric(u8),
    PerGroup(&'a [u8]),
}

impl Zeros<'_> {
    #[inline]
    pub(crate) fn get(self, group: usize) -> u8 {
        match self {
            Zeros::Symmetric(z) => z,
            Zeros::PerGroup(z) => z[group],
        }
    }
}

/// One output row: the unit of work of every kernel. `PackedLinear::row` makes rows whose lengths agree
/// (`is_well_formed`, which the SIMD kernels' memory safety rests on, is re-checked by the dispatcher);
/// 4-bit zero points below 16 (the SIMD kernels subtract them in bytes) were checked when packing.
#[derive(Clone, Copy)]
pub(crate) struct Row<'a> {
    pub bits: Bits,
    pub group_size: usize,
    pub len: usize,
    pub codes: &'a [u8],
    pub scales: &'a [f32],
    pub zeros: Zeros<'a>,
}

impl Row<'_> {
    /// Code bytes, scales and zero points agree with the row length and group size (O(1)).
    #[inline]
    pub(crate) fn is_well_formed(&self) -> bool {
        let groups = self.len.div_ceil(self.group_size.max(1));
        let zeros_ok = match self.zeros {
            Zeros::Symmetric(_) => true,
            Zeros::PerGroup(z) => z.len() == groups,
        };
        self.group_size >= 1 && self.codes.len() == self.bits.row_bytes(self.len) && self.scales.len() == groups && zeros_ok
    }

    /// Code of element `i` of the row.
    #[inline]
    pub(crate) fn code(&self, i: usize) -> u8 {
        match self.bits {
            Bits::Eight => self.codes[i],
            Bits::Four => {
                let (byte, shift) = nibble_at(i);
                (self.codes[byte] >> shift) & 0x0F
            }
        }
    }

    /// Write the row's float values (`len` of them) into `out`, with exactly the operations of
    /// `QuantTensor::dequantize` (`scale · (code − zero)` in f32, no fused multiply-add), so the float
    /// path and the packed path see bit-identical weights.
    pub(crate) fn dequantize_into(&self, out: &mut [f32]) {
        let gs = self.group_size.max(1);
        for (g, (chunk, &scale)) in out[..self.len].chunks_mut(gs).zip(self.scales).enumerate() {
            let zero = f32::from(self.zeros.get(g));
            let start = g * gs;
            match self.bits {
                Bits::Eight => {
                    for (o, &c) in chunk.iter_mut().zip(&self.codes[start..]) {
                        *o = scale * (f32::from(c) - zero);
                    }
                }
                Bits::Four => {
                    for (j, o) in chunk.iter_mut().enumerate() {
                        *o = scale * (f32::from(self.code(start + j)) - zero);
                    }
                }
            }
        }
    }
}

fn bad(tensor: &str, why: &'static str) -> RuntimeError {
    RuntimeError::PackedWeight { tensor: tensor.to_owned(), why }
}

impl PackedLinear {
    /// Pack `q`, which must hold an `[out_dim, in_dim]` matrix, checking every length (bad data is an
    /// error, never a panic or an out-of-bounds read later).
    pub fn from_quant(tensor: &str, q: &QuantTensor, out_dim: usize, in_dim: usize) -> Result<Self, RuntimeError> {
        let f = q.format;
        let bits = Bits::of(f.bits).ok_or_else(|| bad(tensor, "bits must be 4 or 8"))?;
        if f.group_size == 0 {
            return Err(bad(tensor, "group size is 0"));
        }
        if in_dim == 0 || out_dim == 0 {
            return Err(bad(tensor, "empty matrix"));
        }
        if q.row_len != in_dim {
            return Err(bad(tensor, "row length differs from the input width"));
        }
        let groups_per_row = in_dim.div_ceil(f.group_size);
        let n_groups = out_dim.checked_mul(groups_per_row).ok_or_else(|| bad(tensor, "size overflows"))?;
        let n_elems = out_dim.checked_mul(in_dim).ok_or_else(|| bad(tensor, "size overflows"))?;
        if q.scales.len() != n_groups {
            return Err(bad(tensor, "number of scales differs from rows × groups per row"));
        }
        let zeros = if f.symmetric {
            if !q.zeros.is_empty() {
                return Err(bad(tensor, "symmetric format carries zero points"));
            }
            Vec::new()
        } else {
            if q.zeros.len() != n_groups {
                return Err(bad(tensor, "number of zero points differs from rows × groups per row"));
            }
            if bits == Bits::Four && q.zeros.iter().any(|&z| z > 15) {
                return Err(bad(tensor, "4-bit zero point above 15"));
            }
            q.zeros.clone()
        };
        if q.codes.len() != bits.core_bytes(n_elems) {
            return Err(bad(tensor, "code bytes differ from the element count"));
        }
        let row_bytes = bits.row_bytes(in_dim);
        let codes = match bits {
            Bits::Eight => q.codes.clone(),
            Bits::Four => {
                let mut out = vec![0u8; out_dim.checked_mul(row_bytes).ok_or_else(|| bad(tensor, "size overflows"))?];
                out.par_chunks_mut(row_bytes).enumerate().for_each(|(r, dst)| {
                    for j in 0..in_dim {
                        let i = r * in_dim + j; // element index in the core's order: 2k low nibble, 2k+1 high
                        let code = (q.codes[i / 2] >> (4 * (i % 2))) & 0x0F;
                        let (byte, shift) = nibble_at(j);
                        dst[byte] |= code << shift;
                    }
                });
                out
            }
        };
        let scales = q.scales.iter().map(|s| s.to_f32()).collect();
        Ok(Self { bits, group_size: f.group_size, symmetric: f.symmetric, out_dim, in_dim, groups_per_row, row_bytes, codes, scales, zeros, rounding: Rounding::Exact, interleaved: None })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn bits(&self) -> Bits {
        self.bits
    }

    pub fn group_size(&self) -> usize {
        self.group_size
    }

    pub fn symmetric(&self) -> bool {
        self.symmetric
    }

    /// Bytes held in memory (codes, f32 scales, zero points, and their interleaved copies).
    pub fn resident_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 4 + self.zeros.len() + self.interleaved.as_ref().map_or(0, Interleaved::resident_bytes)
    }

    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// Choose how products round their activations. Any rounding but `Exact` interleaves the codes for the
    /// integer path when the shape allows (`interleave::eligible`), in place of the row-major codes (no second
    /// copy); `Exact` puts them back. Values of the exact path are the same either way.
    pub fn set_rounding(&mut self, rounding: Rounding) {
        self.rounding = rounding;
        let want = rounding != Rounding::Exact && interleave::eligible(self.in_dim, self.group_size);
        if want && self.interleaved.is_none() {
            if let Some(il) = Interleaved::new(self.bits, self.out_dim, self.in_dim, self.group_size, |r| self.row_major(r, &self.codes)) {
                self.interleaved = Some(il);
                self.codes = Vec::new();
            }
        } else if !want {
            if let Some(il) = self.interleaved.take() {
                let mut codes = vec![0u8; self.out_dim * self.row_bytes];
                for (r, dst) in codes.chunks_exact_mut(self.row_bytes).enumerate() {
                    il.unpack_codes(self.bits, r, dst);
                }
                self.codes = codes;
            }
        }
    }

    /// The interleaved codes, when the weight takes the integer path.
    pub(crate) fn interleaved(&self) -> Option<&Interleaved> {
        self.interleaved.as_ref()
    }

    /// Row `r` (< out_dim) of a weight in the row-major layout (tests).
    #[cfg(test)]
    pub(crate) fn row(&self, r: usize) -> Row<'_> {
        self.row_major(r, &self.codes)
    }

    /// Row `r` with its codes from `codes` (`out_dim × row_bytes` row-major bytes, or this row's alone).
    #[inline]
    fn row_major<'a>(&'a self, r: usize, codes: &'a [u8]) -> Row<'a> {
        let gpr = self.groups_per_row;
        let rb = self.row_bytes;
        let codes = if codes.len() == rb { codes } else { &codes[r * rb..(r + 1) * rb] };
        Row {
            bits: self.bits,
            group_size: self.group_size,
            len: self.in_dim,
            codes,
            scales: &self.scales[r * gpr..(r + 1) * gpr],
            zeros: if self.symmetric { Zeros::Symmetric(self.bits.symmetric_zero()) } else { Zeros::PerGroup(&self.zeros[r * gpr..(r + 1) * gpr]) },
        }
    }

    /// Row `r` (< out_dim) in either layout: an interleaved row's codes are put back into `buf`.
    #[inline]
    pub(crate) fn row_in<'a>(&'a self, r: usize, buf: &'a mut Vec<u8>) -> Row<'a> {
        match &self.interleaved {
            None => self.row_major(r, &self.codes),
            Some(il) => {
                buf.resize(self.row_bytes, 0);
                il.unpack_codes(self.bits, r, buf);
                self.row_major(r, buf)
            }
        }
    }

    /// Float values of rows `r0..r0 + out.len() / in_dim` into `out` (row-major), bit-identical to
    /// `QuantTensor::dequantize`. Returns `false` when the rows run past the matrix or `out` is not a
    /// whole number of rows.
    #[must_use]
    pub fn dequantize_rows(&self, r0: usize, out: &mut [f32]) -> bool {
        self.dequantize_rows_with(super::Kernel::best(), r0, out)
    }

    #[must_use]
    pub(crate) fn dequantize_rows_with(&self, kernel: super::Kernel, r0: usize, out: &mut [f32]) -> bool {
        if !out.len().is_multiple_of(self.in_dim) || r0.checked_add(out.len() / self.in_dim).is_none_or(|end| end > self.out_dim) {
            return false;
        }
        ROW_CODES.with_borrow_mut(|buf| out.chunks_exact_mut(self.in_dim).enumerate().all(|(i, dst)| kernel.dequant_row(self.row_in(r0 + i, buf), dst)))
    }
}

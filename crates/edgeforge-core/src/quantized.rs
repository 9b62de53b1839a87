//! Integer weights with per-group f16 scales (and zero points when asymmetric): what quantization passes
//! produce and what checkpoints, reports and exporters carry. Value of element i of group g:
//! `scale[g] · (u_i − zero[g])`, with `u` unsigned in [0, 2^bits) and `zero = 2^(bits−1)` when symmetric.

use half::f16;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantFormat {
    pub bits: u8,
    /// Elements per scale along a row (the row length for per-channel).
    pub group_size: usize,
    pub symmetric: bool,
}

impl QuantFormat {
    pub fn levels(self) -> u32 {
        1u32 << self.bits
    }

    /// Groups in one row of `row_len`: the last one is partial when the group size does not divide the row
    /// (SmolLM2's rows of 576 in groups of 128 end with a group of 64).
    pub fn groups_per_row(self, row_len: usize) -> usize {
        row_len.div_ceil(self.group_size.max(1))
    }

    /// `int4-g64-sym`, `int8-per-channel-sym`, ... (for reports).
    pub fn label(self, row_len: usize) -> String {
        let group = if self.group_size >= row_len { "per-channel".to_owned() } else { format!("g{}", self.group_size) };
        format!("int{}-{}-{}", self.bits, group, if self.symmetric { "sym" } else { "asym" })
    }
}

#[derive(Debug, Clone)]
pub struct QuantTensor {
    pub format: QuantFormat,
    /// Elements per row; groups never straddle rows.
    pub row_len: usize,
    /// One per group, row by row.
    pub scales: Vec<f16>,
    /// One per group when asymmetric; empty when symmetric.
    pub zeros: Vec<u8>,
    /// Unsigned codes: one byte each for 8 bits; two per byte for 4 bits (element 2j low nibble, 2j+1 high).
    pub codes: Vec<u8>,
}

impl QuantTensor {
    pub fn storage_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 2 + self.zeros.len()
    }

    pub fn code(&self, i: usize) -> u8 {
        match self.format.bits {
            8 => self.codes[i],
            _ => {
                let b = self.codes[i / 2];
                if i.is_multiple_of(2) {
                    b & 0x0F
                } else {
                    b >> 4
                }
            }
        }
    }

    /// The group element `i` (row-major) belongs to.
    pub fn group_of(&self, i: usize) -> usize {
        let row_len = self.row_len.max(1);
        (i / row_len) * self.format.groups_per_row(row_len) + (i % row_len) / self.format.group_size.max(1)
    }

    pub fn zero(&self, group: usize) -> f32 {
        if self.format.symmetric {
            (self.format.levels() / 2) as f32
        } else {
            f32::from(self.zeros[group])
        }
    }

    pub fn dequantize(&self, n_elems: usize) -> Vec<f32> {
        (0..n_elems)
            .map(|i| {
                let group = self.group_of(i);
                self.scales[group].to_f32() * (f32::from(self.code(i)) - self.zero(group))
            })
            .collect()
    }

    /// Lengths agree with `n_elems` (checked when reading checkpoints).
    pub fn is_consistent(&self, n_elems: usize) -> bool {
        let f = self.format;
        let rows = n_elems.checked_div(self.row_len).unwrap_or(0);
        let groups = rows * f.groups_per_row(self.row_len);
        (f.bits == 4 || f.bits == 8)
            && f.group_size > 0
            && self.row_len > 0
            && n_elems.is_multiple_of(self.row_len)
            && self.scales.len() == groups
            && self.zeros.len() == if f.symmetric { 0 } else { groups }
            && self.codes.len() == n_elems * f.bits as usize / 8
    }
}

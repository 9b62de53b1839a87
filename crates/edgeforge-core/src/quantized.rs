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

    /// The GGUF block type that holds this grid exactly on rows of `row_len`, if any: symmetric 8-bit in
    /// groups of 32k is Q8_0 and symmetric 4-bit is Q4_0 (the f16 scale repeats per 32-block); asymmetric
    /// 4-bit is Q4_1 with the offset −scale·zero rounded to f16 (near-exact). Everything else has none.
    /// The GGUF writer and the fit check both consult this; block schemes (`scheme.rs`) carry their type.
    pub fn ggml_type(self, row_len: usize) -> Option<crate::GgmlType> {
        let whole_blocks = self.group_size.is_multiple_of(32) && row_len.is_multiple_of(32);
        match (self.bits, self.symmetric, whole_blocks) {
            (8, true, true) => Some(crate::GgmlType::Q8_0),
            (4, true, true) => Some(crate::GgmlType::Q4_0),
            (4, false, true) => Some(crate::GgmlType::Q4_1),
            _ => None,
        }
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
    /// Unsigned codes as a little-endian bit stream, `bits` per element: one byte each for 8 bits, two per
    /// byte for 4 (element 2j in the low nibble), 3 bits each (straddling bytes) for 3.
    pub codes: Vec<u8>,
}

impl QuantTensor {
    pub fn storage_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 2 + self.zeros.len()
    }

    pub fn code(&self, i: usize) -> u8 {
        match self.format.bits {
            8 => self.codes[i],
            bits => {
                let bit = i * bits as usize;
                let (byte, shift) = (bit / 8, bit % 8);
                let lo = u16::from(self.codes[byte]);
                let hi = self.codes.get(byte + 1).map_or(0, |&b| u16::from(b));
                (((hi << 8 | lo) >> shift) & ((1u16 << bits) - 1)) as u8
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
        matches!(f.bits, 3 | 4 | 8)
            && f.group_size > 0
            && self.row_len > 0
            && n_elems.is_multiple_of(self.row_len)
            && self.scales.len() == groups
            && self.zeros.len() == if f.symmetric { 0 } else { groups }
            && self.codes.len() == packed_len(n_elems, f.bits)
    }
}

/// Bytes holding `n_elems` codes of `bits` each.
pub fn packed_len(n_elems: usize, bits: u8) -> usize {
    (n_elems * bits as usize).div_ceil(8)
}

/// Packs unsigned codes (each below 2^bits) into the little-endian bit stream `QuantTensor::codes` holds.
pub fn pack_codes(codes: &[u8], bits: u8) -> Vec<u8> {
    if bits == 8 {
        return codes.to_vec();
    }
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    let mask = (1u16 << bits) - 1;
    for (i, &c) in codes.iter().enumerate() {
        let bit = i * bits as usize;
        let (byte, shift) = (bit / 8, bit % 8);
        let v = (u16::from(c) & mask) << shift;
        out[byte] |= v as u8;
        if shift + bits as usize > 8 {
            out[byte + 1] |= (v >> 8) as u8;
        }
    }
    out
}

#[cfg(test)]
mod packing_tests {
    use super::*;

    #[test]
    fn packed_codes_read_back_for_every_width() {
        for bits in [3u8, 4, 8] {
            let n = 77;
            let codes: Vec<u8> = (0..n).map(|i| ((i * 7 + 3) % (1 << bits)) as u8).collect();
            let packed = pack_codes(&codes, bits);
            assert_eq!(packed.len(), packed_len(n, bits));
            let format = QuantFormat { bits, group_size: 7, symmetric: true };
            let q = QuantTensor { format, row_len: 7, scales: vec![half::f16::ONE; 11], zeros: vec![], codes: packed };
            assert!(q.is_consistent(n));
            assert_eq!((0..n).map(|i| q.code(i)).collect::<Vec<_>>(), codes, "{bits} bits");
        }
        // 4-bit packing is the nibble layout exporters rely on.
        assert_eq!(pack_codes(&[1, 2, 3, 4], 4), vec![0x21, 0x43]);
    }
}

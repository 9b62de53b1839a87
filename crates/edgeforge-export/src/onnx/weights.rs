//! Our linear weights as ONNX initializers: integer codes with per-group scales become the inputs of
//! `com.microsoft.MatMulNBits` (B `[N, k_blocks, blob]`, scales `[N, k_blocks]`, packed zero points), anything
//! else becomes an f32 `[K, N]` matrix for a standard `MatMul`.
//!
//! MatMulNBits layout (ORT `ContribOperators.md`, packing checked on ORT 1.32): blocks run along K, each block
//! is `block_size · bits / 8` bytes, codes packed from the low bits up (4-bit: element 2j in the low nibble,
//! the same order as our code stream); zero points default to 2^(bits−1), our symmetric offset, and when given
//! are packed across blocks the same way. A last partial block is padded with the block's zero point.

use edgeforge_core::dtype::GgmlType;
use edgeforge_core::quantized::QuantTensor;
use edgeforge_core::{Tensor, TensorData};

use crate::error::{ExportError, Result};

/// The three inputs of one MatMulNBits node, plus its attributes.
pub struct NBitsWeight {
    pub bits: u8,
    pub block_size: usize,
    /// Output features (rows of our `[N, K]` weight).
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// `[N, k_blocks, block_size·bits/8]`.
    pub packed: Vec<u8>,
    /// `[N, k_blocks]`.
    pub scales: Vec<f32>,
    /// Only for asymmetric formats.
    pub zero_points: Option<ZeroPoints>,
}

/// MatMulNBits takes zero points either as codes or in A's float type.
pub enum ZeroPoints {
    /// `[N, ceil(k_blocks·bits/8)]`, packed like the codes (our asymmetric formats).
    Packed(Vec<u8>),
    /// `[N, k_blocks]` f32 (GGUF Q4_1's offset m as −m/d; GatherBlockQuantized cannot read these).
    Float(Vec<f32>),
}

impl NBitsWeight {
    pub fn k_blocks(&self) -> usize {
        self.k.div_ceil(self.block_size)
    }
}

/// How one linear weight goes into the graph.
pub enum LinearWeight {
    NBits(NBitsWeight),
    /// `[K, N]` row-major (our `[N, K]` transposed), for `MatMul(x, W)`; `why` says why it is not integer
    /// when the source was quantized.
    Float { k_by_n: Vec<f32>, n: usize, k: usize, why: Option<String> },
}

/// The MatMulNBits block size for `q`, or why there is none: group sizes that are powers of two ≥ 16 map
/// one to one; a per-channel format (one scale per row) maps to the largest such power of two dividing the
/// row, with the scale repeated per block.
fn block_size_for(q: &QuantTensor, k: usize) -> std::result::Result<usize, String> {
    let group = q.format.group_size;
    if group < k {
        if group >= 16 && group.is_power_of_two() {
            Ok(group)
        } else {
            Err(format!("group size {group} is not a power of two ≥ 16 (MatMulNBits block sizes)"))
        }
    } else {
        let largest = 1usize << k.trailing_zeros().min(usize::BITS - 1);
        if largest >= 16 {
            Ok(largest)
        } else {
            Err(format!("per-channel rows of {k} have no power-of-two block ≥ 16 dividing them"))
        }
    }
}

/// Pack `values` (each below 2^bits) from the low bits up, `bits` ∈ {4, 8}.
fn pack(values: impl Iterator<Item = u8>, bits: u8, out: &mut Vec<u8>) {
    if bits == 8 {
        out.extend(values);
        return;
    }
    let mut pending: Option<u8> = None;
    for v in values {
        match pending.take() {
            None => pending = Some(v & 0x0f),
            Some(lo) => out.push(lo | (v & 0x0f) << 4),
        }
    }
    if let Some(lo) = pending {
        out.push(lo);
    }
}

fn nbits(name: &str, q: &QuantTensor, n: usize, k: usize) -> Result<std::result::Result<NBitsWeight, String>> {
    if !matches!(q.format.bits, 4 | 8) {
        return Ok(Err(format!("{}-bit codes (MatMulNBits is written for 4 and 8 bits)", q.format.bits)));
    }
    if !q.is_consistent(n * k) || q.row_len != k {
        return Err(ExportError::Unsupported { what: format!("{name}: quantized data does not match its shape [{n}, {k}]") });
    }
    let block_size = match block_size_for(q, k) {
        Ok(b) => b,
        Err(why) => return Ok(Err(why)),
    };
    let bits = q.format.bits;
    let k_blocks = k.div_ceil(block_size);
    let groups_per_row = q.format.groups_per_row(k);
    let mut packed = Vec::with_capacity(n * k_blocks * block_size * usize::from(bits) / 8);
    let mut scales = Vec::with_capacity(n * k_blocks);
    let mut zeros = Vec::with_capacity(n * k_blocks);
    for row in 0..n {
        for b in 0..k_blocks {
            // Our group holding this block: the same index, or the row's one group when per-channel.
            let group = row * groups_per_row + (b * block_size) / q.format.group_size.max(1);
            let zero = q.zero(group) as u8;
            scales.push(q.scales[group].to_f32());
            zeros.push(zero);
            let start = b * block_size;
            let codes = (start..start + block_size).map(|c| if c < k { q.code(row * k + c) } else { zero });
            pack(codes, bits, &mut packed);
        }
    }
    let zero_points = if q.format.symmetric {
        None
    } else {
        let mut z = Vec::with_capacity(n * k_blocks);
        for row in zeros.chunks_exact(k_blocks) {
            pack(row.iter().copied(), bits, &mut z);
        }
        Some(ZeroPoints::Packed(z))
    };
    Ok(Ok(NBitsWeight { bits, block_size, n, k, packed, scales, zero_points }))
}

/// GGUF's 32-element blocks as MatMulNBits blocks of 32 (ggml `ggml-common.h` layouts): Q4_0 `d, qs[16]`
/// with x = d·(q − 8), Q4_1 `d, m, qs[16]` with x = d·q + m, both holding elements j and j+16 in the low and
/// high nibble of byte j (reordered here to 2j / 2j+1); Q8_0 `d, qs[32]` signed, x = d·q (code q + 128).
fn ggml_nbits(dtype: GgmlType, bytes: &[u8], n: usize, k: usize) -> std::result::Result<NBitsWeight, String> {
    const BLOCK: usize = 32;
    let block_bytes = match dtype {
        GgmlType::Q4_0 => 18,
        GgmlType::Q4_1 => 20,
        GgmlType::Q8_0 => 34,
        other => return Err(format!("no MatMulNBits mapping for {}", other.name())),
    };
    let k_blocks = k / BLOCK;
    if !k.is_multiple_of(BLOCK) || bytes.len() != n * k_blocks * block_bytes {
        return Err(format!("{} bytes do not hold [{n}, {k}] in blocks of {BLOCK}", bytes.len()));
    }
    let f16_at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let bits = if dtype == GgmlType::Q8_0 { 8 } else { 4 };
    let mut packed = Vec::with_capacity(n * k_blocks * BLOCK * usize::from(bits) / 8);
    let mut scales = Vec::with_capacity(n * k_blocks);
    let mut float_zeros = Vec::new();
    for block in bytes.chunks_exact(block_bytes) {
        let d = f16_at(block, 0);
        scales.push(d);
        let qs = match dtype {
            GgmlType::Q8_0 => {
                packed.extend(block[2..].iter().map(|&q| (i16::from(q as i8) + 128) as u8));
                continue;
            }
            GgmlType::Q4_1 => {
                let m = f16_at(block, 2);
                if d == 0.0 && m != 0.0 {
                    return Err("a block with scale 0 and a non-zero offset has no zero point".to_owned());
                }
                float_zeros.push(if d == 0.0 { 0.0 } else { -m / d });
                &block[4..]
            }
            _ => &block[2..],
        };
        let code = |j: usize| if j < 16 { qs[j] & 0x0f } else { qs[j - 16] >> 4 };
        pack((0..BLOCK).map(code), 4, &mut packed);
    }
    let zero_points = (dtype == GgmlType::Q4_1).then_some(ZeroPoints::Float(float_zeros));
    Ok(NBitsWeight { bits, block_size: BLOCK, n, k, packed, scales, zero_points })
}

/// Our `[N, K]` linear weight `t` as MatMulNBits inputs when its format maps, else as f32 `[K, N]`.
pub fn linear_weight(name: &str, t: &Tensor) -> Result<LinearWeight> {
    let (n, k) = match t.shape.as_slice() {
        &[n, k] => (n, k),
        other => return Err(ExportError::Unsupported { what: format!("{name}: expected a matrix, got shape {other:?}") }),
    };
    let why = match &t.data {
        TensorData::Quantized(q) => match nbits(name, q, n, k)? {
            Ok(w) => return Ok(LinearWeight::NBits(w)),
            Err(why) => Some(format!("{name} ({}): {why}", t.format_name())),
        },
        TensorData::Blocks { dtype, bytes } if matches!(dtype, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) => match ggml_nbits(*dtype, bytes, n, k) {
            Ok(w) => return Ok(LinearWeight::NBits(w)),
            Err(why) => Some(format!("{name} ({}): {why}", t.format_name())),
        },
        _ if !t.is_float() => Some(format!("{name} ({}): no MatMulNBits mapping for this block format yet", t.format_name())),
        _ => None,
    };
    let w = t.to_f32(name)?;
    Ok(LinearWeight::Float { k_by_n: transpose(&w, n, k), n, k, why })
}

/// `[rows, cols]` → `[cols, rows]`.
pub fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for (r, row) in w.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use edgeforge_core::quantized::{pack_codes, QuantFormat};
    use half::f16;

    fn quant(bits: u8, group_size: usize, symmetric: bool, n: usize, k: usize) -> QuantTensor {
        let codes: Vec<u8> = (0..n * k).map(|i| ((i * 5 + 1) % (1 << bits)) as u8).collect();
        let groups = n * k.div_ceil(group_size);
        QuantTensor {
            format: QuantFormat { bits, group_size, symmetric },
            row_len: k,
            scales: (0..groups).map(|g| f16::from_f32(0.5 + g as f32)).collect(),
            zeros: if symmetric { vec![] } else { (0..groups).map(|g| (g % (1 << bits)) as u8).collect() },
            codes: pack_codes(&codes, bits),
        }
    }

    #[test]
    fn int4_blocks_keep_our_nibble_order_and_pad_partial_blocks() {
        // Rows of 48 in groups of 32: the second block of each row is half padding (code 8 = zero).
        let q = quant(4, 32, true, 2, 48);
        let w = nbits("w", &q, 2, 48).unwrap().unwrap();
        assert_eq!((w.block_size, w.k_blocks()), (32, 2));
        assert_eq!(w.packed.len(), 2 * 2 * 16);
        assert_eq!(w.packed[0], q.code(0) | q.code(1) << 4);
        assert_eq!(w.packed[16 + 8], 0x88, "padding holds the zero point");
        assert_eq!(w.packed[32], q.code(48) | q.code(49) << 4, "row 1 starts a new block");
        assert_eq!(w.scales, vec![0.5, 1.5, 2.5, 3.5]);
        assert!(w.zero_points.is_none());
    }

    #[test]
    fn asymmetric_zero_points_pack_two_blocks_per_byte_and_per_channel_repeats_the_scale() {
        let q = quant(4, 32, false, 1, 96);
        let w = nbits("w", &q, 1, 96).unwrap().unwrap();
        assert!(matches!(w.zero_points, Some(ZeroPoints::Packed(z)) if z == vec![1 << 4, 2]), "blocks 0 and 1 share a byte, block 2 alone");
        let q = quant(8, 64, true, 2, 64);
        let w = nbits("w", &q, 2, 64).unwrap().unwrap();
        assert_eq!((w.block_size, w.scales.len()), (64, 2));
        let q = quant(8, 96, true, 1, 96);
        let w = nbits("w", &q, 1, 96).unwrap().unwrap();
        assert_eq!((w.block_size, w.scales), (32, vec![0.5, 0.5, 0.5]));
        assert!(nbits("w", &quant(4, 24, true, 1, 48), 1, 48).unwrap().is_err(), "group 24 has no block size");
    }

    #[test]
    fn ggml_q4_0_nibbles_are_reordered_and_q4_1_offsets_become_float_zero_points() {
        // One Q4_1 block: d = 0.5, m = −2, byte j holds element j (low) and element j+16 (high).
        let mut block = Vec::new();
        block.extend(f16::from_f32(0.5).to_le_bytes());
        block.extend(f16::from_f32(-2.0).to_le_bytes());
        block.extend((0..16u8).map(|j| j | (15 - j) << 4));
        let w = ggml_nbits(GgmlType::Q4_1, &block, 1, 32).unwrap();
        let code = |i: usize| if i.is_multiple_of(2) { w.packed[i / 2] & 0x0f } else { w.packed[i / 2] >> 4 };
        assert_eq!((0..32).map(code).collect::<Vec<_>>(), (0..16).chain((0..16).rev()).collect::<Vec<u8>>());
        assert_eq!(w.scales, vec![0.5]);
        assert!(matches!(w.zero_points, Some(ZeroPoints::Float(ref z)) if z == &vec![4.0]), "0.5·(q − 4) = 0.5·q − 2");
        let q8: Vec<u8> = [f16::from_f32(1.0).to_le_bytes().to_vec(), (0..32).map(|i| (i as i8 - 16) as u8).collect()].concat();
        let w = ggml_nbits(GgmlType::Q8_0, &q8, 1, 32).unwrap();
        assert_eq!(w.packed, (112..144).collect::<Vec<u8>>(), "q + 128");
        assert!(ggml_nbits(GgmlType::Q4_0, &block, 1, 32).is_err(), "20 bytes are not one Q4_0 block");
    }
}

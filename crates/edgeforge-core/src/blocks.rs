//! Dequantizers for ggml block formats: one function per format, each turning one block into floats.
//! Layouts and value formulas follow ggml-common.h / ggml-quants.c (facts only); `dtype.rs` holds sizes.

use rayon::prelude::*;

use crate::dtype::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{dtype}: {n_elems} elements are not a whole number of {block}-element blocks")]
    PartialBlock { dtype: GgmlType, n_elems: usize, block: usize },
    #[error("{dtype}: {n_elems} elements need {expected} bytes, got {got}")]
    Length { dtype: GgmlType, n_elems: usize, expected: usize, got: usize },
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize `dst.len()` elements of `dtype` from exactly the bytes they occupy.
pub fn dequantize(dtype: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), BlockError> {
    let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
    if !dst.len().is_multiple_of(be) {
        return Err(BlockError::PartialBlock { dtype, n_elems: dst.len(), block: be });
    }
    let expected = dst.len() / be * bb;
    if src.len() != expected {
        return Err(BlockError::Length { dtype, n_elems: dst.len(), expected, got: src.len() });
    }
    let block_fn: fn(&[u8], &mut [f32]) = match dtype {
        GgmlType::F32 => |b, o| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, o| o[0] = f16_at(b, 0),
        GgmlType::BF16 => |b, o| o[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q6_K => q6_k,
    };
    for (b, o) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(be)) {
        block_fn(b, o);
    }
    Ok(())
}

/// A whole 2-D tensor, rows in parallel (rows are independent runs of blocks).
pub fn dequantize_rows(dtype: GgmlType, src: &[u8], n_rows: usize, row_len: usize) -> Result<Vec<f32>, BlockError> {
    let be = dtype.block_elems();
    if !row_len.is_multiple_of(be) {
        return Err(BlockError::PartialBlock { dtype, n_elems: row_len, block: be });
    }
    let row_bytes = row_len / be * dtype.block_bytes();
    let n_elems = n_rows.saturating_mul(row_len);
    let expected = n_rows.saturating_mul(row_bytes);
    if src.len() != expected {
        return Err(BlockError::Length { dtype, n_elems, expected, got: src.len() });
    }
    let mut out = vec![0f32; n_elems];
    if row_len == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(row_len)
        .zip(src.par_chunks(row_bytes.max(1)))
        .try_for_each(|(o, s)| dequantize(dtype, s, o))?;
    Ok(out)
}

/// d; i8 qs[32]: x = d·q
fn q8_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for (x, &q) in o.iter_mut().zip(&b[2..34]) {
        *x = d * f32::from(q as i8);
    }
}

/// d; qs[16] (byte j: element j low nibble, j+16 high nibble): x = d·(q−8)
fn q4_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        o[j] = d * (f32::from(q & 0x0F) - 8.0);
        o[j + 16] = d * (f32::from(q >> 4) - 8.0);
    }
}

/// d; m; qs[16]: x = d·q + m
fn q4_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        o[j] = d * f32::from(q & 0x0F) + m;
        o[j + 16] = d * f32::from(q >> 4) + m;
    }
}

/// The 5-bit value of element j given the low-nibble bytes and the high-bit word.
fn five_bit(qs: &[u8], qh: u32, j: usize) -> u8 {
    let low = if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 };
    low | ((((qh >> j) & 1) as u8) << 4)
}

/// d; qh[4]; qs[16]: x = d·(q−16)
fn q5_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, x) in o.iter_mut().enumerate() {
        *x = d * (f32::from(five_bit(&b[6..22], qh, j)) - 16.0);
    }
}

/// d; m; qh[4]; qs[16]: x = d·q + m
fn q5_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, x) in o.iter_mut().enumerate() {
        *x = d * f32::from(five_bit(&b[8..24], qh, j)) + m;
    }
}

/// Six-bit scale and min of sub-block j from the 12 packed bytes of a Q4_K block.
fn k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// d; dmin; scales[12]; qs[128]: 8 sub-blocks of 32, x = d·sc·q − dmin·m
fn q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for c in 0..4 {
        let (sc_lo, m_lo) = k_scale_min(scales, 2 * c);
        let (sc_hi, m_hi) = k_scale_min(scales, 2 * c + 1);
        let (d_lo, mn_lo) = (d * f32::from(sc_lo), dmin * f32::from(m_lo));
        let (d_hi, mn_hi) = (d * f32::from(sc_hi), dmin * f32::from(m_hi));
        for l in 0..32 {
            let q = qs[32 * c + l];
            o[64 * c + l] = d_lo * f32::from(q & 0x0F) - mn_lo;
            o[64 * c + 32 + l] = d_hi * f32::from(q >> 4) - mn_hi;
        }
    }
}

/// ql[128]; qh[64]; i8 scales[16]; d: two halves of 128, x = d·sc·(q−32)
fn q6_k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut o[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let scale = f32::from(sc[is + 2 * k] as i8);
                out[l + 32 * k] = d * scale * (f32::from(qk) - 32.0);
            }
        }
    }
}

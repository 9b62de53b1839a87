//! Dequantizers for the ggml block formats of [`GgmlType`]: one function per format, turning one block
//! into `f32`s. Layouts and value formulas follow llama.cpp's `ggml-common.h` / `ggml-quants.c`
//! (`dequantize_row_*`) and gguf-py's `quants.py`; block sizes come from `dtype.rs`.
//!
//! Every format computes its values with the same `f32` operations in the same order as ggml's reference
//! dequantizers (e.g. Q4_K is `(d·sc)·q − dmin·m`, never fused), so values are bit-identical to theirs;
//! the tests hold us to that against gguf-py on vectors embedded below.

use rayon::prelude::*;

use crate::dtype::GgmlType;

/// A byte slice or shape that does not fit the element count for the type.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{ty}: {n_elems} elements are not a whole number of {block_elems}-element blocks")]
    PartialBlock { ty: GgmlType, n_elems: usize, block_elems: usize },
    #[error("{ty}: {n_elems} elements take {expected} bytes, got {got}")]
    Length { ty: GgmlType, n_elems: usize, expected: usize, got: usize },
    #[error("{ty}: {n_rows} rows of {row_len} elements are more than this machine can address")]
    TooLarge { ty: GgmlType, n_rows: usize, row_len: usize },
}

/// Dequantize `dst.len()` elements of type `ty` from `src`, which must be exactly
/// `ty.bytes_for(dst.len())` bytes.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), BlockError> {
    let expected = bytes_for(ty, 1, dst.len())?;
    if src.len() != expected {
        return Err(BlockError::Length { ty, n_elems: dst.len(), expected, got: src.len() });
    }
    decode(ty, src, dst);
    Ok(())
}

/// Dequantize a whole 2-D tensor of `n_rows` rows of `row_len` elements, rows in parallel (each row is an
/// independent run of blocks, so `row_len` must be a whole number of blocks).
pub fn dequantize_rows(ty: GgmlType, src: &[u8], n_rows: usize, row_len: usize) -> Result<Vec<f32>, BlockError> {
    let row_bytes = bytes_for(ty, 1, row_len)?;
    let expected = bytes_for(ty, n_rows, row_len)?;
    let n_elems = n_rows * row_len; // cannot overflow: bytes_for checked it
    if src.len() != expected {
        return Err(BlockError::Length { ty, n_elems, expected, got: src.len() });
    }
    let mut out = vec![0f32; n_elems];
    if n_elems == 0 {
        return Ok(out);
    }
    // Rows can be short (576 elements): hand each rayon task at least ~64K elements.
    let rows_per_task = (MIN_ELEMS_PER_TASK / row_len).max(1);
    out.par_chunks_mut(row_len)
        .zip(src.par_chunks(row_bytes))
        .with_min_len(rows_per_task)
        .for_each(|(dst, src)| decode(ty, src, dst));
    Ok(out)
}

const MIN_ELEMS_PER_TASK: usize = 1 << 16;

/// Bytes taken by `n_rows × row_len` elements, with every multiplication checked.
fn bytes_for(ty: GgmlType, n_rows: usize, row_len: usize) -> Result<usize, BlockError> {
    let block_elems = ty.block_elems();
    if !row_len.is_multiple_of(block_elems) {
        return Err(BlockError::PartialBlock { ty, n_elems: row_len, block_elems });
    }
    let too_large = || BlockError::TooLarge { ty, n_rows, row_len };
    // Both counts must fit: below one byte per element (Q4_0) the elements overflow first.
    n_rows.checked_mul(row_len).ok_or_else(too_large)?;
    (row_len / block_elems)
        .checked_mul(ty.block_bytes())
        .and_then(|row_bytes| row_bytes.checked_mul(n_rows))
        .ok_or_else(too_large)
}

/// Decode `src` into `dst`; the caller has checked that the lengths match.
fn decode(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => f32_le(src, dst),
        GgmlType::F16 => f16_le(src, dst),
        GgmlType::BF16 => bf16_le(src, dst),
        GgmlType::Q8_0 => per_block(src, dst, q8_0),
        GgmlType::Q4_0 => per_block(src, dst, q4_0),
        GgmlType::Q4_1 => per_block(src, dst, q4_1),
        GgmlType::Q5_0 => per_block(src, dst, q5_0),
        GgmlType::Q5_1 => per_block(src, dst, q5_1),
        GgmlType::Q4_K => per_block(src, dst, q4_k),
        GgmlType::Q5_K => per_block(src, dst, q5_k),
        GgmlType::Q6_K => per_block(src, dst, q6_k),
        GgmlType::IQ4_NL => per_block(src, dst, iq4_nl),
    }
}

/// Run `block` over each `B`-byte block of `src` and the `E` floats it becomes in `dst`.
fn per_block<const B: usize, const E: usize>(src: &[u8], dst: &mut [f32], block: impl Fn(&[u8; B], &mut [f32; E])) {
    for (b, out) in src.chunks_exact(B).zip(dst.chunks_exact_mut(E)) {
        // chunks_exact yields exactly B bytes and E floats, so both conversions succeed.
        if let (Ok(b), Ok(out)) = (<&[u8; B]>::try_from(b), <&mut [f32; E]>::try_from(out)) {
            block(b, out);
        }
    }
}

/// An IEEE half from its two little-endian bytes.
fn f16(bytes: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(bytes).to_f32()
}

fn f32_le(src: &[u8], dst: &mut [f32]) {
    for (x, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// F16 tensors go through `half`'s slice conversion (F16C when the CPU has it), 256 values at a time.
fn f16_le(src: &[u8], dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    let mut buf = [half::f16::ZERO; 256];
    for (dst, src) in dst.chunks_mut(256).zip(src.chunks(512)) {
        let buf = &mut buf[..dst.len()];
        for (h, b) in buf.iter_mut().zip(src.chunks_exact(2)) {
            *h = half::f16::from_le_bytes([b[0], b[1]]);
        }
        buf.convert_to_f32_slice(dst);
    }
}

/// BF16 is the upper 16 bits of an f32: widening is exact, NaN payloads included.
fn bf16_le(src: &[u8], dst: &mut [f32]) {
    for (x, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *x = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    }
}

/// The 32 four-bit values of 16 bytes: byte j holds element j (low nibble) and element j+16 (high nibble).
fn unpack4(qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    let (lo, hi) = q.split_at_mut(16);
    for ((l, h), &byte) in lo.iter_mut().zip(hi).zip(qs) {
        *l = byte & 0x0F;
        *h = byte >> 4;
    }
    q
}

/// The 32 five-bit values of Q5_x: low four bits as in [`unpack4`], bit j of the little-endian `qh` is
/// the fifth bit of element j.
fn unpack5(qh: [u8; 4], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = unpack4(qs);
    for (j, x) in q.iter_mut().enumerate() {
        *x |= (((qh >> j) & 1) as u8) << 4;
    }
    q
}

/// Q8_0, 34 bytes: d; i8 qs[32]. x = d·q
fn q8_0(b: &[u8; 34], out: &mut [f32; 32]) {
    let d = f16([b[0], b[1]]);
    for (x, &q) in out.iter_mut().zip(&b[2..]) {
        *x = d * f32::from(q as i8);
    }
}

/// Q4_0, 18 bytes: d; qs[16]. x = d·(q − 8)
fn q4_0(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16([b[0], b[1]]);
    for (x, q) in out.iter_mut().zip(unpack4(&b[2..])) {
        *x = d * (f32::from(q) - 8.0);
    }
}

/// Q4_1, 20 bytes: d; m; qs[16]. x = d·q + m
fn q4_1(b: &[u8; 20], out: &mut [f32; 32]) {
    let (d, m) = (f16([b[0], b[1]]), f16([b[2], b[3]]));
    for (x, q) in out.iter_mut().zip(unpack4(&b[4..])) {
        *x = d * f32::from(q) + m;
    }
}

/// Q5_0, 22 bytes: d; qh[4]; qs[16]. x = d·(q − 16)
fn q5_0(b: &[u8; 22], out: &mut [f32; 32]) {
    let d = f16([b[0], b[1]]);
    for (x, q) in out.iter_mut().zip(unpack5([b[2], b[3], b[4], b[5]], &b[6..])) {
        *x = d * (f32::from(q) - 16.0);
    }
}

/// Q5_1, 24 bytes: d; m; qh[4]; qs[16]. x = d·q + m
fn q5_1(b: &[u8; 24], out: &mut [f32; 32]) {
    let (d, m) = (f16([b[0], b[1]]), f16([b[2], b[3]]));
    for (x, q) in out.iter_mut().zip(unpack5([b[4], b[5], b[6], b[7]], &b[8..])) {
        *x = d * f32::from(q) + m;
    }
}

/// IQ4_NL's 16 non-uniform levels (llama.cpp's `kvalues_iq4nl`): denser near zero, where most weights are.
pub const IQ4_NL_GRID: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// IQ4_NL, 18 bytes: d; qs[16] (nibbles as Q4_0). x = d·grid[q]
fn iq4_nl(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16([b[0], b[1]]);
    for (x, q) in out.iter_mut().zip(unpack4(&b[2..])) {
        *x = d * f32::from(IQ4_NL_GRID[usize::from(q)]);
    }
}

/// The six-bit scale and min of Q4_K sub-block `j` (0..8) from the 12 packed scale bytes
/// (llama.cpp's `get_scale_min_k4`). Public for the runtime's Q4_K kernels.
pub fn scale_min_k4(s: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Q4_K, 144 bytes: d; dmin; scales[12]; qs[128]; 8 sub-blocks of 32. x = d·sc_j·q − dmin·m_j
///
/// Each 64-element chunk c takes 32 bytes of qs: low nibbles are sub-block 2c, high nibbles 2c+1.
fn q4_k(b: &[u8; 144], out: &mut [f32; 256]) {
    let (d, dmin) = (f16([b[0], b[1]]), f16([b[2], b[3]]));
    let scales = [b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]];
    for (c, (chunk, qs)) in out.chunks_exact_mut(64).zip(b[16..].chunks_exact(32)).enumerate() {
        let (sc_lo, m_lo) = scale_min_k4(&scales, 2 * c);
        let (sc_hi, m_hi) = scale_min_k4(&scales, 2 * c + 1);
        let (d_lo, min_lo) = (d * f32::from(sc_lo), dmin * f32::from(m_lo));
        let (d_hi, min_hi) = (d * f32::from(sc_hi), dmin * f32::from(m_hi));
        let (lo, hi) = chunk.split_at_mut(32);
        for ((l, h), &q) in lo.iter_mut().zip(hi).zip(qs) {
            *l = d_lo * f32::from(q & 0x0F) - min_lo;
            *h = d_hi * f32::from(q >> 4) - min_hi;
        }
    }
}

/// Q5_K, 176 bytes: d; dmin; scales[12]; qh[32]; qs[128]. As Q4_K, with the fifth bit of element l of
/// chunk c (0..4) in bit 2c (low half of the chunk) or 2c + 1 (high half) of qh[l].
fn q5_k(b: &[u8; 176], out: &mut [f32; 256]) {
    let (d, dmin) = (f16([b[0], b[1]]), f16([b[2], b[3]]));
    let scales = [b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]];
    let qh = &b[16..48];
    for (c, (chunk, qs)) in out.chunks_exact_mut(64).zip(b[48..].chunks_exact(32)).enumerate() {
        let (sc_lo, m_lo) = scale_min_k4(&scales, 2 * c);
        let (sc_hi, m_hi) = scale_min_k4(&scales, 2 * c + 1);
        let (d_lo, min_lo) = (d * f32::from(sc_lo), dmin * f32::from(m_lo));
        let (d_hi, min_hi) = (d * f32::from(sc_hi), dmin * f32::from(m_hi));
        let (lo, hi) = chunk.split_at_mut(32);
        for (l, ((x_lo, x_hi), &q)) in lo.iter_mut().zip(hi).zip(qs).enumerate() {
            let h_lo = ((qh[l] >> (2 * c)) & 1) << 4;
            let h_hi = ((qh[l] >> (2 * c + 1)) & 1) << 4;
            *x_lo = d_lo * f32::from((q & 0x0F) | h_lo) - min_lo;
            *x_hi = d_hi * f32::from((q >> 4) | h_hi) - min_hi;
        }
    }
}

/// Q6_K, 210 bytes: ql[128]; qh[64]; i8 scales[16]; d (at the end). x = d·sc·(q − 32)
///
/// Two halves of 128 elements, half n using ql[64n..], qh[32n..], scales[8n..]. Within a half, for l in 0..32:
/// element l      = low  nibble of ql[l]      | bits 0-1 of qh[l] << 4, scale is
///         l + 32 = low  nibble of ql[l + 32] | bits 2-3 of qh[l] << 4,       is + 2
///         l + 64 = high nibble of ql[l]      | bits 4-5 of qh[l] << 4,       is + 4
///         l + 96 = high nibble of ql[l + 32] | bits 6-7 of qh[l] << 4,       is + 6
/// with is = l / 16: every run of 16 elements has its own signed scale.
fn q6_k(b: &[u8; 210], out: &mut [f32; 256]) {
    let d = f16([b[208], b[209]]);
    let (ql, rest) = b.split_at(128);
    let (qh, rest) = rest.split_at(64);
    // d·sc once per 16 elements, as ggml's d * sc[is] before multiplying by q.
    let mut dsc = [0f32; 16];
    for (x, &sc) in dsc.iter_mut().zip(rest) {
        *x = d * f32::from(sc as i8);
    }
    for (((half, ql), qh), dsc) in
        out.chunks_exact_mut(128).zip(ql.chunks_exact(64)).zip(qh.chunks_exact(32)).zip(dsc.chunks_exact(8))
    {
        for l in 0..32 {
            let is = l / 16;
            let (a, c, h) = (ql[l], ql[l + 32], qh[l]);
            let q1 = (a & 0x0F) | ((h & 3) << 4);
            let q2 = (c & 0x0F) | (((h >> 2) & 3) << 4);
            let q3 = (a >> 4) | (((h >> 4) & 3) << 4);
            let q4 = (c >> 4) | (((h >> 6) & 3) << 4);
            half[l] = dsc[is] * (f32::from(q1) - 32.0);
            half[l + 32] = dsc[is + 2] * (f32::from(q2) - 32.0);
            half[l + 64] = dsc[is + 4] * (f32::from(q3) - 32.0);
            half[l + 96] = dsc[is + 6] * (f32::from(q4) - 32.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks dequantized by gguf-py (an implementation independent of ours): the generator is at the
    /// end of this file. `sum` adds the finite values in f64 in order, `fnv` is FNV-1a 64 over all
    /// values' little-endian f32 bytes, `samples` are (index, f32 bits) of every 13th element and the last.
    struct Vector {
        ty: GgmlType,
        hex: &'static str,
        sum: f64,
        fnv: u64,
        samples: &'static [(usize, u32)],
    }

    #[rustfmt::skip]
    const VECTORS: &[Vector] = &[
    Vector {
        ty: GgmlType::Q8_0,
        hex: "61ad3f6df667e25a54d71921f2c38409de6e24de83b73a4fc7cc0a44623f88af8afb272248fce93a09615c334f8bfe02\
              e13799623d720d800b82ec843a6d08c9b944f7604aaec6c7be0da49f22c5a92b7820e470e7109f0631e9fe7b1e04baca\
              0163b2111032a02affffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        sum: 10.024703979492188,
        fnv: 0x7592ae929063720d,
        samples: &[
            (0, 0xc0a96f80), (13, 0xbf41a400), (26, 0xc103c880), (39, 0x3f1ce280), (52, 0x3e075a00),
            (65, 0x40b33d00), (78, 0x401d3a00), (91, 0xc11ba780), (104, 0xbd540000), (117, 0xbd540000),
            (127, 0xbd540000),
        ],
    },
    Vector {
        ty: GgmlType::Q4_0,
        hex: "8aa52049f743221c65bac10e3df5ee0b17923227d6f8cf5424dabe0360f069fcc0129318b6a6abcf893f9fe187575055\
              d223069df165022cffffffffffffffffffffffffffffffff",
        sum: 14.763397216796875,
        fnv: 0xf799c37e13ab15f9,
        samples: &[
            (0, 0x3e314000), (13, 0xbd84f000), (26, 0x3ddd9000), (39, 0xbe0fe800), (52, 0xbe2cb000),
            (65, 0xbe3be800), (78, 0x3e3be800), (91, 0x3e211000), (104, 0x3ee07000), (117, 0x3ee07000),
            (127, 0x3ee07000),
        ],
    },
    Vector {
        ty: GgmlType::Q4_1,
        hex: "3f24da2d24a57a487a87645ccbca69d62ba74df78c243d2c4ec6777f25a9af1593efd9e9bc9cadab242d7cab85b4fd43\
              433ce78d0f39a852bbd567e4dfaa512affffffffffffffffffffffffffffffff",
        sum: 8.711227416992188,
        fnv: 0xb44a542c0cfd1f9a,
        samples: &[
            (0, 0x3e219000), (13, 0x3e548400), (26, 0x3e438800), (39, 0x3e1ec000), (52, 0x3dd06000),
            (65, 0x3e869000), (78, 0x3f00f800), (91, 0x3eafb000), (104, 0xbf418000), (117, 0xbf418000),
            (127, 0xbf418000),
        ],
    },
    Vector {
        ty: GgmlType::Q5_0,
        hex: "aa2d97778bda56c729d5537e620795ba536dcb8929fb611d0d660066feb6c62fc35769d98d6677ac1dd032995324c600\
              a8c34621102d6b2c6a3d023f885687bdb10e6fa4ffffffffffffffffffffffffffffffffffffffff",
        sum: -6.495819091796875,
        fnv: 0x781fb252d3f04831,
        samples: &[
            (0, 0x3f07f000), (13, 0x3f4be800), (26, 0xbf793800), (39, 0xbd169c00), (52, 0xbcac2000),
            (65, 0x3c8a6000), (78, 0xbe81ba00), (91, 0xbe3e4400), (104, 0xbe850200), (117, 0xbe850200),
            (127, 0xbe850200),
        ],
    },
    Vector {
        ty: GgmlType::Q5_1,
        hex: "53aa69a76f7f3a03d51f2b30ade8fe656144bd87694ef6c7832c16addf7ea73d36c24323665a81aff30df90a94b3d27e\
              94ad879dd2bfe9b9e09c91a32e3e859732cef28726d3d0372f286e2bffffffffffffffffffffffffffffffffffffffff",
        sum: -4.92474365234375,
        fnv: 0xc35b3f80bceee707,
        samples: &[
            (0, 0xbf888380), (13, 0xbfc16e80), (26, 0xbf128b00), (39, 0x4006c700), (52, 0x3eafe000),
            (65, 0xc01c8870), (78, 0xbbb0e000), (91, 0xc0063870), (104, 0x3f891f00), (117, 0x3f891f00),
            (127, 0x3f891f00),
        ],
    },
    Vector {
        ty: GgmlType::Q4_K,
        hex: "cfad33acde59a6911e5ad13973531bac4c6d08a5bea9047ac5dd8a489ef75cb5faa10efc6497088654559a22a7cdc4ea\
              aa9963f45be385beeb3ff3002740d9fdcb66cc6c1fe09c541d82c99c2e637012a7b7329cf689d8f11a2480504e6f9114\
              0ded7d3063bfb942bf00498a4a8934a2c2666c2d7f04eec82a7b4c608af5bde51b0a1e6537090f26467bf0e6fbde6f4d\
              beabd52946c74bc8a5a035a2d33fd19d57587c3d2f72107777b4847c0d02a28cb7a738d568719d893f9274afdd350b96\
              85273a489e494e1a5d27dceff115b7ef40127ee7b108b74ed1fb9af1c1a89636e65e9084fc48e931c89833237d51f2a5\
              7da50c8ea663f9b0bda556b3998df0fb4574444bbf484f23c818fcb97835fcf3317405083d6c1790b99d0eb3211b4a1a\
              2a29f627ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        sum: 547.8440551757812,
        fnv: 0x8602ffc88ca1f1fc,
        samples: &[
            (0, 0xc1f5a3c0), (13, 0xc188ba80), (26, 0xc1ca1340), (39, 0xc162d4c0), (52, 0xc13e8700),
            (65, 0xc1ef64e0), (78, 0xc1ef64e0), (91, 0xc2211550), (104, 0xc18ee2e0), (117, 0xc18ee2e0),
            (130, 0xc10cc540), (143, 0xc19071e0), (156, 0xc2374fd0), (169, 0xc0048b00), (182, 0xc18cba00),
            (195, 0xc23e13e0), (208, 0xc21edb40), (221, 0xc24db030), (234, 0xc1751480), (247, 0xc0ea9500),
            (260, 0xc0e42540), (273, 0xc0873d40), (286, 0xc0b5b140), (299, 0xc08d7f80), (312, 0xc02e9b00),
            (325, 0xc1067260), (338, 0xc13baca0), (351, 0xc0cd0540), (364, 0xc10ceb40), (377, 0xc10ceb40),
            (390, 0xc1464b60), (403, 0xc1911dd0), (416, 0xc25bc5d8), (429, 0xc1a52e90), (442, 0xc1a52e90),
            (455, 0xc06b5580), (468, 0xc15f5ae0), (481, 0xc1dd9070), (494, 0xc264d9b8), (507, 0xc229d0f8),
            (520, 0x4210aa28), (533, 0x4210aa28), (546, 0x4210aa28), (559, 0x4210aa28), (572, 0x4210aa28),
            (585, 0x4210aa28), (598, 0x4210aa28), (611, 0x4210aa28), (624, 0x4210aa28), (637, 0x4210aa28),
            (650, 0x4210aa28), (663, 0x4210aa28), (676, 0x4210aa28), (689, 0x4210aa28), (702, 0x4210aa28),
            (715, 0x4210aa28), (728, 0x4210aa28), (741, 0x4210aa28), (754, 0x4210aa28), (767, 0x4210aa28),
        ],
    },
    Vector {
        ty: GgmlType::Q6_K,
        hex: "4b22a55cbc63d4fb2d570f46499882a5ae3caa4b0dbc6f1b32c4945b41c48adacd4b868c2efcd1925e8a03b88a91a829\
              2c69bb447eaef76af8b2e70c23eb283e3706aea998c6ce4ead57c03c18062f479ed1bded622caf6bc46232bd2fb82810\
              0abf487c693c51adfda893212c3f9a5662eb036200030ac87a127887d57949a4794e9e8282a0dcfa3b62bd71e4efc6f9\
              a8d987be7136aaf98f887976b128f2ac51f3d4aed395aef02a5674895d3ef880cacba83083d2ec7a503669b6521028c1\
              805803720c638f5d39893c56326abb535ba8e114244b93ca9134b78be8ddd034364e0a76a04f7000e2b97c4b22226ca3\
              89e8a13639dad7b205acf9d76b9dfeaead3ab061e9531b65fd7b6f84bbd7d37b31d856024fec44359ed421161caa6ec1\
              a351814f36b5ca01ab624ffe579bd4f88f878ee7812fc3043c83b025c1504be533765a1b3b24a852853ae85a5d9fc26f\
              f00da0f74e705553ae478996fb2b586fe357c1a2b9490f4d2cea5cb60243638da2806cb7debd705a48672111dcb907d2\
              78aabae7b565b536e340824ce8ae5cb5bc1b68a6529205798bb3cd7d734b92bedbf25a2dffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffff082b",
        sum: -1595.3024291992188,
        fnv: 0x9fb29390163e9bb7,
        samples: &[
            (0, 0xc1ae3800), (13, 0x42d11000), (26, 0x420fbb00), (39, 0xbe511000), (52, 0x428ba5b0),
            (65, 0x4143ff00), (78, 0x411ccc00), (91, 0xc28d7c14), (104, 0xc2cfa224), (117, 0x428b3d28),
            (130, 0x420ba5b0), (143, 0x4241f458), (156, 0x4272f418), (169, 0x4182aa00), (182, 0xc2982b50),
            (195, 0xc1881bc0), (208, 0x42a5ea88), (221, 0x41904660), (234, 0xc1837b10), (247, 0x4134c080),
            (260, 0xc2e21a80), (273, 0xc2349d80), (286, 0xc2877620), (299, 0x42b24620), (312, 0xc38e91a8),
            (325, 0xbfd61000), (338, 0x43838808), (351, 0xc3361ed0), (364, 0x411c8880), (377, 0xc24e0900),
            (390, 0x429985e0), (403, 0xc2e5f330), (416, 0x43903dc8), (429, 0xc381d134), (442, 0x42a30e30),
            (455, 0xc2ef25e0), (468, 0xc31a86c0), (481, 0xc22d41c0), (494, 0x4220e1a0), (507, 0xc1289300),
            (520, 0xbfd9f800), (533, 0xbfd9f800), (546, 0xbfd9f800), (559, 0xbfd9f800), (572, 0xbfd9f800),
            (585, 0xbfd9f800), (598, 0xbfd9f800), (611, 0xbfd9f800), (624, 0xbfd9f800), (637, 0xbfd9f800),
            (650, 0xbfd9f800), (663, 0xbfd9f800), (676, 0xbfd9f800), (689, 0xbfd9f800), (702, 0xbfd9f800),
            (715, 0xbfd9f800), (728, 0xbfd9f800), (741, 0xbfd9f800), (754, 0xbfd9f800), (767, 0xbfd9f800),
        ],
    },
    Vector {
        ty: GgmlType::Q5_K,
        hex: "4d2618a20de16e95ac04d546118c400a8a39ad985bdc7a85c25d1cf94f218ad61f65ab36b981a90495bf299dada4fc95\
              dfafed5cb11612ca5bdb10cb762f8dec1acd234fb9962d76d931338675b0ec506fcb4944469414e5c551469b0f525b33\
              881f457a0cb52a1ba04d9537a9467ea5197780fed327fff6e9a58d355db28729eb68835e631980444c8a32258e907793\
              c360892ef3725b17cda40b16574730748999dc65c5072d97a6f0129fa4ef6ee360adf12941d7ecb691adaede59ae87ac\
              a797f4dde2b20f4911fbbc6f654750095d4f3ef5a332fb44c7b5245033d0e46cd30cf376e76f847380753a315ed566ec\
              8360d45a57480c0cb5889878661e50aa683148cf61fb7607e1d556431f46d60cc226791e3d8cfcc64e3e7037b0116e53\
              064b747c9d1f5d12c88ae562af3a4b6b8a9920b320bc364b8d5852389febe612e17559b49fafb49639414d6228e02ea1\
              f76ea971a857fc43029751d51b452912bb22afadffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
              ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        sum: -2104.1649169921875,
        fnv: 0xb7f2ae81b00c5b0f,
        samples: &[
            (0, 0x40aa56e0), (13, 0x41271470), (26, 0x40d34b60), (39, 0x411cb4c0), (52, 0x410fb5f0),
            (65, 0x414b42e0), (78, 0x414b42e0), (91, 0x41d251b0), (104, 0x40c8c280), (117, 0x40b83860),
            (130, 0x3ec91800), (143, 0x3f810880), (156, 0x3f3cc200), (169, 0x416dcd80), (182, 0x420e2600),
            (195, 0x40c43a00), (208, 0x40853800), (221, 0x40d0d400), (234, 0x3e430000), (247, 0x4117e720),
            (260, 0xbfb04100), (273, 0xc0088080), (286, 0xbf4a0200), (299, 0xc21b28e8), (312, 0xc258f8e8),
            (325, 0xc22b2270), (338, 0xc2bd0938), (351, 0xc290b138), (364, 0xc0bdaf80), (377, 0xc16ff7c0),
            (390, 0xc1e81950), (403, 0xc22670a8), (416, 0xc2aa8628), (429, 0xc18c90a0), (442, 0xc2de9828),
            (455, 0xc2cef4a0), (468, 0xc21b3d40), (481, 0xc2af5e68), (494, 0xc1215340), (507, 0xc24aecd0),
            (520, 0x41fa248c), (533, 0x41fa248c), (546, 0x41fa248c), (559, 0x41fa248c), (572, 0x41fa248c),
            (585, 0x41fa248c), (598, 0x41fa248c), (611, 0x41fa248c), (624, 0x41fa248c), (637, 0x41fa248c),
            (650, 0x41fa248c), (663, 0x41fa248c), (676, 0x41fa248c), (689, 0x41fa248c), (702, 0x41fa248c),
            (715, 0x41fa248c), (728, 0x41fa248c), (741, 0x41fa248c), (754, 0x41fa248c), (767, 0x41fa248c),
        ],
    },
    Vector {
        ty: GgmlType::IQ4_NL,
        hex: "d81cc34a7bc3575558ad5c92e181625d60dae8ab65997cc81f62ea5af8dec04eb7006f5ea0a2df037a244a3dd2fa10a6\
              c36fc36a1a1832aeffffffffffffffffffffffffffffffff",
        sum: -361.3613586425781,
        fnv: 0xf5cc2243ef232a1f,
        samples: &[
            (0, 0xbe9d6c00), (13, 0x3ea71c00), (26, 0x3ed78c00), (39, 0xbfc5a800), (52, 0x40cd9000),
            (65, 0x3f575000), (78, 0xbea5a000), (91, 0x3e91c000), (104, 0xc12f0480), (117, 0xc12f0480),
            (127, 0xc12f0480),
        ],
    },
    Vector {
        ty: GgmlType::F16,
        hex: "e23c4db97e3994b9f6adac39f13e773dc39f0fb415bcc23bf9b8f8a57a35373721bc5cb80e369bb663bb7f3d36c03bbe\
              00000080003cff7bfffb0100ff03007c00fc",
        sum: 0.2771492004394531,
        fnv: 0xec60024a97225735,
        samples: &[
            (0, 0x3f9c4000), (13, 0xbcbf0000), (26, 0x3f800000), (32, 0xff800000),
        ],
    },
    Vector {
        ty: GgmlType::BF16,
        hex: "09bd06bf963fb3bed6bfbe3ec0bef4bee63e4fbfca3ee63ea13e103f08c017c0f0bed23fa0bdd73f06be42bffb3f05be\
              00000080803f617f61ff01008200807f80ff",
        sum: 1.203044999669685e-38,
        fnv: 0x43951fb40d195d1a,
        samples: &[
            (0, 0xbd090000), (13, 0x3f100000), (26, 0x3f800000), (32, 0xff800000),
        ],
    },
    Vector {
        ty: GgmlType::F32,
        hex: "9958873f60317cbeb6d688bf27d26dbf2f85a1bfd862dd3dbdecc23ef23d863e0000000000000080010000009ec97f7f\
              0000807f000080ff",
        sum: 3.3999999521443642e+38,
        fnv: 0x78885bac5ee611fd,
        samples: &[
            (0, 0x3f875899), (13, 0xff800000),
        ],
    },
    ];

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        let nibble = |c: u8| (c as char).to_digit(16).unwrap() as u8;
        digits.chunks_exact(2).map(|p| nibble(p[0]) << 4 | nibble(p[1])).collect()
    }

    fn fnv1a(values: &[f32]) -> u64 {
        values.iter().flat_map(|x| x.to_le_bytes()).fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    fn n_elems(ty: GgmlType, n_bytes: usize) -> usize {
        assert_eq!(n_bytes % ty.block_bytes(), 0, "{ty}: test vector is not whole blocks");
        n_bytes / ty.block_bytes() * ty.block_elems()
    }

    #[test]
    fn every_type_matches_gguf_py_bit_for_bit() {
        let mut seen: Vec<GgmlType> = VECTORS.iter().map(|v| v.ty).collect();
        seen.sort();
        let mut all = GgmlType::SUPPORTED.to_vec();
        all.sort();
        assert_eq!(seen, all, "one vector per supported type");
        for v in VECTORS {
            let src = unhex(v.hex);
            let mut got = vec![f32::NAN; n_elems(v.ty, src.len())];
            dequantize(v.ty, &src, &mut got).unwrap();
            for &(i, bits) in v.samples {
                assert_eq!(got[i].to_bits(), bits, "{}[{i}]: got {}, gguf-py {}", v.ty, got[i], f32::from_bits(bits));
            }
            let sum: f64 = got.iter().filter(|x| x.is_finite()).map(|&x| f64::from(x)).sum();
            assert!((sum - v.sum).abs() <= 1e-9 * v.sum.abs().max(1.0), "{}: sum {sum} vs gguf-py {}", v.ty, v.sum);
            assert_eq!(fnv1a(&got), v.fnv, "{}: some value differs from gguf-py (sum {sum})", v.ty);
        }
    }

    /// Deterministic pseudo-random bytes (xorshift64*), so the test needs no RNG crate.
    fn noise(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed >> 12;
                seed ^= seed << 25;
                seed ^= seed >> 27;
                (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn rows_in_parallel_equal_one_serial_run() {
        for (k, ty) in GgmlType::SUPPORTED.into_iter().enumerate() {
            // Enough rows for rayon to split the work into several tasks.
            let (n_rows, row_len) = (300, 2 * 256);
            let src = noise(ty.block_bytes() * n_rows * row_len / ty.block_elems(), 7 + k as u64);
            let mut serial = vec![0f32; n_rows * row_len];
            dequantize(ty, &src, &mut serial).unwrap();
            let rows = dequantize_rows(ty, &src, n_rows, row_len).unwrap();
            // Random bytes make NaN scales too, so compare bits.
            assert!(rows.iter().zip(&serial).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty}");
        }
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        for ty in GgmlType::SUPPORTED {
            let (be, bb) = (ty.block_elems(), ty.block_bytes());
            let mut dst = vec![0f32; 2 * be];
            for n_bytes in [0, 2 * bb - 1, 2 * bb + 1, 3 * bb] {
                let r = dequantize(ty, &vec![0u8; n_bytes], &mut dst);
                assert!(
                    matches!(r, Err(BlockError::Length { expected, got, .. }) if expected == 2 * bb && got == n_bytes),
                    "{ty} {n_bytes}: {r:?}"
                );
            }
            assert!(dequantize(ty, &vec![0u8; 2 * bb], &mut dst).is_ok());
            assert!(dequantize(ty, &[], &mut []).is_ok());
            if be > 1 {
                let mut partial = vec![0f32; be + 1];
                let r = dequantize(ty, &vec![0u8; 2 * bb], &mut partial);
                assert!(matches!(r, Err(BlockError::PartialBlock { .. })), "{ty}: {r:?}");
                let r = dequantize_rows(ty, &vec![0u8; 2 * bb], 2, be / 2);
                assert!(matches!(r, Err(BlockError::PartialBlock { .. })), "{ty}: {r:?}");
            }
            let r = dequantize_rows(ty, &vec![0u8; 2 * bb], 3, be);
            assert!(matches!(r, Err(BlockError::Length { .. })), "{ty}: {r:?}");
            for (n_rows, row_len) in [(usize::MAX, be), (2, usize::MAX / be * be), (usize::MAX / 2 + 1, 2 * be)] {
                let r = dequantize_rows(ty, &[], n_rows, row_len);
                assert!(matches!(r, Err(BlockError::TooLarge { .. })), "{ty} {n_rows}x{row_len}: {r:?}");
            }
            assert_eq!(dequantize_rows(ty, &[], 0, be).unwrap(), Vec::<f32>::new());
            assert_eq!(dequantize_rows(ty, &[], 5, 0).unwrap(), Vec::<f32>::new());
            assert_eq!(dequantize_rows(ty, &vec![0u8; 4 * bb], 2, 2 * be).unwrap().len(), 4 * be);
        }
        let msg = dequantize(GgmlType::Q4_K, &[0u8; 143], &mut [0f32; 256]).unwrap_err().to_string();
        assert_eq!(msg, "Q4_K: 256 elements take 144 bytes, got 143");
    }

    fn halves(ty: GgmlType, bits: &[u16]) -> Vec<f32> {
        let src: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let mut out = vec![0f32; bits.len()];
        dequantize(ty, &src, &mut out).unwrap();
        out
    }

    #[test]
    fn f16_specials() {
        let x = halves(GgmlType::F16, &[0x7c00, 0xfc00, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0xc000, 0x3555]);
        assert_eq!(x[0], f32::INFINITY);
        assert_eq!(x[1], f32::NEG_INFINITY);
        assert!(x[2] == 0.0 && x[2].is_sign_negative());
        assert_eq!(x[3], 2f32.powi(-24)); // smallest subnormal
        assert_eq!(x[4], 1023.0 * 2f32.powi(-24)); // largest subnormal
        assert_eq!(x[5], 2f32.powi(-14)); // smallest normal
        assert_eq!(x[6], 65504.0);
        assert_eq!(x[7], -2.0);
        assert_eq!(x[8], 0.333_251_95);
        for nan in halves(GgmlType::F16, &[0x7e00, 0x7c01, 0xfe00, 0xffff]) {
            assert!(nan.is_nan());
        }
    }

    #[test]
    fn bf16_specials() {
        let x = halves(GgmlType::BF16, &[0x7f80, 0xff80, 0x8000, 0x0001, 0x0080, 0x7f7f, 0x3f80, 0xc0a0, 0x3eab]);
        assert_eq!(x[0], f32::INFINITY);
        assert_eq!(x[1], f32::NEG_INFINITY);
        assert!(x[2] == 0.0 && x[2].is_sign_negative());
        assert_eq!(x[3].to_bits(), 0x0001_0000); // subnormal stays subnormal
        assert_eq!(x[4], f32::MIN_POSITIVE);
        assert_eq!(x[5].to_bits(), 0x7f7f_0000); // largest finite bf16
        assert_eq!(x[6], 1.0);
        assert_eq!(x[7], -5.0);
        assert_eq!(x[8].to_bits(), 0x3eab_0000);
        // NaNs keep their payload: the widening is a shift.
        for (bits, nan) in [0x7fc0u16, 0x7f81, 0xffff].into_iter().zip(halves(GgmlType::BF16, &[0x7fc0, 0x7f81, 0xffff])) {
            assert!(nan.is_nan());
            assert_eq!(nan.to_bits(), u32::from(bits) << 16);
        }
    }

    /// Hand-made blocks whose values follow from the format table alone, one per quantized type.
    #[test]
    fn hand_made_blocks() {
        let one = half::f16::from_f32(1.0).to_le_bytes();
        let half_ = half::f16::from_f32(0.5).to_le_bytes();
        let dec = |ty: GgmlType, b: &[u8]| {
            let mut out = vec![0f32; ty.block_elems()];
            dequantize(ty, b, &mut out).unwrap();
            out
        };
        // Q4_0: byte j = (j+16 high, j low) with low = j, high = 15 - j.
        let mut b = one.to_vec();
        b.extend((0..16u8).map(|j| j | (15 - j) << 4));
        let x = dec(GgmlType::Q4_0, &b);
        for j in 0..16 {
            assert_eq!((x[j], x[j + 16]), (j as f32 - 8.0, 7.0 - j as f32));
        }
        // Q5_1 with d = 1, m = 0.5 and only qh bit 17 set: element 17 = 16 + high nibble of byte 1.
        let mut b = [one, half_].concat();
        b.extend((1u32 << 17).to_le_bytes());
        b.extend((0..16u8).map(|j| j | (15 - j) << 4));
        let x = dec(GgmlType::Q5_1, &b);
        assert_eq!(x[1], 1.5);
        assert_eq!(x[17], 16.0 + 14.0 + 0.5);
        assert_eq!(x[18], 13.0 + 0.5);
        // Q8_0: signed bytes.
        let mut b = half_.to_vec();
        b.extend((0..32).map(|j: i32| (j * 8 - 128) as i8 as u8));
        assert_eq!(dec(GgmlType::Q8_0, &b)[0], -64.0);
        // Q4_K: d = 1, dmin = 0.5; sub-block 5 gets sc = 0b10_0011 = 35 (low 4 bits in scales[9],
        // top 2 in scales[1] >> 6) and m = 0b01_0100 = 20 (scales[9] >> 4, scales[5] >> 6).
        let mut b = [one, half_].concat();
        let mut scales = [0u8; 12];
        scales[1] = 0b10 << 6;
        scales[5] = 0b01 << 6;
        scales[9] = 0x43;
        b.extend(scales);
        let mut qs = [0u8; 128];
        qs[32 * 2 + 3] = 0x70; // chunk 2, high nibble: element 64·2 + 32 + 3 = 163 in sub-block 5
        b.extend(qs);
        let x = dec(GgmlType::Q4_K, &b);
        assert_eq!(x[163], 35.0 * 7.0 - 0.5 * 20.0);
        assert_eq!(x[160], -10.0);
        assert_eq!(x[131], 0.0); // sub-block 4: sc = m = 0 (scales[8] = 0, no top bits in scales[0]/[4])
        // Q6_K: d = 0.5 at the end; element 64 + 128 of the block (half 1, l = 0, q3) uses scales[8 + 4].
        let mut b = vec![0u8; 210];
        b[64] = 0xA0; // ql of half 1, l = 0: high nibble 10
        b[128 + 32] = 0b11 << 4; // qh of half 1, l = 0: bits 4-5
        b[192 + 12] = (-3i8) as u8;
        b[208..].copy_from_slice(&half_);
        let x = dec(GgmlType::Q6_K, &b);
        assert_eq!(x[192], 0.5 * -3.0 * (f32::from(10u8 | 3 << 4) - 32.0));
        assert_eq!(x[128], 0.0); // scales[8] = 0
    }
}

// The generator of VECTORS above (lines starting with `//py`):
//py # Prints the VECTORS entries of the tests in crates/edgeforge-core/src/blocks.rs. To regenerate:
//py #   sed -n 's|^//py \?||p' src/blocks.rs > gen.py && pip install gguf numpy && python3 gen.py
//py # The expected values come from gguf-py's own numpy dequantizers (gguf 0.19.0), not from our code.
//py import numpy as np
//py from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
//py from gguf.quants import dequantize
//py
//py rng = np.random.default_rng(20261125)
//py F16_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
//py               "Q4_K": [0, 2], "Q6_K": [208], "Q5_K": [0, 2], "IQ4_NL": [0]}  # byte offsets of the f16 d/m/dmin fields
//py
//py def fnv1a(vals):  # FNV-1a 64 over the little-endian f32 bytes
//py     h = 0xcbf29ce484222325
//py     for b in vals.astype("<f4").tobytes():
//py         h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
//py     return h
//py
//py def vector(name, raw):
//py     vals = dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), T[name]).astype(np.float32).reshape(-1)
//py     assert name in ("F16", "BF16", "F32") or np.all(np.isfinite(vals)), name
//py     n = len(vals)
//py     picks = sorted(set(range(0, n, 13)) | {n - 1})
//py     total = 0.0
//py     for v in vals[np.isfinite(vals)]:  # the infinities of the float vectors stay out of the sum
//py         total += float(v)
//py     h = raw.hex()
//py     lines = "\\\n              ".join(h[i:i + 96] for i in range(0, len(h), 96))
//py     pairs = [f"({i}, 0x{int(vals[i:i + 1].view(np.uint32)[0]):08x})," for i in picks]
//py     samples = "\n".join("            " + " ".join(pairs[i:i + 5]) for i in range(0, len(pairs), 5))
//py     print(f"    Vector {{\n        ty: GgmlType::{name},\n        hex: \"{lines}\",\n"
//py           f"        sum: {total!r},\n        fnv: 0x{fnv1a(vals):016x},\n        samples: &[\n{samples}\n        ],\n    }},")
//py
//py for name, fields in F16_FIELDS.items():
//py     elems, size = GGML_QUANT_SIZES[T[name]]
//py     n_random = 2 if elems == 256 else 3
//py     raw = bytearray(rng.integers(0, 256, size=n_random * size, dtype=np.uint8).tobytes())
//py     raw += b"\xff" * size  # one block with every quant/scale bit set
//py     for b in range(n_random + 1):
//py         for off in fields:
//py             raw[b * size + off: b * size + off + 2] = np.float16(rng.uniform(-0.1, 0.1)).tobytes()
//py     vector(name, raw)
//py
//py f16 = np.concatenate([rng.normal(size=24), [0.0, -0.0, 1.0, 65504.0, -65504.0, 6e-8, 6.1e-5, np.inf, -np.inf]])
//py raw = bytearray(f16.astype("<f2").tobytes())
//py vector("F16", raw)
//py bf = np.concatenate([rng.normal(size=24), [0.0, -0.0, 1.0, 3.0e38, -3.0e38, 1e-40, 1.2e-38, np.inf, -np.inf]])
//py raw = bytearray((bf.astype("<f4").view(np.uint32) >> 16).astype("<u2").tobytes())
//py vector("BF16", raw)
//py f32 = np.concatenate([rng.normal(size=8), [0.0, -0.0, 1e-45, 3.4e38, np.inf, -np.inf]]).astype("<f4")
//py vector("F32", bytearray(f32.tobytes()))

//! The K-quant formats with native kernels (Q4_K, Q6_K: super-blocks of 256 elements with 6- or 8-bit
//! sub-block scales), kept as the file's bytes. Exact rounding dequantizes tiles with the core's dequantizer
//! like every block format; the integer path follows llama.cpp's arithmetic for these types: activations are
//! quantized per 256 values as its `q8_K` (an f32 scale `max / −127` from the value of largest magnitude,
//! codes rounded to nearest, ties to even, and the sum of every 16 codes), and each super-block gives two
//! exact integers,
//!
//! - Q4_K: `isum = Σ_j sc_j · Σ_{k∈j} q_k · x_k` over its 8 sub-blocks of 32 (`q` in 0..15) and
//!   `msum = Σ_j m_j · Σ_{k∈j} x_k`, the row's value gaining `(d_x·d)·isum − (d_x·dmin)·msum`;
//! - Q6_K: `isum = Σ_j sc_j · Σ_{k∈j} (q_k − 32) · x_k` over its 16 sub-blocks of 16 (`q` in 0..63, `sc`
//!   signed), the row gaining `(d_x·d)·isum`;
//!
//! the integers llama.cpp's kernels compute per super-block. The portable kernel here is the reference the
//! AVX-512 VNNI kernel (`x86_kquant`), the AVX2 kernel (`x86_kquant_avx2`, also run on AVX-VNNI CPUs) and
//! the NEON kernel (`neon_kquant`, aarch64 with dotprod) match bit for bit (tested).
//!
//! Layouts (ggml's): Q4_K `d, dmin, scales[12], qs[128]` (chunk c of 64 elements: 32 bytes of qs, low nibbles
//! sub-block 2c, high nibbles 2c + 1); Q6_K `ql[128], qh[64], scales[16] (i8), d` (see `q6_codes`).

use edgeforge_core::blocks::scale_min_k4;

use super::format::{half_at, BlockFormat};

/// Elements per super-block.
pub(crate) const QK: usize = 256;

/// Activations quantized as llama.cpp's `q8_K`, one token after another. Buffers grow, never shrink.
#[derive(Debug, Default)]
pub struct Q8KRows {
    qs: Vec<i8>,
    d: Vec<f32>,
    bsums: Vec<i32>,
    rows: usize,
    nb: usize,
}

/// One token's super-blocks.
#[derive(Clone, Copy)]
pub(crate) struct Q8KView<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    /// Sum of each run of 16 codes (16 per super-block).
    pub bsums: &'a [i32],
    pub nb: usize,
}

impl Q8KRows {
    /// Quantize `n` rows of `in_dim` (a multiple of 256, checked by the caller) values of `x`.
    pub fn quantize(&mut self, x: &[f32], n: usize, in_dim: usize) {
        let nb = in_dim / QK;
        self.qs.resize(n * nb * QK, 0);
        self.d.resize(n * nb, 0.0);
        self.bsums.resize(n * nb * 16, 0);
        (self.rows, self.nb) = (n, nb);
        let blocks = x[..n * in_dim].chunks_exact(QK).zip(self.qs.chunks_exact_mut(QK));
        for ((xb, qb), (d, bs)) in blocks.zip(self.d.iter_mut().zip(self.bsums.chunks_exact_mut(16))) {
            *d = quantize_block(xb, qb, bs);
        }
    }

    /// Token `t` (`None` past the last).
    pub(crate) fn token(&self, t: usize) -> Option<Q8KView<'_>> {
        let nb = self.nb;
        (t < self.rows).then(|| Q8KView { qs: &self.qs[t * nb * QK..(t + 1) * nb * QK], d: &self.d[t * nb..(t + 1) * nb], bsums: &self.bsums[t * nb * 16..(t + 1) * nb * 16], nb })
    }
}

const ROUND: f32 = 12_582_912.0;

/// One super-block as `q8_K`: codes into `q`, the sums of 16 into `bsums`; returns the scale.
fn quantize_block(x: &[f32], q: &mut [i8], bsums: &mut [i32]) -> f32 {
    // The first value of largest magnitude, with its sign.
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            (amax, max) = (v.abs(), v);
        }
    }
    if amax == 0.0 {
        q.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        // Nearest integer, ties to even (|v · iscale| <= 127), at most 127.
        *q = (((v * iscale) + ROUND) - ROUND).min(127.0) as i8;
    }
    for (s, run) in bsums.iter_mut().zip(q.chunks_exact(16)) {
        *s = run.iter().map(|&c| i32::from(c)).sum();
    }
    1.0 / iscale
}

/// The 256 codes (0..63) of a Q6_K block in element order.
pub(crate) fn q6_codes(b: &[u8]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for h in 0..2 {
        let (ql, qh) = (&b[64 * h..64 * h + 64], &b[128 + 32 * h..128 + 32 * h + 32]);
        let out = &mut q[128 * h..128 * h + 128];
        for l in 0..32 {
            out[l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
            out[l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
            out[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            out[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
}

/// The super-block's integers and scales: (isum, msum, d, dmin) as in the module comment.
pub(crate) fn super_block(format: BlockFormat, b: &[u8], x: &[i8], bsums: &[i32]) -> (i32, i32, f32, f32) {
    match format {
        BlockFormat::Q4_K => {
            let Ok(scales) = <&[u8; 12]>::try_from(&b[4..16]) else { return (0, 0, f32::NAN, 0.0) };
            let qs = &b[16..144];
            let (mut isum, mut msum) = (0i32, 0i32);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(scales, j);
                let (chunk, high) = (&qs[32 * (j / 2)..32 * (j / 2) + 32], j % 2 == 1);
                let dot: i32 = chunk.iter().zip(&x[32 * j..32 * j + 32]).map(|(&q, &v)| i32::from(if high { q >> 4 } else { q & 0x0F }) * i32::from(v)).sum();
                isum += i32::from(sc) * dot;
                msum += i32::from(m) * (bsums[2 * j] + bsums[2 * j + 1]);
            }
            (isum, msum, half_at(b, 0), half_at(b, 2))
        }
        BlockFormat::Q6_K => {
            let q = q6_codes(b);
            let mut isum = 0i32;
            for j in 0..16 {
                let dot: i32 = q[16 * j..16 * j + 16].iter().zip(&x[16 * j..16 * j + 16]).map(|(&q, &v)| i32::from(q) * i32::from(v)).sum();
                isum += i32::from(b[192 + j] as i8) * (dot - 32 * bsums[j]);
            }
            (isum, 0, half_at(b, 208), 0.0)
        }
        _ => (0, 0, 0.0, 0.0),
    }
}

/// The portable kernel and the reference: one row (whole super-blocks of `format`) dotted with one token.
pub(crate) fn row_dot(format: BlockFormat, row: &[u8], x: Q8KView<'_>) -> f32 {
    let mut acc = 0f32;
    for (i, b) in row.chunks_exact(format.block_bytes()).enumerate().take(x.nb) {
        let (isum, msum, d, dmin) = super_block(format, b, &x.qs[i * QK..(i + 1) * QK], &x.bsums[i * 16..(i + 1) * 16]);
        acc = step(acc, x.d[i], d, dmin, isum, msum);
    }
    acc
}

/// A Q4_K super-block's eight sub-block scales and its `msum` (module comment), from the block `b` and the
/// token's 16 sums of this super-block (`bsums`); `None` when `b` is shorter than a block's scales.
#[inline(always)]
pub(crate) fn q4_scales(b: &[u8], bsums: &[i32]) -> Option<([i32; 8], i32)> {
    let scales = <&[u8; 12]>::try_from(b.get(4..16)?).ok()?;
    let (mut sc, mut msum) = ([0i32; 8], 0i32);
    for (j, sc) in sc.iter_mut().enumerate() {
        let (s, m) = scale_min_k4(scales, j);
        *sc = i32::from(s);
        msum += i32::from(m) * (bsums[2 * j] + bsums[2 * j + 1]);
    }
    Some((sc, msum))
}

/// A Q6_K super-block's 16 signed sub-block scales and `Σ_j sc_j · 32 · bsums_j`, the codes' offset of 32
/// in integers (`isum` is the codes' dot minus it).
#[inline(always)]
pub(crate) fn q6_scales(b: &[u8], bsums: &[i32]) -> ([i32; 16], i32) {
    let sc: [i32; 16] = std::array::from_fn(|j| i32::from(b[192 + j] as i8));
    (sc, (0..16).map(|j| sc[j] * 32 * bsums[j]).sum())
}

/// `q4k()` for Q4_K, `q6k()` for Q6_K, NaN for any other format: the dispatch of every K-quant kernel.
#[inline(always)]
pub(crate) fn by_format(format: BlockFormat, q4k: impl FnOnce() -> f32, q6k: impl FnOnce() -> f32) -> f32 {
    match format {
        BlockFormat::Q4_K => q4k(),
        BlockFormat::Q6_K => q6k(),
        _ => f32::NAN,
    }
}

/// One super-block's contribution, the float steps every kernel takes in this order.
#[inline(always)]
pub(crate) fn step(acc: f32, dx: f32, d: f32, dmin: f32, isum: i32, msum: i32) -> f32 {
    let acc = acc + (dx * d) * isum as f32;
    acc - (dx * dmin) * msum as f32
}

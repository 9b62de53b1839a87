//! Activations quantized once per product, as llama.cpp's `q8_0`/`q8_1` blocks: for each block of 32 values
//! `d = max|x| / 127`, codes `round(x · 127 / max|x|)` (ties to even, as llama.cpp's SIMD quantizer), `d`
//! kept at f16 precision (what llama.cpp stores). Two block sums serve the formats with an offset: `s`,
//! `d · Σq` in f32 (for Q4_0/Q5_0, where llama.cpp's integer formulation is exact), and `s16`, `d · Σq`
//! rounded to f16 with the unrounded `d` (llama.cpp's `q8_1`, for Q4_1/Q5_1).

use super::format::BLOCK;

/// `rows` tokens of `blocks_per_row` quantized blocks each. Buffers grow, never shrink: one per thread is
/// reused for every product.
#[derive(Debug, Default)]
pub struct Q8Rows {
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    s16: Vec<f32>,
    sq: Vec<i32>,
    rows: usize,
    nb: usize,
}

/// The blocks of `tokens` tokens (token `t` starts at block `t · nb`).
#[derive(Clone, Copy)]
pub(crate) struct Q8View<'a> {
    pub tokens: usize,
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub s16: &'a [f32],
    /// `Σq` of each block, in integers (the interleaved kernels' offset term).
    pub sq: &'a [i32],
    pub nb: usize,
}

impl Q8Rows {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn blocks_per_row(&self) -> usize {
        self.nb
    }

    /// Quantize `n` rows of `in_dim` (a multiple of 32, checked by the caller) values of `x`.
    pub fn quantize(&mut self, x: &[f32], n: usize, in_dim: usize) {
        let nb = in_dim / BLOCK;
        let total = n * nb;
        self.qs.resize(total * BLOCK, 0);
        self.d.resize(total, 0.0);
        self.s.resize(total, 0.0);
        self.s16.resize(total, 0.0);
        self.sq.resize(total, 0);
        (self.rows, self.nb) = (n, nb);
        let blocks = x[..n * in_dim].chunks_exact(BLOCK).zip(self.qs.chunks_exact_mut(BLOCK));
        let sums = self.s.iter_mut().zip(&mut self.s16).zip(&mut self.sq);
        for (((xb, qb), d), ((s, s16), sq)) in blocks.zip(&mut self.d).zip(sums) {
            (*d, *s, *s16, *sq) = quantize_block(xb, qb);
        }
    }

    /// Tokens `t0..t0 + tokens` (the caller checked `t0 + tokens <= rows`).
    pub(crate) fn view(&self, t0: usize, tokens: usize) -> Q8View<'_> {
        let (b0, b1) = (t0 * self.nb, (t0 + tokens) * self.nb);
        Q8View { tokens, qs: &self.qs[b0 * BLOCK..b1 * BLOCK], d: &self.d[b0..b1], s: &self.s[b0..b1], s16: &self.s16[b0..b1], sq: &self.sq[b0..b1], nb: self.nb }
    }
}

const ROUND: f32 = 12_582_912.0;

/// One block: codes into `q`, returns (d at f16 precision, d·Σq, f16(d·Σq), Σq).
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32, f32, i32) {
    let (amax, sum) = block_codes(super::DotIsa::best(), x, q);
    let d = amax / 127.0;
    let d16 = half::f16::from_f32(d).to_f32();
    (d16, d16 * sum as f32, half::f16::from_f32(d * sum as f32).to_f32(), sum)
}

/// The codes of one block of 32 values into `q` on `isa` (AVX-512 when it is the best kernel, else the portable
/// loop; both give the same bits, tested): returns (max|x|, Σq).
pub(crate) fn block_codes(isa: super::DotIsa, x: &[f32], q: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if isa == super::DotIsa::Avx512Vnni && isa.is_supported() {
        if let (Ok(x), Ok(q)) = (<&[f32; BLOCK]>::try_from(x), <&mut [i8; BLOCK]>::try_from(&mut *q)) {
            // SAFETY: the CPU has AVX-512 (checked above); `x` and `q` are whole blocks.
            return unsafe { super::x86_group::block_codes(x, q) };
        }
    }
    let _ = isa;
    block_codes_scalar(x, q)
}

/// `block_codes`' portable loop.
pub(crate) fn block_codes_scalar(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut codes = [0f32; BLOCK];
    for (c, &v) in codes.iter_mut().zip(x) {
        // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer, ties to even, for |v · id| < 2^22
        // (here at most 127): `round_ties_even` without a libm call, so the loop vectorizes.
        *c = ((v * id).clamp(-127.0, 127.0) + ROUND) - ROUND;
    }
    let mut sum = 0i32;
    for (q, &c) in q.iter_mut().zip(&codes) {
        *q = c as i8;
        sum += c as i32;
    }
    (amax, sum)
}

//! F16 and BF16 weights multiplied as stored (2 bytes per weight, never widened to an f32 matrix): each row's
//! 16-bit floats are converted to f32 in registers and multiplied into f32 activations with FMA. Both
//! conversions are exact: F16 with F16C's `vcvtph2ps`, BF16 (the upper half of an f32) by zero-extending to
//! 32 bits and shifting left by 16. The sum differs from gemm on the converted matrix only in the order of
//! additions. With `Rounding::Q8` the activations are first rounded to the weight's type, as llama.cpp does
//! (the `vec_dot_type` of F16 weights is F16, of BF16 weights BF16: `Half::round`).
//!
//! One loop per instruction set serves both types (`const BF16: bool` picks the conversion at compile time).
//!
//! aarch64 (`DotIsa::Neon`): the same loop on 4-lane NEON registers, F16 widened by `fcvtl`
//! (`vcvt_f32_f16`), BF16 by `vshll` #16; checked under QEMU user-mode emulation (no speed figure).

#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{BlockFormat, DotIsa};

/// The two 16-bit float weight types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    /// IEEE binary16 (`BlockFormat::F16`).
    F16,
    /// bfloat16 (`BlockFormat::BF16`).
    Bf16,
}

impl Half {
    /// The type of a 16-bit float format; `None` for the block formats.
    pub(crate) fn of(format: BlockFormat) -> Option<Half> {
        match format {
            BlockFormat::F16 => Some(Half::F16),
            BlockFormat::BF16 => Some(Half::Bf16),
            BlockFormat::Q4_0
            | BlockFormat::Q4_1
            | BlockFormat::Q5_0
            | BlockFormat::Q5_1
            | BlockFormat::Q8_0
            | BlockFormat::IQ4_NL
            | BlockFormat::Q4_K
            | BlockFormat::Q6_K => None,
        }
    }

    /// `x` rounded to this type and back to f32, as llama.cpp converts the activations of a product with
    /// weights of this type: `GGML_FP32_TO_FP16` / `GGML_FP32_TO_BF16`, both to nearest, ties to even; a NaN
    /// stays a NaN (BF16: the upper half with the quiet bit set, as ggml's `ggml_compute_fp32_to_bf16` and
    /// `half::bf16::from_f32` both do).
    #[inline]
    pub(crate) fn round(self, x: f32) -> f32 {
        match self {
            Half::F16 => half::f16::from_f32(x).to_f32(),
            Half::Bf16 => half::bf16::from_f32(x).to_f32(),
        }
    }
}

/// The weight in the two bytes `w[..2]` as f32 (exact), portable.
#[inline(always)]
fn widen<const BF16: bool>(w: &[u8]) -> f32 {
    let bits = u16::from_le_bytes([w[0], w[1]]);
    if BF16 {
        half::bf16::from_bits(bits).to_f32()
    } else {
        half::f16::from_bits(bits).to_f32()
    }
}

/// `Σ w_i · x_i` over a row of `x.len()` weights (`row.len() == 2 · x.len()`, checked by the caller), portable.
fn dot_scalar<const BF16: bool>(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (i, (w, &x)) in row.chunks_exact(2).zip(x).enumerate() {
        acc[i % 8] += widen::<BF16>(w) * x;
    }
    acc.iter().sum()
}

/// Eight weights (the 16 bytes of `h`) as f32, exactly.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn widen8<const BF16: bool>(h: __m128i) -> __m256 {
    if BF16 { _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h))) } else { _mm256_cvtph_ps(h) }
}

/// Sixteen weights (the 32 bytes of `h`) as f32, exactly.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn widen16<const BF16: bool>(h: __m256i) -> __m512 {
    if BF16 { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h))) } else { _mm512_cvtph_ps(h) }
}

/// `out[r] = Σ_i w_ri · x_i` for the `NR` consecutive rows of `x.len()` weights in `rows`, AVX2. The rows share
/// the loads of `x`; each row is summed as with `NR = 1` (the same bits whatever `NR`). Each step prefetches
/// the same place in the next `NR` rows (those that follow in memory, the next call's on the decode path):
/// streaming a 16-bit weight matrix from memory, this took decode of the BF16 reference model from 26–31 to
/// 42–48 tokens/s on one thread (`eval latency`, this machine; the hardware prefetcher alone lags).
///
/// # Safety
/// AVX2, FMA and F16C present; `rows.len() == NR · 2 · x.len()`; `out.len() == NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2<const BF16: bool, const NR: usize>(rows: &[u8], x: &[f32], out: &mut [f32]) {
    let (n, rb) = (x.len(), 2 * x.len());
    let (wp, xp) = (rows.as_ptr(), x.as_ptr());
    let (mut a0, mut a1) = ([_mm256_setzero_ps(); NR], [_mm256_setzero_ps(); NR]);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`: 16 floats of `x` and, for every row `r < NR`, its 16 weights (32 bytes) from
        // `r · rb + 2i` are in bounds. A prefetch reads nothing and cannot fault, wherever it points.
        unsafe {
            let (x0, x1) = (_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(xp.add(i + 8)));
            for r in 0..NR {
                let p = wp.add(r * rb + 2 * i);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(NR * rb).cast());
                a0[r] = _mm256_fmadd_ps(widen8::<BF16>(_mm_loadu_si128(p.cast())), x0, a0[r]);
                a1[r] = _mm256_fmadd_ps(widen8::<BF16>(_mm_loadu_si128(p.add(16).cast())), x1, a1[r]);
            }
        }
        i += 16;
    }
    for r in 0..NR {
        let v = _mm256_add_ps(a0[r], a1[r]);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        out[r] = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s))) + dot_scalar::<BF16>(&rows[r * rb + 2 * i..(r + 1) * rb], &x[i..]);
    }
}

/// `dot_avx2` with AVX-512.
///
/// # Safety
/// AVX-512F, AVX2, FMA and F16C present; `rows.len() == NR · 2 · x.len()`; `out.len() == NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn dot_avx512<const BF16: bool, const NR: usize>(rows: &[u8], x: &[f32], out: &mut [f32]) {
    let (n, rb) = (x.len(), 2 * x.len());
    let (wp, xp) = (rows.as_ptr(), x.as_ptr());
    let (mut a0, mut a1) = ([_mm512_setzero_ps(); NR], [_mm512_setzero_ps(); NR]);
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`: 32 floats of `x` and, for every row `r < NR`, its 32 weights (64 bytes) from
        // `r · rb + 2i` are in bounds. A prefetch reads nothing and cannot fault, wherever it points.
        unsafe {
            let (x0, x1) = (_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(xp.add(i + 16)));
            for r in 0..NR {
                let p = wp.add(r * rb + 2 * i);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(NR * rb).cast());
                a0[r] = _mm512_fmadd_ps(widen16::<BF16>(_mm256_loadu_si256(p.cast())), x0, a0[r]);
                a1[r] = _mm512_fmadd_ps(widen16::<BF16>(_mm256_loadu_si256(p.add(32).cast())), x1, a1[r]);
            }
        }
        i += 32;
    }
    for r in 0..NR {
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r])) + dot_scalar::<BF16>(&rows[r * rb + 2 * i..(r + 1) * rb], &x[i..]);
    }
}

/// Four weights (the 8 bytes of `h`) as f32, exactly.
#[cfg(target_arch = "aarch64")]
#[inline]
#[target_feature(enable = "neon")]
fn widen4<const BF16: bool>(h: uint16x4_t) -> float32x4_t {
    if BF16 { vreinterpretq_f32_u32(vshll_n_u16::<16>(h)) } else { vcvt_f32_f16(vreinterpret_f16_u16(h)) }
}

/// `dot_avx2` on NEON: 16 weights per step in four f32x4 accumulators per row, no prefetch (no aarch64
/// hardware here to measure one on).
///
/// # Safety
/// NEON present; `rows.len() == NR · 2 · x.len()`; `out.len() == NR`.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn dot_neon<const BF16: bool, const NR: usize>(rows: &[u8], x: &[f32], out: &mut [f32]) {
    let (n, rb) = (x.len(), 2 * x.len());
    let (wp, xp) = (rows.as_ptr(), x.as_ptr());
    let mut acc = [[vdupq_n_f32(0.0); 4]; NR];
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`: 16 floats of `x` and, for every row `r < NR`, its 16 weights (32 bytes) from
        // `r · rb + 2i` are in bounds (loaded as bytes: no alignment needed).
        unsafe {
            let xs = [0, 4, 8, 12].map(|k| vld1q_f32(xp.add(i + k)));
            for r in 0..NR {
                let p = wp.add(r * rb + 2 * i);
                let (h0, h1) = (vreinterpretq_u16_u8(vld1q_u8(p)), vreinterpretq_u16_u8(vld1q_u8(p.add(16))));
                let ws = [widen4::<BF16>(vget_low_u16(h0)), widen4::<BF16>(vget_high_u16(h0)), widen4::<BF16>(vget_low_u16(h1)), widen4::<BF16>(vget_high_u16(h1))];
                for k in 0..4 {
                    acc[r][k] = vfmaq_f32(acc[r][k], ws[k], xs[k]);
                }
            }
        }
        i += 16;
    }
    for r in 0..NR {
        let [a0, a1, a2, a3] = acc[r];
        out[r] = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3))) + dot_scalar::<BF16>(&rows[r * rb + 2 * i..(r + 1) * rb], &x[i..]);
    }
}

/// `Σ w_i · x_i` of a row of `half` weights on `isa`; `None` when `isa` is not supported by this CPU or the
/// lengths disagree (`row.len() != 2 · x.len()`).
pub(crate) fn dot(isa: DotIsa, half: Half, row: &[u8], x: &[f32]) -> Option<f32> {
    let mut out = [0f32];
    rows_dot(isa, half, row, x, &mut out).then_some(out[0])
}

/// `out[r]` := row `r` of `rows` (`out.len()` consecutive rows of `half` weights) dotted with `x`, on `isa`:
/// the decode path, four rows per kernel call. Each row gives `dot`'s bits. `false` (nothing written) when
/// `isa` is not supported by this CPU or the lengths disagree.
pub(crate) fn rows_dot(isa: DotIsa, half: Half, rows: &[u8], x: &[f32], out: &mut [f32]) -> bool {
    if out.len().checked_mul(2 * x.len()) != Some(rows.len()) || !isa.is_supported() {
        return false;
    }
    if x.is_empty() {
        out.fill(0.0);
        return true;
    }
    match half {
        Half::F16 => rows_on::<false>(isa, rows, x, out),
        Half::Bf16 => rows_on::<true>(isa, rows, x, out),
    }
    true
}

/// `rows_dot` once `isa` and the lengths are checked (`x` not empty).
fn rows_on<const BF16: bool>(isa: DotIsa, rows: &[u8], x: &[f32], out: &mut [f32]) {
    match isa {
        // SAFETY (both arms): the CPU supports `isa` (checked by `rows_dot`; `Avx2`/`AvxVnni` imply AVX2, FMA
        // and F16C, `Avx512Vnni` AVX-512F too); `in_fours` passes whole rows of `x.len()` weights, as many
        // as the outputs it passes (4 or 1).
        #[cfg(target_arch = "x86_64")]
        DotIsa::Avx2 | DotIsa::AvxVnni => in_fours(rows, x, out, |r, o| unsafe { dot_avx2::<BF16, 4>(r, x, o) }, |r, o| unsafe { dot_avx2::<BF16, 1>(r, x, o) }),
        #[cfg(target_arch = "x86_64")]
        DotIsa::Avx512Vnni => in_fours(rows, x, out, |r, o| unsafe { dot_avx512::<BF16, 4>(r, x, o) }, |r, o| unsafe { dot_avx512::<BF16, 1>(r, x, o) }),
        // SAFETY: the CPU supports `isa` (checked by `rows_dot`; `Neon` implies NEON); `in_fours` passes
        // whole rows as above.
        #[cfg(target_arch = "aarch64")]
        DotIsa::Neon => in_fours(rows, x, out, |r, o| unsafe { dot_neon::<BF16, 4>(r, x, o) }, |r, o| unsafe { dot_neon::<BF16, 1>(r, x, o) }),
        _ => {
            for (row, o) in rows.chunks_exact(2 * x.len()).zip(out) {
                *o = dot_scalar::<BF16>(row, x);
            }
        }
    }
}

/// `four(rows, out)` on groups of four rows (`out` of length 4), then `one` on each row left (`out` of length 1).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn in_fours(rows: &[u8], x: &[f32], out: &mut [f32], four: impl Fn(&[u8], &mut [f32]), one: impl Fn(&[u8], &mut [f32])) {
    let rb = 2 * x.len();
    let mut outs = out.chunks_exact_mut(4);
    let mut groups = rows.chunks_exact(4 * rb);
    for (g, o) in (&mut groups).zip(&mut outs) {
        four(g, o);
    }
    for (row, o) in groups.remainder().chunks_exact(rb).zip(outs.into_remainder().chunks_mut(1)) {
        one(row, o);
    }
}

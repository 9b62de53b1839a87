//! F16 weights multiplied as stored (2 bytes per weight, never widened to an f32 matrix): each row's halves
//! are converted to f32 in registers (exact) and multiplied into f32 activations with FMA. The sum differs
//! from gemm on the converted matrix only in the order of additions. With `Rounding::Q8` the activations are
//! first rounded to f16, as llama.cpp does for F16 weights.

#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::DotIsa;

/// `Σ w_i · x_i` over a row of `x.len()` halves (`row.len() == 2 · x.len()`, checked by the caller), portable.
pub(crate) fn dot_scalar(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (i, (w, &x)) in row.chunks_exact(2).zip(x).enumerate() {
        acc[i % 8] += half::f16::from_le_bytes([w[0], w[1]]).to_f32() * x;
    }
    acc.iter().sum()
}

/// # Safety
/// AVX2, FMA and F16C present; `row.len() == 2 · x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let (wp, xp) = (row.as_ptr(), x.as_ptr());
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`: 16 halves (32 bytes) of the row and 16 floats of `x` are in bounds.
        unsafe {
            let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i).cast()));
            let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i + 16).cast()));
            a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp.add(i)), a0);
            a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(i + 8)), a1);
        }
        i += 16;
    }
    let v = _mm256_add_ps(a0, a1);
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s))) + dot_scalar(&row[2 * i..], &x[i..])
}

/// # Safety
/// AVX-512F, AVX2, FMA and F16C present; `row.len() == 2 · x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn dot_avx512(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let (wp, xp) = (row.as_ptr(), x.as_ptr());
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`: 32 halves (64 bytes) of the row and 32 floats of `x` are in bounds.
        unsafe {
            let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(2 * i).cast()));
            let w1 = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(2 * i + 32).cast()));
            a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xp.add(i)), a0);
            a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xp.add(i + 16)), a1);
        }
        i += 32;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + dot_scalar(&row[2 * i..], &x[i..])
}

/// `Σ w_i · x_i` on `isa` (supported by this CPU: the caller holds a checked `DotIsa`); `false`-free: lengths
/// that disagree give `None`.
pub(crate) fn dot(isa: DotIsa, row: &[u8], x: &[f32]) -> Option<f32> {
    if row.len() != 2 * x.len() || !isa.is_supported() {
        return None;
    }
    Some(match isa {
        // SAFETY (both arms): the CPU supports `isa` (checked above; `Avx2`/`AvxVnni` imply AVX2, FMA and F16C,
        // `Avx512Vnni` AVX-512F too) and the lengths match.
        #[cfg(target_arch = "x86_64")]
        DotIsa::Avx2 | DotIsa::AvxVnni => unsafe { dot_avx2(row, x) },
        #[cfg(target_arch = "x86_64")]
        DotIsa::Avx512Vnni => unsafe { dot_avx512(row, x) },
        _ => dot_scalar(row, x),
    })
}

//! x86_64 kernels: AVX2+FMA (8 lanes) and AVX-512F (16 lanes). 4-bit blocks give their low nibbles
//! (elements 0..16) with one AND and their high nibbles (16..32) with a shift and an AND, in order (see
//! `packed`); the zero point is subtracted in bytes (4-bit: both below 16) or 32-bit lanes (8-bit), exact,
//! the codes widened and converted to f32, then either multiplied into the
//! activations with FMA (`row_dot_*`: each group's vector sum is scaled into a per-row vector accumulator,
//! reduced once per row) or multiplied by the group's scale and stored (`dequant_row_*`: the tiles of
//! the prefill path; `scale · (code − zero)` in the same IEEE operations as the scalar code, so
//! bit-identical to it).
//!
//! Callers (`super`) guarantee before calling: the CPU has the enabled features (`Kernel` is only made for
//! supported instruction sets), the row is well formed (`Row::is_well_formed`: code bytes match its
//! length), and `x` holds `(NT − 1) · x_stride + row.len` values (`out` holds `row.len` for dequant).

// Token loops index several accumulator arrays (a0, a1, racc, tail) in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::packed::{nibble_at, Bits, Row, BLOCK};

/// Scalar handling of element `i` (odd group starts and ragged group tails).
#[inline(always)]
fn one<const NT: usize>(row: &Row<'_>, x: &[f32], x_stride: usize, i: usize, zero: i32, sums: &mut [f32; NT]) {
    let v = (i32::from(row.code(i)) - zero) as f32;
    for (t, s) in sums.iter_mut().enumerate() {
        *s += x[t * x_stride + i] * v;
    }
}

/// Element `i` dequantized exactly as the scalar reference does.
#[inline(always)]
fn one_value(row: &Row<'_>, i: usize, zero: u8, scale: f32) -> f32 {
    scale * (f32::from(row.code(i)) - f32::from(zero))
}

// ---------------------------------------------------------------------------------------------- AVX2

/// Low (`shift` 0) or high (`shift` 4) nibbles of the bytes of `b`, minus `zv` (codes and 4-bit zero
/// points are below 16, checked when packing, so the difference fits an i8).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn nibbles_minus_zero(b: __m128i, shift: u32, zv: __m128i) -> __m128i {
    let m = _mm_set1_epi8(0x0F);
    let c = if shift == 0 { _mm_and_si128(b, m) } else { _mm_and_si128(_mm_srli_epi16::<4>(b), m) };
    _mm_sub_epi8(c, zv)
}

/// 8 signed bytes (the low half of `v`) as f32x8.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn i8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// The 32 four-bit codes of one block (16 bytes at `p`) minus `zv`, as four f32x8 in element order.
///
/// # Safety
/// 16 bytes readable at `p`; AVX2 present.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn q4x32_avx2(p: *const u8, zv: __m128i) -> [__m256; 4] {
    // SAFETY: the caller guarantees 16 readable bytes.
    let b = unsafe { _mm_loadu_si128(p.cast()) };
    let (lo, hi) = (nibbles_minus_zero(b, 0, zv), nibbles_minus_zero(b, 4, zv));
    [i8x8_to_f32(lo), i8x8_to_f32(_mm_srli_si128::<8>(lo)), i8x8_to_f32(hi), i8x8_to_f32(_mm_srli_si128::<8>(hi))]
}

/// 8 four-bit codes: the low (`shift` 0) or high (`shift` 4) nibbles of 8 bytes at `p`, minus `zv`.
///
/// # Safety
/// 8 bytes readable at `p`; AVX2 present.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn q4x8_avx2(p: *const u8, shift: u32, zv: __m128i) -> __m256 {
    // SAFETY: the caller guarantees 8 readable bytes.
    let b = unsafe { _mm_loadl_epi64(p.cast()) };
    i8x8_to_f32(nibbles_minus_zero(b, shift, zv))
}

/// 8 eight-bit codes at `p` minus `zv`, as f32x8.
///
/// # Safety
/// 8 bytes readable at `p`; AVX2 present.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn q8x8_avx2(p: *const u8, zv: __m256i) -> __m256 {
    // SAFETY: the caller guarantees 8 readable bytes.
    let b = unsafe { _mm_loadl_epi64(p.cast()) };
    _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(b), zv))
}

#[target_feature(enable = "avx2,fma")]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s));
    _mm_cvtss_f32(s)
}

/// # Safety
/// See the module comment.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn row_dot_avx2<const NT: usize>(row: Row<'_>, x: &[f32], x_stride: usize, out: &mut [f32; NT]) {
    let gs = row.group_size;
    let codes = row.codes.as_ptr();
    let xp = x.as_ptr();
    let mut racc = [_mm256_setzero_ps(); NT];
    let mut rtail = [0f32; NT];
    for (g, &scale) in row.scales.iter().enumerate() {
        let start = g * gs;
        let end = (start + gs).min(row.len);
        let zero = row.zeros.get(g);
        let mut a0 = [_mm256_setzero_ps(); NT];
        let mut a1 = [_mm256_setzero_ps(); NT];
        let mut tail = [0f32; NT];
        let mut i = start;
        match row.bits {
            Bits::Four => {
                while i < end && !i.is_multiple_of(8) {
                    one(&row, x, x_stride, i, i32::from(zero), &mut tail);
                    i += 1;
                }
                let zv = _mm_set1_epi8(zero as i8);
                loop {
                    if i.is_multiple_of(BLOCK) && i + BLOCK <= end {
                        // SAFETY: block `i / 32` lies inside the row, so its 16 bytes at `i / 2` lie inside
                        // `codes` (`row_bytes` covers every block, padded).
                        let v = unsafe { q4x32_avx2(codes.add(i / 2), zv) };
                        for t in 0..NT {
                            // SAFETY: `t·x_stride + i + 32 <= (NT−1)·x_stride + len <= x.len()`.
                            unsafe {
                                let xt = xp.add(t * x_stride + i);
                                a0[t] = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(xt), a0[t]);
                                a1[t] = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(xt.add(8)), a1[t]);
                                a0[t] = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xt.add(16)), a0[t]);
                                a1[t] = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xt.add(24)), a1[t]);
                            }
                        }
                        i += BLOCK;
                    } else if i + 8 <= end {
                        let (byte, shift) = nibble_at(i);
                        // SAFETY: `i % 8 == 0`, so the 8 bytes at `byte` stay inside block `i / 32`, which
                        // lies inside `codes`.
                        let v = unsafe { q4x8_avx2(codes.add(byte), shift, zv) };
                        for t in 0..NT {
                            // SAFETY: `t·x_stride + i + 8 <= x.len()`.
                            unsafe { a0[t] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xp.add(t * x_stride + i)), a0[t]) };
                        }
                        i += 8;
                    } else {
                        break;
                    }
                }
            }
            Bits::Eight => {
                let zv = _mm256_set1_epi32(i32::from(zero));
                while i + 16 <= end {
                    // SAFETY: `i + 16 <= len == codes.len()`: 16 bytes are readable from `codes + i`.
                    let (v0, v1) = unsafe { (q8x8_avx2(codes.add(i), zv), q8x8_avx2(codes.add(i + 8), zv)) };
                    for t in 0..NT {
                        // SAFETY: `t·x_stride + i + 16 <= x.len()` as above.
                        unsafe {
                            let xt = xp.add(t * x_stride + i);
                            a0[t] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(xt), a0[t]);
                            a1[t] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(xt.add(8)), a1[t]);
                        }
                    }
                    i += 16;
                }
                if i + 8 <= end {
                    // SAFETY: `i + 8 <= len == codes.len()`.
                    let v0 = unsafe { q8x8_avx2(codes.add(i), zv) };
                    for t in 0..NT {
                        // SAFETY: `t·x_stride + i + 8 <= x.len()`.
                        unsafe { a0[t] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(xp.add(t * x_stride + i)), a0[t]) };
                    }
                    i += 8;
                }
            }
        }
        while i < end {
            one(&row, x, x_stride, i, i32::from(zero), &mut tail);
            i += 1;
        }
        let sv = _mm256_set1_ps(scale);
        for t in 0..NT {
            racc[t] = _mm256_fmadd_ps(_mm256_add_ps(a0[t], a1[t]), sv, racc[t]);
            rtail[t] += scale * tail[t];
        }
    }
    for t in 0..NT {
        out[t] = hsum256(racc[t]) + rtail[t];
    }
}

/// # Safety
/// See the module comment (`out.len() >= row.len`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dequant_row_avx2(row: Row<'_>, out: &mut [f32]) {
    let gs = row.group_size;
    let codes = row.codes.as_ptr();
    let op = out.as_mut_ptr();
    for (g, &scale) in row.scales.iter().enumerate() {
        let start = g * gs;
        let end = (start + gs).min(row.len);
        let zero = row.zeros.get(g);
        let sv = _mm256_set1_ps(scale);
        let mut i = start;
        match row.bits {
            Bits::Four => {
                while i < end && !i.is_multiple_of(8) {
                    out[i] = one_value(&row, i, zero, scale);
                    i += 1;
                }
                let zv = _mm_set1_epi8(zero as i8);
                loop {
                    if i.is_multiple_of(BLOCK) && i + BLOCK <= end {
                        // SAFETY: codes as in `row_dot_avx2`; `i + 32 <= len <= out.len()` for the stores.
                        unsafe {
                            let v = q4x32_avx2(codes.add(i / 2), zv);
                            for (k, v) in v.into_iter().enumerate() {
                                _mm256_storeu_ps(op.add(i + 8 * k), _mm256_mul_ps(sv, v));
                            }
                        }
                        i += BLOCK;
                    } else if i + 8 <= end {
                        let (byte, shift) = nibble_at(i);
                        // SAFETY: codes as in `row_dot_avx2`; `i + 8 <= len <= out.len()`.
                        unsafe { _mm256_storeu_ps(op.add(i), _mm256_mul_ps(sv, q4x8_avx2(codes.add(byte), shift, zv))) };
                        i += 8;
                    } else {
                        break;
                    }
                }
            }
            Bits::Eight => {
                let zv = _mm256_set1_epi32(i32::from(zero));
                while i + 8 <= end {
                    // SAFETY: `i + 8 <= len == codes.len() <= out.len()`.
                    unsafe { _mm256_storeu_ps(op.add(i), _mm256_mul_ps(sv, q8x8_avx2(codes.add(i), zv))) };
                    i += 8;
                }
            }
        }
        while i < end {
            out[i] = one_value(&row, i, zero, scale);
            i += 1;
        }
    }
}

// ------------------------------------------------------------------------------------------- AVX-512

/// 16 signed bytes as f32x16.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn i8x16_to_f32(v: __m128i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
}

/// The 32 four-bit codes of one block (16 bytes at `p`) minus `zv`, as two f32x16 in element order.
///
/// # Safety
/// 16 bytes readable at `p`; AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn q4x32_avx512(p: *const u8, zv: __m128i) -> (__m512, __m512) {
    // SAFETY: the caller guarantees 16 readable bytes.
    let b = unsafe { _mm_loadu_si128(p.cast()) };
    (i8x16_to_f32(nibbles_minus_zero(b, 0, zv)), i8x16_to_f32(nibbles_minus_zero(b, 4, zv)))
}

/// 16 four-bit codes: the low (`shift` 0) or high (`shift` 4) nibbles of the 16 bytes at `p`, minus `zv`.
///
/// # Safety
/// 16 bytes readable at `p`; AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn q4x16_avx512(p: *const u8, shift: u32, zv: __m128i) -> __m512 {
    // SAFETY: the caller guarantees 16 readable bytes.
    i8x16_to_f32(nibbles_minus_zero(unsafe { _mm_loadu_si128(p.cast()) }, shift, zv))
}

/// 16 eight-bit codes at `p` minus `zv`, as f32x16.
///
/// # Safety
/// 16 bytes readable at `p`; AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn q8x16_avx512(p: *const u8, zv: __m512i) -> __m512 {
    // SAFETY: the caller guarantees 16 readable bytes.
    let b = unsafe { _mm_loadu_si128(p.cast()) };
    _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(b), zv))
}

/// # Safety
/// See the module comment.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn row_dot_avx512<const NT: usize>(row: Row<'_>, x: &[f32], x_stride: usize, out: &mut [f32; NT]) {
    let gs = row.group_size;
    let codes = row.codes.as_ptr();
    let xp = x.as_ptr();
    let mut racc = [_mm512_setzero_ps(); NT];
    let mut rtail = [0f32; NT];
    for (g, &scale) in row.scales.iter().enumerate() {
        let start = g * gs;
        let end = (start + gs).min(row.len);
        let zero = row.zeros.get(g);
        let mut a0 = [_mm512_setzero_ps(); NT];
        let mut a1 = [_mm512_setzero_ps(); NT];
        let mut tail = [0f32; NT];
        let mut i = start;
        match row.bits {
            Bits::Four => {
                while i < end && !i.is_multiple_of(16) {
                    one(&row, x, x_stride, i, i32::from(zero), &mut tail);
                    i += 1;
                }
                let zv = _mm_set1_epi8(zero as i8);
                loop {
                    if i.is_multiple_of(BLOCK) && i + BLOCK <= end {
                        // SAFETY: block `i / 32` lies inside the row: its 16 bytes at `i / 2` are in `codes`.
                        let (v0, v1) = unsafe { q4x32_avx512(codes.add(i / 2), zv) };
                        for t in 0..NT {
                            // SAFETY: `t·x_stride + i + 32 <= (NT−1)·x_stride + len <= x.len()`.
                            unsafe {
                                let xt = xp.add(t * x_stride + i);
                                a0[t] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xt), a0[t]);
                                a1[t] = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xt.add(16)), a1[t]);
                            }
                        }
                        i += BLOCK;
                    } else if i + 16 <= end {
                        let (byte, shift) = nibble_at(i);
                        // SAFETY: `i % 16 == 0`, so `byte` is the first byte of block `i / 32`, inside `codes`.
                        let v0 = unsafe { q4x16_avx512(codes.add(byte), shift, zv) };
                        for t in 0..NT {
                            // SAFETY: `t·x_stride + i + 16 <= x.len()`.
                            unsafe { a0[t] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xp.add(t * x_stride + i)), a0[t]) };
                        }
                        i += 16;
                    } else {
                        break;
                    }
                }
            }
            Bits::Eight => {
                let zv = _mm512_set1_epi32(i32::from(zero));
                while i + 32 <= end {
                    // SAFETY: `i + 32 <= len == codes.len()`: 32 bytes from `codes + i` are in bounds.
                    let (v0, v1) = unsafe { (q8x16_avx512(codes.add(i), zv), q8x16_avx512(codes.add(i + 16), zv)) };
                    for t in 0..NT {
                        // SAFETY: `t·x_stride + i + 32 <= x.len()`.
                        unsafe {
                            let xt = xp.add(t * x_stride + i);
                            a0[t] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xt), a0[t]);
                            a1[t] = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xt.add(16)), a1[t]);
                        }
                    }
                    i += 32;
                }
                if i + 16 <= end {
                    // SAFETY: `i + 16 <= len == codes.len()`.
                    let v0 = unsafe { q8x16_avx512(codes.add(i), zv) };
                    for t in 0..NT {
                        // SAFETY: `t·x_stride + i + 16 <= x.len()`.
                        unsafe { a0[t] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xp.add(t * x_stride + i)), a0[t]) };
                    }
                    i += 16;
                }
            }
        }
        while i < end {
            one(&row, x, x_stride, i, i32::from(zero), &mut tail);
            i += 1;
        }
        let sv = _mm512_set1_ps(scale);
        for t in 0..NT {
            racc[t] = _mm512_fmadd_ps(_mm512_add_ps(a0[t], a1[t]), sv, racc[t]);
            rtail[t] += scale * tail[t];
        }
    }
    for t in 0..NT {
        out[t] = _mm512_reduce_add_ps(racc[t]) + rtail[t];
    }
}

/// # Safety
/// See the module comment (`out.len() >= row.len`).
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn dequant_row_avx512(row: Row<'_>, out: &mut [f32]) {
    let gs = row.group_size;
    let codes = row.codes.as_ptr();
    let op = out.as_mut_ptr();
    for (g, &scale) in row.scales.iter().enumerate() {
        let start = g * gs;
        let end = (start + gs).min(row.len);
        let zero = row.zeros.get(g);
        let sv = _mm512_set1_ps(scale);
        let mut i = start;
        match row.bits {
            Bits::Four => {
                while i < end && !i.is_multiple_of(16) {
                    out[i] = one_value(&row, i, zero, scale);
                    i += 1;
                }
                let zv = _mm_set1_epi8(zero as i8);
                loop {
                    if i.is_multiple_of(BLOCK) && i + BLOCK <= end {
                        // SAFETY: codes as in `row_dot_avx512`; `i + 32 <= len <= out.len()` for the stores.
                        unsafe {
                            let (v0, v1) = q4x32_avx512(codes.add(i / 2), zv);
                            _mm512_storeu_ps(op.add(i), _mm512_mul_ps(sv, v0));
                            _mm512_storeu_ps(op.add(i + 16), _mm512_mul_ps(sv, v1));
                        }
                        i += BLOCK;
                    } else if i + 16 <= end {
                        let (byte, shift) = nibble_at(i);
                        // SAFETY: codes as in `row_dot_avx512`; `i + 16 <= len <= out.len()`.
                        unsafe { _mm512_storeu_ps(op.add(i), _mm512_mul_ps(sv, q4x16_avx512(codes.add(byte), shift, zv))) };
                        i += 16;
                    } else {
                        break;
                    }
                }
            }
            Bits::Eight => {
                let zv = _mm512_set1_epi32(i32::from(zero));
                while i + 16 <= end {
                    // SAFETY: `i + 16 <= len == codes.len() <= out.len()`.
                    unsafe { _mm512_storeu_ps(op.add(i), _mm512_mul_ps(sv, q8x16_avx512(codes.add(i), zv))) };
                    i += 16;
                }
            }
        }
        while i < end {
            out[i] = one_value(&row, i, zero, scale);
            i += 1;
        }
    }
}

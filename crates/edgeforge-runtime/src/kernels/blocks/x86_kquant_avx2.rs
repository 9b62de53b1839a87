//! AVX2 kernels of the K-quant formats (`kquant`), also used on AVX-VNNI CPUs: per super-block the codes are
//! unpacked in registers to bytes in element order (32 per register: two sub-blocks of Q6_K, one of Q4_K),
//! multiplied by the activation codes with `vpmaddubsw` (unsigned codes of at most 63 times codes of at most
//! 127: pairs under 16,002, no i16 saturation), then by their sub-block scales with `vpmaddwd` (exact in i32),
//! and reduced once per super-block to `kquant`'s exact integers; the float steps are `kquant::step`, so
//! results are bit-identical to the portable kernel (tested). As llama.cpp's AVX2 kernels compute these
//! integers; our own code (no maintained crate multiplies ggml's K-quant blocks).

// Sub-block loops index several arrays in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::format::{half_at, BlockFormat};
use super::kquant::{by_format, q4_scales, q6_scales, step, Q8KView, QK};

/// The sum of the eight i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s)))
}

/// Σ over the 32 bytes of `u` (unsigned) times `s` (signed), each product pair times its lane's `scale`
/// (i16), in i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scaled_dot(u: __m256i, s: __m256i, scale: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), scale)
}

/// 32 bytes at `p + o`.
///
/// # Safety
/// 32 readable bytes at `p + o`; AVX2 present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load(p: *const u8, o: usize) -> __m256i {
    // SAFETY: the caller guarantees the bytes are readable.
    unsafe { _mm256_loadu_si256(p.add(o).cast()) }
}

/// Q4_K row · token.
///
/// # Safety
/// `row` is whole Q4_K blocks, at least `x.nb` of them; `x` holds `x.nb` super-blocks; AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k(row: &[u8], x: Q8KView<'_>) -> f32 {
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = 0f32;
    for i in 0..x.nb {
        let b = &row[i * 144..(i + 1) * 144];
        let Some((sc, msum)) = q4_scales(b, &x.bsums[16 * i..16 * i + 16]) else { return f32::NAN };
        // Scales are 6-bit (0..63): exact as i16.
        let sc = sc.map(|s| s as i16);
        let xq = x.qs[i * QK..(i + 1) * QK].as_ptr().cast::<u8>();
        let mut isum = _mm256_setzero_si256();
        for c in 0..4 {
            // SAFETY: bytes 16 + 32c .. + 32 of the 144-byte block (chunk c of qs), and activation codes
            // 64c .. 64c + 64 of the token's 256 of super-block i.
            let (q, xl, xh) = unsafe { (load(b.as_ptr(), 16 + 32 * c), load(xq, 64 * c), load(xq, 64 * c + 32)) };
            // Low nibbles: sub-block 2c (elements 64c..); high nibbles: sub-block 2c + 1 (64c + 32..).
            let (lo, hi) = (_mm256_and_si256(q, low), _mm256_and_si256(_mm256_srli_epi16::<4>(q), low));
            let dl = scaled_dot(lo, xl, _mm256_set1_epi16(sc[2 * c]));
            let dh = scaled_dot(hi, xh, _mm256_set1_epi16(sc[2 * c + 1]));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(dl, dh));
        }
        acc = step(acc, x.d[i], half_at(b, 0), half_at(b, 2), hsum_i32(isum), msum);
    }
    acc
}

/// Q6_K row · token.
///
/// # Safety
/// `row` is whole Q6_K blocks, at least `x.nb` of them; `x` holds `x.nb` super-blocks; AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k(row: &[u8], x: Q8KView<'_>) -> f32 {
    let (low, top) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    let mut acc = 0f32;
    for i in 0..x.nb {
        let b = &row[i * 210..(i + 1) * 210];
        let (sc, offset) = q6_scales(b, &x.bsums[16 * i..16 * i + 16]);
        // Scales are i8: exact as i16.
        let sc = sc.map(|s| s as i16);
        let xq = x.qs[i * QK..(i + 1) * QK].as_ptr().cast::<u8>();
        let mut isum = _mm256_setzero_si256();
        for h in 0..2 {
            // SAFETY: ql[64h..64h + 64] and qh[32h..32h + 32] lie inside the 210-byte block.
            let (ql0, ql1, qh) = unsafe { (load(b.as_ptr(), 64 * h), load(b.as_ptr(), 64 * h + 32), load(b.as_ptr(), 128 + 32 * h)) };
            // Elements 128h + 32k + l: low nibbles of ql[l] (k = 0), of ql[32 + l] (1), high nibbles (2, 3),
            // with bits 2k, 2k + 1 of qh[l] as bits 4 and 5 (16-bit shifts: the masks drop what crosses bytes).
            let codes = [
                _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_and_si256(_mm256_slli_epi16::<4>(qh), top)),
                _mm256_or_si256(_mm256_and_si256(ql1, low), _mm256_and_si256(_mm256_slli_epi16::<2>(qh), top)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low), _mm256_and_si256(qh, top)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low), _mm256_and_si256(_mm256_srli_epi16::<2>(qh), top)),
            ];
            for (k, q) in codes.into_iter().enumerate() {
                // Sub-blocks 8h + 2k (first 16 codes) and 8h + 2k + 1 (next 16).
                let j = 8 * h + 2 * k;
                let scale = _mm256_set_m128i(_mm_set1_epi16(sc[j + 1]), _mm_set1_epi16(sc[j]));
                // SAFETY: activation codes 128h + 32k .. + 32 of the token's 256 of super-block i.
                let xv = unsafe { load(xq, 128 * h + 32 * k) };
                isum = _mm256_add_epi32(isum, scaled_dot(q, xv, scale));
            }
        }
        acc = step(acc, x.d[i], half_at(b, 208), 0.0, hsum_i32(isum) - offset, 0);
    }
    acc
}

/// `kquant::row_dot` on AVX2.
///
/// # Safety
/// `row` holds at least `x.nb` whole blocks of `format` (Q4_K or Q6_K); the CPU supports AVX2, FMA and F16C.
pub(super) unsafe fn row_dot(format: BlockFormat, row: &[u8], x: Q8KView<'_>) -> f32 {
    // SAFETY (both): forwarded from this function's contract.
    by_format(format, || unsafe { q4k(row, x) }, || unsafe { q6k(row, x) })
}

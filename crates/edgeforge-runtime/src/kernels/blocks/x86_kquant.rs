//! AVX-512 VNNI kernels of the K-quant formats (`kquant`): per super-block, the codes are unpacked in
//! registers to bytes in element order (64 per register), dotted with the activation codes by `vpdpbusd` (each
//! i32 lane: four products of one sub-block), multiplied lane-wise by the lane's sub-block scale, and reduced
//! once per super-block to `kquant`'s exact integers; the float steps are `kquant::step`, so results are
//! bit-identical to the portable kernel (tested). Our own kernels: no maintained crate multiplies ggml's
//! K-quant blocks.

// Token and sub-block loops index several arrays in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::format::{half_at, BlockFormat};
use super::kquant::{by_format, q4_scales, q6_scales, step, Q8KView, QK};

/// Two 32-byte runs of activation codes, at `p + a` and `p + b`, as one 64-byte register.
///
/// # Safety
/// 32 readable bytes at `p + a` and at `p + b`; AVX-512F present.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn two_runs(p: *const i8, a: usize, b: usize) -> __m512i {
    // SAFETY: the caller guarantees both runs are readable.
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_loadu_si256(p.add(a).cast())), _mm256_loadu_si256(p.add(b).cast())) }
}

/// Each i32 lane of `v` times the scale of its sub-block: lane `l` takes `scales[l / per]` (`per` lanes per
/// sub-block), for 16 / `per` consecutive scales from `scales`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn scaled(v: __m512i, scales: [i32; 16]) -> __m512i {
    // SAFETY: `scales` is 16 i32.
    _mm512_mullo_epi32(v, unsafe { _mm512_loadu_si512(scales.as_ptr().cast()) })
}

/// Lane scales: `s[k]` repeated `16 / s.len()` times.
#[inline(always)]
fn lanes(s: &[i32]) -> [i32; 16] {
    let per = 16 / s.len();
    std::array::from_fn(|l| s[l / per])
}

/// Q4_K row · token.
///
/// # Safety
/// `row` is whole Q4_K blocks, at least `x.nb` of them; the CPU has the features below.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4k(row: &[u8], x: Q8KView<'_>) -> f32 {
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = 0f32;
    for i in 0..x.nb {
        let b = &row[i * 144..(i + 1) * 144];
        let Some((sc, msum)) = q4_scales(b, &x.bsums[16 * i..16 * i + 16]) else { return f32::NAN };
        let xq = x.qs[i * QK..(i + 1) * QK].as_ptr();
        let mut isum = _mm512_setzero_si512();
        for c in 0..2 {
            // SAFETY: bytes 16 + 64c .. 16 + 64c + 64 of the 144-byte block: chunks 2c and 2c + 1 of qs.
            let q = unsafe { _mm512_loadu_si512(b.as_ptr().add(16 + 64 * c).cast()) };
            let (lo, hi) = (_mm512_and_si512(q, low), _mm512_and_si512(_mm512_srli_epi16::<4>(q), low));
            // Low nibbles: sub-blocks 4c (elements 128c..+32) and 4c + 2 (128c + 64..+32); high: 4c + 1, 4c + 3.
            // SAFETY: all four runs lie inside the token's 256 codes of super-block i.
            let (xl, xh) = unsafe { (two_runs(xq, 128 * c, 128 * c + 64), two_runs(xq, 128 * c + 32, 128 * c + 96)) };
            let dl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl);
            let dh = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, xh);
            isum = _mm512_add_epi32(isum, scaled(dl, lanes(&[sc[4 * c], sc[4 * c + 2]])));
            isum = _mm512_add_epi32(isum, scaled(dh, lanes(&[sc[4 * c + 1], sc[4 * c + 3]])));
        }
        acc = step(acc, x.d[i], half_at(b, 0), half_at(b, 2), _mm512_reduce_add_epi32(isum), msum);
    }
    acc
}

/// Q6_K row · token.
///
/// # Safety
/// `row` is whole Q6_K blocks, at least `x.nb` of them; the CPU has the features below.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6k(row: &[u8], x: Q8KView<'_>) -> f32 {
    let (low, two) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x03));
    // Per 16-bit lane shifts of qh: the register's low half serves the first code of a pair, the high half
    // the second (bits 0-1 and 2-3, or 4-5 and 6-7).
    let shift_a = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    let shift_b = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(6));
    let mut acc = 0f32;
    for i in 0..x.nb {
        let b = &row[i * 210..(i + 1) * 210];
        let (sc, offset) = q6_scales(b, &x.bsums[16 * i..16 * i + 16]);
        let xq = x.qs[i * QK..(i + 1) * QK].as_ptr();
        let mut isum = _mm512_setzero_si512();
        for h in 0..2 {
            // SAFETY: ql[64h..64h + 64] and qh[32h..32h + 32] lie inside the 210-byte block.
            let (ql, qh) = unsafe { (_mm512_loadu_si512(b.as_ptr().add(64 * h).cast()), _mm256_loadu_si256(b.as_ptr().add(128 + 32 * h).cast())) };
            let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), qh);
            let high = |shift: __m512i| _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srlv_epi16(qh, shift), two));
            // Elements 128h + 0..64 (low nibbles of ql[0..64]) and 128h + 64..128 (high nibbles).
            let qa = _mm512_or_si512(_mm512_and_si512(ql, low), high(shift_a));
            let qb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), low), high(shift_b));
            // SAFETY: 64 codes from 128h and from 128h + 64, inside the token's 256 of super-block i.
            let (xa, xb) = unsafe { (_mm512_loadu_si512(xq.add(128 * h).cast()), _mm512_loadu_si512(xq.add(128 * h + 64).cast())) };
            let da = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qa, xa);
            let db = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qb, xb);
            // Lane l covers elements 4l..4l + 4 of its 64: sub-block 8h + l / 4 (qa) or 8h + 4 + l / 4 (qb).
            isum = _mm512_add_epi32(isum, scaled(da, lanes(&sc[8 * h..8 * h + 4])));
            isum = _mm512_add_epi32(isum, scaled(db, lanes(&sc[8 * h + 4..8 * h + 8])));
        }
        acc = step(acc, x.d[i], half_at(b, 208), 0.0, _mm512_reduce_add_epi32(isum) - offset, 0);
    }
    acc
}

/// `kquant::row_dot` on AVX-512 VNNI.
///
/// # Safety
/// `row` holds at least `x.nb` whole blocks of `format` (Q4_K or Q6_K); the CPU supports AVX-512
/// F/BW/VL/VNNI, AVX2, FMA and F16C.
pub(super) unsafe fn row_dot(format: BlockFormat, row: &[u8], x: Q8KView<'_>) -> f32 {
    // SAFETY (both): forwarded from this function's contract.
    by_format(format, || unsafe { q4k(row, x) }, || unsafe { q6k(row, x) })
}

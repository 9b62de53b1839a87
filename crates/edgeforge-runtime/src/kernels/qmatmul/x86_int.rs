//! x86 kernels of the packed integer path (`interleave`): per block of 32 elements, 16 rows at once. Each
//! 64-byte chunk of codes holds four codes of each of the 16 rows; they are multiplied, as unsigned bytes, by
//! four activation codes broadcast to every 32-bit lane, so lane `r` accumulates row `r`'s dot, and the zero
//! point times the activation block's integer sum is subtracted in integers: each lane holds exactly the
//! integer of `interleave::group_dot`, and the float steps are the same ones in the same order, so results
//! are bit-identical to the scalar kernel (tested).
//! - AVX-512 VNNI: `vpdpbusd` on 512-bit registers (16 rows per instruction).
//! - AVX2: two 256-bit halves of 8 rows; `vpmaddubsw` + `vpmaddwd`. 4-bit codes (≤ 15) cannot saturate the
//!   16-bit pair sums; 8-bit codes are taken as `c − 128` with the sign trick (`|w| · sign(x, w)`, pairs at
//!   most 2 · 128 · 127 < 2^15) and `128 · Σx` added back.

// Token loops index several arrays in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::interleave::{GroupArgs, GROUP};
use super::packed::BLOCK;

/// Four activation codes (bytes `o .. o + 4` at `p`) as one i32.
///
/// # Safety
/// 4 readable bytes at `p + o`.
#[inline(always)]
unsafe fn quad(p: *const i8, o: usize) -> i32 {
    // SAFETY: the caller guarantees 4 readable bytes at `p + o`.
    unsafe { p.add(o).cast::<i32>().read_unaligned() }
}

/// `out[t][r]` := row `r` of the group dotted with token `t` (`t < NT`), 8-bit codes when `B8`, on AVX-512 VNNI.
///
/// # Safety
/// `a.codes` holds `a.x.nb` blocks of 16 rows (`16 · 16` or `16 · 32` bytes each), `a.scales`/`a.zeros` hold
/// `16 · ceil(nb / bpg)` values, `bpg >= 1`, `a.x` holds at least `NT` tokens of `nb` blocks; the CPU has
/// AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn group_dot_avx512<const B8: bool, const NT: usize>(a: GroupArgs<'_>, out: &mut [[f32; GROUP]; NT]) {
    let x = a.x;
    let nb = x.nb;
    let bb = if B8 { GROUP * BLOCK } else { GROUP * BLOCK / 2 };
    let low = _mm512_set1_epi8(0x0F);
    let (xq, xd, xs) = (x.qs.as_ptr(), x.d.as_ptr(), x.sq.as_ptr());
    let mut acc = [_mm512_setzero_ps(); NT];
    let (mut sw, mut z) = (_mm512_setzero_ps(), _mm512_setzero_si512());
    for b in 0..nb {
        if b % a.bpg == 0 {
            let q = b / a.bpg;
            // SAFETY: quantization group `q < ceil(nb / bpg)` has 16 scales and 16 zero points.
            unsafe {
                sw = _mm512_loadu_ps(a.scales.as_ptr().add(q * GROUP));
                z = _mm512_cvtepu8_epi32(_mm_loadu_si128(a.zeros.as_ptr().add(q * GROUP).cast()));
            }
        }
        // SAFETY: block `b < nb` lies inside `a.codes`.
        let col = unsafe { a.codes.as_ptr().add(b * bb) };
        // SAFETY: chunk `c` is 64 bytes inside the block (`c` < 4 for 4 bits, < 8 for 8 bits).
        let chunk = |c: usize| unsafe { _mm512_loadu_si512(col.add(64 * c).cast()) };
        for t in 0..NT {
            let k = t * nb + b;
            // SAFETY: token `t < NT` has `nb` blocks in `x`: block `k` (32 codes, its scale and sum) is inside.
            let (xb, dx, sq) = unsafe { (xq.add(k * BLOCK), *xd.add(k), *xs.add(k)) };
            // SAFETY (every `quad`): byte offsets below 32 inside the block's codes.
            let q4 = |o: usize| _mm512_set1_epi32(unsafe { quad(xb, o) });
            let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            if B8 {
                for c in (0..8).step_by(2) {
                    a0 = _mm512_dpbusd_epi32(a0, chunk(c), q4(4 * c));
                    a1 = _mm512_dpbusd_epi32(a1, chunk(c + 1), q4(4 * c + 4));
                }
            } else {
                for c in 0..4 {
                    let bytes = chunk(c);
                    a0 = _mm512_dpbusd_epi32(a0, _mm512_and_si512(bytes, low), q4(4 * c));
                    a1 = _mm512_dpbusd_epi32(a1, _mm512_and_si512(_mm512_srli_epi16::<4>(bytes), low), q4(16 + 4 * c));
                }
            }
            let dot = _mm512_sub_epi32(_mm512_add_epi32(a0, a1), _mm512_mullo_epi32(z, _mm512_set1_epi32(sq)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(sw, _mm512_set1_ps(dx)), acc[t]);
        }
    }
    for t in 0..NT {
        // SAFETY: `out[t]` is 16 floats.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
    }
}

/// Sum of the products of unsigned bytes `w` and signed bytes `x` in each 32-bit lane (four per lane), for
/// `w` ≤ 15 (no 16-bit saturation).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_u4(w: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
}

/// Sum of the products of signed bytes `w` (≥ −128) and `x` (±127) in each 32-bit lane: `|w| · sign(x, w)`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_i8(w: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1))
}

/// `group_dot_avx512` on AVX2: the two halves of 8 rows one after the other.
///
/// # Safety
/// As `group_dot_avx512`, with AVX2 and FMA instead of AVX-512.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn group_dot_avx2<const B8: bool, const NT: usize>(a: GroupArgs<'_>, out: &mut [[f32; GROUP]; NT]) {
    for h in 0..2 {
        // SAFETY: forwarded; `h < 2` selects bytes `32h .. 32h + 32` of every 64-byte chunk and rows `8h..`.
        unsafe { half_avx2::<B8, NT>(a, h, out) };
    }
}

/// Rows `8h .. 8h + 8` of `group_dot_avx2`.
///
/// # Safety
/// As `group_dot_avx2`, `h < 2`.
#[target_feature(enable = "avx2,fma")]
unsafe fn half_avx2<const B8: bool, const NT: usize>(a: GroupArgs<'_>, h: usize, out: &mut [[f32; GROUP]; NT]) {
    let x = a.x;
    let nb = x.nb;
    let bb = if B8 { GROUP * BLOCK } else { GROUP * BLOCK / 2 };
    let low = _mm256_set1_epi8(0x0F);
    let (xq, xd, xs) = (x.qs.as_ptr(), x.d.as_ptr(), x.sq.as_ptr());
    let mut acc = [_mm256_setzero_ps(); NT];
    let (mut sw, mut z) = (_mm256_setzero_ps(), _mm256_setzero_si256());
    for b in 0..nb {
        if b % a.bpg == 0 {
            let q = b / a.bpg;
            // SAFETY: quantization group `q` has 16 scales and zero points; this half reads 8 of each.
            unsafe {
                sw = _mm256_loadu_ps(a.scales.as_ptr().add(q * GROUP + 8 * h));
                z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(a.zeros.as_ptr().add(q * GROUP + 8 * h).cast()));
            }
            if B8 {
                // 8-bit codes are dotted as `c − 128`: the offset becomes `z − 128`.
                z = _mm256_sub_epi32(z, _mm256_set1_epi32(128));
            }
        }
        // SAFETY: block `b < nb` lies inside `a.codes`; this half's 32 bytes of chunk `c` are inside the block.
        let col = unsafe { a.codes.as_ptr().add(b * bb + 32 * h) };
        let chunk = |c: usize| unsafe { _mm256_loadu_si256(col.add(64 * c).cast()) };
        for t in 0..NT {
            let k = t * nb + b;
            // SAFETY: token `t < NT` has `nb` blocks in `x`.
            let (xb, dx, sq) = unsafe { (xq.add(k * BLOCK), *xd.add(k), *xs.add(k)) };
            // SAFETY (every `quad`): byte offsets below 32 inside the block's codes.
            let q4 = |o: usize| _mm256_set1_epi32(unsafe { quad(xb, o) });
            let mut s = _mm256_setzero_si256();
            if B8 {
                let flip = _mm256_set1_epi8(-128);
                for c in 0..8 {
                    s = _mm256_add_epi32(s, dot_i8(_mm256_xor_si256(chunk(c), flip), q4(4 * c)));
                }
            } else {
                for c in 0..4 {
                    let bytes = chunk(c);
                    s = _mm256_add_epi32(s, dot_u4(_mm256_and_si256(bytes, low), q4(4 * c)));
                    s = _mm256_add_epi32(s, dot_u4(_mm256_and_si256(_mm256_srli_epi16::<4>(bytes), low), q4(16 + 4 * c)));
                }
            }
            let dot = _mm256_sub_epi32(s, _mm256_mullo_epi32(z, _mm256_set1_epi32(sq)));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(sw, _mm256_set1_ps(dx)), acc[t]);
        }
    }
    for t in 0..NT {
        // SAFETY: `out[t][8h..8h + 8]` is 8 floats.
        unsafe { _mm256_storeu_ps(out[t].as_mut_ptr().add(8 * h), acc[t]) };
    }
}

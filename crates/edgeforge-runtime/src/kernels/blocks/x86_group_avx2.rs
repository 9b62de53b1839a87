//! The 256-bit kernels of the interleaved layout (`interleave`), for CPUs without AVX-512: AVX2 (`vpmaddubsw`
//! then `vpmaddwd`) and AVX-VNNI (the VEX `vpdpbusd`). A block column's 16 rows are two halves of 8 (one i32
//! lane per row); each 64-byte code chunk holds four codes of every row, its first 32 bytes those of rows
//! 0..8, the next 32 those of rows 8..16. Four codes of a row times four activation codes broadcast to every
//! lane give that row's partial dot in its lane, as in the AVX-512 kernel (`x86_group`).
//!
//! Integers: the nibble formats' codes (at most 31) go in unsigned and their offset (`8` or `16` times the
//! activation block's code sum) is subtracted in integers; with AVX2 the `vpmaddubsw` results of several
//! chunks are added in i16 before `vpmaddwd` (`i16_pairs`: sums stay under 32,768). Signed values (Q8_0 bytes, IQ4_NL
//! grid values) take the sign trick on AVX2, `|w| · sign(x, w)` (pairs at most 2 · 128 · 127 = 32,512, under
//! i16's limit), and `v + 128` with a `128 · Σx` offset on AVX-VNNI, as on AVX-512. Either way each lane holds
//! exactly the signed dot of `interleave::group_dot`, and the float steps are the reference's, in its order:
//! results are bit-identical to the portable kernel (tested).

// Token loops index several accumulator arrays in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use edgeforge_core::blocks::IQ4_NL_GRID;

use super::format::{BlockFormat, Offset, BLOCK};
use super::interleave::{column_bytes, GROUP};
use super::q8::Q8View;
use super::DotIsa;

/// Formats by index, for the const parameter.
const FORMATS: [BlockFormat; 6] = BlockFormat::ALL;

/// Rows per half of a group (the i32 lanes of a 256-bit register).
const HALF: usize = 8;

/// How far ahead the kernels prefetch weight bytes (as `x86_group`).
const PREFETCH_BYTES: usize = 1536;

/// Four activation codes (bytes `o .. o + 4` at `p`) in every 32-bit lane.
///
/// # Safety
/// 4 readable bytes at `p + o`; AVX2 present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn quad(p: *const i8, o: usize) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p + o`.
    _mm256_set1_epi32(unsafe { p.add(o).cast::<i32>().read_unaligned() })
}

/// 0x10 in byte `i` of each 32-bit lane where bit `4 · odd + i` of byte `j` of the lane is set: the fifth
/// bits of four codes, from the row's 32 high bits in its lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn fifth_bits(qh: __m256i, j: i8, odd: bool) -> __m256i {
    let rep = _mm256_setr_epi8(
        j, j, j, j, 4 + j, 4 + j, 4 + j, 4 + j, 8 + j, 8 + j, 8 + j, 8 + j, 12 + j, 12 + j, 12 + j, 12 + j, //
        j, j, j, j, 4 + j, 4 + j, 4 + j, 4 + j, 8 + j, 8 + j, 8 + j, 8 + j, 12 + j, 12 + j, 12 + j, 12 + j,
    );
    let bits = _mm256_set1_epi32(if odd { 0x8040_2010_u32 as i32 } else { 0x0804_0201 });
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(qh, rep), bits), bits);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Where the two activation quads of pair `c` start in a block: elements `4c` and `16 + 4c` (low and high
/// nibbles of code chunk `c`) or, for Q8_0, `8c` and `8c + 4` (chunks `2c` and `2c + 1`).
#[inline(always)]
fn pair_offsets(format: BlockFormat, c: usize) -> (usize, usize) {
    if format == BlockFormat::Q8_0 {
        (8 * c, 8 * c + 4)
    } else {
        (4 * c, 16 + 4 * c)
    }
}

/// The half's scales, minimums (zero where the format has none) and high bits (zero likewise).
///
/// # Safety
/// `col` is a whole block column of `FORMATS[F]`; `h` < 2; AVX2 and F16C present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn half_fields<const F: usize>(col: *const u8, h: usize) -> (__m256, __m256, __m256i) {
    let format = FORMATS[F];
    // SAFETY: the 8 scales (16 bytes at 16h), minimums (after the 16 scales) and high bits (4 bytes per row
    // from 16 · qh_at) of rows 8h.. are fields of the block column, read only for formats that have them.
    unsafe {
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col.add(2 * HALF * h).cast()));
        let mw = if format.offset() == Offset::Min { _mm256_cvtph_ps(_mm_loadu_si128(col.add(2 * GROUP + 2 * HALF * h).cast())) } else { _mm256_setzero_ps() };
        let qh = match format.qh_at() {
            Some(at) => _mm256_loadu_si256(col.add(GROUP * at + 4 * HALF * h).cast()),
            None => _mm256_setzero_si256(),
        };
        (dw, mw, qh)
    }
}

/// The weight values of pair `c` (0..4, see `pair_offsets`) of half `h` of a block column: unsigned codes for
/// the nibble formats (fifth bits from `qh`), signed values for Q8_0 and IQ4_NL.
///
/// # Safety
/// `col` is a whole block column of `FORMATS[F]`; `h` < 2, `c` < 4; AVX2 present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn pair<const F: usize>(col: *const u8, h: usize, c: usize, qh: __m256i) -> (__m256i, __m256i) {
    let format = FORMATS[F];
    // SAFETY: the code chunks are the 64-byte runs after the fields; chunk `c` (< 4, or < 8 for Q8_0's
    // `2c + 1`) is inside the block column, and rows 8h.. are its bytes 32h .. 32h + 32.
    let chunk = |k: usize| unsafe { _mm256_loadu_si256(col.add(GROUP * format.qs_at() + 64 * k + 4 * HALF * h).cast()) };
    if format == BlockFormat::Q8_0 {
        return (chunk(2 * c), chunk(2 * c + 1));
    }
    let (bytes, low) = (chunk(c), _mm256_set1_epi8(0x0F));
    let (lo, hi) = (_mm256_and_si256(bytes, low), _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), low));
    if format.qh_at().is_some() {
        // Codes 4c.. take bits 4c.. of their row's high bits (byte c / 2), codes 16 + 4c.. bits 16 + 4c...
        let (j, odd) = ((c / 2) as i8, c % 2 == 1);
        return (_mm256_or_si256(lo, fifth_bits(qh, j, odd)), _mm256_or_si256(hi, fifth_bits(qh, 2 + j, odd)));
    }
    if format == BlockFormat::IQ4_NL {
        // SAFETY: the grid is 16 bytes.
        let grid = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(IQ4_NL_GRID.as_ptr().cast()) });
        return (_mm256_shuffle_epi8(grid, lo), _mm256_shuffle_epi8(grid, hi));
    }
    (lo, hi)
}

/// Pairs whose `vpmaddubsw` results AVX2 may add up in i16 before widening them: 4 for the 4-bit codes
/// (8 · 2 · 15 · 127 = 30,480), 2 for the 5-bit ones (4 · 2 · 31 · 127 = 31,496), 0 for signed values (each
/// pair of products may reach 32,512: widened at once).
const fn i16_pairs(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => 4,
        BlockFormat::Q5_0 | BlockFormat::Q5_1 => 2,
        _ => 0,
    }
}

/// The four-code dots of (`u0`, `s0`) and (`u1`, `s1`) per i32 lane added to `a`, AVX2: into the i16 sums
/// `a16` when `narrow` (then `widen_avx2` after `i16_pairs` pairs), else widened at once.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot2_avx2(a: &mut __m256i, a16: &mut __m256i, [u0, s0, u1, s1]: [__m256i; 4], narrow: bool) {
    let (p0, p1) = (_mm256_maddubs_epi16(u0, s0), _mm256_maddubs_epi16(u1, s1));
    if narrow {
        *a16 = _mm256_add_epi16(*a16, _mm256_add_epi16(p0, p1));
    } else {
        let ones = _mm256_set1_epi16(1);
        *a = _mm256_add_epi32(*a, _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones)));
    }
}

/// `a += a16` widened to i32 lanes (pairs of i16 sums), `a16 := 0`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn widen_avx2(a: &mut __m256i, a16: &mut __m256i) {
    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*a16, _mm256_set1_epi16(1)));
    *a16 = _mm256_setzero_si256();
}

/// `dot2_avx2` with AVX-VNNI's `vpdpbusd`: exact in i32, nothing kept in i16.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
fn dot2_avxvnni(a: &mut __m256i, _a16: &mut __m256i, [u0, s0, u1, s1]: [__m256i; 4], _narrow: bool) {
    *a = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(*a, u0, s0), u1, s1);
}

/// `widen_avx2` for AVX-VNNI: nothing to widen.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
fn widen_avxvnni(_a: &mut __m256i, _a16: &mut __m256i) {}

/// One kernel per instruction set: the same loop around `$dot2` and `$widen`. `$flip`: signed values enter as
/// `v + 128` (exact dot products in i32) rather than through the sign trick (i16 pairs).
macro_rules! group_kernel {
    ($name:ident, $features:literal, $dot2:ident, $widen:ident, $flip:literal) => {
        /// Halves `h0 .. h0 + H` (rows `8 · h0 ..`) of `out[t]` := the group's rows dotted with token `t`.
        ///
        /// # Safety
        /// `group` points at `x.nb` whole block columns of `FORMATS[F]`; `x` holds at least `NT` tokens of
        /// `x.nb` blocks; `h0 + H <= 2`; the CPU has the features below.
        #[target_feature(enable = $features)]
        unsafe fn $name<const F: usize, const NT: usize, const H: usize>(group: *const u8, x: Q8View<'_>, h0: usize, out: &mut [[f32; GROUP]; NT]) {
            let format = FORMATS[F];
            let (cb, nb) = (column_bytes(format), x.nb);
            let (signed, with_min) = (format.offset() == Offset::None, format.offset() == Offset::Min);
            let bias = match format.offset() {
                Offset::Const(k) => k as i32,
                Offset::None if $flip => 128,
                _ => 0,
            };
            let (xq, xd, xs, xs16) = (x.qs.as_ptr(), x.d.as_ptr(), x.sq.as_ptr(), x.s16.as_ptr());
            let mut acc = [[_mm256_setzero_ps(); H]; NT];
            let mut off = [[_mm256_setzero_ps(); H]; NT];
            for b in 0..nb {
                // SAFETY: block column `b < nb` lies inside the group the caller vouches for.
                let col = unsafe { group.add(b * cb) };
                _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(PREFETCH_BYTES).cast());
                for hh in 0..H {
                    // SAFETY: `col` is a whole block column and `h0 + hh < 2` (the caller's contract).
                    let (dw, mw, qh) = unsafe { half_fields::<F>(col, h0 + hh) };
                    let (mut a, mut a16) = ([_mm256_setzero_si256(); NT], [_mm256_setzero_si256(); NT]);
                    let narrow = i16_pairs(format);
                    for c in 0..4 {
                        // SAFETY: as above, `c < 4`.
                        let (w0, w1) = unsafe { pair::<F>(col, h0 + hh, c, qh) };
                        let (u0, u1) = match (signed, $flip) {
                            (false, _) => (w0, w1),
                            (true, true) => (_mm256_xor_si256(w0, _mm256_set1_epi8(-128)), _mm256_xor_si256(w1, _mm256_set1_epi8(-128))),
                            (true, false) => (_mm256_abs_epi8(w0), _mm256_abs_epi8(w1)),
                        };
                        let (o0, o1) = pair_offsets(format, c);
                        for t in 0..NT {
                            // SAFETY: token `t < NT` has `nb` blocks in `x`; both quads lie in block `t · nb + b`.
                            let (x0, x1) = unsafe {
                                let xb = xq.add((t * nb + b) * BLOCK);
                                (quad(xb, o0), quad(xb, o1))
                            };
                            let (s0, s1) = if signed && !$flip { (_mm256_sign_epi8(x0, w0), _mm256_sign_epi8(x1, w1)) } else { (x0, x1) };
                            $dot2(&mut a[t], &mut a16[t], [u0, s0, u1, s1], narrow > 0);
                            if narrow > 0 && (c + 1) % narrow == 0 {
                                $widen(&mut a[t], &mut a16[t]);
                            }
                        }
                    }
                    for t in 0..NT {
                        let k = t * nb + b;
                        // SAFETY: block `k` of `x` exists (as above): its scale and sums.
                        let (dx, sq, s16) = unsafe { (*xd.add(k), *xs.add(k), *xs16.add(k)) };
                        let dot = _mm256_sub_epi32(a[t], _mm256_set1_epi32(bias * sq));
                        acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_set1_ps(dx)), acc[t][hh]);
                        if with_min {
                            off[t][hh] = _mm256_fmadd_ps(mw, _mm256_set1_ps(s16), off[t][hh]);
                        }
                    }
                }
            }
            for t in 0..NT {
                for hh in 0..H {
                    let v = if with_min { _mm256_add_ps(acc[t][hh], off[t][hh]) } else { acc[t][hh] };
                    // SAFETY: rows `8 (h0 + hh) ..` + 8 are inside `out[t]`'s 16 floats (`h0 + hh < 2`).
                    unsafe { _mm256_storeu_ps(out[t].as_mut_ptr().add(HALF * (h0 + hh)), v) };
                }
            }
        }
    };
}

group_kernel!(group_avx2, "avx2,fma,f16c", dot2_avx2, widen_avx2, false);
group_kernel!(group_avxvnni, "avx2,fma,f16c,avxvnni", dot2_avxvnni, widen_avxvnni, true);

/// One format's kernel on `isa`: both halves in one pass for up to two tokens; one half per pass for more
/// (the accumulators of both halves and four tokens would not fit in sixteen registers).
///
/// # Safety
/// As `group_dot`.
#[inline]
unsafe fn run<const F: usize, const NT: usize>(isa: DotIsa, p: *const u8, x: Q8View<'_>, out: &mut [[f32; GROUP]; NT]) {
    // SAFETY: forwarded from `group_dot`'s contract; halves 0..2.
    unsafe {
        match (isa, NT <= 2) {
            (DotIsa::AvxVnni, true) => group_avxvnni::<F, NT, 2>(p, x, 0, out),
            (DotIsa::AvxVnni, false) => {
                group_avxvnni::<F, NT, 1>(p, x, 0, out);
                group_avxvnni::<F, NT, 1>(p, x, 1, out);
            }
            (_, true) => group_avx2::<F, NT, 2>(p, x, 0, out),
            (_, false) => {
                group_avx2::<F, NT, 1>(p, x, 0, out);
                group_avx2::<F, NT, 1>(p, x, 1, out);
            }
        }
    }
}

/// `interleave::group_dot` on AVX2 or (`isa == DotIsa::AvxVnni`) AVX-VNNI.
///
/// # Safety
/// `group` holds `x.nb` whole block columns of `format` (an interleaved format); `x` holds at least `NT`
/// tokens; the CPU supports AVX2, FMA and F16C, and AVX-VNNI when `isa` is `DotIsa::AvxVnni`.
pub(super) unsafe fn group_dot<const NT: usize>(isa: DotIsa, format: BlockFormat, group: &[u8], x: Q8View<'_>, out: &mut [[f32; GROUP]; NT]) {
    let p = group.as_ptr();
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match format {
            BlockFormat::Q4_0 => run::<0, NT>(isa, p, x, out),
            BlockFormat::Q4_1 => run::<1, NT>(isa, p, x, out),
            BlockFormat::Q5_0 => run::<2, NT>(isa, p, x, out),
            BlockFormat::Q5_1 => run::<3, NT>(isa, p, x, out),
            BlockFormat::Q8_0 => run::<4, NT>(isa, p, x, out),
            BlockFormat::IQ4_NL => run::<5, NT>(isa, p, x, out),
            _ => {}
        }
    }
}

//! The AVX-512 VNNI kernel of the interleaved layout (`interleave`): per block column, 16 rows at once. Each
//! 64-byte chunk of codes holds four codes of each of the 16 rows; `vpdpbusd` multiplies them, as unsigned
//! bytes, by four activation codes broadcast to every 32-bit lane, so lane `r` accumulates row `r`'s dot. The
//! unsigned bytes are the codes (4 or 5 bits; the fifth from the row's high bits) or `v + 128` (Q8_0 bytes, IQ4_NL
//! grid values, flipped with one xor); the offset (`8`, `16` or `128` times the activation block's integer sum) is
//! subtracted in integers (Q4_1/Q5_1 add `m · s` in f32 instead), so each
//! lane holds exactly the signed dot of `interleave::group_dot`, and the float steps are the same ones in the
//! same order: results are bit-identical to the scalar kernel (tested). Our own kernel: no maintained crate
//! multiplies ggml's block formats.

// Token and sub-block loops index several arrays in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use edgeforge_core::blocks::IQ4_NL_GRID;

use super::format::{BlockFormat, Offset, BLOCK};
use super::interleave::{column_bytes, GROUP};
use super::q8::Q8View;

/// How far ahead of the kernel it prefetches weight bytes (the stream is contiguous; this keeps a few block
/// columns in flight).
const PREFETCH_BYTES: usize = 1536;

/// Formats by index, for the const parameter.
const FORMATS: [BlockFormat; 6] = BlockFormat::ALL;

/// 0x10 in byte `i` of each 32-bit lane where bit `i` (0..4) of the lane's `t` is set: the fifth bits of
/// four codes. (`t & 0xF` times 0x00204081 puts bit `i` at bit `8i`, and only there among the bytes' low bits.)
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn fifth_bits(t: __m512i) -> __m512i {
    let spread = _mm512_mullo_epi32(_mm512_and_si512(t, _mm512_set1_epi32(0xF)), _mm512_set1_epi32(0x0020_4081));
    _mm512_slli_epi32::<4>(_mm512_and_si512(spread, _mm512_set1_epi32(0x0101_0101)))
}

/// The unsigned codes of chunk `c` of a nibble format's block column: codes `4c..4c + 4` (low nibbles) and
/// `16 + 4c..` (high nibbles) of each of the 16 rows, with their fifth bits from `qh` (Q5_0/Q5_1) and, for
/// IQ4_NL, looked up in `grid` and flipped to `v + 128`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn nibble_codes(format: BlockFormat, bytes: __m512i, qh: Option<__m512i>, c: usize, grid: __m512i) -> (__m512i, __m512i) {
    let low = _mm512_set1_epi8(0x0F);
    let (lo, hi) = (_mm512_and_si512(bytes, low), _mm512_and_si512(_mm512_srli_epi16::<4>(bytes), low));
    let (lo, hi) = match qh {
        // Codes 4c.. take bits 4c.. of their row's high bits, codes 16 + 4c.. bits 16 + 4c...
        Some(h) => {
            let (sl, sh) = (_mm_cvtsi32_si128(4 * c as i32), _mm_cvtsi32_si128(16 + 4 * c as i32));
            (_mm512_or_si512(lo, fifth_bits(_mm512_srl_epi32(h, sl))), _mm512_or_si512(hi, fifth_bits(_mm512_srl_epi32(h, sh))))
        }
        None => (lo, hi),
    };
    if format == BlockFormat::IQ4_NL {
        let flip = _mm512_set1_epi8(-128);
        (_mm512_xor_si512(_mm512_shuffle_epi8(grid, lo), flip), _mm512_xor_si512(_mm512_shuffle_epi8(grid, hi), flip))
    } else {
        (lo, hi)
    }
}

/// A block column's 16 scales, 16 minimums (zero for the formats without) and high bits (the formats with).
///
/// # Safety
/// `col` points at a whole block column of `format`: the scales are its first 32 bytes, the minimums the 32
/// after them, the high bits 16 · `qh_at` bytes in; AVX-512F present.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn column_header(col: *const u8, format: BlockFormat) -> (__m512, __m512, Option<__m512i>) {
    // SAFETY (all three): fields of the block column, read only for the formats that have them.
    let dw = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(col.cast()) });
    let mw = if matches!(format.offset(), Offset::Min) { _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(col.add(2 * GROUP).cast()) }) } else { _mm512_setzero_ps() };
    let qh = format.qh_at().map(|at| unsafe { _mm512_loadu_si512(col.add(GROUP * at).cast()) });
    (dw, mw, qh)
}

/// Four activation codes (bytes `o .. o + 4` at `p`) in every 32-bit lane.
///
/// # Safety
/// 4 readable bytes at `p + o`; AVX-512F present.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn quad(p: *const i8, o: usize) -> __m512i {
    // SAFETY: the caller guarantees 4 readable bytes at `p + o`.
    _mm512_set1_epi32(unsafe { p.add(o).cast::<i32>().read_unaligned() })
}

/// `out[t][r]` := row `r` of the group at `group` (`x.nb` block columns) dotted with token `t`, `t < NT`.
///
/// # Safety
/// `group` points at `x.nb` whole block columns of format `FORMATS[F]`; `x` holds at least `NT` tokens of
/// `x.nb` blocks; the CPU has the features below.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_kernel<const F: usize, const NT: usize>(group: *const u8, x: Q8View<'_>, out: &mut [[f32; GROUP]; NT]) {
    let format = FORMATS[F];
    let (cb, nb) = (column_bytes(format), x.nb);
    let flip = _mm512_set1_epi8(-128);
    let grid = _mm512_broadcast_i32x4(_mm_loadu_si128(IQ4_NL_GRID.as_ptr().cast()));
    let (xq, xd, xs, xs16) = (x.qs.as_ptr(), x.d.as_ptr(), x.sq.as_ptr(), x.s16.as_ptr());
    let with_min = matches!(format.offset(), Offset::Min);
    let qs_at = GROUP * format.qs_at();
    let bias = match format.offset() {
        Offset::Const(k) => k as i32,
        Offset::None => 128,
        Offset::Min => 0,
    };
    let mut acc = [_mm512_setzero_ps(); NT];
    let mut off = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        // SAFETY: block column `b < nb` lies inside the group the caller vouches for: its 16 scales are its
        // first 32 bytes, its code chunks the 64-byte runs after them.
        let col = unsafe { group.add(b * cb) };
        _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(PREFETCH_BYTES).cast());
        // SAFETY: `col` is a whole block column of `format`.
        let (dw, mw, qh) = unsafe { column_header(col, format) };
        // SAFETY: chunk `c` is 64 bytes inside the block column (`c` < 4 for nibble formats, < 8 for Q8_0).
        macro_rules! chunk {
            ($c:expr) => {
                unsafe { _mm512_loadu_si512(col.add(qs_at + 64 * $c).cast()) }
            };
        }
        for t in 0..NT {
            let k = t * nb + b;
            // SAFETY: token `t < NT` has `nb` blocks in `x`: block `k` (32 codes, its scale and sum) is inside.
            let (xb, dx, sq, s16) = unsafe { (xq.add(k * BLOCK), *xd.add(k), *xs.add(k), *xs16.add(k)) };
            let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            if format == BlockFormat::Q8_0 {
                for c in (0..8).step_by(2) {
                    // SAFETY (both): bytes 4c.. and 4c + 4.. of the block's 32 codes.
                    a0 = _mm512_dpbusd_epi32(a0, _mm512_xor_si512(chunk!(c), flip), unsafe { quad(xb, 4 * c) });
                    a1 = _mm512_dpbusd_epi32(a1, _mm512_xor_si512(chunk!(c + 1), flip), unsafe { quad(xb, 4 * c + 4) });
                }
            } else {
                for c in 0..4 {
                    let (lo, hi) = nibble_codes(format, chunk!(c), qh, c, grid);
                    // SAFETY (both): elements 4c.. (low nibbles) and 16 + 4c.. (high nibbles) of the 32 codes.
                    a0 = _mm512_dpbusd_epi32(a0, lo, unsafe { quad(xb, 4 * c) });
                    a1 = _mm512_dpbusd_epi32(a1, hi, unsafe { quad(xb, 16 + 4 * c) });
                }
            }
            let dot = _mm512_sub_epi32(_mm512_add_epi32(a0, a1), _mm512_set1_epi32(bias * sq));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(dx)), acc[t]);
            if with_min {
                off[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(s16), off[t]);
            }
        }
    }
    for t in 0..NT {
        let v = if with_min { _mm512_add_ps(acc[t], off[t]) } else { acc[t] };
        // SAFETY: `out[t]` is 16 floats.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), v) };
    }
}

/// `$kernel::<F, NT>` for the index `F` of `format` in `FORMATS` (nothing for a format without a group kernel).
macro_rules! by_format {
    ($kernel:ident, $format:expr, $nt:ident, $($arg:expr),*) => {
        match $format {
            BlockFormat::Q4_0 => $kernel::<0, $nt>($($arg),*),
            BlockFormat::Q4_1 => $kernel::<1, $nt>($($arg),*),
            BlockFormat::Q5_0 => $kernel::<2, $nt>($($arg),*),
            BlockFormat::Q5_1 => $kernel::<3, $nt>($($arg),*),
            BlockFormat::Q8_0 => $kernel::<4, $nt>($($arg),*),
            BlockFormat::IQ4_NL => $kernel::<5, $nt>($($arg),*),
            _ => {}
        }
    };
}

/// `interleave::group_dot` on AVX-512 VNNI.
///
/// # Safety
/// `group` holds `x.nb` whole block columns of `format` (an interleaved format); `x` holds at least `NT`
/// tokens; the CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
pub(super) unsafe fn group_dot<const NT: usize>(format: BlockFormat, group: &[u8], x: Q8View<'_>, out: &mut [[f32; GROUP]; NT]) {
    // SAFETY: forwarded from this function's contract.
    unsafe { by_format!(group_kernel, format, NT, group.as_ptr(), x, out) }
}


/// `out[t][r]` := row `r` of the group dotted with token `t`, summed as llama.cpp's x86 build sums it
/// (`ggml_lanes`: eight float lanes per row, lane `j` taking `fma(d_w · d_x, Σ of products 4j..4j+3, lane)` per
/// block, then `hsum_float_8`'s order, then the minimum term). Each lane's integer sum is one `vpdpbusd` of
/// four codes, started from minus the offset times the four activation codes' sum (the offset formats).
///
/// # Safety
/// As `group_kernel` (`NT` ≤ 2 keeps the 8 · `NT` accumulators in registers).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_kernel_lanes<const F: usize, const NT: usize>(group: *const u8, x: Q8View<'_>, out: &mut [[f32; GROUP]; NT]) {
    let format = FORMATS[F];
    let (cb, nb) = (column_bytes(format), x.nb);
    let (flip, zero) = (_mm512_set1_epi8(-128), _mm512_setzero_si512());
    let grid = _mm512_broadcast_i32x4(_mm_loadu_si128(IQ4_NL_GRID.as_ptr().cast()));
    let (xq, xd, xs16) = (x.qs.as_ptr(), x.d.as_ptr(), x.s16.as_ptr());
    let with_min = matches!(format.offset(), Offset::Min);
    let qs_at = GROUP * format.qs_at();
    let bias = match format.offset() {
        Offset::Const(k) => k as u8,
        Offset::None => 128,
        Offset::Min => 0,
    };
    let bias_v = _mm512_set1_epi8(bias as i8);
    let mut acc = [[_mm512_setzero_ps(); 8]; NT];
    let mut off = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        // SAFETY: as in `group_kernel`: block column `b < nb` lies inside the group.
        let col = unsafe { group.add(b * cb) };
        _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(PREFETCH_BYTES).cast());
        // SAFETY: `col` is a whole block column of `format`.
        let (dw, mw, qh) = unsafe { column_header(col, format) };
        // SAFETY: chunk `c` is 64 bytes inside the block column (`c` < 4 for nibble formats, < 8 for Q8_0).
        macro_rules! chunk {
            ($c:expr) => {
                unsafe { _mm512_loadu_si512(col.add(qs_at + 64 * $c).cast()) }
            };
        }
        for t in 0..NT {
            let k = t * nb + b;
            // SAFETY: token `t < NT` has `nb` blocks in `x`: block `k` is inside.
            let (xb, dx, s16) = unsafe { (xq.add(k * BLOCK), *xd.add(k), *xs16.add(k)) };
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
            let lane = |codes: __m512i, o: usize| {
                // SAFETY: `o + 4 <= 32`: four of the block's codes.
                let q = unsafe { quad(xb, o) };
                let start = if bias == 0 { zero } else { _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias_v, q)) };
                _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, codes, q))
            };
            if format == BlockFormat::Q8_0 {
                for c in 0..8 {
                    acc[t][c] = _mm512_fmadd_ps(lane(_mm512_xor_si512(chunk!(c), flip), 4 * c), d, acc[t][c]);
                }
            } else {
                for c in 0..4 {
                    let (lo, hi) = nibble_codes(format, chunk!(c), qh, c, grid);
                    acc[t][c] = _mm512_fmadd_ps(lane(lo, 4 * c), d, acc[t][c]);
                    acc[t][4 + c] = _mm512_fmadd_ps(lane(hi, 16 + 4 * c), d, acc[t][4 + c]);
                }
            }
            if with_min {
                off[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(s16), off[t]);
            }
        }
    }
    for t in 0..NT {
        let l = &acc[t];
        let q: [__m512; 4] = std::array::from_fn(|i| _mm512_add_ps(l[i], l[i + 4]));
        let v = _mm512_add_ps(_mm512_add_ps(q[0], q[2]), _mm512_add_ps(q[1], q[3]));
        let v = if with_min { _mm512_add_ps(v, off[t]) } else { v };
        // SAFETY: `out[t]` is 16 floats.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), v) };
    }
}

/// `group_kernel_lanes` for one or two tokens.
///
/// # Safety
/// As `group_dot`.
pub(super) unsafe fn group_dot_lanes<const NT: usize>(format: BlockFormat, group: &[u8], x: Q8View<'_>, out: &mut [[f32; GROUP]; NT]) {
    // SAFETY: forwarded from this function's contract.
    unsafe { by_format!(group_kernel_lanes, format, NT, group.as_ptr(), x, out) }
}

/// One activation block's codes (llama.cpp's `q8_0` rounding): `q = round(x · 127 / max|x|)`, ties to even
/// (`vcvtps2dq` under the default rounding mode, as the portable loop's `1.5 · 2^23` trick), clamped to ±127.
/// Returns (max|x|, Σq); the same bits as `q8::block_codes_scalar` (tested).
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn block_codes(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    // SAFETY: `x` is 32 floats: two 64-byte loads.
    let (a, b) = unsafe { (_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(x.as_ptr().add(16))) };
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    let id = _mm512_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
    let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
    let code = |v: __m512| _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, id), lo), hi));
    let (ca, cb) = (code(a), code(b));
    // SAFETY: `q` is 32 bytes: two 16-byte stores of the codes narrowed to bytes (all within ±127).
    unsafe {
        _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(ca));
        _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(cb));
    }
    (amax, _mm512_reduce_add_epi32(_mm512_add_epi32(ca, cb)))
}

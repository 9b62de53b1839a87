//! x86_64 integer kernels: one weight block (32 codes) becomes 32 bytes in a register in element order, and
//! is dotted with the 32 activation codes into eight i32 lanes by `vpmaddubsw` + `vpmaddwd` (AVX2) or one
//! `vpdpbusd` (AVX-VNNI, AVX-512 VNNI); the lanes are converted to f32 and multiplied into a per-token vector
//! accumulator by `d_w · d_x` (FMA), reduced once per row. Unsigned codes (Q4_0, Q4_1, Q5_0, Q5_1: at most
//! 31, so `vpmaddubsw`'s i16 pairs cannot saturate) multiply the signed activations directly and the format's
//! offset is added per block from the activation sums, as in `scalar`; signed codes (Q8_0, IQ4_NL) go
//! through the sign trick (`|w| · sign(x, w)`, at most 128 · 127 per product, no saturation either).
//!
//! Callers (`super::RowDot::run`) guarantee: the CPU has the kernel's features, `row` holds `x.nb` whole
//! blocks of the format, and `x` holds `NT` tokens of `x.nb` blocks.

// Token loops index several accumulator arrays in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use edgeforge_core::blocks::IQ4_NL_GRID;

use super::format::{with_format, BlockFormat, Offset, BLOCK};
use super::q8::Q8View;
use super::DotIsa;

/// The formats by index, for the kernels' const parameter (enums cannot be const generics).
const FORMATS: [BlockFormat; 6] = BlockFormat::ALL;

/// An f16 at `p` as f32.
///
/// # Safety
/// 2 bytes readable at `p`; F16C present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn half(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The 32 nibbles of 16 bytes at `p`, element order (low nibbles, then high nibbles).
///
/// # Safety
/// 16 bytes readable at `p`; AVX2 present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes.
    let b = unsafe { _mm_loadu_si128(p.cast()) };
    let m = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(b), m), _mm_and_si128(b, m))
}

/// 0x10 in byte j where bit j of the little-endian u32 at `p` is set, else 0.
///
/// # Safety
/// 4 bytes readable at `p`; AVX2 present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn high_bits(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes.
    let qh = unsafe { p.cast::<u32>().read_unaligned() };
    let v = _mm256_set1_epi32(qh as i32);
    // Bytes 0..8 take byte 0 of qh, 8..16 byte 1 (lower lane), 16..24 byte 2, 24..32 byte 3 (upper lane).
    let spread = _mm256_shuffle_epi8(v, _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0));
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10))
}

/// The block at `p` as 32 bytes in element order: unsigned codes, or signed values for Q8_0/IQ4_NL.
///
/// # Safety
/// One whole block of format `F` readable at `p`; AVX2 present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn weights<const F: u8>(p: *const u8) -> __m256i {
    let format = FORMATS[F as usize];
    // SAFETY (all arms): the block's codes (and high bits) lie inside the block the caller vouches for.
    unsafe {
        let qs = p.add(format.qs_at());
        match format {
            BlockFormat::Q8_0 => _mm256_loadu_si256(qs.cast()),
            BlockFormat::IQ4_NL => {
                let grid = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4_NL_GRID.as_ptr().cast()));
                _mm256_shuffle_epi8(grid, nibbles(qs))
            }
            _ => match format.qh_at() {
                Some(at) => _mm256_or_si256(nibbles(qs), high_bits(p.add(at))),
                None => nibbles(qs),
            },
        }
    }
}

/// The block's scale `d` and the coefficient of its activation sum (`Offset`: 0, `−k·d` or the minimum).
///
/// # Safety
/// One whole block of format `F` readable at `p`; F16C present.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn scales<const F: u8>(p: *const u8) -> (f32, f32) {
    // SAFETY: `d` (and the minimum) are the block's first 2 (4) bytes, inside the block the caller vouches for.
    unsafe {
        let d = half(p);
        match FORMATS[F as usize].offset() {
            Offset::None => (d, 0.0),
            Offset::Const(k) => (d, -k * d),
            Offset::Min => (d, half(p.add(2))),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_avx2(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
fn dot_avxvnni(u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn dot_avx512vnni(u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
}

/// One row kernel per instruction set: the same loop around a different 32-byte dot product.
macro_rules! row_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        /// # Safety
        /// See the module comment.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn $name<const F: u8, const NT: usize>(row: &[u8], x: Q8View<'_>, out: &mut [f32; NT]) {
            let format = FORMATS[F as usize];
            let (bb, nb) = (format.block_bytes(), x.nb);
            let signed = matches!(format.offset(), Offset::None);
            let sums = if matches!(format.offset(), Offset::Min) { x.s16 } else { x.s };
            let (wp, xq, xd) = (row.as_ptr(), x.qs.as_ptr(), x.d.as_ptr());
            let mut acc = [_mm256_setzero_ps(); NT];
            let mut off = [0f32; NT];
            for b in 0..nb {
                // SAFETY: block `b < nb` lies inside `row` (nb whole blocks); its scale (and minimum) are its
                // first 2 (4) bytes.
                let (w, (dw, ow)) = unsafe {
                    let p = wp.add(b * bb);
                    (weights::<F>(p), scales::<F>(p))
                };
                let u = if signed { _mm256_abs_epi8(w) } else { w };
                for t in 0..NT {
                    let k = t * nb + b;
                    // SAFETY: token `t < NT` has `nb` blocks in `x`: block `k` (32 codes, one scale) is inside.
                    let (xv, dx) = unsafe { (_mm256_loadu_si256(xq.add(k * BLOCK).cast()), *xd.add(k)) };
                    let prod = $dot(u, if signed { _mm256_sign_epi8(xv, w) } else { xv });
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(prod), _mm256_set1_ps(dw * dx), acc[t]);
                    if !signed {
                        off[t] += ow * sums[k];
                    }
                }
            }
            for t in 0..NT {
                out[t] = hsum(acc[t]) + off[t];
            }
        }
    };
}

row_kernel!(row_avx2, "avx2,fma,f16c", dot_avx2);
row_kernel!(row_avxvnni, "avx2,fma,f16c,avxvnni", dot_avxvnni);
row_kernel!(row_avx512vnni_256, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", dot_avx512vnni);

/// The AVX-512 VNNI kernel: two blocks per step in 512-bit registers (one `vpdpbusd` for 64 products), the
/// last odd block through the 256-bit kernel.
///
/// # Safety
/// See the module comment.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn row_avx512vnni<const F: u8, const NT: usize>(row: &[u8], x: Q8View<'_>, out: &mut [f32; NT]) {
    let format = FORMATS[F as usize];
    let (bb, nb) = (format.block_bytes(), x.nb);
    let signed = matches!(format.offset(), Offset::None);
    let sums = if matches!(format.offset(), Offset::Min) { x.s16 } else { x.s };
    let (wp, xq, xd) = (row.as_ptr(), x.qs.as_ptr(), x.d.as_ptr());
    let mut acc = [_mm512_setzero_ps(); NT];
    let mut off = [0f32; NT];
    let pairs = nb / 2;
    for pb in 0..pairs {
        let b = 2 * pb;
        // SAFETY: blocks `b` and `b + 1 < nb` lie inside `row` (nb whole blocks).
        let (w, (dw0, ow0), (dw1, ow1)) = unsafe {
            let (p0, p1) = (wp.add(b * bb), wp.add((b + 1) * bb));
            (_mm512_inserti64x4::<1>(_mm512_castsi256_si512(weights::<F>(p0)), weights::<F>(p1)), scales::<F>(p0), scales::<F>(p1))
        };
        let u = if signed { _mm512_abs_epi8(w) } else { w };
        let negative = _mm512_movepi8_mask(w);
        for t in 0..NT {
            let k = t * nb + b;
            // SAFETY: token `t < NT` has `nb` blocks in `x`: blocks `k`, `k + 1` (64 codes, two scales) are inside.
            let (xv, dx0, dx1) = unsafe { (_mm512_loadu_si512(xq.add(k * BLOCK).cast()), *xd.add(k), *xd.add(k + 1)) };
            let sv = if signed { _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv) } else { xv };
            let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, sv);
            let scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(dw0 * dx0), _mm512_set1_ps(dw1 * dx1));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), scale, acc[t]);
            if !signed {
                off[t] += ow0 * sums[k] + ow1 * sums[k + 1];
            }
        }
    }
    let mut tail = [0f32; NT];
    if nb % 2 == 1 {
        let last = 2 * pairs;
        // The odd last block of every token: the 256-bit kernel on a view of that block alone.
        for t in 0..NT {
            let k = t * nb + last;
            let one = Q8View { tokens: 1, qs: &x.qs[k * BLOCK..(k + 1) * BLOCK], d: &x.d[k..=k], s: &x.s[k..=k], s16: &x.s16[k..=k], sq: &x.sq[k..=k], nb: 1 };
            let mut o = [0f32; 1];
            // SAFETY: the last block of `row` (bb bytes) and one block of one token, as the kernel requires.
            unsafe { row_avx512vnni_256::<F, 1>(&row[last * bb..], one, &mut o) };
            tail[t] = o[0];
        }
    }
    for t in 0..NT {
        out[t] = _mm512_reduce_add_ps(acc[t]) + off[t] + tail[t];
    }
}

/// How far ahead of the kernel the decode kernel prefetches weight bytes.
const PREFETCH_BYTES: usize = 2048;

/// Decode on AVX-512 VNNI: `R` consecutive rows (`row_bytes` apart from `rows`) against one token. Each row
/// goes through exactly the operations of `row_avx512vnni::<F, 1>` in the same order, so its value is
/// bit-identical to the single-row kernel's (results do not depend on how rows are grouped); interleaving
/// independent rows gives the core `R` accumulation chains instead of one, and loads each activation pair
/// once for all `R` rows. Our own kernel: no maintained crate multiplies ggml's block formats.
///
/// # Safety
/// `rows` holds `R` rows of `x.nb` whole blocks of format `F`, `row_bytes` apart; `x` holds at least one
/// token; the CPU has the features below.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn rows_group_avx512vnni<const F: u8, const R: usize>(rows: &[u8], row_bytes: usize, x: Q8View<'_>, out: &mut [f32]) {
    let format = FORMATS[F as usize];
    let (bb, nb) = (format.block_bytes(), x.nb);
    let signed = matches!(format.offset(), Offset::None);
    let sums = if matches!(format.offset(), Offset::Min) { x.s16 } else { x.s };
    let (wp, xq, xd) = (rows.as_ptr(), x.qs.as_ptr(), x.d.as_ptr());
    let mut acc = [_mm512_setzero_ps(); R];
    let mut off = [0f32; R];
    for pb in 0..nb / 2 {
        let b = 2 * pb;
        // SAFETY: token 0 has `nb` blocks in `x`: blocks `b`, `b + 1` (64 codes, two scales) are inside.
        let (xv, dx0, dx1) = unsafe { (_mm512_loadu_si512(xq.add(b * BLOCK).cast()), *xd.add(b), *xd.add(b + 1)) };
        for r in 0..R {
            // Ask for the bytes PREFETCH_BYTES ahead of this row's position: rows are short (a few hundred
            // bytes), so the weight matrix is one long stream the hardware prefetcher loses at every 4 KiB
            // page. A prefetch is a hint: an address past the end is never dereferenced.
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(r * row_bytes + b * bb + PREFETCH_BYTES).cast());
            // SAFETY: row `r < R` starts `r · row_bytes` into `rows` and holds `nb` whole blocks: blocks `b`
            // and `b + 1 < nb` are inside.
            let (w, (dw0, ow0), (dw1, ow1)) = unsafe {
                let (p0, p1) = (wp.add(r * row_bytes + b * bb), wp.add(r * row_bytes + (b + 1) * bb));
                (_mm512_inserti64x4::<1>(_mm512_castsi256_si512(weights::<F>(p0)), weights::<F>(p1)), scales::<F>(p0), scales::<F>(p1))
            };
            let u = if signed { _mm512_abs_epi8(w) } else { w };
            let sv = if signed { _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(w), _mm512_setzero_si512(), xv) } else { xv };
            let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, sv);
            let scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(dw0 * dx0), _mm512_set1_ps(dw1 * dx1));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), scale, acc[r]);
            if !signed {
                off[r] += ow0 * sums[b] + ow1 * sums[b + 1];
            }
        }
    }
    let mut tail = [0f32; R];
    if nb % 2 == 1 {
        let last = nb - 1;
        let one = Q8View { tokens: 1, qs: &x.qs[last * BLOCK..nb * BLOCK], d: &x.d[last..nb], s: &x.s[last..nb], s16: &x.s16[last..nb], sq: &x.sq[last..nb], nb: 1 };
        for r in 0..R {
            let mut o = [0f32; 1];
            // SAFETY: the last block of row `r` (bb bytes inside `rows`) and one block of one token.
            unsafe { row_avx512vnni_256::<F, 1>(&rows[r * row_bytes + last * bb..], one, &mut o) };
            tail[r] = o[0];
        }
    }
    for r in 0..R {
        out[r] = _mm512_reduce_add_ps(acc[r]) + off[r] + tail[r];
    }
}

/// Consecutive rows for one token on AVX-512 VNNI: groups of four rows, then the rest one at a time (the
/// same figures either way, see `rows_group_avx512vnni`).
///
/// # Safety
/// `rows` holds `out.len()` rows of `x.nb` whole blocks each; otherwise as the module comment.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_avx512vnni<const F: u8>(rows: &[u8], x: Q8View<'_>, out: &mut [f32]) {
    const R: usize = 4;
    let row_bytes = x.nb * FORMATS[F as usize].block_bytes();
    if matches!(FORMATS[F as usize].offset(), Offset::None) {
        // Signed codes (Q8_0, IQ4_NL): grouping measured slower here (Q8_0 tg128 on 1 thread 100 -> 66 t/s,
        // benches/runtime-vs-llamacpp.sh), so one row at a time; the same figures either way.
        for (row, o) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
            let mut v = [0f32; 1];
            // SAFETY: `row` is one whole row; `x` holds at least one token.
            unsafe { row_avx512vnni::<F, 1>(row, x, &mut v) };
            *o = v[0];
        }
        return;
    }
    let done = out.len() / R * R;
    let mut groups = out.chunks_exact_mut(R);
    for (g, o) in groups.by_ref().enumerate() {
        // SAFETY: group `g` covers rows `R·g .. R·g + R < out.len()`, all inside `rows`.
        unsafe { rows_group_avx512vnni::<F, R>(&rows[g * R * row_bytes..(g + 1) * R * row_bytes], row_bytes, x, o) };
    }
    for (i, o) in groups.into_remainder().iter_mut().enumerate() {
        let row = &rows[(done + i) * row_bytes..(done + i + 1) * row_bytes];
        // SAFETY: one whole row; `x` holds at least one token.
        unsafe { rows_group_avx512vnni::<F, 1>(row, row_bytes, x, std::slice::from_mut(o)) };
    }
}

/// Kernels over consecutive rows for one token (decode): the row loop runs inside the instruction set's
/// code, so each row costs its blocks and one reduction, not a dispatch.
macro_rules! rows_kernel {
    ($name:ident, $features:literal, $row:ident) => {
        /// # Safety
        /// `rows` holds `out.len()` rows of `x.nb` whole blocks each; otherwise as the module comment.
        #[target_feature(enable = $features)]
        unsafe fn $name<const F: u8>(rows: &[u8], x: Q8View<'_>, out: &mut [f32]) {
            let row_bytes = x.nb * FORMATS[F as usize].block_bytes();
            for (row, o) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
                let mut v = [0f32; 1];
                // SAFETY: `row` is one whole row (`row_bytes`); `x` holds at least one token.
                unsafe { $row::<F, 1>(row, x, &mut v) };
                *o = v[0];
            }
        }
    };
}

rows_kernel!(rows_avx2, "avx2,fma,f16c", row_avx2);
rows_kernel!(rows_avxvnni, "avx2,fma,f16c,avxvnni", row_avxvnni);

/// `out[r] = row r · token 0` for consecutive rows on `isa` (an x86 kernel).
///
/// # Safety
/// `isa` is supported by this CPU; `rows` holds `out.len()` rows of `x.nb` whole blocks of the format; `x`
/// holds at least one token of `x.nb` blocks.
pub(super) unsafe fn rows_dot(isa: DotIsa, format: BlockFormat, rows: &[u8], x: Q8View<'_>, out: &mut [f32]) {
    macro_rules! on_format {
        ($f:literal) => {
            // SAFETY: forwarded from this function's contract.
            unsafe {
                match isa {
                    DotIsa::Avx512Vnni => rows_avx512vnni::<$f>(rows, x, out),
                    DotIsa::AvxVnni => rows_avxvnni::<$f>(rows, x, out),
                    _ => rows_avx2::<$f>(rows, x, out),
                }
            }
        };
    }
    with_format!(format, on_format);
}

/// `out[t] = row · token t` on `isa` (an x86 kernel).
///
/// # Safety
/// See the module comment; `isa` is supported by this CPU.
pub(super) unsafe fn row_dot<const NT: usize>(isa: DotIsa, format: BlockFormat, row: &[u8], x: Q8View<'_>, out: &mut [f32; NT]) {
    macro_rules! on_format {
        ($f:literal) => {
            // SAFETY: forwarded from this function's contract.
            unsafe {
                match isa {
                    DotIsa::Avx512Vnni => row_avx512vnni::<$f, NT>(row, x, out),
                    DotIsa::AvxVnni => row_avxvnni::<$f, NT>(row, x, out),
                    _ => row_avx2::<$f, NT>(row, x, out),
                }
            }
        };
    }
    with_format!(format, on_format);
}

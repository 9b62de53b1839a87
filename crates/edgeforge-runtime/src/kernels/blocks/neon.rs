//! aarch64 NEON row kernels of the 32-element formats (`DotIsa::Neon`: NEON and the dot-product extension).
//! One weight block becomes two 16-byte registers of signed codes in element order (Q4_0, Q4_1, Q5_0, Q5_1:
//! 0..31, the format's offset added from the activation sums as in `scalar`; Q8_0 as stored; IQ4_NL looked up
//! in its grid by `tbl`), dotted with the 32 activation codes by two `sdot`s into four i32 lanes and reduced to
//! the block's integer, the one `scalar::row_dot` computes. The float steps per block are then `scalar`'s,
//! in its order (`acc += d_w · d_x · dot`, `off += coefficient · sum`, `acc + off` at the end), so every
//! value is bit-identical to the portable kernel's (tested), unlike the x86 kernels, which accumulate in
//! vector lanes.
//!
//! `sdot` is emitted with `asm!`: the `vdotq_s32` intrinsic is still unstable (`stdarch_neon_dotprod`) on our
//! rustc (1.95), while the `dotprod` target feature and its run-time detection are stable. A
//! `vmull_s8` + `vpadalq_s16` formulation would serve CPUs without the extension, but every aarch64 core
//! since the Cortex-A55/A75 has it, so those CPUs take the portable kernel instead.
//!
//! Tested under QEMU user-mode emulation (`scripts/test-aarch64.sh`), which checks results, not speed.
//!
//! Callers (`super::RowDot`) guarantee: the CPU has NEON and dotprod, `row` holds `x.nb` whole blocks of the
//! format, and `x` holds `NT` tokens of `x.nb` blocks.

// Token loops index several accumulator arrays in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::arch::asm;

use edgeforge_core::blocks::IQ4_NL_GRID;

use super::format::{with_format, BlockFormat, BLOCK};
use super::q8::Q8View;
use super::scalar::scale_and_offset;

/// The formats by index, for the kernels' const parameter (enums cannot be const generics).
const FORMATS: [BlockFormat; 6] = BlockFormat::ALL;

/// `acc` plus, in each i32 lane, the sum of the four products of signed bytes `a[4l..4l + 4] · b[4l..4l + 4]`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
pub(super) fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    // SAFETY: `sdot` reads and writes registers only; the dotprod feature is enabled on this function, and
    // its callers run only where it was detected.
    unsafe { asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) r, in(vreg) a, in(vreg) b, options(pure, nomem, nostack, preserves_flags)) };
    r
}

/// The 32 nibbles of 16 bytes at `p`, element order: (low nibbles, high nibbles).
///
/// # Safety
/// 16 bytes readable at `p`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller guarantees 16 readable bytes.
    let b = unsafe { vld1q_u8(p) };
    (vandq_u8(b, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(b))
}

/// 0x10 in byte j where bit j of the little-endian u32 at `p` is set, else 0, for j in 0..16 and 16..32.
///
/// # Safety
/// 4 bytes readable at `p`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn high_bits(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller guarantees 4 readable bytes.
    let qh = vreinterpretq_u8_u32(vdupq_n_u32(unsafe { p.cast::<u32>().read_unaligned() }));
    // Bytes 0..8 take byte 0 of qh, 8..16 byte 1 (elements 0..16); bytes 2 and 3 for elements 16..32.
    let spread = |lo: u64, hi: u64| vqtbl1q_u8(qh, vcombine_u8(vcreate_u8(lo), vcreate_u8(hi)));
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let ten = vdupq_n_u8(0x10);
    let pick = |s: uint8x16_t| vandq_u8(vtstq_u8(s, bit), ten);
    (pick(spread(0, 0x0101_0101_0101_0101)), pick(spread(0x0202_0202_0202_0202, 0x0303_0303_0303_0303)))
}

/// The block at `p` as 32 signed codes in element order (two registers): what `scalar::codes` gives.
///
/// # Safety
/// One whole block of format `F` readable at `p`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn weights<const F: u8>(p: *const u8) -> (int8x16_t, int8x16_t) {
    let format = FORMATS[F as usize];
    // SAFETY (all arms): the block's codes (and high bits) lie inside the block the caller vouches for.
    unsafe {
        let qs = p.add(format.qs_at());
        match format {
            BlockFormat::Q8_0 => (vld1q_s8(qs.cast()), vld1q_s8(qs.add(16).cast())),
            BlockFormat::IQ4_NL => {
                let grid = vld1q_s8(IQ4_NL_GRID.as_ptr());
                let (lo, hi) = nibbles(qs);
                (vqtbl1q_s8(grid, lo), vqtbl1q_s8(grid, hi))
            }
            _ => {
                let (lo, hi) = nibbles(qs);
                let (lo, hi) = match format.qh_at() {
                    Some(at) => {
                        let (h0, h1) = high_bits(p.add(at));
                        (vorrq_u8(lo, h0), vorrq_u8(hi, h1))
                    }
                    None => (lo, hi),
                };
                (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
            }
        }
    }
}

/// `out[t] = row · token t` for the `NT` tokens of `x`, with `scalar::row_dot`'s bits.
///
/// # Safety
/// See the module comment.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn row_kernel<const F: u8, const NT: usize>(row: &[u8], x: Q8View<'_>, out: &mut [f32; NT]) {
    let format = FORMATS[F as usize];
    let (bb, nb) = (format.block_bytes(), x.nb);
    let (wp, xq) = (row.as_ptr(), x.qs.as_ptr());
    let mut acc = [0f32; NT];
    let mut off = [0f32; NT];
    for b in 0..nb {
        // SAFETY: block `b < nb` lies inside `row` (nb whole blocks).
        let (w0, w1) = unsafe { weights::<F>(wp.add(b * bb)) };
        let (dw, ow, rounded_sum) = scale_and_offset(format, &row[b * bb..(b + 1) * bb]);
        for t in 0..NT {
            let k = t * nb + b;
            // SAFETY: token `t < NT` has `nb` blocks in `x`: block `k` (32 codes) is inside.
            let (x0, x1) = unsafe { (vld1q_s8(xq.add(k * BLOCK)), vld1q_s8(xq.add(k * BLOCK + 16))) };
            let dot = vaddvq_s32(sdot(sdot(vdupq_n_s32(0), w0, x0), w1, x1));
            acc[t] += dw * x.d[k] * dot as f32;
            off[t] += ow * if rounded_sum { x.s16[k] } else { x.s[k] };
        }
    }
    for t in 0..NT {
        out[t] = acc[t] + off[t];
    }
}

/// `out[r] = row r · token 0` for consecutive rows (decode): the single-row kernel on each row, so each row
/// has its bits.
///
/// # Safety
/// The CPU has NEON and dotprod; `rows` holds `out.len()` rows of `x.nb` whole blocks of the format; `x`
/// holds at least one token of `x.nb` blocks.
pub(super) unsafe fn rows_dot(format: BlockFormat, rows: &[u8], x: Q8View<'_>, out: &mut [f32]) {
    let row_bytes = x.nb * format.block_bytes();
    for (r, o) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let mut v = [0f32; 1];
        // SAFETY: `r` is one whole row; `x` holds at least one token; forwarded from this function's contract.
        unsafe { row_dot::<1>(format, r, x, &mut v) };
        *o = v[0];
    }
}

/// `out[t] = row · token t` on NEON.
///
/// # Safety
/// See the module comment.
pub(super) unsafe fn row_dot<const NT: usize>(format: BlockFormat, r: &[u8], x: Q8View<'_>, out: &mut [f32; NT]) {
    macro_rules! on_format {
        ($f:literal) => {
            // SAFETY: forwarded from this function's contract.
            unsafe { row_kernel::<$f, NT>(r, x, out) }
        };
    }
    with_format!(format, on_format);
}

//! aarch64 NEON kernels of the K-quant formats (`kquant`), on CPUs with the dot-product extension: per
//! super-block the codes are unpacked in registers to bytes in element order (16 per register, one Q6_K
//! sub-block or half a Q4_K one), dotted with the activation codes by `sdot` (`neon::sdot`), multiplied by
//! their sub-block's scale into four i32 lanes and reduced once per super-block to `kquant`'s exact
//! integers; the float steps are `kquant::step`, so results are bit-identical to the portable kernel (tested,
//! under QEMU user-mode emulation). Our own kernels: no maintained crate multiplies ggml's K-quant blocks.

use std::arch::aarch64::*;

use super::format::{half_at, BlockFormat};
use super::kquant::{by_format, q4_scales, q6_scales, step, Q8KView, QK};
use super::neon::sdot;

/// 16 activation codes at `p + at`.
///
/// # Safety
/// 16 readable bytes at `p + at`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn codes16(p: *const i8, at: usize) -> int8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe { vld1q_s8(p.add(at)) }
}

/// Q4_K row · token.
///
/// # Safety
/// `row` is whole Q4_K blocks, at least `x.nb` of them; the CPU has NEON and dotprod.
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4k(row: &[u8], x: Q8KView<'_>) -> f32 {
    let low = vdupq_n_u8(0x0F);
    let mut acc = 0f32;
    for i in 0..x.nb {
        let b = &row[i * 144..(i + 1) * 144];
        let Some((sc, msum)) = q4_scales(b, &x.bsums[16 * i..16 * i + 16]) else { return f32::NAN };
        let xq = x.qs[i * QK..(i + 1) * QK].as_ptr();
        let mut isum = vdupq_n_s32(0);
        for c in 0..4 {
            // Chunk c of qs (32 bytes): low nibbles are sub-block 2c (elements 64c..+32), high nibbles 2c + 1.
            // SAFETY: bytes 16 + 32c .. 16 + 32c + 32 of the 144-byte block; activation codes 64c .. 64c + 64
            // of the token's 256 of super-block i.
            let (q0, q1, x0, x1, x2, x3) = unsafe {
                let q = b.as_ptr().add(16 + 32 * c);
                (vld1q_u8(q), vld1q_u8(q.add(16)), codes16(xq, 64 * c), codes16(xq, 64 * c + 16), codes16(xq, 64 * c + 32), codes16(xq, 64 * c + 48))
            };
            let lo = |q: uint8x16_t| vreinterpretq_s8_u8(vandq_u8(q, low));
            let hi = |q: uint8x16_t| vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
            let dl = sdot(sdot(vdupq_n_s32(0), lo(q0), x0), lo(q1), x1);
            let dh = sdot(sdot(vdupq_n_s32(0), hi(q0), x2), hi(q1), x3);
            isum = vmlaq_n_s32(vmlaq_n_s32(isum, dl, sc[2 * c]), dh, sc[2 * c + 1]);
        }
        acc = step(acc, x.d[i], half_at(b, 0), half_at(b, 2), vaddvq_s32(isum), msum);
    }
    acc
}

/// The 64 Q6_K codes (0..63) of elements `128h + L + {0, 32, 64, 96} + 0..16` of the block `b` (`L` is `l0`,
/// 0 or 16), one register per run of 16, i.e. per sub-block `8h + l0 / 16 + {0, 2, 4, 6}`.
///
/// # Safety
/// `b` is one whole 210-byte Q6_K block; `h < 2`, `l0 <= 16`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn q6_runs(b: &[u8], h: usize, l0: usize) -> [int8x16_t; 4] {
    // SAFETY: ql[64h + l0 ..+16], ql[64h + 32 + l0 ..+16] and qh[32h + l0 ..+16] lie inside the block.
    let (qa, qb, qh) = unsafe { (vld1q_u8(b.as_ptr().add(64 * h + l0)), vld1q_u8(b.as_ptr().add(64 * h + 32 + l0)), vld1q_u8(b.as_ptr().add(128 + 32 * h + l0))) };
    let (low, two) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x03));
    let top = |shifted: uint8x16_t| vshlq_n_u8::<4>(vandq_u8(shifted, two));
    let code = |q: uint8x16_t, t: uint8x16_t| vreinterpretq_s8_u8(vorrq_u8(q, t));
    [
        code(vandq_u8(qa, low), top(qh)),
        code(vandq_u8(qb, low), top(vshrq_n_u8::<2>(qh))),
        code(vshrq_n_u8::<4>(qa), top(vshrq_n_u8::<4>(qh))),
        code(vshrq_n_u8::<4>(qb), top(vshrq_n_u8::<6>(qh))),
    ]
}

/// Q6_K row · token.
///
/// # Safety
/// `row` is whole Q6_K blocks, at least `x.nb` of them; the CPU has NEON and dotprod.
#[target_feature(enable = "neon,dotprod")]
unsafe fn q6k(row: &[u8], x: Q8KView<'_>) -> f32 {
    let mut acc = 0f32;
    for i in 0..x.nb {
        let b = &row[i * 210..(i + 1) * 210];
        let (sc, offset) = q6_scales(b, &x.bsums[16 * i..16 * i + 16]);
        let xq = x.qs[i * QK..(i + 1) * QK].as_ptr();
        let mut isum = vdupq_n_s32(0);
        for h in 0..2 {
            for l0 in [0, 16] {
                // SAFETY: `b` is one whole block, `h < 2`, `l0 <= 16`.
                let runs = unsafe { q6_runs(b, h, l0) };
                for (r, q) in runs.into_iter().enumerate() {
                    let j = 8 * h + l0 / 16 + 2 * r;
                    // SAFETY: sub-block j's 16 codes lie inside the token's 256 of super-block i.
                    let xv = unsafe { codes16(xq, 16 * j) };
                    isum = vmlaq_n_s32(isum, sdot(vdupq_n_s32(0), q, xv), sc[j]);
                }
            }
        }
        acc = step(acc, x.d[i], half_at(b, 208), 0.0, vaddvq_s32(isum) - offset, 0);
    }
    acc
}

/// `kquant::row_dot` on NEON.
///
/// # Safety
/// `row` holds at least `x.nb` whole blocks of `format` (Q4_K or Q6_K); the CPU has NEON and dotprod.
pub(super) unsafe fn row_dot(format: BlockFormat, row: &[u8], x: Q8KView<'_>) -> f32 {
    // SAFETY (both): forwarded from this function's contract.
    by_format(format, || unsafe { q4k(row, x) }, || unsafe { q6k(row, x) })
}

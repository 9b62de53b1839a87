//! aarch64 NEON kernels (4 lanes), same arithmetic as the x86 kernels: integer `code − zero`, widened to
//! f32, then fused multiply-add into the activations (one scale per group, one reduction per row) or
//! `scale · value` stored (tiles, bit-identical to the scalar code). Run by the tests under QEMU user-mode
//! emulation (`scripts/test-aarch64.sh`: `-cpu max` and `cortex-a72`), which checks results, not speed; not
//! yet run or timed on aarch64 hardware. (The packed integer path, `int_matmul_with`, has no NEON kernel:
//! on aarch64 it runs the portable group kernel.)
//!
//! Callers (`super::Kernel`) guarantee before calling: NEON present, the row is well formed
//! (`Row::is_well_formed`) and `x` holds `(NT − 1) · x_stride + row.len` values (`out` holds `row.len`).

// Token loops index several accumulator arrays (a0, a1, racc, tail) in step; iterators would obscure it.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::packed::{nibble_at, Bits, Row};

#[inline(always)]
fn one<const NT: usize>(row: &Row<'_>, x: &[f32], x_stride: usize, i: usize, zero: i32, sums: &mut [f32; NT]) {
    let v = (i32::from(row.code(i)) - zero) as f32;
    for (t, s) in sums.iter_mut().enumerate() {
        *s += x[t * x_stride + i] * v;
    }
}

/// Widen 8 signed 16-bit values to two f32x4.
#[target_feature(enable = "neon")]
fn widen(v: int16x8_t) -> (float32x4_t, float32x4_t) {
    (vcvtq_f32_s32(vmovl_s16(vget_low_s16(v))), vcvtq_f32_s32(vmovl_high_s16(v)))
}

/// 16 four-bit codes: the low (`shift` 0) or high (`shift` 4) nibbles of the 16 bytes of a block at `p`
/// (see `packed`: elements 0..16 or 16..32 of the block, in order), minus `zero`, as four f32x4.
///
/// # Safety
/// 16 bytes readable at `p`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q4x16(p: *const u8, shift: u32, zero: u8) -> [float32x4_t; 4] {
    // SAFETY: the caller guarantees 16 readable bytes.
    let b = unsafe { vld1q_u8(p) };
    let c = if shift == 0 { vandq_u8(b, vdupq_n_u8(0x0F)) } else { vshrq_n_u8::<4>(b) };
    let zv = vdupq_n_s16(i16::from(zero));
    let (f0, f1) = widen(vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(c))), zv));
    let (f2, f3) = widen(vsubq_s16(vreinterpretq_s16_u16(vmovl_high_u8(c)), zv));
    [f0, f1, f2, f3]
}

/// 16 eight-bit codes at `p` minus `zero`, as four f32x4.
///
/// # Safety
/// 16 bytes readable at `p`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q8x16(p: *const u8, zero: u8) -> [float32x4_t; 4] {
    // SAFETY: the caller guarantees 16 readable bytes.
    let b = unsafe { vld1q_u8(p) };
    let zv = vdupq_n_s16(i16::from(zero));
    let (f0, f1) = widen(vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(b))), zv));
    let (f2, f3) = widen(vsubq_s16(vreinterpretq_s16_u16(vmovl_high_u8(b)), zv));
    [f0, f1, f2, f3]
}

/// Multiply-add 16 weight values into each token's accumulators.
///
/// # Safety
/// `x.add(t · x_stride)` must have 16 readable floats for every `t < NT`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn step<const NT: usize>(vals: [float32x4_t; 4], x: *const f32, x_stride: usize, acc: &mut [[float32x4_t; 4]; NT]) {
    for (t, acc_t) in acc.iter_mut().enumerate() {
        for (k, (a, v)) in acc_t.iter_mut().zip(vals).enumerate() {
            // SAFETY: guaranteed by the caller (16 floats per token).
            *a = vfmaq_f32(*a, v, unsafe { vld1q_f32(x.add(t * x_stride + 4 * k)) });
        }
    }
}

/// # Safety
/// See the module comment.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn row_dot_neon<const NT: usize>(row: Row<'_>, x: &[f32], x_stride: usize, out: &mut [f32; NT]) {
    let gs = row.group_size;
    let codes = row.codes.as_ptr();
    let xp = x.as_ptr();
    let mut racc = [vdupq_n_f32(0.0); NT];
    let mut rtail = [0f32; NT];
    for (g, &scale) in row.scales.iter().enumerate() {
        let start = g * gs;
        let end = (start + gs).min(row.len);
        let zero = row.zeros.get(g);
        let mut acc = [[vdupq_n_f32(0.0); 4]; NT];
        let mut tail = [0f32; NT];
        let mut i = start;
        match row.bits {
            Bits::Four => {
                while i < end && !i.is_multiple_of(16) {
                    one(&row, x, x_stride, i, i32::from(zero), &mut tail);
                    i += 1;
                }
                while i + 16 <= end {
                    let (byte, shift) = nibble_at(i);
                    // SAFETY: `i % 16 == 0`: `byte` is the first byte of block `i / 32`, which lies inside
                    // `codes` (16 bytes); and `t·x_stride + i + 16 <= (NT−1)·x_stride + len <= x.len()`.
                    unsafe { step(q4x16(codes.add(byte), shift, zero), xp.add(i), x_stride, &mut acc) };
                    i += 16;
                }
            }
            Bits::Eight => {
                while i + 16 <= end {
                    // SAFETY: `i + 16 <= len == codes.len()`, and `x` as above.
                    unsafe { step(q8x16(codes.add(i), zero), xp.add(i), x_stride, &mut acc) };
                    i += 16;
                }
            }
        }
        while i < end {
            one(&row, x, x_stride, i, i32::from(zero), &mut tail);
            i += 1;
        }
        let sv = vdupq_n_f32(scale);
        for t in 0..NT {
            let s = vaddq_f32(vaddq_f32(acc[t][0], acc[t][1]), vaddq_f32(acc[t][2], acc[t][3]));
            racc[t] = vfmaq_f32(racc[t], s, sv);
            rtail[t] += scale * tail[t];
        }
    }
    for t in 0..NT {
        out[t] = vaddvq_f32(racc[t]) + rtail[t];
    }
}

/// # Safety
/// See the module comment (`out.len() >= row.len`).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dequant_row_neon(row: Row<'_>, out: &mut [f32]) {
    let gs = row.group_size;
    let codes = row.codes.as_ptr();
    let op = out.as_mut_ptr();
    for (g, &scale) in row.scales.iter().enumerate() {
        let start = g * gs;
        let end = (start + gs).min(row.len);
        let zero = row.zeros.get(g);
        let value = |i: usize| scale * (f32::from(row.code(i)) - f32::from(zero));
        let sv = vdupq_n_f32(scale);
        let mut i = start;
        while row.bits == Bits::Four && i < end && !i.is_multiple_of(16) {
            out[i] = value(i);
            i += 1;
        }
        while i + 16 <= end {
            // SAFETY: code bytes as in `row_dot_neon`; `i + 16 <= len <= out.len()` for the stores.
            unsafe {
                let vals = match row.bits {
                    Bits::Four => {
                        let (byte, shift) = nibble_at(i);
                        q4x16(codes.add(byte), shift, zero)
                    }
                    Bits::Eight => q8x16(codes.add(i), zero),
                };
                for (k, v) in vals.into_iter().enumerate() {
                    vst1q_f32(op.add(i + 4 * k), vmulq_f32(sv, v));
                }
            }
            i += 16;
        }
        while i < end {
            out[i] = value(i);
            i += 1;
        }
    }
}

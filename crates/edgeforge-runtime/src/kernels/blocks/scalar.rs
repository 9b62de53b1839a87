//! The portable kernel, and the reference every SIMD kernel is tested against: per block, the integer dot
//! product of the weight codes with the activation codes, scaled by `d_w · d_x`, plus the format's offset
//! term (`format::Offset`) times the activation block's sum.

use edgeforge_core::blocks::IQ4_NL_GRID;

use super::format::{half_at, BlockFormat, Offset, BLOCK};
use super::q8::Q8View;

/// The 32 integer codes of one block (signed for Q8_0/IQ4_NL, else unsigned, offset by the format).
#[inline(always)]
pub(crate) fn codes(format: BlockFormat, b: &[u8]) -> [i32; BLOCK] {
    let qs = &b[format.qs_at()..];
    let mut c = [0i32; BLOCK];
    match format {
        BlockFormat::Q8_0 => {
            for (c, &q) in c.iter_mut().zip(qs) {
                *c = i32::from(q as i8);
            }
        }
        _ => {
            for j in 0..BLOCK / 2 {
                c[j] = i32::from(qs[j] & 0x0F);
                c[j + BLOCK / 2] = i32::from(qs[j] >> 4);
            }
            if let Some(at) = format.qh_at() {
                let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                for (j, c) in c.iter_mut().enumerate() {
                    *c |= (((qh >> j) & 1) << 4) as i32;
                }
            }
            if format == BlockFormat::IQ4_NL {
                for c in &mut c {
                    *c = i32::from(IQ4_NL_GRID[*c as usize]);
                }
            }
        }
    }
    c
}

/// The block's scale and the coefficient of the activation sum (`Offset`), and which sum it takes.
#[inline(always)]
pub(crate) fn scale_and_offset(format: BlockFormat, b: &[u8]) -> (f32, f32, bool) {
    let d = half_at(b, 0);
    match format.offset() {
        Offset::None => (d, 0.0, false),
        Offset::Const(k) => (d, -k * d, false),
        Offset::Min => (d, half_at(b, 2), true),
    }
}

/// `out[t] = row · token t` for the `NT` tokens of `x`; the row holds `x.nb` whole blocks.
pub(crate) fn row_dot<const NT: usize>(format: BlockFormat, row: &[u8], x: Q8View<'_>, out: &mut [f32; NT]) {
    let bb = format.block_bytes();
    let mut acc = [0f32; NT];
    let mut off = [0f32; NT];
    for (bi, b) in row.chunks_exact(bb).enumerate() {
        let c = codes(format, b);
        let (dw, ow, rounded_sum) = scale_and_offset(format, b);
        for t in 0..NT {
            let k = t * x.nb + bi;
            let xq = &x.qs[k * BLOCK..(k + 1) * BLOCK];
            let dot: i32 = c.iter().zip(xq).map(|(&c, &q)| c * i32::from(q)).sum();
            acc[t] += dw * x.d[k] * dot as f32;
            off[t] += ow * if rounded_sum { x.s16[k] } else { x.s[k] };
        }
    }
    for t in 0..NT {
        out[t] = acc[t] + off[t];
    }
}

//! The integer path as llama.cpp's x86 build sums it, for the `llamacpp` rounding (`Rounding::Q8`): its dot
//! products of 32-element blocks (`ggml_vec_dot_q4_1_q8_1`, `_q5_1_q8_1`, `_q8_0_q8_0` and llamafile's
//! `tinyBLAS_Q0_AVX` for Q8_0/Q5_0/Q4_0 batches) keep eight float lanes per row, lane `j` accumulating, block
//! after block, `fma(d_w · d_x, Σ of the products of elements 4j..4j+3, lane)`; the lanes are added in
//! `hsum_float_8`'s order at the end, and the formats with a minimum add `Σ m · s` (fused, in block order)
//! last. Same integers as `scalar::row_dot`, other float steps: this gives llama.cpp's bits (checked against the
//! pinned build by `parity.rs`), at some cost in speed, which only the llamacpp rounding pays.
//!
//! Q4_0 and IQ4_NL weights whose row count is a multiple of 8 are repacked by llama.cpp's x86 build
//! (`q4_0_8x8`, `iq4_nl_8x8`), whose kernels keep one float per row instead: `fma(Σ of the block's products,
//! d_w · d_x, acc)` (`SumOrder::Block`, `sum_order`).
//!
//! The arithmetic is written once, portably; on x86 with AVX2 and FMA the same code is compiled with those
//! features enabled (the lane FMAs become one vector instruction; without FMA in the target a `mul_add` is a
//! libm call per lane), and the tests check both give the same bits.

use super::format::{BlockFormat, Offset, BLOCK};
use super::q8::Q8View;
use super::scalar::{codes, scale_and_offset};
use crate::kernels::ggml_arith::hsum8;

/// How llama.cpp's x86 build sums a weight's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SumOrder {
    /// Eight lanes of four products (its vector dot products and llamafile's tinyBLAS).
    Lanes,
    /// One float per row, the block's integer dot fused in (its repacked 8-row kernels).
    Block,
}

/// The order llama.cpp sums a `format` weight of `rows` rows in.
pub(crate) fn sum_order(format: BlockFormat, rows: usize) -> SumOrder {
    if matches!(format, BlockFormat::Q4_0 | BlockFormat::IQ4_NL) && rows.is_multiple_of(8) {
        SumOrder::Block
    } else {
        SumOrder::Lanes
    }
}

/// `out[t] = row · token t` for the `NT` tokens of `x`; the row holds `x.nb` whole blocks.
#[inline(always)]
fn row_dot_body<const NT: usize>(format: BlockFormat, order: SumOrder, row: &[u8], x: Q8View<'_>, out: &mut [f32; NT]) {
    let bb = format.block_bytes();
    let mut acc = [[0f32; 8]; NT];
    let mut summs = [0f32; NT];
    let shift = match format.offset() {
        Offset::Const(k) => k as i32,
        _ => 0,
    };
    for (bi, b) in row.chunks_exact(bb).enumerate() {
        let mut c = codes(format, b);
        c.iter_mut().for_each(|c| *c -= shift);
        let (dw, _, with_min) = scale_and_offset(format, b);
        let m = if with_min { super::format::half_at(b, 2) } else { 0.0 };
        for t in 0..NT {
            let k = t * x.nb + bi;
            let xq = &x.qs[k * BLOCK..(k + 1) * BLOCK];
            let d = dw * x.d[k];
            if order == SumOrder::Block {
                let dot: i32 = c.iter().zip(xq).map(|(&c, &q)| c * i32::from(q)).sum();
                acc[t][0] = (dot as f32).mul_add(d, acc[t][0]);
                continue;
            }
            for (j, a) in acc[t].iter_mut().enumerate() {
                let lane: i32 = (4 * j..4 * j + 4).map(|i| c[i] * i32::from(xq[i])).sum();
                *a = (lane as f32).mul_add(d, *a);
            }
            if with_min {
                summs[t] = m.mul_add(x.s16[k], summs[t]);
            }
        }
    }
    for t in 0..NT {
        out[t] = hsum8(&acc[t]) + summs[t];
    }
}

/// `row_dot_body` compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_dot_fma<const NT: usize>(format: BlockFormat, order: SumOrder, row: &[u8], x: Q8View<'_>, out: &mut [f32; NT]) {
    row_dot_body(format, order, row, x, out);
}

/// `row_dot_body` on the widest build this CPU runs (`wide`: AVX2 + FMA if present).
pub(crate) fn row_dot<const NT: usize>(format: BlockFormat, order: SumOrder, row: &[u8], x: Q8View<'_>, out: &mut [f32; NT], wide: bool) {
    #[cfg(target_arch = "x86_64")]
    if wide && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected just above.
        unsafe { row_dot_fma(format, order, row, x, out) };
        return;
    }
    let _ = wide;
    row_dot_body(format, order, row, x, out);
}

/// `row_dot` for the 1 to 4 tokens `x` holds, into `out[..x.tokens]`.
pub(crate) fn row_dot_tokens(format: BlockFormat, order: SumOrder, row: &[u8], x: Q8View<'_>, out: &mut [f32; 4], wide: bool) {
    match x.tokens {
        1 => row_dot::<1>(format, order, row, x, out.first_chunk_mut().unwrap_or(&mut [0.0]), wide),
        2 => row_dot::<2>(format, order, row, x, out.first_chunk_mut().unwrap_or(&mut [0.0; 2]), wide),
        3 => row_dot::<3>(format, order, row, x, out.first_chunk_mut().unwrap_or(&mut [0.0; 3]), wide),
        _ => row_dot::<4>(format, order, row, x, out, wide),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::blocks::q8::Q8Rows;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn the_wide_build_gives_the_portable_bits() {
        let nb = 6;
        let mut seed = 7u64;
        for format in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q5_0, BlockFormat::Q5_1, BlockFormat::Q8_0, BlockFormat::IQ4_NL] {
            let mut row = vec![0u8; nb * format.block_bytes()];
            for (i, b) in row.iter_mut().enumerate() {
                *b = lcg(&mut seed) as u8;
                // Keep the f16 scale and minimum finite and small.
                let o = i % format.block_bytes();
                if o == 1 || (o == 3 && matches!(format.offset(), Offset::Min)) {
                    *b &= 0x3b;
                }
            }
            let xs: Vec<f32> = (0..4 * nb * BLOCK).map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0).collect();
            let mut acts = Q8Rows::default();
            acts.quantize(&xs, 4, nb * BLOCK);
            let view = acts.view(0, 4);
            for order in [SumOrder::Lanes, SumOrder::Block] {
                let (mut a, mut b) = ([0f32; 4], [0f32; 4]);
                row_dot(format, order, &row, view, &mut a, true);
                row_dot(format, order, &row, view, &mut b, false);
                assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits), "{format:?}");
                assert!(a.iter().all(|v| v.is_finite()), "{format:?}: {a:?}");
            }
            #[cfg(target_arch = "x86_64")]
            if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
                eprintln!("SKIPPED ggml_lanes wide build: no AVX2+FMA on this CPU");
            }
        }
    }
}

//! K-quant dot products as llama.cpp's x86 build sums them, for the `llamacpp` rounding (`Rounding::Q8`).
//! Two orders: batches of 8 tokens or more go through its tiled K-quant kernel (`ggml-cpu/tiled`, AVX-512
//! VNNI microkernel): per super-block the integer sum `isum` (and `msum` for Q4_K), then
//! `r = isum · d_w`, `r = fma(−dmin_w, msum, r)`, `acc = fma(r, d_x, acc)` (GCC contracts the kernel's
//! vector multiply and add into one). Fewer tokens go through
//! `ggml_vec_dot_q6_K_q8_K` (AVX2): per super-block eight 32-bit integer lanes, lane `j` holding the scaled
//! products of elements `4j..4j+3` of every 32-element run minus 32 · (the sums of sub-blocks `2j` and
//! `2j + 1` times their scales), then `fma(d_x · d_w, lane, acc_j)`; `hsum_float_8` at the end. Same
//! integers in total as `kquant::row_dot`, other float steps. Q4_K weights whose row count is a multiple of
//! 8 are repacked by llama.cpp's x86 build (`q4_K_8x8`) and never reach those two: its kernel keeps
//! `acc = fma(isum, d_w · d_x, acc)` and `acc_min = fma(msum, dmin_w · d_x, acc_min)` per pair of
//! 32-element sub-blocks (`isum`, `msum` of the pair) and
//! returns `acc − acc_min` (its batches of 4 tokens and more; its one-token kernel, for decode steps and
//! the tokens past the last multiple of 4, the same per super-block). Checked against the pinned build by
//! `parity.rs`. Written portably; on x86 with FMA the same code is compiled with it (tested equal).

use super::kquant::{q6_codes, Q8KView, QK};
use super::BlockFormat;
use crate::kernels::ggml_arith::hsum8;

/// A Q6_K row (whole super-blocks) dotted with one token.
#[inline(always)]
fn q6k_row_dot_body(row: &[u8], x: Q8KView<'_>) -> f32 {
    let mut acc = [0f32; 8];
    for (i, b) in row.chunks_exact(BlockFormat::Q6_K.block_bytes()).enumerate().take(x.nb) {
        let (xq, bsums) = (&x.qs[i * QK..(i + 1) * QK], &x.bsums[i * 16..(i + 1) * 16]);
        let q = q6_codes(b);
        let sc: [i32; 16] = std::array::from_fn(|j| i32::from(b[192 + j] as i8));
        let d = x.d[i] * super::format::half_at(b, 208);
        let mut lanes = [0i32; 8];
        for run in 0..QK / 32 {
            for (j, lane) in lanes.iter_mut().enumerate() {
                for e in 32 * run + 4 * j..32 * run + 4 * j + 4 {
                    *lane += sc[e / 16] * i32::from(q[e]) * i32::from(xq[e]);
                }
            }
        }
        for (j, (a, lane)) in acc.iter_mut().zip(lanes).enumerate() {
            let offset = 32 * (bsums[2 * j] * sc[2 * j] + bsums[2 * j + 1] * sc[2 * j + 1]);
            *a = d.mul_add((lane - offset) as f32, *a);
        }
    }
    hsum8(&acc)
}

/// `body` compiled with FMA.
///
/// # Safety
/// The CPU supports FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn row_dot_fma(kernel: Kernel, format: BlockFormat, row: &[u8], x: Q8KView<'_>) -> f32 {
    body(kernel, format, row, x)
}

/// Tokens per product from which llama.cpp takes its tiled K-quant kernel (`ggml_tiled_min_batch`).
pub(crate) const TILED_MIN_TOKENS: usize = 8;

/// A Q4_K or Q6_K row dotted with one token as llama.cpp's tiled kernel sums it (module comment).
#[inline(always)]
fn tiled_row_dot_body(format: BlockFormat, row: &[u8], x: Q8KView<'_>) -> f32 {
    let mut acc = 0f32;
    for (i, b) in row.chunks_exact(format.block_bytes()).enumerate().take(x.nb) {
        let (isum, msum, d, dmin) = super::kquant::super_block(format, b, &x.qs[i * QK..(i + 1) * QK], &x.bsums[i * 16..(i + 1) * 16]);
        let mut r = isum as f32 * d;
        if format == BlockFormat::Q4_K {
            r = (-dmin).mul_add(msum as f32, r);
        }
        acc = r.mul_add(x.d[i], acc);
    }
    acc
}

/// A Q4_K row dotted with one token as llama.cpp's repacked `q4_K_8x8` one-token kernel (`gemv`) sums it:
/// `fma(isum, d_w · d_x, acc)` and `fma(msum, dmin_w · d_x, acc_min)` per super-block, `acc − acc_min`.
#[inline(always)]
fn repacked_q4k_gemv_body(row: &[u8], x: Q8KView<'_>) -> f32 {
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (i, b) in row.chunks_exact(BlockFormat::Q4_K.block_bytes()).enumerate().take(x.nb) {
        let (isum, msum, d, dmin) = super::kquant::super_block(BlockFormat::Q4_K, b, &x.qs[i * QK..(i + 1) * QK], &x.bsums[i * 16..(i + 1) * 16]);
        acc = (isum as f32).mul_add(d * x.d[i], acc);
        acc_min = (msum as f32).mul_add(dmin * x.d[i], acc_min);
    }
    acc - acc_min
}

/// A Q4_K row dotted with one token as llama.cpp's repacked `q4_K_8x8` kernel for four tokens (`gemm`) sums
/// it (module comment).
#[inline(always)]
fn repacked_q4k_row_dot_body(row: &[u8], x: Q8KView<'_>) -> f32 {
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (i, b) in row.chunks_exact(BlockFormat::Q4_K.block_bytes()).enumerate().take(x.nb) {
        let (xq, bsums) = (&x.qs[i * QK..(i + 1) * QK], &x.bsums[i * 16..(i + 1) * 16]);
        let Ok(scales) = <&[u8; 12]>::try_from(&b[4..16]) else { return f32::NAN };
        let (d, dmin) = (super::format::half_at(b, 0) * x.d[i], super::format::half_at(b, 2) * x.d[i]);
        // Sub-blocks of 32 in pairs (64 elements per step of the kernel).
        for pair in 0..4 {
            let (mut isum, mut msum) = (0i32, 0i32);
            for j in [2 * pair, 2 * pair + 1] {
                let (sc, m) = edgeforge_core::blocks::scale_min_k4(scales, j);
                let codes = &b[16 + 32 * pair..16 + 32 * pair + 32];
                let dot: i32 = codes.iter().zip(&xq[32 * j..32 * j + 32]).map(|(&q, &v)| i32::from(if j % 2 == 1 { q >> 4 } else { q & 0x0F }) * i32::from(v)).sum();
                isum += i32::from(sc) * dot;
                msum += i32::from(m) * (bsums[2 * j] + bsums[2 * j + 1]);
            }
            acc = (isum as f32).mul_add(d, acc);
            acc_min = (msum as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

/// Which of llama.cpp's K-quant kernels a product takes (module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    VecDot,
    Tiled,
    Repacked,
    RepackedGemv,
}

/// The kernel of `body` for token `t` of a product of `n` tokens with a `format` weight of `rows` rows;
/// `None` when this module does not reproduce it. (llama.cpp's repacked weights take their four-token kernel
/// for the first multiple of four tokens when there are more than three, the one-token kernel for the rest.)
fn kernel(format: BlockFormat, rows: usize, n: usize, t: usize) -> Option<Kernel> {
    match format {
        BlockFormat::Q4_K if rows.is_multiple_of(8) && n > 3 && t < n / 4 * 4 => Some(Kernel::Repacked),
        BlockFormat::Q4_K if rows.is_multiple_of(8) => Some(Kernel::RepackedGemv),
        BlockFormat::Q4_K | BlockFormat::Q6_K if n >= TILED_MIN_TOKENS => Some(Kernel::Tiled),
        BlockFormat::Q6_K => Some(Kernel::VecDot),
        _ => None,
    }
}

#[inline(always)]
fn body(kernel: Kernel, format: BlockFormat, row: &[u8], x: Q8KView<'_>) -> f32 {
    match kernel {
        Kernel::VecDot => q6k_row_dot_body(row, x),
        Kernel::Tiled => tiled_row_dot_body(format, row, x),
        Kernel::Repacked => repacked_q4k_row_dot_body(row, x),
        Kernel::RepackedGemv => repacked_q4k_gemv_body(row, x),
    }
}

/// A row of a K-quant weight of `rows` rows dotted with token `t` (`x`) of a product of `n` tokens in
/// llama.cpp's order, `None` for a case not reproduced here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_dot(format: BlockFormat, row: &[u8], x: Q8KView<'_>, rows: usize, n: usize, t: usize, wide: bool) -> Option<f32> {
    let kernel = kernel(format, rows, n, t)?;
    #[cfg(target_arch = "x86_64")]
    if wide && crate::kernels::ggml_arith::has_fma() {
        // SAFETY: FMA was detected.
        return Some(unsafe { row_dot_fma(kernel, format, row, x) });
    }
    let _ = wide;
    Some(body(kernel, format, row, x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::blocks::kquant::Q8KRows;

    #[test]
    fn the_fma_build_gives_the_portable_bits_and_the_integers_of_the_reference() {
        let mut s = 99u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let nb = 3;
        let bb = BlockFormat::Q6_K.block_bytes();
        let mut row: Vec<u8> = (0..nb * bb).map(|_| next() as u8).collect();
        for b in row.chunks_exact_mut(bb) {
            b[208..210].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
        let xs: Vec<f32> = (0..nb * QK).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
        let mut acts = Q8KRows::default();
        acts.quantize(&xs, 1, nb * QK);
        let Some(x) = acts.token(0) else { panic!("token") };
        let (a, b) = (row_dot(BlockFormat::Q6_K, &row, x, 8, 1, 0, true), row_dot(BlockFormat::Q6_K, &row, x, 8, 1, 0, false));
        assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits));
        if !crate::kernels::ggml_arith::has_fma() {
            eprintln!("SKIPPED ggml_kquant FMA build: no FMA on this CPU");
        }
        // Same integers, other float order: close to the reference kernel.
        let r = crate::kernels::blocks::kquant::row_dot(BlockFormat::Q6_K, &row, x);
        let a = a.unwrap_or(f32::NAN);
        assert!((a - r).abs() <= 1e-4 * r.abs().max(1.0), "{a} vs {r}");
        assert_eq!(row_dot(BlockFormat::Q4_K, &row, x, 9, 1, 0, true), None);
        for (format, rows, n, t) in [(BlockFormat::Q6_K, 9, 8, 0), (BlockFormat::Q4_K, 9, 8, 0), (BlockFormat::Q4_K, 8, 8, 0), (BlockFormat::Q4_K, 8, 5, 4)] {
            let (a, b) = (row_dot(format, &row, x, rows, n, t, true), row_dot(format, &row, x, rows, n, t, false));
            assert!(a.is_some());
            assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits), "{format:?}");
        }
        let t = row_dot(BlockFormat::Q6_K, &row, x, 8, 8, 0, false).unwrap_or(f32::NAN);
        assert!((t - r).abs() <= 1e-4 * r.abs().max(1.0), "{t} vs {r}");
    }
}

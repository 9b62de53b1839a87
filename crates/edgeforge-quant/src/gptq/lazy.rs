//! GPTQ's lazy batch update, `w_r[j] -= e_r[i] · U[i][j]` for every row r of a group, every column i of
//! a finished block (in increasing i) and every column j after it: the bulk of the column loop's
//! arithmetic (rows · cols² / 2 multiply-subtracts per matrix).
//!
//! Compiled for the widest instruction set the CPU has (pulp, the SIMD dispatch faer and gemm use, so safe
//! code): the workspace builds for baseline x86-64, where this loop would run on 4-wide SSE2. Eight rows
//! are updated together, sixteen columns at a time kept in registers, so each value of U is loaded once
//! per eight rows and the eight running sums are independent (one row alone would wait on its own
//! multiply-subtract chain). Each element still sees exactly the scalar loop's operations in its order
//! (a product, then a subtraction, never fused), so the results are bit for bit the scalar ones.

use faer::traits::pulp::{Arch, Simd, WithSimd};

/// Columns per register-blocked strip.
const STRIP: usize = 16;
/// Rows updated together (one accumulator strip each).
pub(super) const ROWS: usize = 8;

/// `w[r][j] -= err[r][i - b0] · u[i·cols + j]` for i in `b0..b1` (in order), j in `b1..cols`.
pub(super) fn lazy_update(ws: &mut [Vec<f32>], errs: &[Vec<f32>], u: &[f32], cols: usize, b0: usize, b1: usize) {
    Arch::new().dispatch(Update { ws, errs, u, cols, b0, b1 });
}

/// The same update in plain scalar code, element by element: the reference the tests compare with.
#[cfg(test)]
fn lazy_update_scalar(ws: &mut [Vec<f32>], errs: &[Vec<f32>], u: &[f32], cols: usize, b0: usize, b1: usize) {
    for (w, err) in ws.iter_mut().zip(errs) {
        for j in b1..cols {
            for i in b0..b1 {
                w[j] -= err[i - b0] * u[i * cols + j];
            }
        }
    }
}

struct Update<'a> {
    ws: &'a mut [Vec<f32>],
    errs: &'a [Vec<f32>],
    u: &'a [f32],
    cols: usize,
    b0: usize,
    b1: usize,
}

impl WithSimd for Update<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Update { ws, errs, u, cols, b0, b1 } = self;
        let strips_end = b1 + (cols - b1) / STRIP * STRIP;
        let mut groups = ws.chunks_exact_mut(ROWS);
        let mut err_groups = errs.chunks_exact(ROWS);
        for (wg, eg) in (&mut groups).zip(&mut err_groups) {
            let Ok(wg) = <&mut [Vec<f32>; ROWS]>::try_from(wg) else { continue };
            let Ok(eg) = <&[Vec<f32>; ROWS]>::try_from(eg) else { continue };
            for j in (b1..strips_end).step_by(STRIP) {
                strip(wg, eg, u, cols, b0, b1, j);
            }
            for (w, err) in wg.iter_mut().zip(eg) {
                one_row(w, err, u, cols, b0, b1, strips_end);
            }
        }
        for (w, err) in groups.into_remainder().iter_mut().zip(err_groups.remainder()) {
            one_row(w, err, u, cols, b0, b1, b1);
        }
    }
}

/// Columns `j..j + STRIP` of eight rows, held in registers over the whole block of i.
#[inline(always)]
fn strip(ws: &mut [Vec<f32>; ROWS], errs: &[Vec<f32>; ROWS], u: &[f32], cols: usize, b0: usize, b1: usize, j: usize) {
    let mut acc = [[0f32; STRIP]; ROWS];
    for (a, w) in acc.iter_mut().zip(ws.iter()) {
        a.copy_from_slice(&w[j..j + STRIP]);
    }
    for i in b0..b1 {
        let urow = &u[i * cols + j..i * cols + j + STRIP];
        for (a, err) in acc.iter_mut().zip(errs) {
            let e = err[i - b0];
            for (x, &uj) in a.iter_mut().zip(urow) {
                *x -= e * uj;
            }
        }
    }
    for (a, w) in acc.iter().zip(ws.iter_mut()) {
        w[j..j + STRIP].copy_from_slice(a);
    }
}

/// Columns `from..cols` of one row, i outermost.
#[inline(always)]
fn one_row(w: &mut [f32], err: &[f32], u: &[f32], cols: usize, b0: usize, b1: usize, from: usize) {
    for i in b0..b1 {
        let e = err[i - b0];
        let urow = &u[i * cols + from..(i + 1) * cols];
        for (wj, &uj) in w[from..].iter_mut().zip(urow) {
            *wj -= e * uj;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The wide path must really run where the CPU has it (a test of a SIMD kernel against its scalar
    /// reference proves nothing otherwise); where the CPU lacks it, say so by the kernel's name.
    pub(in crate::gptq) fn assert_wide_path_runs(kernel: &str) -> Arch {
        let arch = Arch::new();
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            assert!(!matches!(arch, Arch::Scalar), "{kernel}: this CPU has AVX2+FMA but pulp dispatches to scalar code");
        } else {
            eprintln!("{kernel}: no AVX2 on this CPU, the test compares pulp's scalar path with the reference");
        }
        arch
    }

    #[test]
    fn simd_lazy_update_equals_the_scalar_loop_bit_for_bit() {
        let arch = assert_wide_path_runs("lazy_update");
        eprintln!("lazy_update dispatches to {arch:?}");
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        // Row counts with and without a remainder group; widths with and without a column tail.
        for &(rows, cols, b0, b1) in &[(8, 80, 0, 16), (16, 203, 32, 64), (11, 64, 0, 48), (3, 40, 8, 24), (8, 32, 0, 32)] {
            let u: Vec<f32> = (0..cols * cols).map(|_| next()).collect();
            let ws: Vec<Vec<f32>> = (0..rows).map(|_| (0..cols).map(|_| next() * 4.0).collect()).collect();
            let errs: Vec<Vec<f32>> = (0..rows).map(|_| (0..b1 - b0).map(|_| next()).collect()).collect();
            let (mut fast, mut slow) = (ws.clone(), ws);
            lazy_update(&mut fast, &errs, &u, cols, b0, b1);
            lazy_update_scalar(&mut slow, &errs, &u, cols, b0, b1);
            for (f, s) in fast.iter().zip(&slow) {
                let (fb, sb): (Vec<u32>, Vec<u32>) = (f.iter().map(|v| v.to_bits()).collect(), s.iter().map(|v| v.to_bits()).collect());
                assert_eq!(fb, sb, "rows={rows} cols={cols} b0={b0} b1={b1}");
            }
        }
    }
}

//! Once GPTQ has fixed every code, each row's group scales are refit jointly by least squares in the
//! Hessian norm: with ŵ = Σ_g s_g c_g (c_g the row's codes minus zero points, restricted to group g), the
//! output error on the calibration activations is (w − ŵ)ᵀ H (w − ŵ), a quadratic in the scales, minimized
//! by A s = b with A_gh = c_gᵀ H c_h and b_g = c_gᵀ H w. Codes, zero points and the format stay as they are,
//! so exporters see nothing new; a row keeps its old scales unless the refit (after f16 rounding) is better.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use half::f16;
use rayon::prelude::*;

use edgeforge_core::quantized::QuantTensor;
use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};

/// Refits `q`'s scales against the original weights (`rows × cols`) under the input Hessian `hessian`
/// (`cols × cols`). Returns the summed output error (relative to ‖w‖²_H) before and after.
pub fn refit_scales(q: &mut QuantTensor, original: &[f32], rows: usize, cols: usize, hessian: &[f64]) -> (f64, f64) {
    let g = q.format.group_size.max(1);
    let n_groups = q.format.groups_per_row(cols);
    let h32: Vec<f32> = hessian.iter().map(|&v| v as f32).collect();
    // Codes minus zero points, row-major like the weights.
    let centered: Vec<f32> = (0..rows * cols).map(|i| f32::from(q.code(i)) - q.zero(q.group_of(i))).collect();

    // Per row: A (n_groups²) and b (n_groups), accumulated group by group so only one V is alive.
    let mut a = vec![0f64; rows * n_groups * n_groups];
    let mut b = vec![0f64; rows * n_groups];
    let mut v = vec![0f32; cols * rows];
    for gi in 0..n_groups {
        let (g0, g1) = (gi * g, ((gi + 1) * g).min(cols));
        // V = H[:, g0..g1] · C_g, `cols × rows`: column r is H c_g for row r.
        let hg = MatRef { data: &h32, offset: g0, rows: cols, cols: g1 - g0, row_stride: cols, col_stride: 1 };
        let cg = MatRef { data: &centered, offset: g0, rows: g1 - g0, cols: rows, row_stride: 1, col_stride: cols };
        let ok = matmul(&mut v, 0, rows, hg, cg, false, Threads::Pool);
        debug_assert!(ok, "views lie inside the Hessian, the codes and V by construction");
        a.par_chunks_mut(n_groups * n_groups).zip(b.par_chunks_mut(n_groups)).enumerate().for_each(|(r, (ar, br))| {
            let (crow, wrow) = (&centered[r * cols..(r + 1) * cols], &original[r * cols..(r + 1) * cols]);
            let mut bg = 0f64;
            let mut by_group = vec![0f64; n_groups];
            for j in 0..cols {
                let vj = f64::from(v[j * rows + r]);
                bg += vj * f64::from(wrow[j]);
                by_group[j / g] += vj * f64::from(crow[j]);
            }
            br[gi] = bg;
            for (hi, &x) in by_group.iter().enumerate() {
                ar[gi * n_groups + hi] = x;
            }
        });
    }

    let results: Vec<(Vec<f16>, f64, f64)> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let ar = &a[r * n_groups * n_groups..(r + 1) * n_groups * n_groups];
            let br = &b[r * n_groups..(r + 1) * n_groups];
            let old: Vec<f16> = q.scales[r * n_groups..(r + 1) * n_groups].to_vec();
            // err(s) − wᵀHw = sᵀAs − 2 sᵀb; groups whose codes are all zero do not take part.
            let objective = |s: &[f64]| {
                let mut e = 0f64;
                for i in 0..n_groups {
                    e -= 2.0 * s[i] * br[i];
                    for j in 0..n_groups {
                        e += s[i] * ar[i * n_groups + j] * s[j];
                    }
                }
                e
            };
            let old_s: Vec<f64> = old.iter().map(|s| f64::from(s.to_f32())).collect();
            let before = objective(&old_s);
            let live: Vec<usize> = (0..n_groups).filter(|&i| ar[i * n_groups + i] > 0.0).collect();
            let m = Mat::<f64>::from_fn(live.len(), live.len(), |i, j| ar[live[i] * n_groups + live[j]]);
            let rhs = Mat::<f64>::from_fn(live.len(), 1, |i, _| br[live[i]]);
            let solved = m.llt(Side::Lower).ok().map(|llt| llt.solve(&rhs));
            let mut new_s = old_s.clone();
            if let Some(x) = solved {
                for (k, &i) in live.iter().enumerate() {
                    let s = x[(k, 0)];
                    if s.is_finite() {
                        new_s[i] = f64::from(f16::from_f64(s).to_f32());
                    }
                }
            }
            let after = objective(&new_s);
            if after < before && new_s.iter().all(|s| s.is_finite()) {
                (new_s.iter().map(|&s| f16::from_f64(s)).collect(), before, after)
            } else {
                (old, before, before)
            }
        })
        .collect();
    let (mut before, mut after) = (0f64, 0f64);
    for (r, (scales, eb, ea)) in results.into_iter().enumerate() {
        q.scales[r * n_groups..(r + 1) * n_groups].copy_from_slice(&scales);
        before += eb;
        after += ea;
    }
    (before, after)
}

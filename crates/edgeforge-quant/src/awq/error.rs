//! The output error of replacing a linear's weights, measured through the Hessian of its inputs:
//! Σ_t ‖(W − Ŵ) x_t‖² = Σ_rows Δ_r H Δ_rᵀ with H = Σ_t x_t x_tᵀ, so a candidate is scored on every
//! calibration token at a cost independent of their number.

use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};

/// Σ_rows Δ_r H Δ_rᵀ for `delta` (`rows × d`) and `h` (`d × d`, f32).
pub fn output_error(delta: &[f32], rows: usize, d: usize, h: &[f32], scratch: &mut Vec<f32>) -> f64 {
    scratch.clear();
    scratch.resize(rows * d, 0.0);
    let ok = matmul(scratch, 0, d, MatRef::row_major(delta, rows, d), MatRef::row_major(h, d, d), false, Threads::Pool);
    debug_assert!(ok, "shapes agree by construction");
    scratch.iter().zip(delta).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_error_summed_over_tokens() {
        let (rows, d, n) = (3, 5, 7);
        let delta: Vec<f32> = (0..rows * d).map(|i| (i as f32 * 0.37).cos()).collect();
        let x: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.91).sin()).collect();
        let mut h = vec![0f32; d * d];
        for t in 0..n {
            for i in 0..d {
                for j in 0..d {
                    h[i * d + j] += x[t * d + i] * x[t * d + j];
                }
            }
        }
        let mut want = 0f64;
        for r in 0..rows {
            for t in 0..n {
                let y: f64 = (0..d).map(|k| f64::from(delta[r * d + k]) * f64::from(x[t * d + k])).sum();
                want += y * y;
            }
        }
        let got = output_error(&delta, rows, d, &h, &mut Vec::new());
        assert!((got - want).abs() < 1e-4 * want.max(1.0), "{got} vs {want}");
    }
}

//! H = Σ xᵀx over calibration tokens, for one linear layer's input width.

use rayon::prelude::*;

use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};

/// Tiles are about this wide: small enough that skipping the lower triangle saves ~40% of the GEMM work,
/// large enough that each tile product stays efficient.
const TILE_COLS: usize = 256;

/// A running Hessian of a `width`-wide input.
pub struct Hessian {
    pub width: usize,
    /// Row-major `width × width`, summed in f64: activations with large outlier channels make the running
    /// totals too wide for f32.
    pub sum: Vec<f64>,
    pub tokens: usize,
    scratch: Vec<f32>,
}

impl Hessian {
    pub fn new(width: usize) -> Self {
        Self { width, sum: vec![0.0; width * width], tokens: 0, scratch: Vec::new() }
    }

    /// Adds xᵀx of `x` (`n × width`, row-major). H is symmetric, so only tiles on or above the diagonal are
    /// multiplied (f32 GEMMs, the bulk of GPTQ's arithmetic) and the rest is mirrored while summing.
    pub fn add(&mut self, x: &[f32]) {
        let d = self.width;
        if d == 0 || x.is_empty() {
            return;
        }
        let n = x.len() / d;
        self.tokens += n;
        let tiles = d.div_ceil(TILE_COLS);
        let tile = d.div_ceil(tiles);
        self.scratch.clear();
        self.scratch.resize(d * d, 0.0);
        for ti in 0..tiles {
            let i0 = ti * tile;
            let rows = tile.min(d - i0);
            for tj in ti..tiles {
                let j0 = tj * tile;
                let cols = tile.min(d - j0);
                let a = MatRef { data: x, offset: i0, rows, cols: n, row_stride: 1, col_stride: d };
                let b = MatRef { data: x, offset: j0, rows: n, cols, row_stride: d, col_stride: 1 };
                let ok = matmul(&mut self.scratch, i0 * d + j0, d, a, b, false, Threads::Pool);
                debug_assert!(ok, "tile views lie inside x and the scratch by construction");
            }
        }
        let s = &self.scratch;
        self.sum.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
            for (j, h) in row.iter_mut().enumerate() {
                let v = if i / tile <= j / tile { s[i * d + j] } else { s[j * d + i] };
                *h += f64::from(v);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_symmetric_product_equals_the_plain_sum() {
        for d in [5usize, 64, 300, 520] {
            let n = 7;
            let x: Vec<f32> = (0..n * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let mut h = Hessian::new(d);
            h.add(&x);
            h.add(&x[..d * 3]);
            for i in 0..d {
                for j in 0..d {
                    let mut want = 0f64;
                    for t in 0..n {
                        want += f64::from(x[t * d + i]) * f64::from(x[t * d + j]);
                    }
                    for t in 0..3 {
                        want += f64::from(x[t * d + i]) * f64::from(x[t * d + j]);
                    }
                    let got = h.sum[i * d + j];
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "d={d} ({i},{j}): {got} vs {want}");
                }
            }
            assert_eq!(h.tokens, n + 3);
        }
    }
}

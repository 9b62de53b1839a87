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
    /// totals too wide for f32. Only the tiles on or above the diagonal are summed (`tile` wide); the rest
    /// is mirrored by `matrix`.
    upper: Vec<f64>,
    tile: usize,
    pub tokens: usize,
    scratch: Vec<f32>,
}

impl Hessian {
    pub fn new(width: usize) -> Self {
        let tile = if width == 0 { 1 } else { width.div_ceil(width.div_ceil(TILE_COLS)) };
        Self { width, upper: vec![0.0; width * width], tile, tokens: 0, scratch: Vec::new() }
    }

    /// Adds xᵀx of `x` (`n × width`, row-major). H is symmetric, so only tiles on or above the diagonal are
    /// multiplied (f32 GEMMs, the bulk of GPTQ's arithmetic) and summed; `matrix` mirrors the rest.
    pub fn add(&mut self, x: &[f32]) {
        let d = self.width;
        if d == 0 || x.is_empty() {
            return;
        }
        let n = x.len() / d;
        self.tokens += n;
        let tile = self.tile;
        let tiles = d.div_ceil(tile);
        // Every element the sum below reads is written by a tile product first, so the scratch is never
        // cleared (a 9 MB memset per sequence for a 1536-wide input).
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
        self.upper.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
            // Row i's tiles on or above the diagonal start at its tile's first column.
            let j0 = i / tile * tile;
            for (h, &v) in row[j0..].iter_mut().zip(&s[i * d + j0..(i + 1) * d]) {
                *h += f64::from(v);
            }
        });
    }

    /// The whole symmetric `width × width` matrix, row-major.
    pub fn matrix(&self) -> Vec<f64> {
        let (d, tile) = (self.width, self.tile);
        let mut m = self.upper.clone();
        for i in 0..d {
            for j in 0..i / tile * tile {
                m[i * d + j] = self.upper[j * d + i];
            }
        }
        m
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
            let m = h.matrix();
            for i in 0..d {
                for j in 0..d {
                    let mut want = 0f64;
                    for t in 0..n {
                        want += f64::from(x[t * d + i]) * f64::from(x[t * d + j]);
                    }
                    for t in 0..3 {
                        want += f64::from(x[t * d + i]) * f64::from(x[t * d + j]);
                    }
                    let got = m[i * d + j];
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "d={d} ({i},{j}): {got} vs {want}");
                }
            }
            assert_eq!(h.tokens, n + 3);
        }
    }
}

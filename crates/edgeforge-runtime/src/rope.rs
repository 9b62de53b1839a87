//! Rotary position embedding in llama.cpp's "normal" layout: dimensions (2i, 2i+1) of each head rotate
//! together by pos · base^(−2i/head_dim). (GGUF files store Q/K rows permuted for exactly this layout.)

use rayon::prelude::*;

/// cos/sin for every (position, pair), computed in f64 so long contexts keep their accuracy.
pub struct RopeTable {
    head_dim: usize,
    cos_sin: Vec<(f32, f32)>,
}

impl RopeTable {
    pub fn new(head_dim: usize, base: f32, start: usize, n: usize) -> Self {
        let half = head_dim / 2;
        let mut cos_sin = Vec::with_capacity(n * half);
        for p in start..start + n {
            for i in 0..half {
                let inv_freq = f64::from(base).powf(-2.0 * i as f64 / head_dim as f64);
                let theta = p as f64 * inv_freq;
                cos_sin.push((theta.cos() as f32, theta.sin() as f32));
            }
        }
        Self { head_dim, cos_sin }
    }

    /// Positions the table covers.
    pub fn positions(&self) -> usize {
        self.cos_sin.len() / (self.head_dim / 2).max(1)
    }

    /// Rotate `x` (`n` rows of `width` = heads × head_dim) in place; row r is position start + r.
    pub fn apply(&self, x: &mut [f32], width: usize) {
        let half = self.head_dim / 2;
        x.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
            let cs = &self.cos_sin[r * half..(r + 1) * half];
            for head in row.chunks_exact_mut(self.head_dim) {
                for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cs) {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * c - b * s;
                    pair[1] = a * s + b * c;
                }
            }
        });
    }
}

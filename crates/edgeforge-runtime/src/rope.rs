//! Rotary position embedding. Two layouts, as llama.cpp's ggml_rope_ext: NORM rotates dimensions (2i, 2i+1)
//! of each head together (GGUF llama files store Q/K rows permuted for it), NEOX rotates (i, i + head_dim/2)
//! (HF's rotate_half: qwen, gemma, phi3). Pair i turns by pos · freq_scale · base^(−2i/head_dim) / factor_i,
//! with Llama 3's per-pair factors (`rope_freqs.weight`) when the model has them.

use std::sync::Arc;

use edgeforge_core::RopeKind;
use rayon::prelude::*;

/// One layer's RoPE: layout, base, linear position scale (1 / the linear scaling factor) and optional
/// per-pair frequency divisors.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    pub kind: RopeKind,
    pub base: f32,
    pub freq_scale: f32,
    pub factors: Option<Arc<[f32]>>,
}

impl RopeParams {
    /// Plain llama RoPE with `base`.
    pub fn norm(base: f32) -> Self {
        Self { kind: RopeKind::Norm, base, freq_scale: 1.0, factors: None }
    }
}

/// cos/sin for every (position, pair), computed in f64 so long contexts keep their accuracy.
pub struct RopeTable {
    head_dim: usize,
    kind: RopeKind,
    cos_sin: Vec<(f32, f32)>,
    /// Rotate as llama.cpp's build does (`new_ggml`): `fma(x0, cos, −x1·sin)`, `fma(x0, sin, x1·cos)` (GCC
    /// contracts ggml's `x0*cos - x1*sin` so; checked bit for bit by `parity.rs`).
    fused: bool,
}

impl RopeTable {
    pub fn new(head_dim: usize, p: &RopeParams, start: usize, n: usize) -> Self {
        let half = head_dim / 2;
        let mut cos_sin = Vec::with_capacity(n * half);
        let plain = p.freq_scale == 1.0 && p.factors.is_none();
        for pos in start..start + n {
            for i in 0..half {
                let inv_freq = f64::from(p.base).powf(-2.0 * i as f64 / head_dim as f64);
                let theta = if plain {
                    pos as f64 * inv_freq
                } else {
                    let factor = p.factors.as_ref().and_then(|f| f.get(i)).copied().unwrap_or(1.0);
                    pos as f64 * f64::from(p.freq_scale) * inv_freq / f64::from(factor)
                };
                cos_sin.push((theta.cos() as f32, theta.sin() as f32));
            }
        }
        Self { head_dim, kind: p.kind, cos_sin, fused: false }
    }

    /// The angles as llama.cpp's CPU RoPE computes them, in f32: `theta_scale = powf(base, −2 / head_dim)`,
    /// pair `i`'s angle the previous pair's times `theta_scale` (starting from the position), divided by the
    /// pair's frequency factor and times `freq_scale`, then `cosf`/`sinf`. Used with the `llamacpp` rounding,
    /// so that its figures reproduce llama.cpp's (the angles drift from the exact ones by a few ulps per pair).
    pub fn new_ggml(head_dim: usize, p: &RopeParams, start: usize, n: usize) -> Self {
        let half = head_dim / 2;
        let theta_scale = p.base.powf(-2.0 / head_dim as f32);
        let mut cos_sin = Vec::with_capacity(n * half);
        for pos in start..start + n {
            let mut theta = pos as f32;
            for i in 0..half {
                let factor = p.factors.as_ref().and_then(|f| f.get(i)).copied().unwrap_or(1.0);
                let t = p.freq_scale * (theta / factor);
                cos_sin.push((t.cos(), t.sin()));
                theta *= theta_scale;
            }
        }
        Self { head_dim, kind: p.kind, cos_sin, fused: true }
    }

    /// cos and sin of every (position, pair), row-major `[positions, head_dim/2]`: the same angles for other
    /// implementations of this RoPE (the distillation model reads them).
    pub fn cos_sin(&self) -> &[(f32, f32)] {
        &self.cos_sin
    }

    /// Positions the table covers.
    pub fn positions(&self) -> usize {
        self.cos_sin.len() / (self.head_dim / 2).max(1)
    }

    /// Rotate `x` (`n` rows of `width` = heads × head_dim) in place; row r is position start + r.
    pub fn apply(&self, x: &mut [f32], width: usize) {
        let half = self.head_dim / 2;
        let (kind, fused) = (self.kind, self.fused);
        let rotate = move |x0: f32, x1: f32, c: f32, s: f32| if fused { (x0.mul_add(c, -(x1 * s)), x0.mul_add(s, x1 * c)) } else { (x0 * c - x1 * s, x0 * s + x1 * c) };
        x.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
            let cs = &self.cos_sin[r * half..(r + 1) * half];
            for head in row.chunks_exact_mut(self.head_dim) {
                match kind {
                    RopeKind::Norm => {
                        for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cs) {
                            (pair[0], pair[1]) = rotate(pair[0], pair[1], c, s);
                        }
                    }
                    RopeKind::Neox => {
                        let (lo, hi) = head.split_at_mut(half);
                        for ((a, b), &(c, s)) in lo.iter_mut().zip(hi.iter_mut()).zip(cs) {
                            (*a, *b) = rotate(*a, *b, c, s);
                        }
                    }
                }
            }
        });
    }
}

/// Tables for the distinct RoPE parameters of a model's layers (Gemma 3 has two), built on first use.
#[derive(Default)]
pub(crate) struct RopeTables {
    tables: Vec<(RopeParams, Arc<RopeTable>)>,
}

impl RopeTables {
    /// The table of `p` for positions `start..start + n` (llama.cpp's f32 angles when `ggml`).
    pub fn get(&mut self, head_dim: usize, p: &RopeParams, start: usize, n: usize, ggml: bool) -> Arc<RopeTable> {
        if let Some((_, t)) = self.tables.iter().find(|(q, _)| q == p) {
            return Arc::clone(t);
        }
        let t = Arc::new(if ggml { RopeTable::new_ggml(head_dim, p, start, n) } else { RopeTable::new(head_dim, p, start, n) });
        self.tables.push((p.clone(), Arc::clone(&t)));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_angles_stay_within_a_few_ulps_of_the_exact_ones() {
        let p = RopeParams::norm(100_000.0);
        let (exact, ggml) = (RopeTable::new(64, &p, 0, 600), RopeTable::new_ggml(64, &p, 0, 600));
        assert_eq!(ggml.cos_sin()[..32], vec![(1.0f32, 0.0f32); 32][..], "position 0 does not turn");
        let worst = exact.cos_sin().iter().zip(ggml.cos_sin()).map(|(a, b)| (a.0 - b.0).abs().max((a.1 - b.1).abs())).fold(0f32, f32::max);
        // f32 angles of up to 600 rad carry ~600 · 2^-24 of rounding, plus the drift of the repeated products.
        assert!(worst > 0.0 && worst < 2e-4, "{worst}");
    }
}

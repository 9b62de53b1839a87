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
        Self { head_dim, kind: p.kind, cos_sin }
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
        let kind = self.kind;
        x.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
            let cs = &self.cos_sin[r * half..(r + 1) * half];
            for head in row.chunks_exact_mut(self.head_dim) {
                match kind {
                    RopeKind::Norm => {
                        for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cs) {
                            let (a, b) = (pair[0], pair[1]);
                            pair[0] = a * c - b * s;
                            pair[1] = a * s + b * c;
                        }
                    }
                    RopeKind::Neox => {
                        let (lo, hi) = head.split_at_mut(half);
                        for ((a, b), &(c, s)) in lo.iter_mut().zip(hi.iter_mut()).zip(cs) {
                            let (x0, x1) = (*a, *b);
                            *a = x0 * c - x1 * s;
                            *b = x0 * s + x1 * c;
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
    pub fn get(&mut self, head_dim: usize, p: &RopeParams, start: usize, n: usize) -> Arc<RopeTable> {
        if let Some((_, t)) = self.tables.iter().find(|(q, _)| q == p) {
            return Arc::clone(t);
        }
        let t = Arc::new(RopeTable::new(head_dim, p, start, n));
        self.tables.push((p.clone(), Arc::clone(&t)));
        t
    }
}

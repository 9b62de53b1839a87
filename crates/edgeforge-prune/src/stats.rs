//! Calibration statistics for pruning, gathered block by block (memory: one block's weights plus the
//! calibration hidden states, independent of depth).

use edgeforge_core::pass::{PassContext, PassError};
use edgeforge_core::Model;
use edgeforge_runtime::{layer_from_model_as, Block, BlockDims, WeightStorage};

use crate::runtime_error;

/// Per-block sums over the calibration tokens.
#[derive(Debug, Clone, Default)]
pub struct BlockStats {
    /// Σ h_j² of each FFN hidden channel (the input of down_proj).
    pub ffn_hidden_sq: Vec<f64>,
    /// Σ a_d² of each attention-output dimension (the input of o_proj), `n_heads·head_dim`.
    pub heads_sq: Vec<f64>,
    /// Σ over tokens of cos(block input, block output).
    pub cos_sum: f64,
    pub tokens: usize,
}

impl BlockStats {
    pub fn mean_cos(&self) -> f64 {
        if self.tokens == 0 {
            1.0
        } else {
            self.cos_sum / self.tokens as f64
        }
    }
}

fn add_sq(sum: &mut Vec<f64>, x: &[f32], width: usize) {
    if sum.len() != width {
        *sum = vec![0.0; width];
    }
    for row in x.chunks_exact(width) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += f64::from(*v) * f64::from(*v);
        }
    }
}

fn cos_rows(a: &[f32], b: &[f32], width: usize) -> f64 {
    a.chunks_exact(width)
        .zip(b.chunks_exact(width))
        .map(|(x, y)| {
            let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
            for (p, q) in x.iter().zip(y) {
                let (p, q) = (f64::from(*p), f64::from(*q));
                xy += p * q;
                xx += p * p;
                yy += q * q;
            }
            if xx > 0.0 && yy > 0.0 {
                xy / (xx * yy).sqrt()
            } else {
                1.0
            }
        })
        .sum()
}

pub fn block_dims(model: &Model) -> BlockDims {
    let c = &model.config;
    BlockDims { n_embd: c.n_embd, head_dim: c.head_dim, rope_base: c.rope_base, rms_eps: c.rms_eps }
}

/// Run the calibration sequences through `model` one block at a time, summing what the criteria need.
pub fn collect(model: &Model, sequences: &[Vec<u32>], cx: &PassContext<'_>) -> Result<Vec<BlockStats>, PassError> {
    let n_layers = model.config.n_layers;
    let e = model.config.n_embd;
    let mut hidden = edgeforge_quant::embed(model, sequences)?;
    let mut out = Vec::with_capacity(n_layers);
    for li in 0..n_layers {
        cx.check_cancel()?;
        let block = Block::new(layer_from_model_as(model, li, WeightStorage::F32)?, block_dims(model)).map_err(runtime_error)?;
        let (ff, qd) = (block.weights().n_ff, block.weights().n_heads * model.config.head_dim);
        let mut s = BlockStats::default();
        for (n, x) in hidden.iter_mut() {
            let n = *n;
            let input = x.clone();
            let xn = block.attn_norm(x, n).map_err(runtime_error)?;
            let heads = block.attention_heads(&xn, n).map_err(runtime_error)?;
            add_sq(&mut s.heads_sq, &heads, qd);
            block.add_attention_output(&heads, n, x).map_err(runtime_error)?;
            let xn = block.ffn_norm(x, n).map_err(runtime_error)?;
            let h = block.ffn_hidden(&xn, n).map_err(runtime_error)?;
            add_sq(&mut s.ffn_hidden_sq, &h, ff);
            block.add_ffn_output(&h, n, x).map_err(runtime_error)?;
            s.cos_sum += cos_rows(&input, x, e);
            s.tokens += n;
        }
        out.push(s);
        (cx.progress)(li as u64 + 1, n_layers as u64);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_rows() {
        let a = [1.0, 0.0, 0.0, 2.0];
        let b = [2.0, 0.0, 1.0, 0.0];
        assert!((cos_rows(&a, &b, 2) - 1.0).abs() < 1e-12);
        let mut s = Vec::new();
        add_sq(&mut s, &[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(s, vec![10.0, 20.0]);
    }
}

//! Weights as the forward pass reads them: f32, row-major `[out, in]` linears, Q/K rows in llama.cpp's
//! adjacent-pair RoPE order. Head counts and FFN width are per layer, because structured pruning shrinks
//! layers unevenly.

use crate::error::RuntimeError;

pub struct LayerWeights {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub n_ff: usize,
    pub attn_norm: Vec<f32>,
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub wo: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Vec<f32>,
    pub w_up: Vec<f32>,
    pub w_down: Vec<f32>,
}

pub struct LlamaWeights {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// `[vocab, n_embd]`
    pub token_embd: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// `[vocab, n_embd]`; `None` when tied to `token_embd`.
    pub output: Option<Vec<f32>>,
}

fn check(tensor: impl Fn() -> String, got: usize, expected: usize) -> Result<(), RuntimeError> {
    if got == expected {
        Ok(())
    } else {
        Err(RuntimeError::WeightLength { tensor: tensor(), expected, got })
    }
}

impl LlamaWeights {
    /// Largest number of KV heads × head_dim over the layers (the cache width).
    pub fn max_kv_width(&self) -> usize {
        self.layers.iter().map(|l| l.n_kv_heads * self.head_dim).max().unwrap_or(0)
    }

    pub fn validate(&self) -> Result<(), RuntimeError> {
        let (e, v, hd) = (self.n_embd, self.vocab_size, self.head_dim);
        for (what, value) in [("n_embd", e), ("vocab_size", v), ("head_dim", hd)] {
            if value == 0 {
                return Err(RuntimeError::BadShape { what, value, why: "must be positive" });
            }
        }
        if hd % 2 != 0 {
            return Err(RuntimeError::BadShape { what: "head_dim", value: hd, why: "must be even for RoPE" });
        }
        check(|| "token_embd".into(), self.token_embd.len(), v * e)?;
        check(|| "output_norm".into(), self.output_norm.len(), e)?;
        if let Some(o) = &self.output {
            check(|| "output".into(), o.len(), v * e)?;
        }
        let d = crate::block::BlockDims::of(self);
        for (i, l) in self.layers.iter().enumerate() {
            crate::block::validate_layer(l, d, i)?;
        }
        Ok(())
    }
}

//! Weights as the forward pass reads them: row-major `[out, in]` linears, either f32 or packed INT4/INT8
//! codes (`Linear`), Q/K rows in llama.cpp's adjacent-pair RoPE order. Head counts and FFN width are per
//! layer, because structured pruning shrinks layers unevenly.

use crate::error::RuntimeError;
use crate::kernels::matmul::{matmul, MatRef, Threads};
use crate::kernels::blocks::{block_matmul, block_matmul_group, BlockLinear, Rounding};
use crate::kernels::blocks::DotIsa;
use crate::kernels::matmul::MAX_OUTPUTS;
use crate::kernels::qmatmul::{int_matmul_group, integer_path, qmatmul, PackedLinear};

/// A row-major `[out, in]` matrix as the forward pass multiplies by it. The dimensions are checked
/// against the model's shape by `LlamaWeights::validate`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Float values, multiplied with gemm.
    F32(Vec<f32>),
    /// Integer codes with per-group scales, multiplied with the packed kernels (no float copy).
    Packed(PackedLinear),
    /// A GGUF block format kept as the file's bytes, multiplied natively (`kernels::blocks`).
    Blocks(BlockLinear),
}

impl From<Vec<f32>> for Linear {
    fn from(v: Vec<f32>) -> Self {
        Linear::F32(v)
    }
}

impl Linear {
    /// Bytes this weight keeps in memory.
    pub fn resident_bytes(&self) -> usize {
        match self {
            Linear::F32(v) => v.len() * 4,
            Linear::Packed(p) => p.resident_bytes(),
            Linear::Blocks(b) => b.resident_bytes(),
        }
    }

    pub fn is_packed(&self) -> bool {
        matches!(self, Linear::Packed(_))
    }

    /// Choose how a block or packed weight rounds its activations (no effect on f32 weights).
    pub fn set_rounding(&mut self, rounding: Rounding) {
        match self {
            Linear::Blocks(b) => b.set_rounding(rounding),
            Linear::Packed(p) => p.set_rounding(rounding),
            Linear::F32(_) => {}
        }
    }

    /// Check this is an `[out_dim, in_dim]` matrix.
    pub fn check(&self, tensor: impl Fn() -> String, out_dim: usize, in_dim: usize) -> Result<(), RuntimeError> {
        match self {
            Linear::F32(v) => {
                let expected = out_dim.checked_mul(in_dim).ok_or(RuntimeError::BadShape { what: "linear size", value: out_dim, why: "rows × columns overflows" })?;
                check(tensor, v.len(), expected)
            }
            Linear::Packed(p) if (p.out_dim(), p.in_dim()) != (out_dim, in_dim) => {
                Err(RuntimeError::LinearShape { tensor: tensor(), expected: [out_dim, in_dim], got: [p.out_dim(), p.in_dim()] })
            }
            Linear::Blocks(b) if (b.out_dim(), b.in_dim()) != (out_dim, in_dim) => {
                Err(RuntimeError::LinearShape { tensor: tensor(), expected: [out_dim, in_dim], got: [b.out_dim(), b.in_dim()] })
            }
            Linear::Packed(_) | Linear::Blocks(_) => Ok(()),
        }
    }

    /// `y[n × out] = x[n × in] · Wᵀ`. Shapes were validated; a mismatch is an internal error.
    pub(crate) fn forward(&self, x: &[f32], n: usize, out_dim: usize, in_dim: usize, y: &mut [f32], what: &'static str) -> Result<(), RuntimeError> {
        self.forward_on(x, n, out_dim, in_dim, y, what, Threads::Pool)
    }

    /// `forward` with the f32 product on `threads` (the packed and block kernels always use the pool). Every output
    /// element is computed the same way either way.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_on(&self, x: &[f32], n: usize, out_dim: usize, in_dim: usize, y: &mut [f32], what: &'static str, threads: Threads) -> Result<(), RuntimeError> {
        let ok = match self {
            Linear::F32(w) => matmul(y, 0, out_dim, MatRef::row_major(x, n, in_dim), MatRef::transposed(w, out_dim, in_dim), false, threads),
            Linear::Packed(p) => p.out_dim() == out_dim && p.in_dim() == in_dim && qmatmul(p, x, n, y),
            Linear::Blocks(b) => b.out_dim() == out_dim && b.in_dim() == in_dim && block_matmul(b, x, n, y),
        };
        ok.then_some(()).ok_or(RuntimeError::Kernel { what })
    }

    /// `ys[i] = x · parts[i]ᵀ` for linears sharing the input `x` (`[n, in_dim]`): q, k and v, or gate and up.
    /// Block weights on the integer path quantize `x` once and run in one parallel loop; anything else runs
    /// one product after the other. The same values as `forward_on` on each.
    pub(crate) fn forward_group(x: &[f32], n: usize, in_dim: usize, parts: &mut [(&Linear, usize, &mut [f32], &'static str)], threads: Threads) -> Result<(), RuntimeError> {
        if let Some(r) = Self::forward_packed_group(x, n, in_dim, parts) {
            return r;
        }
        // Fixed-size tables: no allocation per call.
        let Some(Linear::Blocks(first)) = parts.first().map(|p| p.0) else { return Self::forward_each(x, n, in_dim, parts, threads) };
        let mut ws: [&BlockLinear; 4] = [first; 4];
        let all_blocks = parts.len() <= ws.len()
            && parts.iter().zip(ws.iter_mut()).all(|((w, out_dim, _, _), slot)| match w {
                Linear::Blocks(w) if w.out_dim() == *out_dim && w.in_dim() == in_dim => {
                    *slot = w;
                    true
                }
                _ => false,
            });
        if !all_blocks {
            return Self::forward_each(x, n, in_dim, parts, threads);
        }
        let (what, k) = (parts[0].3, parts.len());
        let mut ys: [&mut [f32]; 4] = Default::default();
        for (y, p) in ys.iter_mut().zip(parts.iter_mut()) {
            *y = &mut *p.2;
        }
        block_matmul_group(&ws[..k], x, n, &mut ys[..k]).then_some(()).ok_or(RuntimeError::Kernel { what })
    }

    /// `forward_group` on packed weights that all take the integer path for `n` tokens: one activation
    /// quantization and one parallel loop (`None` when they do not).
    fn forward_packed_group(x: &[f32], n: usize, in_dim: usize, parts: &mut [(&Linear, usize, &mut [f32], &'static str)]) -> Option<Result<(), RuntimeError>> {
        let Some(Linear::Packed(first)) = parts.first().map(|p| p.0) else { return None };
        let mut ws: [&PackedLinear; MAX_OUTPUTS] = [first; MAX_OUTPUTS];
        let all = parts.len() <= ws.len()
            && parts.iter().zip(ws.iter_mut()).all(|((w, out_dim, _, _), slot)| match w {
                Linear::Packed(w) if w.out_dim() == *out_dim && w.in_dim() == in_dim && integer_path(w, n) => {
                    *slot = w;
                    true
                }
                _ => false,
            });
        if !all {
            return None;
        }
        let (what, k) = (parts[0].3, parts.len());
        let mut ys: [&mut [f32]; MAX_OUTPUTS] = Default::default();
        for (y, p) in ys.iter_mut().zip(parts.iter_mut()) {
            *y = &mut *p.2;
        }
        Some(int_matmul_group(DotIsa::best(), &ws[..k], x, n, &mut ys[..k]).then_some(()).ok_or(RuntimeError::Kernel { what }))
    }

    /// `forward_group` one product after the other.
    fn forward_each(x: &[f32], n: usize, in_dim: usize, parts: &mut [(&Linear, usize, &mut [f32], &'static str)], threads: Threads) -> Result<(), RuntimeError> {
        for (w, out_dim, y, what) in parts.iter_mut() {
            w.forward_on(x, n, *out_dim, in_dim, y, what, threads)?;
        }
        Ok(())
    }

    /// Row `r` as floats into `out` (`in_dim` long): an embedding lookup.
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32], what: &'static str) -> Result<(), RuntimeError> {
        let in_dim = out.len();
        let ok = match self {
            Linear::F32(w) => match w.get(r * in_dim..(r + 1) * in_dim) {
                Some(src) => {
                    out.copy_from_slice(src);
                    true
                }
                None => false,
            },
            Linear::Packed(p) => p.in_dim() == in_dim && p.dequantize_rows(r, out),
            Linear::Blocks(b) => b.in_dim() == in_dim && b.dequantize_rows(r, out),
        };
        ok.then_some(()).ok_or(RuntimeError::Kernel { what })
    }
}

pub struct LayerWeights {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub n_ff: usize,
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
    /// The gate's nonlinearity (the model's `ModelConfig::activation`), kept per layer so code that runs one
    /// block on its own (GPTQ, AWQ, reconstruction) computes the same MLP as the whole-model forward.
    pub activation: edgeforge_core::Activation,
    /// Biases, q/k norms, post norms, RoPE variant, window, softmax scale and soft-cap (llama: defaults).
    pub features: crate::features::LayerFeatures,
}

pub struct LlamaWeights {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// `[vocab, n_embd]`: embedding rows, and the output head when tied.
    pub token_embd: Linear,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// `[vocab, n_embd]`; `None` when tied to `token_embd`.
    pub output: Option<Linear>,
    /// Embedding scale and final logit soft-cap (llama: none).
    pub head: crate::features::HeadFeatures,
}

fn check(tensor: impl Fn() -> String, got: usize, expected: usize) -> Result<(), RuntimeError> {
    if got == expected {
        Ok(())
    } else {
        Err(RuntimeError::WeightLength { tensor: tensor(), expected, got })
    }
}

impl LayerWeights {
    /// Choose how the seven linears round their activations (see `Linear::set_rounding`).
    pub fn set_rounding(&mut self, rounding: Rounding) {
        for lin in [&mut self.wq, &mut self.wk, &mut self.wv, &mut self.wo, &mut self.w_gate, &mut self.w_up, &mut self.w_down] {
            lin.set_rounding(rounding);
        }
    }

    /// The seven linears, in forward order.
    pub fn linears(&self) -> [&Linear; 7] {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.w_gate, &self.w_up, &self.w_down]
    }
}

impl LlamaWeights {
    /// Bytes of all weights held in memory (norms, embeddings, linears), f32 or packed.
    pub fn resident_bytes(&self) -> usize {
        let norms = |l: &LayerWeights| (l.attn_norm.len() + l.ffn_norm.len() + l.features.n_floats()) * 4;
        self.token_embd.resident_bytes()
            + self.output.as_ref().map_or(0, Linear::resident_bytes)
            + self.output_norm.len() * 4
            + self.layers.iter().map(|l| norms(l) + l.linears().iter().map(|w| w.resident_bytes()).sum::<usize>()).sum::<usize>()
    }

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
        self.token_embd.check(|| "token_embd".into(), v, e)?;
        check(|| "output_norm".into(), self.output_norm.len(), e)?;
        if let Some(o) = &self.output {
            o.check(|| "output".into(), v, e)?;
        }
        let d = crate::block::BlockDims::of(self);
        for (i, l) in self.layers.iter().enumerate() {
            crate::block::validate_layer(l, d, i)?;
        }
        Ok(())
    }
}

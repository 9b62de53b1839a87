//! One transformer block split into the steps calibration passes look between: attention norm, attention
//! heads, output projection, feed-forward norm, SwiGLU hidden state, down projection. The full forward
//! pass composes the same steps, so a pass that runs a block step by step computes exactly what inference
//! computes.

use rayon::prelude::*;

use crate::error::RuntimeError;
use crate::kernels::matmul::{matmul, MatRef, Threads};
use crate::ops;
use edgeforge_core::Activation;
use crate::rope::RopeTable;
use crate::weights::{LayerWeights, Linear, LlamaWeights};

/// `y[n × out] = x[n × in] · W^T` for a row-major `[out, in]` weight, f32 (gemm) or packed (qmatmul).
pub(crate) fn linear(x: &[f32], n: usize, w: &Linear, out_dim: usize, in_dim: usize, y: &mut [f32], what: &'static str) -> Result<(), RuntimeError> {
    w.forward(x, n, out_dim, in_dim, y, what)
}

/// Model-wide sizes a block needs.
#[derive(Debug, Clone, Copy)]
pub struct BlockDims {
    pub n_embd: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
}

impl BlockDims {
    pub fn of(w: &LlamaWeights) -> Self {
        Self { n_embd: w.n_embd, head_dim: w.head_dim, rope_base: w.rope_base, rms_eps: w.rms_eps }
    }
}

/// Keys and values of one layer: `[capacity, width]` row-major, `past` positions already filled.
pub(crate) struct LayerCache<'a> {
    pub k: &'a mut [f32],
    pub v: &'a mut [f32],
    pub width: usize,
    pub past: usize,
}

pub(crate) fn attn_norm(l: &LayerWeights, d: BlockDims, x: &[f32], out: &mut [f32]) {
    ops::rms_norm(x, &l.attn_norm, d.rms_eps, out);
}

pub(crate) fn ffn_norm(l: &LayerWeights, d: BlockDims, x: &[f32], out: &mut [f32]) {
    ops::rms_norm(x, &l.ffn_norm, d.rms_eps, out);
}

/// Q/K/V of the normed input `xn` (`[n, n_embd]`) at positions `cache.past..`, appended to the cache,
/// attended causally: the heads' outputs `[n, n_heads·head_dim]` (the input of o_proj).
pub(crate) fn attention_heads(l: &LayerWeights, d: BlockDims, xn: &[f32], n: usize, cache: LayerCache<'_>, rope: &RopeTable) -> Result<Vec<f32>, RuntimeError> {
    let (e, hd) = (d.n_embd, d.head_dim);
    let (qd, kvd) = (l.n_heads * hd, l.n_kv_heads * hd);
    let LayerCache { k: kc, v: vc, width: cw, past } = cache;
    let total = past + n;
    let mut q = vec![0f32; n * qd];
    let mut k = vec![0f32; n * kvd];
    let mut v = vec![0f32; n * kvd];
    linear(xn, n, &l.wq, qd, e, &mut q, "attn_q")?;
    linear(xn, n, &l.wk, kvd, e, &mut k, "attn_k")?;
    linear(xn, n, &l.wv, kvd, e, &mut v, "attn_v")?;
    rope.apply(&mut q, qd);
    rope.apply(&mut k, kvd);
    for r in 0..n {
        kc[(past + r) * cw..][..kvd].copy_from_slice(&k[r * kvd..(r + 1) * kvd]);
        vc[(past + r) * cw..][..kvd].copy_from_slice(&v[r * kvd..(r + 1) * kvd]);
    }
    let (kc, vc) = (&*kc, &*vc);

    let group = l.n_heads / l.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let per_head: Vec<Result<Vec<f32>, RuntimeError>> = (0..l.n_heads)
        .into_par_iter()
        .map(|h| {
            let kvh = h / group;
            let mut scores = vec![0f32; n * total];
            let qh = MatRef { data: &q, offset: h * hd, rows: n, cols: hd, row_stride: qd, col_stride: 1 };
            let kt = MatRef { data: kc, offset: kvh * hd, rows: hd, cols: total, row_stride: 1, col_stride: cw };
            if !matmul(&mut scores, 0, total, qh, kt, false, Threads::Single) {
                return Err(RuntimeError::Kernel { what: "attention scores" });
            }
            for (r, row) in scores.chunks_exact_mut(total).enumerate() {
                for sv in row.iter_mut() {
                    *sv *= scale;
                }
                ops::softmax_prefix(row, past + r + 1);
            }
            let mut out = vec![0f32; n * hd];
            let p = MatRef::row_major(&scores, n, total);
            let vh = MatRef { data: vc, offset: kvh * hd, rows: total, cols: hd, row_stride: cw, col_stride: 1 };
            if !matmul(&mut out, 0, hd, p, vh, false, Threads::Single) {
                return Err(RuntimeError::Kernel { what: "attention values" });
            }
            Ok(out)
        })
        .collect();
    let mut heads_out = vec![0f32; n * qd];
    for (h, out) in per_head.into_iter().enumerate() {
        let out = out?;
        for r in 0..n {
            heads_out[r * qd + h * hd..][..hd].copy_from_slice(&out[r * hd..(r + 1) * hd]);
        }
    }
    Ok(heads_out)
}

/// `x += heads · W_oᵀ` (the attention residual).
pub(crate) fn add_attention_output(l: &LayerWeights, d: BlockDims, heads: &[f32], n: usize, x: &mut [f32], scratch: &mut Vec<f32>) -> Result<(), RuntimeError> {
    scratch.resize(n * d.n_embd, 0.0);
    linear(heads, n, &l.wo, d.n_embd, l.n_heads * d.head_dim, scratch, "attn_output")?;
    ops::add_in_place(x, scratch);
    Ok(())
}

/// `act(xn · W_gateᵀ) ⊙ (xn · W_upᵀ)` (act = the layer's activation): the input of down_proj, `[n, n_ff]`.
pub(crate) fn ffn_hidden(l: &LayerWeights, d: BlockDims, xn: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
    let ff = l.n_ff;
    let mut gate = vec![0f32; n * ff];
    let mut up = vec![0f32; n * ff];
    linear(xn, n, &l.w_gate, ff, d.n_embd, &mut gate, "ffn_gate")?;
    linear(xn, n, &l.w_up, ff, d.n_embd, &mut up, "ffn_up")?;
    match l.activation {
        Activation::Silu => ops::silu_mul(&mut gate, &up),
        Activation::Relu => ops::relu_mul(&mut gate, &up),
    }
    Ok(gate)
}

/// `x += hidden · W_downᵀ` (the feed-forward residual).
pub(crate) fn add_ffn_output(l: &LayerWeights, d: BlockDims, hidden: &[f32], n: usize, x: &mut [f32], scratch: &mut Vec<f32>) -> Result<(), RuntimeError> {
    scratch.resize(n * d.n_embd, 0.0);
    linear(hidden, n, &l.w_down, d.n_embd, l.n_ff, scratch, "ffn_down")?;
    ops::add_in_place(x, scratch);
    Ok(())
}

/// One block on its own, run on whole sequences (positions 0..n, no cache kept between calls), step by
/// step. Calibration passes hold one of these instead of the whole model, so their memory does not grow
/// with depth, and swap in each projection as soon as it is quantized.
pub struct Block {
    layer: LayerWeights,
    dims: BlockDims,
}

impl Block {
    pub fn new(layer: LayerWeights, dims: BlockDims) -> Result<Self, RuntimeError> {
        validate_layer(&layer, dims, 0)?;
        Ok(Self { layer, dims })
    }

    pub fn weights(&self) -> &LayerWeights {
        &self.layer
    }

    pub fn dims(&self) -> BlockDims {
        self.dims
    }

    /// Swap in new weights (e.g. after quantizing some of them), checked like the originals.
    pub fn set_weights(&mut self, layer: LayerWeights) -> Result<(), RuntimeError> {
        validate_layer(&layer, self.dims, 0)?;
        self.layer = layer;
        Ok(())
    }

    fn check_len(&self, what: &'static str, got: usize, expected: usize) -> Result<(), RuntimeError> {
        if got == expected {
            Ok(())
        } else {
            Err(RuntimeError::WeightLength { tensor: what.into(), expected, got })
        }
    }

    /// The normed input of q/k/v.
    pub fn attn_norm(&self, x: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        self.check_len("hidden states", x.len(), n * self.dims.n_embd)?;
        let mut out = vec![0f32; x.len()];
        attn_norm(&self.layer, self.dims, x, &mut out);
        Ok(out)
    }

    /// The attention heads' outputs (the input of o_proj) for the normed input `xn`.
    pub fn attention_heads(&self, xn: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        self.check_len("normed hidden states", xn.len(), n * self.dims.n_embd)?;
        let kvd = self.layer.n_kv_heads * self.dims.head_dim;
        let (mut k, mut v) = (vec![0f32; n * kvd], vec![0f32; n * kvd]);
        let rope = RopeTable::new(self.dims.head_dim, self.dims.rope_base, 0, n);
        attention_heads(&self.layer, self.dims, xn, n, LayerCache { k: &mut k, v: &mut v, width: kvd, past: 0 }, &rope)
    }

    pub fn add_attention_output(&self, heads: &[f32], n: usize, x: &mut [f32]) -> Result<(), RuntimeError> {
        self.check_len("attention heads", heads.len(), n * self.layer.n_heads * self.dims.head_dim)?;
        self.check_len("hidden states", x.len(), n * self.dims.n_embd)?;
        add_attention_output(&self.layer, self.dims, heads, n, x, &mut Vec::new())
    }

    /// The normed input of gate/up.
    pub fn ffn_norm(&self, x: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        self.check_len("hidden states", x.len(), n * self.dims.n_embd)?;
        let mut out = vec![0f32; x.len()];
        ffn_norm(&self.layer, self.dims, x, &mut out);
        Ok(out)
    }

    /// The SwiGLU hidden state (the input of down_proj) for the normed input `xn`.
    pub fn ffn_hidden(&self, xn: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        self.check_len("normed hidden states", xn.len(), n * self.dims.n_embd)?;
        ffn_hidden(&self.layer, self.dims, xn, n)
    }

    pub fn add_ffn_output(&self, hidden: &[f32], n: usize, x: &mut [f32]) -> Result<(), RuntimeError> {
        self.check_len("feed-forward hidden", hidden.len(), n * self.layer.n_ff)?;
        self.check_len("hidden states", x.len(), n * self.dims.n_embd)?;
        add_ffn_output(&self.layer, self.dims, hidden, n, x, &mut Vec::new())
    }

    /// The whole block, in place.
    pub fn run(&self, x: &mut [f32], n: usize) -> Result<(), RuntimeError> {
        let xn = self.attn_norm(x, n)?;
        let heads = self.attention_heads(&xn, n)?;
        self.add_attention_output(&heads, n, x)?;
        let xn = self.ffn_norm(x, n)?;
        let hidden = self.ffn_hidden(&xn, n)?;
        self.add_ffn_output(&hidden, n, x)
    }
}

fn check(tensor: impl Fn() -> String, got: usize, expected: usize) -> Result<(), RuntimeError> {
    if got == expected {
        Ok(())
    } else {
        Err(RuntimeError::WeightLength { tensor: tensor(), expected, got })
    }
}

/// Shapes of one layer against the model's sizes.
pub(crate) fn validate_layer(l: &LayerWeights, d: BlockDims, i: usize) -> Result<(), RuntimeError> {
    let (e, hd) = (d.n_embd, d.head_dim);
    if l.n_heads == 0 || l.n_kv_heads == 0 || l.n_heads % l.n_kv_heads != 0 {
        return Err(RuntimeError::BadShape { what: "n_kv_heads", value: l.n_kv_heads, why: "must be positive and divide n_heads" });
    }
    let (q, kv, ff) = (l.n_heads * hd, l.n_kv_heads * hd, l.n_ff);
    let name = |t: &'static str| move || format!("blk.{i}.{t}");
    check(name("attn_norm"), l.attn_norm.len(), e)?;
    l.wq.check(name("attn_q"), q, e)?;
    l.wk.check(name("attn_k"), kv, e)?;
    l.wv.check(name("attn_v"), kv, e)?;
    l.wo.check(name("attn_output"), e, q)?;
    check(name("ffn_norm"), l.ffn_norm.len(), e)?;
    l.w_gate.check(name("ffn_gate"), ff, e)?;
    l.w_up.check(name("ffn_up"), ff, e)?;
    l.w_down.check(name("ffn_down"), e, ff)?;
    Ok(())
}

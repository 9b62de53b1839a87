//! One transformer block split into the steps calibration passes look between: attention norm, attention
//! heads, output projection, feed-forward norm, SwiGLU hidden state, down projection. The full forward
//! pass composes the same steps, so a pass that runs a block step by step computes exactly what inference
//! computes.

use rayon::prelude::*;

use crate::error::RuntimeError;
use crate::kernels::matmul::{matmul, MatRef, Threads};
use crate::ops;
use edgeforge_core::Activation;
use crate::rope::{RopeParams, RopeTable};
use std::sync::{Arc, Mutex};
use crate::weights::{LayerWeights, Linear, LlamaWeights};

/// `y[n × out] = x[n × in] · W^T` for a row-major `[out, in]` weight, f32 (gemm) or packed (qmatmul).
pub(crate) fn linear(x: &[f32], n: usize, w: &Linear, out_dim: usize, in_dim: usize, y: &mut [f32], what: &'static str) -> Result<(), RuntimeError> {
    w.forward(x, n, out_dim, in_dim, y, what)
}

/// `linear` with the f32 product on `threads`.
#[allow(clippy::too_many_arguments)]
fn linear_on(x: &[f32], n: usize, w: &Linear, out_dim: usize, in_dim: usize, y: &mut [f32], what: &'static str, threads: Threads) -> Result<(), RuntimeError> {
    w.forward_on(x, n, out_dim, in_dim, y, what, threads)
}

/// Model-wide sizes a block needs (`rope_base` is the model's; a layer may carry its own RoPE parameters
/// in `LayerFeatures::rope`).
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

/// Query rows per block of causal attention: a block multiplies only the keys its rows can see.
const QUERY_BLOCK: usize = 64;

/// gemm (gemm-common 0.19: `kernel_params` and its small-matrix path both take kc >= 512) sums a depth of
/// up to 512 in one pass, so leaving the keys a block cannot see out of its P·V product only drops terms
/// that were zero, and the result keeps its bits. Past this depth gemm splits the sum at places that depend
/// on the depth, so longer contexts keep the full product.
const ONE_PASS_DEPTH: usize = 512;

/// Row ranges of the query blocks of `n` new rows after `past` cached ones: one block when the keys exceed
/// `ONE_PASS_DEPTH` or the rows are few, else blocks of `QUERY_BLOCK` rows with the last one 8 to 71 rows
/// (so no block is small enough for gemm's vector or dot-product paths, which round differently).
fn query_blocks(n: usize, past: usize) -> Vec<(usize, usize)> {
    if past + n > ONE_PASS_DEPTH {
        return vec![(0, n)];
    }
    let mut blocks = Vec::with_capacity(n / QUERY_BLOCK + 1);
    let mut r0 = 0;
    while r0 < n {
        let r1 = if n - r0 < QUERY_BLOCK + 8 { n } else { r0 + QUERY_BLOCK };
        blocks.push((r0, r1));
        r0 = r1;
    }
    blocks
}

/// What one head's attention reads: the roped queries `[n, q_width]`, the cached keys and values
/// `[past + n, cache_width]`.
struct HeadInputs<'a> {
    q: &'a [f32],
    q_width: usize,
    k: &'a [f32],
    v: &'a [f32],
    cache_width: usize,
    n: usize,
    past: usize,
    head_dim: usize,
    /// Softmax scale, soft-cap and window of this layer (see `LayerFeatures`).
    scale: f32,
    softcap: Option<f32>,
    window: Option<usize>,
    /// The attention's arithmetic.
    arith: Attention,
}

/// How attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attention {
    /// f32 keys, values and products (gemm per query block), softmax over each row.
    #[default]
    Exact,
    /// llama.cpp's CPU flash attention on its default f16 KV cache, as `llama-perplexity` and `llama-cli` run
    /// it (the `llamacpp` rounding): keys and values rounded to f16 when cached, then its tiled f32 kernel
    /// (batches of 64 rows or more) or its one-row kernel (f16 query and value accumulator), bit for bit
    /// (`ggml_arith::GgmlHead`). The rest of the block follows llama.cpp's arithmetic too (its SiLU).
    LlamaCpp,
}


/// Head `h` (reading kv head `kvh`) as llama.cpp's CPU flash attention computes it (`Attention::LlamaCpp`;
/// the cache already holds f16-rounded keys and values): `ggml_arith::GgmlHead`.
fn attend_head_llamacpp(x: &HeadInputs<'_>, h: usize, kvh: usize, out: &mut [f32]) {
    let hd = x.head_dim;
    let head = crate::kernels::ggml_arith::GgmlHead {
        q: &x.q[h * hd..],
        q_stride: x.q_width,
        k: &x.k[kvh * hd..],
        v: &x.v[kvh * hd..],
        kv_stride: x.cache_width,
        head_dim: hd,
        past: x.past,
        scale: x.scale,
        softcap: x.softcap,
        window: x.window,
    };
    head.attend(out);
}

/// Head `h` (reading kv head `kvh`): softmax(cap(q·kᵀ · scale)) · v over the visible keys (causal, and
/// inside the window if the layer has one), `[n, head_dim]`.
#[cfg(test)]
fn attend_head(x: &HeadInputs<'_>, h: usize, kvh: usize) -> Result<Vec<f32>, RuntimeError> {
    let mut out = vec![0f32; x.n * x.head_dim];
    attend_head_into(x, h, kvh, &mut out)?;
    Ok(out)
}

thread_local! {
    /// A worker's attention scores, reused across heads, layers and tokens (no allocation per decode step).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `attend_head` into `out` (`[n, head_dim]`).
fn attend_head_into(x: &HeadInputs<'_>, h: usize, kvh: usize, out: &mut [f32]) -> Result<(), RuntimeError> {
    if x.arith == Attention::LlamaCpp {
        attend_head_llamacpp(x, h, kvh, out);
        return Ok(());
    }
    SCORES.with_borrow_mut(|scores| attend_head_exact(x, h, kvh, out, scores))
}

/// The f32 attention of one head (`Attention::Exact`), with `scores` as scratch.
fn attend_head_exact(x: &HeadInputs<'_>, h: usize, kvh: usize, out: &mut [f32], scores: &mut Vec<f32>) -> Result<(), RuntimeError> {
    let (hd, n, past) = (x.head_dim, x.n, x.past);
    let scale = x.scale;
    for (r0, r1) in query_blocks(n, past) {
        let (rows, keys) = (r1 - r0, past + r1);
        scores.clear();
        scores.resize(rows * keys, 0.0);
        let qh = MatRef { data: x.q, offset: r0 * x.q_width + h * hd, rows, cols: hd, row_stride: x.q_width, col_stride: 1 };
        let kt = MatRef { data: x.k, offset: kvh * hd, rows: hd, cols: keys, row_stride: 1, col_stride: x.cache_width };
        if !matmul(scores, 0, keys, qh, kt, false, Threads::Single) {
            return Err(RuntimeError::Kernel { what: "attention scores" });
        }
        for (r, row) in scores.chunks_exact_mut(keys).enumerate() {
            for sv in row.iter_mut() {
                *sv *= scale;
            }
            if let Some(c) = x.softcap {
                // ggml's order: scale by 1/c, tanh, scale by c.
                let inv = 1.0 / c;
                row.iter_mut().for_each(|sv| *sv = c * (*sv * inv).tanh());
            }
            let visible = past + r0 + r + 1;
            match x.window {
                // llama.cpp masks key p0 for query p1 when p1 - p0 >= window.
                Some(w) if visible > w => ops::softmax_range(row, visible - w, visible),
                _ => ops::softmax_prefix(row, visible),
            }
        }
        let p = MatRef::row_major(scores, rows, keys);
        let vh = MatRef { data: x.v, offset: kvh * hd, rows: keys, cols: hd, row_stride: x.cache_width, col_stride: 1 };
        if !matmul(out, r0 * hd, hd, p, vh, false, Threads::Single) {
            return Err(RuntimeError::Kernel { what: "attention values" });
        }
    }
    Ok(())
}

/// Query rows × keys below which one layer's attention heads run on the calling thread.
const FORK_HEADS_MIN: usize = 4096;

/// Buffers of one layer's attention (q, k, v and the heads' outputs), reused across layers and decode steps
/// when the caller keeps them (the forward pass keeps them with the KV cache).
#[derive(Debug, Default)]
pub(crate) struct AttnScratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    per_head: Vec<f32>,
}

/// `v` resized to `len` (its allocation kept), as a slice.
pub(crate) fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    &mut v[..len]
}

/// Q/K/V of the normed input `xn` (`[n, n_embd]`) at positions `cache.past..`, appended to the cache,
/// attended causally: the heads' outputs `[n, n_heads·head_dim]` (the input of o_proj). With
/// `Threads::Single` everything runs on the calling thread (for callers that parallelize over sequences).
/// Into `heads_out` (resized; its allocation reused), with `scratch` for q, k, v and the heads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_heads_into(
    l: &LayerWeights,
    d: BlockDims,
    xn: &[f32],
    n: usize,
    cache: LayerCache<'_>,
    rope: &RopeTable,
    threads: Threads,
    arith: Attention,
    scratch: &mut AttnScratch,
    heads_out: &mut Vec<f32>,
) -> Result<(), RuntimeError> {
    let (e, hd) = (d.n_embd, d.head_dim);
    let (qd, kvd) = (l.n_heads * hd, l.n_kv_heads * hd);
    let LayerCache { k: kc, v: vc, width: cw, past } = cache;
    let AttnScratch { q, k, v, per_head } = scratch;
    let (q, k, v) = (sized(q, n * qd), sized(k, n * kvd), sized(v, n * kvd));
    let f = &l.features;
    Linear::forward_group(xn, n, e, &mut [(&l.wq, qd, &mut *q, "attn_q"), (&l.wk, kvd, &mut *k, "attn_k"), (&l.wv, kvd, &mut *v, "attn_v")], threads)?;
    for (y, b) in [(&mut *q, &f.q_bias), (&mut *k, &f.k_bias), (&mut *v, &f.v_bias)] {
        if let Some(b) = b {
            ops::add_bias(y, b);
        }
    }
    for (y, w) in [(&mut *q, &f.q_norm), (&mut *k, &f.k_norm)] {
        if let Some(w) = w {
            // Per head: rows of head_dim.
            let src = y.to_vec();
            ops::rms_norm(&src, w, d.rms_eps, y);
        }
    }
    rope.apply(q, qd);
    rope.apply(k, kvd);
    if arith == Attention::LlamaCpp {
        // llama.cpp's default KV cache holds halves.
        k.iter_mut().chain(v.iter_mut()).for_each(|x| *x = crate::kernels::ggml_arith::f16_round(*x));
    }
    for r in 0..n {
        kc[(past + r) * cw..][..kvd].copy_from_slice(&k[r * kvd..(r + 1) * kvd]);
        vc[(past + r) * cw..][..kvd].copy_from_slice(&v[r * kvd..(r + 1) * kvd]);
    }
    let scale = f.attn_scale.unwrap_or_else(|| 1.0 / (hd as f32).sqrt());
    let inputs = HeadInputs { q, q_width: qd, k: kc, v: vc, cache_width: cw, n, past, head_dim: hd, scale, softcap: f.attn_softcap, window: f.window, arith };
    let group = l.n_heads / l.n_kv_heads;
    // A few rows against a short context is microseconds of work per head: cheaper on this thread than a
    // fork-join (decode steps); the values are the same either way.
    let fork = threads == Threads::Pool && n * (past + n) >= FORK_HEADS_MIN;
    let per_head = sized(per_head, l.n_heads * n * hd);
    if fork {
        per_head.par_chunks_mut(n * hd).enumerate().try_for_each(|(h, out)| attend_head_into(&inputs, h, h / group, out))?;
    } else {
        per_head.chunks_mut(n * hd).enumerate().try_for_each(|(h, out)| attend_head_into(&inputs, h, h / group, out))?;
    }
    let heads_out = sized(heads_out, n * qd);
    for (h, out) in per_head.chunks_exact(n * hd).enumerate() {
        for r in 0..n {
            heads_out[r * qd + h * hd..][..hd].copy_from_slice(&out[r * hd..(r + 1) * hd]);
        }
    }
    Ok(())
}

/// Every head of layer `l` over `n` rows at positions `past..past + n`, with q (`[n, n_heads·head_dim]`,
/// rotated) and the cache's k and v (`[past + n, n_kv_heads·head_dim]`) given: `[n, n_heads·head_dim]`
/// (parity tests).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_all_heads(q: &[f32], k: &[f32], v: &[f32], l: &LayerWeights, d: BlockDims, n: usize, past: usize, arith: Attention) -> Vec<f32> {
    let hd = d.head_dim;
    let (qd, kvd) = (l.n_heads * hd, l.n_kv_heads * hd);
    let f = &l.features;
    let scale = f.attn_scale.unwrap_or_else(|| 1.0 / (hd as f32).sqrt());
    let inputs = HeadInputs { q, q_width: qd, k, v, cache_width: kvd, n, past, head_dim: hd, scale, softcap: f.attn_softcap, window: f.window, arith };
    let group = l.n_heads / l.n_kv_heads;
    let mut out = vec![0f32; n * qd];
    let mut head = vec![0f32; n * hd];
    for h in 0..l.n_heads {
        attend_head_into(&inputs, h, h / group, &mut head).expect("attention");
        for r in 0..n {
            out[r * qd + h * hd..][..hd].copy_from_slice(&head[r * hd..(r + 1) * hd]);
        }
    }
    out
}

/// `x += heads · W_oᵀ` (the attention residual).
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_attention_output(l: &LayerWeights, d: BlockDims, heads: &[f32], n: usize, x: &mut [f32], scratch: &mut Vec<f32>, threads: Threads) -> Result<(), RuntimeError> {
    scratch.resize(n * d.n_embd, 0.0);
    linear_on(heads, n, &l.wo, d.n_embd, l.n_heads * d.head_dim, scratch, "attn_output", threads)?;
    if let Some(b) = &l.features.o_bias {
        ops::add_bias(scratch, b);
    }
    post_norm(scratch, l.features.post_attn_norm.as_deref(), d.rms_eps);
    ops::add_in_place(x, scratch);
    Ok(())
}

/// `act(xn · W_gateᵀ) ⊙ (xn · W_upᵀ)` (act = the layer's activation): the input of down_proj, `[n, n_ff]`.
/// Into `gate` (resized; its allocation reused), with `up` as scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ffn_hidden_into(l: &LayerWeights, d: BlockDims, xn: &[f32], n: usize, threads: Threads, arith: Attention, up: &mut Vec<f32>, gate: &mut Vec<f32>) -> Result<(), RuntimeError> {
    let ff = l.n_ff;
    let (gate, up) = (sized(gate, n * ff), sized(up, n * ff));
    Linear::forward_group(xn, n, d.n_embd, &mut [(&l.w_gate, ff, &mut *gate, "ffn_gate"), (&l.w_up, ff, &mut *up, "ffn_up")], threads)?;
    match l.activation {
        Activation::Silu if arith == Attention::LlamaCpp => crate::kernels::ggml_arith::swiglu_rows(gate, up, ff),
        Activation::Silu => ops::silu_mul(gate, up),
        Activation::Relu => ops::relu_mul(gate, up),
        Activation::GeluTanh => ops::gelu_mul(gate, up),
    }
    Ok(())
}

/// `x += hidden · W_downᵀ` (the feed-forward residual).
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_ffn_output(l: &LayerWeights, d: BlockDims, hidden: &[f32], n: usize, x: &mut [f32], scratch: &mut Vec<f32>, threads: Threads) -> Result<(), RuntimeError> {
    scratch.resize(n * d.n_embd, 0.0);
    linear_on(hidden, n, &l.w_down, d.n_embd, l.n_ff, scratch, "ffn_down", threads)?;
    post_norm(scratch, l.features.post_ffn_norm.as_deref(), d.rms_eps);
    ops::add_in_place(x, scratch);
    Ok(())
}

/// RMSNorm of a sublayer's output before its residual add (Gemma), in place.
fn post_norm(y: &mut [f32], weight: Option<&[f32]>, eps: f32) {
    if let Some(w) = weight {
        let src = y.to_vec();
        ops::rms_norm(&src, w, eps, y);
    }
}

/// The RoPE parameters of layer `l`: its own, or llama RoPE with the model's base.
pub(crate) fn rope_params(l: &LayerWeights, d: BlockDims) -> RopeParams {
    l.features.rope.clone().unwrap_or_else(|| RopeParams::norm(d.rope_base))
}

/// One block on its own, run on whole sequences (positions 0..n, no cache kept between calls), step by
/// step. Calibration passes hold one of these instead of the whole model, so their memory does not grow
/// with depth, and swap in each projection as soon as it is quantized.
pub struct Block {
    layer: LayerWeights,
    dims: BlockDims,
    threads: Threads,
    /// RoPE's cos/sin for positions 0.. of the longest sequence so far (each position's values do not
    /// depend on the length, so a prefix serves shorter sequences): computed once, not per call.
    rope: Mutex<Option<Arc<RopeTable>>>,
}

impl Block {
    pub fn new(layer: LayerWeights, dims: BlockDims) -> Result<Self, RuntimeError> {
        validate_layer(&layer, dims, 0)?;
        Ok(Self { layer, dims, threads: Threads::Pool, rope: Mutex::new(None) })
    }

    /// The same block computing each call on the calling thread (f32 products and attention heads), for
    /// callers that run several sequences at once; the results are the same bits either way.
    pub fn single_threaded(mut self) -> Self {
        self.threads = Threads::Single;
        self
    }

    pub fn weights(&self) -> &LayerWeights {
        &self.layer
    }

    pub fn dims(&self) -> BlockDims {
        self.dims
    }

    /// A RoPE table covering positions `0..n` (at least).
    fn rope_for(&self, n: usize) -> Arc<RopeTable> {
        let mut cached = self.rope.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*cached {
            Some(t) if t.positions() >= n => Arc::clone(t),
            _ => {
                let t = Arc::new(RopeTable::new(self.dims.head_dim, &rope_params(&self.layer, self.dims), 0, n));
                *cached = Some(Arc::clone(&t));
                t
            }
        }
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
        let mut out = Vec::new();
        self.attention_heads_into(xn, n, &mut out)?;
        Ok(out)
    }

    /// `attention_heads` into `out`, reusing its allocation (calibration passes keep one buffer per
    /// sequence across layers instead of faulting in fresh pages for every layer).
    pub fn attention_heads_into(&self, xn: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), RuntimeError> {
        self.check_len("normed hidden states", xn.len(), n * self.dims.n_embd)?;
        let kvd = self.layer.n_kv_heads * self.dims.head_dim;
        let (mut k, mut v) = (vec![0f32; n * kvd], vec![0f32; n * kvd]);
        let rope = self.rope_for(n);
        let cache = LayerCache { k: &mut k, v: &mut v, width: kvd, past: 0 };
        attention_heads_into(&self.layer, self.dims, xn, n, cache, &rope, self.threads, Attention::Exact, &mut AttnScratch::default(), out)
    }

    pub fn add_attention_output(&self, heads: &[f32], n: usize, x: &mut [f32]) -> Result<(), RuntimeError> {
        self.check_len("attention heads", heads.len(), n * self.layer.n_heads * self.dims.head_dim)?;
        self.check_len("hidden states", x.len(), n * self.dims.n_embd)?;
        add_attention_output(&self.layer, self.dims, heads, n, x, &mut Vec::new(), self.threads)
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
        let mut out = Vec::new();
        self.ffn_hidden_into(xn, n, &mut out)?;
        Ok(out)
    }

    /// `ffn_hidden` into `out`, reusing its allocation.
    pub fn ffn_hidden_into(&self, xn: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), RuntimeError> {
        self.check_len("normed hidden states", xn.len(), n * self.dims.n_embd)?;
        ffn_hidden_into(&self.layer, self.dims, xn, n, self.threads, Attention::Exact, &mut Vec::new(), out)
    }

    pub fn add_ffn_output(&self, hidden: &[f32], n: usize, x: &mut [f32]) -> Result<(), RuntimeError> {
        self.check_len("feed-forward hidden", hidden.len(), n * self.layer.n_ff)?;
        self.check_len("hidden states", x.len(), n * self.dims.n_embd)?;
        add_ffn_output(&self.layer, self.dims, hidden, n, x, &mut Vec::new(), self.threads)
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
    for (t, v, len) in l.features.tensors(q, kv, e, hd) {
        if let Some(v) = v {
            check(|| format!("blk.{i}.{t}"), v.len(), len)?;
        }
    }
    if l.features.window == Some(0) {
        return Err(RuntimeError::BadShape { what: "sliding window", value: 0, why: "must be at least 1" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One head the way it was computed before query blocks: all `past + n` keys for every row, the future
    /// masked to zero by the softmax, the whole P·V product.
    fn full_head(x: &HeadInputs<'_>, h: usize, kvh: usize) -> Vec<f32> {
        let (hd, n, total) = (x.head_dim, x.n, x.past + x.n);
        let mut scores = vec![0f32; n * total];
        let qh = MatRef { data: x.q, offset: h * hd, rows: n, cols: hd, row_stride: x.q_width, col_stride: 1 };
        let kt = MatRef { data: x.k, offset: kvh * hd, rows: hd, cols: total, row_stride: 1, col_stride: x.cache_width };
        assert!(matmul(&mut scores, 0, total, qh, kt, false, Threads::Single));
        let scale = 1.0 / (hd as f32).sqrt();
        for (r, row) in scores.chunks_exact_mut(total).enumerate() {
            row.iter_mut().for_each(|s| *s *= scale);
            ops::softmax_prefix(row, x.past + r + 1);
        }
        let mut out = vec![0f32; n * hd];
        let vh = MatRef { data: x.v, offset: kvh * hd, rows: total, cols: hd, row_stride: x.cache_width, col_stride: 1 };
        assert!(matmul(&mut out, 0, hd, MatRef::row_major(&scores, n, total), vh, false, Threads::Single));
        out
    }

    #[test]
    fn causal_query_blocks_give_the_full_products_bits() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        };
        let (hd, heads, kv_heads) = (64, 3, 1);
        let (qd, cw) = (heads * hd, kv_heads * hd);
        // Single blocks, a tail merged into the last block, exact multiples, past keys, and beyond 512 keys.
        for &(n, past) in &[(5, 0), (64, 0), (71, 0), (72, 0), (130, 0), (200, 17), (512, 0), (300, 250)] {
            let total = past + n;
            let q: Vec<f32> = (0..n * qd).map(|_| next()).collect();
            let k: Vec<f32> = (0..total * cw).map(|_| next()).collect();
            let v: Vec<f32> = (0..total * cw).map(|_| next()).collect();
            let x = HeadInputs { q: &q, q_width: qd, k: &k, v: &v, cache_width: cw, n, past, head_dim: hd, scale: 1.0 / (hd as f32).sqrt(), softcap: None, window: None, arith: Attention::Exact };
            for h in 0..heads {
                let got: Vec<u32> = attend_head(&x, h, 0).unwrap().iter().map(|v| v.to_bits()).collect();
                let want: Vec<u32> = full_head(&x, h, 0).iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "n={n} past={past} head {h}");
            }
        }
        assert_eq!(query_blocks(190, 0), vec![(0, 64), (64, 128), (128, 190)]);
        assert_eq!(query_blocks(200, 0), vec![(0, 64), (64, 128), (128, 192), (192, 200)]);
        assert_eq!(query_blocks(600, 0), vec![(0, 600)]);
    }
}

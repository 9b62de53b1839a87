//! The decoder as a burn module, for training: the same math as `edgeforge-runtime` (RMSNorm, RoPE on
//! adjacent pairs or halves with its scaling, grouped-query causal attention with optional window, scale
//! and soft-cap, gated MLP, optionally tied output head), written with tensor operations that burn can
//! differentiate. What a family adds is data, read from the model description (`BlockFeatures`,
//! `ModelConfig::layer_attention`) as the runtime reads it: q/k/v/o biases, per-head q/k RMSNorm, norms after
//! attention and MLP, the gate's activation, embedding scale and the final soft-cap. Head counts and FFN
//! width are per block, so pruned students train as they are. The backend is chosen at run time by the
//! `Device` the parameters live on.

use burn::module::{Module, Param};
use burn::tensor::activation::{relu, silu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use edgeforge_core::{Activation, RopeKind};
use edgeforge_runtime::{RopeParams, RopeTable};

/// `y = x · Wᵀ (+ b)` for a row-major `[out, in]` weight (the GGUF layout, kept as is so loading copies
/// nothing). With `quant`, `weight` holds the fixed grid levels of a block-quantized tensor and the matrix
/// is `levels · scale + offset` with per-block parameters (see [`BlockScales`]).
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    /// `[out]`, added to every row of the product (GGUF `<name>.bias`).
    pub bias: Option<Param<Tensor<1>>>,
    pub quant: Option<BlockScales>,
}

impl Linear {
    pub fn float(weight: Param<Tensor<2>>) -> Self {
        Self { weight, bias: None, quant: None }
    }

    /// The matrix this layer multiplies by.
    pub fn matrix(&self) -> Tensor<2> {
        match &self.quant {
            Some(q) => q.apply(self.weight.val()),
            None => self.weight.val(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = x.matmul(self.matrix().transpose());
        match &self.bias {
            Some(b) => y + b.val().unsqueeze::<2>(),
            None => y,
        }
    }
}

/// Per-block scales (and offsets) of a block-quantized `[out, in]` matrix whose codes are fixed: block
/// `(r, k)` covers elements `r, k·block .. (k+1)·block` and dequantizes level ℓ to
/// `d0·(1 + u)·ℓ + m0 + d0·v`. `d0`/`m0` are the stored fields the tuning starts from (frozen); `u` and
/// `v` train, in units of the block's initial scale, so one learning rate suits every tensor.
#[derive(Module, Debug)]
pub struct BlockScales {
    pub d0: Param<Tensor<2>>,
    pub m0: Param<Tensor<2>>,
    pub u: Param<Tensor<2>>,
    /// Present for the formats with a min (Q4_1, Q5_1).
    pub v: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub block: usize,
}

impl BlockScales {
    /// `[out, in/block]` scales and offsets as they stand.
    pub fn scale_offset(&self) -> (Tensor<2>, Option<Tensor<2>>) {
        let d0 = self.d0.val();
        let scale = d0.clone() * self.u.val().add_scalar(1.0);
        let offset = self.v.as_ref().map(|v| self.m0.val() + d0 * v.val());
        (scale, offset)
    }

    /// The matrix from its `[out, in]` levels.
    pub fn apply(&self, levels: Tensor<2>) -> Tensor<2> {
        let [out, inn] = levels.dims();
        let nb = inn / self.block;
        let l3 = levels.reshape([out, nb, self.block]);
        let (scale, offset) = self.scale_offset();
        let mut w = l3 * scale.reshape([out, nb, 1]);
        if let Some(o) = offset {
            w = w + o.reshape([out, nb, 1]);
        }
        w.reshape([out, inn])
    }
}

#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl RmsNorm {
    /// `x / sqrt(mean(x²) + eps) · w` over the last dimension of `[rows, width]`.
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let inv_rms = x.clone().square().mean_dim(1).add_scalar(self.eps).sqrt().recip();
        x * inv_rms * self.weight.val().unsqueeze::<2>()
    }

    /// The norm of every `width`-wide piece of the rows of `x` (per-head q/k norms: `width` = head_dim).
    fn forward_pieces(&self, x: Tensor<2>, width: usize) -> Tensor<2> {
        let [rows, cols] = x.dims();
        self.forward(x.reshape([rows * cols / width, width])).reshape([rows, cols])
    }
}

/// `norm(x)` when the norm exists, else `x`.
fn maybe_norm(norm: Option<&RmsNorm>, x: Tensor<2>) -> Tensor<2> {
    match norm {
        Some(n) => n.forward(x),
        None => x,
    }
}

/// `c · tanh(x / c)` when a cap is set (ggml's order: scale by 1/c, tanh, scale by c).
fn soft_cap<const D: usize>(x: Tensor<D>, cap: Option<f32>) -> Tensor<D> {
    match cap {
        Some(c) => x.mul_scalar(f64::from(1.0 / c)).tanh().mul_scalar(f64::from(c)),
        None => x,
    }
}

/// Sizes of one block that pruning may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub n_ff: usize,
}

/// How one block attends, as the runtime's `LayerFeatures` says: RoPE (layout, base, linear scale, Llama 3
/// factors), window, softmax scale and score soft-cap. Built from `ModelConfig::layer_attention`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSpec {
    pub rope: RopeParams,
    /// Each query sees itself and the `window - 1` keys before it.
    pub window: Option<usize>,
    pub scale: f32,
    pub softcap: Option<f32>,
}

/// The optional tensors of a block (each present when the model description says so), named as in GGUF.
#[derive(Module, Debug)]
pub struct BlockExtras {
    /// `attn_q_norm`, `attn_k_norm`: per-head RMSNorm of q and k before RoPE (`[head_dim]`).
    pub attn_q_norm: Option<RmsNorm>,
    pub attn_k_norm: Option<RmsNorm>,
    /// `post_attention_norm`, `post_ffw_norm`: RMSNorm of each sublayer's output before its residual add.
    pub post_attention_norm: Option<RmsNorm>,
    pub post_ffw_norm: Option<RmsNorm>,
}

#[derive(Module, Debug)]
pub struct Block {
    pub attn_norm: RmsNorm,
    pub attn_q: Linear,
    pub attn_k: Linear,
    pub attn_v: Linear,
    pub attn_output: Linear,
    pub ffn_norm: RmsNorm,
    pub ffn_gate: Linear,
    pub ffn_up: Linear,
    pub ffn_down: Linear,
    pub extras: BlockExtras,
    #[module(skip)]
    pub shape: BlockShape,
    /// The gate's nonlinearity, from the model's config: a student after `activation-swap` trains with ReLU
    /// while its teacher keeps SiLU.
    #[module(skip)]
    pub activation: Activation,
    #[module(skip)]
    pub attention: AttentionSpec,
}

/// The block linears by GGUF suffix, in the order blocks store them.
pub const LINEARS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// Model-wide sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub head_dim: usize,
}

/// The model-wide steps around the blocks: embedding scale (Gemma's √n_embd) and logit soft-cap.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeadSpec {
    pub embd_scale: Option<f32>,
    pub final_softcap: Option<f32>,
}

#[derive(Module, Debug)]
pub struct Llama {
    /// `[vocab, n_embd]`; also the output head when `output` is `None` (tied embeddings).
    pub token_embd: Param<Tensor<2>>,
    /// When the embedding's block scales are being tuned, `token_embd` holds its levels (see `Linear`).
    pub embd_quant: Option<BlockScales>,
    pub blocks: Vec<Block>,
    pub output_norm: RmsNorm,
    pub output: Option<Linear>,
    #[module(skip)]
    pub dims: Dims,
    #[module(skip)]
    pub head: HeadSpec,
}

/// RoPE angles of one parameter set: `[1, 1, T, head_dim/2]` cos and sin, broadcast over batch and heads.
struct RopeAngles {
    params: RopeParams,
    cos: Tensor<4>,
    sin: Tensor<4>,
}

/// Per-call constants of one sequence length: RoPE angles of each distinct RoPE of the blocks and the
/// causal masks of each distinct window. A block whose RoPE or window is not here (a `Positions` built for
/// another model) gets its own computed on the spot.
pub struct Positions {
    seq_len: usize,
    head_dim: usize,
    device: Device,
    ropes: Vec<RopeAngles>,
    /// `[1, 1, T, T]`, true where a query may not see a key (the future; outside the window).
    masks: Vec<(Option<usize>, Tensor<4, Bool>)>,
}

impl Positions {
    /// The constants `llama`'s blocks need for sequences of `seq_len` tokens.
    pub fn new(seq_len: usize, llama: &Llama, device: &Device) -> Self {
        let mut pos = Self { seq_len, head_dim: llama.dims.head_dim, device: device.clone(), ropes: Vec::new(), masks: Vec::new() };
        for b in &llama.blocks {
            let a = &b.attention;
            if !pos.ropes.iter().any(|r| r.params == a.rope) {
                let (cos, sin) = rope_angles(seq_len, pos.head_dim, &a.rope, device);
                pos.ropes.push(RopeAngles { params: a.rope.clone(), cos, sin });
            }
            if !pos.masks.iter().any(|(w, _)| *w == a.window) {
                pos.masks.push((a.window, hidden_keys(seq_len, a.window, device)));
            }
        }
        pos
    }

    fn angles(&self, p: &RopeParams, seq: usize) -> (Tensor<4>, Tensor<4>) {
        match self.ropes.iter().find(|r| r.params == *p && seq == self.seq_len) {
            Some(r) => (r.cos.clone(), r.sin.clone()),
            None => rope_angles(seq, self.head_dim, p, &self.device),
        }
    }

    fn mask(&self, window: Option<usize>, seq: usize) -> Tensor<4, Bool> {
        match self.masks.iter().find(|(w, _)| *w == window && seq == self.seq_len) {
            Some((_, m)) => m.clone(),
            None => hidden_keys(seq, window, &self.device),
        }
    }
}

/// cos and sin of RoPE `p` for positions 0..seq, from the runtime's own table (same angles, same rounding).
fn rope_angles(seq: usize, head_dim: usize, p: &RopeParams, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let table = RopeTable::new(head_dim, p, 0, seq);
    let (cos, sin): (Vec<f32>, Vec<f32>) = table.cos_sin().iter().copied().unzip();
    let t = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, seq, head_dim / 2]), device);
    (t(cos), t(sin))
}

/// `[1, 1, seq, seq]`: key `k` is hidden from query `q` when `k > q`, or `q - k >= window` (llama.cpp's SWA).
fn hidden_keys(seq: usize, window: Option<usize>, device: &Device) -> Tensor<4, Bool> {
    let mut m = Vec::with_capacity(seq * seq);
    for q in 0..seq {
        m.extend((0..seq).map(|k| k > q || window.is_some_and(|w| q - k >= w)));
    }
    Tensor::<2, Bool>::from_data(TensorData::new(m, [seq, seq]), device).unsqueeze::<4>()
}

/// Rotate each head of `x` (`[B, H, T, head_dim]`): NORM turns dimensions (2i, 2i+1) together, NEOX
/// (i, i + head_dim/2). `cos`/`sin` are `[1, 1, T, head_dim/2]`.
fn rope(x: Tensor<4>, kind: RopeKind, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let [b, h, t, hd] = x.dims();
    let half = hd / 2;
    match kind {
        RopeKind::Norm => {
            let pairs = x.reshape([b, h, t, half, 2]);
            let even = pairs.clone().narrow(4, 0, 1);
            let odd = pairs.narrow(4, 1, 1);
            let (c, s) = (cos.unsqueeze_dim::<5>(4), sin.unsqueeze_dim::<5>(4));
            let rotated_even = even.clone() * c.clone() - odd.clone() * s.clone();
            let rotated_odd = even * s + odd * c;
            Tensor::cat(vec![rotated_even, rotated_odd], 4).reshape([b, h, t, hd])
        }
        RopeKind::Neox => {
            let lo = x.clone().narrow(3, 0, half);
            let hi = x.narrow(3, half, half);
            let rotated_lo = lo.clone() * cos.clone() - hi.clone() * sin.clone();
            let rotated_hi = lo * sin + hi * cos;
            Tensor::cat(vec![rotated_lo, rotated_hi], 3)
        }
    }
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (`edgeforge_core::model::gelu_tanh`).
fn gelu_tanh(x: Tensor<2>) -> Tensor<2> {
    let inner = (x.clone() + x.clone().powf_scalar(3.0).mul_scalar(0.044_715)).mul_scalar(0.797_884_6);
    x.mul_scalar(0.5) * (inner.tanh() + 1.0)
}

/// What one forward pass returns: logits `[B·T, vocab]` and, when asked, each block's output `[B·T, n_embd]`.
pub struct ForwardOut {
    pub logits: Tensor<2>,
    pub hidden: Vec<Tensor<2>>,
}

impl Block {
    /// The linear with GGUF suffix `s` (`attn_q`, ..., `ffn_down`).
    pub fn linear(&self, s: &str) -> Option<&Linear> {
        Some(match s {
            "attn_q" => &self.attn_q,
            "attn_k" => &self.attn_k,
            "attn_v" => &self.attn_v,
            "attn_output" => &self.attn_output,
            "ffn_gate" => &self.ffn_gate,
            "ffn_up" => &self.ffn_up,
            "ffn_down" => &self.ffn_down,
            _ => return None,
        })
    }

    pub fn linear_mut(&mut self, s: &str) -> Option<&mut Linear> {
        Some(match s {
            "attn_q" => &mut self.attn_q,
            "attn_k" => &mut self.attn_k,
            "attn_v" => &mut self.attn_v,
            "attn_output" => &mut self.attn_output,
            "ffn_gate" => &mut self.ffn_gate,
            "ffn_up" => &mut self.ffn_up,
            "ffn_down" => &mut self.ffn_down,
            _ => return None,
        })
    }

    /// q or k of the normed input as `[B, heads, T, head_dim]`: projection (+ bias), per-head norm, RoPE.
    #[allow(clippy::too_many_arguments)]
    fn roped(&self, lin: &Linear, norm: Option<&RmsNorm>, xn: Tensor<2>, n: usize, bt: [usize; 2], hd: usize, pos: &Positions) -> Tensor<4> {
        let [batch, seq] = bt;
        let y = lin.forward(xn);
        let y = match norm {
            Some(nm) => nm.forward_pieces(y, hd),
            None => y,
        };
        let (cos, sin) = pos.angles(&self.attention.rope, seq);
        rope(y.reshape([batch, seq, n, hd]).swap_dims(1, 2), self.attention.rope.kind, cos, sin)
    }

    fn attention(&self, xn: Tensor<2>, batch: usize, seq: usize, head_dim: usize, pos: &Positions) -> Tensor<2> {
        let BlockShape { n_heads, n_kv_heads, .. } = self.shape;
        let (bt, x) = ([batch, seq], &self.extras);
        let q = self.roped(&self.attn_q, x.attn_q_norm.as_ref(), xn.clone(), n_heads, bt, head_dim, pos);
        let k = self.roped(&self.attn_k, x.attn_k_norm.as_ref(), xn.clone(), n_kv_heads, bt, head_dim, pos);
        let v = self.attn_v.forward(xn).reshape([batch, seq, n_kv_heads, head_dim]).swap_dims(1, 2);
        // Grouped-query attention: query head h reads KV head h / group, so each KV head is repeated `group`
        // times in place (KV-major order).
        let group = n_heads / n_kv_heads;
        let repeat = |t: Tensor<4>| {
            if group == 1 {
                t
            } else {
                t.unsqueeze_dim::<5>(2).repeat_dim(2, group).reshape([batch, n_heads, seq, head_dim])
            }
        };
        let (k, v) = (repeat(k), repeat(v));
        let a = &self.attention;
        let scores = soft_cap(q.matmul(k.swap_dims(2, 3)).mul_scalar(f64::from(a.scale)), a.softcap);
        let probs = softmax(scores.mask_fill(pos.mask(a.window, seq), f32::NEG_INFINITY), 3);
        probs.matmul(v).swap_dims(1, 2).reshape([batch * seq, n_heads * head_dim])
    }

    fn forward(&self, x: Tensor<2>, batch: usize, seq: usize, head_dim: usize, pos: &Positions) -> Tensor<2> {
        let heads = self.attention(self.attn_norm.forward(x.clone()), batch, seq, head_dim, pos);
        let x = x + maybe_norm(self.extras.post_attention_norm.as_ref(), self.attn_output.forward(heads));
        let xn = self.ffn_norm.forward(x.clone());
        let gate = self.ffn_gate.forward(xn.clone());
        let gate = match self.activation {
            Activation::Silu => silu(gate),
            Activation::Relu => relu(gate),
            Activation::GeluTanh => gelu_tanh(gate),
        };
        let hidden = gate * self.ffn_up.forward(xn);
        x + maybe_norm(self.extras.post_ffw_norm.as_ref(), self.ffn_down.forward(hidden))
    }
}

impl Llama {
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Run `tokens` (`[B, T]`, each row positions 0..T) and return logits for every position.
    pub fn forward(&self, tokens: Tensor<2, Int>, pos: &Positions, keep_hidden: bool) -> ForwardOut {
        let [batch, seq] = tokens.dims();
        let embd = match &self.embd_quant {
            Some(q) => q.apply(self.token_embd.val()),
            None => self.token_embd.val(),
        };
        let mut x = embd.clone().select(0, tokens.reshape([batch * seq]));
        if let Some(s) = self.head.embd_scale {
            x = x.mul_scalar(f64::from(s));
        }
        let mut hidden = Vec::new();
        for block in &self.blocks {
            x = block.forward(x, batch, seq, self.dims.head_dim, pos);
            if keep_hidden {
                hidden.push(x.clone());
            }
        }
        let xn = self.output_norm.forward(x);
        let logits = match &self.output {
            Some(head) => head.forward(xn),
            None => xn.matmul(embd.transpose()),
        };
        ForwardOut { logits: soft_cap(logits, self.head.final_softcap), hidden }
    }
}

//! The llama architecture as a burn module, for training: the same math as `edgeforge-runtime` (RMSNorm,
//! adjacent-pair RoPE, grouped-query causal attention, SwiGLU (or ReGLU), optionally tied output head), written with
//! tensor operations that burn can differentiate. Head counts and FFN width are per block, so pruned
//! students train as they are. The backend is chosen at run time by the `Device` the parameters live on.

use burn::module::{Module, Param};
use burn::tensor::activation::{relu, silu, softmax};
use edgeforge_core::Activation;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// `y = x · Wᵀ` for a row-major `[out, in]` weight (the GGUF layout, kept as is so loading copies nothing).
/// With `quant`, `weight` holds the fixed grid levels of a block-quantized tensor and the matrix is
/// `levels · scale + offset` with per-block parameters (see [`BlockScales`]).
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub quant: Option<BlockScales>,
}

impl Linear {
    pub fn float(weight: Param<Tensor<2>>) -> Self {
        Self { weight, quant: None }
    }

    /// The matrix this layer multiplies by.
    pub fn matrix(&self) -> Tensor<2> {
        match &self.quant {
            Some(q) => q.apply(self.weight.val()),
            None => self.weight.val(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.matrix().transpose())
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
    /// `x / sqrt(mean(x²) + eps) · w` over the last dimension of `[rows, n_embd]`.
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let inv_rms = x.clone().square().mean_dim(1).add_scalar(self.eps).sqrt().recip();
        x * inv_rms * self.weight.val().unsqueeze::<2>()
    }
}

/// Sizes of one block that pruning may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub n_ff: usize,
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
    #[module(skip)]
    pub shape: BlockShape,
    /// The gate's nonlinearity, from the model's config: a student after `activation-swap` trains with ReLU
    /// while its teacher keeps SiLU.
    #[module(skip)]
    pub activation: Activation,
}

/// Model-wide sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub head_dim: usize,
    pub rope_base: f64,
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
}

/// Per-call constants of one sequence length: RoPE angles and the causal mask.
pub struct Positions {
    /// `[1, 1, T, head_dim/2, 1]`, broadcast over batch, heads and the pair.
    cos: Tensor<5>,
    sin: Tensor<5>,
    /// `[1, 1, T, T]`, true above the diagonal (future positions).
    future: Tensor<4, Bool>,
}

impl Positions {
    /// Angles in f64 then rounded, as the runtime computes them: position · base^(−2i/head_dim).
    pub fn new(seq_len: usize, head_dim: usize, rope_base: f64, device: &Device) -> Self {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(seq_len * half), Vec::with_capacity(seq_len * half));
        for p in 0..seq_len {
            for i in 0..half {
                let theta = p as f64 * rope_base.powf(-2.0 * i as f64 / head_dim as f64);
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        let table = |v: Vec<f32>| Tensor::<5>::from_data(TensorData::new(v, [1, 1, seq_len, half, 1]), device);
        let future = Tensor::<2, Bool>::tril_mask([seq_len, seq_len], 0, device).unsqueeze::<4>();
        Self { cos: table(cos), sin: table(sin), future }
    }

    /// Rotate dimensions (2i, 2i+1) of each head of `x` (`[B, H, T, head_dim]`) together.
    fn rope(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, t, hd] = x.dims();
        let pairs = x.reshape([b, h, t, hd / 2, 2]);
        let even = pairs.clone().narrow(4, 0, 1);
        let odd = pairs.narrow(4, 1, 1);
        let (c, s) = (self.cos.clone(), self.sin.clone());
        let rotated_even = even.clone() * c.clone() - odd.clone() * s.clone();
        let rotated_odd = even * s + odd * c;
        Tensor::cat(vec![rotated_even, rotated_odd], 4).reshape([b, h, t, hd])
    }
}

/// What one forward pass returns: logits `[B·T, vocab]` and, when asked, each block's output `[B·T, n_embd]`.
pub struct ForwardOut {
    pub logits: Tensor<2>,
    pub hidden: Vec<Tensor<2>>,
}

impl Block {
    fn attention(&self, xn: Tensor<2>, batch: usize, seq: usize, head_dim: usize, pos: &Positions) -> Tensor<2> {
        let BlockShape { n_heads, n_kv_heads, .. } = self.shape;
        let heads = |y: Tensor<2>, n: usize| y.reshape([batch, seq, n, head_dim]).swap_dims(1, 2);
        let q = pos.rope(heads(self.attn_q.forward(xn.clone()), n_heads));
        let k = pos.rope(heads(self.attn_k.forward(xn.clone()), n_kv_heads));
        let v = heads(self.attn_v.forward(xn), n_kv_heads);
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
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (head_dim as f64).sqrt());
        let probs = softmax(scores.mask_fill(pos.future.clone(), f32::NEG_INFINITY), 3);
        probs.matmul(v).swap_dims(1, 2).reshape([batch * seq, n_heads * head_dim])
    }

    fn forward(&self, x: Tensor<2>, batch: usize, seq: usize, head_dim: usize, pos: &Positions) -> Tensor<2> {
        let heads = self.attention(self.attn_norm.forward(x.clone()), batch, seq, head_dim, pos);
        let x = x + self.attn_output.forward(heads);
        let xn = self.ffn_norm.forward(x.clone());
        let gate = self.ffn_gate.forward(xn.clone());
        let gate = match self.activation {
            Activation::Silu => silu(gate),
            Activation::Relu => relu(gate),
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); `llama_from_model` refuses gemma models today.
            Activation::GeluTanh => {
                let inner = (gate.clone() + gate.clone().powf_scalar(3.0).mul_scalar(0.044_715)).mul_scalar(0.797_884_6);
                gate.mul_scalar(0.5) * (inner.tanh() + 1.0)
            }
        };
        let hidden = gate * self.ffn_up.forward(xn);
        x + self.ffn_down.forward(hidden)
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
        ForwardOut { logits, hidden }
    }
}

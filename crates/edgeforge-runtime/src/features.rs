//! What a layer or the model computes beyond a llama block, as the runtime holds it (built from the
//! model description, `edgeforge_core::BlockFeatures`, by `from_model`). The defaults are a llama block, so
//! code that builds weights by hand for a llama model keeps working with `Default::default()`.

use crate::rope::RopeParams;

/// One layer's extra tensors and attention parameters.
#[derive(Debug, Clone, Default)]
pub struct LayerFeatures {
    /// RoPE of this layer; `None`: llama RoPE with the model's base.
    pub rope: Option<RopeParams>,
    /// Each query sees itself and the `window - 1` keys before it (llama.cpp's standard SWA).
    pub window: Option<usize>,
    /// Softmax scale of the scores; `None`: 1/√head_dim.
    pub attn_scale: Option<f32>,
    /// `c · tanh(s / c)` on the scaled scores (Gemma 2).
    pub attn_softcap: Option<f32>,
    pub q_bias: Option<Vec<f32>>,
    pub k_bias: Option<Vec<f32>>,
    pub v_bias: Option<Vec<f32>>,
    pub o_bias: Option<Vec<f32>>,
    /// Per-head RMSNorm weights (`[head_dim]`) applied to q and k before RoPE.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// RMSNorm of the attention output (after o_proj) and of the MLP output before the residual adds.
    pub post_attn_norm: Option<Vec<f32>>,
    pub post_ffn_norm: Option<Vec<f32>>,
}

impl LayerFeatures {
    /// The extra tensors with their expected lengths, for validation: (name, tensor, expected length).
    pub(crate) fn tensors(&self, q: usize, kv: usize, e: usize, hd: usize) -> [(&'static str, Option<&Vec<f32>>, usize); 8] {
        [
            ("attn_q.bias", self.q_bias.as_ref(), q),
            ("attn_k.bias", self.k_bias.as_ref(), kv),
            ("attn_v.bias", self.v_bias.as_ref(), kv),
            ("attn_output.bias", self.o_bias.as_ref(), e),
            ("attn_q_norm", self.q_norm.as_ref(), hd),
            ("attn_k_norm", self.k_norm.as_ref(), hd),
            ("post_attention_norm", self.post_attn_norm.as_ref(), e),
            ("post_ffw_norm", self.post_ffn_norm.as_ref(), e),
        ]
    }

    /// Floats held (for `resident_bytes`).
    pub(crate) fn n_floats(&self) -> usize {
        self.tensors(0, 0, 0, 0).iter().map(|(_, t, _)| t.map_or(0, |v| v.len())).sum()
    }
}

/// Model-wide steps around the blocks.
#[derive(Debug, Clone, Default)]
pub struct HeadFeatures {
    /// Embedding rows multiplied by this (Gemma: √n_embd).
    pub embd_scale: Option<f32>,
    /// `c · tanh(z / c)` on the logits (Gemma 2).
    pub final_softcap: Option<f32>,
}

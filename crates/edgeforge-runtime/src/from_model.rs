//! Model IR → runtime weights: every tensor dequantized to f32 (the float path).

use edgeforge_core::{Model, Result};

use crate::{LayerWeights, LlamaWeights};

/// One layer's weights as floats.
pub fn layer_from_model(model: &Model, l: usize) -> Result<LayerWeights> {
    let c = &model.config;
    let (e, q, kv, ff) = (c.n_embd, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_ff);
    let t = |suffix: &str, shape: &[usize]| model.tensor_f32(&format!("blk.{l}.{suffix}"), shape);
    Ok(LayerWeights {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        n_ff: ff,
        attn_norm: t("attn_norm.weight", &[e])?,
        wq: t("attn_q.weight", &[q, e])?,
        wk: t("attn_k.weight", &[kv, e])?,
        wv: t("attn_v.weight", &[kv, e])?,
        wo: t("attn_output.weight", &[e, q])?,
        ffn_norm: t("ffn_norm.weight", &[e])?,
        w_gate: t("ffn_gate.weight", &[ff, e])?,
        w_up: t("ffn_up.weight", &[ff, e])?,
        w_down: t("ffn_down.weight", &[e, ff])?,
    })
}

pub fn weights_from_model(model: &Model) -> Result<LlamaWeights> {
    let c = &model.config;
    let e = c.n_embd;
    let layers = (0..c.n_layers).map(|l| layer_from_model(model, l)).collect::<Result<Vec<_>>>()?;
    let output = if c.tied_embeddings {
        None
    } else {
        Some(model.tensor_f32("output.weight", &[c.vocab_size, e])?)
    };
    Ok(LlamaWeights {
        vocab_size: c.vocab_size,
        n_embd: e,
        head_dim: c.head_dim,
        rope_base: c.rope_base,
        rms_eps: c.rms_eps,
        token_embd: model.tensor_f32("token_embd.weight", &[c.vocab_size, e])?,
        layers,
        output_norm: model.tensor_f32("output_norm.weight", &[e])?,
        output,
    })
}

//! Which tensors a model of a given description must have, with which shapes, what kind each one is, and
//! the list of each block's linears with the dimensions that couple them (for compression passes).

use serde::Serialize;

use crate::family::{RopeKind, RopeScaling, ROPE_FREQS};
use crate::model::{BlockFeatures, ModelConfig};

/// Parameter groups for `inspect` and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TensorKind {
    Embedding,
    Attention,
    Mlp,
    Norm,
    Output,
    Other,
}

impl TensorKind {
    pub fn of(name: &str) -> Self {
        if name == "token_embd.weight" {
            TensorKind::Embedding
        } else if name == "output.weight" {
            TensorKind::Output
        } else if name.ends_with("_norm.weight") || name == ROPE_FREQS {
            TensorKind::Norm
        } else if name.contains(".attn_") {
            TensorKind::Attention
        } else if name.contains(".ffn_") {
            TensorKind::Mlp
        } else {
            TensorKind::Other
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TensorKind::Embedding => "embedding",
            TensorKind::Attention => "attention",
            TensorKind::Mlp => "mlp",
            TensorKind::Norm => "norm",
            TensorKind::Output => "output",
            TensorKind::Other => "other",
        }
    }
}

/// Every tensor a model of this config must have, with its row-major shape.
/// `output.weight` is listed only when the head is not tied to the embedding.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (e, q, kv, ff) = (cfg.n_embd, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.n_ff);
    let mut out = vec![
        ("token_embd.weight".to_owned(), vec![cfg.vocab_size, e]),
        ("output_norm.weight".to_owned(), vec![e]),
    ];
    if !cfg.tied_embeddings {
        out.push(("output.weight".to_owned(), vec![cfg.vocab_size, e]));
    }
    if matches!(cfg.features.rope_scaling, RopeScaling::Llama3 { .. }) {
        out.push((ROPE_FREQS.to_owned(), vec![cfg.head_dim / 2]));
    }
    for l in 0..cfg.n_layers {
        for (kind, shape) in block_tensor_shapes(&cfg.features, e, q, kv, ff, cfg.head_dim) {
            out.push((format!("blk.{l}.{kind}"), shape));
        }
    }
    out
}

/// How many tensors `expected_tensors` lists, computed without building the list (the layer count comes
/// from a file and is checked against the file's tensors first).
pub fn expected_tensor_count(cfg: &ModelConfig) -> u64 {
    let globals = 2 + u64::from(!cfg.tied_embeddings) + u64::from(matches!(cfg.features.rope_scaling, RopeScaling::Llama3 { .. }));
    let per_block = block_tensor_shapes(&cfg.features, 1, 1, 1, 1, 1).len() as u64;
    globals + per_block.saturating_mul(cfg.n_layers as u64)
}

/// Tensors every block has whatever its family (the nine of a llama block).
pub const BLOCK_TENSORS: u64 = 9;

/// The tensors of one block (`blk.N.{suffix}`) for widths n_embd `e`, query `q`, key/value `kv`,
/// feed-forward `ff` and head `hd`: the nine of a llama block, then the family's extras.
fn block_tensor_shapes(f: &BlockFeatures, e: usize, q: usize, kv: usize, ff: usize, hd: usize) -> Vec<(&'static str, Vec<usize>)> {
    let mut out = vec![
        ("attn_norm.weight", vec![e]),
        ("attn_q.weight", vec![q, e]),
        ("attn_k.weight", vec![kv, e]),
        ("attn_v.weight", vec![kv, e]),
        ("attn_output.weight", vec![e, q]),
        ("ffn_norm.weight", vec![e]),
        ("ffn_gate.weight", vec![ff, e]),
        ("ffn_up.weight", vec![ff, e]),
        ("ffn_down.weight", vec![e, ff]),
    ];
    if f.qkv_bias {
        out.extend([("attn_q.bias", vec![q]), ("attn_k.bias", vec![kv]), ("attn_v.bias", vec![kv])]);
    }
    if f.o_bias {
        out.push(("attn_output.bias", vec![e]));
    }
    if f.qk_norm {
        out.extend([("attn_q_norm.weight", vec![hd]), ("attn_k_norm.weight", vec![hd])]);
    }
    if f.post_norms {
        out.extend([("post_attention_norm.weight", vec![e]), ("post_ffw_norm.weight", vec![e])]);
    }
    out
}

/// One linear layer of a block as compression passes see it: its tensor, `[out, in]`, and how its rows
/// and columns are tied to other tensors (what a pass that cuts or reorders rows must keep in step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinearSpec {
    /// `blk.N.attn_q.weight`.
    pub name: String,
    pub out_dim: usize,
    pub in_dim: usize,
    /// The bias added to this linear's output, if the family has one (`[out_dim]`).
    pub bias: Option<String>,
    /// What the output rows are grouped by.
    pub rows: RowCoupling,
    /// In a fused GGUF/HF tensor (Phi-3), the fused tensor's name and this linear's first row in it.
    pub fused_in: Option<(String, usize)>,
}

/// How a linear's output rows relate to the rest of the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowCoupling {
    /// Query heads of `head_dim` rows; heads `g·group .. (g+1)·group` share kv head g. With q/k norms the
    /// `attn_q_norm` weight (`[head_dim]`) is shared by all heads; RoPE pairs rows inside a head.
    QueryHeads { heads: usize, head_dim: usize, group: usize, rope: RopeKind },
    /// Key heads (RoPE pairs rows inside a head; `attn_k_norm` shared by all heads).
    KeyHeads { heads: usize, head_dim: usize, rope: RopeKind },
    /// Value heads (no RoPE), read by the same query heads as the key heads.
    ValueHeads { heads: usize, head_dim: usize },
    /// Rows of the residual stream (o_proj, down_proj): every row is one hidden dimension.
    Residual,
    /// MLP channels: row c of gate and row c of up multiply each other and feed column c of down.
    MlpChannels,
}

/// Block `l`'s linears in forward order (q, k, v, o, gate, up, down), sized from its own tensors.
pub fn layer_linears(cfg: &ModelConfig, shape: BlockShape, l: usize) -> Vec<LinearSpec> {
    let f = &cfg.features;
    let hd = cfg.head_dim;
    let (e, q, kv, ff) = (cfg.n_embd, shape.n_heads * hd, shape.n_kv_heads * hd, shape.n_ff);
    let group = shape.n_heads / shape.n_kv_heads.max(1);
    let fused = f.family.traits().fused;
    let name = |s: &str| format!("blk.{l}.{s}");
    let bias = |on: bool, s: &str| on.then(|| name(s));
    let in_qkv = |first: usize| fused.then(|| (name("attn_qkv.weight"), first));
    let in_up = |first: usize| fused.then(|| (name("ffn_up.weight"), first));
    vec![
        LinearSpec { name: name("attn_q.weight"), out_dim: q, in_dim: e, bias: bias(f.qkv_bias, "attn_q.bias"), rows: RowCoupling::QueryHeads { heads: shape.n_heads, head_dim: hd, group, rope: f.rope_kind }, fused_in: in_qkv(0) },
        LinearSpec { name: name("attn_k.weight"), out_dim: kv, in_dim: e, bias: bias(f.qkv_bias, "attn_k.bias"), rows: RowCoupling::KeyHeads { heads: shape.n_kv_heads, head_dim: hd, rope: f.rope_kind }, fused_in: in_qkv(q) },
        LinearSpec { name: name("attn_v.weight"), out_dim: kv, in_dim: e, bias: bias(f.qkv_bias, "attn_v.bias"), rows: RowCoupling::ValueHeads { heads: shape.n_kv_heads, head_dim: hd }, fused_in: in_qkv(q + kv) },
        LinearSpec { name: name("attn_output.weight"), out_dim: e, in_dim: q, bias: bias(f.o_bias, "attn_output.bias"), rows: RowCoupling::Residual, fused_in: None },
        LinearSpec { name: name("ffn_gate.weight"), out_dim: ff, in_dim: e, bias: None, rows: RowCoupling::MlpChannels, fused_in: in_up(0) },
        LinearSpec { name: name("ffn_up.weight"), out_dim: ff, in_dim: e, bias: None, rows: RowCoupling::MlpChannels, fused_in: in_up(ff) },
        LinearSpec { name: name("ffn_down.weight"), out_dim: e, in_dim: ff, bias: None, rows: RowCoupling::Residual, fused_in: None },
    ]
}

/// A hyper-parameter that cannot describe a working model: (field, value, why).
pub fn check_config(cfg: &ModelConfig) -> Result<(), (&'static str, String, &'static str)> {
    let positive = [
        ("vocab_size", cfg.vocab_size),
        ("hidden_size", cfg.n_embd),
        ("num_hidden_layers", cfg.n_layers),
        ("num_attention_heads", cfg.n_heads),
        ("num_key_value_heads", cfg.n_kv_heads),
        ("head_dim", cfg.head_dim),
        ("intermediate_size", cfg.n_ff),
    ];
    for (field, v) in positive {
        if v == 0 {
            return Err((field, v.to_string(), "must be positive"));
        }
        // Bounds every allocation sized from the config well below what a real model needs.
        if v > 1 << 24 {
            return Err((field, v.to_string(), "is implausibly large (over 16,777,216)"));
        }
    }
    if !cfg.n_heads.is_multiple_of(cfg.n_kv_heads) {
        return Err(("num_key_value_heads", cfg.n_kv_heads.to_string(), "must divide num_attention_heads"));
    }
    if !cfg.head_dim.is_multiple_of(2) {
        return Err(("head_dim", cfg.head_dim.to_string(), "must be even for rotary embeddings"));
    }
    if !(cfg.rope_base.is_finite() && cfg.rope_base > 0.0) {
        return Err(("rope_theta", cfg.rope_base.to_string(), "must be a positive number"));
    }
    if !(cfg.rms_eps.is_finite() && cfg.rms_eps > 0.0) {
        return Err(("rms_norm_eps", cfg.rms_eps.to_string(), "must be a positive number"));
    }
    check_features(&cfg.features)
}

/// The per-family numbers: every one finite and positive where set, a window of at least one position.
fn check_features(f: &BlockFeatures) -> Result<(), (&'static str, String, &'static str)> {
    let positive = |v: Option<f32>| v.is_none_or(|x| x.is_finite() && x > 0.0);
    let numbers = [
        ("rope_base_swa", f.rope_base_swa),
        ("attn_scale", f.attn_scale),
        ("attn_logit_softcapping", f.attn_softcap),
        ("final_logit_softcapping", f.final_softcap),
    ];
    for (field, v) in numbers {
        if !positive(v) {
            return Err((field, format!("{v:?}"), "must be a positive number"));
        }
    }
    match &f.rope_scaling {
        RopeScaling::Linear { factor } if !positive(Some(*factor)) => {
            return Err(("rope_scaling.factor", factor.to_string(), "must be a positive number"))
        }
        RopeScaling::Llama3 { params: Some(p) }
            if !(positive(Some(p.factor)) && positive(Some(p.low_freq_factor)) && positive(Some(p.high_freq_factor)))
                || p.high_freq_factor <= p.low_freq_factor
                || p.original_max_position_embeddings == 0 =>
        {
            return Err(("rope_scaling", format!("{p:?}"), "llama3 factors must be positive with high_freq_factor > low_freq_factor"))
        }
        _ => {}
    }
    if let Some(w) = f.sliding_window {
        if w.size == 0 {
            return Err(("sliding_window", "0".into(), "must be at least 1 position"));
        }
    }
    Ok(())
}

/// The sizes of one block that structured pruning may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub n_ff: usize,
}

/// Block `l`'s sizes, read from its tensors rather than the config: after pruning, blocks may differ from
/// each other (the config then holds the largest of each size). Every tensor of the block is checked
/// against the sizes read, so a mismatched checkpoint or file fails here with the tensor's name.
pub fn block_shape(model: &crate::Model, l: usize) -> crate::Result<BlockShape> {
    let c = &model.config;
    let (e, hd) = (c.n_embd, c.head_dim);
    let name = |s: &str| format!("blk.{l}.{s}.weight");
    let rows = |s: &str| -> crate::Result<usize> {
        let t = model.tensor(&name(s))?;
        match t.shape.as_slice() {
            &[r, cols] if cols == e && r > 0 => Ok(r),
            got => Err(crate::Error::TensorShape { path: model.source.path.clone(), tensor: name(s), expected: vec![0, e], got: got.to_vec() }),
        }
    };
    let (q, kv, ff) = (rows("attn_q")?, rows("attn_k")?, rows("ffn_gate")?);
    let shape = BlockShape { n_heads: q / hd.max(1), n_kv_heads: kv / hd.max(1), n_ff: ff };
    let whole_heads = hd > 0 && q % hd == 0 && kv % hd == 0 && shape.n_heads % shape.n_kv_heads.max(1) == 0;
    for (s, want) in block_tensor_shapes(&c.features, e, q, kv, ff, hd) {
        let full = format!("blk.{l}.{s}");
        let t = model.tensor(&full)?;
        if t.shape != want || !whole_heads {
            return Err(crate::Error::TensorShape { path: model.source.path.clone(), tensor: full, expected: want, got: t.shape.clone() });
        }
    }
    Ok(shape)
}

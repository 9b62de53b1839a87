//! The llama architecture: which tensors a model must have, with which shapes, and what kind each one is.

use serde::Serialize;

use crate::model::ModelConfig;

pub const SUPPORTED_ARCHITECTURES: [&str; 1] = ["llama"];

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
        } else if name.ends_with("_norm.weight") {
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

/// Every tensor a llama model of this config must have, with its row-major shape.
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
    for l in 0..cfg.n_layers {
        for (kind, shape) in block_tensor_shapes(e, q, kv, ff) {
            out.push((format!("blk.{l}.{kind}.weight"), shape));
        }
    }
    out
}

/// How many tensors `expected_tensors` lists, computed without building the list (the layer count comes
/// from a file and is checked against the file's tensors first).
pub fn expected_tensor_count(cfg: &ModelConfig) -> u64 {
    2 + u64::from(!cfg.tied_embeddings) + BLOCK_TENSORS.saturating_mul(cfg.n_layers as u64)
}

/// Tensors per block (the length of `block_tensor_shapes`).
pub const BLOCK_TENSORS: u64 = 9;

/// The nine tensors of one block (`blk.N.{kind}.weight`) for widths n_embd `e`, query `q`, key/value `kv`
/// and feed-forward `ff`.
fn block_tensor_shapes(e: usize, q: usize, kv: usize, ff: usize) -> [(&'static str, Vec<usize>); 9] {
    [
        ("attn_norm", vec![e]),
        ("attn_q", vec![q, e]),
        ("attn_k", vec![kv, e]),
        ("attn_v", vec![kv, e]),
        ("attn_output", vec![e, q]),
        ("ffn_norm", vec![e]),
        ("ffn_gate", vec![ff, e]),
        ("ffn_up", vec![ff, e]),
        ("ffn_down", vec![e, ff]),
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
    for (s, want) in block_tensor_shapes(e, q, kv, ff) {
        let t = model.tensor(&name(s))?;
        if t.shape != want || !whole_heads {
            return Err(crate::Error::TensorShape { path: model.source.path.clone(), tensor: name(s), expected: want, got: t.shape.clone() });
        }
    }
    Ok(shape)
}

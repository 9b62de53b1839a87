//! The one place that knows how Hugging Face and GGUF lay out a llama model:
//! tensor names, dimension order, and the Q/K row permutation for RoPE.
//!
//! HF llama applies RoPE "rotate-half" style (dimension i pairs with i + head_dim/2 inside a head); llama.cpp's
//! llama architecture pairs adjacent dimensions (2i, 2i+1). llama.cpp's converter therefore reorders the output
//! rows of q_proj and k_proj per head: GGUF row 2i of a head is HF row i, GGUF row 2i+1 is HF row i + head_dim/2.
//! Our IR keeps the GGUF order, so GGUF tensors load untouched and HF tensors are permuted on load and
//! un-permuted on write. Attention scores are identical either way.
//! Only families with RoPE on adjacent pairs (llama) are permuted; NEOX families (qwen, gemma, phi3) are
//! stored in HF's order by the converter too.
//! Dimension order: GGUF `ne` is the PyTorch shape reversed; our IR uses the PyTorch order.
//! Per family: tensor names (Gemma's four norms, Qwen's biases, q/k norms), Gemma's `(1 + w)` norms (the
//! converter adds 1), and Phi-3's fused qkv and gate-up tensors (split at load into the canonical
//! per-linear tensors so every pass sees the same seven linears; fused again when written).

use std::collections::BTreeMap;

use crate::family::{Family, RopeKind};
use crate::model::Tensor;

/// Per-layer tensors every family shares: (GGUF suffix after `blk.N.`, HF suffix after `model.layers.N.`).
const LAYER_NAMES: [(&str, &str); 14] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_output.bias", "self_attn.o_proj.bias"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// The norm around the MLP in llama-style blocks (HF calls the pre-MLP norm `post_attention_layernorm`).
const LLAMA_NORMS: [(&str, &str); 1] = [("ffn_norm.weight", "post_attention_layernorm.weight")];

/// Gemma's four norms: `post_attention_layernorm` is the norm *after* attention there.
const GEMMA_NORMS: [(&str, &str); 3] = [
    ("post_attention_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
];

/// Phi-3's fused tensors as they are in both formats (split into the canonical ones at load, see
/// `split_fused`; fused again by the GGUF and HF writers).
const FUSED_NAMES: [(&str, &str); 2] = [("attn_qkv.weight", "self_attn.qkv_proj.weight"), ("ffn_up.weight", "mlp.gate_up_proj.weight")];

const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The per-layer (GGUF, HF) name pairs of `family`, fused names first for Phi-3 (so its `ffn_up` is the
/// fused `gate_up_proj`).
fn layer_names(family: Family) -> Vec<(&'static str, &'static str)> {
    let t = family.traits();
    let mut out: Vec<(&str, &str)> = Vec::new();
    if t.fused {
        out.extend(FUSED_NAMES);
    }
    out.extend(LAYER_NAMES.iter().filter(|(g, _)| !(t.fused && *g == "ffn_up.weight")));
    out.extend(if t.post_norms { &GEMMA_NORMS[..] } else { &LLAMA_NORMS[..] });
    out
}

/// HF tensor name → canonical GGUF name for `family`; `None` for tensors we do not use (e.g. rotary
/// inv_freq buffers) or do not know (the caller refuses those by name).
pub fn hf_to_gguf_name(family: Family, hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some((*g).to_owned());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (g, _) = layer_names(family).into_iter().find(|(_, h)| *h == suffix)?;
    Some(format!("blk.{layer}.{g}"))
}

/// A GGUF block tensor's name split into its block index and the rest: `blk.3.attn_q.weight` →
/// `(3, "attn_q.weight")`; `None` for global tensors and malformed names.
pub fn gguf_block_name(name: &str) -> Option<(usize, &str)> {
    let (layer, suffix) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((layer.parse().ok()?, suffix))
}

/// Canonical GGUF name → HF tensor name for `family` (fused names for Phi-3's fused tensors).
pub fn gguf_to_hf_name(family: Family, gguf: &str) -> Option<String> {
    if let Some((_, h)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some((*h).to_owned());
    }
    let (layer, suffix) = gguf_block_name(gguf)?;
    let (_, h) = layer_names(family).into_iter().find(|(g, _)| *g == suffix)?;
    Some(format!("model.layers.{layer}.{h}"))
}

/// Whether an HF tensor of `family` is stored as `w` for a `(1 + w)` RMSNorm (Gemma): the converter adds
/// 1, so our loader adds 1 and our writer subtracts it.
pub fn hf_norm_offset(family: Family, gguf_name: &str) -> f32 {
    if family.traits().hf_norm_plus_one && gguf_name.ends_with("norm.weight") {
        1.0
    } else {
        0.0
    }
}

/// How many heads a Q or K projection is split into, if the tensor needs the RoPE row permutation between
/// HF and GGUF (only for RoPE on adjacent pairs: llama).
pub fn rope_heads(rope: RopeKind, gguf_name: &str, n_heads: usize, n_kv_heads: usize) -> Option<usize> {
    if rope != RopeKind::Norm {
        None
    } else if gguf_name.ends_with(".attn_q.weight") {
        Some(n_heads)
    } else if gguf_name.ends_with(".attn_k.weight") {
        Some(n_kv_heads)
    } else {
        None
    }
}

/// Row ranges of a fused tensor (Phi-3): `attn_qkv` → q, k, v and `ffn_up` (2·n_ff rows) → gate, up.
/// `None` when `suffix` is not a fused tensor of this shape.
pub fn fused_parts(suffix: &str, q: usize, kv: usize, ff: usize) -> Option<[(&'static str, usize, usize); 3]> {
    match suffix {
        "attn_qkv.weight" => Some([("attn_q.weight", 0, q), ("attn_k.weight", q, kv), ("attn_v.weight", q + kv, kv)]),
        "attn_qkv.bias" => Some([("attn_q.bias", 0, q), ("attn_k.bias", q, kv), ("attn_v.bias", q + kv, kv)]),
        "ffn_up.weight" => Some([("ffn_gate.weight", 0, ff), ("ffn_up.weight", ff, ff), ("", 2 * ff, 0)]),
        _ => None,
    }
}

/// Split every fused tensor of a Phi-3 model (as read from GGUF or HF) into the canonical per-linear
/// tensors, so every pass sees seven linears. Rows never straddle blocks, so quantized GGUF rows split
/// as bytes. A tensor whose row count is not the fused total is left for the shape check to report.
pub fn split_fused(tensors: &mut BTreeMap<String, Tensor>, n_layers: usize, q: usize, kv: usize, ff: usize) {
    // The layer count comes from the file and is checked against the tensors only afterwards: a layer
    // beyond the number of tensors held has none to split, so that count bounds the loop.
    for l in 0..n_layers.min(tensors.len()) {
        for suffix in ["attn_qkv.weight", "attn_qkv.bias", "ffn_up.weight"] {
            let name = format!("blk.{l}.{suffix}");
            let Some(parts) = fused_parts(suffix, q, kv, ff) else { continue };
            let total: usize = parts.iter().map(|p| p.2).sum();
            let Some(t) = tensors.get(&name) else { continue };
            if t.shape.first() != Some(&total) {
                continue;
            }
            let Some(pieces) = parts.iter().filter(|p| p.2 > 0).map(|&(_, first, rows)| t.row_range(first, rows)).collect::<Option<Vec<_>>>() else { continue };
            tensors.remove(&name);
            for (&(part, _, _), piece) in parts.iter().filter(|p| p.2 > 0).zip(pieces) {
                tensors.insert(format!("blk.{l}.{part}"), piece);
            }
        }
    }
}

/// The inverse of `split_fused` for one layer: the fused tensors' names and contents (rows of the parts
/// concatenated), for writers of the fused formats. `None` for a part stored in a form rows cannot be
/// concatenated in (our integer codes: write those through their ggml blocks first).
pub fn fuse_layer(tensors: &BTreeMap<String, Tensor>, l: usize) -> Option<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    let groups: [(&str, &[&str]); 3] = [
        ("attn_qkv.weight", &["attn_q.weight", "attn_k.weight", "attn_v.weight"]),
        ("attn_qkv.bias", &["attn_q.bias", "attn_k.bias", "attn_v.bias"]),
        ("ffn_up.weight", &["ffn_gate.weight", "ffn_up.weight"]),
    ];
    for (fused, parts) in groups {
        let found: Vec<&Tensor> = parts.iter().filter_map(|p| tensors.get(&format!("blk.{l}.{p}"))).collect();
        if found.is_empty() {
            continue;
        }
        if found.len() != parts.len() {
            return None;
        }
        out.push((format!("blk.{l}.{fused}"), Tensor::concat_rows(&found)?));
    }
    Some(out)
}

/// Direction of the Q/K row permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeOrder {
    /// HF rotate-half rows → GGUF adjacent-pair rows (what llama.cpp's converter does).
    HfToGguf,
    /// The inverse.
    GgufToHf,
}

/// Source row for each destination row of one projection with `n_heads` heads of `head_dim` rows.
pub fn rope_row_order(n_heads: usize, head_dim: usize, order: RopeOrder) -> Vec<usize> {
    let half = head_dim / 2;
    let mut src = Vec::with_capacity(n_heads * head_dim);
    for h in 0..n_heads {
        let base = h * head_dim;
        for r in 0..head_dim {
            let from = match order {
                // GGUF row 2i ← HF row i, GGUF row 2i+1 ← HF row i + half.
                RopeOrder::HfToGguf => (r % 2) * half + r / 2,
                // HF row i ← GGUF row 2i, HF row i + half ← GGUF row 2i+1.
                RopeOrder::GgufToHf => 2 * (r % half) + r / half,
            };
            src.push(base + from);
        }
    }
    src
}

/// Reorder whole rows of `row_bytes` bytes each (works for any storage type, quantized included, because
/// blocks never straddle rows).
pub fn permute_rows(bytes: &[u8], row_bytes: usize, order: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &src in order {
        out.extend_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for family in Family::ALL {
            for hf in ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.17.mlp.down_proj.weight", "model.layers.2.post_attention_layernorm.weight"] {
                let g = hf_to_gguf_name(family, hf).unwrap();
                assert_eq!(gguf_to_hf_name(family, &g).unwrap(), hf, "{family}");
            }
        }
        let llama = Family::Llama;
        assert_eq!(hf_to_gguf_name(llama, "model.layers.3.self_attn.k_proj.weight").unwrap(), "blk.3.attn_k.weight");
        assert_eq!(hf_to_gguf_name(llama, "model.layers.0.self_attn.rotary_emb.inv_freq"), None);
        assert_eq!(hf_to_gguf_name(llama, "model.layers.1.post_attention_layernorm.weight").unwrap(), "blk.1.ffn_norm.weight");
        let gemma = Family::Gemma3;
        assert_eq!(hf_to_gguf_name(gemma, "model.layers.1.post_attention_layernorm.weight").unwrap(), "blk.1.post_attention_norm.weight");
        assert_eq!(hf_to_gguf_name(gemma, "model.layers.1.pre_feedforward_layernorm.weight").unwrap(), "blk.1.ffn_norm.weight");
        assert_eq!(hf_to_gguf_name(Family::Phi3, "model.layers.0.mlp.gate_up_proj.weight").unwrap(), "blk.0.ffn_up.weight");
        assert_eq!(hf_to_gguf_name(Family::Phi3, "model.layers.0.self_attn.qkv_proj.weight").unwrap(), "blk.0.attn_qkv.weight");
        assert_eq!(hf_to_gguf_name(llama, "model.layers.0.self_attn.qkv_proj.weight"), None);
    }

    #[test]
    fn fused_tensors_split_and_fuse_back() {
        let (q, kv, ff, e) = (4, 2, 3, 2);
        let t = |rows: usize, from: f32| Tensor { shape: vec![rows, e], data: crate::TensorData::F32((0..rows * e).map(|i| from + i as f32).collect()) };
        let mut m = BTreeMap::new();
        m.insert("blk.0.attn_qkv.weight".to_owned(), t(q + 2 * kv, 0.0));
        m.insert("blk.0.ffn_up.weight".to_owned(), t(2 * ff, 100.0));
        let before: Vec<f32> = m.values().flat_map(|t| t.to_f32("x").unwrap()).collect();
        split_fused(&mut m, 1, q, kv, ff);
        let names: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(names, ["blk.0.attn_k.weight", "blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"]);
        assert_eq!(m["blk.0.attn_k.weight"].to_f32("k").unwrap(), (8..12).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(m["blk.0.ffn_up.weight"].to_f32("up").unwrap(), (106..112).map(|i| i as f32).collect::<Vec<_>>());
        let fused = fuse_layer(&m, 0).unwrap();
        let after: Vec<f32> = fused.iter().flat_map(|(_, t)| t.to_f32("x").unwrap()).collect();
        assert_eq!(fused.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["blk.0.attn_qkv.weight", "blk.0.ffn_up.weight"]);
        assert_eq!(after, before);
    }

    #[test]
    fn rope_permutation_matches_converter_and_inverts() {
        // Two heads of 4 rows: HF rows [a0 a1 b0 b1] per head become [a0 b0 a1 b1].
        let to_gguf = rope_row_order(2, 4, RopeOrder::HfToGguf);
        assert_eq!(to_gguf, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        let back = rope_row_order(2, 4, RopeOrder::GgufToHf);
        let rows: Vec<u8> = (0..8).collect();
        let there = permute_rows(&rows, 1, &to_gguf);
        assert_eq!(permute_rows(&there, 1, &back), rows);
        // head_dim 64 (SmolLM2): row 2i+1 of a head comes from i + 32.
        let o = rope_row_order(3, 64, RopeOrder::HfToGguf);
        assert_eq!(o[64 + 2 * 5 + 1], 64 + 5 + 32);
    }
}

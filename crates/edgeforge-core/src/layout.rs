//! The one place that knows how Hugging Face and GGUF lay out a llama model:
//! tensor names, dimension order, and the Q/K row permutation for RoPE.
//!
//! HF llama applies RoPE "rotate-half" style (dimension i pairs with i + head_dim/2 inside a head); llama.cpp's
//! llama architecture pairs adjacent dimensions (2i, 2i+1). llama.cpp's converter therefore reorders the output
//! rows of q_proj and k_proj per head: GGUF row 2i of a head is HF row i, GGUF row 2i+1 is HF row i + head_dim/2.
//! Our IR keeps the GGUF order, so GGUF tensors load untouched and HF tensors are permuted on load and
//! un-permuted on write. Attention scores are identical either way.
//! Dimension order: GGUF `ne` is the PyTorch shape reversed; our IR uses the PyTorch order.

/// Per-layer tensors: (GGUF suffix after `blk.N.`, HF suffix after `model.layers.N.`).
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// HF tensor name → canonical GGUF name; `None` for tensors we do not use (e.g. rotary inv_freq buffers).
pub fn hf_to_gguf_name(hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some((*g).to_owned());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (g, _) = LAYER_NAMES.iter().find(|(_, h)| *h == suffix)?;
    Some(format!("blk.{layer}.{g}"))
}

/// Canonical GGUF name → HF tensor name.
pub fn gguf_to_hf_name(gguf: &str) -> Option<String> {
    if let Some((_, h)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some((*h).to_owned());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, h) = LAYER_NAMES.iter().find(|(g, _)| *g == suffix)?;
    Some(format!("model.layers.{layer}.{h}"))
}

/// How many heads a Q or K projection is split into, if the tensor needs the RoPE row permutation.
pub fn rope_heads(gguf_name: &str, n_heads: usize, n_kv_heads: usize) -> Option<usize> {
    if gguf_name.ends_with(".attn_q.weight") {
        Some(n_heads)
    } else if gguf_name.ends_with(".attn_k.weight") {
        Some(n_kv_heads)
    } else {
        None
    }
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
        for hf in ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.17.mlp.down_proj.weight"] {
            let g = hf_to_gguf_name(hf).unwrap();
            assert_eq!(gguf_to_hf_name(&g).unwrap(), hf);
        }
        assert_eq!(hf_to_gguf_name("model.layers.3.self_attn.k_proj.weight").unwrap(), "blk.3.attn_k.weight");
        assert_eq!(hf_to_gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"), None);
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

//! What a GGUF file says differently per architecture family: the metadata keys llama.cpp reads for each
//! family (src/models/<arch>.cpp `load_arch_hparams`), the checks that a model's description can be said in
//! them at all, and Phi-3's fused tensors (the IR holds them split; llama.cpp wants `attn_qkv` and a
//! gate-then-up `ffn_up`).

use edgeforge_core::gguf::MetaValue;
use edgeforge_core::{Activation, Family, ModelConfig, RopeScaling};

use crate::error::{ExportError, Result};
use crate::gguf::GgufTensor;

/// The activation llama.cpp's graph applies for `family` (no GGUF key says otherwise).
fn family_activation(family: Family) -> Activation {
    match family {
        Family::Gemma2 | Family::Gemma3 => Activation::GeluTanh,
        _ => Activation::Silu,
    }
}

fn unsupported(what: String) -> ExportError {
    ExportError::Unsupported { what }
}

/// Refuse, before anything is written, a description llama.cpp would load and compute differently.
pub(crate) fn check(c: &ModelConfig) -> Result<()> {
    let f = &c.features;
    if c.activation != family_activation(f.family) {
        if f.family == Family::Llama {
            return Err(ExportError::GgufActivation { activation: c.activation });
        }
        return Err(unsupported(format!("GGUF export: the {} MLP activation is {} in llama.cpp, this model's is {}", f.family, family_activation(f.family), c.activation)));
    }
    let traits = f.family.traits();
    if f.sliding_window.is_some() && traits.swa_period == 0 {
        return Err(unsupported(format!(
            "GGUF export: this {} model has a sliding window, which llama.cpp's {} architecture does not apply (fix: export as safetensors, or convert a model without sliding_window)",
            f.family, traits.gguf_arch
        )));
    }
    if f.attn_scale.is_some() && !matches!(f.family, Family::Gemma2 | Family::Gemma3) {
        return Err(unsupported(format!("GGUF export: llama.cpp's {} architecture has no attention-scale key", traits.gguf_arch)));
    }
    if let Some(s) = f.attn_scale {
        // llama.cpp derives it from the depth (27B models) and n_embd / n_head.
        let big = matches!((f.family, c.n_layers), (Family::Gemma2, 46) | (Family::Gemma3, 62));
        let derived = if big { 1.0 / ((c.n_embd / c.n_heads.max(1)) as f32).sqrt() } else { 1.0 / (c.head_dim as f32).sqrt() };
        if (s - derived).abs() > 1e-6 * derived {
            return Err(unsupported(format!("GGUF export: attention scale {s} is not the one llama.cpp derives for this gemma model ({derived})")));
        }
    }
    if f.attn_softcap.is_some() && f.family != Family::Gemma2 {
        return Err(unsupported("GGUF export: only gemma2 has an attention soft-cap in llama.cpp".into()));
    }
    if f.family == Family::Gemma2 && (f.attn_softcap.is_none() || f.final_softcap.is_none()) {
        return Err(unsupported("GGUF export: llama.cpp's gemma2 always soft-caps attention and logits (it would apply its defaults 50 and 30)".into()));
    }
    Ok(())
}

/// The family's keys beyond the ones every architecture has (none for a plain llama model, so its files
/// stay as they were).
pub(crate) fn extra_metadata(c: &ModelConfig) -> Vec<(String, MetaValue)> {
    let f = &c.features;
    let arch = f.family.traits().gguf_arch;
    let k = |s: &str| format!("{arch}.{s}");
    let mut out = Vec::new();
    if c.n_embd.checked_div(c.n_heads) != Some(c.head_dim) {
        out.push((k("attention.key_length"), MetaValue::U32(c.head_dim as u32)));
        out.push((k("attention.value_length"), MetaValue::U32(c.head_dim as u32)));
    }
    if let RopeScaling::Linear { factor } = f.rope_scaling {
        out.push((k("rope.scaling.type"), MetaValue::Str("linear".into())));
        out.push((k("rope.scaling.factor"), MetaValue::F32(factor)));
    }
    if let Some(w) = f.sliding_window {
        out.push((k("attention.sliding_window"), MetaValue::U32(w.size as u32)));
        if w.period != f.family.traits().swa_period {
            out.push((k("attention.sliding_window_pattern"), MetaValue::U32(w.period)));
        }
    }
    if let Some(b) = f.rope_base_swa {
        out.push((k("rope.freq_base_swa"), MetaValue::F32(b)));
    }
    if let Some(cap) = f.attn_softcap {
        out.push((k("attn_logit_softcapping"), MetaValue::F32(cap)));
    }
    if let Some(cap) = f.final_softcap {
        out.push((k("final_logit_softcapping"), MetaValue::F32(cap)));
    }
    out
}

/// Phi-3: each layer's q/k/v (and their biases) become `attn_qkv`, gate and up become `ffn_up` (gate rows
/// first), as llama.cpp's loader expects; other families pass through. Parts must share one block type.
pub(crate) fn fuse(c: &ModelConfig, tensors: Vec<GgufTensor>) -> Result<Vec<GgufTensor>> {
    if !c.features.family.traits().fused {
        return Ok(tensors);
    }
    let groups: [(&str, &[&str]); 3] = [
        ("attn_qkv.weight", &["attn_q.weight", "attn_k.weight", "attn_v.weight"]),
        ("attn_qkv.bias", &["attn_q.bias", "attn_k.bias", "attn_v.bias"]),
        ("ffn_up.weight", &["ffn_gate.weight", "ffn_up.weight"]),
    ];
    let mut by_name: std::collections::BTreeMap<String, GgufTensor> = tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    for l in 0..c.n_layers {
        for (fused, parts) in groups {
            let names: Vec<String> = parts.iter().map(|p| format!("blk.{l}.{p}")).collect();
            if !names.iter().all(|n| by_name.contains_key(n)) {
                continue;
            }
            let pieces: Vec<GgufTensor> = names.iter().filter_map(|n| by_name.remove(n)).collect();
            let dtype = pieces[0].dtype;
            if pieces.iter().any(|p| p.dtype != dtype || p.shape[1..] != pieces[0].shape[1..]) {
                return Err(unsupported(format!("GGUF export: block {l}'s parts of {fused} have different types or widths; llama.cpp's phi3 stores them as one tensor")));
            }
            let mut shape = pieces[0].shape.clone();
            shape[0] = pieces.iter().map(|p| p.shape[0]).sum();
            let bytes = pieces.iter().flat_map(|p| p.bytes.iter().copied()).collect::<Vec<u8>>().into();
            let name = format!("blk.{l}.{fused}");
            by_name.insert(name.clone(), GgufTensor { name, shape, dtype, bytes });
        }
    }
    Ok(by_name.into_values().collect())
}

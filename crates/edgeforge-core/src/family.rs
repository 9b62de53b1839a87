//! The model description beyond sizes: which architecture family a model belongs to and the block features
//! that family implies (biases, q/k norms, extra norms, RoPE variant and scaling, sliding windows, soft-caps,
//! embedding scale). Every backend computes a block from these fields, never from the family name; a family
//! is only the mapping from its GGUF/HF keys and tensor names to the fields (see `load_gguf`, `load_hf`,
//! `layout`).
//!
//! Facts are llama.cpp's (src/models/<arch>.cpp, llama-arch.cpp, convert_hf_to_gguf.py / conversion/*.py of
//! the pinned build), in short:
//! - llama (also Mistral, Llama 3.x): RoPE on adjacent pairs (NORM; q/k rows permuted by the converter),
//!   optional `rope_freqs.weight` (Llama 3 frequency factors), SiLU-gated MLP.
//! - qwen2: NEOX RoPE (half split, no permutation), q/k/v biases.
//! - qwen3: NEOX RoPE, per-head RMSNorm on q and k before RoPE.
//! - gemma2: embeddings × √n_embd, norms before and after attention and MLP, GELU(tanh)-gated MLP, NEOX,
//!   attention logit soft-cap, final logit soft-cap, sliding window on layers with `il % 2 == 0`; the
//!   converter adds 1 to every norm weight (HF's `(1 + w)` RMSNorm), so GGUF norms are plain.
//! - gemma3: as gemma2 without soft-caps but with q/k norms; sliding layers `il % 6 < 5` use RoPE base
//!   `rope.freq_base_swa` (10000) without scaling, global layers `rope.freq_base` with the linear scaling.
//! - phi3: NEOX, fused `attn_qkv` and `ffn_up` (gate rows then up rows), SiLU; llama.cpp disables its
//!   sliding window, and long-context factors (`rope_factors_long/short`) are refused here.

use serde::{Deserialize, Serialize};

/// An architecture family (GGUF `general.architecture`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    Llama,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
    Phi3,
}

/// What a family fixes about every block (the table each loader consults; one row per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyTraits {
    pub gguf_arch: &'static str,
    /// HF `model_type` values that map to this family (the first is what our HF writer emits).
    pub hf_model_types: &'static [&'static str],
    pub hf_architecture: &'static str,
    pub rope_kind: RopeKind,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// Norms after attention and after the MLP (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    /// Embeddings multiplied by √n_embd.
    pub scale_embeddings: bool,
    /// HF stores RMSNorm weights as `w` and computes `(1 + w)`: the converter adds 1.
    pub hf_norm_plus_one: bool,
    /// GGUF and HF store q/k/v as one `attn_qkv` and gate/up as one `ffn_up` (split at load, fused on write).
    pub fused: bool,
    /// Every layer slides (0), or a period `p` where layer `il` slides iff `il % p < p - 1` (llama.cpp's
    /// `set_swa_pattern`), when the model has a window.
    pub swa_period: u32,
    /// The head is always the embedding (HF drops `lm_head`, llama.cpp duplicates `token_embd`).
    pub always_tied: bool,
    /// llama.cpp's graph for this arch sizes q and the attention output as `n_embd` (phi3: `attn_qkv` is
    /// `n_embd + 2·n_embd_gqa` rows, `attn_output` `n_embd × n_embd`), so query heads cannot be pruned.
    pub fixed_query_width: bool,
}

const FAMILIES: [(Family, FamilyTraits); 6] = [
    (Family::Llama, FamilyTraits { gguf_arch: "llama", hf_model_types: &["llama", "mistral"], hf_architecture: "LlamaForCausalLM", rope_kind: RopeKind::Norm, qkv_bias: false, qk_norm: false, post_norms: false, scale_embeddings: false, hf_norm_plus_one: false, fused: false, swa_period: 0, always_tied: false, fixed_query_width: false }),
    (Family::Qwen2, FamilyTraits { gguf_arch: "qwen2", hf_model_types: &["qwen2"], hf_architecture: "Qwen2ForCausalLM", rope_kind: RopeKind::Neox, qkv_bias: true, qk_norm: false, post_norms: false, scale_embeddings: false, hf_norm_plus_one: false, fused: false, swa_period: 0, always_tied: false, fixed_query_width: false }),
    (Family::Qwen3, FamilyTraits { gguf_arch: "qwen3", hf_model_types: &["qwen3"], hf_architecture: "Qwen3ForCausalLM", rope_kind: RopeKind::Neox, qkv_bias: false, qk_norm: true, post_norms: false, scale_embeddings: false, hf_norm_plus_one: false, fused: false, swa_period: 0, always_tied: false, fixed_query_width: false }),
    (Family::Gemma2, FamilyTraits { gguf_arch: "gemma2", hf_model_types: &["gemma2"], hf_architecture: "Gemma2ForCausalLM", rope_kind: RopeKind::Neox, qkv_bias: false, qk_norm: false, post_norms: true, scale_embeddings: true, hf_norm_plus_one: true, fused: false, swa_period: 2, always_tied: true, fixed_query_width: false }),
    (Family::Gemma3, FamilyTraits { gguf_arch: "gemma3", hf_model_types: &["gemma3_text"], hf_architecture: "Gemma3ForCausalLM", rope_kind: RopeKind::Neox, qkv_bias: false, qk_norm: true, post_norms: true, scale_embeddings: true, hf_norm_plus_one: true, fused: false, swa_period: 6, always_tied: false, fixed_query_width: false }),
    (Family::Phi3, FamilyTraits { gguf_arch: "phi3", hf_model_types: &["phi3"], hf_architecture: "Phi3ForCausalLM", rope_kind: RopeKind::Neox, qkv_bias: false, qk_norm: false, post_norms: false, scale_embeddings: false, hf_norm_plus_one: false, fused: true, swa_period: 0, always_tied: false, fixed_query_width: true }),
];

impl Family {
    pub const ALL: [Family; 6] = [Family::Llama, Family::Qwen2, Family::Qwen3, Family::Gemma2, Family::Gemma3, Family::Phi3];

    pub fn traits(self) -> FamilyTraits {
        FAMILIES.iter().find(|(f, _)| *f == self).map(|(_, t)| *t).unwrap_or(FAMILIES[0].1)
    }

    pub fn from_gguf_arch(arch: &str) -> Option<Family> {
        FAMILIES.iter().find(|(_, t)| t.gguf_arch == arch).map(|(f, _)| *f)
    }

    pub fn from_hf_model_type(model_type: &str) -> Option<Family> {
        FAMILIES.iter().find(|(_, t)| t.hf_model_types.contains(&model_type)).map(|(f, _)| *f)
    }

    /// GGUF architecture names we load.
    pub fn gguf_arches() -> Vec<&'static str> {
        FAMILIES.iter().map(|(_, t)| t.gguf_arch).collect()
    }

    /// HF `model_type` values we load.
    pub fn hf_model_types() -> Vec<&'static str> {
        FAMILIES.iter().flat_map(|(_, t)| t.hf_model_types.iter().copied()).collect()
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.traits().gguf_arch)
    }
}

/// Which dimensions of a head RoPE rotates together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeKind {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's LLAMA_ROPE_TYPE_NORM (GGUF llama q/k rows are permuted for it).
    #[default]
    Norm,
    /// Halves (i, i + head_dim/2): LLAMA_ROPE_TYPE_NEOX, HF's rotate_half, stored unpermuted.
    Neox,
}

/// How RoPE frequencies are rescaled for long contexts. Types we do not implement (yarn, longrope,
/// dynamic) are refused at load with the key named.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum RopeScaling {
    #[default]
    None,
    /// Positions divided by `factor` (llama.cpp `rope.scaling.type = linear`, freq_scale = 1/factor).
    Linear { factor: f32 },
    /// Llama 3's per-frequency factors. In GGUF they are the `rope_freqs.weight` tensor (the model keeps
    /// it); from HF they are computed from these parameters as convert_hf_to_gguf.py does. `None`
    /// parameters: only the tensor is known (a GGUF source).
    Llama3 { params: Option<Llama3Rope> },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

impl Llama3Rope {
    /// The per-pair divisors convert_hf_to_gguf.py writes as `rope_freqs.weight` (computed in f32 as torch
    /// does there).
    pub fn factors(&self, head_dim: usize, base: f32) -> Vec<f32> {
        let old = self.original_max_position_embeddings as f32;
        let low_wavelen = old / self.low_freq_factor;
        let high_wavelen = old / self.high_freq_factor;
        (0..head_dim / 2)
            .map(|i| {
                let freq = 1.0 / base.powf((2 * i) as f32 / head_dim as f32);
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    self.factor
                } else {
                    let smooth = (old / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor);
                    1.0 / ((1.0 - smooth) / self.factor + smooth)
                }
            })
            .collect()
    }
}

/// Local attention: each query sees itself and the `size - 1` keys before it (llama.cpp masks key p0 for
/// query p1 when `p1 - p0 >= size`), on the layers `period` selects (see `FamilyTraits::swa_period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingWindow {
    pub size: usize,
    pub period: u32,
}

impl SlidingWindow {
    pub fn applies_to(&self, layer: usize) -> bool {
        let p = self.period as usize;
        p == 0 || layer % p < p - 1
    }
}

/// Name of the Llama 3 frequency-factor tensor (one per model).
pub const ROPE_FREQS: &str = "rope_freqs.weight";

//! The one in-memory model representation every loader produces and every pass, runtime and writer reads.
//!
//! Conventions (see `layout.rs` for the conversions):
//! - tensors are keyed by their canonical GGUF names (`blk.3.ffn_down.weight`);
//! - shapes are row-major, outermost first (PyTorch order: a linear weight is `[out, in]`);
//! - Q and K projection rows are in llama.cpp's order (RoPE on adjacent pairs), whatever the source file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::blocks;
use crate::family::{Family, RopeKind, RopeScaling, SlidingWindow};
use crate::dtype::GgmlType;
use crate::error::{Error, Result};

/// Hyper-parameters as used by the runtime (resolved from config.json or GGUF metadata).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub architecture: String,
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub context_length: usize,
    pub tied_embeddings: bool,
    /// The MLP gate's activation. Absent in checkpoints written before the field existed, which were all
    /// SiLU models, hence the default.
    #[serde(default)]
    pub activation: Activation,
    /// Everything that differs between families (all off: a llama block). Absent in checkpoints written
    /// before the field existed, which were all llama models.
    #[serde(default)]
    pub features: BlockFeatures,
}

/// The family and the block features it uses (see `family.rs` for where each fact comes from).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct BlockFeatures {
    pub family: Family,
    pub rope_kind: RopeKind,
    pub rope_scaling: RopeScaling,
    /// RoPE base of the sliding-window layers, which then also skip the scaling (Gemma 3's local layers);
    /// `None`: sliding layers rope like the others.
    pub rope_base_swa: Option<f32>,
    pub sliding_window: Option<SlidingWindow>,
    /// The attention softmax scale; `None` is 1/√head_dim.
    pub attn_scale: Option<f32>,
    /// `c · tanh(s / c)` on the attention scores (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// `c · tanh(z / c)` on the logits (Gemma 2).
    pub final_softcap: Option<f32>,
    /// Embedding rows multiplied by √n_embd (Gemma).
    pub scale_embeddings: bool,
    /// `attn_{q,k,v}.bias` (Qwen 2).
    pub qkv_bias: bool,
    /// `attn_output.bias`.
    pub o_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (`attn_q_norm`, `attn_k_norm`: Qwen 3, Gemma 3).
    pub qk_norm: bool,
    /// RMSNorm of the attention and MLP outputs before their residual adds (`post_attention_norm`,
    /// `post_ffw_norm`: Gemma).
    pub post_norms: bool,
}

impl BlockFeatures {
    /// The features a family always has (the per-model ones, scaling, window, caps, are set by loaders).
    pub fn of_family(family: Family) -> Self {
        let t = family.traits();
        Self {
            family,
            rope_kind: t.rope_kind,
            qkv_bias: t.qkv_bias,
            qk_norm: t.qk_norm,
            post_norms: t.post_norms,
            scale_embeddings: t.scale_embeddings,
            ..Self::default()
        }
    }
}

/// How one layer attends: its window (if it slides), and RoPE base and linear position scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerAttention {
    pub window: Option<usize>,
    pub rope_base: f32,
    /// Positions are multiplied by this (1 / the linear scaling factor).
    pub rope_freq_scale: f32,
    /// Whether `rope_freqs.weight` (Llama 3 factors) divides this layer's frequencies.
    pub rope_freq_factors: bool,
}

impl ModelConfig {
    /// Layer `l`'s attention parameters from the model-wide description.
    pub fn layer_attention(&self, l: usize) -> LayerAttention {
        let f = &self.features;
        let sliding = f.sliding_window.filter(|w| w.applies_to(l));
        let global_scale = match f.rope_scaling {
            RopeScaling::Linear { factor } => 1.0 / factor,
            _ => 1.0,
        };
        let factors = matches!(f.rope_scaling, RopeScaling::Llama3 { .. });
        match (sliding, f.rope_base_swa) {
            (Some(_), Some(base)) => LayerAttention { window: sliding.map(|w| w.size), rope_base: base, rope_freq_scale: 1.0, rope_freq_factors: false },
            _ => LayerAttention { window: sliding.map(|w| w.size), rope_base: self.rope_base, rope_freq_scale: global_scale, rope_freq_factors: factors },
        }
    }

    /// The attention softmax scale.
    pub fn attn_scale(&self) -> f32 {
        self.features.attn_scale.unwrap_or_else(|| 1.0 / (self.head_dim as f32).sqrt())
    }
}

/// The nonlinearity applied to the MLP gate projection before it multiplies the up projection:
/// `act(x·W_gateᵀ) ⊙ (x·W_upᵀ)`. Llama checkpoints are trained with SiLU (SwiGLU); the `activation-swap`
/// pass turns it into ReLU (ReGLU), which an integrate-and-fire neuron computes exactly as a firing rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Silu,
    Relu,
    /// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`, ggml's `ggml_gelu`).
    #[serde(rename = "gelu_tanh")]
    GeluTanh,
}

impl Activation {
    /// The name Hugging Face's `hidden_act` uses (and our reports print).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Relu => "relu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        }
    }

    /// Parses a Hugging Face `hidden_act` value; `None` for activations the runtime does not implement.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "relu" => Some(Activation::Relu),
            "gelu_pytorch_tanh" | "gelu_tanh" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    /// Applies the activation to one value (the scalar definition every backend must agree with).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Relu => x.max(0.0),
            Activation::GeluTanh => gelu_tanh(x),
        }
    }
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Tensor contents: raw format blocks exactly as read (so quantized blocks stay reachable), or floats.
#[derive(Debug, Clone)]
pub enum TensorData {
    F32(Vec<f32>),
    /// Rows of whole blocks of `dtype` (F16 and BF16 count as one-element blocks).
    Blocks { dtype: GgmlType, bytes: crate::BlockBytes },
    /// Integer codes with per-group scales, as quantization passes produce them.
    Quantized(crate::quantized::QuantTensor),
}

#[derive(Debug, Clone)]
pub struct Tensor {
    /// Row-major, outermost first; the last dimension is the contiguous row.
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    pub fn n_elems(&self) -> usize {
        self.shape.iter().product()
    }

    /// The storage format's name: a ggml type (`Q4_1`, `F32`) or our integer format (`int4-g64-sym`).
    pub fn format_name(&self) -> String {
        match &self.data {
            TensorData::F32(_) => "F32".to_owned(),
            TensorData::Blocks { dtype, .. } => dtype.name().to_owned(),
            TensorData::Quantized(q) => q.format.label(self.row_len()),
        }
    }

    pub fn is_float(&self) -> bool {
        match &self.data {
            TensorData::F32(_) => true,
            TensorData::Blocks { dtype, .. } => !dtype.is_quantized(),
            TensorData::Quantized(_) => false,
        }
    }

    pub fn storage_bytes(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len() * 4,
            TensorData::Blocks { bytes, .. } => bytes.len(),
            TensorData::Quantized(q) => q.storage_bytes(),
        }
    }

    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Rows `first .. first + rows` as a tensor of the same storage (float or ggml blocks; `None` for our
    /// integer codes, or a range past the end).
    pub fn row_range(&self, first: usize, rows: usize) -> Option<Tensor> {
        let n_rows = *self.shape.first()?;
        if first.checked_add(rows)? > n_rows {
            return None;
        }
        let per_row = self.n_elems() / n_rows.max(1);
        let mut shape = self.shape.clone();
        shape[0] = rows;
        let data = match &self.data {
            TensorData::F32(v) => TensorData::F32(v[first * per_row..(first + rows) * per_row].to_vec()),
            TensorData::Blocks { dtype, bytes } => {
                let row_bytes = bytes.len() / n_rows.max(1);
                TensorData::Blocks { dtype: *dtype, bytes: bytes[first * row_bytes..(first + rows) * row_bytes].to_vec().into() }
            }
            TensorData::Quantized(_) => return None,
        };
        Some(Tensor { shape, data })
    }

    /// The rows of `parts` one after the other (same row shape and storage type; `None` otherwise).
    pub fn concat_rows(parts: &[&Tensor]) -> Option<Tensor> {
        let first = parts.first()?;
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|t| t.shape.first().copied()).sum::<Option<usize>>()?;
        if parts.iter().any(|t| t.shape[1..] != first.shape[1..]) {
            return None;
        }
        let data = match &first.data {
            TensorData::F32(_) => TensorData::F32(
                parts.iter().map(|t| match &t.data { TensorData::F32(v) => Some(v.as_slice()), _ => None }).collect::<Option<Vec<_>>>()?.concat(),
            ),
            TensorData::Blocks { dtype, .. } => TensorData::Blocks {
                dtype: *dtype,
                bytes: parts
                    .iter()
                    .map(|t| match &t.data { TensorData::Blocks { dtype: d, bytes } if d == dtype => Some(&bytes[..]), _ => None })
                    .collect::<Option<Vec<_>>>()?
                    .concat()
                    .into(),
            },
            TensorData::Quantized(_) => return None,
        };
        Some(Tensor { shape, data })
    }

    /// Float values in row-major order (dequantized, rows in parallel).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        match &self.data {
            TensorData::F32(v) => Ok(v.clone()),
            TensorData::Quantized(q) => Ok(q.dequantize(self.n_elems())),
            TensorData::Blocks { dtype, bytes } => {
                let row_len = self.row_len();
                let n_rows = self.n_elems().checked_div(row_len).unwrap_or(0);
                blocks::dequantize_rows(*dtype, bytes, n_rows, row_len)
                    .map_err(|source| Error::Block { tensor: name.to_owned(), source })
            }
        }
    }
}

/// Where a model came from, for reports and reproducibility.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSource {
    pub path: PathBuf,
    pub format: SourceFormat,
    /// sha256 of the model file (GGUF), or of config.json, each safetensors file in name order, then each
    /// tokenizer file present (tokenizer.json, tokenizer_config.json, special_tokens_map.json, ...: see
    /// `load_hf::TOKENIZER_FILES`) (HF).
    pub sha256: String,
    pub file_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    Gguf,
    HfSafetensors,
}

impl std::fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceFormat::Gguf => "gguf",
            SourceFormat::HfSafetensors => "hf-safetensors",
        })
    }
}

pub struct Model {
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, Tensor>,
    pub tokenizer: edgeforge_tokenizer::Tokenizer,
    pub source: ModelSource,
    /// For each block, the index of the input model's block it descends from: depth pruning removes
    /// blocks, and reconstruction and distillation must still pair each block with its original. Empty
    /// means the identity (no block was removed).
    pub block_origin: Vec<usize>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("tensors", &self.tensors.len())
            .field("source", &self.source)
            .finish()
    }
}

impl Model {
    /// Hand the mapped pages of block `l`'s tensors back to the kernel (a streamed pass or evaluation is
    /// done with them; they are read again from the file if used later).
    pub fn release_block(&self, l: usize) {
        let prefix = format!("blk.{l}.");
        for (_, t) in self.tensors.range(prefix.clone()..).take_while(|(name, _)| name.starts_with(&prefix)) {
            if let TensorData::Blocks { bytes, .. } = &t.data {
                bytes.release();
            }
        }
    }

    /// Whether block `l` is read from a file's map (a model loaded from GGUF): passes then spill what they
    /// produce for it (`spill_block`) so a model larger than memory is processed one block at a time.
    pub fn block_is_mapped(&self, l: usize) -> bool {
        let prefix = format!("blk.{l}.");
        self.tensors
            .range(prefix.clone()..)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .any(|(_, t)| matches!(&t.data, TensorData::Blocks { bytes, .. } if bytes.is_mapped()))
    }

    /// Move block `l`'s owned block-format tensors (e.g. a quantization pass's output) into `spill` and keep
    /// mapped views of them instead: they leave the heap, and `release_block` drops their pages.
    pub fn spill_block(&mut self, l: usize, spill: &mut crate::SpillFile) -> std::io::Result<()> {
        let prefix = format!("blk.{l}.");
        for (_, t) in self.tensors.range_mut(prefix.clone()..).take_while(|(name, _)| name.starts_with(&prefix)) {
            if let TensorData::Blocks { bytes, .. } = &mut t.data {
                if !bytes.is_mapped() {
                    *bytes = spill.spill(bytes)?;
                }
            }
        }
        self.release_block(l);
        Ok(())
    }

    /// The input model's index of block `l` (see `block_origin`).
    pub fn origin_of(&self, l: usize) -> usize {
        self.block_origin.get(l).copied().unwrap_or(l)
    }

    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor { path: self.source.path.clone(), tensor: name.to_owned() })
    }

    /// Float copy of a tensor, checking it has the shape the architecture expects.
    pub fn tensor_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        if t.shape != expected {
            return Err(Error::TensorShape {
                path: self.source.path.clone(),
                tensor: name.to_owned(),
                expected: expected.to_vec(),
                got: t.shape.clone(),
            });
        }
        t.to_f32(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_without_activation_reads_as_silu_and_relu_round_trips() {
        let mut cfg = ModelConfig {
            architecture: "llama".into(),
            vocab_size: 8,
            n_embd: 4,
            n_layers: 1,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 4,
            n_ff: 8,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
            context_length: 16,
            tied_embeddings: true,
            activation: Activation::Relu,
            features: BlockFeatures::default(),
        };
        let json = serde_json::to_value(&cfg).expect("serializes");
        assert_eq!(json["activation"], "relu");
        let back: ModelConfig = serde_json::from_value(json.clone()).expect("reads back");
        assert_eq!(back.activation, Activation::Relu);
        // A checkpoint written before the field existed.
        let mut old = json;
        old.as_object_mut().expect("object").remove("activation");
        cfg.activation = Activation::Silu;
        assert_eq!(serde_json::from_value::<ModelConfig>(old).expect("old config reads"), cfg);
    }
}

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
}

impl Activation {
    /// The name Hugging Face's `hidden_act` uses (and our reports print).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Relu => "relu",
        }
    }

    /// Parses a Hugging Face `hidden_act` value; `None` for activations the runtime does not implement.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    /// Applies the activation to one value (the scalar definition every backend must agree with).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Relu => x.max(0.0),
        }
    }
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
    Blocks { dtype: GgmlType, bytes: Vec<u8> },
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

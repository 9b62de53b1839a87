//! Model IR → Hugging Face folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json),
//! loadable by transformers and by our own HF reader. Weights are written as floats: quantized GGUF blocks
//! are dequantized, and Q/K rows go back to HF's rotate-half order (`layout.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeforge_core::layout::{self, RopeOrder};
use edgeforge_core::Model;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;

use crate::atomic::StagedDir;
use crate::error::{ExportError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    F32,
    F16,
    BF16,
}

impl FloatType {
    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            FloatType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            FloatType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            FloatType::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        }
    }

    fn safetensors_dtype(self) -> Dtype {
        match self {
            FloatType::F32 => Dtype::F32,
            FloatType::F16 => Dtype::F16,
            FloatType::BF16 => Dtype::BF16,
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            FloatType::F32 => "float32",
            FloatType::F16 => "float16",
            FloatType::BF16 => "bfloat16",
        }
    }
}

/// Write `model` as an HF folder at `dest` (atomically: a staging folder renamed at the end).
/// What `write_hf_dir` wrote.
#[derive(Debug, Clone)]
pub struct HfSummary {
    pub dir: PathBuf,
    /// Bytes of tensor data in model.safetensors (without its JSON header, config or tokenizer files).
    pub weight_bytes: u64,
}

pub fn write_hf_dir(model: &Model, dest: &Path, dtype: FloatType, replace: bool) -> Result<HfSummary> {
    let staged = StagedDir::new(dest, replace)?;
    let cfg = &model.config;

    let mut encoded: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, tensor) in &model.tensors {
        let Some(hf_name) = layout::gguf_to_hf_name(name) else { continue };
        let mut values = tensor.to_f32(name)?;
        if let Some(heads) = layout::rope_heads(name, cfg.n_heads, cfg.n_kv_heads) {
            let order = layout::rope_row_order(heads, cfg.head_dim, RopeOrder::GgufToHf);
            let row = tensor.row_len();
            let mut out = Vec::with_capacity(values.len());
            for &src in &order {
                out.extend_from_slice(&values[src * row..(src + 1) * row]);
            }
            values = out;
        }
        encoded.insert(hf_name, (tensor.shape.clone(), dtype.encode(&values)));
    }
    let weight_bytes = encoded.values().map(|(_, b)| b.len() as u64).sum();
    let st_path = staged.path().join("model.safetensors");
    let views = encoded
        .iter()
        .map(|(name, (shape, bytes))| {
            TensorView::new(dtype.safetensors_dtype(), shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| ExportError::Safetensors { path: st_path.clone(), reason: e.to_string() })
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(std::collections::HashMap::from([("format".to_owned(), "pt".to_owned())]));
    safetensors::serialize_to_file(views, metadata, &st_path)
        .map_err(|e| ExportError::Safetensors { path: st_path.clone(), reason: e.to_string() })?;

    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.n_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_base,
        "rope_scaling": null,
        "tie_word_embeddings": cfg.tied_embeddings,
        "hidden_act": cfg.activation.name(),
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": model.tokenizer.bos_id(),
        "eos_token_id": model.tokenizer.eos_id(),
        "torch_dtype": dtype.torch_name(),
    });
    let config_path = staged.path().join("config.json");
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    std::fs::write(&config_path, text + "\n").map_err(|e| ExportError::io(&config_path, e))?;
    model
        .tokenizer
        .write_hf_files(staged.path())
        .map_err(|source| ExportError::Tokenizer { path: staged.path().to_path_buf(), source })?;
    Ok(HfSummary { dir: staged.commit()?, weight_bytes })
}

//! Model IR → Hugging Face folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json),
//! loadable by transformers and by our own HF reader. Weights are written as floats: quantized GGUF blocks
//! are dequantized, and Q/K rows go back to HF's rotate-half order (`layout.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeforge_core::layout::{self, RopeOrder};
use edgeforge_core::{Family, Model, RopeScaling, Tensor};
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

    let family = cfg.features.family;
    let mut encoded: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, tensor) in &hf_tensors(model)? {
        let Some(hf_name) = layout::gguf_to_hf_name(family, name) else { continue };
        let mut values = tensor.to_f32(name)?;
        if let Some(heads) = layout::rope_heads(cfg.features.rope_kind, name, cfg.n_heads, cfg.n_kv_heads) {
            let order = layout::rope_row_order(heads, cfg.head_dim, RopeOrder::GgufToHf);
            let row = tensor.row_len();
            let mut out = Vec::with_capacity(values.len());
            for &src in &order {
                out.extend_from_slice(&values[src * row..(src + 1) * row]);
            }
            values = out;
        }
        let offset = layout::hf_norm_offset(family, name);
        values.iter_mut().for_each(|v| *v -= offset);
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

    let config = hf_config(model, dtype)?;
    let config_path = staged.path().join("config.json");
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    std::fs::write(&config_path, text + "\n").map_err(|e| ExportError::io(&config_path, e))?;
    model
        .tokenizer
        .write_hf_files(staged.path())
        .map_err(|source| ExportError::Tokenizer { path: staged.path().to_path_buf(), source })?;
    Ok(HfSummary { dir: staged.commit()?, weight_bytes })
}

/// The model's tensors as HF stores them: Phi-3's fused ones fused again (rows of the parts, floats), the
/// Llama 3 `rope_freqs.weight` left out (config.json's rope_scaling carries it).
fn hf_tensors(model: &Model) -> Result<Vec<(String, Tensor)>> {
    let c = &model.config;
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let mut fused_parts = std::collections::BTreeSet::new();
    if c.features.family.traits().fused {
        for l in 0..c.n_layers {
            let mut floats = BTreeMap::new();
            for suffix in ["attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias", "ffn_gate.weight", "ffn_up.weight"] {
                let name = format!("blk.{l}.{suffix}");
                if let Some(t) = model.tensors.get(&name) {
                    floats.insert(name.clone(), Tensor { shape: t.shape.clone(), data: edgeforge_core::TensorData::F32(t.to_f32(&name)?) });
                    fused_parts.insert(name);
                }
            }
            let fused = layout::fuse_layer(&floats, l)
                .ok_or_else(|| ExportError::Unsupported { what: format!("block {l}: its q/k/v or gate/up tensors differ in row width and cannot be fused for Phi-3") })?;
            out.extend(fused);
        }
    }
    for (name, t) in &model.tensors {
        if !fused_parts.contains(name) && name != edgeforge_core::family::ROPE_FREQS {
            out.push((name.clone(), t.clone()));
        }
    }
    Ok(out)
}

/// config.json for the model's family, with every feature the description holds.
fn hf_config(model: &Model, dtype: FloatType) -> Result<serde_json::Value> {
    let cfg = &model.config;
    let f = &cfg.features;
    let t = f.family.traits();
    let model_type = match (f.family, f.sliding_window) {
        (Family::Llama, Some(_)) => "mistral",
        _ => t.hf_model_types[0],
    };
    let architecture = if model_type == "mistral" { "MistralForCausalLM" } else { t.hf_architecture };
    let rope_scaling = match &f.rope_scaling {
        RopeScaling::None => serde_json::Value::Null,
        RopeScaling::Linear { factor } => json!({ "rope_type": "linear", "factor": factor }),
        RopeScaling::Llama3 { params: Some(p) } => json!({
            "rope_type": "llama3",
            "factor": p.factor,
            "low_freq_factor": p.low_freq_factor,
            "high_freq_factor": p.high_freq_factor,
            "original_max_position_embeddings": p.original_max_position_embeddings,
        }),
        RopeScaling::Llama3 { params: None } => {
            return Err(ExportError::Unsupported {
                what: "safetensors export: this model's Llama 3 RoPE factors came from a GGUF rope_freqs.weight tensor, which does not record the rope_scaling parameters config.json needs".into(),
            })
        }
    };
    let mut config = json!({
        "architectures": [architecture],
        "model_type": model_type,
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
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": cfg.tied_embeddings,
        "hidden_act": cfg.activation.name(),
        "bos_token_id": model.tokenizer.bos_id(),
        "eos_token_id": model.tokenizer.eos_id(),
        "torch_dtype": dtype.torch_name(),
    });
    let obj = config.as_object_mut().expect("a JSON object");
    let mut set = |k: &str, v: serde_json::Value| {
        obj.insert(k.to_owned(), v);
    };
    match f.family {
        Family::Llama | Family::Phi3 => {
            set("attention_bias", json!(f.qkv_bias));
            set("mlp_bias", json!(false));
            set("sliding_window", json!(f.sliding_window.map(|w| w.size)));
        }
        Family::Qwen2 | Family::Qwen3 => {
            set("use_sliding_window", json!(false));
            set("attention_bias", json!(f.qkv_bias));
        }
        Family::Gemma2 | Family::Gemma3 => {
            set("hidden_activation", json!(cfg.activation.name()));
            let scale = cfg.attn_scale();
            set("query_pre_attn_scalar", json!((1.0 / (scale * scale)).round()));
            set("final_logit_softcapping", json!(f.final_softcap));
            set("attn_logit_softcapping", json!(f.attn_softcap));
            set("sliding_window", json!(f.sliding_window.map(|w| w.size)));
            if f.family == Family::Gemma3 {
                set("sliding_window_pattern", json!(f.sliding_window.map_or(1, |w| w.period)));
                set("rope_local_base_freq", json!(f.rope_base_swa.unwrap_or(10_000.0)));
            }
        }
    }
    Ok(config)
}

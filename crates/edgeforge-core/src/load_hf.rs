//! Hugging Face folder → `Model`: config.json, model.safetensors or a sharded index, tokenizer.json.
//! Names are mapped to GGUF names and Q/K rows permuted to llama.cpp's RoPE order (see `layout.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use edgeforge_tokenizer::Tokenizer;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::arch::{self, SUPPORTED_ARCHITECTURES};
use crate::dtype::GgmlType;
use crate::error::{ConfigProblem, Error, Result};
use crate::hash::sha256_hex;
use crate::layout::{self, RopeOrder};
use crate::model::{Model, ModelConfig, ModelSource, SourceFormat, Tensor, TensorData};

pub fn load_hf_dir(dir: &Path) -> Result<Model> {
    let config_path = dir.join("config.json");
    let config_bytes = crate::read_limit::read_at_most(&config_path, crate::read_limit::MAX_DOCUMENT_BYTES, "config.json")
        .map_err(|e| Error::io(&config_path, e))?;
    // Malformed JSON is reported as config.json's problem before the tokenizer (which also looks at it) runs.
    if let Err(e) = serde_json::from_slice::<Value>(&config_bytes) {
        return Err(Error::Config { path: config_path, problem: ConfigProblem::Json(e.to_string()) });
    }
    let tokenizer =
        Tokenizer::from_hf_dir(dir).map_err(|source| Error::Tokenizer { path: dir.to_path_buf(), source })?;
    let config = parse_config(&config_path, &config_bytes, tokenizer.vocab_size())?;

    let shards = shard_files(dir)?;
    let mut hashed: Vec<Vec<u8>> = Vec::new();
    let mut file_bytes = config_bytes.len() as u64;
    let mut tensors = BTreeMap::new();
    for shard in &shards {
        let bytes = std::fs::read(shard).map_err(|e| Error::io(shard, e))?;
        file_bytes += bytes.len() as u64;
        read_shard(shard, &bytes, &config, &mut tensors)?;
        hashed.push(bytes);
    }
    let tokenizer_files = tokenizer_files(dir)?;
    let mut parts: Vec<&[u8]> = vec![&config_bytes];
    parts.extend(hashed.iter().map(Vec::as_slice));
    parts.extend(tokenizer_files.iter().map(Vec::as_slice));
    let source = ModelSource {
        path: dir.to_path_buf(),
        format: SourceFormat::HfSafetensors,
        sha256: sha256_hex(&parts),
        file_bytes,
    };
    let model = Model { config, tensors, tokenizer, source, block_origin: Vec::new() };
    crate::load::check_tensors(&model)?;
    Ok(model)
}

/// Files besides the weights that change what the model does with text. Each one present is hashed into the
/// model's sha256 as its name, a NUL, its length (8 bytes LE) and its bytes, so a changed tokenizer or chat
/// template is a different model for reports and the baseline cache.
const TOKENIZER_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
];

fn tokenizer_files(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for name in TOKENIZER_FILES {
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut part = Vec::with_capacity(name.len() + 9 + bytes.len());
        part.extend_from_slice(name.as_bytes());
        part.push(0);
        part.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        part.extend_from_slice(&bytes);
        out.push(part);
    }
    Ok(out)
}

fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read(&index).map_err(|e| Error::io(&index, e))?;
    let bad = |reason: String| Error::Safetensors { path: index.clone(), reason };
    let v: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing object `weight_map`".into()))?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("weight_map[{tensor}] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(bad(format!("weight_map[{tensor}] = {file:?} is not a plain file name in this folder")));
        }
        files.insert(dir.join(file));
    }
    Ok(files.into_iter().collect())
}

fn read_shard(path: &Path, bytes: &[u8], cfg: &ModelConfig, out: &mut BTreeMap<String, Tensor>) -> Result<()> {
    // SafeTensors::deserialize checks the header length, that offsets are in order, and that the data
    // section is exactly covered, so a header pointing past the end of the file is refused here.
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Safetensors { path: path.to_path_buf(), reason: e.to_string() })?;
    for (hf_name, view) in st.tensors() {
        let Some(name) = layout::hf_to_gguf_name(&hf_name) else {
            if hf_name.ends_with("rotary_emb.inv_freq") {
                continue; // a cached buffer some exporters save; recomputed from rope_theta
            }
            return Err(Error::TensorType {
                path: path.to_path_buf(),
                tensor: hf_name,
                dtype: format!("{:?}", view.dtype()),
                why: "the llama architecture has no such tensor",
            });
        };
        let dtype = match view.dtype() {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => {
                return Err(Error::TensorType {
                    path: path.to_path_buf(),
                    tensor: hf_name,
                    dtype: format!("{other:?}"),
                    why: "only F32, F16 and BF16 safetensors are supported",
                })
            }
        };
        let shape = view.shape().to_vec();
        let mut raw = view.data().to_vec();
        if let Some(heads) = layout::rope_heads(&name, cfg.n_heads, cfg.n_kv_heads) {
            if shape.len() != 2 || shape[0] != heads * cfg.head_dim {
                return Err(Error::TensorShape {
                    path: path.to_path_buf(),
                    tensor: name,
                    expected: vec![heads * cfg.head_dim, cfg.n_embd],
                    got: shape,
                });
            }
            let order = layout::rope_row_order(heads, cfg.head_dim, RopeOrder::HfToGguf);
            raw = layout::permute_rows(&raw, raw.len() / shape[0], &order);
        }
        let data = match dtype {
            GgmlType::F32 => TensorData::F32(
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            ),
            dtype => TensorData::Blocks { dtype, bytes: raw },
        };
        if out.insert(name.clone(), Tensor { shape, data }).is_some() {
            return Err(Error::Safetensors { path: path.to_path_buf(), reason: format!("tensor `{hf_name}` appears twice") });
        }
    }
    Ok(())
}

/// config.json as written by transformers for `LlamaForCausalLM`.
fn parse_config(path: &Path, bytes: &[u8], tokenizer_vocab: usize) -> Result<ModelConfig> {
    let err = |problem| Error::Config { path: path.to_path_buf(), problem };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| err(ConfigProblem::Json(e.to_string())))?;
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    let archs: Vec<&str> =
        v.get("architectures").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if model_type != "llama" && !archs.contains(&"LlamaForCausalLM") {
        let arch = if model_type.is_empty() { archs.join(",") } else { model_type.to_owned() };
        return Err(Error::UnsupportedArchitecture { path: path.to_path_buf(), arch, supported: SUPPORTED_ARCHITECTURES.to_vec() });
    }
    let uint = |field: &'static str| -> Result<Option<usize>> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                err(ConfigProblem::WrongType { field, expected: "a non-negative integer", found: x.to_string() })
            }),
        }
    };
    let float = |field: &'static str| -> Result<Option<f64>> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| {
                err(ConfigProblem::WrongType { field, expected: "a number", found: x.to_string() })
            }),
        }
    };
    let required = |field: &'static str| -> Result<usize> {
        uint(field)?.ok_or_else(|| err(ConfigProblem::MissingField { field }))
    };
    if let Some(scaling) = v.get("rope_scaling").filter(|s| !s.is_null()) {
        return Err(err(ConfigProblem::Invalid {
            field: "rope_scaling",
            value: scaling.to_string(),
            why: "RoPE scaling is not supported yet",
        }));
    }
    // transformers' LlamaMLP applies ACT2FN[hidden_act] to the gate; only the two the runtime implements load.
    let activation = match v.get("hidden_act") {
        None | Some(Value::Null) => crate::model::Activation::Silu,
        Some(Value::String(name)) => crate::model::Activation::from_hf(name).ok_or_else(|| {
            err(ConfigProblem::Invalid {
                field: "hidden_act",
                value: format!("\"{name}\""),
                why: "only \"silu\" and \"relu\" are supported",
            })
        })?,
        Some(x) => return Err(err(ConfigProblem::WrongType { field: "hidden_act", expected: "a string", found: x.to_string() })),
    };
    let n_embd = required("hidden_size")?;
    let n_heads = required("num_attention_heads")?;
    let vocab_size = required("vocab_size")?;
    let config = ModelConfig {
        architecture: "llama".to_owned(),
        vocab_size,
        n_embd,
        n_layers: required("num_hidden_layers")?,
        n_heads,
        n_kv_heads: uint("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim: match uint("head_dim")? {
            Some(d) => d,
            None if n_heads > 0 && !n_embd.is_multiple_of(n_heads) => {
                return Err(err(ConfigProblem::Invalid {
                    field: "num_attention_heads",
                    value: n_heads.to_string(),
                    why: "does not divide hidden_size (and config.json gives no head_dim)",
                }))
            }
            None => n_embd.checked_div(n_heads).unwrap_or(0),
        },
        n_ff: required("intermediate_size")?,
        rope_base: float("rope_theta")?.unwrap_or(10_000.0) as f32,
        rms_eps: float("rms_norm_eps")?.ok_or_else(|| err(ConfigProblem::MissingField { field: "rms_norm_eps" }))? as f32,
        context_length: uint("max_position_embeddings")?.unwrap_or(2048),
        tied_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
        activation,
    };
    arch::check_config(&config).map_err(|(field, value, why)| err(ConfigProblem::Invalid { field, value, why }))?;
    if tokenizer_vocab > vocab_size {
        return Err(err(ConfigProblem::Invalid {
            field: "vocab_size",
            value: vocab_size.to_string(),
            why: "is smaller than the tokenizer's vocabulary",
        }));
    }
    Ok(config)
}

//! GGUF file → `Model`: hyper-parameters from `{arch}.*` keys, tokenizer from `tokenizer.ggml.*`, tensors
//! copied out of the map as raw blocks (the float path dequantizes later; quantized blocks stay available).

use std::collections::BTreeMap;
use std::path::Path;

use edgeforge_tokenizer::{GgufVocab, Tokenizer};

use crate::arch::{self, SUPPORTED_ARCHITECTURES};
use crate::error::{ConfigProblem, Error, GgufError, Result};
use crate::gguf::{GgufFile, MetaArray, MetaValue};
use crate::hash::sha256_hex;
use crate::model::{Model, ModelConfig, ModelSource, SourceFormat, Tensor, TensorData};
use crate::dtype::GgmlType;

pub fn load_gguf(path: &Path) -> Result<Model> {
    let file = GgufFile::open(path)?;
    let arch = file.optional_str("general.architecture")?.unwrap_or("").to_owned();
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(Error::UnsupportedArchitecture {
            path: path.to_path_buf(),
            arch,
            supported: SUPPORTED_ARCHITECTURES.to_vec(),
        });
    }
    let vocab = gguf_vocab(&file)?;
    let tokenizer =
        Tokenizer::from_gguf_vocab(&vocab).map_err(|source| Error::Tokenizer { path: path.to_path_buf(), source })?;
    let config = gguf_config(&file, &arch, vocab.tokens.len())?;

    let mut tensors = BTreeMap::new();
    for info in &file.tensors {
        let bytes = file.tensor_bytes(info);
        let data = match info.dtype {
            GgmlType::F32 => TensorData::F32(
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            ),
            dtype => TensorData::Blocks { dtype, bytes: bytes.to_vec() },
        };
        tensors.insert(info.name.clone(), Tensor { shape: info.shape(), data });
    }
    let source = ModelSource {
        path: path.to_path_buf(),
        format: SourceFormat::Gguf,
        sha256: sha256_hex(&[file.bytes()]),
        file_bytes: file.file_len(),
    };
    let model = Model { config, tensors, tokenizer, source, block_origin: Vec::new() };
    crate::load::check_tensors(&model)?;
    Ok(model)
}

fn gguf_config(file: &GgufFile, arch: &str, n_vocab: usize) -> Result<ModelConfig> {
    let key = |k: &str| format!("{arch}.{k}");
    let req = |k: &str| -> Result<usize> { Ok(file.require_u64(&key(k))? as usize) };
    let n_embd = req("embedding_length")?;
    let n_heads = scalar_or_uniform(file, &key("attention.head_count"))?;
    let n_kv_heads = match file.get(&key("attention.head_count_kv")) {
        None => n_heads,
        Some(_) => scalar_or_uniform(file, &key("attention.head_count_kv"))?,
    };
    let head_dim = match file.get(&key("rope.dimension_count")) {
        Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
            file.key_error(GgufError::KeyType { key: key("rope.dimension_count"), expected: "u32", got: v.type_name() })
        })?,
        None => n_embd.checked_div(n_heads).unwrap_or(0),
    };
    let rms_eps = file
        .optional_f64(&key("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| file.key_error(GgufError::MissingKey { key: key("attention.layer_norm_rms_epsilon") }))?;
    if let Some(scaling) = file.optional_str(&key("rope.scaling.type"))? {
        if scaling != "none" {
            return Err(Error::Config {
                path: file.path.clone(),
                problem: ConfigProblem::Invalid {
                    field: "rope.scaling.type",
                    value: scaling.to_owned(),
                    why: "RoPE scaling is not supported yet",
                },
            });
        }
    }
    let tied = !file.tensors.iter().any(|t| t.name == "output.weight");
    let config = ModelConfig {
        architecture: arch.to_owned(),
        vocab_size: n_vocab,
        n_embd,
        n_layers: req("block_count")?,
        n_heads,
        n_kv_heads,
        head_dim,
        n_ff: scalar_or_uniform(file, &key("feed_forward_length"))?,
        rope_base: file.optional_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
        rms_eps: rms_eps as f32,
        context_length: file.require_u64(&key("context_length"))? as usize,
        tied_embeddings: tied,
        // The llama architecture in GGUF has no activation key: llama.cpp always applies SiLU.
        activation: crate::model::Activation::Silu,
    };
    arch::check_config(&config).map_err(|(field, value, why)| Error::Config {
        path: file.path.clone(),
        problem: ConfigProblem::Invalid { field, value, why },
    })?;
    Ok(config)
}

/// Head counts and FFN widths may be per-layer arrays; the llama architecture needs them uniform.
fn scalar_or_uniform(file: &GgufFile, key: &str) -> Result<usize> {
    match file.get(key) {
        Some(MetaValue::Array(a)) => {
            let vals = a.as_i64s().unwrap_or_default();
            match vals.first() {
                Some(&first) if first >= 0 && vals.iter().all(|&v| v == first) => Ok(first as usize),
                _ => Err(Error::Config {
                    path: file.path.clone(),
                    problem: ConfigProblem::Invalid {
                        field: "per-layer hyper-parameter array",
                        value: key.to_owned(),
                        why: "per-layer sizes differ, which the llama architecture does not support",
                    },
                }),
            }
        }
        _ => Ok(file.require_u64(key)? as usize),
    }
}

fn gguf_vocab(file: &GgufFile) -> Result<GgufVocab> {
    let strings = |k: &str| -> Result<Vec<String>> {
        match file.get(k) {
            None => Err(file.key_error(GgufError::MissingKey { key: k.to_owned() })),
            Some(MetaValue::Array(MetaArray::Str(v))) => Ok(v.clone()),
            Some(v) => Err(file.key_error(GgufError::KeyType { key: k.to_owned(), expected: "array of string", got: v.type_name() })),
        }
    };
    let id = |k: &str| -> Result<Option<u32>> {
        match file.get(k) {
            None => Ok(None),
            Some(v) => v.as_u64().and_then(|x| u32::try_from(x).ok()).map(Some).ok_or_else(|| {
                file.key_error(GgufError::KeyType { key: k.to_owned(), expected: "u32", got: v.type_name() })
            }),
        }
    };
    let token_types = match file.get("tokenizer.ggml.token_type") {
        None => None,
        Some(MetaValue::Array(a)) => Some(
            a.as_i64s()
                .ok_or_else(|| file.key_error(GgufError::KeyType { key: "tokenizer.ggml.token_type".into(), expected: "array of i32", got: "array" }))?
                .into_iter()
                .map(|x| x as i32)
                .collect(),
        ),
        Some(v) => {
            return Err(file.key_error(GgufError::KeyType { key: "tokenizer.ggml.token_type".into(), expected: "array of i32", got: v.type_name() }))
        }
    };
    let model = file
        .optional_str("tokenizer.ggml.model")?
        .ok_or_else(|| file.key_error(GgufError::MissingKey { key: "tokenizer.ggml.model".into() }))?
        .to_owned();
    let merges = match file.get("tokenizer.ggml.merges") {
        None => Vec::new(),
        Some(_) => strings("tokenizer.ggml.merges")?,
    };
    // SentencePiece scores: f32, or i32 as llama.cpp also accepts.
    let scores = match file.get("tokenizer.ggml.scores") {
        None => None,
        Some(MetaValue::Array(MetaArray::F32(v))) => Some(v.clone()),
        Some(MetaValue::Array(MetaArray::I32(v))) => Some(v.iter().map(|&x| x as f32).collect()),
        Some(v) => {
            return Err(file.key_error(GgufError::KeyType { key: "tokenizer.ggml.scores".into(), expected: "array of f32", got: v.type_name() }))
        }
    };
    Ok(GgufVocab {
        model,
        pre: file.optional_str("tokenizer.ggml.pre")?.map(str::to_owned),
        tokens: strings("tokenizer.ggml.tokens")?,
        token_types,
        merges,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        unk_id: id("tokenizer.ggml.unknown_token_id")?,
        pad_id: id("tokenizer.ggml.padding_token_id")?,
        add_bos: file.optional_bool("tokenizer.ggml.add_bos_token")?,
        add_eos: file.optional_bool("tokenizer.ggml.add_eos_token")?,
        scores,
        add_space_prefix: file.optional_bool("tokenizer.ggml.add_space_prefix")?,
    })
}

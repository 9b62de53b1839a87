//! GGUF file → `Model`: hyper-parameters from `{arch}.*` keys, tokenizer from `tokenizer.ggml.*`, tensors
//! kept as views into the file's map (nothing is copied; the float path dequantizes later; quantized blocks
//! stay available), so a model larger than memory can be read one block at a time.

use std::collections::BTreeMap;
use std::path::Path;

use edgeforge_tokenizer::{GgufVocab, Tokenizer};

use crate::arch;
use crate::family::{Family, RopeScaling, SlidingWindow, ROPE_FREQS};
use crate::layout;
use crate::error::{ConfigProblem, Error, GgufError, Result};
use crate::gguf::{GgufFile, MetaArray, MetaValue};
use crate::model::{BlockFeatures, Model, ModelConfig, ModelSource, SourceFormat, Tensor, TensorData};
use crate::dtype::GgmlType;

pub fn load_gguf(path: &Path) -> Result<Model> {
    let file = GgufFile::open(path)?;
    let arch = file.optional_str("general.architecture")?.unwrap_or("").to_owned();
    let Some(family) = Family::from_gguf_arch(&arch) else {
        return Err(Error::UnsupportedArchitecture { path: path.to_path_buf(), arch, supported: Family::gguf_arches() });
    };
    let vocab = gguf_vocab(&file)?;
    let tokenizer =
        Tokenizer::from_gguf_vocab(&vocab).map_err(|source| Error::Tokenizer { path: path.to_path_buf(), source })?;
    let config = gguf_config(&file, family, vocab.tokens.len())?;

    let mut tensors = BTreeMap::new();
    for info in &file.tensors {
        let data = match info.dtype {
            GgmlType::F32 => {
                let bytes = file.tensor_bytes(info);
                let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                file.release(info.data_start as usize, bytes.len());
                TensorData::F32(values)
            }
            dtype => TensorData::Blocks { dtype, bytes: file.tensor_view(info) },
        };
        tensors.insert(info.name.clone(), Tensor { shape: info.shape(), data });
    }
    if family.traits().fused {
        let c = &config;
        layout::split_fused(&mut tensors, c.n_layers, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_ff);
    }
    let source = ModelSource {
        path: path.to_path_buf(),
        format: SourceFormat::Gguf,
        sha256: hash_released(&file),
        file_bytes: file.file_len(),
    };
    let model = Model { config, tensors, tokenizer, source, block_origin: Vec::new() };
    crate::load::check_tensors(&model)?;
    Ok(model)
}

/// sha256 of the whole mapped file, 64 MiB at a time, each piece's pages released once hashed (so hashing a
/// model larger than memory does not make it resident).
fn hash_released(file: &GgufFile) -> String {
    crate::hash::sha256_hex_pieces(file.bytes(), 64 << 20, |offset, len| file.release(offset, len))
}

fn gguf_config(file: &GgufFile, family: Family, n_vocab: usize) -> Result<ModelConfig> {
    let arch = family.traits().gguf_arch;
    let key = |k: &str| format!("{arch}.{k}");
    let req = |k: &str| -> Result<usize> { Ok(file.require_u64(&key(k))? as usize) };
    let opt = |k: &str| -> Result<Option<usize>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| file.key_error(GgufError::KeyType { key: key(k), expected: "u32", got: v.type_name() })),
        }
    };
    let n_embd = req("embedding_length")?;
    let n_heads = scalar_or_uniform(file, &key("attention.head_count"))?;
    let n_kv_heads = match file.get(&key("attention.head_count_kv")) {
        None => n_heads,
        Some(_) => scalar_or_uniform(file, &key("attention.head_count_kv"))?,
    };
    // llama.cpp: the head width is attention.key_length (default n_embd / n_head); RoPE rotates
    // rope.dimension_count of it (default all). Historically our llama files carried only the latter.
    let default_hd = n_embd.checked_div(n_heads).unwrap_or(0);
    let n_rot = opt("rope.dimension_count")?;
    let head_dim = opt("attention.key_length")?.or(n_rot).unwrap_or(default_hd);
    for (k, v) in [("rope.dimension_count", n_rot), ("attention.value_length", opt("attention.value_length")?)] {
        if let Some(v) = v.filter(|&v| v != head_dim) {
            return Err(invalid(file, k, v.to_string(), "differs from the head width (partial RoPE and unequal key/value widths are not supported)"));
        }
    }
    let rms_eps = file
        .optional_f64(&key("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| file.key_error(GgufError::MissingKey { key: key("attention.layer_norm_rms_epsilon") }))?;
    let n_layers = req("block_count")?;
    let tied = !file.tensors.iter().any(|t| t.name == "output.weight");
    let mut config = ModelConfig {
        architecture: arch.to_owned(),
        vocab_size: n_vocab,
        n_embd,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        n_ff: scalar_or_uniform(file, &key("feed_forward_length"))?,
        rope_base: file.optional_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
        rms_eps: rms_eps as f32,
        context_length: file.require_u64(&key("context_length"))? as usize,
        tied_embeddings: tied,
        // No GGUF architecture has an activation key: each family's graph fixes it (llama.cpp).
        activation: match family {
            Family::Gemma2 | Family::Gemma3 => crate::model::Activation::GeluTanh,
            _ => crate::model::Activation::Silu,
        },
        features: gguf_features(file, family, n_layers)?,
    };
    if family.traits().always_tied && !tied {
        return Err(invalid(file, "output.weight", "present".into(), "llama.cpp's gemma2 always uses token_embd as the head; remove the tensor"));
    }
    // Gemma: llama.cpp scales queries by 1/√(n_embd / n_head) for the 27B models (recognized by depth),
    // else 1/√head_dim.
    let big_gemma = matches!((family, n_layers), (Family::Gemma2, 46) | (Family::Gemma3, 62));
    if big_gemma && n_heads > 0 {
        config.features.attn_scale = Some(1.0 / ((n_embd / n_heads) as f32).sqrt());
    }
    arch::check_config(&config).map_err(|(field, value, why)| Error::Config {
        path: file.path.clone(),
        problem: ConfigProblem::Invalid { field, value, why },
    })?;
    Ok(config)
}

fn invalid(file: &GgufFile, field: &'static str, value: String, why: &'static str) -> Error {
    Error::Config { path: file.path.clone(), problem: ConfigProblem::Invalid { field, value, why } }
}

/// The family's features from its keys and tensors, refusing what llama.cpp would compute and we do not
/// (yarn/longrope scaling, per-layer window arrays, partial rotary, MoE).
fn gguf_features(file: &GgufFile, family: Family, n_layers: usize) -> Result<BlockFeatures> {
    let arch = family.traits().gguf_arch;
    let key = |k: &str| format!("{arch}.{k}");
    let f32_key = |k: &str| -> Result<Option<f32>> { Ok(file.optional_f64(&key(k))?.map(|v| v as f32)) };
    let mut f = BlockFeatures::of_family(family);
    let has = |name: &str| file.tensors.iter().any(|t| t.name == name);
    if let Some(n) = file.get(&key("expert_count")).and_then(MetaValue::as_u64).filter(|&n| n > 0) {
        return Err(invalid(file, "expert_count", n.to_string(), "mixture-of-experts models are not supported"));
    }
    f.rope_scaling = match file.optional_str(&key("rope.scaling.type"))? {
        None | Some("none") | Some("linear") => match f32_key("rope.scaling.factor")?.or(f32_key("rope.scale_linear")?) {
            Some(factor) if factor != 0.0 && factor != 1.0 => RopeScaling::Linear { factor },
            _ => RopeScaling::None,
        },
        Some(other) => return Err(invalid(file, "rope.scaling.type", format!("\"{other}\""), "only none and linear RoPE scaling (and llama3 factors as rope_freqs.weight) are supported")),
    };
    if let Some(af) = f32_key("rope.scaling.attn_factor")?.filter(|&a| a != 1.0) {
        return Err(invalid(file, "rope.scaling.attn_factor", af.to_string(), "RoPE attention factors (yarn/longrope) are not supported"));
    }
    if has("rope_factors_long.weight") || has("rope_factors_short.weight") {
        return Err(invalid(file, "rope_factors_long.weight", "present".into(), "long-context RoPE factors (Phi-3 128k, longrope) are not supported"));
    }
    if has(ROPE_FREQS) {
        if family != Family::Llama || f.rope_scaling != RopeScaling::None {
            return Err(invalid(file, "rope_freqs.weight", "present".into(), "RoPE frequency factors are supported for the llama architecture without other scaling"));
        }
        f.rope_scaling = RopeScaling::Llama3 { params: None };
    }
    // From the tensors the file holds, not a loop over the declared layer count (unchecked here: a header
    // declaring 2^62 blocks made this loop run for minutes).
    f.o_bias = file.tensors.iter().filter_map(|t| crate::layout::gguf_block_name(&t.name)).any(|(l, rest)| l < n_layers && rest == "attn_output.bias");
    if matches!(family, Family::Llama | Family::Phi3) {
        f.qkv_bias = has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias");
    }
    if file.get(&key("attention.sliding_window_pattern")).is_some_and(|v| matches!(v, MetaValue::Array(_))) {
        return Err(invalid(file, "attention.sliding_window_pattern", "an array".into(), "per-layer window patterns are not supported (only the family's period)"));
    }
    let window = file.get(&key("attention.sliding_window")).and_then(MetaValue::as_u64).map(|v| v as usize);
    let period = match file.get(&key("attention.sliding_window_pattern")) {
        Some(v) => v.as_u64().map(|p| p as u32).ok_or_else(|| file.key_error(GgufError::KeyType { key: key("attention.sliding_window_pattern"), expected: "u32", got: v.type_name() }))?,
        None => family.traits().swa_period,
    };
    match family {
        Family::Gemma2 => {
            f.sliding_window = Some(SlidingWindow { size: window.unwrap_or(4096), period });
            f.attn_softcap = Some(f32_key("attn_logit_softcapping")?.unwrap_or(50.0));
            f.final_softcap = Some(f32_key("final_logit_softcapping")?.unwrap_or(30.0));
            f.rope_base_swa = f32_key("rope.freq_base_swa")?;
            if f.rope_base_swa.is_some() && f.rope_scaling != RopeScaling::None {
                return Err(invalid(file, "rope.freq_base_swa", "present".into(), "a separate local RoPE base with RoPE scaling is not supported for gemma2"));
            }
        }
        Family::Gemma3 => {
            if let Some(size) = window.filter(|&w| w > 0) {
                f.sliding_window = Some(SlidingWindow { size, period });
                f.rope_base_swa = Some(f32_key("rope.freq_base_swa")?.unwrap_or(10_000.0));
            }
            f.final_softcap = f32_key("final_logit_softcapping")?.filter(|&c| c != 0.0);
        }
        // llama.cpp reads phi3's window and then disables it (its note links PR 13676); so do we.
        Family::Phi3 => {}
        _ => {
            if let Some(w) = window {
                return Err(invalid(file, "attention.sliding_window", w.to_string(), "llama.cpp does not apply a sliding window to this architecture; remove the key"));
            }
        }
    }
    Ok(f)
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
                        why: "per-layer sizes differ, which is not supported",
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

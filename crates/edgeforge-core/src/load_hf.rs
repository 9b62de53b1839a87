//! Hugging Face folder → `Model`: config.json, model.safetensors or a sharded index, tokenizer.json.
//! Names are mapped to GGUF names and Q/K rows permuted to llama.cpp's RoPE order (see `layout.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use edgeforge_tokenizer::Tokenizer;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::arch;
use crate::family::{Family, Llama3Rope, RopeScaling, SlidingWindow, ROPE_FREQS};
use crate::dtype::GgmlType;
use crate::error::{ConfigProblem, Error, Result};
use crate::hash::sha256_hex;
use crate::layout::{self, RopeOrder};
use crate::model::{Activation, BlockFeatures, Model, ModelConfig, ModelSource, SourceFormat, Tensor, TensorData};

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
    if config.features.family.traits().fused {
        let c = &config;
        layout::split_fused(&mut tensors, c.n_layers, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_ff);
    }
    if let RopeScaling::Llama3 { params: Some(p) } = &config.features.rope_scaling {
        // What convert_hf_to_gguf.py writes as rope_freqs.weight.
        let factors = p.factors(config.head_dim, config.rope_base);
        tensors.insert(ROPE_FREQS.to_owned(), Tensor { shape: vec![factors.len()], data: TensorData::F32(factors) });
    }
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
        let family = cfg.features.family;
        let Some(name) = layout::hf_to_gguf_name(family, &hf_name) else {
            if hf_name.ends_with("rotary_emb.inv_freq") {
                continue; // a cached buffer some exporters save; recomputed from rope_theta
            }
            return Err(Error::TensorType {
                path: path.to_path_buf(),
                tensor: hf_name,
                dtype: format!("{:?}", view.dtype()),
                why: "this architecture has no such tensor",
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
        if let Some(heads) = layout::rope_heads(cfg.features.rope_kind, &name, cfg.n_heads, cfg.n_kv_heads) {
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
        let mut data = match dtype {
            GgmlType::F32 => TensorData::F32(
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            ),
            dtype => TensorData::Blocks { dtype, bytes: raw.into() },
        };
        let offset = layout::hf_norm_offset(family, &name);
        if offset != 0.0 {
            let t = Tensor { shape: shape.clone(), data };
            let mut v = t.to_f32(&name)?;
            v.iter_mut().for_each(|x| *x += offset);
            data = TensorData::F32(v);
        }
        if out.insert(name.clone(), Tensor { shape, data }).is_some() {
            return Err(Error::Safetensors { path: path.to_path_buf(), reason: format!("tensor `{hf_name}` appears twice") });
        }
    }
    Ok(())
}

/// The fields of a parsed config.json, with typed accessors whose errors name the field.
struct HfConfig<'a> {
    path: &'a Path,
    v: Value,
}

impl HfConfig<'_> {
    fn err(&self, problem: ConfigProblem) -> Error {
        Error::Config { path: self.path.to_path_buf(), problem }
    }

    fn present(&self, field: &str) -> Option<&Value> {
        self.v.get(field).filter(|x| !x.is_null())
    }

    fn uint(&self, field: &'static str) -> Result<Option<usize>> {
        match self.present(field) {
            None => Ok(None),
            Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.err(ConfigProblem::WrongType { field, expected: "a non-negative integer", found: x.to_string() })
            }),
        }
    }

    fn float(&self, field: &'static str) -> Result<Option<f64>> {
        match self.present(field) {
            None => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| self.err(ConfigProblem::WrongType { field, expected: "a number", found: x.to_string() })),
        }
    }

    fn flag(&self, field: &'static str) -> Result<bool> {
        match self.present(field) {
            None => Ok(false),
            Some(x) => x.as_bool().ok_or_else(|| self.err(ConfigProblem::WrongType { field, expected: "true or false", found: x.to_string() })),
        }
    }

    fn required(&self, field: &'static str) -> Result<usize> {
        self.uint(field)?.ok_or_else(|| self.err(ConfigProblem::MissingField { field }))
    }

    fn invalid(&self, field: &'static str, value: String, why: &'static str) -> Error {
        self.err(ConfigProblem::Invalid { field, value, why })
    }
}

/// config.json as transformers writes it for the supported `model_type`s.
fn parse_config(path: &Path, bytes: &[u8], tokenizer_vocab: usize) -> Result<ModelConfig> {
    let err = |problem| Error::Config { path: path.to_path_buf(), problem };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| err(ConfigProblem::Json(e.to_string())))?;
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    let archs: Vec<&str> =
        v.get("architectures").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let family = match Family::from_hf_model_type(model_type) {
        Some(f) => f,
        None if model_type.is_empty() && archs.contains(&"LlamaForCausalLM") => Family::Llama,
        None => {
            let arch = if model_type.is_empty() { archs.join(",") } else { model_type.to_owned() };
            return Err(Error::UnsupportedArchitecture { path: path.to_path_buf(), arch, supported: Family::hf_model_types() });
        }
    };
    let c = HfConfig { path, v };
    if let Some(p) = c.present("rope_parameters") {
        return Err(c.invalid("rope_parameters", p.to_string(), "this config layout (transformers 5) is not supported yet; give rope_theta and rope_scaling instead"));
    }
    // transformers applies ACT2FN[hidden_act] to the gate (Gemma names the field hidden_activation).
    let act_field = if c.present("hidden_activation").is_some() { "hidden_activation" } else { "hidden_act" };
    let activation = match c.present(act_field) {
        None if matches!(family, Family::Gemma2 | Family::Gemma3) => Activation::GeluTanh,
        None => Activation::Silu,
        Some(Value::String(name)) => Activation::from_hf(name)
            .filter(|a| family.traits().scale_embeddings || *a != Activation::GeluTanh)
            .ok_or_else(|| c.invalid(act_field, format!("\"{name}\""), "supported: \"silu\" and \"relu\" (llama-style), \"gelu_pytorch_tanh\" (gemma)"))?,
        Some(x) => return Err(c.err(ConfigProblem::WrongType { field: "hidden_act", expected: "a string", found: x.to_string() })),
    };
    let n_embd = c.required("hidden_size")?;
    let n_heads = c.required("num_attention_heads")?;
    let vocab_size = c.required("vocab_size")?;
    let n_layers = c.required("num_hidden_layers")?;
    let head_dim = match c.uint("head_dim")? {
        Some(d) => d,
        None if n_heads > 0 && !n_embd.is_multiple_of(n_heads) => {
            return Err(c.invalid("num_attention_heads", n_heads.to_string(), "does not divide hidden_size (and config.json gives no head_dim)"))
        }
        None => n_embd.checked_div(n_heads).unwrap_or(0),
    };
    let default_tied = family.traits().always_tied || matches!(family, Family::Gemma3);
    let config = ModelConfig {
        architecture: family.traits().gguf_arch.to_owned(),
        vocab_size,
        n_embd,
        n_layers,
        n_heads,
        n_kv_heads: c.uint("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        n_ff: c.required("intermediate_size")?,
        rope_base: c.float("rope_theta")?.unwrap_or(10_000.0) as f32,
        rms_eps: c.float("rms_norm_eps")?.ok_or_else(|| c.err(ConfigProblem::MissingField { field: "rms_norm_eps" }))? as f32,
        context_length: c.uint("max_position_embeddings")?.unwrap_or(2048),
        tied_embeddings: match c.present("tie_word_embeddings") {
            None => default_tied,
            Some(_) => c.flag("tie_word_embeddings")?,
        },
        activation,
        features: hf_features(&c, family, head_dim)?,
    };
    if family.traits().always_tied && !config.tied_embeddings {
        return Err(c.invalid("tie_word_embeddings", "false".into(), "gemma2 always ties the head to the embedding (as llama.cpp does)"));
    }
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

/// `rope_scaling`: null, `default`, `linear` or `llama3`; anything else (yarn, longrope, dynamic) refused.
fn hf_rope_scaling(c: &HfConfig<'_>, family: Family) -> Result<RopeScaling> {
    let Some(rs) = c.present("rope_scaling") else { return Ok(RopeScaling::None) };
    let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(Value::as_str).unwrap_or("");
    let num = |k: &str, default: Option<f64>| rs.get(k).and_then(Value::as_f64).or(default);
    let bad = |why| c.invalid("rope_scaling", rs.to_string(), why);
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" if family != Family::Llama || num("factor", None).is_some() => {
            Ok(RopeScaling::Linear { factor: num("factor", None).ok_or_else(|| bad("a linear rope_scaling needs a factor"))? as f32 })
        }
        "linear" => Err(bad("a linear rope_scaling needs a factor")),
        "llama3" if family == Family::Llama => Ok(RopeScaling::Llama3 {
            params: Some(Llama3Rope {
                factor: num("factor", Some(8.0)).unwrap_or(8.0) as f32,
                low_freq_factor: num("low_freq_factor", Some(1.0)).unwrap_or(1.0) as f32,
                high_freq_factor: num("high_freq_factor", Some(4.0)).unwrap_or(4.0) as f32,
                original_max_position_embeddings: num("original_max_position_embeddings", Some(8192.0)).unwrap_or(8192.0) as usize,
            }),
        }),
        _ => Err(bad("supported RoPE scaling: none, linear, and llama3 (llama only); yarn, longrope and dynamic are not implemented")),
    }
}

/// The family's features from config.json, refusing fields whose behaviour we do not implement.
fn hf_features(c: &HfConfig<'_>, family: Family, head_dim: usize) -> Result<BlockFeatures> {
    let mut f = BlockFeatures::of_family(family);
    f.rope_scaling = hf_rope_scaling(c, family)?;
    let window = c.uint("sliding_window")?;
    let softcap = |field: &'static str| -> Result<Option<f32>> { Ok(c.float(field)?.map(|x| x as f32).filter(|&x| x != 0.0)) };
    if let Some(p) = c.float("partial_rotary_factor")?.filter(|&p| p != 1.0) {
        return Err(c.invalid("partial_rotary_factor", p.to_string(), "partial RoPE is not supported"));
    }
    if c.flag("mlp_bias")? {
        return Err(c.invalid("mlp_bias", "true".into(), "MLP biases are not supported"));
    }
    match family {
        Family::Llama | Family::Phi3 => {
            let bias = c.flag("attention_bias")?;
            f.qkv_bias = bias;
            f.o_bias = bias;
            f.sliding_window = window.map(|size| SlidingWindow { size, period: 0 });
        }
        Family::Qwen2 | Family::Qwen3 => {
            if c.flag("use_sliding_window")? {
                return Err(c.invalid("use_sliding_window", "true".into(), "Qwen's sliding-window layers are not supported (llama.cpp does not apply them either)"));
            }
            if family == Family::Qwen3 && c.flag("attention_bias")? {
                return Err(c.invalid("attention_bias", "true".into(), "qwen3 attention biases are not supported"));
            }
        }
        Family::Gemma2 | Family::Gemma3 => {
            if let Some(q) = c.float("query_pre_attn_scalar")? {
                let scale = (1.0 / q.sqrt()) as f32;
                f.attn_scale = (q as usize != head_dim || q.fract() != 0.0).then_some(scale);
            }
            f.final_softcap = softcap("final_logit_softcapping")?;
            f.attn_softcap = softcap("attn_logit_softcapping")?;
            if family == Family::Gemma3 {
                if let Some(cap) = f.attn_softcap {
                    return Err(c.invalid("attn_logit_softcapping", cap.to_string(), "gemma3 has no attention soft-cap (llama.cpp's converter asserts it is null)"));
                }
                let period = gemma3_period(c)?;
                f.sliding_window = window.filter(|_| period != 1).map(|size| SlidingWindow { size, period });
                f.rope_base_swa = f.sliding_window.map(|_| c.float("rope_local_base_freq").map(|b| b.unwrap_or(10_000.0) as f32)).transpose()?;
            } else {
                f.sliding_window = Some(SlidingWindow { size: window.unwrap_or(4096), period: 2 });
            }
        }
    }
    Ok(f)
}

/// Gemma 3's window period: `sliding_window_pattern` (default 6), or `layer_types` when it is that
/// period's pattern (other layer lists are refused).
fn gemma3_period(c: &HfConfig<'_>) -> Result<u32> {
    let period = c.uint("sliding_window_pattern")?.unwrap_or(6);
    let period = u32::try_from(period).map_err(|_| c.invalid("sliding_window_pattern", period.to_string(), "is too large"))?;
    if let Some(types) = c.present("layer_types") {
        let list = types.as_array().ok_or_else(|| c.err(ConfigProblem::WrongType { field: "layer_types", expected: "a list", found: types.to_string() }))?;
        let w = SlidingWindow { size: 1, period };
        let matches = list.iter().enumerate().all(|(l, t)| t.as_str() == Some(if w.applies_to(l) { "sliding_attention" } else { "full_attention" }));
        if !matches {
            return Err(c.invalid("layer_types", types.to_string(), "must be the sliding_window_pattern's layout (every period-th layer global)"));
        }
    }
    Ok(period)
}

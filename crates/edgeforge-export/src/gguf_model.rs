//! Model IR → a GGUF file llama.cpp loads. Tensors read from GGUF pass through untouched; our integer
//! tensors map exactly onto ggml blocks where the math allows (symmetric 8-bit with groups of 32k → Q8_0,
//! symmetric 4-bit → Q4_0, since the f16 scale simply repeats per 32-block); asymmetric 4-bit becomes Q4_1
//! with the offset rounded to f16; anything else is written as F16 (reported as a fallback).

use std::path::Path;

use edgeforge_core::gguf::{MetaArray, MetaValue};
use edgeforge_core::quantized::QuantTensor;
use edgeforge_core::{GgmlType, Model, TensorData};

use crate::error::{ExportError, Result};
use crate::gguf::{GgufTensor, GgufWriter};

/// What the export did with each tensor whose format had no exact GGUF equivalent, and what it wrote.
#[derive(Debug, Default)]
pub struct GgufExportNotes {
    pub fallbacks: Vec<String>,
    /// Bytes of tensor data written (blocks and floats, without alignment padding, metadata or vocabulary):
    /// what a device holds as weights, for the fit check after export.
    pub weight_bytes: u64,
}

fn q8_0(q: &QuantTensor) -> Vec<u8> {
    let n = q.codes.len();
    let mut out = Vec::with_capacity(n / 32 * 34);
    for b in 0..n / 32 {
        let scale = q.scales[q.group_of(b * 32)];
        out.extend_from_slice(&scale.to_le_bytes());
        out.extend(q.codes[b * 32..(b + 1) * 32].iter().map(|&c| (c as i16 - 128) as i8 as u8));
    }
    out
}

fn q4_blocks(q: &QuantTensor, n: usize, with_min: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(n / 32 * if with_min { 20 } else { 18 });
    for b in 0..n / 32 {
        let g = q.group_of(b * 32);
        let d = q.scales[g];
        out.extend_from_slice(&d.to_le_bytes());
        if with_min {
            let m = half::f16::from_f32(-d.to_f32() * q.zero(g));
            out.extend_from_slice(&m.to_le_bytes());
        }
        for j in 0..16 {
            let lo = q.code(b * 32 + j);
            let hi = q.code(b * 32 + j + 16);
            out.push(lo | (hi << 4));
        }
    }
    out
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
}

/// Choices the GGUF writer leaves to the recipe.
#[derive(Debug, Clone, Copy, Default)]
pub struct GgufOptions {
    /// Write float matrices (2-D F32 tensors) as F16, halving their size; norms stay F32 as llama.cpp
    /// keeps them.
    pub f16_matrices: bool,
}

pub fn write_gguf(model: &Model, path: &Path, name: &str) -> Result<GgufExportNotes> {
    write_gguf_with(model, path, name, GgufOptions::default())
}

pub fn write_gguf_with(model: &Model, path: &Path, name: &str, options: GgufOptions) -> Result<GgufExportNotes> {
    // Checked before anything is written, so a refused export leaves no partial file.
    crate::gguf_family::check(&model.config)?;
    let vocab = model.tokenizer.gguf_vocab().ok_or_else(|| ExportError::Unsupported {
        what: "GGUF export of a model whose tokenizer came from tokenizer.json (not yet supported)".into(),
    })?;
    let c = &model.config;
    let uniform = crate::uniform::uniform_shapes(model)?;
    let u32v = |x: usize| MetaValue::U32(x as u32);
    let arch = c.features.family.traits().gguf_arch;
    let k = |key: &str| format!("{arch}.{key}");
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::Str(arch.into()))
        .meta("general.name", MetaValue::Str(name.to_owned()))
        .meta(&k("context_length"), u32v(c.context_length))
        .meta(&k("embedding_length"), u32v(c.n_embd))
        .meta(&k("block_count"), u32v(c.n_layers))
        .meta(&k("feed_forward_length"), u32v(uniform.shape.n_ff))
        .meta(&k("attention.head_count"), u32v(uniform.shape.n_heads))
        .meta(&k("attention.head_count_kv"), u32v(uniform.shape.n_kv_heads))
        .meta(&k("rope.freq_base"), MetaValue::F32(c.rope_base))
        .meta(&k("rope.dimension_count"), u32v(c.head_dim))
        .meta(&k("attention.layer_norm_rms_epsilon"), MetaValue::F32(c.rms_eps))
        .meta(&k("vocab_size"), u32v(c.vocab_size))
        .meta("tokenizer.ggml.model", MetaValue::Str(vocab.model.clone()))
        .meta("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::Str(vocab.tokens.clone())))
        .meta("tokenizer.ggml.merges", MetaValue::Array(MetaArray::Str(vocab.merges.clone())));
    if let Some(pre) = &vocab.pre {
        w.meta("tokenizer.ggml.pre", MetaValue::Str(pre.clone()));
    }
    if let Some(t) = &vocab.token_types {
        w.meta("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(t.clone())));
    }
    if let Some(s) = &vocab.scores {
        w.meta("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(s.clone())));
    }
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", vocab.bos_id),
        ("tokenizer.ggml.eos_token_id", vocab.eos_id),
        ("tokenizer.ggml.unknown_token_id", vocab.unk_id),
        ("tokenizer.ggml.padding_token_id", vocab.pad_id),
    ] {
        if let Some(id) = id {
            w.meta(key, MetaValue::U32(id));
        }
    }
    for (key, flag) in [
        ("tokenizer.ggml.add_bos_token", vocab.add_bos),
        ("tokenizer.ggml.add_eos_token", vocab.add_eos),
        ("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix),
    ] {
        if let Some(b) = flag {
            w.meta(key, MetaValue::Bool(b));
        }
    }

    for (key, value) in crate::gguf_family::extra_metadata(c) {
        w.meta(&key, value);
    }
    let mut notes = GgufExportNotes::default();
    let f = &c.features;
    if !uniform.padded.is_empty() && (f.qkv_bias || f.o_bias) {
        return Err(ExportError::Unsupported { what: "GGUF export: blocks of different widths with attention biases cannot be padded yet".into() });
    }
    if !uniform.padded.is_empty() {
        notes.fallbacks.push(format!(
            "blocks differ in width; {} tensors were zero-padded to n_ff {}, {} heads / {} KV heads (exact, written as floats) because llama.cpp's llama architecture needs one size for every block",
            uniform.padded.len(),
            uniform.shape.n_ff,
            uniform.shape.n_heads,
            uniform.shape.n_kv_heads
        ));
    }
    let mut counts: std::collections::BTreeMap<GgmlType, usize> = std::collections::BTreeMap::new();
    let mut tensors = Vec::with_capacity(model.tensors.len());
    for (tname, t) in &model.tensors {
        let t = uniform.padded.get(tname).unwrap_or(t);
        let n = t.n_elems();
        let (dtype, bytes) = match &t.data {
            TensorData::F32(v) if options.f16_matrices && t.shape.len() == 2 => (GgmlType::F16, f16_bytes(v).into()),
            TensorData::F32(v) => (GgmlType::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()),
            TensorData::Blocks { dtype, bytes } => (*dtype, bytes.clone()),
            TensorData::Quantized(q) => match q.format.ggml_type(t.row_len()) {
                Some(GgmlType::Q8_0) => (GgmlType::Q8_0, q8_0(q).into()),
                Some(GgmlType::Q4_0) => (GgmlType::Q4_0, q4_blocks(q, n, false).into()),
                Some(GgmlType::Q4_1) => (GgmlType::Q4_1, q4_blocks(q, n, true).into()),
                _ => {
                    notes.fallbacks.push(format!("{tname}: {} has no GGUF block type; written as F16", t.format_name()));
                    (GgmlType::F16, f16_bytes(&q.dequantize(n)).into())
                }
            },
        };
        if t.shape.len() == 2 {
            *counts.entry(dtype).or_default() += 1;
        }
        notes.weight_bytes += bytes.len() as u64;
        tensors.push(GgufTensor { name: tname.clone(), shape: t.shape.clone(), dtype, bytes });
    }
    for t in crate::gguf_family::fuse(c, tensors)? {
        w.tensor(t);
    }
    // general.file_type: llama.cpp's LlamaFileType of the most common matrix type.
    let main = counts.iter().max_by_key(|(_, n)| **n).map(|(t, _)| *t);
    let file_type = main.map_or(0, GgmlType::llama_file_type);
    w.meta("general.file_type", MetaValue::U32(file_type));
    w.meta("general.quantization_version", MetaValue::U32(2));
    w.write(path)?;
    Ok(notes)
}

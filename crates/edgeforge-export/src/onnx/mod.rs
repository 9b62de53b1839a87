//! Model IR → an ONNX decoder folder for onnxruntime (phones): `model.onnx` (IR 10, opsets `""` 21 and
//! `com.microsoft` 1), `model.onnx.data` when the weights are too large for one protobuf, `genai_config.json`
//! (onnxruntime-genai) when every block has the same head counts, and the tokenizer files.
//!
//! I/O follows onnxruntime-genai's names: `input_ids` and `attention_mask` (int64), `past_key_values.{i}.key`
//! / `.value` (f32 `[batch, n_kv_heads_i, past_seq, head_dim]`) in; `logits` (f32 `[batch, seq, vocab]`) and
//! `present.{i}.key` / `.value` (past + new positions) out. 4- and 8-bit weights with power-of-two groups
//! become `com.microsoft.MatMulNBits` (a quantized embedding table `com.microsoft.GatherBlockQuantized`); everything
//! else is f32.

mod builder;
pub mod decoder;
mod external;
pub mod proto;
pub mod weights;

use std::path::{Path, PathBuf};

use edgeforge_core::arch::block_shape;
use edgeforge_core::Model;
use prost::Message;
use serde_json::json;

use crate::atomic::StagedDir;
use crate::error::{ExportError, Result};
use proto::onnx as pb;

pub const MODEL_FILE: &str = "model.onnx";
pub const DATA_FILE: &str = "model.onnx.data";
pub const GENAI_CONFIG_FILE: &str = "genai_config.json";

/// Above this many bytes of weights the model goes to external data: protobuf caps a message at 2 GiB.
pub const EXTERNAL_DATA_AUTO_BYTES: u64 = 1_800_000_000;

/// Longest sequence (past + new) the RoPE cos/sin tables cover: 64 MiB of tables at head_dim 64.
pub const MAX_ROPE_POSITIONS: usize = 1 << 18;

/// Where initializer bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalData {
    /// Inside `model.onnx` unless the weights exceed `EXTERNAL_DATA_AUTO_BYTES`.
    #[default]
    Auto,
    /// Always in `model.onnx.data` (tensors of 1 KiB and more).
    Always,
}

#[derive(Debug, Clone, Default)]
pub struct OnnxOptions {
    /// Positions the RoPE tables cover (the longest past + new sequence); default the model's context length.
    pub max_positions: Option<usize>,
    pub external_data: ExternalData,
}

/// What was written, for reports.
#[derive(Debug, Clone, Default)]
pub struct OnnxSummary {
    pub dir: PathBuf,
    /// Bytes of `model.onnx` plus `model.onnx.data`.
    pub bytes: u64,
    /// Bytes of initializer data (weights, scales, zero points, RoPE tables): `bytes` without the graph.
    pub weight_bytes: u64,
    pub external_data: bool,
    /// Linear weights written as `com.microsoft.MatMulNBits`, with bits and block size.
    pub matmul_nbits: Vec<String>,
    /// Embedding tables gathered from their codes by `com.microsoft.GatherBlockQuantized`.
    pub gather_nbits: Vec<String>,
    /// Weights written as f32 initializers (norm vectors not listed).
    pub float: Vec<String>,
    /// Quantized tensors that went in as floats, and why; other caveats.
    pub notes: Vec<String>,
    /// Whether `genai_config.json` was written (needs one head count for all blocks).
    pub genai_config: bool,
}

fn model_proto(graph: pb::GraphProto) -> pb::ModelProto {
    let opset = |domain: &str, version: i64| pb::OperatorSetIdProto { domain: Some(domain.to_owned()), version: Some(version) };
    pb::ModelProto {
        ir_version: Some(10),
        opset_import: vec![opset("", 21), opset("com.microsoft", 1)],
        producer_name: Some("edgeforge".to_owned()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        graph: Some(graph),
        ..Default::default()
    }
}

fn genai_config(model: &Model, max_positions: usize) -> Result<Option<serde_json::Value>> {
    let c = &model.config;
    let shapes = (0..c.n_layers).map(|l| block_shape(model, l)).collect::<edgeforge_core::Result<Vec<_>>>()?;
    let Some(first) = shapes.first() else { return Ok(None) };
    if shapes.iter().any(|s| s.n_heads != first.n_heads || s.n_kv_heads != first.n_kv_heads) {
        return Ok(None);
    }
    let eos = model.tokenizer.eos_id();
    Ok(Some(json!({
        "model": {
            "bos_token_id": model.tokenizer.bos_id(),
            "context_length": max_positions,
            "decoder": {
                "session_options": { "log_id": "onnxruntime-genai", "provider_options": [] },
                "filename": MODEL_FILE,
                "head_size": c.head_dim,
                "hidden_size": c.n_embd,
                "inputs": {
                    "input_ids": decoder::INPUT_IDS,
                    "attention_mask": decoder::ATTENTION_MASK,
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value"
                },
                "outputs": {
                    "logits": decoder::LOGITS,
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"
                },
                "num_attention_heads": first.n_heads,
                "num_hidden_layers": c.n_layers,
                "num_key_value_heads": first.n_kv_heads
            },
            "eos_token_id": eos,
            "pad_token_id": eos,
            "type": "llama",
            "vocab_size": c.vocab_size
        },
        "search": {
            "do_sample": false,
            "max_length": max_positions,
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            // present = concat(past, new): the graph does not write into a preallocated shared buffer.
            "past_present_share_buffer": false,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0
        }
    })))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ExportError::io(path, e))
}

/// Write `model` as an ONNX decoder folder at `dir` (replaced if it exists; written to a staging folder
/// and renamed, so a failed export leaves nothing half-written).
pub fn write_onnx(model: &Model, dir: &Path, options: &OnnxOptions) -> Result<OnnxSummary> {
    crate::llama_blocks_only(model, "ONNX")?;
    // The context length comes from the model file: bound it before sizing the RoPE tables by it.
    let mut clamp_note = None;
    let max_positions = match options.max_positions {
        Some(p) if p > MAX_ROPE_POSITIONS => {
            return Err(ExportError::Unsupported { what: format!("ONNX export: {p} positions requested, at most {MAX_ROPE_POSITIONS} supported") });
        }
        Some(p) => p.max(1),
        None if model.config.context_length > MAX_ROPE_POSITIONS => {
            clamp_note = Some(format!("RoPE tables cover {MAX_ROPE_POSITIONS} positions, not the model's context length {}", model.config.context_length));
            MAX_ROPE_POSITIONS
        }
        None => model.config.context_length.max(1),
    };
    let (graph, mut report) = decoder::decoder_graph(model, max_positions)?;
    report.notes.extend(clamp_note);
    let mut proto = model_proto(graph);
    let staged = StagedDir::new(dir, true)?;

    let weight_bytes = external::initializer_bytes(&proto);
    let external = options.external_data == ExternalData::Always || weight_bytes > EXTERNAL_DATA_AUTO_BYTES;
    let mut bytes = 0u64;
    if external {
        bytes += external::move_to_external(&mut proto, &staged.path().join(DATA_FILE), DATA_FILE)?;
    }
    let encoded = proto.encode_to_vec();
    bytes += encoded.len() as u64;
    write_file(&staged.path().join(MODEL_FILE), &encoded)?;
    drop(encoded);

    let genai = genai_config(model, max_positions)?;
    if let Some(cfg) = &genai {
        let text = serde_json::to_string_pretty(cfg).unwrap_or_default();
        write_file(&staged.path().join(GENAI_CONFIG_FILE), format!("{text}\n").as_bytes())?;
    }
    model
        .tokenizer
        .write_hf_files(staged.path())
        .map_err(|source| ExportError::Tokenizer { path: staged.path().to_path_buf(), source })?;
    let dir = staged.commit()?;
    let mut notes = report.notes;
    if genai.is_none() {
        notes.push("genai_config.json not written: blocks have different head counts (onnxruntime-genai needs one); run the graph with a plain InferenceSession loop".to_owned());
    }
    Ok(OnnxSummary { dir, bytes, weight_bytes, external_data: external, matmul_nbits: report.nbits, gather_nbits: report.gather_nbits, float: report.float, notes, genai_config: genai.is_some() })
}

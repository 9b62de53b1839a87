//! Model state after a pass, on disk: `EFCK`, a version, a JSON header (key, config, tensor table, the
//! pass reports so far), then the tensor bytes. Written to a temporary file and renamed, so a crash leaves
//! the previous checkpoint or the new one, never half of one. The key hashes the input model and every
//! pass's options up to this one: a checkpoint is reused only for exactly the same prefix of work.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use edgeforge_core::quantized::{QuantFormat, QuantTensor};
use edgeforge_core::{GgmlType, Model, ModelConfig, Tensor, TensorData};
use edgeforge_report::PassReport;

use crate::RecipeError;

const MAGIC: &[u8; 4] = b"EFCK";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    key: String,
    pass_index: usize,
    config: ModelConfig,
    tensors: Vec<Entry>,
    reports: Vec<PassReport>,
    /// `Model::block_origin` (absent in checkpoints written before depth pruning existed).
    #[serde(default)]
    block_origin: Vec<usize>,
    /// sha256 of the tensor bytes after the header (absent in checkpoints written before it existed): a
    /// flipped bit in the data is refused instead of resumed from.
    #[serde(default)]
    data_sha256: Option<String>,
    /// The tokenizer's GGUF description (a pass may change it: `prune-vocab`); absent: the input's (checkpoints
    /// written before it existed, or models loaded from tokenizer.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vocab: Option<edgeforge_tokenizer::GgufVocab>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    /// "F32", a ggml type name, or "quantized".
    kind: String,
    quant: Option<QuantFormat>,
    offset: u64,
    len: u64,
    scales: u64,
    zeros: u64,
}

pub fn key(input_sha256: &str, passes: &[serde_json::Value], seed: u64) -> String {
    let text = serde_json::json!({ "input": input_sha256, "passes": passes, "seed": seed }).to_string();
    edgeforge_core::hash::sha256_hex(&[text.as_bytes()])
}

pub fn path_for(dir: &Path, index: usize, pass: &str) -> PathBuf {
    dir.join(format!("{index:03}-{pass}.ckpt"))
}

fn err(path: &Path, why: impl Into<String>) -> RecipeError {
    RecipeError::Checkpoint { path: path.to_path_buf(), why: why.into() }
}

fn corrupt(path: &Path, why: impl Into<String>) -> RecipeError {
    RecipeError::CheckpointCorrupt { path: path.to_path_buf(), why: why.into() }
}

/// Each tensor's bytes in checkpoint order, piece by piece, given to `f` (a mapped tensor's pages are released
/// after it is given, so a model larger than memory is written one tensor at a time).
fn for_each_piece(t: &edgeforge_core::Tensor, f: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
    match &t.data {
        TensorData::F32(v) => f(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()),
        TensorData::Blocks { bytes, .. } => {
            f(bytes)?;
            bytes.release();
            Ok(())
        }
        TensorData::Quantized(q) => {
            f(&q.scales.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>())?;
            f(&q.zeros)?;
            f(&q.codes)
        }
    }
}

fn entry_kind(t: &edgeforge_core::Tensor) -> (String, Option<QuantFormat>, u64, u64) {
    match &t.data {
        TensorData::F32(_) => ("F32".to_owned(), None, 0, 0),
        TensorData::Blocks { dtype, .. } => (dtype.name().to_owned(), None, 0, 0),
        TensorData::Quantized(q) => ("quantized".to_owned(), Some(q.format), q.scales.len() as u64, q.zeros.len() as u64),
    }
}

/// The tokenizer description to store: JSON cannot hold a non-finite score, so a vocabulary with one is left
/// out (resume then takes the input's, which is right for every pass but `prune-vocab`, and that pass is
/// for byte-level BPE vocabularies, which have no scores).
fn stored_vocab(model: &Model) -> Option<edgeforge_tokenizer::GgufVocab> {
    model.tokenizer.gguf_vocab().filter(|v| v.scores.as_ref().is_none_or(|s| s.iter().all(|x| x.is_finite()))).cloned()
}

pub fn write(path: &Path, key: &str, pass_index: usize, model: &Model, reports: &[PassReport]) -> Result<(), RecipeError> {
    use sha2::Digest;
    // First pass: offsets and the data's sha256 (the header records both); second pass: the bytes.
    let mut sha = sha2::Sha256::new();
    let mut len = 0u64;
    let mut entries = Vec::with_capacity(model.tensors.len());
    for (name, t) in &model.tensors {
        let offset = len;
        for_each_piece(t, &mut |piece| {
            sha.update(piece);
            len += piece.len() as u64;
            Ok(())
        })
        .map_err(|e| err(path, e.to_string()))?;
        let (kind, quant, scales, zeros) = entry_kind(t);
        entries.push(Entry { name: name.clone(), shape: t.shape.clone(), kind, quant, offset, len: len - offset, scales, zeros });
    }
    let data_sha256 = sha.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>();
    let header = Header { key: key.to_owned(), pass_index, config: model.config.clone(), tensors: entries, reports: reports.to_vec(), block_origin: model.block_origin.clone(), data_sha256: Some(data_sha256), vocab: stored_vocab(model) };
    let header = serde_json::to_vec(&header).map_err(|e| err(path, e.to_string()))?;
    // A failed write (a full disk) removes the temporary file: only whole checkpoints are ever on disk.
    edgeforge_export::atomic::write_file(path, |f| {
        f.write_all(MAGIC)?;
        f.write_all(&VERSION.to_le_bytes())?;
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
        for t in model.tensors.values() {
            for_each_piece(t, &mut |piece| f.write_all(piece))?;
        }
        Ok(())
    })
    .map_err(|e| err(path, e.to_string()))
}

/// Load the checkpoint at `path` into `model` (whose tokenizer and source come from the input) if its key
/// matches; returns the pass reports recorded so far.
pub fn read_into(path: &Path, key: &str, model: &mut Model) -> Result<Option<Vec<PassReport>>, RecipeError> {
    // The fixed header first: a file that is not a checkpoint (or a sparse 2 GB one) is refused unread.
    let mut prefix = Vec::with_capacity(16);
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 16), &mut prefix))
        .map_err(|e| err(path, e.to_string()))?;
    if prefix.len() < 16 || &prefix[..4] != MAGIC {
        return Err(corrupt(path, "not an edgeforge checkpoint"));
    }
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    if bytes.len() < 16 || bytes[..16] != prefix[..] {
        return Err(corrupt(path, "changed while being read"));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if version != VERSION {
        return Err(corrupt(path, format!("checkpoint version {version}, expected {VERSION}")));
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| corrupt(path, "short header"))?);
    let hend = 16u64.checked_add(hlen).filter(|&e| e <= bytes.len() as u64).ok_or_else(|| corrupt(path, "header runs past the end"))? as usize;
    let header: Header = serde_json::from_slice(&bytes[16..hend]).map_err(|e| corrupt(path, format!("header is not valid: {e}")))?;
    if header.key != key {
        return Ok(None);
    }
    let data = &bytes[hend..];
    if let Some(want) = &header.data_sha256 {
        if edgeforge_core::hash::sha256_hex(&[data]) != *want {
            return Err(corrupt(path, "tensor data does not match its sha256 (truncated or corrupted)"));
        }
    }
    let mut tensors = std::collections::BTreeMap::new();
    for e in header.tensors {
        let end = e.offset.checked_add(e.len).filter(|&x| x <= data.len() as u64).ok_or_else(|| corrupt(path, format!("tensor {} runs past the end", e.name)))?;
        let raw = &data[e.offset as usize..end as usize];
        let n = e
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n.checked_mul(4).is_some())
            .ok_or_else(|| corrupt(path, format!("tensor {} has an overflowing shape {:?}", e.name, e.shape)))?;
        let tensor_data = match (e.kind.as_str(), e.quant) {
            ("F32", _) if raw.len() != n * 4 => {
                return Err(corrupt(path, format!("tensor {} holds {} bytes, its shape needs {}", e.name, raw.len(), n * 4)))
            }
            ("F32", _) => TensorData::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
            ("quantized", Some(format)) => {
                let s_len = usize::try_from(e.scales).ok().and_then(|s| s.checked_mul(2)).unwrap_or(usize::MAX);
                let z_len = usize::try_from(e.zeros).unwrap_or(usize::MAX);
                if s_len.checked_add(z_len).is_none_or(|sz| raw.len() < sz) {
                    return Err(corrupt(path, format!("tensor {} is truncated", e.name)));
                }
                let q = QuantTensor {
                    format,
                    row_len: e.shape.last().copied().unwrap_or(0),
                    scales: raw[..s_len].chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect(),
                    zeros: raw[s_len..s_len + z_len].to_vec(),
                    codes: raw[s_len + z_len..].to_vec(),
                };
                if !q.is_consistent(n) {
                    return Err(corrupt(path, format!("tensor {} has inconsistent quantized data", e.name)));
                }
                TensorData::Quantized(q)
            }
            (name, _) => {
                let dtype = GgmlType::SUPPORTED.into_iter().find(|t| t.name() == name).ok_or_else(|| corrupt(path, format!("unknown tensor kind {name}")))?;
                if dtype.bytes_for(n as u64) != Some(raw.len() as u64) {
                    return Err(corrupt(path, format!("tensor {} has the wrong length", e.name)));
                }
                TensorData::Blocks { dtype, bytes: raw.to_vec().into() }
            }
        };
        tensors.insert(e.name, Tensor { shape: e.shape, data: tensor_data });
    }
    model.config = header.config;
    model.tensors = tensors;
    model.block_origin = header.block_origin;
    if let Some(v) = header.vocab {
        model.tokenizer = edgeforge_tokenizer::Tokenizer::from_gguf_vocab(&v).map_err(|e| corrupt(path, format!("its tokenizer does not build: {e}")))?;
    }
    Ok(Some(header.reports))
}

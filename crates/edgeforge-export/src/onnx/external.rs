//! ONNX external data: initializer bytes moved from the protobuf (capped at 2 GiB) into one side file,
//! each tensor pointing at it with `location` / `offset` / `length` entries (ONNX `IR.md`, "External
//! Tensor Data"). Offsets are page-aligned so onnxruntime can memory-map the file.

use std::io::Write;
use std::path::Path;

use super::proto::onnx as pb;
use crate::error::{ExportError, Result};

/// Tensors smaller than this stay inline (shape constants, scalars).
const MIN_EXTERNAL_BYTES: usize = 1024;
const ALIGN_BYTES: u64 = 4096;

fn initializers(proto: &mut pb::ModelProto) -> &mut [pb::TensorProto] {
    proto.graph.as_mut().map_or(&mut [], |g| g.initializer.as_mut_slice())
}

pub fn initializer_bytes(proto: &pb::ModelProto) -> u64 {
    proto.graph.as_ref().map_or(0, |g| g.initializer.iter().map(|t| t.raw_data.as_ref().map_or(0, |d| d.len() as u64)).sum())
}

/// Move every initializer of at least `MIN_EXTERNAL_BYTES` into `path` (named `location` in the model,
/// relative to it); returns the bytes written.
pub fn move_to_external(proto: &mut pb::ModelProto, path: &Path, location: &str) -> Result<u64> {
    let file = std::fs::File::create(path).map_err(|e| ExportError::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let mut offset = 0u64;
    let entry = |k: &str, v: String| pb::StringStringEntryProto { key: Some(k.to_owned()), value: Some(v) };
    for t in initializers(proto) {
        let Some(raw) = t.raw_data.take_if(|d| d.len() >= MIN_EXTERNAL_BYTES) else { continue };
        let padding = offset.next_multiple_of(ALIGN_BYTES) - offset;
        out.write_all(&vec![0u8; padding as usize]).map_err(|e| ExportError::io(path, e))?;
        offset += padding;
        out.write_all(&raw).map_err(|e| ExportError::io(path, e))?;
        t.external_data = vec![entry("location", location.to_owned()), entry("offset", offset.to_string()), entry("length", raw.len().to_string())];
        t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        offset += raw.len() as u64;
    }
    out.flush().map_err(|e| ExportError::io(path, e))?;
    Ok(offset)
}

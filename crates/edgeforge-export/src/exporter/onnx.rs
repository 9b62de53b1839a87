//! ONNX for onnxruntime (phones): `{stem}-onnx`, RoPE tables (and genai's max_length) covering the target's
//! context.

use edgeforge_core::Model;
use edgeforge_targets::ArtifactFormat;

use super::{Exporter, TargetRequest, Written};
use crate::error::Result;
use crate::onnx::{write_onnx, OnnxOptions};

pub struct Onnx;

impl Exporter for Onnx {
    fn format(&self) -> ArtifactFormat {
        ArtifactFormat::Onnx
    }

    fn write(&self, model: &Model, req: &TargetRequest<'_>) -> Result<Written> {
        let path = req.out_dir.join(format!("{}-onnx", req.stem));
        let options = OnnxOptions { max_positions: Some(req.context_tokens as usize), ..Default::default() };
        let summary = write_onnx(model, &path, &options)?;
        let pass_notes = summary.notes.iter().map(|n| format!("ONNX: {n}")).collect();
        Ok(Written { path, weight_bytes: summary.weight_bytes, pass_notes, ..Written::default() })
    }
}

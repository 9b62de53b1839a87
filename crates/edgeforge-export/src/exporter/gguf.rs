//! llama.cpp GGUF: `{stem}.gguf`.

use edgeforge_core::{Activation, Model};
use edgeforge_targets::ArtifactFormat;

use super::{Exporter, FloatChoice, TargetRequest, Written};
use crate::error::Result;
use crate::gguf_model::{write_gguf_with, GgufOptions};

pub struct Gguf;

impl Exporter for Gguf {
    fn format(&self) -> ArtifactFormat {
        ArtifactFormat::Gguf
    }

    fn refusal(&self, activation: Activation) -> Option<&'static str> {
        (activation != Activation::Silu).then_some("llama.cpp's llama architecture always applies SiLU")
    }

    fn write(&self, model: &Model, req: &TargetRequest<'_>) -> Result<Written> {
        let path = req.out_dir.join(format!("{}.gguf", req.stem));
        let notes = write_gguf_with(model, &path, req.stem, GgufOptions { f16_matrices: req.float == Some(FloatChoice::F16) })?;
        Ok(Written { path, weight_bytes: notes.weight_bytes, pass_notes: notes.fallbacks, ..Written::default() })
    }
}

//! A Hugging Face folder with float weights: `{stem}-hf` (f16 unless the target asks for f32).

use edgeforge_core::Model;
use edgeforge_targets::ArtifactFormat;

use super::{Exporter, FloatChoice, TargetRequest, Written};
use crate::error::Result;
use crate::hf::{write_hf_dir, FloatType};

pub struct Safetensors;

impl Exporter for Safetensors {
    fn format(&self) -> ArtifactFormat {
        ArtifactFormat::Safetensors
    }

    fn write(&self, model: &Model, req: &TargetRequest<'_>) -> Result<Written> {
        let path = req.out_dir.join(format!("{}-hf", req.stem));
        let dtype = if req.float == Some(FloatChoice::F32) { FloatType::F32 } else { FloatType::F16 };
        let summary = write_hf_dir(model, &path, dtype, true)?;
        Ok(Written { path, weight_bytes: summary.weight_bytes, ..Written::default() })
    }
}

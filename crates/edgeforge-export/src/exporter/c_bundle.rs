//! C99 sources for microcontrollers: `{stem}-c` (`{stem}-c-{profile}` when several targets are C bundles), its arena sized for the target's context.

use edgeforge_core::Model;
use edgeforge_targets::ArtifactFormat;

use super::{Exporter, TargetRequest, Written};
use crate::c_bundle::write_c_bundle;
use crate::error::Result;

pub struct CBundle;

impl Exporter for CBundle {
    fn format(&self) -> ArtifactFormat {
        ArtifactFormat::CBundle
    }

    fn write(&self, model: &Model, req: &TargetRequest<'_>) -> Result<Written> {
        let path = req.artifact_path("c");
        let summary = write_c_bundle(model, &path, req.context_tokens as usize)?;
        let pass_notes = summary.float_fallbacks.iter().map(|t| format!("C bundle: {t} written as floats (no integer layout for its format)")).collect();
        Ok(Written { path, weight_bytes: summary.weight_bytes, pass_notes, ..Written::default() })
    }
}

//! edgeforge-export: writers from the model IR to files other tools load. Writers never run a model.

pub mod atomic;
pub mod c_bundle;
pub mod error;
pub mod exporter;
pub mod gguf;
mod gguf_family;
pub mod gguf_model;
pub mod hf;
pub mod nir;
pub mod onnx;
pub mod uniform;

pub use error::{ExportError, Result};

/// Refuse a writer that computes only llama blocks for a model of another family (or a llama model using
/// features those writers do not implement: biases, RoPE scaling, sliding window).
pub(crate) fn llama_blocks_only(model: &edgeforge_core::Model, format: &'static str) -> Result<()> {
    let f = &model.config.features;
    let plain = edgeforge_core::BlockFeatures { family: f.family, ..edgeforge_core::BlockFeatures::default() };
    if f.family == edgeforge_core::Family::Llama && *f == plain {
        Ok(())
    } else {
        Err(ExportError::FamilyUnsupported { format, family: f.family })
    }
}

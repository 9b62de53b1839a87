//! edgeforge-export: writers from the model IR to files other tools load. Writers never run a model.

pub mod atomic;
pub mod c_bundle;
pub mod error;
pub mod exporter;
pub mod gguf;
pub mod gguf_model;
pub mod hf;
pub mod nir;
pub mod onnx;
pub mod uniform;

pub use error::{ExportError, Result};

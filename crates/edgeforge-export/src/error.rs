use std::path::PathBuf;

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: already exists; pass --force to replace it or choose another --out", path.display())]
    Exists { path: PathBuf },
    #[error("{0}")]
    Model(#[from] edgeforge_core::Error),
    #[error("{}: tokenizer: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: edgeforge_tokenizer::TokenizerError,
    },
    #[error("{what}")]
    Unsupported { what: String },
    /// The export does not fit the target: each shortfall with numbers, and the recipe changes that fix it.
    #[error("does not fit {target}: {}; fix: {}", shortfalls.join("; "), fixes.join("; or "))]
    DoesNotFit { target: String, shortfalls: Vec<String>, fixes: Vec<String> },
    #[error("{}: HDF5: {reason}", path.display())]
    Hdf5 { path: PathBuf, reason: String },
    #[error("{}: safetensors: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },
    /// GGUF's llama architecture has no key for the MLP activation: llama.cpp always applies SiLU, so a
    /// model with another gate activation would load and silently compute the wrong function.
    #[error("cannot write GGUF: the model's MLP gate activation is {activation}, but llama.cpp's llama architecture always applies SiLU (GGUF has no key to say otherwise); fix: export this model as onnx, c-bundle, safetensors or nir, or drop the activation-swap pass")]
    GgufActivation { activation: edgeforge_core::Activation },
    /// The ONNX, C and NIR writers compute a llama block; other families' features (biases, q/k norms,
    /// post norms, GELU, sliding windows, soft-caps, NEOX RoPE) are not in them yet.
    #[error("cannot write {format}: this writer implements llama-family blocks only, and the model is {family}; fix: export it as gguf or safetensors (both carry every family)")]
    FamilyUnsupported { format: &'static str, family: edgeforge_core::Family },
}

impl ExportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ExportError::Io { path: path.into(), source }
    }
}

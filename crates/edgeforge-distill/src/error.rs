//! Errors of distillation, turned into `PassError` at the pass boundary.

use std::path::PathBuf;

use edgeforge_core::pass::PassError;

#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    #[error("{0}")]
    Model(#[from] edgeforge_core::Error),
    #[error("tensor `{tensor}`: {message}")]
    Shape { tensor: String, message: String },
    #[error("option `{field}`: {message}")]
    Option { field: &'static str, message: String },
    #[error("distill needs {what}")]
    Missing { what: &'static str },
    #[error("backend `{backend}` is not compiled in: rebuild with `--features {feature}`")]
    Backend { backend: &'static str, feature: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("tensor data: {0}")]
    Data(String),
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged { step: u64, loss: f64 },
    #[error("cancelled")]
    Cancelled,
    #[error("distillation's burn model cannot compute {feature}, which this {family} model has (fix: {fix})")]
    Unsupported { family: edgeforge_core::Family, feature: String, fix: &'static str },
}

impl DistillError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        DistillError::Io { path: path.to_owned(), source }
    }
}

impl From<DistillError> for PassError {
    fn from(e: DistillError) -> Self {
        match e {
            DistillError::Cancelled => PassError::Cancelled,
            DistillError::Model(m) => PassError::Model(m),
            DistillError::Shape { tensor, message } => PassError::Tensor { tensor, message },
            other => PassError::Tensor { tensor: "(distill)".into(), message: other.to_string() },
        }
    }
}

pub type Result<T, E = DistillError> = std::result::Result<T, E>;

//! Errors of profile loading, manifests and signatures.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown profile `{name}` (shipped: {}; or give a path to a profile .yaml)", shipped.join(", "))]
    UnknownProfile { name: String, shipped: Vec<String> },
    #[error("{origin}: {message}")]
    Profile { origin: String, message: String },
    #[error("{}: {message}", path.display())]
    Manifest { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Key { path: PathBuf, message: String },
}

impl TargetError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TargetError::Io { path: path.to_owned(), source }
    }
}

pub type Result<T, E = TargetError> = std::result::Result<T, E>;

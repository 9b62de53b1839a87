//! What can stop the server from starting, by kind: the CLI maps `Refused` and `BadInput` to exit 2.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The export folder does not match its manifest (or signature): nothing was loaded.
    #[error("{dir}: refusing to serve: {problem}")]
    Refused { dir: PathBuf, problem: String },
    /// The folder, the manifest, the key, the model or an option is not usable.
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Target(#[from] edgeforge_targets::TargetError),
    #[error(transparent)]
    Model(#[from] edgeforge_core::Error),
    #[error(transparent)]
    Runtime(#[from] edgeforge_runtime::RuntimeError),
    /// Binding the listening address.
    #[error("--listen {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    /// The sandbox could not be applied (the kernel refused a filter that it supports).
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// Threads, the async runtime, serving I/O.
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

impl ServeError {
    /// Whether the user can fix it (a mismatch, a bad folder, key, model or option): exit 2 in the CLI.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, ServeError::Refused { .. } | ServeError::BadInput(_) | ServeError::Target(_) | ServeError::Model(_) | ServeError::Listen { .. })
    }
}

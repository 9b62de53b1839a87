//! edgeforge-recipe: YAML recipes (schema, `file:line:col` errors, validation), the pass registry, and the
//! runner that executes a recipe with checkpoints after every pass.

// RecipeError carries the typed errors of every crate below; it is returned on cold paths only.
#![allow(clippy::result_large_err)]

pub mod activations;
pub mod checkpoint;
pub mod diagnostic;
pub mod measured;
pub mod models;
pub mod parse;
pub mod plan;
pub mod registry;
pub mod runner;
pub mod schema;
pub mod targets;
pub mod validate;

use std::path::PathBuf;

pub use diagnostic::Diagnostic;
pub use parse::{parse_recipe, RecipeFile};

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Problems in the recipe itself, each with its place.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    #[error("model `{name}` could not be fetched: {why}")]
    Fetch { name: String, why: String },
    #[error("{0}")]
    Model(#[from] edgeforge_core::Error),
    #[error("{0}")]
    Eval(#[from] edgeforge_eval::EvalError),
    #[error("{0}")]
    Export(#[from] edgeforge_export::ExportError),
    #[error("{0}")]
    Runtime(#[from] edgeforge_runtime::RuntimeError),
    #[error("pass {index} ({name}): {source}")]
    Pass {
        index: usize,
        name: String,
        #[source]
        source: edgeforge_core::pass::PassError,
    },
    #[error("checkpoint {}: {why}", path.display())]
    Checkpoint { path: PathBuf, why: String },
    /// A checkpoint on disk that cannot be what we wrote (truncated, bit-flipped, another version): bad
    /// input, unlike a checkpoint that cannot be written.
    #[error("checkpoint {}: {why}; delete it (or run without --resume) to redo that pass", path.display())]
    CheckpointCorrupt { path: PathBuf, why: String },
    #[error("interrupted; rerun with --resume to continue from the last checkpoint")]
    Interrupted,
    #[error("target: {0}")]
    Target(String),
}

use std::path::PathBuf;

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the text file is empty; pass a file with text to score", path.display())]
    EmptyText { path: PathBuf },
    #[error("{}: not UTF-8 text (first bad byte at offset {offset})", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{}: a NUL byte at offset {offset}; this looks like a binary file, not text", path.display())]
    NulByte { path: PathBuf, offset: usize },
    #[error("{}: {bytes} bytes is more text than edgeforge reads ({max_bytes} at most); pass a shorter text", path.display())]
    TextTooLarge { path: PathBuf, bytes: u64, max_bytes: u64 },
    #[error("`{spec}` is neither an existing file nor a known dataset (known: {})", known.join(", "))]
    UnknownText { spec: String, known: Vec<String> },
    /// A recipe's text that is neither a file relative to the recipe's folder nor a known dataset.
    #[error("`{spec}` is neither a file (looked for {}; paths in a recipe are relative to its folder) nor a known dataset (known: {})", tried.display(), known.join(", "))]
    UnknownRecipeText { spec: String, tried: PathBuf, known: Vec<String> },
    #[error("dataset `{name}`: {file} not found (looked in {}); to get it: {how_to_get} ({source_url})",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MissingText { name: String, file: String, searched: Vec<PathBuf>, how_to_get: String, source_url: String },
    #[error("{}: sha256 {got} does not match dataset `{name}` ({expected}); the file is corrupt or a different version: {how_to_get}", path.display())]
    CorruptText { path: PathBuf, name: String, expected: String, got: String, how_to_get: String },
    /// A dataset that was not on disk could not be downloaded (network, server, or a file that is not the
    /// manifest's).
    #[error("dataset `{name}`: download from {url} failed: {source}; or copy the file into $EDGEFORGE_DATA by hand (set EDGEFORGE_OFFLINE=1 to never download)")]
    Download {
        name: String,
        url: String,
        #[source]
        source: crate::download::DownloadError,
    },
    #[error("dataset manifest {file}: {reason}")]
    Manifest { file: String, reason: String },
    #[error("the text has {tokens} tokens, fewer than one context of {ctx}: use a longer text or a smaller --ctx")]
    TextTooShort { tokens: usize, ctx: usize },
    #[error("cancelled")]
    Cancelled,
    #[error("invalid option: {0}")]
    Options(String),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] edgeforge_tokenizer::TokenizerError),
    #[error("forward pass: {0}")]
    Runtime(#[from] edgeforge_runtime::RuntimeError),
    #[error(transparent)]
    Model(#[from] edgeforge_core::Error),
}

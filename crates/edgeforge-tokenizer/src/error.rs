use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer model `{model}` is not supported (only `gpt2`, byte-level BPE)")]
    UnsupportedModel { model: String },
    #[error("pre-tokenizer `{pre}` is not supported (supported: {})", supported.join(", "))]
    UnknownPreTokenizer { pre: String, supported: Vec<&'static str> },
    #[error("merge {index} `{merge}` is not two tokens separated by a space")]
    BadMerge { index: usize, merge: String },
    #[error("token id {id} for {role} is outside the vocabulary of {vocab_size}")]
    BadSpecialId { role: &'static str, id: u32, vocab_size: usize },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid JSON: {reason}", path.display())]
    Json { path: PathBuf, reason: String },
    #[error("cannot build the tokenizer: {reason}")]
    Build { reason: String },
    #[error("encoding failed: {reason}")]
    Encode { reason: String },
}

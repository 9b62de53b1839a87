use std::path::PathBuf;

/// Everything that can go wrong building or using a tokenizer. Messages are one line and say what to fix
/// when the fix is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    #[error(
        "tokenizer.ggml.model `{model}` is not supported (supported: `gpt2`, byte-level bpe; `llama`, \
         sentencepiece-style); re-convert the model with one of these"
    )]
    UnsupportedModel { model: String },

    #[error(
        "pre-tokenizer `{pre}` is not supported (supported: {}); re-convert the model with one of these \
         or add its regexes to edgeforge-tokenizer's table",
        supported.join(", ")
    )]
    UnknownPreTokenizer { pre: String, supported: Vec<&'static str> },

    #[error("the vocabulary is empty: the model file lists no tokens (tokenizer.ggml.tokens)")]
    EmptyVocab,

    #[error(
        "token {second} has the same text as token {first} (`{token}`); token texts must be unique, \
         re-convert the model"
    )]
    DuplicateToken { token: String, first: u32, second: u32 },

    #[error("tokenizer.ggml.token_type has {types} entries for {tokens} tokens; re-convert the model")]
    TokenTypeCount { types: usize, tokens: usize },

    #[error("tokenizer.ggml.scores has {scores} entries for {tokens} tokens; re-convert the model")]
    ScoreCount { scores: usize, tokens: usize },

    #[error(
        "the text has a character that is no token, and the vocabulary has no byte token `<0x{byte:02X}>` \
         to spell it with; re-convert the model with its byte-fallback tokens"
    )]
    MissingByteToken { byte: u8 },

    #[error("merge {index} `{merge}` is not two tokens separated by a space; re-convert the model")]
    BadMerge { index: usize, merge: String },

    #[error(
        "merge {index} `{merge}` needs token `{token}`, which is not in the vocabulary; \
         the merges do not belong to these tokens, re-convert the model"
    )]
    UnknownMergeToken { index: usize, merge: String, token: String },

    #[error(
        "{role} token id {id} is outside the vocabulary of {vocab_size} tokens; \
         fix tokenizer.ggml.{role}_token_id"
    )]
    BadSpecialId { role: &'static str, id: u32, vocab_size: usize },

    #[error(
        "add_{role}_token is on but no {role} token id is given; \
         set tokenizer.ggml.{role}_token_id or turn add_{role}_token off"
    )]
    MissingSpecialId { role: &'static str },

    #[error(
        "{}: no tokenizer.json in this folder; a hugging face model folder needs one \
         (copy it from the original model)",
        dir.display()
    )]
    MissingTokenizerJson { dir: PathBuf },

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a valid tokenizer file: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "{}: {what} is not supported in a sentencepiece-style (byte-fallback bpe) tokenizer.json; llama.cpp \
         tokenizes these files with spaces as `▁` only, re-export the tokenizer without it",
        path.display()
    )]
    UnsupportedHfTokenizer { path: PathBuf, what: String },

    #[error("cannot build the tokenizer: {reason}")]
    Build { reason: String },

    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    UnknownId { id: u32, vocab_size: usize },

    #[error("encoding failed: {reason}")]
    Encode { reason: String },

    #[error("decoding failed: {reason}")]
    Decode { reason: String },

    #[error("vocabulary pruning: {reason}")]
    Prune { reason: String },
}

//! Typed errors of the core crate. Every error read from a file names the file; GGUF errors also name the
//! byte offset where reading stopped, so a user can tell a truncated download from a wrong format.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid GGUF file: {kind} (at byte {offset})", path.display())]
    Gguf { path: PathBuf, offset: u64, kind: GgufError },
    #[error("{}: invalid safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },
    #[error("{}: {problem}", path.display())]
    Config { path: PathBuf, problem: ConfigProblem },
    #[error("{}: unsupported architecture `{arch}` (supported: {})", path.display(), supported.join(", "))]
    UnsupportedArchitecture { path: PathBuf, arch: String, supported: Vec<&'static str> },
    #[error("{}: tensor `{tensor}` is missing", path.display())]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{}: tensor `{tensor}` has shape {got:?}, expected {expected:?}", path.display())]
    TensorShape { path: PathBuf, tensor: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("{}: tensor `{tensor}` has type {dtype}, which cannot be used here ({why})", path.display())]
    TensorType { path: PathBuf, tensor: String, dtype: String, why: &'static str },
    #[error("{}: tokenizer: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: edgeforge_tokenizer::TokenizerError,
    },
    #[error("{}: {what} is neither a .gguf file nor a Hugging Face folder with config.json", path.display())]
    UnknownModelFormat { path: PathBuf, what: &'static str },
    #[error("tensor `{tensor}`: {source}")]
    Block {
        tensor: String,
        #[source]
        source: crate::blocks::BlockError,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// What is wrong inside a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("file ends after {len} bytes, needed {needed} more for {what}")]
    Truncated { what: &'static str, len: u64, needed: u64 },
    #[error("bad magic {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {version} (supported: 2, 3)")]
    Version { version: u32 },
    #[error("declares {count} {what}, but only {bytes_left} bytes follow (at least {min_bytes_each} bytes each)")]
    CountTooLarge { what: &'static str, count: u64, bytes_left: u64, min_bytes_each: u64 },
    #[error("{what} of {len} bytes is longer than the {bytes_left} bytes left in the file")]
    StringTooLong { what: &'static str, len: u64, bytes_left: u64 },
    #[error("{what} is not valid UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("metadata key `{key}` has unknown value type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("metadata key `{key}` is an array of arrays, which GGUF readers do not support")]
    NestedArray { key: String },
    #[error("duplicate metadata key `{key}`")]
    DuplicateKey { key: String },
    #[error("duplicate tensor name `{name}`")]
    DuplicateTensor { name: String },
    #[error("tensor `{tensor}` has {n_dims} dimensions (1 to 4)")]
    TooManyDims { tensor: String, n_dims: u32 },
    #[error("tensor `{tensor}` has an invalid shape {ne:?} (zero or overflowing element count)")]
    BadShape { tensor: String, ne: Vec<u64> },
    #[error("tensor `{tensor}` has unknown tensor type id {type_id} (supported: {})", crate::dtype::GgmlType::SUPPORTED.map(|t| t.name()).join(", "))]
    UnknownTensorType { tensor: String, type_id: u32 },
    #[error("tensor `{tensor}`: row length {row_len} is not a multiple of the {dtype} block size {block}")]
    RowNotWholeBlocks { tensor: String, dtype: crate::dtype::GgmlType, row_len: u64, block: usize },
    #[error("tensor `{tensor}`: data [{start}, {end}) lies outside the file ({file_len} bytes)")]
    DataOutOfRange { tensor: String, start: u64, end: u64, file_len: u64 },
    #[error("tensor `{tensor}`: offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned { tensor: String, offset: u64, alignment: u64 },
    #[error("general.alignment = {alignment} is not a power of two")]
    BadAlignment { alignment: u64 },
    #[error("metadata key `{key}` has type {got}, expected {expected}")]
    KeyType { key: String, expected: &'static str, got: &'static str },
    #[error("required metadata key `{key}` is missing")]
    MissingKey { key: String },
}

/// What is wrong with a config.json.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("missing field `{field}` (a Hugging Face llama config.json has it; add it or re-export the model)")]
    MissingField { field: &'static str },
    #[error("field `{field}` should be {expected}, found {found}")]
    WrongType { field: &'static str, expected: &'static str, found: String },
    #[error("field `{field}` = {value} is invalid: {why}")]
    Invalid { field: &'static str, value: String, why: &'static str },
    #[error("declares {layers} layers ({field}), which need {needed} tensors, but the file holds {held}; fix the layer count or the file")]
    TensorCount { field: &'static str, layers: usize, needed: u64, held: usize },
}

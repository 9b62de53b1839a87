//! GGUF v2/v3 reading.
//!
//! We parse GGUF ourselves on top of memmap2 instead of using gguf-rs 0.1.8 because for a loader that must
//! never trust a size read from a file, gguf-rs falls short: its errors are untyped `anyhow` strings with no
//! byte offset, it allocates strings up to 1 GiB without comparing with the bytes left, replaces invalid
//! UTF-8 silently, caps (truncates) tokenizer arrays by default, and gives no zero-copy access to tensor
//! data. Our reader checks every count and length against the bytes that remain before allocating.

mod cursor;
mod metadata;
mod reader;

pub use metadata::{MetaArray, MetaValue};
pub use reader::{GgufFile, GgufTensorInfo};

//! llama.cpp's pre-tokenizer table (src/llama-vocab.cpp): for each `tokenizer.ggml.pre` name, the regexes it
//! applies in order, whether it looks whole pre-tokens up before merging, and its add_bos default.
//!
//! llama.cpp applies each regex to every piece left by the previous one and keeps both the matches and the
//! text between them; that is exactly a `Split` pre-tokenizer with `Isolated` behaviour, so a table entry
//! becomes a sequence of those, followed by a byte-level mapping that has no regex of its own.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::error::TokenizerError;

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
// llama.cpp spells out the case-insensitive contractions of the original `(?i:...)` group.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DIGIT: &str = r"\p{N}";
const DIGITS: &str = r"\p{N}+";
const THREE_DIGITS: &str = r"[0-9][0-9][0-9]";
const DEFAULT_PUNCT: &str = r"[\p{P}\$\+<=>\^~\|]+";
const FALCON_PUNCT: &str = r"[\p{P}\$\+<=>\^~\|`]+";

/// One row of llama.cpp's table.
#[derive(Debug)]
pub(crate) struct PreSpec {
    /// The `tokenizer.ggml.pre` values llama.cpp maps to this row.
    pub names: &'static [&'static str],
    pub regexes: &'static [&'static str],
    /// A pre-token that is itself in the vocabulary becomes that one token without merging (Llama-3 family).
    pub ignore_merges: bool,
    /// llama.cpp's add_bos when the file has no `tokenizer.ggml.add_bos_token`.
    pub add_bos: bool,
}

const fn spec(names: &'static [&'static str], regexes: &'static [&'static str]) -> PreSpec {
    PreSpec { names, regexes, ignore_merges: false, add_bos: false }
}

pub(crate) const TABLE: &[PreSpec] = &[
    // Used as well when the file names no pre-tokenizer at all (llama.cpp warns and falls back to it).
    spec(&["default"], &[DEFAULT_PUNCT, GPT2, DIGITS, THREE_DIGITS]),
    // "gpt2" is not a name llama.cpp knows (its converter writes "gpt-2"); accepted as an obvious alias.
    spec(
        &[
            "gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4", "gigachat",
            "a.x-4.0", "mellum",
        ],
        &[GPT2],
    ),
    PreSpec {
        names: &["llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"],
        regexes: &[LLAMA3],
        ignore_merges: true,
        add_bos: true,
    },
    // Same regex as Llama 3, without its whole-word lookup or BOS default.
    spec(&["dbrx", "smaug-bpe"], &[LLAMA3]),
    spec(
        &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"],
        &[QWEN2],
    ),
    spec(
        &["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"],
        &[DIGIT, GPT2],
    ),
    spec(&["falcon"], &[FALCON_PUNCT, GPT2, THREE_DIGITS]),
];

pub(crate) fn supported() -> Vec<&'static str> {
    TABLE.iter().flat_map(|s| s.names.iter().copied()).collect()
}

/// The row for a `tokenizer.ggml.pre` value; absent means llama.cpp's "default" row.
pub(crate) fn lookup(pre: Option<&str>) -> Result<&'static PreSpec, TokenizerError> {
    let name = pre.unwrap_or("default");
    TABLE
        .iter()
        .find(|s| s.names.contains(&name))
        .ok_or_else(|| TokenizerError::UnknownPreTokenizer { pre: name.to_owned(), supported: supported() })
}

/// The pre-tokenizer for a table row; `isolate` is a class of byte-level symbols that each become a
/// pre-token of their own after the byte-level mapping (see `missing_bytes`).
pub(crate) fn pre_tokenizer(spec: &PreSpec, isolate: Option<&str>) -> Result<PreTokenizerWrapper, TokenizerError> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(spec.regexes.len() + 2);
    for re in spec.regexes {
        steps.push(isolated_split(re)?);
    }
    // The regexes above already split the text; ByteLevel only maps bytes to its printable alphabet here.
    steps.push(ByteLevel::new(false, false, false).into());
    if let Some(class) = isolate {
        steps.push(isolated_split(class)?);
    }
    Ok(Sequence::new(steps).into())
}

/// Every match becomes a piece, and so does the text between matches.
fn isolated_split(re: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    let split = Split::new(SplitPattern::Regex(re.to_owned()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| TokenizerError::Build { reason: format!("regex `{re}`: {e}") })?;
    Ok(split.into())
}

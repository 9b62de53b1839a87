//! llama.cpp's pre-tokenizer table (src/llama-vocab.cpp): for each `tokenizer.ggml.pre` name, the regexes it
//! applies in order. Each regex splits every piece further, keeping both matches and the text between them,
//! then the pieces are byte-level mapped and merged by BPE. We express that as a sequence of `Split`
//! pre-tokenizers (isolated matches) followed by a byte-level step without its own regex.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::error::TokenizerError;

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DIGIT: &str = r"\p{N}";

/// (pre names, regexes in order).
const TABLE: [(&[&str], &[&str]); 4] = [
    (&["default", "gpt2", "gpt-2"], &[GPT2]),
    (&["llama-bpe", "llama3", "llama-v3", "smaug-bpe"], &[LLAMA3]),
    (&["qwen2", "deepseek-r1-qwen"], &[QWEN2]),
    (&["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"], &[DIGIT, GPT2]),
];

pub fn supported() -> Vec<&'static str> {
    TABLE.iter().flat_map(|(names, _)| names.iter().copied()).collect()
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value (absent means llama.cpp's default, GPT-2's regex).
pub fn pre_tokenizer(pre: Option<&str>) -> Result<PreTokenizerWrapper, TokenizerError> {
    let name = pre.unwrap_or("default");
    let regexes = TABLE
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, r)| *r)
        .ok_or_else(|| TokenizerError::UnknownPreTokenizer { pre: name.to_owned(), supported: supported() })?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let split = Split::new(SplitPattern::Regex((*re).to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| TokenizerError::Build { reason: format!("regex {re}: {e}") })?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(steps).into())
}

//! GGUF tokenizer metadata → tokenizer, following llama.cpp's vocabulary loader (src/llama-vocab.cpp).

use std::collections::HashSet;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::Tokenizer as HfTokenizer;

use crate::error::TokenizerError;
use crate::{missing_bytes, pretokenize, token_kinds, Tokenizer};

/// Tokenizer description as stored in GGUF metadata (`tokenizer.ggml.*`), filled by the GGUF reader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`, e.g. "gpt2".
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. "smollm".
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts, index = id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: "left right" pairs, highest priority first.
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
}

pub(crate) fn build(v: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
    if v.model != "gpt2" {
        return Err(TokenizerError::UnsupportedModel { model: v.model.clone() });
    }
    let pre = pretokenize::lookup(v.pre.as_deref())?;
    let texts = token_texts(&v.tokens)?;
    let n = texts.len();
    if let Some(types) = &v.token_types {
        // llama.cpp reads one type per token and ignores any surplus.
        if types.len() < n {
            return Err(TokenizerError::TokenTypeCount { types: types.len(), tokens: n });
        }
    }

    let vocab: Vocab = texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = parse_merges(&v.merges, &vocab)?;
    let isolate = missing_bytes::isolating_class(|c| vocab.contains_key(c.encode_utf8(&mut [0u8; 4]) as &str));
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| TokenizerError::Build { reason: e.to_string() })?;
    let mut inner = HfTokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pretokenize::pre_tokenizer(pre, isolate.as_deref())?));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    token_kinds::register(&mut inner, &texts, &token_kinds::kinds(&texts, v.token_types.as_deref()));

    let bos_id = checked_id("bos", v.bos_id, n)?;
    let eos_id = checked_id("eos", v.eos_id, n)?;
    let add_bos = v.add_bos.unwrap_or(pre.add_bos);
    let add_eos = v.add_eos.unwrap_or(false);
    if add_bos && bos_id.is_none() {
        return Err(TokenizerError::MissingSpecialId { role: "bos" });
    }
    if add_eos && eos_id.is_none() {
        return Err(TokenizerError::MissingSpecialId { role: "eos" });
    }
    Ok(Tokenizer::assemble(inner, bos_id, eos_id, add_bos, add_eos, Some(v.clone())))
}

/// Token texts as llama.cpp keys them: an empty text becomes `[EMPTY_<id>]`, a repeated text is an error
/// (llama.cpp refuses the file too).
fn token_texts(tokens: &[String]) -> Result<Vec<String>, TokenizerError> {
    if tokens.is_empty() {
        return Err(TokenizerError::EmptyVocab);
    }
    let mut seen = std::collections::HashMap::with_capacity(tokens.len());
    let mut texts = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let id = i as u32;
        let text = if t.is_empty() { format!("[EMPTY_{i}]") } else { t.clone() };
        if let Some(first) = seen.insert(text.clone(), id) {
            return Err(TokenizerError::DuplicateToken { token: text, first, second: id });
        }
        texts.push(text);
    }
    Ok(texts)
}

/// "left right" strings → pairs in rank order. A pair listed twice keeps its first rank, as llama.cpp's
/// rank map does (a later duplicate would otherwise overwrite the rank in the BPE model's map).
fn parse_merges(merges: &[String], vocab: &Vocab) -> Result<Vec<(String, String)>, TokenizerError> {
    let mut out = Vec::with_capacity(merges.len());
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(merges.len());
    for (index, m) in merges.iter().enumerate() {
        // The split is at the first space after the first byte, so a left side that is itself a space
        // (never the case in byte-level vocabularies, whose space is `Ġ`) still parses as llama.cpp does.
        let at = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
        let Some(at) = at else {
            return Err(TokenizerError::BadMerge { index, merge: m.clone() });
        };
        let (left, right) = (&m[..at], &m[at + 1..]);
        if right.is_empty() {
            return Err(TokenizerError::BadMerge { index, merge: m.clone() });
        }
        let joined = format!("{left}{right}");
        for token in [left, right, joined.as_str()] {
            if !vocab.contains_key(token) {
                return Err(TokenizerError::UnknownMergeToken { index, merge: m.clone(), token: token.to_owned() });
            }
        }
        if seen.insert((left, right)) {
            out.push((left.to_owned(), right.to_owned()));
        }
    }
    Ok(out)
}

fn checked_id(role: &'static str, id: Option<u32>, vocab_size: usize) -> Result<Option<u32>, TokenizerError> {
    match id {
        Some(id) if id as usize >= vocab_size => Err(TokenizerError::BadSpecialId { role, id, vocab_size }),
        other => Ok(other),
    }
}

//! GGUF tokenizer metadata → tokenizer, following llama.cpp's vocabulary loader (src/llama-vocab.cpp).

use std::collections::HashSet;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::Tokenizer as HfTokenizer;

use crate::error::TokenizerError;
use crate::{missing_bytes, pretokenize, spm, token_kinds, Engine, Tokenizer};

/// Tokenizer description as stored in GGUF metadata (`tokenizer.ggml.*`), filled by the GGUF reader.
/// Equality compares scores bit for bit.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style).
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. "smollm"; byte-level BPE only (llama.cpp ignores it for "llama").
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
    /// `tokenizer.ggml.scores` (f32, or i32 read as f32): SentencePiece piece scores, index = id; the merge
    /// priority of "llama" vocabularies (absent: all 0, as in llama.cpp).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.add_space_prefix`: "llama" vocabularies put a space before the text (absent: on, as
    /// in llama.cpp; Gemma files say off).
    pub add_space_prefix: Option<bool>,
}

impl PartialEq for GgufVocab {
    fn eq(&self, o: &Self) -> bool {
        let bits = |s: &Option<Vec<f32>>| s.as_ref().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        self.model == o.model
            && self.pre == o.pre
            && self.tokens == o.tokens
            && self.token_types == o.token_types
            && self.merges == o.merges
            && (self.bos_id, self.eos_id, self.unk_id, self.pad_id) == (o.bos_id, o.eos_id, o.unk_id, o.pad_id)
            && (self.add_bos, self.add_eos, self.add_space_prefix) == (o.add_bos, o.add_eos, o.add_space_prefix)
            && bits(&self.scores) == bits(&o.scores)
    }
}

impl Eq for GgufVocab {}


pub(crate) fn build(v: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
    match v.model.as_str() {
        "gpt2" => build_bpe(v),
        "llama" => build_spm(v),
        _ => Err(TokenizerError::UnsupportedModel { model: v.model.clone() }),
    }
}

/// Token texts, checked type count.
fn texts_and_types(v: &GgufVocab) -> Result<Vec<String>, TokenizerError> {
    let texts = token_texts(&v.tokens)?;
    let n = texts.len();
    if let Some(types) = &v.token_types {
        // llama.cpp reads one type per token and ignores any surplus.
        if types.len() < n {
            return Err(TokenizerError::TokenTypeCount { types: types.len(), tokens: n });
        }
    }
    Ok(texts)
}

/// SentencePiece-style vocabulary, with llama.cpp's defaults for "llama" files: BOS 1, EOS 2 (when the file
/// names none and the vocabulary is that large), add_bos on, add_space_prefix on.
fn build_spm(v: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
    let texts = texts_and_types(v)?;
    let n = texts.len();
    let scores = match &v.scores {
        Some(s) if s.len() < n => return Err(TokenizerError::ScoreCount { scores: s.len(), tokens: n }),
        Some(s) => s[..n].to_vec(),
        None => vec![0.0; n],
    };
    let types: Vec<i32> = match &v.token_types {
        Some(t) => t[..n].to_vec(),
        None => vec![1; n],
    };
    let kinds = token_kinds::kinds(&texts, v.token_types.as_deref());
    let default_id = |id: u32| ((id as usize) < n).then_some(id);
    let bos_id = checked_id("bos", v.bos_id, n)?.or_else(|| default_id(1));
    let eos_id = checked_id("eos", v.eos_id, n)?.or_else(|| default_id(2));
    let (add_bos, add_eos) = (v.add_bos.unwrap_or(true), v.add_eos.unwrap_or(false));
    check_flags(add_bos, bos_id, add_eos, eos_id)?;
    let spm = spm::Spm::new(texts, scores, kinds, types, v.add_space_prefix.unwrap_or(true));
    Ok(Tokenizer::assemble(Engine::Spm(spm), bos_id, eos_id, add_bos, add_eos, Some(v.clone())))
}

/// A flag without its token would silently add nothing; say so instead.
pub(crate) fn check_flags(
    add_bos: bool,
    bos_id: Option<u32>,
    add_eos: bool,
    eos_id: Option<u32>,
) -> Result<(), TokenizerError> {
    if add_bos && bos_id.is_none() {
        return Err(TokenizerError::MissingSpecialId { role: "bos" });
    }
    if add_eos && eos_id.is_none() {
        return Err(TokenizerError::MissingSpecialId { role: "eos" });
    }
    Ok(())
}

fn build_bpe(v: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
    let pre = pretokenize::lookup(v.pre.as_deref())?;
    let texts = texts_and_types(v)?;
    let n = texts.len();

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
    check_flags(add_bos, bos_id, add_eos, eos_id)?;
    Ok(Tokenizer::assemble(Engine::hf(inner), bos_id, eos_id, add_bos, add_eos, Some(v.clone())))
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

/// One merge's "left right" text as its two sides. The split is at the first space after the first byte, so
/// a left side that is itself a space (never the case in byte-level vocabularies, whose space is `Ġ`) still
/// parses as llama.cpp does.
pub(crate) fn split_merge(m: &str) -> Option<(&str, &str)> {
    let at = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i)?;
    let (left, right) = (&m[..at], &m[at + 1..]);
    (!right.is_empty()).then_some((left, right))
}

/// "left right" strings → pairs in rank order. A pair listed twice keeps its first rank, as llama.cpp's
/// rank map does (a later duplicate would otherwise overwrite the rank in the BPE model's map).
fn parse_merges(merges: &[String], vocab: &Vocab) -> Result<Vec<(String, String)>, TokenizerError> {
    let mut out = Vec::with_capacity(merges.len());
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(merges.len());
    for (index, m) in merges.iter().enumerate() {
        let Some((left, right)) = split_merge(m) else {
            return Err(TokenizerError::BadMerge { index, merge: m.clone() });
        };
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

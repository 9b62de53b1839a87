//! GGUF tokenizer metadata → tokenizer.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::error::TokenizerError;
use crate::{pretokenize, Tokenizer};

/// Tokenizer description as stored in GGUF metadata (`tokenizer.ggml.*`).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`, e.g. "gpt2".
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. "smollm".
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// "left right" pairs in merge-priority order.
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
}

const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

pub(crate) fn build(v: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
    if v.model != "gpt2" {
        return Err(TokenizerError::UnsupportedModel { model: v.model.clone() });
    }
    let n = v.tokens.len();
    let vocab: Vocab = v.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut merges = Vec::with_capacity(v.merges.len());
    for (index, m) in v.merges.iter().enumerate() {
        // Split at the first space after the first byte: a merge's left side may itself be a space symbol.
        let split = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
        let Some(at) = split else {
            return Err(TokenizerError::BadMerge { index, merge: m.clone() });
        };
        let (l, r) = (&m[..at], &m[at + 1..]);
        if !vocab.contains_key(l) || !vocab.contains_key(r) {
            return Err(TokenizerError::BadMerge { index, merge: m.clone() });
        }
        merges.push((l.to_owned(), r.to_owned()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| TokenizerError::Build { reason: e.to_string() })?;
    let mut inner = HfTokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pretokenize::pre_tokenizer(v.pre.as_deref())?));
    inner.with_decoder(Some(ByteLevelDecoder::default()));

    // llama.cpp splits user-defined tokens out of the text always, control tokens only when asked to parse
    // special tokens (which perplexity and plain tokenization do not). Control tokens are registered as
    // special so decode knows them, with special-token splitting turned off.
    if let Some(types) = &v.token_types {
        let mut control = Vec::new();
        let mut user = Vec::new();
        for (tok, &ty) in v.tokens.iter().zip(types) {
            match ty {
                TOKEN_CONTROL => control.push(AddedToken::from(tok.clone(), true)),
                TOKEN_USER_DEFINED => user.push(AddedToken::from(tok.clone(), false).normalized(false)),
                _ => {}
            }
        }
        inner.add_special_tokens(&control);
        inner.add_tokens(&user);
    }
    inner.set_encode_special_tokens(true);

    for (role, id) in [("bos", v.bos_id), ("eos", v.eos_id), ("unk", v.unk_id), ("pad", v.pad_id)] {
        if let Some(id) = id {
            if id as usize >= n {
                return Err(TokenizerError::BadSpecialId { role, id, vocab_size: n });
            }
        }
    }
    Ok(Tokenizer {
        inner,
        bos_id: v.bos_id,
        eos_id: v.eos_id,
        // llama.cpp's defaults for gpt2-type vocabularies: no BOS, no EOS unless the file says so.
        add_bos: v.add_bos.unwrap_or(false),
        add_eos: v.add_eos.unwrap_or(false),
        gguf_vocab: Some(v.clone()),
    })
}

//! edgeforge-tokenizer: the tokenizers of llama.cpp's two vocabulary kinds, built from GGUF tokenizer
//! metadata or a Hugging Face tokenizer.json, producing exactly the ids llama.cpp's
//! `llama_tokenize(add_special, parse_special = false)` produces:
//! - byte-level BPE (`tokenizer.ggml.model = "gpt2"`: SmolLM2, Llama 3, Qwen2/2.5/3, GPT-2), built on the
//!   `tokenizers` crate with llama.cpp's pre-tokenizer table, special-token rules and BOS/EOS handling;
//! - SentencePiece-style vocabularies with scores and `<0xNN>` byte fallback (`tokenizer.ggml.model =
//!   "llama"`: Llama 2, Mistral, Phi-3, Gemma 1/2/3), see `spm`.

mod error;
mod hf_files;
mod missing_bytes;
mod pretokenize;
mod prune;
mod spm;
mod spm_hf;
mod token_kinds;
mod vocab;

use std::collections::HashMap;
use std::path::Path;

use tokenizers::Tokenizer as HfTokenizer;

pub use error::TokenizerError;
pub use prune::PrunedVocab;
pub use vocab::GgufVocab;

pub struct Tokenizer {
    engine: Engine,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// Highest id + 1, computed once: the `tokenizers` crate rebuilds its whole vocabulary map to count it.
    vocab_size: usize,
    /// The GGUF description this tokenizer was built from, kept so GGUF exports can carry it over.
    gguf_vocab: Option<GgufVocab>,
}

/// The tokenizing algorithm behind a `Tokenizer`.
pub(crate) enum Engine {
    /// Byte-level BPE through the `tokenizers` crate.
    Hf {
        /// Boxed: it is large, and the other variant is not.
        inner: Box<HfTokenizer>,
        /// Added (control, user-defined) tokens by id. Their text is raw text, not byte-level symbols, so
        /// decode must not send it through the byte-level decoder (which would turn a raw `é` into the lone
        /// byte 0xE9).
        added: HashMap<u32, String>,
    },
    /// llama.cpp's SentencePiece-style merging.
    Spm(spm::Spm),
}

impl Engine {
    fn hf(inner: HfTokenizer) -> Self {
        let added = inner.get_added_tokens_decoder().into_iter().map(|(id, t)| (id, t.content)).collect();
        Engine::Hf { inner: Box::new(inner), added }
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish()
    }
}

impl Tokenizer {
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Self, TokenizerError> {
        vocab::build(v)
    }

    /// A Hugging Face folder: tokenizer.json, plus tokenizer_config.json (add_bos_token, bos_token,
    /// eos_token) and config.json (bos_token_id, eos_token_id) when present beside it.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        hf_files::read(dir)
    }

    fn assemble(
        engine: Engine,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        add_bos: bool,
        add_eos: bool,
        gguf_vocab: Option<GgufVocab>,
    ) -> Self {
        let vocab_size = match &engine {
            Engine::Hf { inner, .. } => inner.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1),
            Engine::Spm(spm) => spm.texts().len(),
        };
        Self { engine, bos_id, eos_id, add_bos, add_eos, vocab_size, gguf_vocab }
    }

    /// Text → ids as llama.cpp's `llama_tokenize(add_special, parse_special = false)`: control-token text in
    /// the input is tokenized as plain text; BOS (EOS) is added only if `add_special` and the model says so.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let body = match &self.engine {
            // `add_special_tokens = false`: the tokenizer.json post-processor never runs, BOS/EOS are ours.
            Engine::Hf { inner, .. } => inner
                .encode_fast(text, false)
                .map_err(|e| TokenizerError::Encode { reason: e.to_string() })?
                .get_ids()
                .to_vec(),
            Engine::Spm(spm) => spm.encode(text)?,
        };
        let mut ids = Vec::with_capacity(body.len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(&body);
        if add_special && self.add_eos {
            ids.extend(self.eos_id);
        }
        Ok(ids)
    }

    /// Ids → text. Control and user-defined tokens come out as their text (e.g. `<|im_end|>`), as llama.cpp's
    /// `token_to_piece(special = true)` gives them; bytes that do not form valid UTF-8 become U+FFFD.
    /// SentencePiece-style vocabularies drop the one leading space their encoder adds.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let (inner, added) = match &self.engine {
            Engine::Hf { inner, added } => (inner, added),
            Engine::Spm(spm) => return spm.decode(ids),
        };
        let mut out = String::new();
        let mut start = 0;
        for (i, &id) in ids.iter().enumerate() {
            if let Some(text) = added.get(&id) {
                out.push_str(&decode_bytes(inner, &ids[start..i])?);
                out.push_str(text);
                start = i + 1;
            } else if inner.id_to_token(id).is_none() {
                // The `tokenizers` crate silently drops unknown ids; an out-of-range id is a bug worth naming.
                return Err(TokenizerError::UnknownId { id, vocab_size: self.vocab_size });
            }
        }
        out.push_str(&decode_bytes(inner, &ids[start..])?);
        Ok(out)
    }

    /// Number of token ids (highest id + 1).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// The GGUF tokenizer metadata this tokenizer was built from (`None` when loaded from tokenizer.json).
    pub fn gguf_vocab(&self) -> Option<&GgufVocab> {
        self.gguf_vocab.as_ref()
    }

    /// The vocabulary text of one token (byte-level form, e.g. `Ġthe`; SentencePiece form, e.g. `▁the`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        match &self.engine {
            Engine::Hf { inner, .. } => inner.id_to_token(id),
            Engine::Spm(spm) => spm.texts().get(id as usize).cloned(),
        }
    }

    /// The id of a token text, if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.engine {
            Engine::Hf { inner, .. } => inner.token_to_id(text),
            Engine::Spm(spm) => spm.id(text),
        }
    }

    /// Which tokenizing algorithm this is.
    pub fn kind(&self) -> TokenizerKind {
        match &self.engine {
            Engine::Hf { .. } => TokenizerKind::ByteLevelBpe,
            Engine::Spm(_) => TokenizerKind::SentencePiece,
        }
    }

    /// Write tokenizer.json and tokenizer_config.json into `dir` (each via a temp file in `dir` and a rename),
    /// so that `from_hf_dir(dir)` gives identical ids.
    pub fn write_hf_files(&self, dir: &Path) -> Result<(), TokenizerError> {
        hf_files::write(self, dir)
    }
}

/// Byte-level tokens only.
fn decode_bytes(inner: &HfTokenizer, ids: &[u32]) -> Result<String, TokenizerError> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    inner.decode(ids, false).map_err(|e| TokenizerError::Decode { reason: e.to_string() })
}

/// The two vocabulary kinds llama.cpp tokenizes these model families with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerKind {
    /// GPT-2-style byte-level BPE with a pre-tokenizer (`tokenizer.ggml.model = "gpt2"`).
    ByteLevelBpe,
    /// SentencePiece-style: scores, `▁` for spaces, `<0xNN>` byte fallback (`tokenizer.ggml.model = "llama"`).
    SentencePiece,
}

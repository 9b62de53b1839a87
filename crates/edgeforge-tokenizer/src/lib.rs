//! edgeforge-tokenizer: GPT-2-style byte-level BPE built from GGUF tokenizer metadata or a Hugging Face
//! tokenizer.json, producing exactly the ids llama.cpp produces (checked on WikiText-2 in the tests).
//! Built on the `tokenizers` crate; this crate supplies llama.cpp's pre-tokenizer table, its special-token
//! rules and its BOS/EOS handling.

mod error;
mod hf_files;
mod pretokenize;
mod vocab;

use tokenizers::Tokenizer as HfTokenizer;

pub use error::TokenizerError;
pub use vocab::GgufVocab;

pub struct Tokenizer {
    inner: HfTokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// The GGUF description this tokenizer was built from (kept so GGUF exports can carry it over).
    gguf_vocab: Option<GgufVocab>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

impl Tokenizer {
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Self, TokenizerError> {
        vocab::build(v)
    }

    /// A Hugging Face folder: tokenizer.json, plus tokenizer_config.json and config.json if present.
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<Self, TokenizerError> {
        hf_files::read(dir)
    }

    /// Text → ids as llama.cpp's `llama_tokenize(add_special, parse_special = false)`: control-token text in
    /// the input is tokenized as plain text; BOS/EOS are added only if `add_special` and the model says so.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| TokenizerError::Encode { reason: e.to_string() })?;
        let body = enc.get_ids();
        let mut ids = Vec::with_capacity(body.len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(body);
        if add_special && self.add_eos {
            ids.extend(self.eos_id);
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, false).map_err(|e| TokenizerError::Encode { reason: e.to_string() })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
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

    pub fn gguf_vocab(&self) -> Option<&GgufVocab> {
        self.gguf_vocab.as_ref()
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Write tokenizer.json and tokenizer_config.json into `dir` (each via a temp file and a rename), so that
    /// `from_hf_dir(dir)` gives identical ids.
    pub fn write_hf_files(&self, dir: &std::path::Path) -> Result<(), TokenizerError> {
        hf_files::write(self, dir)
    }
}

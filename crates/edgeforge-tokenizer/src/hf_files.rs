//! Hugging Face model folders: tokenizer.json (+ tokenizer_config.json, config.json) ↔ tokenizer.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokenizers::Tokenizer as HfTokenizer;

use crate::error::TokenizerError;
use crate::{spm_hf, Engine, Tokenizer};

/// Largest tokenizer.json / tokenizer_config.json / config.json read (the largest real tokenizer.json files
/// are tens of MB). Checked before reading, as `edgeforge_core::read_limit` does (which this crate, below
/// core, cannot call).
const MAX_JSON_BYTES: u64 = 256 << 20;

/// The file's bytes (refused by its size first when over `MAX_JSON_BYTES`), or `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, TokenizerError> {
    let too_large = |bytes| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{bytes} bytes is more than a tokenizer file may hold ({MAX_JSON_BYTES} at most)"));
    let read = std::fs::metadata(path).and_then(|m| if m.len() > MAX_JSON_BYTES { Err(too_large(m.len())) } else { std::fs::read(path) });
    match read {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io { action: "read", path: path.to_path_buf(), source }),
    }
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, TokenizerError> {
    serde_json::from_slice(bytes).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })
}

fn read_optional_json(path: &Path) -> Result<Value, TokenizerError> {
    match read_optional(path)? {
        Some(bytes) => parse(path, &bytes),
        None => Ok(Value::Null),
    }
}

/// A special token named in tokenizer_config.json: a plain string or an AddedToken object.
fn token_name(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Does the post-processor put `bos` in front of every single sequence? That is how Llama-3-style
/// tokenizer.json files say add_bos when tokenizer_config.json does not.
fn post_processor_adds(tokenizer_json: &Value, bos: &str) -> bool {
    fn check(pp: &Value, bos: &str) -> bool {
        match pp.get("type").and_then(Value::as_str) {
            Some("TemplateProcessing") => pp
                .get("single")
                .and_then(Value::as_array)
                .and_then(|s| s.first())
                .and_then(|first| first.get("SpecialToken"))
                .and_then(|t| t.get("id"))
                .and_then(Value::as_str)
                == Some(bos),
            Some("Sequence") => pp
                .get("processors")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| check(p, bos))),
            _ => false,
        }
    }
    tokenizer_json.get("post_processor").is_some_and(|pp| check(pp, bos))
}

pub(crate) fn read(dir: &Path) -> Result<Tokenizer, TokenizerError> {
    let tok_path = dir.join("tokenizer.json");
    let bytes =
        read_optional(&tok_path)?.ok_or_else(|| TokenizerError::MissingTokenizerJson { dir: dir.to_path_buf() })?;
    let tok_json: Value = parse(&tok_path, &bytes)?;
    let mut t = if spm_hf::is_spm(&tok_json) {
        let spm = spm_hf::read(&tok_json)
            .map_err(|what| TokenizerError::UnsupportedHfTokenizer { path: tok_path.clone(), what })?;
        Tokenizer::assemble(Engine::Spm(spm), None, None, false, false, None)
    } else {
        let mut inner: HfTokenizer = parse(&tok_path, &bytes)?;
        // llama.cpp never normalizes byte-level text; Qwen2's NFC normalizer would change the ids of
        // decomposed accents.
        if tok_json["normalizer"]["type"] == "NFC" {
            inner.with_normalizer(None::<tokenizers::NormalizerWrapper>);
        }
        // Special-token text in the input stays plain text (llama.cpp's parse_special = false); non-special
        // added tokens are still cut out, as llama.cpp does with user-defined tokens.
        inner.set_encode_special_tokens(true);
        Tokenizer::assemble(Engine::hf(inner), None, None, false, false, None)
    };

    let tc = read_optional_json(&dir.join("tokenizer_config.json"))?;
    let cfg = read_optional_json(&dir.join("config.json"))?;
    // Token names in tokenizer_config.json win over ids in config.json, as in llama.cpp's converter.
    let id_of = |name: Option<String>, cfg_key: &str| -> Option<u32> {
        name.and_then(|n| t.token_id(&n))
            .or_else(|| cfg.get(cfg_key).and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok()))
    };
    let bos_id = id_of(token_name(tc.get("bos_token")), "bos_token_id");
    let eos_id = id_of(token_name(tc.get("eos_token")), "eos_token_id");
    let bos_text = bos_id.and_then(|id| t.token_text(id));
    let add_bos = match tc.get("add_bos_token").and_then(Value::as_bool) {
        Some(b) => b,
        None => bos_text.is_some_and(|b| post_processor_adds(&tok_json, &b)),
    };
    let add_eos = tc.get("add_eos_token").and_then(Value::as_bool).unwrap_or(false);
    crate::vocab::check_flags(add_bos, bos_id, add_eos, eos_id)?;
    (t.bos_id, t.eos_id, t.add_bos, t.add_eos) = (bos_id, eos_id, add_bos, add_eos);
    Ok(t)
}

/// Write `bytes` to a temp file beside `path`, then rename it over `path`: a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TokenizerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)
            .map_err(|source| TokenizerError::Io { action: "create", path: tmp.clone(), source })?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|source| TokenizerError::Io {
            action: "write",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| TokenizerError::Io {
            action: "rename a file to",
            path: path.to_path_buf(),
            source,
        })
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than a leftover temp file.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn write(t: &Tokenizer, dir: &Path) -> Result<(), TokenizerError> {
    let text = match &t.engine {
        Engine::Hf { inner, .. } => inner.to_string(false),
        Engine::Spm(spm) => serde_json::to_string(&spm_hf::to_json(spm)).map_err(|e| e.to_string().into()),
    }
    .map_err(|e| TokenizerError::Build { reason: format!("cannot serialize tokenizer.json: {e}") })?;
    write_atomic(&dir.join("tokenizer.json"), text.as_bytes())?;

    let name = |id: Option<u32>| id.and_then(|i| t.token_text(i));
    let gguf = t.gguf_vocab.as_ref();
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": t.add_bos,
        "add_eos_token": t.add_eos,
        "bos_token": name(t.bos_id),
        "eos_token": name(t.eos_id),
        "unk_token": name(gguf.and_then(|g| g.unk_id)),
        "pad_token": name(gguf.and_then(|g| g.pad_id)),
        // Decoding must give back the exact text; HF's cleanup would drop spaces before punctuation.
        "clean_up_tokenization_spaces": false,
    });
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| TokenizerError::Build { reason: format!("cannot serialize tokenizer_config.json: {e}") })?;
    write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
}

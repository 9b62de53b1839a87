//! tokenizer.json (+ tokenizer_config.json, config.json) ↔ tokenizer.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use tokenizers::Tokenizer as HfTokenizer;

use crate::error::TokenizerError;
use crate::Tokenizer;

fn read_json(path: &Path) -> Result<Option<Value>, TokenizerError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TokenizerError::Json { path: path.to_path_buf(), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io { path: path.to_path_buf(), source }),
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

/// Does the post-processor put `bos` in front of every single sequence (how Llama-3-style tokenizer.json
/// files say add_bos)?
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
    let tok_json = read_json(&tok_path)?.ok_or_else(|| TokenizerError::Io {
        path: tok_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json is missing from the model folder"),
    })?;
    let mut inner = HfTokenizer::from_file(&tok_path)
        .map_err(|e| TokenizerError::Json { path: tok_path.clone(), reason: e.to_string() })?;
    // Our encode adds BOS/EOS itself, as llama.cpp does, so the post-processor is never run; special-token
    // text in the input stays plain text (llama.cpp's parse_special = false).
    inner.set_encode_special_tokens(true);

    let tc = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let cfg = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
    let id_of = |name: Option<String>, cfg_key: &str| -> Option<u32> {
        name.and_then(|n| inner.token_to_id(&n))
            .or_else(|| cfg.get(cfg_key).and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok()))
    };
    let bos_id = id_of(token_name(tc.get("bos_token")), "bos_token_id");
    let eos_id = id_of(token_name(tc.get("eos_token")), "eos_token_id");
    let bos_text = bos_id.and_then(|id| inner.id_to_token(id));
    let add_bos = match tc.get("add_bos_token").and_then(Value::as_bool) {
        Some(b) => b,
        None => bos_text.is_some_and(|b| post_processor_adds(&tok_json, &b)),
    };
    let add_eos = tc.get("add_eos_token").and_then(Value::as_bool).unwrap_or(false);
    Ok(Tokenizer { inner, bos_id, eos_id, add_bos, add_eos, gguf_vocab: None })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TokenizerError> {
    let io = |source| TokenizerError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

pub(crate) fn write(t: &Tokenizer, dir: &Path) -> Result<(), TokenizerError> {
    let tok_path = dir.join("tokenizer.json");
    let text = t.inner.to_string(false).map_err(|e| TokenizerError::Build { reason: e.to_string() })?;
    write_atomic(&tok_path, text.as_bytes())?;
    let name = |id: Option<u32>| id.and_then(|i| t.inner.id_to_token(i));
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": t.add_bos,
        "add_eos_token": t.add_eos,
        "bos_token": name(t.bos_id),
        "eos_token": name(t.eos_id),
        "clean_up_tokenization_spaces": false,
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| TokenizerError::Build { reason: e.to_string() })?;
    write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
}

//! SentencePiece-style vocabularies in Hugging Face tokenizer.json form: a BPE model with `byte_fallback`,
//! spaces written `▁` by a normalizer (Llama 2, Phi-3, Gemma) or a Metaspace pre-tokenizer (Mistral v0.3).
//!
//! Such a file has merges instead of scores. Its merges list every pair of tokens whose joined text is a
//! token, ranked by that token's SentencePiece score (that is how HF converts the sentencepiece model, and
//! how `to_json` writes one), so the rank of the first merge making a token gives back the score order and
//! llama.cpp's merging rule runs unchanged on it.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::spm::{Spm, SPACE, TYPE_BYTE};
use crate::token_kinds::Kind;

const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Is this tokenizer.json SentencePiece-style (a BPE model with byte fallback)?
pub(crate) fn is_spm(tokenizer_json: &Value) -> bool {
    let model = &tokenizer_json["model"];
    model["type"] == "BPE" && model["byte_fallback"] == true
}

/// The `Spm` of a SentencePiece-style tokenizer.json; normalizers and pre-tokenizers other than the `▁`
/// handling llama.cpp does itself are refused, since llama.cpp would not apply them.
pub(crate) fn read(tj: &Value) -> Result<Spm, String> {
    let add_space_prefix = space_handling(tj)?;
    let model = &tj["model"];
    let bad = |what: &str| what.to_owned();
    let vocab = model["vocab"].as_object().ok_or_else(|| bad("model.vocab is not an object"))?;
    let added_tokens = tj["added_tokens"].as_array().map(Vec::as_slice).unwrap_or_default();
    // Ids are 0..n: no id can reach the number of entries, which bounds the table below.
    let entries = vocab.len() + added_tokens.len();
    let mut slots: Vec<Option<(String, i32, Kind)>> = Vec::new();
    let mut put = |id: u64, text: &str, ty: i32, kind: Kind| -> Result<(), String> {
        let i = usize::try_from(id)
            .ok()
            .filter(|&i| i < entries)
            .ok_or_else(|| format!("token id {id} is out of range for {entries} tokens"))?;
        if slots.len() <= i {
            slots.resize(i + 1, None);
        }
        slots[i] = Some((text.to_owned(), ty, kind));
        Ok(())
    };
    for (text, id) in vocab {
        let id = id.as_u64().ok_or_else(|| bad("model.vocab has a non-integer id"))?;
        let ty = if crate::spm::parse_byte_token(text).is_some() { TYPE_BYTE } else { TYPE_NORMAL };
        put(id, text, ty, Kind::Normal)?;
    }
    for t in added_tokens {
        let (Some(id), Some(text)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(bad("an added_tokens entry lacks id or content"));
        };
        let special = t["special"].as_bool().unwrap_or(false);
        let (ty, kind) = if special { (TYPE_CONTROL, Kind::Special) } else { (TYPE_USER_DEFINED, Kind::CutOut) };
        put(id, text, ty, kind)?;
    }
    let mut texts = Vec::with_capacity(slots.len());
    let mut types = Vec::with_capacity(slots.len());
    let mut kinds = Vec::with_capacity(slots.len());
    for (i, slot) in slots.into_iter().enumerate() {
        let (text, ty, kind) = slot.ok_or_else(|| bad(&format!("token id {i} is missing (ids must be 0..n)")))?;
        texts.push(text);
        types.push(ty);
        kinds.push(kind);
    }
    let scores = scores_from_merges(&texts, &model["merges"])?;
    Ok(Spm::new(texts, scores, kinds, types, add_space_prefix))
}

/// Does the file put a space before the text? Refuses anything but llama.cpp's own `▁` handling.
fn space_handling(tj: &Value) -> Result<bool, String> {
    let bad = |what: String| what;
    let (mut prefix, mut replaced) = (false, false);
    let norms: Vec<&Value> = match &tj["normalizer"] {
        Value::Null => Vec::new(),
        n if n["type"] == "Sequence" => n["normalizers"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
        n => vec![n],
    };
    for n in norms {
        match n["type"].as_str() {
            Some("Prepend") if n["prepend"] == SPACE.to_string() => prefix = true,
            Some("Replace") if n["pattern"]["String"] == " " && n["content"] == SPACE.to_string() => replaced = true,
            other => return Err(bad(format!("normalizer {}", other.unwrap_or("?")))),
        }
    }
    match &tj["pre_tokenizer"] {
        Value::Null => {}
        // Gemma's files split at spaces after the normalizer has replaced them all: nothing is left to split.
        p if replaced && p["type"] == "Split" && p["pattern"]["String"] == " " => {}
        p if p["type"] == "Metaspace" && p["replacement"] == SPACE.to_string() && p["split"] != true => {
            prefix |= matches!(p["prepend_scheme"].as_str(), Some("first" | "always")) || p["add_prefix_space"] == true;
        }
        p => return Err(bad(format!("pre_tokenizer {}", p["type"].as_str().unwrap_or("?")))),
    }
    Ok(prefix)
}

/// A token's score is minus the rank of the first merge that makes it; tokens no merge makes rank below all.
fn scores_from_merges(texts: &[String], merges: &Value) -> Result<Vec<f32>, String> {
    let bad = |what: &str| what.to_owned();
    let merges = merges.as_array().map(Vec::as_slice).unwrap_or_default();
    let ids: HashMap<&str, usize> = texts.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut scores = vec![-(merges.len() as f32) - 1.0; texts.len()];
    let mut seen = vec![false; texts.len()];
    for (rank, m) in merges.iter().enumerate() {
        let joined = match m {
            Value::String(s) => s.split_once(' ').map(|(a, b)| format!("{a}{b}")),
            Value::Array(a) if a.len() == 2 => Some(format!("{}{}", a[0].as_str().unwrap_or(""), a[1].as_str().unwrap_or(""))),
            _ => None,
        }
        .ok_or_else(|| bad("a merge is neither \"a b\" nor [a, b]"))?;
        if let Some(&i) = ids.get(joined.as_str()) {
            if !seen[i] {
                seen[i] = true;
                scores[i] = -(rank as f32);
            }
        }
    }
    Ok(scores)
}

/// tokenizer.json of an `Spm`, as HF writes Llama 2's: BPE with byte fallback, merges for every pair of
/// tokens whose joined text is a normal token, ranked by that token's score (ties: lower id first).
pub(crate) fn to_json(spm: &Spm) -> Value {
    let texts = spm.texts();
    let mut merges: Vec<(f32, usize, usize, &str, &str)> = Vec::new();
    for (id, text) in texts.iter().enumerate() {
        if spm.kinds()[id] != Kind::Normal || spm.types()[id] == TYPE_BYTE {
            continue;
        }
        for (at, _) in text.char_indices().skip(1) {
            let (a, b) = text.split_at(at);
            if spm.id(a).is_some() && spm.id(b).is_some() {
                merges.push((spm.scores()[id], id, at, a, b));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let merges: Vec<Value> = merges.iter().map(|m| json!([m.3, m.4])).collect();
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, text) in texts.iter().enumerate() {
        // HF's Llama files list every token in the model's vocabulary, added ones included.
        vocab.insert(text.clone(), json!(id));
        match spm.kinds()[id] {
            Kind::Normal => {}
            kind => added.push(json!({
                "id": id, "content": text, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": kind == Kind::Special,
            })),
        }
    }
    let space = SPACE.to_string();
    let mut normalizers = Vec::new();
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": space}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if spm.add_space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": space}));
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": space}));
    let unk = texts.iter().position(|t| t == "<unk>").map(|i| texts[i].clone());
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    })
}

//! Shared by the fixture and llama.cpp-suite tests: the JSON form of GGUF tokenizer metadata written by
//! tests/reference/vocab_reference.py (keys are the `tokenizer.ggml.*` names without the prefix).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use edgeforge_tokenizer::GgufVocab;
use serde_json::Value;

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
}

/// GGUF tokenizer metadata (JSON, as gguf-py read it) → the vocabulary description our GGUF loader fills.
pub fn gguf_vocab(v: &Value) -> GgufVocab {
    let id = |k: &str| v[k].as_u64().map(|x| u32::try_from(x).unwrap());
    GgufVocab {
        model: v["model"].as_str().unwrap().to_owned(),
        pre: v["pre"].as_str().map(str::to_owned),
        tokens: strings(&v["tokens"]).unwrap(),
        token_types: v["token_type"].as_array().map(|a| a.iter().map(|x| x.as_i64().unwrap() as i32).collect()),
        merges: strings(&v["merges"]).unwrap_or_default(),
        bos_id: id("bos_token_id"),
        eos_id: id("eos_token_id"),
        unk_id: id("unknown_token_id"),
        pad_id: id("padding_token_id"),
        add_bos: v["add_bos_token"].as_bool(),
        add_eos: v["add_eos_token"].as_bool(),
        scores: v["scores"].as_array().map(|a| a.iter().map(|x| x.as_f64().unwrap() as f32).collect()),
        add_space_prefix: v["add_space_prefix"].as_bool(),
    }
}

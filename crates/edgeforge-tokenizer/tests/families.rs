//! Each family's tokenizer against llama.cpp's `llama-tokenize` on the stress texts (digits and long numbers,
//! CJK, emoji, code with tabs, whitespace runs, newlines, contractions, accented Latin, Arabic, mixed case,
//! control-token text). The small vocabularies and the ids are in tests/fixtures/<family>.json, produced
//! by tests/reference/vocab_reference.py (the llama.cpp version is written in each file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use edgeforge_tokenizer::{Tokenizer, TokenizerKind};
use serde_json::Value;

const FAMILIES: &[(&str, TokenizerKind)] = &[
    ("llama-bpe", TokenizerKind::ByteLevelBpe),
    ("qwen2", TokenizerKind::ByteLevelBpe),
    ("gpt-2", TokenizerKind::ByteLevelBpe),
    ("smollm", TokenizerKind::ByteLevelBpe),
    ("default", TokenizerKind::ByteLevelBpe),
    ("llama-spm", TokenizerKind::SentencePiece),
    ("phi-3", TokenizerKind::SentencePiece),
    ("gemma", TokenizerKind::SentencePiece),
];

fn fixture(family: &str) -> Value {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{family}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| u32::try_from(x.as_u64().unwrap()).unwrap()).collect()
}

/// (text, ids with add_special = the model's add_bos, ids without special tokens) of every case.
fn cases(f: &Value) -> Vec<(String, Vec<u32>, Vec<u32>)> {
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    cases
        .iter()
        .map(|c| (c["text"].as_str().unwrap().to_owned(), ids(&c["ids"]), ids(&c["ids_no_special"])))
        .collect()
}

/// Ours against llama.cpp's ids on every case; returns the number of cases.
fn check(t: &Tokenizer, family: &str, cases: &[(String, Vec<u32>, Vec<u32>)]) -> usize {
    for (text, with_special, plain) in cases {
        // llama-tokenize passes add_special = the model's add_bos.
        assert_eq!(&t.encode(text, t.add_bos()).unwrap(), with_special, "{family}: {text:?}");
        assert_eq!(&t.encode(text, false).unwrap(), plain, "{family}: {text:?} without special tokens");
    }
    cases.len()
}

#[test]
fn every_family_gives_llama_cpp_ids_on_the_stress_texts() {
    for &(family, kind) in FAMILIES {
        let f = fixture(family);
        assert!(f["llama_cpp"].as_str().unwrap().contains("commit"), "{family}: llama.cpp version missing");
        let t = Tokenizer::from_gguf_vocab(&common::gguf_vocab(&f["vocab"])).unwrap();
        assert_eq!(t.kind(), kind, "{family}");
        let cases = cases(&f);
        // The long last case joins all the others: it must exercise many merges, not only single bytes.
        let longest = &cases.last().unwrap().2;
        assert!(longest.len() > 150, "{family}: {} ids", longest.len());
        let n = check(&t, family, &cases);
        eprintln!("{family}: {n} stress texts, ids identical to llama-tokenize");
    }
}

#[test]
fn decode_gives_the_stress_texts_back() {
    for &(family, _) in FAMILIES {
        let f = fixture(family);
        let t = Tokenizer::from_gguf_vocab(&common::gguf_vocab(&f["vocab"])).unwrap();
        for (text, _, plain) in cases(&f) {
            assert_eq!(t.decode(&plain).unwrap(), text, "{family}");
        }
    }
}

#[test]
fn hugging_face_folder_gives_the_same_ids() {
    for &(family, kind) in FAMILIES {
        let f = fixture(family);
        let t = Tokenizer::from_gguf_vocab(&common::gguf_vocab(&f["vocab"])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        t.write_hf_files(dir.path()).unwrap();
        let back = Tokenizer::from_hf_dir(dir.path()).unwrap();
        assert_eq!(back.kind(), kind, "{family}");
        assert_eq!((back.bos_id(), back.eos_id(), back.add_bos()), (t.bos_id(), t.eos_id(), t.add_bos()), "{family}");
        check(&back, family, &cases(&f));
    }
}

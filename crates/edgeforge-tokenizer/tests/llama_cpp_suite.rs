//! llama.cpp's own tokenizer test suite (models/ggml-vocab-<name>.gguf with .inp texts and .out ids, as
//! its tests/test-tokenizer-0 reads them: add_special = false, parse_special = false) on the full
//! vocabularies, when the llama.cpp sources are on this machine (EDGEFORGE_LLAMA_CPP, else the pinned build's
//! directory under ~/.cache/edgeforge). Skipped with the reason printed when they are not: CI has no
//! llama.cpp sources, and tests/families.rs covers every family there with committed fixtures.
//!
//! Vocabularies we do not tokenize must be refused with a typed error naming the value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use edgeforge_tokenizer::{Tokenizer, TokenizerError};

/// Vocabularies with a test suite that must pass in full.
const SUPPORTED: &[&str] = &[
    "llama-bpe", "qwen2", "gpt-2", "starcoder", "refact", "command-r", "mpt", "falcon", "llama-spm", "phi-3",
];
/// Vocabularies that must be refused: pre-tokenizers and vocabulary kinds outside our table. (gemma-4 and
/// deepseek-llm are refused too; reading their 16 and 4 MB files through gguf-py alone takes ~45 s, so
/// tests/tiny_vocab.rs checks `gemma4` on a tiny vocabulary instead.)
const REFUSED: &[&str] = &["deepseek-coder", "qwen35", "bert-bge"];

fn llama_cpp_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("EDGEFORGE_LLAMA_CPP") {
        return Some(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".cache/edgeforge/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp"))
}

/// The tokenizer metadata of a GGUF file, read by gguf-py.
fn read_vocab(gguf: &Path) -> edgeforge_tokenizer::GgufVocab {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/vocab_reference.py");
    let out = Command::new("python3").arg(&script).arg("dump").arg(gguf).output().unwrap();
    assert!(out.status.success(), "{}: {}", gguf.display(), String::from_utf8_lossy(&out.stderr));
    common::gguf_vocab(&serde_json::from_slice(&out.stdout).unwrap())
}

/// The (text, ids) pairs of a suite, split as test-tokenizer-0 splits them.
fn suite(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(gguf.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(gguf.with_extension("gguf.out")).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    // A separator at the very end starts no further text.
    if inp.ends_with("\n__ggml_vocab_test__\n") {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), ids.len(), "{}", gguf.display());
    texts.into_iter().map(str::to_owned).zip(ids).collect()
}

/// The stress texts of tests/fixtures (the same in every fixture), joined into one, as the fixtures' last case.
fn stress_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt-2.json");
    let f: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f["cases"].as_array().unwrap().last().unwrap()["text"].as_str().unwrap().to_owned()
}

/// `llama-tokenize`'s ids for `text` (add_special = the model's add_bos unless `no_bos`), or `None` when the
/// binary is not built here.
fn llama_tokenize(llama_cpp: &Path, gguf: &Path, text: &str, no_bos: bool) -> Option<Vec<u32>> {
    let bin = llama_cpp.join("build/bin/llama-tokenize");
    if !bin.exists() {
        return None;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-m").arg(gguf).arg("-f").arg(file.path());
    cmd.args(["--ids", "--log-disable", "--no-escape", "--no-parse-special"]);
    if no_bos {
        cmd.arg("--no-bos");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    Some(serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap())
}

#[test]
fn llama_cpp_vocab_suites() {
    let Some(dir) = llama_cpp_dir().map(|d| d.join("models")).filter(|d| d.join("ggml-vocab-gpt-2.gguf").exists())
    else {
        eprintln!("skipped: no llama.cpp sources (models/ggml-vocab-*.gguf); set EDGEFORGE_LLAMA_CPP to run it");
        return;
    };
    let mut total = (0, 0);
    for name in SUPPORTED {
        let gguf = dir.join(format!("ggml-vocab-{name}.gguf"));
        let t = Tokenizer::from_gguf_vocab(&read_vocab(&gguf)).unwrap();
        let cases = suite(&gguf);
        let failed: Vec<&String> =
            cases.iter().filter(|(text, ids)| &t.encode(text, false).unwrap() != ids).map(|(text, _)| text).collect();
        eprintln!("{name}: {}/{} identical", cases.len() - failed.len(), cases.len());
        assert!(failed.is_empty(), "{name}: differs on {failed:?}");
        // The same through a Hugging Face folder written by us.
        let hf = tempfile::tempdir().unwrap();
        t.write_hf_files(hf.path()).unwrap();
        let back = Tokenizer::from_hf_dir(hf.path()).unwrap();
        for (text, ids) in &cases {
            assert_eq!(&back.encode(text, false).unwrap(), ids, "{name} through tokenizer.json: {text:?}");
        }
        // The stress texts on the full vocabulary, against the llama.cpp build itself.
        let root = dir.parent().unwrap();
        let text = stress_text();
        for no_bos in [true, false] {
            if let Some(want) = llama_tokenize(root, &gguf, &text, no_bos) {
                let add_special = !no_bos && t.add_bos();
                assert_eq!(t.encode(&text, add_special).unwrap(), want, "{name}: stress text, no_bos {no_bos}");
                assert_eq!(back.encode(&text, add_special).unwrap(), want, "{name} through tokenizer.json: stress text");
                if no_bos {
                    eprintln!("{name}: stress text, {} ids identical to llama-tokenize", want.len());
                }
            }
        }
        total.0 += cases.len();
        total.1 += 1;
    }
    eprintln!("llama.cpp suites: {} texts in {} vocabularies, all identical", total.0, total.1);
    // The reference model (SmolLM2) on the stress text.
    if let Some(model) = std::env::var_os("EDGEFORGE_TEST_MODEL").map(PathBuf::from).filter(|p| p.exists()) {
        let t = Tokenizer::from_gguf_vocab(&read_vocab(&model)).unwrap();
        let text = stress_text();
        if let Some(want) = llama_tokenize(dir.parent().unwrap(), &model, &text, true) {
            assert_eq!(t.encode(&text, false).unwrap(), want, "{}: stress text", model.display());
            eprintln!("{}: stress text, {} ids identical to llama-tokenize", model.display(), want.len());
        }
    }
    for name in REFUSED {
        let v = read_vocab(&dir.join(format!("ggml-vocab-{name}.gguf")));
        let e = Tokenizer::from_gguf_vocab(&v).unwrap_err();
        assert!(
            matches!(&e, TokenizerError::UnknownPreTokenizer { pre, .. } if Some(pre) == v.pre.as_ref())
                || matches!(&e, TokenizerError::UnsupportedModel { model } if *model == v.model),
            "{name}: {e}"
        );
        eprintln!("{name}: refused: {e}");
    }
}

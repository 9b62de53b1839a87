//! The bad-input catalogue: each malformed file gets a one-line error naming the file and the problem,
//! exit code 2, and no panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use edgeforge_core::gguf::MetaValue;
use edgeforge_export::hf::{write_hf_dir, FloatType};
use edgeforge_tests::{tiny_gguf, write_tiny_gguf, TinySpec};

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

/// Run edgeforge, expect exit 2 and one error line containing every `needles` entry.
fn expect_bad_input(args: &[&str], needles: &[&str]) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("edgeforge: error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {}", lines[0]);
    }
}

fn inspect(path: &Path, needles: &[&str]) {
    expect_bad_input(&["inspect", path.to_str().unwrap()], needles);
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_gguf(&TinySpec::default()).to_bytes();
    // Cut in the fixed header, where the counts no longer fit, inside the metadata, and in the tensor data.
    for (cut, want) in [
        (10, "file ends after 10 bytes"),
        (200, "declares 20 tensors, but only 184 bytes follow"),
        (1000, "but only"),
        (bytes.len() / 2, "outside the file"),
        (bytes.len() - 1, "outside the file"),
    ] {
        let p = dir.path().join(format!("truncated-{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        inspect(&p, &[&format!("truncated-{cut}.gguf"), want]);
    }
}

#[test]
fn gguf_declaring_2_pow_40_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("many-tensors.gguf");
    std::fs::write(&p, header(1 << 40, 0)).unwrap();
    inspect(&p, &["many-tensors.gguf", "1099511627776 tensors"]);
}

#[test]
fn gguf_with_2_pow_62_byte_string() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("long-string.gguf");
    let mut b = header(0, 1);
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    b.extend_from_slice(b"general.architecture");
    std::fs::write(&p, b).unwrap();
    inspect(&p, &["long-string.gguf", "4611686018427387904 bytes"]);
}

#[test]
fn gguf_with_unknown_tensor_type() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("odd-type.gguf");
    let mut b = header(1, 0);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'x');
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&32u64.to_le_bytes());
    b.extend_from_slice(&99u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32 + 128, 0);
    std::fs::write(&p, b).unwrap();
    inspect(&p, &["odd-type.gguf", "unknown tensor type id 99"]);
}

#[test]
fn gguf_with_unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mamba.gguf");
    let mut w = tiny_gguf(&TinySpec::default());
    w.set_meta("general.architecture", MetaValue::Str("mamba".into()));
    w.write(&p).unwrap();
    inspect(&p, &["mamba.gguf", "unsupported architecture `mamba`", "llama"]);
}

#[test]
fn gguf_missing_a_required_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-blocks.gguf");
    let mut w = tiny_gguf(&TinySpec::default());
    w.set_meta("llama.block_count", MetaValue::Str("two".into()));
    w.write(&p).unwrap();
    inspect(&p, &["no-blocks.gguf", "llama.block_count"]);
}

fn hf_folder(dir: &Path) -> std::path::PathBuf {
    let g = write_tiny_gguf(dir, "tiny.gguf", &TinySpec::default());
    let model = edgeforge_core::load_model(&g).unwrap();
    let out = dir.join("hf");
    write_hf_dir(&model, &out, FloatType::F32, false).unwrap();
    out
}

#[test]
fn safetensors_header_pointing_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_folder(dir.path());
    let header = br#"{"model.norm.weight":{"dtype":"F32","shape":[32],"data_offsets":[0,1000000]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0u8; 128]);
    std::fs::write(hf.join("model.safetensors"), b).unwrap();
    inspect(&hf, &["model.safetensors", "safetensors"]);
}

/// A valid HF folder whose config.json was changed by `edit`.
fn hf_folder_with_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let hf = hf_folder(dir);
    let cfg_path = hf.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    hf
}

#[test]
fn config_json_missing_a_field() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_folder_with_config(dir.path(), |cfg| {
        cfg.as_object_mut().unwrap().remove("hidden_size");
    });
    inspect(&hf, &["config.json", "missing field `hidden_size`"]);
}

#[test]
fn config_json_with_unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_folder_with_config(dir.path(), |cfg| {
        cfg["model_type"] = "gpt_neox".into();
        cfg["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]);
    });
    inspect(&hf, &["config.json", "unsupported architecture `gpt_neox`"]);
}

#[test]
fn empty_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default());
    let text = dir.path().join("empty.txt");
    std::fs::write(&text, b"").unwrap();
    expect_bad_input(
        &["eval", "perplexity", "--model", model.to_str().unwrap(), "--text", text.to_str().unwrap()],
        &["empty.txt", "empty"],
    );
}

#[test]
fn missing_model_and_unknown_dataset() {
    inspect(Path::new("/nonexistent/model.gguf"), &["/nonexistent/model.gguf"]);
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default());
    expect_bad_input(
        &["eval", "perplexity", "--model", model.to_str().unwrap(), "--text", "no-such-text"],
        &["no-such-text", "wikitext-2-test"],
    );
}

#[test]
fn text_shorter_than_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default());
    let text = dir.path().join("short.txt");
    std::fs::write(&text, "the cat").unwrap();
    expect_bad_input(
        &["eval", "perplexity", "--model", model.to_str().unwrap(), "--text", text.to_str().unwrap()],
        &["fewer than one context of 512"],
    );
}

/// Run edgeforge with its address space capped at `limit_kb` (ulimit -v): an allocation sized by a number
/// read from the file aborts the process (exit 134) instead of passing unnoticed.
fn expect_bad_input_within(limit_kb: u64, args: &[&str], needles: &[&str]) {
    let script = format!("ulimit -v {limit_kb} && exec \"$0\" \"$@\"");
    let out = Command::new("sh").arg("-c").arg(script).arg(BIN).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {stderr}");
    let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    for n in needles {
        assert!(line.contains(n), "`{n}` not in: {line}");
    }
}

#[test]
fn gguf_declaring_sixteen_million_blocks() {
    // Issue 15: a 1.5 KB file with `llama.block_count` = 16,000,000 made the loader list 144 million
    // expected tensors (several GB) before looking at the file's 20.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("blocks16m.gguf");
    let mut w = tiny_gguf(&TinySpec::default());
    w.set_meta("llama.block_count", MetaValue::U32(16_000_000));
    w.write(&p).unwrap();
    expect_bad_input_within(1 << 20, &["inspect", p.to_str().unwrap()], &["blocks16m.gguf", "16000000 layers", "block_count", "holds 20"]);
}

#[test]
fn config_json_declaring_sixteen_million_layers() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_folder_with_config(dir.path(), |cfg| cfg["num_hidden_layers"] = 16_000_000.into());
    expect_bad_input_within(1 << 20, &["inspect", hf.to_str().unwrap()], &["16000000 layers", "num_hidden_layers"]);
}

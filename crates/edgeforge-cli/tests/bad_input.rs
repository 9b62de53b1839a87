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

// ---------------------------------------------------------------------------------------------------------
// The table: one row per hostile input. `build` writes the file(s) into the case's own folder and returns
// the arguments; the binary runs in that folder under `ulimit -v` (an allocation sized by a number from the
// file aborts instead of passing) and under /usr/bin/time (its peak RSS is measured and bounded).

struct Case {
    name: &'static str,
    build: fn(&Path) -> Vec<String>,
    /// Each must appear in the first stderr line (the file name among them).
    needles: &'static [&'static str],
}

/// Address-space cap for every case: far above what a tiny file needs, far below a size read from a file.
const LIMIT_KB: u64 = 1 << 20;
/// Peak RSS bound for every case (all inputs here are a few KB, or sparse).
const MAX_RSS_KB: u64 = 200 * 1024;

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

fn gstr(b: &mut Vec<u8>, x: &[u8]) {
    b.extend_from_slice(&(x.len() as u64).to_le_bytes());
    b.extend_from_slice(x);
}

/// One metadata entry: key, value type, encoded value.
fn kv(key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    gstr(&mut b, key.as_bytes());
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(value);
    b
}

fn kv_u32(key: &str, v: u32) -> Vec<u8> {
    kv(key, 4, &v.to_le_bytes())
}

/// One tensor info: name, dims, ggml type id, offset.
fn tinfo(name: &[u8], dims: &[u64], type_id: u32, offset: u64) -> Vec<u8> {
    let mut b = Vec::new();
    gstr(&mut b, name);
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b
}

/// A GGUF v3 file from raw entries, with `data_len` zero bytes after the 32-byte aligned header.
fn raw_gguf(kvs: &[Vec<u8>], tensors: &[Vec<u8>], data_len: usize) -> Vec<u8> {
    let mut b = header(tensors.len() as u64, kvs.len() as u64);
    for x in kvs.iter().chain(tensors) {
        b.extend_from_slice(x);
    }
    b.resize(b.len().div_ceil(32) * 32 + data_len, 0);
    b
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    s(p)
}

fn inspect_raw(dir: &Path, name: &str, bytes: &[u8]) -> Vec<String> {
    vec!["inspect".into(), put(dir, name, bytes)]
}

/// The tiny model with one metadata key replaced.
fn tiny_with(dir: &Path, name: &str, key: &str, v: MetaValue) -> Vec<String> {
    let mut w = tiny_gguf(&TinySpec::default());
    w.set_meta(key, v);
    let p = dir.join(name);
    w.write(&p).unwrap();
    vec!["inspect".into(), s(p)]
}

/// A safetensors file: header length, header text, then `data_len` zero bytes.
fn safetensors_bytes(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data_len, 0);
    b
}

/// A valid HF folder whose model.safetensors is replaced by `bytes`.
fn hf_with_weights(dir: &Path, bytes: &[u8]) -> Vec<String> {
    let hf = hf_folder(dir);
    std::fs::write(hf.join("model.safetensors"), bytes).unwrap();
    vec!["inspect".into(), s(hf)]
}

fn hf_with_config(dir: &Path, edit: fn(&mut serde_json::Value)) -> Vec<String> {
    vec!["inspect".into(), s(hf_folder_with_config(dir, edit))]
}

fn hf_with_file(dir: &Path, file: &str, bytes: &[u8]) -> Vec<String> {
    let hf = hf_folder(dir);
    std::fs::write(hf.join(file), bytes).unwrap();
    vec!["inspect".into(), s(hf)]
}

fn validate(dir: &Path, name: &str, text: &str) -> Vec<String> {
    write_tiny_gguf(dir, "tiny.gguf", &TinySpec::default());
    vec!["validate".into(), put(dir, name, text.as_bytes())]
}

/// A minimal report.json `compare` accepts, as written by a real run (see `real_report`).
fn compare_with(dir: &Path, name: &str, bytes: &[u8]) -> Vec<String> {
    let good = put(dir, "good-report.json", &real_report());
    vec!["compare".into(), good, put(dir, name, bytes)]
}

fn report_edited(edit: fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&real_report()).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

const TINY_RECIPE: &str = "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: 32\ntargets:\n  - { format: gguf }\n";

/// One real run on the tiny model, done once: its folder holds report.json, manifest.json and a checkpoint.
fn real_run() -> &'static Path {
    static RUN: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default());
        std::fs::write(dir.path().join("r.yaml"), TINY_RECIPE).unwrap();
        let out = Command::new(BIN).args(["run", "r.yaml", "--out", "out", "--threads", "1"]).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
    .path()
}

fn real_report() -> Vec<u8> {
    std::fs::read(real_run().join("out/report.json")).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

const CKPT: &str = "out/checkpoints/000-quantize-rtn.ckpt";

/// The real run copied into `dir` with its checkpoint changed by `edit`, then resumed.
fn resume_with(dir: &Path, edit: fn(&mut Vec<u8>)) -> Vec<String> {
    copy_dir(real_run(), dir);
    let _ = std::fs::remove_file(dir.join("out/report.json"));
    let p = dir.join(CKPT);
    let mut b = std::fs::read(&p).unwrap();
    edit(&mut b);
    std::fs::write(&p, b).unwrap();
    ["run", "r.yaml", "--out", "out", "--threads", "1", "--resume"].map(String::from).to_vec()
}

/// The real run's export folder copied into `dir` with manifest.json changed by `edit`, then verified.
fn verify_with(dir: &Path, edit: fn(&mut Vec<u8>)) -> Vec<String> {
    copy_dir(&real_run().join("out"), &dir.join("out"));
    let p = dir.join("out/manifest.json");
    let mut b = std::fs::read(&p).unwrap();
    edit(&mut b);
    std::fs::write(&p, b).unwrap();
    vec!["verify".into(), s(dir.join("out"))]
}

fn manifest_edited(b: &mut Vec<u8>, edit: fn(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
    edit(&mut v);
    *b = serde_json::to_vec(&v).unwrap();
}

fn perplexity_on(dir: &Path, name: &str, bytes: &[u8]) -> Vec<String> {
    let model = write_tiny_gguf(dir, "tiny.gguf", &TinySpec::default());
    ["eval", "perplexity", "--model", &s(model), "--text", &put(dir, name, bytes), "--ctx", "8"].map(String::from).to_vec()
}

/// A 2 GB file of zeros that takes no disk space.
fn sparse_2gb(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(2 << 30).unwrap();
    s(p)
}

fn st_header(dtype: &str, shape: &str, offsets: &str) -> String {
    format!(r#"{{"model.norm.weight":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
}

const U64_MAX: [u8; 8] = u64::MAX.to_le_bytes();

#[rustfmt::skip]
const CASES: &[Case] = &[
    // ---- GGUF: the fixed header
    Case { name: "gguf-empty", build: |d| inspect_raw(d, "empty.gguf", b""), needles: &["empty.gguf", "file ends after 0 bytes"] },
    Case { name: "gguf-only-magic", build: |d| inspect_raw(d, "magic-only.gguf", b"GGUF"), needles: &["magic-only.gguf", "file ends after 4 bytes", "version"] },
    Case { name: "gguf-bad-magic", build: |d| inspect_raw(d, "ggml.gguf", b"GGMLxxxxxxxxxxxxxxxxxxxxxxxx"), needles: &["ggml.gguf", "bad magic"] },
    Case { name: "gguf-version-0", build: |d| { let mut b = header(0, 0); b[4..8].copy_from_slice(&0u32.to_le_bytes()); inspect_raw(d, "v0.gguf", &b) }, needles: &["v0.gguf", "unsupported GGUF version 0"] },
    Case { name: "gguf-version-4", build: |d| { let mut b = header(0, 0); b[4..8].copy_from_slice(&4u32.to_le_bytes()); inspect_raw(d, "v4.gguf", &b) }, needles: &["v4.gguf", "unsupported GGUF version 4"] },
    Case { name: "gguf-version-u32-max", build: |d| { let mut b = header(0, 0); b[4..8].copy_from_slice(&u32::MAX.to_le_bytes()); inspect_raw(d, "vmax.gguf", &b) }, needles: &["vmax.gguf", "unsupported GGUF version 4294967295"] },
    Case { name: "gguf-n-kv-u64-max", build: |d| inspect_raw(d, "n-kv.gguf", &header(0, u64::MAX)), needles: &["n-kv.gguf", "declares 18446744073709551615 metadata entries"] },
    Case { name: "gguf-n-tensors-u64-max", build: |d| inspect_raw(d, "n-t.gguf", &header(u64::MAX, 0)), needles: &["n-t.gguf", "declares 18446744073709551615 tensors"] },
    Case { name: "gguf-n-kv-just-too-many", build: |d| { let mut b = header(0, 3); b.extend_from_slice(&kv_u32("a", 1)); inspect_raw(d, "n-kv3.gguf", &b) }, needles: &["n-kv3.gguf", "declares 3 metadata entries"] },
    // ---- GGUF: metadata
    Case { name: "gguf-key-length-u64-max", build: |d| { let mut b = header(0, 1); b.extend_from_slice(&U64_MAX); b.extend_from_slice(&[0; 32]); inspect_raw(d, "key-len.gguf", &b) }, needles: &["key-len.gguf", "metadata key of 18446744073709551615 bytes"] },
    Case { name: "gguf-key-not-utf8", build: |d| inspect_raw(d, "key-utf8.gguf", &raw_gguf(&[{ let mut b = Vec::new(); gstr(&mut b, b"\xff\xfe"); b.extend_from_slice(&4u32.to_le_bytes()); b.extend_from_slice(&1u32.to_le_bytes()); b }], &[], 0)), needles: &["key-utf8.gguf", "metadata key is not valid UTF-8"] },
    Case { name: "gguf-value-string-2-pow-63", build: |d| { let mut v = (1u64 << 63).to_le_bytes().to_vec(); v.extend_from_slice(b"abc"); inspect_raw(d, "val-len.gguf", &raw_gguf(&[kv("general.name", 8, &v)], &[], 0)) }, needles: &["val-len.gguf", "metadata string of 9223372036854775808 bytes"] },
    Case { name: "gguf-value-string-over-cap", build: |d| { let mut v = (20u64 << 20).to_le_bytes().to_vec(); v.resize(v.len() + (20 << 20), b'a'); inspect_raw(d, "val-cap.gguf", &raw_gguf(&[kv("general.name", 8, &v)], &[], 0)) }, needles: &["val-cap.gguf", "metadata string of 20971520 bytes"] },
    Case { name: "gguf-unknown-value-type", build: |d| inspect_raw(d, "vtype.gguf", &raw_gguf(&[kv("general.name", 13, &[0; 8])], &[], 0)), needles: &["vtype.gguf", "`general.name` has unknown value type 13"] },
    Case { name: "gguf-value-type-u32-max", build: |d| inspect_raw(d, "vtype-max.gguf", &raw_gguf(&[kv("k", u32::MAX, &[0; 8])], &[], 0)), needles: &["vtype-max.gguf", "unknown value type 4294967295"] },
    Case { name: "gguf-array-length-2-pow-60", build: |d| { let mut v = 4u32.to_le_bytes().to_vec(); v.extend_from_slice(&(1u64 << 60).to_le_bytes()); inspect_raw(d, "arr-len.gguf", &raw_gguf(&[kv("a", 9, &v)], &[], 0)) }, needles: &["arr-len.gguf", "declares 1152921504606846976 array elements"] },
    Case { name: "gguf-string-array-length-u64-max", build: |d| { let mut v = 8u32.to_le_bytes().to_vec(); v.extend_from_slice(&U64_MAX); inspect_raw(d, "arr-str.gguf", &raw_gguf(&[kv("tokenizer.ggml.tokens", 9, &v)], &[], 0)) }, needles: &["arr-str.gguf", "declares 18446744073709551615 array elements"] },
    Case { name: "gguf-array-element-string-too-long", build: |d| { let mut v = 8u32.to_le_bytes().to_vec(); v.extend_from_slice(&2u64.to_le_bytes()); v.extend_from_slice(&(1u64 << 40).to_le_bytes()); v.extend_from_slice(&[0; 16]); inspect_raw(d, "arr-elem.gguf", &raw_gguf(&[kv("t", 9, &v)], &[], 0)) }, needles: &["arr-elem.gguf", "array string of 1099511627776 bytes"] },
    Case { name: "gguf-nested-array", build: |d| { let mut v = 9u32.to_le_bytes().to_vec(); v.extend_from_slice(&1u64.to_le_bytes()); v.extend_from_slice(&4u32.to_le_bytes()); inspect_raw(d, "nested.gguf", &raw_gguf(&[kv("n", 9, &v)], &[], 0)) }, needles: &["nested.gguf", "`n` is an array of arrays"] },
    Case { name: "gguf-array-unknown-element-type", build: |d| { let mut v = 42u32.to_le_bytes().to_vec(); v.extend_from_slice(&1u64.to_le_bytes()); inspect_raw(d, "arr-type.gguf", &raw_gguf(&[kv("a", 9, &v)], &[], 0)) }, needles: &["arr-type.gguf", "`a` has unknown value type 42"] },
    Case { name: "gguf-duplicate-key", build: |d| inspect_raw(d, "dup-key.gguf", &raw_gguf(&[kv_u32("a", 1), kv_u32("a", 2)], &[], 0)), needles: &["dup-key.gguf", "duplicate metadata key `a`"] },
    Case { name: "gguf-alignment-0", build: |d| inspect_raw(d, "align0.gguf", &raw_gguf(&[kv_u32("general.alignment", 0)], &[], 0)), needles: &["align0.gguf", "general.alignment = 0 is not a power of two"] },
    Case { name: "gguf-alignment-48", build: |d| inspect_raw(d, "align48.gguf", &raw_gguf(&[kv_u32("general.alignment", 48)], &[], 0)), needles: &["align48.gguf", "general.alignment = 48 is not a power of two"] },
    Case { name: "gguf-alignment-wrong-type", build: |d| inspect_raw(d, "align-str.gguf", &raw_gguf(&[kv("general.alignment", 8, &{ let mut v = Vec::new(); gstr(&mut v, b"32"); v })], &[], 0)), needles: &["align-str.gguf", "`general.alignment` has type string, expected u32"] },
    // ---- GGUF: tensor infos
    Case { name: "gguf-tensor-dims-overflow-u64", build: |d| inspect_raw(d, "dims-ovf.gguf", &raw_gguf(&[], &[tinfo(b"t", &[1 << 32, 1 << 32, 1 << 32], 0, 0)], 64)), needles: &["dims-ovf.gguf", "`t` has an invalid shape [4294967296, 4294967296, 4294967296]"] },
    Case { name: "gguf-tensor-dim-0", build: |d| inspect_raw(d, "dim0.gguf", &raw_gguf(&[], &[tinfo(b"t", &[32, 0], 0, 0)], 64)), needles: &["dim0.gguf", "`t` has an invalid shape [32, 0]"] },
    Case { name: "gguf-tensor-bytes-overflow", build: |d| inspect_raw(d, "bytes-ovf.gguf", &raw_gguf(&[], &[tinfo(b"t", &[1 << 62], 0, 0)], 64)), needles: &["bytes-ovf.gguf", "`t`"] },
    Case { name: "gguf-n-dims-0", build: |d| inspect_raw(d, "ndims0.gguf", &raw_gguf(&[], &[tinfo(b"t", &[], 0, 0)], 64)), needles: &["ndims0.gguf", "`t` has 0 dimensions (1 to 4)"] },
    Case { name: "gguf-n-dims-5", build: |d| inspect_raw(d, "ndims5.gguf", &raw_gguf(&[], &[tinfo(b"t", &[1, 1, 1, 1, 1], 0, 0)], 64)), needles: &["ndims5.gguf", "`t` has 5 dimensions"] },
    Case { name: "gguf-n-dims-u32-max", build: |d| { let mut t = Vec::new(); gstr(&mut t, b"t"); t.extend_from_slice(&u32::MAX.to_le_bytes()); t.extend_from_slice(&[0; 64]); inspect_raw(d, "ndims-max.gguf", &raw_gguf(&[], &[t], 0)) }, needles: &["ndims-max.gguf", "`t` has 4294967295 dimensions"] },
    Case { name: "gguf-tensor-offset-past-end", build: |d| inspect_raw(d, "off-end.gguf", &raw_gguf(&[], &[tinfo(b"t", &[32], 0, 1 << 20)], 128)), needles: &["off-end.gguf", "`t`: data", "lies outside the file"] },
    Case { name: "gguf-tensor-offset-u64-max-aligned", build: |d| inspect_raw(d, "off-max.gguf", &raw_gguf(&[], &[tinfo(b"t", &[32], 0, u64::MAX - 31)], 128)), needles: &["off-max.gguf", "`t`: data", "lies outside the file"] },
    Case { name: "gguf-tensor-offset-misaligned", build: |d| inspect_raw(d, "misaligned.gguf", &raw_gguf(&[], &[tinfo(b"t", &[8], 0, 4)], 128)), needles: &["misaligned.gguf", "offset 4 is not a multiple of the alignment 32"] },
    Case { name: "gguf-duplicate-tensor", build: |d| inspect_raw(d, "dup-t.gguf", &raw_gguf(&[], &[tinfo(b"t", &[8], 0, 0), tinfo(b"t", &[8], 0, 32)], 128)), needles: &["dup-t.gguf", "duplicate tensor name `t`"] },
    Case { name: "gguf-tensor-name-not-utf8", build: |d| inspect_raw(d, "tname.gguf", &raw_gguf(&[], &[tinfo(b"\xc3\x28", &[8], 0, 0)], 128)), needles: &["tname.gguf", "tensor name is not valid UTF-8"] },
    Case { name: "gguf-tensor-type-u32-max", build: |d| inspect_raw(d, "ttype.gguf", &raw_gguf(&[], &[tinfo(b"t", &[32], u32::MAX, 0)], 128)), needles: &["ttype.gguf", "unknown tensor type id 4294967295"] },
    Case { name: "gguf-row-not-whole-blocks", build: |d| inspect_raw(d, "q4-33.gguf", &raw_gguf(&[], &[tinfo(b"t", &[33], 2, 0)], 128)), needles: &["q4-33.gguf", "row length 33 is not a multiple of the Q4_0 block size 32"] },
    Case { name: "gguf-tensor-name-2-pow-60", build: |d| { let mut t = (1u64 << 60).to_le_bytes().to_vec(); t.extend_from_slice(&[0; 64]); inspect_raw(d, "tname-len.gguf", &raw_gguf(&[], &[t], 0)) }, needles: &["tname-len.gguf", "tensor name of 1152921504606846976 bytes"] },
    // ---- GGUF: model-level keys on an otherwise valid file
    Case { name: "gguf-16m-blocks", build: |d| tiny_with(d, "blocks16m.gguf", "llama.block_count", MetaValue::U32(16_000_000)), needles: &["blocks16m.gguf", "16000000 layers (block_count)", "holds 20"] },
    Case { name: "gguf-head-count-0", build: |d| tiny_with(d, "heads0.gguf", "llama.attention.head_count", MetaValue::U32(0)), needles: &["heads0.gguf", "num_attention_heads", "must be positive"] },
    Case { name: "gguf-embedding-length-u64-max", build: |d| tiny_with(d, "embd-max.gguf", "llama.embedding_length", MetaValue::U64(u64::MAX)), needles: &["embd-max.gguf", "hidden_size", "implausibly large"] },
    Case { name: "gguf-kv-heads-not-dividing", build: |d| tiny_with(d, "kv3.gguf", "llama.attention.head_count_kv", MetaValue::U32(3)), needles: &["kv3.gguf", "num_key_value_heads", "must divide num_attention_heads"] },
    Case { name: "gguf-tokens-wrong-type", build: |d| tiny_with(d, "tokens-u32.gguf", "tokenizer.ggml.tokens", MetaValue::U32(5)), needles: &["tokens-u32.gguf", "`tokenizer.ggml.tokens` has type u32, expected array of string"] },
    Case { name: "gguf-bos-id-out-of-range", build: |d| tiny_with(d, "bos.gguf", "tokenizer.ggml.bos_token_id", MetaValue::U32(1_000_000)), needles: &["bos.gguf", "1000000"] },
    Case { name: "gguf-bos-id-negative", build: |d| tiny_with(d, "bos-neg.gguf", "tokenizer.ggml.bos_token_id", MetaValue::I32(-1)), needles: &["bos-neg.gguf", "`tokenizer.ggml.bos_token_id` has type i32, expected u32"] },
    Case { name: "gguf-rms-eps-nan", build: |d| tiny_with(d, "eps-nan.gguf", "llama.attention.layer_norm_rms_epsilon", MetaValue::F32(f32::NAN)), needles: &["eps-nan.gguf", "rms_norm_eps", "must be a positive number"] },
    Case { name: "gguf-unknown-tokenizer-model", build: |d| tiny_with(d, "tok-model.gguf", "tokenizer.ggml.model", MetaValue::Str("wordpiece".into())), needles: &["tok-model.gguf", "wordpiece"] },
    // ---- safetensors
    Case { name: "st-shorter-than-length", build: |d| hf_with_weights(d, b"\x01\x02\x03"), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-header-length-u64-max", build: |d| hf_with_weights(d, &{ let mut b = U64_MAX.to_vec(); b.extend_from_slice(b"{}"); b }), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-header-length-2-pow-63", build: |d| hf_with_weights(d, &{ let mut b = (1u64 << 63).to_le_bytes().to_vec(); b.extend_from_slice(b"{}"); b }), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-header-not-json", build: |d| hf_with_weights(d, &safetensors_bytes("this is not json", 0)), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-header-not-utf8", build: |d| hf_with_weights(d, &{ let mut b = 4u64.to_le_bytes().to_vec(); b.extend_from_slice(b"\xff\xfe\xfd\xfc"); b }), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-unknown-dtype", build: |d| hf_with_weights(d, &safetensors_bytes(&st_header("Q9", "[32]", "[0,128]"), 128)), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-unsupported-dtype", build: |d| hf_with_weights(d, &safetensors_bytes(&st_header("I8", "[32]", "[0,32]"), 32)), needles: &["model.safetensors", "only F32, F16 and BF16"] },
    Case { name: "st-shape-times-dtype-not-range", build: |d| hf_with_weights(d, &safetensors_bytes(&st_header("F32", "[32]", "[0,64]"), 64)), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-shape-overflows", build: |d| hf_with_weights(d, &safetensors_bytes(&st_header("F32", "[4611686018427387904,4611686018427387904]", "[0,64]"), 64)), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-overlapping-ranges", build: |d| hf_with_weights(d, &safetensors_bytes(r#"{"model.norm.weight":{"dtype":"F32","shape":[32],"data_offsets":[0,128]},"model.embed_tokens.weight":{"dtype":"F32","shape":[32],"data_offsets":[64,192]}}"#, 192)), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-offsets-reversed", build: |d| hf_with_weights(d, &safetensors_bytes(&st_header("F32", "[32]", "[128,0]"), 128)), needles: &["model.safetensors", "invalid safetensors file"] },
    Case { name: "st-index-path-escape", build: |d| { let hf = hf_folder(d); std::fs::remove_file(hf.join("model.safetensors")).unwrap(); std::fs::write(hf.join("model.safetensors.index.json"), r#"{"weight_map":{"model.norm.weight":"../../etc/passwd"}}"#).unwrap(); vec!["inspect".into(), s(hf)] }, needles: &["model.safetensors.index.json", "is not a plain file name"] },
    Case { name: "st-index-not-json", build: |d| { let hf = hf_folder(d); std::fs::remove_file(hf.join("model.safetensors")).unwrap(); std::fs::write(hf.join("model.safetensors.index.json"), "{weight_map").unwrap(); vec!["inspect".into(), s(hf)] }, needles: &["model.safetensors.index.json", "not valid JSON"] },
    // ---- config.json
    Case { name: "config-not-json", build: |d| hf_with_file(d, "config.json", b"{\"hidden_size\": 32,"), needles: &["config.json", "not valid JSON"] },
    Case { name: "config-hidden-size-negative", build: |d| hf_with_config(d, |c| c["hidden_size"] = (-32).into()), needles: &["config.json", "`hidden_size` should be a non-negative integer, found -32"] },
    Case { name: "config-hidden-size-zero", build: |d| hf_with_config(d, |c| c["hidden_size"] = 0.into()), needles: &["config.json", "hidden_size", "must be positive"] },
    Case { name: "config-hidden-size-huge", build: |d| hf_with_config(d, |c| c["hidden_size"] = u64::MAX.into()), needles: &["config.json", "hidden_size", "implausibly large"] },
    Case { name: "config-hidden-size-float", build: |d| hf_with_config(d, |c| c["hidden_size"] = 32.5.into()), needles: &["config.json", "`hidden_size` should be a non-negative integer, found 32.5"] },
    Case { name: "config-heads-not-dividing-hidden", build: |d| hf_with_config(d, |c| { c["num_attention_heads"] = 5.into(); c["num_key_value_heads"] = 5.into(); c.as_object_mut().unwrap().remove("head_dim"); }), needles: &["config.json", "num_attention_heads", "does not divide hidden_size"] },
    Case { name: "config-heads-zero", build: |d| hf_with_config(d, |c| c["num_attention_heads"] = 0.into()), needles: &["config.json", "num_attention_heads", "must be positive"] },
    Case { name: "config-missing-vocab-size", build: |d| hf_with_config(d, |c| { c.as_object_mut().unwrap().remove("vocab_size"); }), needles: &["config.json", "missing field `vocab_size`"] },
    Case { name: "gguf-rope-scaling-yarn", build: |d| tiny_with(d, "yarn.gguf", "llama.rope.scaling.type", MetaValue::Str("yarn".into())), needles: &["yarn.gguf", "rope.scaling.type", "yarn", "linear"] },
    Case { name: "gguf-llama-sliding-window", build: |d| tiny_with(d, "swa.gguf", "llama.attention.sliding_window", MetaValue::U32(4096)), needles: &["swa.gguf", "attention.sliding_window", "does not apply a sliding window"] },
    Case { name: "gguf-partial-rope", build: |d| tiny_with(d, "rot.gguf", "llama.attention.key_length", MetaValue::U32(16)), needles: &["rot.gguf", "rope.dimension_count", "partial RoPE"] },
    Case { name: "gguf-moe", build: |d| tiny_with(d, "moe.gguf", "llama.expert_count", MetaValue::U32(8)), needles: &["moe.gguf", "expert_count", "mixture-of-experts"] },
    Case { name: "config-rope-scaling-longrope", build: |d| hf_with_config(d, |c| c["rope_scaling"] = serde_json::json!({"rope_type": "longrope", "long_factor": [1.0]})), needles: &["config.json", "rope_scaling", "longrope", "not implemented"] },
    Case { name: "config-qwen2-sliding-window", build: |d| hf_with_config(d, |c| { c["model_type"] = "qwen2".into(); c["use_sliding_window"] = true.into(); }), needles: &["config.json", "use_sliding_window"] },
    Case { name: "config-gemma-activation-on-llama", build: |d| hf_with_config(d, |c| c["hidden_act"] = "gelu_pytorch_tanh".into()), needles: &["config.json", "hidden_act", "gelu_pytorch_tanh"] },
    Case { name: "config-rope-parameters", build: |d| hf_with_config(d, |c| c["rope_parameters"] = serde_json::json!({"rope_type": "default"})), needles: &["config.json", "rope_parameters", "rope_theta"] },
    Case { name: "config-not-an-object", build: |d| hf_with_file(d, "config.json", b"[1, 2, 3]"), needles: &["config.json", "unsupported architecture"] },
    // ---- tokenizer.json
    Case { name: "tokenizer-not-json", build: |d| hf_with_file(d, "tokenizer.json", b"{\"model\": "), needles: &["tokenizer"] },
    Case { name: "tokenizer-unknown-model-type", build: |d| hf_with_file(d, "tokenizer.json", br#"{"model":{"type":"Mystery","vocab":{}},"added_tokens":[]}"#), needles: &["tokenizer.json", "not a valid tokenizer file"] },
    Case { name: "tokenizer-not-utf8", build: |d| hf_with_file(d, "tokenizer.json", b"\xff\xfe{}"), needles: &["tokenizer"] },
    // ---- recipes
    Case { name: "recipe-yaml-syntax", build: |d| validate(d, "syntax.yaml", "version: 1\nmodel: tiny.gguf\npasses: [\n"), needles: &["syntax.yaml"] },
    Case { name: "recipe-unknown-key", build: |d| validate(d, "key.yaml", "version: 1\nmodel: tiny.gguf\nmodle: x\n"), needles: &["key.yaml:3:1", "unknown field `modle`"] },
    Case { name: "recipe-wrong-type", build: |d| validate(d, "type.yaml", "version: 1\nmodel: tiny.gguf\npasses: yes\n"), needles: &["type.yaml:3:"] },
    Case { name: "recipe-negative-seed", build: |d| validate(d, "neg.yaml", "version: 1\nmodel: tiny.gguf\ncalibration: { dataset: wikitext-2-valid, samples: 4, seq_len: 8, seed: -1 }\n"), needles: &["neg.yaml:3:73", "invalid u64"] },
    Case { name: "recipe-unknown-pass", build: |d| validate(d, "pass.yaml", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: sparsify\n"), needles: &["pass.yaml:4:", "unknown pass `sparsify`"] },
    Case { name: "recipe-huge-number", build: |d| validate(d, "huge.yaml", "version: 1\nmodel: tiny.gguf\ncalibration: { dataset: wikitext-2-valid, samples: 99999999999999999999999, seq_len: 8 }\n"), needles: &["huge.yaml:3:"] },
    Case { name: "recipe-huge-seq-len", build: |d| validate(d, "seq.yaml", "version: 1\nmodel: tiny.gguf\ncalibration: { dataset: wikitext-2-valid, samples: 4, seq_len: 18446744073709551615 }\n"), needles: &["seq.yaml:3:64", "invalid"] },
    Case { name: "recipe-not-utf8", build: |d| validate(d, "bin.yaml", "version: 1\nmodel: \u{0}tiny.gguf\n"), needles: &["bin.yaml"] },
    Case { name: "recipe-alias-bomb", build: |d| validate(d, "bomb.yaml", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"), needles: &["bomb.yaml"] },
    Case { name: "recipe-baseline-report-corrupt", build: |d| { put(d, "bad-base.json", b"{\"schema_version\": 1,"); validate(d, "base.yaml", "version: 1\nmodel: tiny.gguf\ngates:\n  baseline: bad-base.json\n  max_size_bytes: 1000000\n") }, needles: &["base.yaml:4:13", "gates.baseline", "bad-base.json", "not an edgeforge report"] },
    Case { name: "run-baseline-report-corrupt", build: |d| { let mut args = validate(d, "base-run.yaml", "version: 1\nmodel: tiny.gguf\ngates:\n  baseline: bad-base.json\n  max_size_bytes: 1000000\n"); put(d, "bad-base.json", b"[]"); args[0] = "run".into(); args.extend(["--out".into(), "out".into()]); args }, needles: &["base-run.yaml:4:13", "bad-base.json"] },
    // ---- reports given to compare
    Case { name: "report-not-json", build: |d| compare_with(d, "not-json.json", b"perplexity: 12\n"), needles: &["not-json.json"] },
    Case { name: "report-empty", build: |d| compare_with(d, "empty.json", b""), needles: &["empty.json"] },
    Case { name: "report-missing-fields", build: |d| compare_with(d, "missing.json", b"{\"schema_version\": 1}"), needles: &["missing.json", "missing field"] },
    Case { name: "report-null-number", build: |d| compare_with(d, "null.json", &report_edited(|v| v["model_after"]["bytes"] = serde_json::Value::Null)), needles: &["null.json"] },
    Case { name: "report-nan-literal", build: |d| compare_with(d, "nan-literal.json", &String::from_utf8(real_report()).unwrap().replacen("\"bytes\":", "\"bytes\": NaN, \"x\":", 1).into_bytes()), needles: &["nan-literal.json"] },
    Case { name: "report-wrong-schema-version", build: |d| compare_with(d, "v99.json", &report_edited(|v| v["schema_version"] = 99.into())), needles: &["v99.json", "99"] },
    Case { name: "report-binary", build: |d| compare_with(d, "bin.json", &[0xff, 0x00, 0x13, 0x37]), needles: &["bin.json"] },
    // ---- checkpoints given to --resume
    Case { name: "ckpt-truncated", build: |d| resume_with(d, |b| b.truncate(b.len() / 2)), needles: &["000-quantize-rtn.ckpt", "sha256"] },
    Case { name: "ckpt-truncated-to-magic", build: |d| resume_with(d, |b| b.truncate(6)), needles: &["000-quantize-rtn.ckpt", "not an edgeforge checkpoint"] },
    Case { name: "ckpt-bit-flipped-header-end", build: |d| resume_with(d, |b| { let end = 16 + u64::from_le_bytes(b[8..16].try_into().unwrap()) as usize; b[end - 1] ^= 0x04; }), needles: &["000-quantize-rtn.ckpt", "header is not valid"] },
    Case { name: "ckpt-bit-flipped-data", build: |d| resume_with(d, |b| { let n = b.len(); b[n - 3] ^= 0x10; }), needles: &["000-quantize-rtn.ckpt", "does not match its sha256"] },
    Case { name: "ckpt-wrong-version", build: |d| resume_with(d, |b| b[4..8].copy_from_slice(&7u32.to_le_bytes())), needles: &["000-quantize-rtn.ckpt", "checkpoint version 7"] },
    Case { name: "ckpt-header-length-u64-max", build: |d| resume_with(d, |b| b[8..16].copy_from_slice(&U64_MAX)), needles: &["000-quantize-rtn.ckpt", "header runs past the end"] },
    // ---- manifests given to verify
    Case { name: "manifest-not-json", build: |d| verify_with(d, |b| b.truncate(b.len() / 2)), needles: &["manifest.json"] },
    Case { name: "manifest-empty", build: |d| verify_with(d, Vec::clear), needles: &["manifest.json"] },
    Case { name: "manifest-wrong-shape", build: |d| verify_with(d, |b| *b = b"[1, 2]".to_vec()), needles: &["manifest.json"] },
    Case { name: "manifest-path-escape", build: |d| verify_with(d, |b| manifest_edited(b, |v| { if let Some(f) = v["files"].as_array_mut().and_then(|a| a.first_mut()) { f["path"] = "../../../etc/passwd".into(); } })), needles: &["manifest.json", "file path `../../../etc/passwd` leaves the folder"] },
    Case { name: "manifest-absolute-path", build: |d| verify_with(d, |b| manifest_edited(b, |v| { if let Some(f) = v["files"].as_array_mut().and_then(|a| a.first_mut()) { f["path"] = "/etc/passwd".into(); } })), needles: &["manifest.json", "file path `/etc/passwd` leaves the folder"] },
    // ---- any file read whole: a 2 GB sparse file is refused by its size, not read
    Case { name: "big-recipe", build: |d| { let p = sparse_2gb(d, "big.yaml"); write_tiny_gguf(d, "tiny.gguf", &TinySpec::default()); vec!["validate".into(), p] }, needles: &["big.yaml:1:1", "2147483648 bytes is more than a recipe may hold"] },
    Case { name: "big-report", build: |d| { let mut a = compare_with(d, "x.json", b"{}"); a[2] = sparse_2gb(d, "big-report.json"); a }, needles: &["big-report.json", "2147483648 bytes is more than a report may hold"] },
    Case { name: "big-manifest", build: |d| { let mut a = verify_with(d, |_| {}); std::fs::File::create(d.join("out/manifest.json")).unwrap().set_len(2 << 30).unwrap(); a.truncate(2); a }, needles: &["manifest.json", "2147483648 bytes is more than a manifest may hold"] },
    Case { name: "big-config-json", build: |d| { let a = hf_with_file(d, "config.json", b""); std::fs::File::create(Path::new(&a[1]).join("config.json")).unwrap().set_len(2 << 30).unwrap(); a }, needles: &["config.json", "2147483648 bytes is more than a config.json may hold"] },
    Case { name: "big-tokenizer-json", build: |d| { let a = hf_with_file(d, "tokenizer.json", b""); std::fs::File::create(Path::new(&a[1]).join("tokenizer.json")).unwrap().set_len(2 << 30).unwrap(); a }, needles: &["tokenizer.json", "2147483648 bytes is more than a tokenizer file may hold"] },
    Case { name: "big-checkpoint", build: |d| { let a = resume_with(d, |_| {}); std::fs::File::create(d.join(CKPT)).unwrap().set_len(2 << 30).unwrap(); a }, needles: &["000-quantize-rtn.ckpt", "not an edgeforge checkpoint"] },
    // ---- text files
    Case { name: "text-invalid-utf8", build: |d| perplexity_on(d, "latin1.txt", b"caf\xe9 au lait, the cat sat on the mat"), needles: &["latin1.txt", "not UTF-8", "offset 3"] },
    Case { name: "text-nul-bytes", build: |d| perplexity_on(d, "nul.txt", b"the cat\0sat on the mat the cat sat on the mat"), needles: &["nul.txt", "a NUL byte at offset 7"] },
    Case { name: "text-2gb-single-line", build: |d| { let model = write_tiny_gguf(d, "tiny.gguf", &TinySpec::default()); let p = d.join("line2g.txt"); std::fs::File::create(&p).unwrap().set_len(2 << 30).unwrap(); ["eval", "perplexity", "--model", &s(model), "--text", &s(p), "--ctx", "8"].map(String::from).to_vec() }, needles: &["line2g.txt", "2147483648 bytes is more text than edgeforge reads"] },
    Case { name: "text-is-a-directory", build: |d| { let model = write_tiny_gguf(d, "tiny.gguf", &TinySpec::default()); std::fs::create_dir(d.join("adir.txt")).unwrap(); ["eval", "perplexity", "--model", &s(model), "--text", &s(d.join("adir.txt"))].map(String::from).to_vec() }, needles: &["adir.txt"] },
];

#[test]
fn hostile_input_catalogue() {
    let root = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut peak = (0u64, "");
    for case in CASES {
        let dir = root.path().join(case.name);
        std::fs::create_dir_all(&dir).unwrap();
        let args = (case.build)(&dir);
        let rss_file = root.path().join(format!("{}.rss", case.name));
        let script = format!("ulimit -v {LIMIT_KB} && exec /usr/bin/time -f %M -o \"{}\" \"$0\" \"$@\"", rss_file.display());
        let out = Command::new("sh").arg("-c").arg(script).arg(BIN).args(&args).current_dir(&dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let rss_kb: u64 = std::fs::read_to_string(&rss_file).ok().and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok())).unwrap_or(u64::MAX);
        if rss_kb > peak.0 && rss_kb != u64::MAX {
            peak = (rss_kb, case.name);
        }
        let mut why = Vec::new();
        if out.status.code() != Some(2) {
            why.push(format!("exit {:?}", out.status.code()));
        }
        if stderr.contains("panicked") {
            why.push("panicked".to_owned());
        }
        if !first.starts_with("edgeforge: error: ") {
            why.push("first line is not an error line".to_owned());
        }
        why.extend(case.needles.iter().filter(|n| !first.contains(*n)).map(|n| format!("`{n}` missing")));
        if rss_kb > MAX_RSS_KB {
            why.push(format!("peak RSS {rss_kb} KB"));
        }
        if !why.is_empty() {
            failures.push(format!("{}: {}\n    {}", case.name, why.join(", "), stderr.trim().replace('\n', "\n    ")));
        }
    }
    eprintln!("{} cases; highest peak RSS {} KB ({})", CASES.len(), peak.0, peak.1);
    assert!(CASES.len() >= 60);
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

//! `eval kld` and `eval latency` through the binary on tiny models built by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use edgeforge_tests::{write_tiny_gguf, TinySpec};

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

fn json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn kld_is_zero_against_itself_and_positive_against_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_tiny_gguf(dir.path(), "a.gguf", &TinySpec::default());
    let b = write_tiny_gguf(dir.path(), "b.gguf", &TinySpec { seed: 99, ..TinySpec::default() });
    let text = dir.path().join("t.txt");
    std::fs::write(&text, (0..300).map(|i| format!("the cat {i} = the hat. ")).collect::<String>()).unwrap();
    let base = ["eval", "kld", "--ctx", "64", "--chunks", "3", "--json", "--text", text.to_str().unwrap(), "--base", a.to_str().unwrap()];
    let same = json(&[&base[..], &["--model", a.to_str().unwrap()]].concat());
    assert_eq!(same["mean_kld"], 0.0);
    assert_eq!(same["top1_agreement_frac"], 1.0);
    assert_eq!(same["positions"], 3 * 31);
    let other = json(&[&base[..], &["--model", b.to_str().unwrap()]].concat());
    assert!(other["mean_kld"].as_f64().unwrap() > 0.01, "{other}");
    assert!(other["top1_agreement_frac"].as_f64().unwrap() < 1.0);
    assert_eq!(other["base_perplexity"], same["base_perplexity"]);
    // The JSON says what it measured, as perplexity's does.
    for key in ["model", "model_sha256", "base", "base_sha256", "edgeforge_version"] {
        assert!(other[key].as_str().is_some_and(|v| !v.is_empty()), "{key}: {other}");
    }
    assert_ne!(other["model_sha256"], other["base_sha256"]);
}

fn latency_json(model: &std::path::Path, gen_tokens: &str) -> (serde_json::Value, f64) {
    let t = std::time::Instant::now();
    let args = ["eval", "latency", "--model", model.to_str().unwrap(), "--prompt-tokens", "16", "--gen-tokens", gen_tokens, "--repeats", "2", "--threads", "1", "--json"];
    let v = json(&args);
    (v, t.elapsed().as_secs_f64())
}

#[test]
fn latency_figures_agree_with_each_other_and_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_tiny_gguf(dir.path(), "a.gguf", &TinySpec::default());
    let (v, wall_s) = latency_json(&a, "8");
    let num = |key: &str| v[key].as_f64().filter(|x| x.is_finite() && *x > 0.0).unwrap_or_else(|| panic!("{key}: {v}"));
    let (prefill, decode, ttft, p50, p95) = (num("prefill_tok_s"), num("decode_tok_s"), num("ttft_ms"), num("decode_p50_ms"), num("decode_p95_ms"));
    // Both prefill figures come from the same timed repetitions (llama-bench's protocol): the mean rate is at
    // least the rate of the mean time (AM >= HM), and 2 repetitions of a tiny model cannot differ tenfold.
    let ratio = prefill * ttft / 1000.0 / 16.0;
    assert!((1.0 - 1e-9..10.0).contains(&ratio), "mean pp rate x mean time = {ratio} x 16 tokens: {v}");
    assert!(p95 >= p50, "{v}");
    // 2 repeats x (prefill + 7 decode steps) took no longer than the whole command.
    let measured_s = 2.0 * (ttft / 1000.0 + 7.0 / decode);
    assert!(measured_s < wall_s, "{measured_s} s measured in a {wall_s} s run: {v}");
    assert!(num("peak_rss_bytes") < 1e9, "{v}");
    assert_eq!(v["peak_rss_scope"], "measurement", "{v}");
    assert_eq!(v["threads"], 1);
    for key in ["model", "model_sha256", "edgeforge_version"] {
        assert!(v[key].as_str().is_some_and(|x| !x.is_empty()), "{key}: {v}");
    }
}

#[test]
fn latency_with_no_generated_token_reports_decode_as_not_measured_and_one_token_as_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_tiny_gguf(dir.path(), "a.gguf", &TinySpec::default());
    let (v, _) = latency_json(&a, "0");
    for key in ["decode_tok_s", "decode_p50_ms", "decode_p95_ms"] {
        assert!(v[key].is_null(), "{key}: {v}");
    }
    assert!(v["notes"].to_string().contains("gen_tokens = 0"), "{v}");
    assert!(v["prefill_tok_s"].as_f64().is_some_and(f64::is_finite) && v["ttft_ms"].as_f64().is_some_and(f64::is_finite), "{v}");
    // tg 1 (llama-bench's tg from an empty context) is one timed step: a finite rate, never 1e307 or NaN.
    let (v, _) = latency_json(&a, "1");
    assert!(v["decode_tok_s"].as_f64().is_some_and(|r| r.is_finite() && r > 0.0 && r < 1e9), "{v}");
    let out = Command::new(BIN).args(["eval", "latency", "--model", a.to_str().unwrap(), "--prompt-tokens", "8", "--gen-tokens", "1", "--repeats", "1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("inf") && !text.contains("NaN"), "{text}");
}

#[test]
fn sensitivity_ranks_every_unit_and_leaves_the_model_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_tiny_gguf(dir.path(), "a.gguf", &TinySpec { n_ff: 64, ..TinySpec::default() });
    let before = std::fs::read(&a).unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, (0..300).map(|i| format!("the cat {i} = the hat. ")).collect::<String>()).unwrap();
    let common = ["sensitivity", "--model", a.to_str().unwrap(), "--text", text.to_str().unwrap(), "--ctx", "64", "--chunks", "2", "--group-size", "32", "--json"];
    let out = dir.path().join("sens");
    let v = json(&[&common[..], &["--by", "tensor", "--bits", "3", "--keep", "2", "--out", out.to_str().unwrap()]].concat());
    let units = v["result"]["units"].as_array().unwrap();
    assert_eq!(units.len(), 2 * 7, "every projection of both blocks");
    let kl: Vec<f64> = units.iter().map(|u| u["mean_kld"].as_f64().unwrap()).collect();
    assert!(kl.windows(2).all(|w| w[0] >= w[1]), "most sensitive first: {kl:?}");
    assert!(kl[0] > 0.0);
    let yaml = v["suggested_overrides_yaml"].as_str().unwrap();
    assert_eq!(yaml.matches("bits: 8").count(), 2, "{yaml}");
    assert!(yaml.contains(units[0]["unit"].as_str().unwrap()));
    assert!(out.join("sensitivity.json").is_file() && out.join("sensitivity.md").is_file());
    assert_eq!(std::fs::read(&a).unwrap(), before);
    // Quantizing a unit alone is measured against the untouched model: 8 bits hurts far less than 3.
    let blocks3 = json(&[&common[..], &["--by", "block", "--bits", "3"]].concat());
    let blocks8 = json(&[&common[..], &["--by", "block", "--bits", "8"]].concat());
    let top = |v: &serde_json::Value| v["result"]["units"][0]["mean_kld"].as_f64().unwrap();
    assert!(top(&blocks8) < 0.2 * top(&blocks3), "{} vs {}", top(&blocks8), top(&blocks3));
    assert_eq!(blocks3["result"]["units"].as_array().unwrap().len(), 2);
    // Bad options are refused with exit 2.
    let bad = Command::new(BIN).args(&common[..]).args(["--group-size", "48"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn latency_refuses_more_tokens_than_the_context_and_zero_values_name_their_flag() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_tiny_gguf(dir.path(), "a.gguf", &TinySpec::default());
    let run = |extra: &[&str]| {
        let out = Command::new(BIN).args([&["eval", "latency", "--model", a.to_str().unwrap(), "--threads", "1"][..], extra].concat()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The tiny model's context is 256 tokens (llama.context_length).
    let (code, stderr) = run(&["--prompt-tokens", "300", "--gen-tokens", "1", "--repeats", "1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--prompt-tokens 300") && stderr.contains("context of 256 tokens"), "{stderr}");
    let (code, stderr) = run(&["--prompt-tokens", "8", "--gen-tokens", "257", "--repeats", "1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--gen-tokens 257"), "{stderr}");
    for flag in ["--prompt-tokens", "--repeats"] {
        let (code, stderr) = run(&[flag, "0"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(flag), "{flag} 0: {stderr}");
    }
}

/// Runs `args` with stdout a pipe whose reader is already closed (`... | head -0`): the command must stop
/// quietly, not panic.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN).args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_closed_stdout_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_tiny_gguf(dir.path(), "a.gguf", &TinySpec::default());
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "the cat sat on the hat. ".repeat(4000)).unwrap();
    for args in [vec!["inspect", a.to_str().unwrap(), "--tensors"], vec!["tokenize", "--model", a.to_str().unwrap(), "--text", text.to_str().unwrap(), "--ids"]] {
        let (code, stderr) = with_closed_stdout(&args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[test]
fn tokenize_labels_its_count_and_reads_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let a = write_tiny_gguf(dir.path(), "a.gguf", &TinySpec::default());
    let text = "the cat sat on the hat.";
    let file = dir.path().join("t.txt");
    std::fs::write(&file, text).unwrap();
    let from_file = Command::new(BIN).args(["tokenize", "--model", a.to_str().unwrap(), "--text", file.to_str().unwrap(), "--ids"]).output().unwrap();
    assert!(from_file.status.success(), "{}", String::from_utf8_lossy(&from_file.stderr));
    let mut child = Command::new(BIN)
        .args(["tokenize", "--model", a.to_str().unwrap(), "--text", "-", "--ids"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert!(from_stdin.status.success());
    assert_eq!(from_stdin.stdout, from_file.stdout, "the same text through stdin gives other ids");
    let n = String::from_utf8_lossy(&from_file.stdout).lines().count();
    let count = Command::new(BIN).args(["tokenize", "--model", a.to_str().unwrap(), "--text", file.to_str().unwrap()]).output().unwrap();
    let line = String::from_utf8_lossy(&count.stdout).trim().to_owned();
    assert_eq!(line, format!("{n} tokens ({} bytes of {})", text.len(), file.display()), "{line}");
}

//! One recipe per family, end to end through the `edgeforge run` binary: each tiny random model that
//! tests/python/make_tiny_family.py writes (llama.cpp's names, layout and keys) goes through round-to-nearest,
//! GPTQ and AWQ (8 bits, groups of 32: Q8_0 blocks) and out as GGUF. Checked: the run succeeds; perplexity after
//! is finite and within 1% of before (8-bit rounding of a random model moves it by well under that); the
//! export reads back in gguf-py (tests/python/read_gguf.py) with the family's architecture, quantized
//! linears (phi3 fused again) and float biases/norms; and our runtime scores the exported file exactly as
//! the report says. Protocol as tests/tests/families.rs: wiki.test.raw, ctx 128, 4 chunks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

/// (generated file stem, GGUF architecture).
const FAMILIES: [(&str, &str); 7] = edgeforge_tests::TINY_FAMILIES;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generated() -> &'static Path {
    edgeforge_tests::tiny_family_models()
}

fn recipe(model: &Path, pass: &str) -> String {
    format!(
        "version: 1\nmodel: {}\ncalibration: {{ dataset: wikitext-2-valid, samples: 4, seq_len: 64, seed: 1 }}\npasses:\n{pass}\
         eval:\n  perplexity: {{ dataset: wikitext-2-test, ctx: 128, chunks: 4 }}\ntargets:\n  - {{ format: gguf }}\n",
        model.display()
    )
}

fn our_perplexity(gguf: &Path) -> f64 {
    let eval = Command::new(BIN)
        .current_dir(root())
        .args(["eval", "perplexity", "--model", gguf.to_str().unwrap(), "--text", "wikitext-2-test", "--ctx", "128", "--chunks", "4", "--threads", "2", "--json"])
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let v: Value = serde_json::from_slice(&eval.stdout).unwrap();
    v["perplexity"].as_f64().unwrap()
}

fn read_gguf(gguf: &Path) -> Value {
    let out = Command::new("python3").arg(root().join("tests/python/read_gguf.py")).arg(gguf).output().unwrap();
    assert!(out.status.success(), "gguf-py could not read {}: {}", gguf.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The exported file as gguf-py sees it: the family's architecture, every linear in Q8_0 (phi3's fused
/// `attn_qkv`/`ffn_up`), biases and norms F32.
fn check_export(name: &str, arch: &str, gguf: &Path) {
    let v = read_gguf(gguf);
    assert_eq!(v["metadata"]["general.architecture"], arch, "{name}");
    let t = v["tensors"].as_object().unwrap();
    let linears: &[&str] = if arch == "phi3" { &["attn_qkv", "attn_output", "ffn_up", "ffn_down"] } else { &["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] };
    for l in linears {
        assert_eq!(t[&format!("blk.0.{l}.weight")]["type"], "Q8_0", "{name}: blk.0.{l}.weight");
    }
    if arch == "phi3" {
        assert!(!t.contains_key("blk.0.attn_q.weight") && !t.contains_key("blk.0.ffn_gate.weight"), "{name}: phi3 exports fused tensors only");
    }
    for (tensor, info) in t {
        if tensor.ends_with("norm.weight") || tensor.ends_with(".bias") {
            assert_eq!(info["type"], "F32", "{name}: {tensor}");
        }
    }
    if arch == "qwen2" {
        assert!(t.contains_key("blk.0.attn_q.bias"), "{name}: q/k/v biases kept");
    }
    if arch == "qwen3" || arch == "gemma3" {
        assert!(t.contains_key("blk.0.attn_q_norm.weight"), "{name}: q/k norms kept");
    }
}

#[test]
fn each_family_runs_rtn_gptq_and_awq_recipes_to_a_gguf_that_scores_what_the_report_says() {
    let work = tempfile::tempdir().unwrap();
    let passes = [
        ("rtn", "  - { pass: quantize-rtn, bits: 8, group_size: 32, symmetric: true }\n"),
        ("gptq", "  - { pass: gptq, bits: 8, group_size: 32, symmetric: true }\n"),
        ("awq", "  - { pass: awq, bits: 8, group_size: 32, symmetric: true }\n"),
    ];
    for (name, arch) in FAMILIES {
        let model = generated().join(format!("{name}.gguf"));
        for (pass_name, pass) in passes {
            let stem = format!("{name}-{pass_name}");
            let file = work.path().join(format!("{stem}.yaml"));
            std::fs::write(&file, recipe(&model, pass)).unwrap();
            let out = work.path().join(&stem);
            let run = Command::new(BIN)
                .current_dir(root())
                .args(["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"])
                .output()
                .unwrap();
            assert!(run.status.success(), "{stem}: {}", String::from_utf8_lossy(&run.stderr));
            let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
            let ppl = |side: &str| report[side]["perplexity"]["perplexity"].as_f64().unwrap_or_else(|| panic!("{stem}: no {side} perplexity"));
            let (before, after) = (ppl("metrics_before"), ppl("metrics_after"));
            assert!(after.is_finite() && before.is_finite(), "{stem}: {before} -> {after}");
            assert!((after / before - 1.0).abs() < 0.01, "{stem}: 8-bit moved perplexity {before} -> {after}");
            let gguf = out.join(format!("{stem}.gguf"));
            check_export(&stem, arch, &gguf);
            let reread = our_perplexity(&gguf);
            assert!((reread / after - 1.0).abs() < 1e-5, "{stem}: exported GGUF scores {reread}, the report says {after}");
        }
    }
}

/// Structured pruning per family: a quarter of each block's MLP channels and of its query heads (GQA-aware),
/// then reconstruction, out as GGUF. Checked: the run succeeds, the pruned widths are in the file gguf-py
/// reads (the family's architecture kept, Qwen 2's biases cut with their heads), and our runtime scores the
/// exported file exactly as the report says.
#[test]
fn each_family_prunes_heads_and_mlp_channels_to_a_gguf_that_scores_what_the_report_says() {
    let work = tempfile::tempdir().unwrap();
    let with_heads = "  - pass: prune\n    mlp: { ratio: 0.25, criterion: wanda }\n    heads: { ratio: 0.25 }\n  - { pass: reconstruct, ridge: 0.001 }\n";
    let mlp_only = "  - pass: prune\n    mlp: { ratio: 0.25, criterion: wanda }\n  - { pass: reconstruct, ridge: 0.001 }\n";
    for (name, arch) in FAMILIES {
        let model = generated().join(format!("{name}.gguf"));
        let stem = format!("{name}-prune");
        let file = work.path().join(format!("{stem}.yaml"));
        // phi3 forbids head cuts (llama.cpp's graph fixes the query width): refused before anything runs.
        let pass = if arch == "phi3" { mlp_only } else { with_heads };
        std::fs::write(&file, recipe(&model, pass)).unwrap();
        let out = work.path().join(&stem);
        let run = Command::new(BIN).current_dir(root()).args(["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"]).output().unwrap();
        assert!(run.status.success(), "{stem}: {}", String::from_utf8_lossy(&run.stderr));
        let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        let after = report["metrics_after"]["perplexity"]["perplexity"].as_f64().unwrap_or_else(|| panic!("{stem}: no perplexity"));
        assert!(after.is_finite(), "{stem}: {after}");
        let gguf = out.join(format!("{stem}.gguf"));
        let v = read_gguf(&gguf);
        assert_eq!(v["metadata"]["general.architecture"], arch, "{stem}");
        let t = v["tensors"].as_object().unwrap();
        let down = t["blk.0.ffn_down.weight"]["shape"].to_string();
        assert!(down.contains("96"), "{stem}: ffn_down after a quarter of 128 channels is cut: {down}");
        if arch == "qwen2" {
            let (q, qb) = (&t["blk.0.attn_q.weight"]["shape"], &t["blk.0.attn_q.bias"]["shape"]);
            assert_eq!(q[1], qb[0], "{stem}: q bias rows follow q's rows");
        }
        let reread = our_perplexity(&gguf);
        assert!((reread / after - 1.0).abs() < 1e-5, "{stem}: exported GGUF scores {reread}, the report says {after}");
    }
}

/// Cuts a family forbids are refused at validation, naming the option and why: head pruning on phi3 (llama.cpp
/// sizes its query as n_embd; such a file does not load), depth pruning on Gemma 2/3 (local/global attention
/// follows the layer index).
#[test]
fn cuts_a_family_forbids_are_refused_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let cases = [
        ("phi3", "  - pass: prune\n    heads: { ratio: 0.25 }\n", "cannot lose attention heads"),
        ("gemma3", "  - pass: prune\n    depth: { blocks: 1 }\n", "would turn global layers local"),
        ("gemma2", "  - pass: prune\n    depth: { blocks: 1 }\n", "would turn global layers local"),
    ];
    for (name, pass, needle) in cases {
        let file = work.path().join(format!("{name}-cut.yaml"));
        std::fs::write(&file, recipe(&generated().join(format!("{name}.gguf")), pass)).unwrap();
        let out = Command::new(BIN).current_dir(root()).args(["run", file.to_str().unwrap(), "--out", work.path().join(name).to_str().unwrap()]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
    }
}

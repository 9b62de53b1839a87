//! Distillation and tune-scales per family, end to end through the `edgeforge run` binary, on each tiny
//! random model that tests/python/make_tiny_family.py writes (llama.cpp's names, layout and keys):
//! - prune a quarter of the MLP channels, then `distill` for a few steps on a fixed batch (every step sees
//!   the same four sequences): the training KL falls from the first step to the last;
//! - `gptq` 4-bit straight into Q4_0 blocks, then `tune-scales` for ten steps: the held-out KL the pass
//!   measures with the runtime falls (by 1–4% of the quantization loss on these models), and the exported
//!   linears are still Q4_0 (phi3's fused again);
//!
//! and for both: the export reads back in gguf-py with the family's architecture, and our runtime scores the
//! exported file exactly as the report says. Protocol: wiki.test.raw, ctx 128, 2 chunks.

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

fn recipe(model: &Path, calibration: &str, passes: &str) -> String {
    format!(
        "version: 1\nmodel: {}\ncalibration: {{ dataset: wikitext-2-valid, {calibration}, seed: 1 }}\npasses:\n{passes}\
         eval:\n  perplexity: {{ dataset: wikitext-2-test, ctx: 128, chunks: 2 }}\ntargets:\n  - {{ format: gguf }}\n",
        model.display()
    )
}

/// Run `recipe` as `stem`; returns the report and the exported GGUF.
fn run(work: &Path, stem: &str, recipe: &str) -> (Value, PathBuf) {
    let file = work.join(format!("{stem}.yaml"));
    std::fs::write(&file, recipe).unwrap();
    let out = work.join(stem);
    let started = std::time::Instant::now();
    let run = Command::new(BIN).current_dir(root()).args(["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"]).output().unwrap();
    assert!(run.status.success(), "{stem}: {}", String::from_utf8_lossy(&run.stderr));
    eprintln!("{stem}: {:.1} s", started.elapsed().as_secs_f64());
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    (report, out.join(format!("{stem}.gguf")))
}

/// The notes of pass `name` in the report.
fn notes<'a>(report: &'a Value, name: &str, stem: &str) -> Vec<&'a str> {
    let passes = report["passes"].as_array().unwrap_or_else(|| panic!("{stem}: no passes in the report"));
    let pass = passes.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{stem}: no {name} pass in the report"));
    pass["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect()
}

/// The numbers in the note starting with `prefix`.
fn numbers(notes: &[&str], prefix: &str, stem: &str) -> Vec<f64> {
    let note = notes.iter().find(|n| n.starts_with(prefix)).unwrap_or_else(|| panic!("{stem}: no note `{prefix}…` in {notes:?}"));
    note.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-')).filter_map(|s| s.parse().ok()).collect()
}

fn read_gguf(gguf: &Path) -> Value {
    let out = Command::new("python3").arg(root().join("tests/python/read_gguf.py")).arg(gguf).output().unwrap();
    assert!(out.status.success(), "gguf-py could not read {}: {}", gguf.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Our runtime's perplexity of the exported file equals the report's figure after the passes.
fn check_rescored(stem: &str, report: &Value, gguf: &Path) {
    let after = report["metrics_after"]["perplexity"]["perplexity"].as_f64().unwrap_or_else(|| panic!("{stem}: no perplexity"));
    assert!(after.is_finite(), "{stem}: {after}");
    let eval = Command::new(BIN)
        .current_dir(root())
        .args(["eval", "perplexity", "--model", gguf.to_str().unwrap(), "--text", "wikitext-2-test", "--ctx", "128", "--chunks", "2", "--threads", "2", "--json"])
        .output()
        .unwrap();
    assert!(eval.status.success(), "{stem}: {}", String::from_utf8_lossy(&eval.stderr));
    let v: Value = serde_json::from_slice(&eval.stdout).unwrap();
    let reread = v["perplexity"].as_f64().unwrap();
    assert!((reread / after - 1.0).abs() < 1e-5, "{stem}: exported GGUF scores {reread}, the report says {after}");
}

#[test]
fn each_family_distills_a_pruned_student_and_the_kl_falls() {
    let work = tempfile::tempdir().unwrap();
    let passes = "  - pass: prune\n    mlp: { ratio: 0.25, criterion: wanda }\n  - { pass: distill, steps: 5, lr: 0.0005, warmup_steps: 1, batch_size: 4, seq_len: 64 }\n";
    for (name, arch) in FAMILIES {
        let model = edgeforge_tests::tiny_family_models().join(format!("{name}.gguf"));
        let stem = format!("{name}-distill");
        let (report, gguf) = run(work.path(), &stem, &recipe(&model, "samples: 4, seq_len: 64", passes));
        let kl = numbers(&notes(&report, "distill", &stem), "KL(teacher", &stem);
        let (first, last) = (kl[kl.len() - 2], kl[kl.len() - 1]);
        eprintln!("{stem}: training KL {first} → {last}");
        assert!(last < 0.8 * first, "{stem}: distillation should lower the KL on its fixed batch: {first} → {last}");
        let t = read_gguf(&gguf);
        assert_eq!(t["metadata"]["general.architecture"], arch, "{stem}");
        check_rescored(&stem, &report, &gguf);
    }
}

#[test]
fn each_family_tunes_q4_0_scales_without_worsening_the_held_out_kl() {
    let work = tempfile::tempdir().unwrap();
    let passes = "  - { pass: gptq, format: q4_0 }\n  - { pass: tune-scales, steps: 10, lr: 0.002, batch_size: 4, eval_samples: 4 }\n";
    for (name, arch) in FAMILIES {
        let model = edgeforge_tests::tiny_family_models().join(format!("{name}.gguf"));
        let stem = format!("{name}-tune");
        let (report, gguf) = run(work.path(), &stem, &recipe(&model, "samples: 24, seq_len: 64", passes));
        let notes = notes(&report, "tune-scales", &stem);
        let kl = numbers(&notes, "KL(teacher", &stem);
        // "... on 4 held-out calibration sequences × 64 tokens (runtime): B before tuning → A after (P% ...)"
        let (before, after) = (kl[kl.len() - 3], kl[kl.len() - 2]);
        eprintln!("{stem}: held-out KL {before} → {after}");
        // Strictly lower, so the pass's own guard (restoring the original blocks when the KL got worse) is
        // not what makes this hold.
        assert!(after < before, "{stem}: tune-scales did not lower the held-out KL: {before} → {after} ({notes:?})");
        assert!(!notes.iter().any(|n| n.contains("restored")), "{stem}: {notes:?}");
        assert!(notes.iter().any(|n| n.starts_with("tuned the f16 block scales")), "{stem}: {notes:?}");
        let v = read_gguf(&gguf);
        assert_eq!(v["metadata"]["general.architecture"], arch, "{stem}");
        let t = v["tensors"].as_object().unwrap();
        let linears: &[&str] = if arch == "phi3" { &["attn_qkv", "attn_output", "ffn_up", "ffn_down"] } else { &["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] };
        for l in linears {
            assert_eq!(t[&format!("blk.0.{l}.weight")]["type"], "Q4_0", "{stem}: blk.0.{l}.weight");
        }
        check_rescored(&stem, &report, &gguf);
    }
}

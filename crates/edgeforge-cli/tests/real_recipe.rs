//! The shipped int4 recipe on the real model, compared with the baseline report committed in reports/
//! (what the README's CI workflow does), then summarized together with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

#[test]
fn int4_recipe_matches_the_committed_baseline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Make sure the named model is in the cache (the binary would fetch it itself, this only saves a step).
    let _ = edgeforge_tests::reference_model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int4");
    let run = Command::new(BIN)
        .current_dir(&root)
        .args(["run", "recipes/smollm2-int4-rtn.yaml", "--out", out.to_str().unwrap(), "--threads", "2"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["gates"]["passed"], true);
    assert_eq!(report["artifacts"][0]["format"], "gguf");
    assert!(out.join("smollm2-int4-rtn.gguf").is_file());

    check_with_gguf_py(&root, &out.join("smollm2-int4-rtn.gguf"));

    let baseline = root.join("reports/baseline-smollm2-int4-rtn.json");
    let cmp = Command::new(BIN)
        .args(["compare", baseline.to_str().unwrap(), out.join("report.json").to_str().unwrap(), "--max-ppl-increase-pct", "1", "--max-size-bytes", "90000000"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert_eq!(cmp.status.code(), Some(0), "{table}{}", String::from_utf8_lossy(&cmp.stderr));
    assert!(table.contains("all gates hold"), "{table}");
}

/// The exported GGUF as llama.cpp's Python reader sees it: names, shapes, types and metadata.
fn check_with_gguf_py(root: &Path, gguf: &Path) {
    let out = Command::new("python3").arg(root.join("tests/python/read_gguf.py")).arg(gguf).output().unwrap();
    assert!(out.status.success(), "gguf-py could not read our file: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["tensors"];
    assert_eq!(t.as_object().unwrap().len(), 272);
    for l in [0, 17, 29] {
        for (name, shape) in [("attn_q", [576, 576]), ("attn_k", [576, 192]), ("ffn_up", [576, 1536]), ("ffn_down", [1536, 576])] {
            let tensor = &t[format!("blk.{l}.{name}.weight")];
            assert_eq!(tensor["type"], "Q4_0", "blk.{l}.{name}");
            assert_eq!(tensor["shape"], serde_json::json!(shape), "blk.{l}.{name}");
        }
        assert_eq!(t[format!("blk.{l}.attn_norm.weight")]["type"], "F32");
    }
    assert_eq!(t["token_embd.weight"]["type"], "Q8_0");
    assert!(t.get("output.weight").is_none(), "tied head: no output.weight");
    let m = &v["metadata"];
    assert_eq!(m["general.architecture"], "llama");
    assert_eq!(m["llama.block_count"], 30);
    assert_eq!(m["llama.attention.head_count"], 9);
    assert_eq!(m["llama.attention.head_count_kv"], 3);
    assert_eq!(m["llama.rope.freq_base"], 100000.0);
    assert_eq!(m["llama.rope.dimension_count"], 64);
    assert_eq!(m["tokenizer.ggml.model"], "gpt2");
    assert_eq!(m["tokenizer.ggml.pre"], "smollm");
    assert_eq!(m["tokenizer.ggml.tokens"]["array_len"], 49152);
    assert_eq!(m["tokenizer.ggml.merges"]["array_len"], 48900);
    assert_eq!((m["tokenizer.ggml.bos_token_id"].clone(), m["tokenizer.ggml.eos_token_id"].clone()), (1.into(), 2.into()));
    assert_eq!(m["tokenizer.ggml.add_bos_token"], false);
    assert_eq!(m["general.file_type"], 2, "mostly Q4_0");
    assert_eq!(m["general.quantization_version"], 2);
}

/// GPTQ against round-to-nearest on the real model at the same format (int4, groups of 128, symmetric),
/// with a little calibration text and 3 chunks; the exported Q4_0 GGUF, read back by our loader, scores
/// exactly what the in-memory model scored.
#[test]
fn gptq_beats_round_to_nearest_on_the_real_model_and_exports_losslessly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let _ = edgeforge_tests::reference_model();
    let dir = tempfile::tempdir().unwrap();
    let head = "version: 1\nmodel: smollm2-135m-instruct\ncalibration: { dataset: wikitext-2-valid, samples: 8, seq_len: 256, seed: 1 }\n";
    let tail = "eval:\n  perplexity: { dataset: wikitext-2-test, ctx: 512, chunks: 3 }\ntargets:\n  - { format: gguf }\n";
    let mut ppl = std::collections::BTreeMap::new();
    for (name, pass) in [
        ("rtn", "  - { pass: quantize-rtn, bits: 4, group_size: 128, symmetric: true }\n"),
        ("gptq", "  - { pass: gptq, bits: 4, group_size: 128, symmetric: true }\n"),
    ] {
        let recipe = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&recipe, format!("{head}passes:\n{pass}{tail}")).unwrap();
        let out = dir.path().join(name);
        let run = Command::new(BIN)
            .current_dir(&root)
            .args(["run", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"])
            .output()
            .unwrap();
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        let after = report["metrics_after"]["perplexity"]["perplexity"].as_f64().unwrap();
        ppl.insert(name, after);
        let gguf = out.join(format!("{name}.gguf"));
        let eval = Command::new(BIN)
            .current_dir(&root)
            .args(["eval", "perplexity", "--model", gguf.to_str().unwrap(), "--text", "wikitext-2-test", "--ctx", "512", "--chunks", "3", "--threads", "2", "--json"])
            .output()
            .unwrap();
        assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
        let v: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        let reread = v["perplexity"].as_f64().unwrap();
        assert!((reread / after - 1.0).abs() < 1e-5, "{name}: GGUF {reread} vs in memory {after}");
    }
    assert!(ppl["gptq"] < 0.95 * ppl["rtn"], "{ppl:?}");
}

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
        .args(["compare", baseline.to_str().unwrap(), out.join("report.json").to_str().unwrap(), "--max-ppl-increase-pct", "1", "--max-size-bytes", "95000000"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert_eq!(cmp.status.code(), Some(0), "{table}{}", String::from_utf8_lossy(&cmp.stderr));
    assert!(table.contains("all gates hold"), "{table}");
    // The size gate measures the GGUF a user ships (91.7 MB), not the in-memory tensors (86.6 MB).
    let cmp = Command::new(BIN)
        .args(["compare", baseline.to_str().unwrap(), out.join("report.json").to_str().unwrap(), "--max-size-bytes", "90000000"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert_eq!(cmp.status.code(), Some(1), "{table}");
    assert!(table.contains("gguf artifact smollm2-int4-rtn.gguf"), "{table}");
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

/// `recipes/smollm2-edge-all.yaml` on the real model: one run writes the GGUF for raspberry-pi-5, the ONNX
/// decoder for android-phone and the NIR partition for loihi2, refuses esp32-s3 with the shortfall, and
/// covers all four in one report. Each artifact is then opened by its own client: onnxruntime (logits
/// against our runtime on the GGUF the same run wrote, which holds the same codes; tolerance 1e-4 × the
/// largest |logit|, as in the exporter's own tests), the `nir` package, and `edgeforge verify`, which must
/// also catch a flipped byte in the NIR file.
#[test]
fn edge_all_recipe_covers_board_phone_mcu_and_neuromorphic_targets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let _ = edgeforge_tests::reference_model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edge");
    let run = Command::new(BIN)
        .current_dir(&root)
        .args(["run", "recipes/smollm2-edge-all.yaml", "--out", out.to_str().unwrap(), "--threads", "2"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let formats: Vec<&str> = report["artifacts"].as_array().unwrap().iter().map(|a| a["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["gguf", "onnx", "nir"], "{report:#}");
    let targets = report["targets"].as_array().unwrap();
    let target = |profile: &str| targets.iter().find(|t| t["profile"] == profile).unwrap_or_else(|| panic!("no {profile} row"));
    for fits in ["raspberry-pi-5", "android-phone", "loihi2"] {
        assert_eq!(target(fits)["fits"], true, "{fits}");
    }
    let esp = target("esp32-s3");
    assert_eq!(esp["fits"], false);
    let shortfall = esp.to_string();
    assert!(shortfall.contains("needs") && shortfall.contains("MB of weights") && shortfall.contains("esp32-s3 has"), "{shortfall}");
    assert!(!out.join("smollm2-edge-all-c").exists(), "a refused target leaves no artifact");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**refused**") && md.contains("roofline estimate") && md.contains("energy per token"), "{md}");

    // ONNX in onnxruntime against our runtime on the GGUF of the same run.
    let prompt: Vec<u32> = vec![1, 504, 3458, 282, 4082, 314, 260, 2115, 30, 378, 1029, 4600, 28, 15];
    let model = edgeforge_core::load_model(&out.join("smollm2-edge-all.gguf")).unwrap();
    let ours = edgeforge_tests::runtime_logits(&model, &prompt);
    let (one_call, cached, _) = edgeforge_tests::onnxruntime_logits(&out.join("smollm2-edge-all-onnx"), &prompt, model.config.vocab_size, &dir.path().join("ort.bin"));
    let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (what, theirs) in [("one call", &one_call), ("KV cache", &cached)] {
        let diff = edgeforge_tests::max_abs_diff(theirs, &ours);
        eprintln!("edge-all ONNX ({what}): max |ORT − runtime| = {diff:.3e}, largest logit {scale:.2}");
        assert!(diff <= 1e-4 * scale, "{what}: {diff}");
    }

    // NIR through the NIR project's own reader.
    let nir = Command::new("python3").arg(root.join("tests/python/check_nir.py")).arg(out.join("smollm2-edge-all-nir")).output().unwrap();
    assert!(nir.status.success(), "{}{}", String::from_utf8_lossy(&nir.stdout), String::from_utf8_lossy(&nir.stderr));
    eprintln!("edge-all NIR: {}", String::from_utf8_lossy(&nir.stdout).trim());

    // The manifest covers every file; a flipped byte in the NIR file is caught.
    let verify = |expect: i32| {
        let v = Command::new(BIN).args(["verify", out.to_str().unwrap()]).output().unwrap();
        assert_eq!(v.status.code(), Some(expect), "{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    };
    verify(0);
    let nir_file = out.join("smollm2-edge-all-nir/model.nir");
    let mut data = std::fs::read(&nir_file).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&nir_file, &data).unwrap();
    verify(1);
}

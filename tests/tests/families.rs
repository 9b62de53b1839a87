//! Every supported family against llama.cpp, on tiny random models that tests/python/make_tiny_family.py
//! writes (GGUF with llama.cpp's names, layout and keys, and the same model as a Hugging Face folder).
//! tests/python/family_refs.sh ran llama-perplexity on those files and on our GGUF export of each; the
//! figures are in tests/fixtures/family_ppl.json with the llama.cpp version. Same protocol here:
//! wiki.test.raw, ctx 128, batch 128, 4 chunks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgeforge_core::{load_model, Family, Model, RopeKind};
use edgeforge_eval::{perplexity, PerplexityOptions};
use edgeforge_runtime::{weights_from_model, LlamaRuntime};
use edgeforge_tests::{reference_model, repo_root, shared_data};
use serde_json::Value;

const FAMILIES: [(&str, Family); 7] = [
    ("llama", Family::Llama),
    ("llama3", Family::Llama),
    ("qwen2", Family::Qwen2),
    ("qwen3", Family::Qwen3),
    ("gemma2", Family::Gemma2),
    ("gemma3", Family::Gemma3),
    ("phi3", Family::Phi3),
];

fn generated() -> &'static Path {
    edgeforge_tests::tiny_family_models()
}

fn tokens() -> &'static Vec<u32> {
    static TOKENS: OnceLock<Vec<u32>> = OnceLock::new();
    // Every tiny model has the reference model's vocabulary.
    TOKENS.get_or_init(|| {
        let model = load_model(&reference_model()).unwrap();
        let text = std::fs::read_to_string(shared_data().join("wiki.test.raw")).unwrap();
        model.tokenizer.encode(&text, true).unwrap()
    })
}

fn fixture() -> BTreeMap<String, (f64, f64)> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/family_ppl.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, f)| (k.clone(), (f["file"].as_f64().unwrap(), f["export"].as_f64().unwrap())))
        .collect()
}

fn ppl(model: &Model) -> f64 {
    let rt = LlamaRuntime::new(weights_from_model(model).unwrap()).unwrap();
    let bos = if model.tokenizer.add_bos() { model.tokenizer.bos_id() } else { None };
    let opts = PerplexityOptions { ctx: 128, batch: 128, max_chunks: Some(4) };
    let r = perplexity(&rt, tokens(), bos, &opts, |_| std::ops::ControlFlow::Continue(())).unwrap();
    assert_eq!(r.tokens_scored, 4 * 63);
    r.perplexity
}

fn assert_close(what: &str, ours: f64, theirs: f64, tol: f64) {
    let rel = (ours - theirs).abs() / theirs;
    assert!(rel < tol, "{what}: ours {ours} vs {theirs} ({:.4}% apart, limit {:.4}%)", rel * 100.0, tol * 100.0);
}

fn gguf(name: &str) -> PathBuf {
    generated().join(format!("{name}.gguf"))
}

/// The generated HF folder, with the tokenizer files our tokenizer writes (the generator writes none).
fn hf_dir(name: &str) -> PathBuf {
    let dir = generated().join(format!("{name}-hf"));
    if !dir.join("tokenizer.json").is_file() {
        load_model(&reference_model()).unwrap().tokenizer.write_hf_files(&dir).unwrap();
    }
    dir
}

#[test]
fn each_family_gguf_scores_llama_cpps_perplexity_within_a_tenth_of_a_percent() {
    let refs = fixture();
    for (name, family) in FAMILIES {
        let model = load_model(&gguf(name)).unwrap();
        assert_eq!(model.config.features.family, family, "{name}");
        assert_close(&format!("{name}.gguf"), ppl(&model), refs[name].0, 1e-3);
    }
}

#[test]
fn each_family_hf_folder_scores_what_its_gguf_scores() {
    let refs = fixture();
    for (name, family) in FAMILIES {
        let model = load_model(&hf_dir(name)).unwrap();
        assert_eq!(model.config.features.family, family, "{name}");
        assert_close(&format!("{name}-hf"), ppl(&model), refs[name].0, 1e-3);
        // Same model, both layouts: the same description and the same tensors (within f32 rounding of
        // Gemma's norm offsets and Llama 3's recomputed factors).
        let from_gguf = load_model(&gguf(name)).unwrap();
        let (a, b) = (&model.config.features, &from_gguf.config.features);
        assert_eq!((a.family, a.rope_kind, a.sliding_window, a.rope_base_swa), (b.family, b.rope_kind, b.sliding_window, b.rope_base_swa), "{name}");
        assert_eq!(model.tensors.keys().collect::<Vec<_>>(), from_gguf.tensors.keys().collect::<Vec<_>>(), "{name}");
        for (t, x) in &model.tensors {
            let (u, v) = (x.to_f32(t).unwrap(), from_gguf.tensors[t].to_f32(t).unwrap());
            let worst = u.iter().zip(&v).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            let scale = v.iter().fold(1f32, |m, q| m.max(q.abs()));
            assert!(worst <= 1e-6 * scale, "{name} {t}: HF and GGUF differ by {worst}");
        }
    }
}

#[test]
fn our_hf_export_of_each_family_reloads_to_the_same_perplexity() {
    for (name, _) in FAMILIES {
        // From the HF folder: a GGUF source has no Llama 3 rope_scaling parameters to write (refused).
        let model = load_model(&hf_dir(name)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("hf");
        edgeforge_export::hf::write_hf_dir(&model, &dir, edgeforge_export::hf::FloatType::F32, false).unwrap();
        let back = load_model(&dir).unwrap();
        assert_eq!(back.config, model.config, "{name}");
        assert_close(&format!("{name} via our HF export"), ppl(&back), ppl(&model), 1e-6);
    }
    let llama3 = load_model(&gguf("llama3")).unwrap();
    let err = edgeforge_export::hf::write_hf_dir(&llama3, &generated().join("refused"), edgeforge_export::hf::FloatType::F32, false).unwrap_err();
    assert!(err.to_string().contains("rope_freqs.weight"), "{err}");
}

/// What gguf-py sees in a GGUF file: tensors (name -> shape, type) and scalar metadata.
fn gguf_py(path: &Path) -> Value {
    let out = std::process::Command::new("python3").arg(repo_root().join("tests/python/read_gguf.py")).arg(path).output().unwrap();
    assert!(out.status.success(), "read_gguf.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Keys of llama.cpp's files that our export leaves out, each because llama.cpp reads the same value
/// without it (its default), with the reason.
const KEYS_NOT_WRITTEN: [(&str, &str); 2] = [
    ("phi3.rope.scaling.original_context_length", "only read for long-context factors, which are refused"),
    ("phi3.attention.sliding_window", "llama.cpp disables Phi-3's window; we write none"),
];

#[test]
fn our_gguf_export_of_each_family_has_llama_cpps_names_and_keys_and_scores_what_llama_cpp_scored() {
    let refs = fixture();
    for (name, _) in FAMILIES {
        let model = load_model(&gguf(name)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let path = out.path().join("export.gguf");
        edgeforge_export::gguf_model::write_gguf(&model, &path, "export").unwrap();
        let (theirs, ours) = (gguf_py(&gguf(name)), gguf_py(&path));
        assert_eq!(ours["tensors"], theirs["tensors"], "{name}: tensor names, shapes (ne) and types");
        let arch = theirs["metadata"]["general.architecture"].as_str().unwrap();
        assert_eq!(ours["metadata"]["general.architecture"], arch, "{name}");
        for (key, value) in theirs["metadata"].as_object().unwrap() {
            if !key.starts_with(&format!("{arch}.")) || KEYS_NOT_WRITTEN.iter().any(|(k, _)| k == key) {
                continue;
            }
            assert_eq!(&ours["metadata"][key], value, "{name}: {key}");
        }
        // llama.cpp scored this very export (family_refs.sh); our runtime scores it the same.
        let back = load_model(&path).unwrap();
        assert_close(&format!("{name} export"), ppl(&back), refs[name].1, 1e-3);
    }
}

/// The figures above can only agree to 0.1% by accident if the features did not matter: switching each
/// family's features off one at a time moves the perplexity by far more.
#[test]
fn each_family_feature_moves_the_figure_by_more_than_the_tolerance() {
    type Edit = fn(&mut edgeforge_core::ModelConfig);
    let edits: [(&str, &str, Edit); 11] = [
        ("llama", "rope kind", |c| c.features.rope_kind = RopeKind::Neox),
        ("llama3", "llama3 factors", |c| c.features.rope_scaling = edgeforge_core::RopeScaling::None),
        ("qwen2", "q/k/v biases", |c| c.features.qkv_bias = false),
        ("qwen2", "rope kind", |c| c.features.rope_kind = RopeKind::Norm),
        ("qwen3", "q/k norms", |c| c.features.qk_norm = false),
        ("gemma2", "attention soft-cap", |c| c.features.attn_softcap = None),
        ("gemma2", "final soft-cap", |c| c.features.final_softcap = None),
        ("gemma2", "sliding window", |c| c.features.sliding_window = None),
        ("gemma3", "local RoPE base", |c| c.features.rope_base_swa = None),
        ("gemma3", "post norms", |c| c.features.post_norms = false),
        ("gemma3", "embedding scale", |c| c.features.scale_embeddings = false),
    ];
    for (name, feature, edit) in edits {
        let mut model = load_model(&gguf(name)).unwrap();
        let base = ppl(&model);
        edit(&mut model.config);
        let changed = ppl(&model);
        let rel = (changed - base).abs() / base;
        assert!(rel > 0.01, "{name}: without its {feature} the perplexity moves only {:.4}% ({base} -> {changed})", rel * 100.0);
    }
}

/// Decoding token by token through the KV cache (sliding windows masked in the cache) gives the logits
/// of one batched prefill, for every family.
#[test]
fn each_family_decodes_through_the_kv_cache_as_it_prefills() {
    let prompt = &tokens()[..48];
    for (name, _) in FAMILIES {
        let model = load_model(&gguf(name)).unwrap();
        let rt = LlamaRuntime::new(weights_from_model(&model).unwrap()).unwrap();
        let mut cache = rt.new_cache(prompt.len());
        let whole = rt.forward(&mut cache, prompt, 0).unwrap();
        let mut cache = rt.new_cache(prompt.len());
        let mut stepped = rt.forward(&mut cache, &prompt[..5], 0).unwrap();
        for &t in &prompt[5..] {
            stepped.extend(rt.forward(&mut cache, &[t], 0).unwrap());
        }
        let worst = edgeforge_tests::max_abs_diff(&whole, &stepped);
        let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(worst <= 1e-4 * scale, "{name}: prefill and decode differ by {worst} (logits up to {scale})");
    }
}

//! The ONNX decoder run by real onnxruntime (`tests/python/check_onnx.py`: onnx.checker, domains and ops
//! known to the ORT build, CPU provider with graph optimizations disabled), compared with edgeforge's runtime
//! on the same (quantized) model: the whole prompt in one call, and token by token with present → past.
//!
//! Tolerance: max |ORT − runtime| ≤ 1e-4 × max(1, max |logit|), for both runs and every model (the two sum
//! in different orders in f32; the runtime's RMSNorm is in f64); the real model must also give the same
//! top-1 token at every position. Each check prints its measured difference. Measured with ORT 1.32.0:
//! tiny models ≤ 6.2e-6 (largest logit ≈ 5); SmolLM2 RTN int4 1.8e-4 one call / 9.9e-5 cached, as loaded
//! (Q4_1 GGUF) 7.8e-5 / 9.5e-5 (largest logit ≈ 28).
//!
//! Needs `python3` with `onnx` and `onnxruntime` (scripts/test.sh installs the pinned versions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use edgeforge_core::dtype::GgmlType;
use edgeforge_core::{load_model, Activation, Model, Tensor, TensorData};
use edgeforge_export::onnx::{write_onnx, ExternalData, OnnxOptions, OnnxSummary};
use edgeforge_tests::{reference_model, write_tiny_gguf, TinySpec};

const PROMPT: [u32; 9] = [5, 17, 3, 30, 9, 1, 22, 8, 12];

fn quantize(model: &mut Model, options: serde_json::Value) {
    edgeforge_tests::quantize_rtn(model, options);
}

fn runtime_logits(model: &Model, prompt: &[u32]) -> Vec<f32> {
    edgeforge_tests::runtime_logits(model, prompt)
}

/// ORT's logits for `prompt`: (one call, token by token), each `[prompt.len(), vocab]`, and the checker's JSON.
fn ort_logits(dir: &Path, prompt: &[u32], vocab: usize) -> (Vec<f32>, Vec<f32>, String) {
    edgeforge_tests::onnxruntime_logits(dir, prompt, vocab, &dir.join("ort_logits.bin"))
}

fn argmax_rows(v: &[f32], vocab: usize) -> Vec<usize> {
    v.chunks_exact(vocab).map(|r| r.iter().enumerate().fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m }).0).collect()
}

/// What one check measured.
struct Checked {
    summary: OnnxSummary,
    /// ORT's logits, one call and token by token, and the runtime's.
    ort_full: Vec<f32>,
    ort_stepwise: Vec<f32>,
    runtime: Vec<f32>,
}

/// Export, run in ORT, compare both runs with the runtime within `rel_tolerance` × max(1, max |logit|).
fn check(name: &str, model: &Model, dir: &Path, prompt: &[u32], options: &OnnxOptions, rel_tolerance: f32) -> Checked {
    let summary = write_onnx(model, dir, options).unwrap();
    let vocab = model.config.vocab_size;
    let (full, stepwise, info) = ort_logits(dir, prompt, vocab);
    let ours = runtime_logits(model, prompt);
    let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d_full, d_step) = (edgeforge_tests::max_abs_diff(&full, &ours), edgeforge_tests::max_abs_diff(&stepwise, &ours));
    eprintln!(
        "{name}: max |ORT − runtime| = {d_full:.3e} (one call), {d_step:.3e} (KV cache, token by token); largest logit {scale:.3}; \
         {} B, {} MatMulNBits, {} GatherBlockQuantized, {} float, external data {}; {info}",
        summary.bytes,
        summary.matmul_nbits.len(),
        summary.gather_nbits.len(),
        summary.float.len(),
        summary.external_data
    );
    let limit = rel_tolerance * scale.max(1.0);
    assert!(d_full <= limit, "{name}: one-call logits differ from the runtime by {d_full} (limit {limit})");
    assert!(d_step <= limit, "{name}: token-by-token logits differ from the runtime by {d_step} (limit {limit})");
    Checked { summary, ort_full: full, ort_stepwise: stepwise, runtime: ours }
}

fn float_tensor(shape: Vec<usize>, values: Vec<f32>) -> Tensor {
    Tensor { shape, data: TensorData::F32(values) }
}

/// Structured pruning by hand: block `l` keeps its first `heads` query heads, `kv_heads` KV heads and `ff`
/// feed-forward rows (the config keeps the largest sizes, as after a pruning pass).
fn prune_block(model: &mut Model, l: usize, heads: usize, kv_heads: usize, ff: usize) {
    let (e, hd) = (model.config.n_embd, model.config.head_dim);
    let name = |s: &str| format!("blk.{l}.{s}.weight");
    let rows = |m: &Model, s: &str, keep: usize| {
        let v = m.tensors[&name(s)].to_f32(s).unwrap();
        float_tensor(vec![keep, e], v[..keep * e].to_vec())
    };
    let cols = |m: &Model, s: &str, keep: usize| {
        let t = &m.tensors[&name(s)];
        let width = t.shape[1];
        let v = t.to_f32(s).unwrap();
        float_tensor(vec![e, keep], v.chunks_exact(width).flat_map(|r| r[..keep].to_vec()).collect())
    };
    let updates = [
        ("attn_q", rows(model, "attn_q", heads * hd)),
        ("attn_k", rows(model, "attn_k", kv_heads * hd)),
        ("attn_v", rows(model, "attn_v", kv_heads * hd)),
        ("attn_output", cols(model, "attn_output", heads * hd)),
        ("ffn_gate", rows(model, "ffn_gate", ff)),
        ("ffn_up", rows(model, "ffn_up", ff)),
        ("ffn_down", cols(model, "ffn_down", ff)),
    ];
    for (s, t) in updates {
        model.tensors.insert(name(s), t);
    }
}

#[test]
fn onnx_decoder_matches_the_runtime_for_float_int8_and_int4_models() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 5, f16: false };
    let path = write_tiny_gguf(dir.path(), "tiny.gguf", &spec);
    let untied = write_tiny_gguf(dir.path(), "untied.gguf", &TinySpec { tied: false, ..spec });
    let defaults = OnnxOptions::default();

    let float = load_model(&path).unwrap();
    let s = check("f32 (tied head stored once)", &float, &dir.path().join("f32"), &PROMPT, &defaults, 1e-4).summary;
    assert!(s.matmul_nbits.is_empty() && s.notes.is_empty() && s.genai_config && !s.external_data);
    let genai: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("f32/genai_config.json")).unwrap()).unwrap();
    assert_eq!(genai["model"]["decoder"]["num_key_value_heads"], 2);
    assert_eq!(genai["model"]["decoder"]["inputs"]["past_key_names"], "past_key_values.%d.key");

    let mut int8 = load_model(&path).unwrap();
    quantize(&mut int8, serde_json::json!({ "bits": 8, "group_size": 32, "ignore": [] }));
    let s = check("int8 g32 sym, tied head quantized", &int8, &dir.path().join("int8"), &PROMPT, &defaults, 1e-4).summary;
    assert_eq!(s.matmul_nbits.len(), 2 * 7 + 1, "every linear and the tied head: {:?}", s.matmul_nbits);
    assert_eq!(s.gather_nbits.len(), 1, "the embedding gathered from its codes");

    let mut int8_pc = load_model(&path).unwrap();
    quantize(&mut int8_pc, serde_json::json!({ "bits": 8, "group_size": "per-channel" }));
    let s = check("int8 per-channel (block = largest power of two dividing the row)", &int8_pc, &dir.path().join("int8pc"), &PROMPT, &defaults, 1e-4).summary;
    assert_eq!(s.matmul_nbits.len(), 2 * 7);

    let mut int4 = load_model(&path).unwrap();
    quantize(&mut int4, serde_json::json!({ "bits": 4, "group_size": 32 }));
    let s = check("int4 g32 sym", &int4, &dir.path().join("int4"), &PROMPT, &defaults, 1e-4).summary;
    assert_eq!(s.matmul_nbits.len(), 2 * 7);

    let mut int4_asym = load_model(&untied).unwrap();
    quantize(&mut int4_asym, serde_json::json!({ "bits": 4, "group_size": 32, "symmetric": false, "ignore": [] }));
    let s = check("int4 g32 asym, untied head quantized", &int4_asym, &dir.path().join("int4asym"), &PROMPT, &defaults, 1e-4).summary;
    assert_eq!(s.matmul_nbits.len(), 2 * 7 + 1);
    assert!(s.matmul_nbits.iter().all(|m| m.ends_with("asym")), "{:?}", s.matmul_nbits);
    assert_eq!(s.gather_nbits, vec!["token_embd.weight: int4 block 32 asym".to_owned()]);

    // Same model in, same bytes out.
    write_onnx(&int4_asym, &dir.path().join("int4asym-again"), &defaults).unwrap();
    assert_eq!(std::fs::read(dir.path().join("int4asym/model.onnx")).unwrap(), std::fs::read(dir.path().join("int4asym-again/model.onnx")).unwrap());
}

#[test]
fn onnx_decoder_follows_a_relu_gate() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 7, f16: false };
    let path = write_tiny_gguf(dir.path(), "tiny.gguf", &spec);
    let defaults = OnnxOptions::default();
    // What the activation-swap pass does: the config's activation, no weight change.
    let mut relu = load_model(&path).unwrap();
    relu.config.activation = Activation::Relu;
    let float = check("f32 ReLU", &relu, &dir.path().join("relu"), &PROMPT, &defaults, 1e-4);
    let silu = runtime_logits(&load_model(&path).unwrap(), &PROMPT);
    assert!(edgeforge_tests::max_abs_diff(&float.runtime, &silu) > 1e-3, "the ReLU model's logits equal the SiLU model's");
    quantize(&mut relu, serde_json::json!({ "bits": 4, "group_size": 32 }));
    check("int4 g32 ReLU", &relu, &dir.path().join("relu-int4"), &PROMPT, &defaults, 1e-4);
}

/// Replace `name` by GGUF blocks of `dtype` with pseudo-random codes (scale `d`, Q4_1 offset −d·4): the
/// comparison only needs both sides to read the same blocks.
fn ggml_blocks(model: &mut Model, name: &str, dtype: GgmlType, d: f32, seed: u64) {
    let t = &model.tensors[name];
    let n_blocks = t.n_elems() / 32;
    let block_bytes = match dtype {
        GgmlType::Q4_0 => 18,
        GgmlType::Q4_1 => 20,
        _ => 34,
    };
    let mut state = seed;
    let mut bytes = Vec::with_capacity(n_blocks * block_bytes);
    for _ in 0..n_blocks {
        bytes.extend(half::f16::from_f32(d).to_le_bytes());
        if dtype == GgmlType::Q4_1 {
            bytes.extend(half::f16::from_f32(-4.0 * d).to_le_bytes());
        }
        let code_bytes = if dtype == GgmlType::Q8_0 { 32 } else { 16 };
        for _ in 0..code_bytes {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            bytes.push((state >> 56) as u8);
        }
    }
    let shape = t.shape.clone();
    model.tensors.insert(name.to_owned(), Tensor { shape, data: TensorData::Blocks { dtype, bytes: bytes.into() } });
}

/// GGUF Q4_0, Q4_1 and Q8_0 blocks as loaded map to MatMulNBits (Q4_1 with float zero points −m/d).
#[test]
fn onnx_decoder_maps_gguf_q4_0_q4_1_and_q8_0_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 3, f16: false };
    let mut model = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &spec)).unwrap();
    ggml_blocks(&mut model, "blk.0.attn_q.weight", GgmlType::Q4_0, 0.03, 1);
    ggml_blocks(&mut model, "blk.0.ffn_down.weight", GgmlType::Q8_0, 0.002, 2);
    ggml_blocks(&mut model, "blk.1.ffn_up.weight", GgmlType::Q4_1, 0.03, 3);
    ggml_blocks(&mut model, "token_embd.weight", GgmlType::Q4_1, 0.03, 4);
    let s = check("GGUF Q4_0/Q4_1/Q8_0 blocks, tied Q4_1 head", &model, &dir.path().join("ggml"), &PROMPT, &OnnxOptions::default(), 1e-4).summary;
    assert_eq!(s.matmul_nbits.len(), 4, "{:?}", s.matmul_nbits);
    assert!(s.matmul_nbits.contains(&"token_embd.weight: int4 block 32 asym".to_owned()), "{:?}", s.matmul_nbits);
    assert_eq!(s.notes.len(), 1, "the Q4_1 embedding gathers floats: {:?}", s.notes);
}

#[test]
fn onnx_decoder_handles_pruned_blocks_and_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 3, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 11, f16: false };
    let mut model = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &spec)).unwrap();
    prune_block(&mut model, 1, 2, 1, 64);
    prune_block(&mut model, 2, 4, 2, 32);
    let external = OnnxOptions { external_data: ExternalData::Always, ..Default::default() };
    let s = check("pruned f32, external data", &model, &dir.path().join("pruned"), &PROMPT, &external, 1e-4).summary;
    assert!(s.external_data && !s.genai_config, "{s:?}");
    assert!(dir.path().join("pruned/model.onnx.data").exists());
    assert!(!dir.path().join("pruned/genai_config.json").exists());

    quantize(&mut model, serde_json::json!({ "bits": 4, "group_size": 32, "symmetric": false }));
    let s = check("pruned int4 g32 asym", &model, &dir.path().join("pruned-int4"), &PROMPT, &OnnxOptions::default(), 1e-4).summary;
    assert_eq!(s.matmul_nbits.len(), 3 * 7);
}

/// A 16-token prompt through the exported real model, with and without the KV cache: within tolerance and
/// the same top-1 token as the runtime at every position.
fn check_real_model(name: &str, model: &Model) -> OnnxSummary {
    let mut prompt = model.tokenizer.encode("The capital of France is Paris. The capital of Italy is Rome, and the capital", true).unwrap();
    prompt.truncate(16);
    assert_eq!(prompt.len(), 16);
    let dir = tempfile::tempdir().unwrap();
    let c = check(name, model, &dir.path().join("smollm2-onnx"), &prompt, &OnnxOptions::default(), 1e-4);
    let vocab = model.config.vocab_size;
    let ours = argmax_rows(&c.runtime, vocab);
    let agree = |v: &[f32]| argmax_rows(v, vocab).iter().zip(&ours).filter(|(a, b)| a == b).count();
    let (a_full, a_step) = (agree(&c.ort_full), agree(&c.ort_stepwise));
    eprintln!("{name}: {} bytes, top-1 agreement {a_full}/16 (one call), {a_step}/16 (KV cache); notes {:?}", c.summary.bytes, c.summary.notes);
    assert_eq!((a_full, a_step), (16, 16));
    c.summary
}

/// SmolLM2-135M (EDGEFORGE_TEST_MODEL or scripts/fetch-model.sh), RTN int4 g32 sym including the tied
/// embedding/head: MatMulNBits everywhere, the embedding gathered from its codes.
#[test]
fn onnx_real_model_int4_matches_the_runtime() {
    let mut model = load_model(&reference_model()).unwrap();
    quantize(&mut model, serde_json::json!({ "bits": 4, "group_size": 32, "ignore": [] }));
    let s = check_real_model("SmolLM2-135M RTN int4 g32 sym", &model);
    assert_eq!((s.matmul_nbits.len(), s.gather_nbits.len()), (30 * 7 + 1, 1));
}

/// SmolLM2-135M as loaded from its Q4_1 GGUF (blocks mapped to MatMulNBits with float zero points).
#[test]
fn onnx_real_model_as_loaded_matches_the_runtime() {
    let model = load_model(&reference_model()).unwrap();
    let s = check_real_model("SmolLM2-135M Q4_1 GGUF as loaded", &model);
    assert!(s.matmul_nbits.len() >= 30 * 7, "{:?}", s.notes);
}

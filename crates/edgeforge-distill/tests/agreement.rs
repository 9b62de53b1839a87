//! The burn model computes what the runtime computes: same logits on a tiny model built here and on the
//! real reference model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use burn::tensor::{Device, Int, Tensor, TensorData};
use edgeforge_core::{load_model, Activation, Model};
use edgeforge_distill::load::{llama_from_model, Trainable};
use edgeforge_distill::model::Positions;
use edgeforge_runtime::{weights_from_model, LlamaRuntime};
use edgeforge_tests::{reference_model, write_tiny_gguf, TinySpec};

fn burn_logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let device = Device::flex();
    let llama = llama_from_model(model, &device, Trainable { embeddings: false, blocks: false }).unwrap();
    let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), &device);
    let pos = Positions::new(tokens.len(), &llama, &device);
    llama.forward(t, &pos, false).logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn runtime_logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let rt = LlamaRuntime::new(weights_from_model(model).unwrap()).unwrap();
    let mut cache = rt.new_cache(tokens.len());
    rt.forward(&mut cache, tokens, 0).unwrap()
}

/// (max |a − b|, max |a − b| / max |b|)
fn differences(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let max_abs = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    (max_abs, max_abs / scale)
}

#[test]
fn tiny_model_logits_match_runtime() {
    let dir = tempfile::tempdir().unwrap();
    for spec in [TinySpec::default(), TinySpec { tied: false, n_kv_heads: 4, ..TinySpec::default() }, TinySpec { n_kv_heads: 1, ..TinySpec::default() }] {
        let model = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &spec)).unwrap();
        let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 250 + 2).collect();
        let (abs, rel) = differences(&burn_logits(&model, &tokens), &runtime_logits(&model, &tokens));
        assert!(abs < 1e-5, "tiny {spec:?}: max abs {abs}, rel {rel}");
    }
}

#[test]
fn tiny_relu_model_logits_match_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default())).unwrap();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 250 + 2).collect();
    let silu = runtime_logits(&model, &tokens);
    model.config.activation = Activation::Relu;
    let (burn, rt) = (burn_logits(&model, &tokens), runtime_logits(&model, &tokens));
    let (abs, rel) = differences(&burn, &rt);
    assert!(abs < 1e-4, "ReLU: max abs {abs}, rel {rel}");
    // Both must actually have switched: the ReLU logits differ from the SiLU ones.
    let (moved, _) = differences(&rt, &silu);
    assert!(moved > 1e-3, "ReLU logits equal the SiLU ones to {moved}");
}

#[test]
fn real_model_logits_match_runtime() {
    let model = load_model(&reference_model()).unwrap();
    let tokens = model.tokenizer.encode("The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building, and the tallest structure in Paris.", false).unwrap();
    let (a, b) = (burn_logits(&model, &tokens), runtime_logits(&model, &tokens));
    let (abs, rel) = differences(&a, &b);
    eprintln!("real model, {} tokens: max abs logit difference {abs:.3e}, relative to the largest logit {rel:.3e}", tokens.len());
    assert!(rel < 1e-4, "max abs {abs}, relative {rel}");
    assert!(abs < 2e-4, "max abs {abs}, relative {rel}");
}

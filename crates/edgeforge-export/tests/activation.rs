//! A ReLU-gated model (after `activation-swap`) in the formats that cannot or can say so: GGUF refuses it
//! with a typed error and writes nothing; the Hugging Face folder records `hidden_act: relu`, and loading
//! it back gives a ReLU model again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_core::{load_model, Activation};
use edgeforge_export::gguf_model::write_gguf;
use edgeforge_export::hf::{write_hf_dir, FloatType};
use edgeforge_export::ExportError;
use edgeforge_tests::{write_tiny_gguf, TinySpec};

#[test]
fn gguf_export_of_a_relu_model_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default())).unwrap();
    model.config.activation = Activation::Relu;
    let out = dir.path().join("relu.gguf");
    let err = write_gguf(&model, &out, "relu").unwrap_err();
    assert!(matches!(err, ExportError::GgufActivation { activation: Activation::Relu }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("relu") && message.contains("SiLU") && message.contains("fix:"), "{message}");
    assert!(!out.exists(), "a refused export leaves no file");
    // The SiLU model still exports.
    model.config.activation = Activation::Silu;
    write_gguf(&model, &out, "silu").unwrap();
}

#[test]
fn hf_folder_records_relu_and_loads_back_as_relu() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default())).unwrap();
    model.config.activation = Activation::Relu;
    let hf = write_hf_dir(&model, &dir.path().join("relu-hf"), FloatType::F32, false).unwrap().dir;
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["hidden_act"], "relu");
    assert_eq!(load_model(&hf).unwrap().config.activation, Activation::Relu);

    // Other activations are refused with the field named.
    let mut bad = config.clone();
    bad["hidden_act"] = "gelu".into();
    std::fs::write(hf.join("config.json"), serde_json::to_string(&bad).unwrap()).unwrap();
    let err = load_model(&hf).unwrap_err().to_string();
    assert!(err.contains("hidden_act") && err.contains("gelu"), "{err}");
}

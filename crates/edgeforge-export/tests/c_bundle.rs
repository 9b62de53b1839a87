//! The C bundle on tiny models built here: compiled with `gcc -std=c99 -Wall -Werror`, run on a prompt,
//! and its logits at every position compared with edgeforge's runtime on the same (quantized) model.
//! Tolerance: 1e-4 × the largest |logit| (the two sum in different orders in f32).
//! The same bundle is also cross-compiled with arm-none-eabi-gcc for a Cortex-M7 and run on QEMU's
//! mps2-an500 board (`make run-mcu`): same tolerance for the logits, the same greedy tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use edgeforge_core::{load_model, Activation, Model};
use edgeforge_export::c_bundle::write_c_bundle;
use edgeforge_tests::{mcu, write_tiny_gguf, TinySpec};

const PROMPT: [u32; 9] = [5, 17, 3, 30, 9, 1, 22, 8, 12];

fn quantize(model: &mut Model, options: serde_json::Value) {
    edgeforge_tests::quantize_rtn(model, options);
}

fn runtime_logits(model: &Model) -> Vec<f32> {
    edgeforge_tests::runtime_logits(model, &PROMPT)
}

/// Build the bundle with its own Makefile flags and run the demo; returns (logits, generated ids).
fn bundle_logits(dir: &Path, vocab: usize) -> (Vec<f32>, String) {
    let make = Command::new("make").current_dir(dir).output().expect("make and gcc must be installed");
    assert!(make.status.success(), "make failed:\n{}{}", String::from_utf8_lossy(&make.stdout), String::from_utf8_lossy(&make.stderr));
    let mut args = vec!["logits.bin".to_owned(), "5".to_owned()];
    args.extend(PROMPT.iter().map(u32::to_string));
    let run = Command::new(dir.join("edgeforge_demo")).args(&args).current_dir(dir).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let bytes = std::fs::read(dir.join("logits.bin")).unwrap();
    assert_eq!(bytes.len(), PROMPT.len() * vocab * 4);
    (bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), String::from_utf8_lossy(&run.stdout).into_owned())
}

fn check(name: &str, model: &Model, dir: &Path) {
    let summary = write_c_bundle(model, dir, 64).unwrap();
    let (c, generated) = bundle_logits(dir, model.config.vocab_size);
    let ours = runtime_logits(model);
    let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = c.iter().zip(&ours).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("{name}: max |C − runtime| = {diff:.3e} (largest logit {scale:.3}), weights {} B, arena {} floats, generated {generated}", summary.weight_bytes, summary.arena_floats);
    assert!(diff <= 1e-4 * scale.max(1.0), "{name}: C bundle logits differ from the runtime by {diff}");
    assert_eq!(generated.split_whitespace().count(), 5, "{generated}");
}

#[test]
fn c_bundle_matches_the_runtime_for_float_int8_and_int4_models() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 5, f16: false };
    let path = write_tiny_gguf(dir.path(), "tiny.gguf", &spec);

    let float = load_model(&path).unwrap();
    check("f32", &float, &dir.path().join("f32"));

    let mut int8 = load_model(&path).unwrap();
    quantize(&mut int8, serde_json::json!({ "bits": 8, "group_size": "per-channel", "ignore": [] }));
    assert_eq!(int8.tensors["token_embd.weight"].format_name(), "int8-per-channel-sym");
    check("int8 per-channel (embedding too)", &int8, &dir.path().join("int8"));

    let mut int4 = load_model(&write_tiny_gguf(dir.path(), "untied.gguf", &TinySpec { tied: false, ..spec })).unwrap();
    quantize(&mut int4, serde_json::json!({ "bits": 4, "group_size": 32 }));
    check("int4 g32, untied head", &int4, &dir.path().join("int4"));
    let weights = std::fs::read_to_string(dir.path().join("int4/model_weights.c")).unwrap();
    assert!(weights.contains("EF_INT4") && !weights.contains("malloc"));
    let source = std::fs::read_to_string(dir.path().join("int4/edgeforge_model.c")).unwrap();
    assert!(!source.contains("malloc"), "no allocation in the inference source");
}

#[test]
fn c_bundle_follows_a_relu_gate() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 7, f16: false };
    let path = write_tiny_gguf(dir.path(), "tiny.gguf", &spec);
    // What the activation-swap pass does: the config's activation, no weight change.
    let mut relu = load_model(&path).unwrap();
    relu.config.activation = Activation::Relu;
    check("f32 ReLU", &relu, &dir.path().join("relu"));
    let config = std::fs::read_to_string(dir.path().join("relu/model_config.h")).unwrap();
    assert!(config.contains("#define EF_ACT_RELU 1"), "{config}");
    quantize(&mut relu, serde_json::json!({ "bits": 8, "group_size": "per-channel" }));
    check("int8 per-channel ReLU", &relu, &dir.path().join("relu-int8"));
    let silu = load_model(&path).unwrap();
    write_c_bundle(&silu, &dir.path().join("silu"), 64).unwrap();
    assert!(std::fs::read_to_string(dir.path().join("silu/model_config.h")).unwrap().contains("#define EF_ACT_RELU 0"));
}

fn check_mcu(name: &str, model: &Model, dir: &Path) {
    write_c_bundle(model, dir, 64).unwrap();
    let vocab = model.config.vocab_size;
    let n_gen = 6;
    let run = mcu::run(dir, &PROMPT, vocab, n_gen, "FLASH");
    assert_eq!(run.generated.len(), n_gen);
    let diff = mcu::check_against_runtime(name, model, &PROMPT, &run);
    // No heap anywhere in the image, and the weights in flash (below the SRAM at 0x20000000).
    let symbols = mcu::tool(dir, "arm-none-eabi-nm", &["edgeforge_mcu.elf"]);
    assert!(!symbols.lines().any(|l| l.ends_with(" malloc") || l.ends_with(" _sbrk") || l.ends_with(" _malloc_r")), "{name}: heap functions linked");
    let layers = symbols.lines().find(|l| l.ends_with(" ef_layers")).expect("ef_layers in the image");
    assert!(u32::from_str_radix(&layers[..8], 16).unwrap() < 0x2000_0000, "{name}: weights not in flash: {layers}");
    let size = mcu::tool(dir, "arm-none-eabi-size", &["edgeforge_mcu.elf"]);
    let decode = &run.ticks[PROMPT.len()..];
    let per_token = mcu::instructions_per_token(decode);
    eprintln!(
        "{name} on emulated Cortex-M7 (QEMU mps2-an500): max |MCU − runtime| = {diff:.3e}, generated {:?}; {} ~{per_token:.0} instructions/token (emulated, -icount shift=0, SysTick × 40)",
        run.generated,
        size.lines().nth(1).unwrap_or_default().trim()
    );
}

#[test]
fn c_bundle_runs_on_an_emulated_cortex_m7() {
    if !mcu::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 11, f16: false };
    let path = write_tiny_gguf(dir.path(), "tiny.gguf", &spec);
    check_mcu("f32", &load_model(&path).unwrap(), &dir.path().join("f32"));
    let mut int8 = load_model(&path).unwrap();
    quantize(&mut int8, serde_json::json!({ "bits": 8, "group_size": "per-channel", "ignore": [] }));
    check_mcu("int8 per-channel", &int8, &dir.path().join("int8"));
    let mut int4 = load_model(&write_tiny_gguf(dir.path(), "untied.gguf", &TinySpec { tied: false, ..spec })).unwrap();
    quantize(&mut int4, serde_json::json!({ "bits": 4, "group_size": 32 }));
    check_mcu("int4 g32, untied head", &int4, &dir.path().join("int4"));
}

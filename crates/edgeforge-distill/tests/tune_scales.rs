//! `tune-scales` on a tiny model quantized with RTN into block formats: the held-out KL against the float
//! model drops, the codes are unchanged byte for byte, the scales moved, and every block decodes exactly
//! to f16(scale)·level + f16(min).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;

use edgeforge_core::pass::{CalibrationData, Pass, PassContext};
use edgeforge_core::scheme::Scheme;
use edgeforge_core::{load_model, Model, TensorData};
use edgeforge_distill::{mean_kl, runtime_log_probs, TuneScales, TuneScalesOptions};
use edgeforge_tests::{write_tiny_gguf, Rng, TinySpec};

fn quantize(model: &mut Model) -> Vec<(String, Scheme)> {
    let mut done = Vec::new();
    let names: Vec<String> = model.tensors.keys().cloned().collect();
    for name in names {
        let scheme = if name.contains("norm") {
            continue;
        } else if name == "token_embd.weight" {
            Scheme::Q8_0
        } else if name.contains("ffn_") {
            Scheme::Q4_1
        } else if name.contains("attn_") && !name.contains("norm") {
            Scheme::Q4_0
        } else {
            continue;
        };
        let t = model.tensors.get_mut(&name).unwrap();
        let values = t.to_f32(&name).unwrap();
        let bytes = scheme.quantize_rows(&values, t.shape[1], None);
        t.data = TensorData::Blocks { dtype: scheme.ggml(), bytes: bytes.into() };
        done.push((name, scheme));
    }
    done
}

fn blocks_of(model: &Model, name: &str) -> Vec<u8> {
    match &model.tensors[name].data {
        TensorData::Blocks { bytes, .. } => bytes.to_vec(),
        _ => panic!("{name} is not blocks"),
    }
}

#[test]
fn tuning_the_scales_lowers_the_kl_and_keeps_the_codes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_ff: 64, ..TinySpec::default() };
    let path = write_tiny_gguf(dir.path(), "tiny.gguf", &spec);
    let teacher = load_model(&path).unwrap();
    let mut model = load_model(&path).unwrap();
    let quantized = quantize(&mut model);
    let before: Vec<Vec<u8>> = quantized.iter().map(|(n, _)| blocks_of(&model, n)).collect();

    let mut rng = Rng::new(5);
    let vocab = teacher.config.vocab_size as u64;
    let sequences: Vec<Vec<u32>> = (0..44).map(|_| (0..48).map(|_| (rng.next_u64() % vocab) as u32).collect()).collect();
    let cal = CalibrationData { sequences: sequences.clone() };
    let eval: Vec<&[u32]> = sequences[40..].iter().map(Vec::as_slice).collect();
    let teacher_lp = runtime_log_probs(&teacher, &eval).unwrap();
    let kl_before = mean_kl(&teacher_lp, &model, &eval).unwrap();

    let options = TuneScalesOptions { steps: 40, lr: 3e-3, batch_size: 8, eval_samples: Some(4), keep_if_worse: true, ..TuneScalesOptions::default() };
    let cancel = AtomicBool::new(false);
    let cx = PassContext { seed: 1, calibration: Some(&cal), progress: &|_, _| {}, status: &|_| {}, cancel: &cancel, original: Some(&teacher), work_dir: None };
    let outcome = TuneScales::new(options).run(&mut model, &cx).unwrap();
    for n in &outcome.notes {
        eprintln!("{n}");
    }
    let kl_after = mean_kl(&teacher_lp, &model, &eval).unwrap();
    eprintln!("held-out KL {kl_before:.5} → {kl_after:.5}");
    assert!(kl_after < kl_before * 0.95, "KL {kl_before} → {kl_after}");
    assert_eq!(outcome.changed.len(), quantized.len());

    let mut scales_moved = 0;
    for ((name, scheme), a) in quantized.iter().zip(before) {
        let b = blocks_of(&model, name);
        assert_eq!(a.len(), b.len(), "{name}");
        let bb = scheme.ggml().block_bytes();
        let mut decoded = vec![0f32; b.len() / bb * 32];
        edgeforge_core::blocks::dequantize(scheme.ggml(), &b, &mut decoded).unwrap();
        for (k, (x, y)) in a.chunks(bb).zip(b.chunks(bb)).enumerate() {
            let (fa, ca) = scheme.decode_block(x).unwrap();
            let (fb, cb) = scheme.decode_block(y).unwrap();
            assert_eq!(ca, cb, "{name} block {k}: codes changed");
            // The bytes after the f16 fields (codes) are identical.
            let fields = if scheme.info().offset { 4 } else { 2 };
            assert_eq!(x[fields..], y[fields..], "{name} block {k}: code bytes changed");
            if fa.d != fb.d || fa.m != fb.m {
                scales_moved += 1;
            }
            for (i, &c) in cb.iter().enumerate() {
                let scaled = fb.d.to_f32() * scheme.level(c);
                let want = if scheme.info().offset { scaled + fb.m.to_f32() } else { scaled };
                assert_eq!(decoded[k * 32 + i].to_bits(), want.to_bits(), "{name} block {k} element {i}");
            }
        }
    }
    assert!(scales_moved > 0, "no stored scale changed");
    eprintln!("{scales_moved} blocks changed their f16 fields");
}

#[test]
fn a_model_without_plain_block_tensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_ff: 64, ..TinySpec::default() };
    let path = write_tiny_gguf(dir.path(), "tiny.gguf", &spec);
    let teacher = load_model(&path).unwrap();
    let mut model = load_model(&path).unwrap();
    let cal = CalibrationData { sequences: vec![(0..16).collect(), (16..32).collect()] };
    let cancel = AtomicBool::new(false);
    let cx = PassContext { seed: 1, calibration: Some(&cal), progress: &|_, _| {}, status: &|_| {}, cancel: &cancel, original: Some(&teacher), work_dir: None };
    let err = TuneScales::new(TuneScalesOptions::default()).run(&mut model, &cx).unwrap_err().to_string();
    assert!(err.contains("quantize with `format:` first"), "{err}");
}

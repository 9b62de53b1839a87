//! The no-distillation baseline (`objective: next-token`): its loss is the mean next-token cross-entropy of
//! the text (checked against a scalar computation), it trains with no teacher at all and lowers that loss, and
//! it refuses options that only make sense with a teacher.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;

use burn::tensor::{Device, Tensor, TensorData};
use edgeforge_core::pass::{CalibrationData, Pass, PassContext};
use edgeforge_core::load_model;
use edgeforge_distill::{next_token_loss, Distill, DistillOptions, Objective};
use edgeforge_tests::{write_tiny_gguf, Rng, TinySpec};

const SPEC: TinySpec = TinySpec { n_embd: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 48, tied: true, seed: 23, f16: false };

#[test]
fn next_token_loss_is_the_mean_cross_entropy_of_the_following_tokens() {
    let (vocab, rows) = (5usize, [[1u32, 4, 2], [0, 3, 3]]);
    let mut rng = Rng::new(3);
    let logits: Vec<f32> = (0..rows.len() * 3 * vocab).map(|_| rng.uniform(2.0)).collect();
    let device = Device::flex();
    let t = Tensor::<2>::from_data(TensorData::new(logits.clone(), [rows.len() * 3, vocab]), &device);
    let slices: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let got = f64::from(next_token_loss(t, &slices).into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]);

    // Scalar reference: positions 0 and 1 of each row predict tokens 1 and 2; the last position is unscored.
    let mut sum = 0f64;
    for (r, row) in rows.iter().enumerate() {
        for p in 0..2 {
            let z = &logits[(r * 3 + p) * vocab..(r * 3 + p + 1) * vocab];
            let lse = z.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln();
            sum += lse - f64::from(z[row[p + 1] as usize]);
        }
    }
    let want = sum / 4.0;
    assert!((got - want).abs() < 1e-5, "cross-entropy {got} vs scalar {want}");
}

#[test]
fn next_token_training_needs_no_teacher_and_lowers_the_cross_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let mut student = load_model(&write_tiny_gguf(dir.path(), "student.gguf", &SPEC)).unwrap();
    // A text with structure to learn: each token is the previous one plus 1 (mod vocab).
    let vocab = student.config.vocab_size as u32;
    let cal = CalibrationData { sequences: (0..8).map(|s| (0..16).map(|i| (s * 7 + i) % vocab).collect()).collect() };
    let o = DistillOptions { steps: 12, lr: 3e-3, warmup_steps: 1, batch_size: 2, objective: Objective::NextToken, ..DistillOptions::default() };
    let pass = Distill::new(o.clone());
    assert!(!pass.needs().original_model, "the baseline must not ask the runner for a teacher");
    let cancel = AtomicBool::new(false);
    let cx = PassContext { seed: 4, calibration: Some(&cal), progress: &|_, _| {}, status: &|_| {}, cancel: &cancel, original: None, work_dir: Some(dir.path()) };
    let notes = pass.run(&mut student, &cx).unwrap().notes;
    let note = notes.iter().find(|n| n.starts_with("next-token cross-entropy")).unwrap_or_else(|| panic!("{notes:?}"));
    let nums: Vec<f64> = note.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter_map(|s| s.parse().ok()).collect();
    let (first, last) = (nums[nums.len() - 2], nums[nums.len() - 1]);
    assert!(last < first * 0.9, "cross-entropy should fall: {note}");

    // The distillation objective without a teacher is an error, not a silent baseline.
    let distill = Distill::new(DistillOptions { objective: Objective::Distill, ..o.clone() });
    assert!(distill.needs().original_model);
    let err = distill.run(&mut student, &PassContext { work_dir: None, ..cx }).unwrap_err();
    assert!(err.to_string().contains("teacher"), "{err}");
}

#[test]
fn next_token_refuses_teacher_only_options() {
    let o = DistillOptions { objective: Objective::NextToken, hidden_mse_weight: 0.5, ..DistillOptions::default() };
    let issues = o.issues();
    assert!(issues.iter().any(|i| i.field == "objective"), "{:?}", issues.iter().map(|i| i.message.clone()).collect::<Vec<_>>());
    let o = DistillOptions { objective: Objective::NextToken, teacher_top_k: Some(8), ..DistillOptions::default() };
    assert!(o.issues().iter().any(|i| i.field == "objective"));
    assert!(DistillOptions { objective: Objective::NextToken, ..DistillOptions::default() }.issues().is_empty());
}

//! Distillation on tiny models built here: the loss goes down, and a run cancelled mid-way then resumed from
//! its checkpoint ends with exactly the weights of an uninterrupted run; the same for family models whose
//! blocks carry biases (Qwen 2) and q/k and post norms (Gemma 3), which train, are checkpointed and written
//! back under their GGUF names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};

use edgeforge_core::pass::{CalibrationData, Pass, PassContext, PassError};
use edgeforge_core::{load_model, Model, TensorData};
use edgeforge_distill::{Distill, DistillOptions};
use edgeforge_tests::{write_tiny_gguf, Rng, TinySpec};

const SPEC: TinySpec = TinySpec { n_embd: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 48, tied: true, seed: 21, f16: false };

fn calibration(vocab: usize) -> CalibrationData {
    let mut rng = Rng::new(9);
    CalibrationData { sequences: (0..8).map(|_| (0..16).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()).collect() }
}

fn options() -> DistillOptions {
    DistillOptions { steps: 6, lr: 3e-3, warmup_steps: 1, batch_size: 2, checkpoint_every: 2, ..DistillOptions::default() }
}

/// Run the pass; `cancel_after` sets Ctrl-C's flag once that many steps are done.
fn run(student: &mut Model, teacher: &Model, cal: &CalibrationData, work: &std::path::Path, cancel_after: Option<u64>) -> Result<Vec<String>, PassError> {
    let cancel = AtomicBool::new(false);
    let progress = |done: u64, _: u64| {
        if cancel_after.is_some_and(|k| done >= k) {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let cx = PassContext { seed: 4, calibration: Some(cal), progress: &progress, status: &|_| {}, cancel: &cancel, original: Some(teacher), work_dir: Some(work) };
    Distill::new(options()).run(student, &cx).map(|o| o.notes)
}

fn weights(m: &Model) -> Vec<(String, Vec<f32>)> {
    m.tensors.iter().map(|(n, t)| (n.clone(), t.to_f32(n).unwrap())).collect()
}

#[test]
fn training_lowers_the_loss_and_a_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = load_model(&write_tiny_gguf(dir.path(), "teacher.gguf", &SPEC)).unwrap();
    let student_path = write_tiny_gguf(dir.path(), "student.gguf", &TinySpec { seed: 22, ..SPEC });
    let cal = calibration(teacher.config.vocab_size);

    let mut straight = load_model(&student_path).unwrap();
    let notes = run(&mut straight, &teacher, &cal, &dir.path().join("straight"), None).unwrap();
    let kl_note = notes.iter().find(|n| n.starts_with("KL(teacher")).expect("a KL note");
    let nums: Vec<f64> = kl_note.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter_map(|s| s.parse().ok()).collect();
    let (first, last) = (nums[nums.len() - 2], nums[nums.len() - 1]);
    assert!(last < first, "KL should fall over training: {kl_note}");

    let work = dir.path().join("interrupted");
    let mut interrupted = load_model(&student_path).unwrap();
    let err = run(&mut interrupted, &teacher, &cal, &work, Some(3)).unwrap_err();
    assert!(matches!(err, PassError::Cancelled), "{err}");
    let mut resumed = load_model(&student_path).unwrap();
    let notes = run(&mut resumed, &teacher, &cal, &work, None).unwrap();
    assert!(notes.iter().any(|n| n.contains("resumed from the checkpoint at step 2")), "{notes:?}");
    assert_eq!(weights(&resumed), weights(&straight), "resumed training must end bit-identical to the uninterrupted run");
}

/// The student of a family test: the teacher with every weight moved by up to ±`scale` (fixed seed).
fn perturbed(path: &std::path::Path, scale: f32) -> Model {
    let mut m = load_model(path).unwrap();
    let mut rng = Rng::new(17);
    for (name, t) in m.tensors.iter_mut() {
        let v: Vec<f32> = t.to_f32(name).unwrap().into_iter().map(|x| x + rng.uniform(scale)).collect();
        t.data = TensorData::F32(v);
    }
    m
}

#[test]
fn family_extras_train_checkpoint_and_resume_bit_identically() {
    for (name, extras) in [("qwen2", ["blk.0.attn_q.bias", "blk.1.attn_v.bias"]), ("gemma3", ["blk.0.attn_k_norm.weight", "blk.5.post_ffw_norm.weight"])] {
        let dir = tempfile::tempdir().unwrap();
        let path = edgeforge_tests::tiny_family_models().join(format!("{name}.gguf"));
        let teacher = load_model(&path).unwrap();
        let cal = calibration(teacher.config.vocab_size);
        let start = weights(&perturbed(&path, 0.05));

        let mut straight = perturbed(&path, 0.05);
        let notes = run(&mut straight, &teacher, &cal, &dir.path().join("straight"), None).unwrap();
        assert!(notes.iter().any(|n| n.starts_with("KL(teacher")), "{name}: {notes:?}");
        let after = weights(&straight);
        for t in extras {
            let (a, b) = (start.iter().find(|(n, _)| n == t).unwrap(), after.iter().find(|(n, _)| n == t).unwrap());
            assert_ne!(a.1, b.1, "{name}: {t} did not train or was not written back");
        }

        let work = dir.path().join("interrupted");
        let err = run(&mut perturbed(&path, 0.05), &teacher, &cal, &work, Some(3)).unwrap_err();
        assert!(matches!(err, PassError::Cancelled), "{name}: {err}");
        let mut resumed = perturbed(&path, 0.05);
        let notes = run(&mut resumed, &teacher, &cal, &work, None).unwrap();
        assert!(notes.iter().any(|n| n.contains("resumed from the checkpoint at step 2")), "{name}: {notes:?}");
        assert_eq!(weights(&resumed), after, "{name}: resumed training must end bit-identical to the uninterrupted run");
    }
}

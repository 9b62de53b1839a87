//! The teacher run by the native runtime gives the burn teacher's targets: the same top-k tokens and
//! log-probabilities (tiny model built here, and the real reference model), the same first-step KL when
//! distilling with either engine; `ce_weight` adds the next-token cross-entropy to the loss; bad options are
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;

use burn::tensor::{Device, Int, Tensor, TensorData};
use edgeforge_core::pass::{CalibrationData, Pass, PassContext};
use edgeforge_core::{load_model, Model};
use edgeforge_distill::load::{llama_from_model, Trainable};
use edgeforge_distill::model::Positions;
use edgeforge_distill::teacher::{top_k_rows, RuntimeTeacher};
use edgeforge_distill::{teacher_log_probs, top_k, Distill, DistillOptions, Objective, TeacherEngine};
use edgeforge_tests::{reference_model, write_tiny_gguf, Rng, TinySpec};

const SPEC: TinySpec = TinySpec { n_embd: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 48, tied: true, seed: 31, f16: false };

/// The burn teacher's top-k at temperature `t`: `([len·k] ids, [len·k] renormalized log-probabilities)`.
fn burn_top_k(model: &Model, tokens: &[u32], t: f64, k: usize) -> (Vec<i64>, Vec<f32>) {
    let device = Device::flex();
    let llama = llama_from_model(model, &device, Trainable { embeddings: false, blocks: false }).unwrap();
    let ids: Vec<i64> = tokens.iter().map(|&x| i64::from(x)).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), &device);
    let pos = Positions::new(tokens.len(), &llama, &device);
    let (ids, lps) = top_k(teacher_log_probs(llama.forward(input, &pos, false).logits, t), k);
    (ids.into_data().convert::<i64>().try_into_vec::<i64>().unwrap(), lps.into_data().convert::<f32>().try_into_vec::<f32>().unwrap())
}

/// Compares the runtime's top-k with burn's: log-probabilities within `tol`, ids equal wherever the
/// teacher's log-probabilities of neighbouring ranks differ by more than `tol` (else the order is a tie; the
/// last rank is not compared: its neighbour below, rank k + 1, is not in the lists).
fn assert_same_top_k(model: &Model, tokens: &[u32], t: f64, k: usize, tol: f32) {
    let rt = RuntimeTeacher::new(model).unwrap();
    let (rt_ids, rt_lp) = rt.top_k(tokens, t, k).unwrap();
    // The same as the top-k of the full log-probabilities (which skips the full log-softmax).
    let (_, full_lp) = top_k_rows(&rt.log_probs(tokens, t).unwrap(), rt.vocab_size(), k);
    let d = rt_lp.iter().zip(&full_lp).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d < 1e-5, "top-k from logits vs from log-probabilities: {d}");
    let (b_ids, b_lp) = burn_top_k(model, tokens, t, k);
    assert_eq!(rt_ids.len(), tokens.len() * k);
    assert_eq!(rt_ids.len(), b_ids.len());
    let max_diff = rt_lp.iter().zip(&b_lp).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("top-{k} at T={t}: {} positions, max |Δ log-prob| {max_diff:.3e}", tokens.len());
    assert!(max_diff < tol, "log-probabilities differ by {max_diff}");
    let mut checked = 0;
    for (p, (ri, bi)) in rt_ids.chunks(k).zip(b_ids.chunks(k)).enumerate() {
        let lp = &b_lp[p * k..(p + 1) * k];
        for r in 0..k {
            let isolated = (r == 0 || lp[r - 1] - lp[r] > tol) && r + 1 < k && lp[r] - lp[r + 1] > tol;
            if isolated {
                assert_eq!(ri[r], bi[r], "position {p}, rank {r}: runtime {ri:?} vs burn {bi:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > tokens.len() * k / 2, "only {checked} ranks were separated enough to compare");
}

#[test]
fn runtime_teacher_top_k_equals_burn_teacher_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_model(&write_tiny_gguf(dir.path(), "teacher.gguf", &SPEC)).unwrap();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 250 + 2).collect();
    for (t, k) in [(1.0, 8), (2.0, 16), (1.0, model.config.vocab_size)] {
        assert_same_top_k(&model, &tokens, t, k, 1e-5);
    }
}

#[test]
fn runtime_teacher_top_k_equals_burn_teacher_on_the_reference_model() {
    let model = load_model(&reference_model()).unwrap();
    let tokens = model.tokenizer.encode("ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and Juliet is the sun.", false).unwrap();
    assert_same_top_k(&model, &tokens, 1.0, 32, 2e-4);
}

fn calibration(vocab: usize) -> CalibrationData {
    let mut rng = Rng::new(5);
    CalibrationData { sequences: (0..8).map(|_| (0..16).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()).collect() }
}

/// The per-step log of a distillation run on the tiny teacher/student pair: `(loss, kl, ce)` per step.
fn distill_log(o: DistillOptions) -> Vec<(f64, f64, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let teacher = load_model(&write_tiny_gguf(dir.path(), "teacher.gguf", &SPEC)).unwrap();
    let mut student = load_model(&write_tiny_gguf(dir.path(), "student.gguf", &TinySpec { seed: 32, ..SPEC })).unwrap();
    let cal = calibration(teacher.config.vocab_size);
    let cancel = AtomicBool::new(false);
    let cx = PassContext { seed: 4, calibration: Some(&cal), progress: &|_, _| {}, status: &|_| {}, cancel: &cancel, original: Some(&teacher), work_dir: Some(dir.path()) };
    let notes = Distill::new(o.clone()).run(&mut student, &cx).unwrap().notes;
    let engine = if o.runtime_teacher() { "runtime" } else { "burn" };
    assert!(notes.iter().any(|n| n.starts_with(&format!("teacher run by {engine}"))), "{notes:?}");
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("distill-log.json")).unwrap()).unwrap();
    let f = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap();
    log["log"].as_array().unwrap().iter().map(|s| (f(s, "loss"), f(s, "kl"), f(s, "ce"))).collect()
}

fn options(engine: TeacherEngine, top_k: Option<usize>) -> DistillOptions {
    let base = DistillOptions { steps: 6, lr: 3e-3, warmup_steps: 1, batch_size: 2, temperature: 2.0, ..DistillOptions::default() };
    DistillOptions { teacher_engine: engine, teacher_top_k: top_k, ..base }
}

#[test]
fn distilling_from_the_runtime_teacher_matches_the_burn_teacher() {
    for top_k in [None, Some(8)] {
        let rt = distill_log(options(TeacherEngine::Runtime, top_k));
        let burn = distill_log(options(TeacherEngine::Burn, top_k));
        // The first step sees the same student: its KL differs only by the teachers' rounding.
        let (a, b) = (rt[0].1, burn[0].1);
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "top_k {top_k:?}: first-step KL runtime {a} vs burn {b}");
        // And training follows the same course.
        let (a, b) = (rt[5].1, burn[5].1);
        assert!((a - b).abs() < 1e-2 * b.abs().max(1.0), "top_k {top_k:?}: last-step KL runtime {a} vs burn {b}");
        assert!(rt[5].1 < rt[0].1, "KL should fall: {rt:?}");
    }
    assert!(DistillOptions::default().runtime_teacher(), "auto uses the runtime without hidden states");
    assert!(!DistillOptions { hidden_mse_weight: 0.5, ..DistillOptions::default() }.runtime_teacher());
}

#[test]
fn ce_weight_adds_the_next_token_cross_entropy_to_the_loss() {
    let log = distill_log(DistillOptions { ce_weight: 0.5, ..options(TeacherEngine::Auto, Some(8)) });
    for &(loss, kl, ce) in &log {
        assert!(ce > 0.0, "the cross-entropy is logged: {log:?}");
        assert!((loss - (kl + 0.5 * ce)).abs() < 1e-9 * loss.abs().max(1.0), "loss {loss} ≠ kl {kl} + 0.5·ce {ce}");
    }
    let plain = distill_log(options(TeacherEngine::Auto, Some(8)));
    assert!(plain.iter().all(|&(loss, kl, ce)| ce == 0.0 && loss == kl), "{plain:?}");
    // The added term changes the course of training.
    assert!((plain[5].1 - log[5].1).abs() > 1e-6, "{plain:?} vs {log:?}");
}

#[test]
fn bad_teacher_options_are_refused() {
    let fields = |o: DistillOptions| o.issues().into_iter().map(|i| i.field).collect::<Vec<_>>();
    assert_eq!(fields(DistillOptions { ce_weight: -1.0, ..DistillOptions::default() }), ["ce_weight"]);
    assert_eq!(fields(DistillOptions { ce_weight: f64::NAN, ..DistillOptions::default() }), ["ce_weight"]);
    let runtime_hidden = DistillOptions { teacher_engine: TeacherEngine::Runtime, hidden_mse_weight: 0.5, ..DistillOptions::default() };
    assert_eq!(fields(runtime_hidden), ["teacher_engine"]);
    assert!(fields(DistillOptions { teacher_engine: TeacherEngine::Burn, hidden_mse_weight: 0.5, ..DistillOptions::default() }).is_empty());
    let next = DistillOptions { objective: Objective::NextToken, ..DistillOptions::default() };
    assert_eq!(fields(DistillOptions { ce_weight: 0.5, ..next.clone() }), ["objective"]);
    assert_eq!(fields(DistillOptions { teacher_engine: TeacherEngine::Runtime, ..next.clone() }), ["objective"]);
    assert!(fields(DistillOptions { ce_weight: 0.0, ..next }).is_empty());
}

#[test]
fn runtime_top_k_teacher_resumes_bit_identically() {
    // The runtime teacher's top-k targets come from a thread of their own (prefetch); a run cancelled at
    // step 3 and resumed (its cache empty again) must end where an uninterrupted run ends.
    let dir = tempfile::tempdir().unwrap();
    let teacher = load_model(&write_tiny_gguf(dir.path(), "teacher.gguf", &SPEC)).unwrap();
    let student_path = write_tiny_gguf(dir.path(), "student.gguf", &TinySpec { seed: 33, ..SPEC });
    let cal = calibration(teacher.config.vocab_size);
    let o = DistillOptions { checkpoint_every: 1, ..options(TeacherEngine::Auto, Some(8)) };
    let run = |student: &mut Model, work: &std::path::Path, cancel_after: Option<u64>| {
        let cancel = AtomicBool::new(false);
        let progress = |done: u64, _: u64| {
            if cancel_after.is_some_and(|k| done >= k) {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let cx = PassContext { seed: 4, calibration: Some(&cal), progress: &progress, status: &|_| {}, cancel: &cancel, original: Some(&teacher), work_dir: Some(work) };
        Distill::new(o.clone()).run(student, &cx).map(|out| out.notes)
    };
    let weights = |m: &Model| m.tensors.iter().map(|(n, t)| (n.clone(), t.to_f32(n).unwrap())).collect::<Vec<_>>();
    let mut straight = load_model(&student_path).unwrap();
    let notes = run(&mut straight, &dir.path().join("straight"), None).unwrap();
    assert!(notes.iter().any(|n| n.contains("on a thread of its own")), "{notes:?}");
    let work = dir.path().join("interrupted");
    assert!(run(&mut load_model(&student_path).unwrap(), &work, Some(3)).is_err());
    let mut resumed = load_model(&student_path).unwrap();
    let notes = run(&mut resumed, &work, None).unwrap();
    assert!(notes.iter().any(|n| n.contains("resumed from the checkpoint at step 3")), "{notes:?}");
    assert_eq!(weights(&resumed), weights(&straight));
}

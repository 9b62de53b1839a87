//! Distillation losses. The KL term compares temperature-softened distributions and is scaled by T² (Hinton
//! et al., 2015), so its gradient keeps the same size whatever the temperature; it is the true KL (teacher
//! entropy included), so a perfect student scores 0.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor, TensorData};

/// What the teacher says about each position of a batch (one value per micro-batch: boxing the larger
/// variant would only add an allocation).
#[allow(clippy::large_enum_variant)]
pub enum TeacherTargets {
    /// Log-probabilities over the whole vocabulary at temperature T, `[N, vocab]`.
    Full(Tensor<2>),
    /// The `k` most likely tokens `[N, k]` and their log-probabilities at temperature T, renormalized
    /// over those `k` tokens.
    TopK { ids: Tensor<2, Int>, log_probs: Tensor<2> },
}

/// Teacher log-probabilities at temperature `t` from raw logits `[N, vocab]`.
pub fn teacher_log_probs(logits: Tensor<2>, t: f64) -> Tensor<2> {
    log_softmax(logits.div_scalar(t), 1)
}

/// Keep the `k` most likely tokens of each row of teacher log-probabilities, renormalized over them.
pub fn top_k(log_probs: Tensor<2>, k: usize) -> (Tensor<2, Int>, Tensor<2>) {
    let k = k.min(log_probs.dims()[1]);
    let (values, ids) = log_probs.topk_with_indices(k, 1);
    (ids, log_softmax(values, 1))
}

/// `T² · mean over positions of KL(teacher ‖ student)` for student logits `[N, vocab]`; a scalar `[1]`.
pub fn kl_loss(student_logits: Tensor<2>, teacher: &TeacherTargets, t: f64) -> Tensor<1> {
    let rows = student_logits.dims()[0] as f64;
    let student = log_softmax(student_logits.div_scalar(t), 1);
    let per_token = match teacher {
        TeacherTargets::Full(lp) => softmax(lp.clone(), 1) * (lp.clone() - student),
        TeacherTargets::TopK { ids, log_probs } => {
            let picked = student.gather(1, ids.clone());
            log_probs.clone().exp() * (log_probs.clone() - picked)
        }
    };
    per_token.sum().mul_scalar(t * t / rows)
}

/// Mean next-token cross-entropy of student logits `[B·T, vocab]` against the text itself: position `t` of
/// each row of `tokens` `[B, T]` is scored on token `t + 1` (the last position has no target); a scalar `[1]`.
pub fn next_token_loss(student_logits: Tensor<2>, tokens: &[&[u32]]) -> Tensor<1> {
    let device = student_logits.device();
    let t = tokens.first().map_or(0, |r| r.len());
    let targets: Vec<i64> = tokens.iter().flat_map(|r| (0..t).map(move |i| r.get(i + 1).map_or(0, |&x| i64::from(x)))).collect();
    let weights: Vec<f32> = tokens.iter().flat_map(|_| (0..t).map(|i| if i + 1 < t { 1.0 } else { 0.0 })).collect();
    let scored = (tokens.len() * t.saturating_sub(1)).max(1) as f64;
    let n = targets.len();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let w = Tensor::<2>::from_data(TensorData::new(weights, [n, 1]), &device);
    let picked = log_softmax(student_logits, 1).gather(1, ids);
    (picked * w).sum().mul_scalar(-1.0 / scored)
}

/// Mean over blocks of the mean squared difference of hidden states `[N, n_embd]`; `None` without blocks.
pub fn hidden_mse(student: &[Tensor<2>], teacher: &[Tensor<2>]) -> Option<Tensor<1>> {
    let n = student.len().min(teacher.len());
    let terms = student.iter().zip(teacher).map(|(s, t)| (s.clone() - t.clone()).square().mean());
    terms.reduce(|a, b| a + b).map(|sum| sum.div_scalar(n as f64))
}

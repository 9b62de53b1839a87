//! The teacher run by `edgeforge-runtime` instead of burn: the GGUF's blocks stay packed and go through the
//! runtime's native kernels (about ten times burn's f32 forward pass on CPU), which is what makes
//! distillation affordable inside a wall-clock budget. Its log-probabilities at temperature T become the
//! same `TeacherTargets` the burn teacher gives (whole vocabulary, or the top `k` renormalized); the numbers
//! agree with burn's teacher to f32 rounding (`tests/runtime_teacher.rs`).

use edgeforge_core::Model;
use edgeforge_runtime::{weights_from_model_as, LlamaRuntime, WeightStorage};

use crate::error::{DistillError, Result};

fn rt_err(e: impl std::fmt::Display) -> DistillError {
    DistillError::Data(format!("runtime teacher: {e}"))
}

/// The teacher model in the native runtime (exact f32 activations on its dequantized blocks).
pub struct RuntimeTeacher {
    rt: LlamaRuntime,
}

impl RuntimeTeacher {
    /// The runtime for `model` with its quantized weights kept packed.
    pub fn new(model: &Model) -> Result<Self> {
        let rt = LlamaRuntime::new(weights_from_model_as(model, WeightStorage::Packed)?).map_err(rt_err)?;
        Ok(Self { rt })
    }

    pub fn vocab_size(&self) -> usize {
        self.rt.vocab_size()
    }

    /// Log-probabilities at temperature `t` of every position of `tokens`, `[len, vocab]` row-major.
    pub fn log_probs(&self, tokens: &[u32], t: f64) -> Result<Vec<f32>> {
        let mut cache = self.rt.new_cache(tokens.len());
        let logits = self.rt.forward(&mut cache, tokens, 0).map_err(rt_err)?;
        let vocab = self.rt.vocab_size();
        if logits.len() != tokens.len() * vocab {
            return Err(DistillError::Data(format!("runtime teacher gave {} logits for {} tokens × {vocab}", logits.len(), tokens.len())));
        }
        Ok(log_softmax_rows(&logits, vocab, t))
    }
}

/// Log-softmax of each `vocab`-wide row of `logits / t` (sums in f64, results in f32).
pub fn log_softmax_rows(logits: &[f32], vocab: usize, t: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(vocab.max(1)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let max = f64::from(max) / t;
        let lse = max + row.iter().map(|&x| (f64::from(x) / t - max).exp()).sum::<f64>().ln();
        out.extend(row.iter().map(|&x| (f64::from(x) / t - lse) as f32));
    }
    out
}

/// The `k` largest entries of each `vocab`-wide row of log-probabilities, most likely first (ties: lower id
/// first), renormalized over those `k`: `([rows·k] ids, [rows·k] log-probabilities)`, as `loss::top_k`.
pub fn top_k_rows(log_probs: &[f32], vocab: usize, k: usize) -> (Vec<i64>, Vec<f32>) {
    let k = k.min(vocab).max(1);
    let rows = log_probs.len() / vocab.max(1);
    let (mut ids, mut lps) = (Vec::with_capacity(rows * k), Vec::with_capacity(rows * k));
    let mut order: Vec<u32> = Vec::with_capacity(vocab);
    for row in log_probs.chunks_exact(vocab.max(1)) {
        order.clear();
        order.extend(0..vocab as u32);
        let desc = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
        if k < vocab {
            order.select_nth_unstable_by(k - 1, desc);
        }
        let top = &mut order[..k];
        top.sort_unstable_by(desc);
        let max = f64::from(row[top[0] as usize]);
        let lse = max + top.iter().map(|&i| (f64::from(row[i as usize]) - max).exp()).sum::<f64>().ln();
        for &i in top.iter() {
            ids.push(i64::from(i));
            lps.push((f64::from(row[i as usize]) - lse) as f32);
        }
    }
    (ids, lps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_rows_picks_the_largest_and_renormalizes() {
        let lp = log_softmax_rows(&[0.0, 3.0, 1.0, 2.0, -1.0, 5.0, 5.0, 0.0], 4, 1.0);
        let (ids, lps) = top_k_rows(&lp, 4, 2);
        assert_eq!(ids, vec![1, 3, 1, 2]);
        let p: f64 = lps[..2].iter().map(|&x| f64::from(x).exp()).sum();
        assert!((p - 1.0).abs() < 1e-6, "{p}");
        assert!((lps[0] - lps[1] - 1.0).abs() < 1e-6);
        assert!((lps[2] - lps[3]).abs() < 1e-6, "equal logits give equal log-probabilities");
    }

    #[test]
    fn log_softmax_rows_divides_by_the_temperature() {
        let lp = log_softmax_rows(&[0.0, 2.0], 2, 2.0);
        let want = [-(1.0 + 1f64.exp()).ln(), 1.0 - (1.0 + 1f64.exp()).ln()];
        assert!((f64::from(lp[0]) - want[0]).abs() < 1e-6 && (f64::from(lp[1]) - want[1]).abs() < 1e-6, "{lp:?}");
    }
}

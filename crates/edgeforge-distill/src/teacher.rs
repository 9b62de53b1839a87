//! The teacher run by `edgeforge-runtime` instead of burn: the GGUF's blocks stay packed and go through the
//! runtime's native kernels (about ten times burn's f32 forward pass on CPU), which is what makes
//! distillation affordable inside a wall-clock budget. Its log-probabilities at temperature T become the
//! same `TeacherTargets` the burn teacher gives (whole vocabulary, or the top `k` renormalized); the numbers
//! agree with burn's teacher to f32 rounding (`tests/runtime_teacher.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use edgeforge_core::Model;
use edgeforge_runtime::{weights_from_model_as, LlamaRuntime, WeightStorage};
use rayon::prelude::*;

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

    /// Raw logits of every position of `tokens`, `[len, vocab]` row-major.
    fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut cache = self.rt.new_cache(tokens.len());
        let logits = self.rt.forward(&mut cache, tokens, 0).map_err(rt_err)?;
        let vocab = self.rt.vocab_size();
        if logits.len() != tokens.len() * vocab {
            return Err(DistillError::Data(format!("runtime teacher gave {} logits for {} tokens × {vocab}", logits.len(), tokens.len())));
        }
        Ok(logits)
    }

    /// Log-probabilities at temperature `t` of every position of `tokens`, `[len, vocab]` row-major.
    pub fn log_probs(&self, tokens: &[u32], t: f64) -> Result<Vec<f32>> {
        Ok(log_softmax_rows(&self.logits(tokens)?, self.rt.vocab_size(), t))
    }

    /// The `k` most likely tokens of every position of `tokens` and their log-probabilities at temperature
    /// `t` renormalized over those `k` (as [`top_k_rows`] of [`Self::log_probs`], without the full
    /// log-softmax: the renormalized values only need the `k` logits), rows in parallel.
    pub fn top_k(&self, tokens: &[u32], t: f64, k: usize) -> Result<(Vec<i64>, Vec<f32>)> {
        let vocab = self.rt.vocab_size();
        let logits = self.logits(tokens)?;
        let rows: Vec<(Vec<i64>, Vec<f32>)> = logits.par_chunks(vocab.max(1)).map(|row| top_k_row(row, k, t)).collect();
        Ok(rows.into_iter().fold((Vec::new(), Vec::new()), |(mut ids, mut lps), (i, l)| {
            ids.extend(i);
            lps.extend(l);
            (ids, lps)
        }))
    }
}

/// The `k` largest entries of one row of scores (logits or log-probabilities), largest first (ties: lower id
/// first), with the log-softmax of those `k` scores divided by `t`.
fn top_k_row(row: &[f32], k: usize, t: f64) -> (Vec<i64>, Vec<f32>) {
    let vocab = row.len();
    let k = k.min(vocab).max(1);
    let mut order: Vec<u32> = (0..vocab as u32).collect();
    let desc = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < vocab {
        order.select_nth_unstable_by(k - 1, desc);
    }
    let top = &mut order[..k];
    top.sort_unstable_by(desc);
    let max = f64::from(row[top[0] as usize]) / t;
    let lse = max + top.iter().map(|&i| (f64::from(row[i as usize]) / t - max).exp()).sum::<f64>().ln();
    let ids = top.iter().map(|&i| i64::from(i)).collect();
    let lps = top.iter().map(|&i| (f64::from(row[i as usize]) / t - lse) as f32).collect();
    (ids, lps)
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
    let (mut ids, mut lps) = (Vec::new(), Vec::new());
    for row in log_probs.chunks_exact(vocab.max(1)) {
        let (i, l) = top_k_row(row, k, 1.0);
        ids.extend(i);
        lps.extend(l);
    }
    (ids, lps)
}

/// One sequence's top-k targets: its index, `[len·k]` ids and log-probabilities.
pub type TopKEntry = (usize, (Vec<i64>, Vec<f32>));

/// The runtime teacher computing top-k targets on a thread of its own, in the order training will first
/// visit the sequences, while the student trains: the two share the cores, and the teacher's work fills
/// what burn's training step leaves idle. The values are those `RuntimeTeacher::top_k` gives (the order of
/// computation changes nothing), so training is the same as without it.
pub struct Prefetch {
    rx: Receiver<Result<TopKEntry>>,
    stop: Arc<AtomicBool>,
    busy_ns: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Start computing `(index, tokens)` in order, at most `ahead` entries ahead of the consumer.
    pub fn start(teacher: Arc<RuntimeTeacher>, work: Vec<(usize, Vec<u32>)>, t: f64, k: usize, ahead: usize) -> Self {
        let (tx, rx) = sync_channel(ahead.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let busy_ns = Arc::new(AtomicU64::new(0));
        let (stop2, busy2) = (stop.clone(), busy_ns.clone());
        let handle = std::thread::spawn(move || {
            for (i, tokens) in work {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                let entry = teacher.top_k(&tokens, t, k).map(|e| (i, e));
                busy2.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let failed = entry.is_err();
                if tx.send(entry).is_err() || failed {
                    break;
                }
            }
        });
        Self { rx, stop, busy_ns, handle: Some(handle) }
    }

    /// The next computed entry, waiting for it; `None` once the thread has finished its list.
    pub fn next(&self) -> Option<Result<TopKEntry>> {
        self.rx.recv().ok()
    }

    /// Seconds the thread has spent computing targets so far.
    pub fn busy_s(&self) -> f64 {
        self.busy_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a pending send, then wait for the thread (at most one sequence's forward pass).
        while self.rx.try_recv().is_ok() {}
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
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
    fn top_k_of_logits_equals_top_k_of_log_probabilities() {
        let logits: Vec<f32> = (0..3 * 50).map(|i| ((i * 7919) % 101) as f32 * 0.13 - 6.0).collect();
        for t in [1.0, 2.5] {
            let (want_ids, want_lps) = top_k_rows(&log_softmax_rows(&logits, 50, t), 50, 5);
            let (mut ids, mut lps) = (Vec::new(), Vec::new());
            for row in logits.chunks_exact(50) {
                let (i, l) = top_k_row(row, 5, t);
                ids.extend(i);
                lps.extend(l);
            }
            assert_eq!(ids, want_ids);
            let diff = lps.iter().zip(&want_lps).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "T {t}: {diff}");
        }
    }

    #[test]
    fn log_softmax_rows_divides_by_the_temperature() {
        let lp = log_softmax_rows(&[0.0, 2.0], 2, 2.0);
        let want = [-(1.0 + 1f64.exp()).ln(), 1.0 - (1.0 + 1f64.exp()).ln()];
        assert!((f64::from(lp[0]) - want[0]).abs() < 1e-6 && (f64::from(lp[1]) - want[1]).abs() < 1e-6, "{lp:?}");
    }
}

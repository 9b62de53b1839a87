//! How far a compressed model's predictions moved from the original's: KL(base ‖ model) of the next-token
//! distributions and top-1 agreement, at the positions perplexity scores (second half of each chunk of
//! `ctx` tokens), so the figures line up with `eval perplexity` and llama-perplexity's --kl-divergence.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use edgeforge_runtime::LlamaRuntime;

use crate::error::{EvalError, Result};
use crate::perplexity::{ChunkProgress, PerplexityOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KldResult {
    pub mean_kld: f64,
    pub kld_stderr: f64,
    /// Share of positions where both models put the same token first (0–1).
    pub top1_agreement_frac: f64,
    pub base_perplexity: f64,
    pub model_perplexity: f64,
    pub positions: usize,
    pub chunks: usize,
    pub ctx: usize,
}

/// log-softmax in f64.
pub(crate) fn log_probs(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = logits.iter().map(|&l| f64::from(l - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&l| f64::from(l - max) - lse).collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0
}

/// Per position: (KL(base ‖ model), top-1 agrees, −log p_base(next), −log p_model(next)).
fn compare_position(base: &[f32], model: &[f32], next: usize) -> (f64, bool, f64, f64) {
    let (lb, lm) = (log_probs(base), log_probs(model));
    let kl: f64 = lb.iter().zip(&lm).map(|(&b, &m)| b.exp() * (b - m)).sum();
    (kl.max(0.0), argmax(&lb) == argmax(&lm), -lb[next], -lm[next])
}

/// Against stored base log-probabilities: (KL(base ‖ model), top-1 agrees, −log p_model(next)).
pub(crate) fn compare_to_base(base_log_probs: &[f32], model: &[f32], next: usize) -> (f64, bool, f64) {
    let lm = log_probs(model);
    let kl: f64 = base_log_probs.iter().zip(&lm).map(|(&b, &m)| f64::from(b).exp() * (f64::from(b) - m)).sum();
    let base_top = base_log_probs.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0;
    (kl.max(0.0), base_top == argmax(&lm), -lm[next])
}

pub fn kl_divergence(
    base: &LlamaRuntime,
    model: &LlamaRuntime,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    mut on_chunk: impl FnMut(ChunkProgress) -> ControlFlow<()>,
) -> Result<KldResult> {
    if base.vocab_size() != model.vocab_size() {
        return Err(EvalError::Options(format!(
            "the models have different vocabularies ({} vs {} tokens)",
            base.vocab_size(),
            model.vocab_size()
        )));
    }
    let n_chunks = opts.chunk_count(tokens.len())?;
    let ctx = opts.ctx;
    let first = ctx / 2;
    let vocab = base.vocab_size();
    let (mut kl_sum, mut kl_sq, mut agree, mut nll_b, mut nll_m, mut n) = (0f64, 0f64, 0usize, 0f64, 0f64, 0usize);
    let (mut cache_b, mut cache_m) = (base.new_cache(ctx), model.new_cache(ctx));
    for i in 0..n_chunks {
        let chunk = opts.chunk(tokens, i, bos);
        cache_b.clear();
        cache_m.clear();
        let lb = base.forward(&mut cache_b, &chunk, first)?;
        let lm = model.forward(&mut cache_m, &chunk, first)?;
        let per: Vec<(f64, bool, f64, f64)> = {
            use rayon::prelude::*;
            (first..ctx - 1)
                .into_par_iter()
                .map(|pos| {
                    let r = (pos - first) * vocab..(pos - first + 1) * vocab;
                    compare_position(&lb[r.clone()], &lm[r], chunk[pos + 1] as usize)
                })
                .collect()
        };
        for (kl, same, b, m) in per {
            kl_sum += kl;
            kl_sq += kl * kl;
            agree += usize::from(same);
            nll_b += b;
            nll_m += m;
            n += 1;
        }
        let flow = on_chunk(ChunkProgress { chunks_done: i + 1, chunks_total: n_chunks, tokens_scored: n, perplexity: (nll_m / n as f64).exp() });
        if flow.is_break() {
            return Err(EvalError::Cancelled);
        }
    }
    let nf = n as f64;
    let mean = kl_sum / nf;
    let var = (kl_sq / nf - mean * mean).max(0.0);
    Ok(KldResult {
        mean_kld: mean,
        kld_stderr: if n > 1 { (var / (nf - 1.0)).sqrt() } else { f64::NAN },
        top1_agreement_frac: agree as f64 / nf,
        base_perplexity: (nll_b / nf).exp(),
        model_perplexity: (nll_m / nf).exp(),
        positions: n,
        chunks: n_chunks,
        ctx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_have_zero_divergence_and_agree() {
        let l = [1.0f32, 3.0, -2.0, 0.5];
        let (kl, same, b, m) = compare_position(&l, &l, 1);
        assert!(kl.abs() < 1e-12 && same && (b - m).abs() < 1e-12);
    }

    #[test]
    fn divergence_matches_the_definition() {
        let (a, b) = ([0.0f32, 1.0], [1.0f32, 0.0]);
        let p = [1.0 / (1.0 + 1f64.exp()), 1f64.exp() / (1.0 + 1f64.exp())];
        let q = [p[1], p[0]];
        let want = p[0] * (p[0] / q[0]).ln() + p[1] * (p[1] / q[1]).ln();
        let (kl, same, _, _) = compare_position(&a, &b, 0);
        assert!((kl - want).abs() < 1e-12, "{kl} vs {want}");
        assert!(!same);
    }
}

//! Perplexity with llama.cpp's protocol (tools/perplexity), so our figure can be compared with
//! `llama-perplexity` number for number:
//! - tokenize the whole text once (BOS first only if the model's add_bos says so);
//! - cut it into non-overlapping chunks of `ctx` tokens, dropping the incomplete tail;
//! - if add_bos, the first token of every chunk is replaced by BOS;
//! - score only the second half: the logits at positions ctx/2 .. ctx-2 predict tokens ctx/2+1 .. ctx-1,
//!   so each chunk contributes ctx - 1 - ctx/2 tokens;
//! - perplexity = exp(mean NLL); its standard error is ppl · sqrt(var(NLL) / (n - 1)) (delta method).

use std::ops::ControlFlow;

use serde::Serialize;

use edgeforge_runtime::LlamaRuntime;

use crate::error::{EvalError, Result};

#[derive(Debug, Clone)]
pub struct PerplexityOptions {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Tokens per forward call inside a chunk (the KV cache carries the rest).
    pub batch: usize,
    /// Score at most this many chunks.
    pub max_chunks: Option<usize>,
}

impl PerplexityOptions {
    /// How many whole chunks of `ctx` the protocol scores in a text of `n_tokens` (checked options).
    pub fn chunk_count(&self, n_tokens: usize) -> Result<usize> {
        self.validate()?;
        let available = n_tokens / self.ctx;
        if available == 0 {
            return Err(EvalError::TextTooShort { tokens: n_tokens, ctx: self.ctx });
        }
        Ok(self.max_chunks.map_or(available, |m| m.min(available)))
    }

    /// Chunk `i` of the text, with BOS in front when the model adds one (llama.cpp replaces the first token).
    pub fn chunk(&self, tokens: &[u32], i: usize, bos: Option<u32>) -> Vec<u32> {
        let mut chunk = tokens[i * self.ctx..(i + 1) * self.ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        chunk
    }

    pub fn validate(&self) -> Result<()> {
        if self.ctx < 4 {
            return Err(EvalError::Options(format!("--ctx {} is too small (at least 4)", self.ctx)));
        }
        if self.batch == 0 {
            return Err(EvalError::Options("--batch must be positive".into()));
        }
        if self.max_chunks == Some(0) {
            return Err(EvalError::Options("--chunks must be positive".into()));
        }
        Ok(())
    }
}

/// Running figures after each chunk (for progress bars).
#[derive(Debug, Clone, Copy)]
pub struct ChunkProgress {
    pub chunks_done: usize,
    pub chunks_total: usize,
    pub tokens_scored: usize,
    pub perplexity: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerplexityResult {
    pub perplexity: f64,
    pub ppl_stderr: f64,
    pub mean_nll: f64,
    pub tokens_scored: usize,
    pub chunks: usize,
    pub ctx: usize,
    pub batch: usize,
    /// Tokens in the whole text (before cutting into chunks).
    pub text_tokens: usize,
    /// Running perplexity after each chunk, as llama-perplexity prints it.
    pub running_perplexity: Vec<f64>,
}

/// Adds the NLL of every scored position of `chunk` to `stats`: `logits` are the rows of positions
/// `first..chunk.len()`, and position `p` predicts token `p + 1` (the last row predicts past the chunk).
pub(crate) fn score_chunk(logits: &[f32], chunk: &[u32], first: usize, vocab: usize, stats: &mut NllStats) {
    use rayon::prelude::*;
    let nlls: Vec<f64> = (first..chunk.len() - 1)
        .into_par_iter()
        .map(|pos| {
            let row = &logits[(pos - first) * vocab..(pos - first + 1) * vocab];
            token_nll(row, chunk[pos + 1] as usize)
        })
        .collect();
    for nll in nlls {
        stats.add(nll);
    }
}

/// Accumulates negative log-likelihoods in f64, as llama.cpp does.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NllStats {
    sum: f64,
    sum_sq: f64,
    pub(crate) count: usize,
}

impl NllStats {
    pub(crate) fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    pub(crate) fn perplexity(&self) -> f64 {
        (self.sum / self.count.max(1) as f64).exp()
    }

    pub(crate) fn stderr(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum_sq / n - mean * mean;
        if var <= 0.0 {
            return 0.0;
        }
        (var / (n - 1.0)).sqrt() * self.perplexity()
    }
}

/// Negative log-probability of `target` under softmax(`logits`), with a max shift and an f64 sum.
pub fn token_nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    sum_exp.ln() - f64::from(logits[target] - max)
}

/// Score `tokens` (the whole text, tokenized once with add_special) chunk by chunk. `on_chunk` sees the
/// running figures after each chunk and may stop the evaluation (`ControlFlow::Break`, e.g. on Ctrl-C).
pub fn perplexity(
    runtime: &LlamaRuntime,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    mut on_chunk: impl FnMut(ChunkProgress) -> ControlFlow<()>,
) -> Result<PerplexityResult> {
    let n_chunks = opts.chunk_count(tokens.len())?;
    let ctx = opts.ctx;
    let first = ctx / 2;
    let batch = opts.batch.min(ctx);
    let vocab = runtime.vocab_size();

    let mut stats = NllStats::default();
    let mut running = Vec::with_capacity(n_chunks);
    let mut cache = runtime.new_cache(ctx);
    for i in 0..n_chunks {
        let chunk = opts.chunk(tokens, i, bos);
        cache.clear();
        // Logits for positions first..ctx (the last one predicts past the chunk and is not scored).
        let mut logits = Vec::with_capacity((ctx - first) * vocab);
        let mut start = 0;
        while start < ctx {
            let end = (start + batch).min(ctx);
            let from = first.saturating_sub(start).min(end - start);
            let out = runtime.forward(&mut cache, &chunk[start..end], from)?;
            logits.extend_from_slice(&out);
            start = end;
        }
        score_chunk(&logits, &chunk, first, vocab, &mut stats);
        running.push(stats.perplexity());
        let flow = on_chunk(ChunkProgress {
            chunks_done: i + 1,
            chunks_total: n_chunks,
            tokens_scored: stats.count,
            perplexity: stats.perplexity(),
        });
        if flow.is_break() {
            return Err(EvalError::Cancelled);
        }
    }
    Ok(PerplexityResult::of(&stats, n_chunks, ctx, batch, tokens.len(), running))
}

impl PerplexityResult {
    pub(crate) fn of(stats: &NllStats, chunks: usize, ctx: usize, batch: usize, text_tokens: usize, running: Vec<f64>) -> Self {
        PerplexityResult {
            perplexity: stats.perplexity(),
            ppl_stderr: stats.stderr(),
            mean_nll: stats.sum / stats.count as f64,
            tokens_scored: stats.count,
            chunks,
            ctx,
            batch,
            text_tokens,
            running_perplexity: running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_matches_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let expected = -(3.0f64.exp() / z).ln();
        assert!((token_nll(&logits, 2) - expected).abs() < 1e-12);
    }

    #[test]
    fn stderr_follows_llama_cpp_formula() {
        let mut s = NllStats::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            s.add(x);
        }
        let mean: f64 = 2.5;
        let var = (1.0 + 4.0 + 9.0 + 16.0) / 4.0 - mean * mean;
        assert!((s.perplexity() - mean.exp()).abs() < 1e-12);
        assert!((s.stderr() - (var / 3.0).sqrt() * mean.exp()).abs() < 1e-12);
    }
}

//! Latency: prefill of a prompt, then greedy decoding one token at a time with the KV cache, repeated;
//! per-token times summarized with statrs (median and 95th percentile). Tokens come from a seeded generator
//! over the vocabulary, so runs are comparable without a text file.
//!
//! The first generated token comes out of the prefill (its time is the TTFT); each further token is one
//! timed decode step. With `gen_tokens` = 1 there is no decode step, so the decode rate and percentiles are
//! `None` with a note saying why, never a division by zero.
//!
//! Peak RSS is the measurement's own: on Linux the high-water mark (`VmHWM`) is reset by writing 5 to
//! `/proc/self/clear_refs` before the KV cache is allocated, and read from `/proc/self/status` after the last
//! repeat, so it covers the resident model, the cache and the forward passes, not what the process did before
//! (loading, converting). Where the reset is not possible `peak_rss_scope` says the figure is the process's
//! lifetime peak.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, OrderStatistics};

use edgeforge_runtime::LlamaRuntime;

use crate::error::{EvalError, Result};

#[derive(Debug, Clone)]
pub struct LatencyOptions {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub repeats: usize,
    pub seed: u64,
}

/// What `peak_rss_bytes` covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeakRssScope {
    /// The measurement alone (VmHWM reset just before it).
    Measurement,
    /// The whole process so far (the reset was not possible; also what reports before this field meant).
    #[default]
    Process,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyResult {
    pub prefill_tok_s: f64,
    /// Decode steps per second of decode time; `None` when no decode step was timed (`gen_tokens` = 1).
    pub decode_tok_s: Option<f64>,
    pub ttft_ms: f64,
    pub decode_p50_ms: Option<f64>,
    pub decode_p95_ms: Option<f64>,
    pub peak_rss_bytes: u64,
    #[serde(default)]
    pub peak_rss_scope: PeakRssScope,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub repeats: usize,
    /// Why a figure is missing or how it was measured, when that is not the usual.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

pub use edgeforge_core::process::peak_rss_bytes;

fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0 as u32
}

/// `n` token ids from a seeded xorshift over the vocabulary.
fn seeded_prompt(n: usize, vocab: u64, seed: u64) -> Vec<u32> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab) as u32
        })
        .collect()
}

/// The timings of every repeat: prefill seconds per repeat, and the seconds of each decode step.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub prefill_s: Vec<f64>,
    pub decode_step_s: Vec<f64>,
}

pub fn latency(runtime: &LlamaRuntime, opts: &LatencyOptions) -> Result<LatencyResult> {
    if opts.prompt_tokens == 0 || opts.gen_tokens == 0 || opts.repeats == 0 {
        return Err(EvalError::Options("prompt_tokens, gen_tokens and repeats must be positive".into()));
    }
    let prompt = seeded_prompt(opts.prompt_tokens, runtime.vocab_size() as u64, opts.seed);
    let scope = if edgeforge_core::process::reset_peak_rss() { PeakRssScope::Measurement } else { PeakRssScope::Process };
    let mut cache = runtime.new_cache(opts.prompt_tokens + opts.gen_tokens);
    // One untimed warm-up so page faults and thread start-up are not measured.
    let warm = opts.prompt_tokens.min(8);
    runtime.forward(&mut cache, &prompt[..warm], warm - 1)?;

    let mut t = Timings::default();
    for _ in 0..opts.repeats {
        cache.clear();
        let t0 = Instant::now();
        let logits = runtime.forward(&mut cache, &prompt, opts.prompt_tokens - 1)?;
        let mut next = argmax(&logits);
        t.prefill_s.push(t0.elapsed().as_secs_f64());
        for _ in 1..opts.gen_tokens {
            let t1 = Instant::now();
            let logits = runtime.forward(&mut cache, &[next], 0)?;
            next = argmax(&logits);
            t.decode_step_s.push(t1.elapsed().as_secs_f64());
        }
    }
    Ok(summarize(&t, opts, peak_rss_bytes(), scope, rayon::current_num_threads()))
}

/// The figures of one measurement. Every number in the result is finite: what was not timed is `None`.
pub fn summarize(t: &Timings, opts: &LatencyOptions, peak_rss_bytes: u64, scope: PeakRssScope, threads: usize) -> LatencyResult {
    let median_prefill_s = Data::new(t.prefill_s.clone()).median();
    let decode_s: f64 = t.decode_step_s.iter().sum();
    let mut notes = Vec::new();
    let (decode_tok_s, p50, p95) = if t.decode_step_s.is_empty() {
        notes.push("decode not measured: with gen_tokens = 1 the only generated token comes from the prefill (see ttft_ms)".to_owned());
        (None, None, None)
    } else if decode_s <= 0.0 {
        notes.push("decode not measured: the clock did not advance during decoding".to_owned());
        (None, None, None)
    } else {
        let mut ms = Data::new(t.decode_step_s.iter().map(|s| s * 1000.0).collect::<Vec<f64>>());
        (Some(t.decode_step_s.len() as f64 / decode_s), Some(ms.median()), Some(ms.percentile(95)))
    };
    if scope == PeakRssScope::Process {
        notes.push("peak RSS is the process's lifetime peak (could not reset VmHWM)".to_owned());
    }
    let prefill_tok_s = if median_prefill_s > 0.0 { opts.prompt_tokens as f64 / median_prefill_s } else { 0.0 };
    LatencyResult {
        prefill_tok_s,
        decode_tok_s,
        ttft_ms: median_prefill_s * 1000.0,
        decode_p50_ms: p50,
        decode_p95_ms: p95,
        peak_rss_bytes,
        peak_rss_scope: scope,
        threads,
        prompt_tokens: opts.prompt_tokens,
        gen_tokens: opts.gen_tokens,
        repeats: opts.repeats,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(gen_tokens: usize) -> LatencyOptions {
        LatencyOptions { prompt_tokens: 10, gen_tokens, repeats: 2, seed: 0 }
    }

    #[test]
    fn one_generated_token_leaves_decode_unmeasured_and_every_number_finite() {
        let t = Timings { prefill_s: vec![0.02, 0.03], decode_step_s: vec![] };
        let r = summarize(&t, &opts(1), 1 << 20, PeakRssScope::Measurement, 2);
        assert_eq!((r.decode_tok_s, r.decode_p50_ms, r.decode_p95_ms), (None, None, None));
        assert!(r.notes.iter().any(|n| n.contains("gen_tokens = 1")), "{:?}", r.notes);
        assert!(r.prefill_tok_s.is_finite() && r.ttft_ms.is_finite());
    }

    #[test]
    fn rates_follow_the_timings() {
        // Two repeats of 3 decode steps: 6 steps in 0.06 s is 100 tok/s; the prefill median is 25 ms.
        let t = Timings { prefill_s: vec![0.02, 0.03], decode_step_s: vec![0.005, 0.01, 0.015, 0.01, 0.01, 0.01] };
        let r = summarize(&t, &opts(4), 0, PeakRssScope::Measurement, 1);
        assert!((r.decode_tok_s.unwrap_or_default() - 100.0).abs() < 1e-9, "{r:?}");
        assert!((r.ttft_ms - 25.0).abs() < 1e-9 && (r.prefill_tok_s - 400.0).abs() < 1e-9, "{r:?}");
        assert!((r.decode_p50_ms.unwrap_or_default() - 10.0).abs() < 1e-9, "{r:?}");
        let (p50, p95) = (r.decode_p50_ms.unwrap_or_default(), r.decode_p95_ms.unwrap_or_default());
        assert!(p95 >= p50 && p95 <= 15.0, "{p50} {p95}");
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn a_lifetime_peak_is_labelled() {
        let t = Timings { prefill_s: vec![0.02], decode_step_s: vec![0.01] };
        let r = summarize(&t, &opts(2), 5, PeakRssScope::Process, 1);
        assert!(r.notes.iter().any(|n| n.contains("lifetime")), "{:?}", r.notes);
    }
}

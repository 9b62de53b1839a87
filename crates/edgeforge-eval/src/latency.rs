//! Latency, measured as llama-bench measures it, so figures compare one to one:
//! - `pp N` (prefill): an empty context, then one forward pass over `N` prompt tokens; `N / seconds` per
//!   repetition;
//! - `tg N` (generation): an empty context, then `N` single-token decode steps (greedy); `N / seconds` per
//!   repetition;
//! - each test runs once untimed first (warm-up: page faults, thread start-up), then `repeats` times; a rate
//!   is reported as the mean ± sample standard deviation of the repetitions' rates (llama-bench's `avg_ts ±
//!   stddev_ts`), with the threads of the pool it ran on.
//!
//! Besides the rates: the TTFT (mean pp time: prompt in, first token's logits out) and the median and 95th
//! percentile of the tg steps. Tokens come from a seeded generator over the vocabulary, so runs are
//! comparable without a text file. `gen_tokens` = 0 skips the tg test (its figures are `None`, with a note),
//! and a single repetition has a standard deviation of 0 (with a note): every number in a result is finite.
//!
//! Peak RSS is the measurement's own: on Linux the high-water mark (`VmHWM`) is reset by writing 5 to
//! `/proc/self/clear_refs` before the KV cache is allocated, and read from `/proc/self/status` after the last
//! repeat, so it covers the resident model, the cache and the forward passes, not what the process did before
//! (loading, converting). Where the reset is not possible `peak_rss_scope` says the figure is the process's
//! lifetime peak. The high-water mark is reset once more before the tg test: `tg_peak_rss_bytes` is what
//! decoding alone holds (the model, the KV cache and one token's buffers).

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
    /// pp N: mean of the repetitions' prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Sample standard deviation of the repetitions' prefill rates (0 with one repetition).
    #[serde(default)]
    pub prefill_tok_s_sd: f64,
    /// tg N: mean of the repetitions' generated tokens per second; `None` when not measured (`gen_tokens` = 0).
    pub decode_tok_s: Option<f64>,
    #[serde(default)]
    pub decode_tok_s_sd: Option<f64>,
    /// Mean time of the prefill test: the prompt in, the first token's logits out.
    pub ttft_ms: f64,
    pub decode_p50_ms: Option<f64>,
    pub decode_p95_ms: Option<f64>,
    pub peak_rss_bytes: u64,
    #[serde(default)]
    pub peak_rss_scope: PeakRssScope,
    /// Peak RSS of the tg test alone (VmHWM reset again after pp): what decoding holds. `None` when tg was not
    /// run or the reset is not possible.
    #[serde(default)]
    pub tg_peak_rss_bytes: Option<u64>,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub repeats: usize,
    /// Why a figure is missing or how it was measured, when that is not the usual.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl LatencyResult {
    /// llama-bench's test names: `pp512`, `tg128`.
    pub fn test_names(&self) -> (String, String) {
        (format!("pp{}", self.prompt_tokens), format!("tg{}", self.gen_tokens))
    }
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

/// The timings of every repetition: prefill seconds per repetition, the seconds of each tg repetition, and
/// the seconds of every decode step.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub prefill_s: Vec<f64>,
    pub decode_s: Vec<f64>,
    pub decode_step_s: Vec<f64>,
}

pub fn latency(runtime: &LlamaRuntime, opts: &LatencyOptions) -> Result<LatencyResult> {
    if opts.prompt_tokens == 0 || opts.repeats == 0 {
        return Err(EvalError::Options(format!(
            "latency: prompt_tokens ({}) and repeats ({}) must be positive (gen_tokens may be 0 to skip the tg test)",
            opts.prompt_tokens, opts.repeats
        )));
    }
    let prompt = seeded_prompt(opts.prompt_tokens, runtime.vocab_size() as u64, opts.seed);
    let scope = if edgeforge_core::process::reset_peak_rss() { PeakRssScope::Measurement } else { PeakRssScope::Process };
    let mut cache = runtime.new_cache(opts.prompt_tokens.max(opts.gen_tokens));
    let mut t = Timings::default();
    // pp: one untimed run, then the timed repetitions, each from an empty context.
    for rep in 0..=opts.repeats {
        cache.clear();
        let t0 = Instant::now();
        runtime.forward(&mut cache, &prompt, opts.prompt_tokens - 1)?;
        if rep > 0 {
            t.prefill_s.push(t0.elapsed().as_secs_f64());
        }
    }
    let pp_peak = peak_rss_bytes();
    // tg: one untimed step, then the timed repetitions of `gen_tokens` steps from an empty context.
    let mut tg_peak = None;
    if opts.gen_tokens > 0 {
        let tg_scoped = scope == PeakRssScope::Measurement && edgeforge_core::process::reset_peak_rss();
        cache.clear();
        // One logits vector for every step, as a generation loop keeps it (`forward_into`).
        let mut logits = Vec::new();
        runtime.forward_into(&mut cache, &prompt[..1], 0, &mut logits)?;
        for _ in 0..opts.repeats {
            cache.clear();
            let mut next = prompt[0];
            let t0 = Instant::now();
            for _ in 0..opts.gen_tokens {
                let t1 = Instant::now();
                runtime.forward_into(&mut cache, &[next], 0, &mut logits)?;
                next = argmax(&logits);
                t.decode_step_s.push(t1.elapsed().as_secs_f64());
            }
            t.decode_s.push(t0.elapsed().as_secs_f64());
        }
        tg_peak = tg_scoped.then(peak_rss_bytes);
    }
    let mut r = summarize(&t, opts, pp_peak.max(peak_rss_bytes()), scope, rayon::current_num_threads());
    r.tg_peak_rss_bytes = tg_peak;
    Ok(r)
}

/// Mean and sample standard deviation (0 for fewer than two values).
fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    (mean, var.sqrt())
}

/// Per-repetition rates `tokens / seconds`, leaving out repetitions the clock did not time.
fn rates(tokens: usize, seconds: &[f64]) -> Vec<f64> {
    seconds.iter().filter(|&&s| s > 0.0).map(|s| tokens as f64 / s).collect()
}

/// The figures of one measurement. Every number in the result is finite: what was not timed is `None`.
pub fn summarize(t: &Timings, opts: &LatencyOptions, peak_rss_bytes: u64, scope: PeakRssScope, threads: usize) -> LatencyResult {
    let mut notes = Vec::new();
    let pp = rates(opts.prompt_tokens, &t.prefill_s);
    let (prefill_tok_s, prefill_tok_s_sd) = mean_sd(&pp);
    if pp.is_empty() {
        notes.push("prefill not measured: the clock did not advance".to_owned());
    }
    let tg = rates(opts.gen_tokens, &t.decode_s);
    let (decode_tok_s, decode_tok_s_sd, p50, p95) = if opts.gen_tokens == 0 || t.decode_s.is_empty() {
        notes.push("tg not measured: gen_tokens = 0".to_owned());
        (None, None, None, None)
    } else if tg.is_empty() {
        notes.push("tg not measured: the clock did not advance during decoding".to_owned());
        (None, None, None, None)
    } else {
        let (m, sd) = mean_sd(&tg);
        let mut ms = Data::new(t.decode_step_s.iter().map(|s| s * 1000.0).collect::<Vec<f64>>());
        (Some(m), Some(sd), Some(ms.median()), Some(ms.percentile(95)))
    };
    if opts.repeats < 2 {
        notes.push("one repetition: the standard deviations are 0".to_owned());
    }
    if scope == PeakRssScope::Process {
        notes.push("peak RSS is the process's lifetime peak (could not reset VmHWM)".to_owned());
    }
    LatencyResult {
        prefill_tok_s,
        prefill_tok_s_sd,
        decode_tok_s,
        decode_tok_s_sd,
        ttft_ms: mean_sd(&t.prefill_s).0 * 1000.0,
        decode_p50_ms: p50,
        decode_p95_ms: p95,
        peak_rss_bytes,
        peak_rss_scope: scope,
        tg_peak_rss_bytes: None,
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

    fn opts(gen_tokens: usize, repeats: usize) -> LatencyOptions {
        LatencyOptions { prompt_tokens: 10, gen_tokens, repeats, seed: 0 }
    }

    #[test]
    fn no_generation_test_leaves_tg_unmeasured_and_every_number_finite() {
        let t = Timings { prefill_s: vec![0.02, 0.03], ..Timings::default() };
        let r = summarize(&t, &opts(0, 2), 1 << 20, PeakRssScope::Measurement, 2);
        assert_eq!((r.decode_tok_s, r.decode_tok_s_sd, r.decode_p50_ms, r.decode_p95_ms), (None, None, None, None));
        assert!(r.notes.iter().any(|n| n.contains("gen_tokens = 0")), "{:?}", r.notes);
        assert!(r.prefill_tok_s.is_finite() && r.prefill_tok_s_sd.is_finite() && r.ttft_ms.is_finite());
    }

    #[test]
    fn one_generated_token_is_one_timed_step() {
        let t = Timings { prefill_s: vec![0.02], decode_s: vec![0.004], decode_step_s: vec![0.004] };
        let r = summarize(&t, &opts(1, 1), 0, PeakRssScope::Measurement, 1);
        assert!((r.decode_tok_s.unwrap_or_default() - 250.0).abs() < 1e-9, "{r:?}");
        assert_eq!((r.prefill_tok_s_sd, r.decode_tok_s_sd), (0.0, Some(0.0)));
        assert!(r.notes.iter().any(|n| n.contains("one repetition")), "{:?}", r.notes);
    }

    #[test]
    fn rates_are_the_mean_and_sample_sd_of_the_repetitions() {
        // pp10 in 20 ms and 25 ms: 500 and 400 tok/s; tg3 in 30 ms and 20 ms: 100 and 150 tok/s.
        let t = Timings { prefill_s: vec![0.02, 0.025], decode_s: vec![0.03, 0.02], decode_step_s: vec![0.005, 0.01, 0.015, 0.01, 0.005, 0.005] };
        let r = summarize(&t, &opts(3, 2), 0, PeakRssScope::Measurement, 1);
        assert!((r.prefill_tok_s - 450.0).abs() < 1e-9 && (r.prefill_tok_s_sd - 50.0 * 2f64.sqrt()).abs() < 1e-9, "{r:?}");
        assert!((r.decode_tok_s.unwrap_or_default() - 125.0).abs() < 1e-9, "{r:?}");
        assert!((r.decode_tok_s_sd.unwrap_or_default() - 25.0 * 2f64.sqrt()).abs() < 1e-9, "{r:?}");
        assert!((r.ttft_ms - 22.5).abs() < 1e-9, "{r:?}");
        let (p50, p95) = (r.decode_p50_ms.unwrap_or_default(), r.decode_p95_ms.unwrap_or_default());
        assert!((p50 - 7.5).abs() < 1e-9 && p95 >= p50 && p95 <= 15.0, "{p50} {p95}");
        assert_eq!(r.test_names(), ("pp10".to_owned(), "tg3".to_owned()));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn a_stopped_clock_is_a_note_not_an_infinite_rate() {
        let t = Timings { prefill_s: vec![0.0], decode_s: vec![0.0], decode_step_s: vec![0.0] };
        let r = summarize(&t, &opts(2, 1), 5, PeakRssScope::Process, 1);
        assert!(r.prefill_tok_s.is_finite() && r.decode_tok_s.is_none(), "{r:?}");
        assert!(r.notes.iter().any(|n| n.contains("lifetime")), "{:?}", r.notes);
        assert!(r.notes.iter().any(|n| n.contains("clock")), "{:?}", r.notes);
    }
}

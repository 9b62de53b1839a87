//! Latency: prefill of a prompt, then greedy decoding one token at a time with the KV cache, repeated;
//! per-token times summarized with statrs (median and 95th percentile). Tokens come from a seeded generator
//! over the vocabulary, so runs are comparable without a text file.

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyResult {
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub ttft_ms: f64,
    pub decode_p50_ms: f64,
    pub decode_p95_ms: f64,
    pub peak_rss_bytes: u64,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub repeats: usize,
}

pub use edgeforge_core::process::peak_rss_bytes;

fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0 as u32
}

pub fn latency(runtime: &LlamaRuntime, opts: &LatencyOptions) -> Result<LatencyResult> {
    if opts.prompt_tokens == 0 || opts.gen_tokens == 0 || opts.repeats == 0 {
        return Err(EvalError::Options("prompt_tokens, gen_tokens and repeats must be positive".into()));
    }
    let vocab = runtime.vocab_size() as u64;
    let mut state = opts.seed ^ 0x9E37_79B9_7F4A_7C15;
    let prompt: Vec<u32> = (0..opts.prompt_tokens)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab) as u32
        })
        .collect();
    let mut cache = runtime.new_cache(opts.prompt_tokens + opts.gen_tokens);
    // One untimed warm-up so page faults and thread start-up are not measured.
    runtime.forward(&mut cache, &prompt[..opts.prompt_tokens.min(8)], opts.prompt_tokens.min(8) - 1)?;

    let mut ttft = Vec::with_capacity(opts.repeats);
    let mut prefill_s = Vec::with_capacity(opts.repeats);
    let mut per_token_ms = Vec::with_capacity(opts.repeats * opts.gen_tokens);
    let mut decode_s = 0f64;
    for _ in 0..opts.repeats {
        cache.clear();
        let t0 = Instant::now();
        let logits = runtime.forward(&mut cache, &prompt, opts.prompt_tokens - 1)?;
        let mut next = argmax(&logits);
        let t_prefill = t0.elapsed().as_secs_f64();
        prefill_s.push(t_prefill);
        ttft.push(t_prefill * 1000.0);
        for _ in 1..opts.gen_tokens {
            let t = Instant::now();
            let logits = runtime.forward(&mut cache, &[next], 0)?;
            next = argmax(&logits);
            let dt = t.elapsed().as_secs_f64();
            decode_s += dt;
            per_token_ms.push(dt * 1000.0);
        }
    }
    let median = |v: Vec<f64>| Data::new(v).median();
    let mut tokens = Data::new(per_token_ms.clone());
    let decoded = per_token_ms.len().max(1) as f64;
    Ok(LatencyResult {
        prefill_tok_s: opts.prompt_tokens as f64 / median(prefill_s),
        decode_tok_s: decoded / decode_s.max(f64::MIN_POSITIVE),
        ttft_ms: median(ttft),
        decode_p50_ms: tokens.median(),
        decode_p95_ms: tokens.percentile(95),
        peak_rss_bytes: peak_rss_bytes(),
        threads: rayon::current_num_threads(),
        prompt_tokens: opts.prompt_tokens,
        gen_tokens: opts.gen_tokens,
        repeats: opts.repeats,
    })
}

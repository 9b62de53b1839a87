//! Choosing the next token: greedy at temperature 0, otherwise temperature, top-k and top-p (nucleus)
//! sampling from a ChaCha8 generator seeded per request (the same seed gives the same tokens).

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probabilities sum to at least this (1 = all).
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    pub seed: u64,
}

pub struct Sampler {
    p: SamplingParams,
    rng: ChaCha8Rng,
}

/// The index of the largest value (the first of equal ones).
pub fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0 as u32
}

impl Sampler {
    pub fn new(p: SamplingParams) -> Self {
        Self { p, rng: ChaCha8Rng::seed_from_u64(p.seed) }
    }

    /// The next token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.p.temperature <= 0.0 || logits.len() < 2 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.p.temperature;
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &z)| (i as u32, z * inv_t)).collect();
        let k = self.p.top_k;
        if k > 0 && k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(k);
        }
        if self.p.top_p < 1.0 {
            cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|&p| {
                acc += p;
                acc >= self.p.top_p
            });
            probs.truncate(keep.map_or(probs.len(), |i| i + 1));
        }
        match WeightedIndex::new(&probs) {
            Ok(dist) => cand[dist.sample(&mut self.rng)].0,
            Err(_) => argmax(logits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_p, top_k, seed }
    }

    fn draws(p: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p);
        (0..n).map(|_| s.sample(logits)).collect()
    }

    const LOGITS: [f32; 6] = [0.5, 2.0, 1.9, -1.0, 0.0, 1.0];

    #[test]
    fn temperature_zero_is_greedy() {
        assert_eq!(draws(params(0.0, 1.0, 0, 1), &LOGITS, 20), vec![1; 20]);
    }

    #[test]
    fn same_seed_same_tokens_and_another_seed_differs() {
        let a = draws(params(1.0, 1.0, 0, 42), &LOGITS, 64);
        assert_eq!(a, draws(params(1.0, 1.0, 0, 42), &LOGITS, 64));
        assert_ne!(a, draws(params(1.0, 1.0, 0, 43), &LOGITS, 64));
        // Sampling really samples: more than one token appears in 64 draws at temperature 1.
        assert!(a.iter().any(|&t| t != a[0]), "{a:?}");
    }

    #[test]
    fn top_k_and_top_p_keep_only_the_likeliest() {
        // top_k = 2: only tokens 1 and 2.
        assert!(draws(params(1.0, 1.0, 2, 5), &LOGITS, 200).iter().all(|&t| t == 1 || t == 2));
        // A tiny top_p keeps the single most likely token.
        assert_eq!(draws(params(1.0, 0.01, 0, 5), &LOGITS, 50), vec![1; 50]);
    }
}

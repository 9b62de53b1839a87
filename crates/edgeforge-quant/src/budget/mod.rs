//! Mixed precision under a byte budget: each tensor (the embedding / tied output head included) gets the
//! block format, from a list of candidates, that buys the least predicted KL divergence for the bytes.
//!
//! ```yaml
//! - pass: gptq
//!   format: q4_0                       # for anything the budget does not cover
//!   budget: { bytes: 91893056 }        # the GGUF file, metadata included; or { bits_per_weight: 4.8 }
//!   candidates: [iq4_nl, q4_0, q4_1, q5_0, q5_1, q6_k, q8_0]
//! ```
//!
//! Sensitivity is measured, not assumed ([`measure`]): on calibration text, every group of tensors (one
//! projection kind in a few consecutive blocks, or the embedding) is rounded alone to its cheapest
//! candidate and the KL divergence of the next-token distributions from the unquantized model is
//! measured; within a group and across candidates, that KL is spread in proportion to each tensor's
//! importance-weighted squared rounding error (the Hessian diagonal of its inputs, computed for every
//! candidate). The allocation is then a multiple-choice knapsack ([`allocate`]), solved exactly by dynamic
//! programming over the byte budget in small units.

mod measure;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeforge_core::scheme::Scheme;

pub use measure::{measure, measured_kl, parse_block_tensor, Calibrated, MeasureOptions};

/// How much the quantized model may take.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The GGUF file's size in bytes: metadata, norms and tensors the pass leaves alone included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Average stored bits per weight (scales included) over the tensors the budget covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_weight: Option<f64>,
}

impl Budget {
    /// A problem with the budget's fields, if any.
    pub fn issue(&self) -> Option<String> {
        match (self.bytes, self.bits_per_weight) {
            (Some(_), Some(_)) | (None, None) => Some("budget takes exactly one of `bytes` or `bits_per_weight`".into()),
            (Some(0), None) => Some("budget.bytes must be positive".into()),
            (None, Some(b)) if !(b > 1.0 && b <= 32.0) => Some(format!("budget.bits_per_weight = {b} must be in (1, 32]")),
            _ => None,
        }
    }
}

/// One way to store one tensor.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub scheme: Scheme,
    pub bytes: u64,
    /// Predicted mean KL divergence (nats per token) this tensor adds when stored this way.
    pub predicted_kl: f64,
    /// Importance-weighted squared rounding error (the sensitivity model's input).
    pub weighted_error: f64,
}

/// The candidates of one tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorChoices {
    pub tensor: String,
    pub choices: Vec<Choice>,
}

/// Bytes of a GGUF of `model` besides the data of the tensors `budgeted`: header, metadata (the
/// tokenizer's tokens, types and merges dominate), tensor infos, alignment padding, and the other tensors as
/// they are stored. An upper bound: every tensor is charged the full 32-byte alignment and 4 KiB is added
/// for the scalar keys; the run's report states the real file size next to the budget.
pub fn gguf_overhead(model: &edgeforge_core::Model, budgeted: &[String]) -> u64 {
    let string = |s: &str| 8 + s.len() as u64;
    let vocab = model.tokenizer.gguf_vocab();
    let tokens: u64 = vocab.map_or(0, |v| v.tokens.iter().map(|t| string(t)).sum::<u64>() + v.merges.iter().map(|m| string(m)).sum::<u64>());
    let types: u64 = vocab.and_then(|v| v.token_types.as_ref()).map_or(0, |t| 4 * t.len() as u64)
        + vocab.and_then(|v| v.scores.as_ref()).map_or(0, |s| 4 * s.len() as u64);
    let infos: u64 = model.tensors.iter().map(|(name, t)| string(name) + 4 + 8 * t.shape.len() as u64 + 4 + 8 + 32).sum();
    let others: u64 = model
        .tensors
        .iter()
        .filter(|(name, _)| !budgeted.contains(name))
        .map(|(_, t)| match &t.data {
            // Norms and other 1-D floats stay F32 in GGUF.
            edgeforge_core::TensorData::F32(v) => 4 * v.len() as u64,
            _ => t.storage_bytes() as u64,
        })
        .sum();
    4096 + tokens + types + infos + others
}

/// Byte units the dynamic programme counts in: fine enough that rounding every tensor up to whole units
/// wastes under 0.1% of a budget of this many units.
const UNITS: u64 = 40_000;

/// The index of the chosen candidate of every tensor, minimising the summed predicted KL with the summed
/// bytes at most `budget`. Sizes are rounded up to whole units, so the result never exceeds the budget.
pub fn allocate(items: &[TensorChoices], budget: u64) -> Result<Vec<usize>, String> {
    let min_bytes: u64 = items.iter().map(|t| t.choices.iter().map(|c| c.bytes).min().unwrap_or(0)).sum();
    if min_bytes > budget {
        return Err(format!(
            "the budget leaves {budget} bytes for the quantized tensors but their cheapest candidates need {min_bytes}: raise the budget or add a smaller candidate format"
        ));
    }
    let unit = budget.div_ceil(UNITS).max(1);
    let cap = (budget / unit) as usize;
    // best[b]: least KL with at most b units spent on the tensors so far; pick[i][b]: the choice made.
    let mut best = vec![0f64; cap + 1];
    let mut pick: Vec<Vec<u8>> = Vec::with_capacity(items.len());
    for item in items {
        let mut next = vec![f64::INFINITY; cap + 1];
        let mut chosen = vec![u8::MAX; cap + 1];
        for (ci, c) in item.choices.iter().enumerate() {
            let w = c.bytes.div_ceil(unit) as usize;
            for b in w..=cap {
                let v = best[b - w] + c.predicted_kl;
                if v < next[b] {
                    next[b] = v;
                    chosen[b] = ci as u8;
                }
            }
        }
        best = next;
        pick.push(chosen);
    }
    let mut b = (0..=cap).min_by(|&x, &y| best[x].total_cmp(&best[y])).unwrap_or(cap);
    if !best[b].is_finite() {
        return Err("no assignment of candidate formats fits the budget once rounded to whole units".into());
    }
    let mut out = vec![0usize; items.len()];
    for (i, item) in items.iter().enumerate().rev() {
        let ci = pick[i][b] as usize;
        out[i] = ci;
        b -= item.choices[ci].bytes.div_ceil(unit) as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, opts: &[(Scheme, u64, f64)]) -> TensorChoices {
        TensorChoices {
            tensor: name.into(),
            choices: opts.iter().map(|&(scheme, bytes, kl)| Choice { scheme, bytes, predicted_kl: kl, weighted_error: kl }).collect(),
        }
    }

    #[test]
    fn knapsack_spends_bytes_where_they_buy_the_most() {
        let items = [
            item("a", &[(Scheme::Q4_0, 100, 10.0), (Scheme::Q8_0, 200, 1.0)]),
            item("b", &[(Scheme::Q4_0, 100, 2.0), (Scheme::Q8_0, 200, 1.5)]),
            item("c", &[(Scheme::Q4_0, 100, 5.0), (Scheme::Q8_0, 200, 0.0)]),
        ];
        // 400 bytes: one upgrade; "a" gains 9, "c" 5, "b" 0.5.
        assert_eq!(allocate(&items, 400).unwrap(), vec![1, 0, 0]);
        // 500 bytes: two upgrades, a and c.
        assert_eq!(allocate(&items, 500).unwrap(), vec![1, 0, 1]);
        assert_eq!(allocate(&items, 600).unwrap(), vec![1, 1, 1]);
        assert!(allocate(&items, 299).is_err());
        // Brute force agrees on a budget between.
        let best = (0..8u32)
            .filter(|m| (0..3).map(|i| if m >> i & 1 == 1 { 200 } else { 100 }).sum::<u64>() <= 450)
            .map(|m| (0..3).map(|i| items[i].choices[(m >> i & 1) as usize].predicted_kl).sum::<f64>())
            .fold(f64::INFINITY, f64::min);
        let got: f64 = allocate(&items, 450).unwrap().iter().enumerate().map(|(i, &c)| items[i].choices[c].predicted_kl).sum();
        assert_eq!(got, best);
    }

    #[test]
    fn budget_takes_exactly_one_field() {
        assert!(Budget { bytes: None, bits_per_weight: None }.issue().is_some());
        assert!(Budget { bytes: Some(1), bits_per_weight: Some(4.0) }.issue().is_some());
        assert!(Budget { bytes: None, bits_per_weight: Some(0.5) }.issue().is_some());
        assert!(Budget { bytes: Some(1000), bits_per_weight: None }.issue().is_none());
    }
}

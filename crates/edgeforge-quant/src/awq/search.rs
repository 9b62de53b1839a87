//! AWQ's scale search (Lin et al., 2023): input channels that carry large activations matter most, so
//! their weights are scaled up by s before rounding (and the inputs down by s, folded into the layer that
//! produces them), which gives them finer effective steps. s = s_x^α per input channel, with s_x the mean
//! |activation|; α is chosen on a grid by the output error of the rounded weights of every linear that reads
//! these inputs. α = 0 (s = 1, plain rounding) is always a candidate, so the search never does worse than
//! round-to-nearest by this measure.

use edgeforge_core::quantized::QuantFormat;

use crate::awq::error::output_error;
use crate::rtn::quantize;

/// One linear reading the shared inputs: its weights (`rows × d`) and format.
pub struct Consumer<'a> {
    pub weights: &'a [f32],
    pub rows: usize,
    pub format: QuantFormat,
}

/// The chosen per-channel scales, the exponent, and the output errors without scaling and with it.
#[derive(Debug, Clone)]
pub struct ScaleChoice {
    pub scales: Vec<f32>,
    pub alpha: f64,
    pub error_plain: f64,
    pub error_scaled: f64,
}

/// s = s_x^α normalized so that max · min = 1 (the scales then straddle 1 and the folded weights keep
/// their magnitude on average).
pub fn scales_for(mean_abs: &[f32], alpha: f64) -> Vec<f32> {
    let raw: Vec<f64> = mean_abs.iter().map(|&m| f64::from(m.max(1e-4)).powf(alpha)).collect();
    let (lo, hi) = raw.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt().max(1e-12);
    raw.iter().map(|&v| (v / norm) as f32).collect()
}

/// Total output error of the consumers rounded after scaling their columns by `scales`.
fn scaled_error(consumers: &[Consumer<'_>], d: usize, scales: &[f32], h: &[f32], scratch: &mut Vec<f32>) -> f64 {
    consumers
        .iter()
        .map(|c| {
            let scaled: Vec<f32> = c.weights.iter().enumerate().map(|(i, &w)| w * scales[i % d]).collect();
            let q = quantize(&scaled, d, c.format, false).dequantize(scaled.len());
            let delta: Vec<f32> = c.weights.iter().zip(&q).enumerate().map(|(i, (&w, &v))| w - v / scales[i % d]).collect();
            output_error(&delta, c.rows, d, h, scratch)
        })
        .sum()
}

/// `scaled_error` for callers that build their own scale candidates (o_proj's per-value-channel scales).
pub fn scaled_error_public(consumers: &[Consumer<'_>], d: usize, scales: &[f32], h: &[f32]) -> f64 {
    scaled_error(consumers, d, scales, h, &mut Vec::new())
}

/// Grid search over α ∈ {0, 1/grid, …, (grid−1)/grid}.
pub fn search_scales(consumers: &[Consumer<'_>], d: usize, mean_abs: &[f32], h: &[f32], grid: usize) -> ScaleChoice {
    let mut scratch = Vec::new();
    let ones = vec![1f32; d];
    let error_plain = scaled_error(consumers, d, &ones, h, &mut scratch);
    let mut best = ScaleChoice { scales: ones, alpha: 0.0, error_plain, error_scaled: error_plain };
    for k in 1..grid.max(1) {
        let alpha = k as f64 / grid as f64;
        let scales = scales_for(mean_abs, alpha);
        let e = scaled_error(consumers, d, &scales, h, &mut scratch);
        if e < best.error_scaled {
            best = ScaleChoice { scales, alpha, error_plain, error_scaled: e };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_helps_when_a_few_channels_carry_large_activations() {
        let (rows, d, n) = (16, 64, 200);
        let w: Vec<f32> = (0..rows * d).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1).collect();
        // Channels 3 and 40 are outliers in the activations.
        let x: Vec<f32> = (0..n * d).map(|i| ((i * 31 % 97) as f32 / 48.0 - 1.0) * if i % d == 3 || i % d == 40 { 30.0 } else { 1.0 }).collect();
        let mut h = vec![0f32; d * d];
        let mut mean_abs = vec![0f32; d];
        for t in 0..n {
            for i in 0..d {
                mean_abs[i] += x[t * d + i].abs() / n as f32;
                for j in 0..d {
                    h[i * d + j] += x[t * d + i] * x[t * d + j];
                }
            }
        }
        let format = QuantFormat { bits: 4, group_size: 32, symmetric: true };
        let choice = search_scales(&[Consumer { weights: &w, rows, format }], d, &mean_abs, &h, 20);
        assert!(choice.alpha > 0.0, "{choice:?}");
        assert!(choice.error_scaled < 0.9 * choice.error_plain, "{} vs {}", choice.error_scaled, choice.error_plain);
        assert!(choice.scales[3] > choice.scales[0] && choice.scales[40] > choice.scales[1]);
    }

    #[test]
    fn normalized_scales_straddle_one() {
        let s = scales_for(&[0.5, 2.0, 8.0], 0.5);
        assert!((s[0] * s[2] - 1.0).abs() < 1e-5);
        assert_eq!(scales_for(&[0.5, 2.0], 0.0), vec![1.0, 1.0]);
    }
}

//! Round-to-nearest quantization: each group of a row gets an f16 scale (and a zero point when asymmetric)
//! from its range, and every weight the nearest code. The baseline every smarter method is measured against.
//!
//! ```yaml
//! - pass: quantize-rtn
//!   bits: 4                # 3, 4 or 8
//!   group_size: 64         # 32, 64, 128, 256 or per-channel
//!   symmetric: true        # false: a zero point per group
//!   ignore: [token_embd.weight, output.weight]   # globs over GGUF tensor names, left as they are
//!   overrides:             # mixed precision: first matching glob wins
//!     - { tensors: "blk.*.ffn_down.weight", bits: 8 }
//! ```

use half::f16;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::quantized::{QuantFormat, QuantTensor};
use edgeforge_core::{Model, ModelConfig, TensorData};

use crate::options::{default_ignore, Bits, FormatOverride, FormatPlan, GroupSize, Target, TensorGlob};

fn default_symmetric() -> bool {
    true
}


/// Options of `quantize-rtn`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RtnOptions {
    /// Bits per weight: 3, 4 or 8.
    pub bits: Bits,
    /// Elements per scale along a row: 32, 64, 128, 256 or `per-channel`.
    pub group_size: GroupSize,
    /// Symmetric grid around zero (true) or a zero point per group (false).
    #[serde(default = "default_symmetric")]
    pub symmetric: bool,
    /// Globs over GGUF tensor names to leave unquantized (default: the embedding and output head).
    #[serde(default = "default_ignore")]
    pub ignore: Vec<TensorGlob>,
    /// Try shrinking each group's range and keep the scale with the least squared error (default true).
    #[serde(default = "default_symmetric")]
    pub clip_search: bool,
    /// Per-tensor formats (mixed precision); the first matching glob wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<FormatOverride>,
}

pub struct QuantizeRtn {
    pub options: RtnOptions,
}

impl QuantizeRtn {
    pub fn new(options: RtnOptions) -> Self {
        Self { options }
    }

    fn plan(&self) -> FormatPlan<'_> {
        FormatPlan {
            bits: self.options.bits,
            group_size: self.options.group_size,
            symmetric: self.options.symmetric,
            overrides: &self.options.overrides,
            scheme: None,
        }
    }
}

/// Shrink factors tried for each group's range: round-to-nearest with the range clipped where that lowers
/// the group's squared error (outliers otherwise stretch the grid for every other weight).
const CLIP_FRACTIONS: [f32; 12] = [1.0, 0.97, 0.94, 0.91, 0.88, 0.85, 0.82, 0.79, 0.76, 0.73, 0.70, 0.67];

/// Scale and zero point for one group: symmetric grids use all 2^bits codes (−2^(b−1) .. 2^(b−1)−1, with
/// the group's extreme value on the side that has the extra code), asymmetric ones span [min, max].
pub(crate) fn group_params(group: &[f32], format: QuantFormat, clip_search: bool) -> (f16, u8) {
    group_params_weighted(group, None, format, clip_search)
}

/// As `group_params`, with the clip search's squared errors weighted per element by `importance` (e.g.
/// the Hessian diagonal: how strongly each input channel is driven), so the kept range favours the weights
/// whose errors reach the outputs most.
pub(crate) fn group_params_weighted(group: &[f32], importance: Option<&[f32]>, format: QuantFormat, clip_search: bool) -> (f16, u8) {
    let levels = format.levels() as f32;
    let half = levels / 2.0;
    let fractions: &[f32] = if clip_search { &CLIP_FRACTIONS } else { &CLIP_FRACTIONS[..1] };
    let mut best = (f16::ZERO, 0u8, f32::INFINITY);
    for &f in fractions {
        let (scale, zero) = if format.symmetric {
            // The value of largest magnitude maps to −2^(b−1) (llama.cpp's Q4_0 convention), so the full
            // range of codes is used.
            let extreme = group.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            // The scale may be negative (when the extreme is positive), exactly as in Q4_0 blocks.
            (f16::from_f32(extreme * f / -half), half as u8)
        } else {
            let (lo, hi) = group.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let s = f16::from_f32((hi - lo) * f / (levels - 1.0));
            let z = if s.to_f32() > 0.0 { (-lo * f / s.to_f32()).round().clamp(0.0, levels - 1.0) as u8 } else { 0 };
            (s, z)
        };
        let s = scale.to_f32();
        let z = f32::from(zero);
        let err: f32 = group
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let q = if s != 0.0 { ((v / s).round() + z).clamp(0.0, levels - 1.0) } else { z };
                let d = s * (q - z) - v;
                d * d * importance.map_or(1.0, |w| w[i])
            })
            .sum();
        if err < best.2 {
            best = (scale, zero, err);
        }
    }
    (best.0, best.1)
}

/// Quantize one row-major tensor with rows of `row_len` (groups never straddle rows).
pub fn quantize(values: &[f32], row_len: usize, format: QuantFormat, clip_search: bool) -> QuantTensor {
    let g = format.group_size;
    let max_code = (format.levels() - 1) as f32;
    let params: Vec<(f16, u8)> = values
        .par_chunks(row_len)
        .flat_map_iter(|row| row.chunks(g).map(|group| group_params(group, format, clip_search)))
        .collect();
    let per_row = format.groups_per_row(row_len);
    let zero_of = |gi: usize| if format.symmetric { (format.levels() / 2) as f32 } else { f32::from(params[gi].1) };
    let codes_u8: Vec<u8> = values
        .par_iter()
        .enumerate()
        .map(|(i, &v)| {
            let gi = (i / row_len) * per_row + (i % row_len) / g;
            let s = params[gi].0.to_f32();
            let code = if s != 0.0 { (v / s).round() + zero_of(gi) } else { zero_of(gi) };
            code.clamp(0.0, max_code) as u8
        })
        .collect();
    let codes = edgeforge_core::quantized::pack_codes(&codes_u8, format.bits);
    QuantTensor {
        format,
        row_len,
        scales: params.iter().map(|p| p.0).collect(),
        zeros: if format.symmetric { Vec::new() } else { params.iter().map(|p| p.1).collect() },
        codes,
    }
}

pub(crate) fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    let (num, den) = a.iter().zip(b).fold((0f64, 0f64), |(n, d), (&x, &y)| {
        (n + f64::from(x - y).powi(2), d + f64::from(x).powi(2))
    });
    if den == 0.0 {
        0.0
    } else {
        (num / den).sqrt()
    }
}

impl Pass for QuantizeRtn {
    fn name(&self) -> &'static str {
        "quantize-rtn"
    }

    fn needs(&self) -> Needs {
        Needs { float_weights: true, calibration: false, original_model: false }
    }

    fn effects(&self) -> Effects {
        Effects { weights_changed: true, quantizes: true, changes_shapes: false }
    }

    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }

    fn check(&self, config: &ModelConfig) -> Vec<OptionIssue> {
        self.plan().issues(config)
    }

    fn estimate(&self, _config: &ModelConfig, n_params: u64) -> Estimate {
        // Measured: ~150 M weights/s on 2 cores (dominated by dequantizing the input and rounding).
        Estimate { seconds: n_params as f64 / 150e6 + 0.5, peak_bytes: n_params * 8, note: None }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        let ignore: Vec<glob::Pattern> = self.options.ignore.iter().map(TensorGlob::pattern).collect();
        let targets = crate::select::targets(model, &ignore);
        let mut outcome = PassOutcome::default();
        for (done, name) in targets.iter().enumerate() {
            cx.check_cancel()?;
            let Some(tensor) = model.tensors.get_mut(name) else { continue };
            let row_len = tensor.row_len();
            let values = tensor.to_f32(name)?;
            let from = tensor.format_name();
            let (data, now) = match self.plan().target_for(name, row_len) {
                Target::Grid(format) => {
                    let q = quantize(&values, row_len, format, self.options.clip_search);
                    let now = q.dequantize(values.len());
                    (TensorData::Quantized(q), now)
                }
                Target::Scheme(s) => {
                    let bytes = s.quantize_rows(&values, row_len, None);
                    let now = edgeforge_core::blocks::dequantize_rows(s.ggml(), &bytes, values.len() / row_len, row_len)
                        .map_err(|e| PassError::Tensor { tensor: name.clone(), message: e.to_string() })?;
                    (TensorData::Blocks { dtype: s.ggml(), bytes: bytes.into() }, now)
                }
            };
            let err = rel_error(&values, &now);
            tensor.data = data;
            outcome.changed.push(TensorChange { tensor: name.clone(), from, to: tensor.format_name(), rel_error: err });
            (cx.progress)(done as u64 + 1, targets.len() as u64);
        }
        if let Some(first) = outcome.changed.first() {
            if first.from != "F32" && first.from != "F16" && first.from != "BF16" {
                outcome.notes.push(format!(
                    "input weights were {}: requantized from their dequantized values",
                    first.from
                ));
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 3) as f32)).collect()
    }

    #[test]
    fn codes_reconstruct_within_their_step() {
        for (bits, group, symmetric) in [(8, 64, true), (4, 32, true), (4, 64, false), (4, 128, true), (8, 128, false)] {
            let x = data(256);
            let f = QuantFormat { bits, group_size: group, symmetric };
            let q = quantize(&x, 128, f, false);
            assert!(q.is_consistent(x.len()));
            let y = q.dequantize(x.len());
            for (gi, (xs, ys)) in x.chunks(group).zip(y.chunks(group)).enumerate() {
                let step = q.scales[gi].to_f32().abs();
                // Symmetric grids put the extreme on code −2^(b−1); the other side ends one code short, so a
                // value there may sit up to one step from its code. Everything else is within half a step.
                let limit = if symmetric { 1.0 } else { 0.5 };
                for (a, b) in xs.iter().zip(ys) {
                    assert!((a - b).abs() <= limit * step * 1.001 + 1e-6, "{bits} {group} {symmetric}: {a} vs {b} step {step}");
                }
            }
        }
    }

    #[test]
    fn symmetric_int4_uses_all_16_codes_and_keeps_zero_exact() {
        let mut x = data(64);
        x[5] = 0.0;
        let q = quantize(&x, 64, QuantFormat { bits: 4, group_size: 32, symmetric: true }, false);
        assert_eq!(q.dequantize(64)[5], 0.0);
        let codes: std::collections::BTreeSet<u8> = (0..64).map(|i| q.code(i)).collect();
        assert!(codes.contains(&0), "the extreme value takes code 0 (−8): {codes:?}");
        assert_eq!(q.codes.len(), 32);
    }

    #[test]
    fn groups_that_do_not_divide_a_row_end_with_a_shorter_group() {
        // Rows of 576 in groups of 128 (SmolLM2's hidden size): 4 full groups and one of 64 per row.
        let x = data(3 * 576);
        let f = QuantFormat { bits: 4, group_size: 128, symmetric: true };
        let q = quantize(&x, 576, f, false);
        assert!(q.is_consistent(x.len()));
        assert_eq!(q.scales.len(), 3 * 5);
        assert_eq!((q.group_of(575), q.group_of(576), q.group_of(576 + 512)), (4, 5, 9));
        let y = q.dequantize(x.len());
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            let step = q.scales[q.group_of(i)].to_f32().abs();
            assert!((a - b).abs() <= step * 1.001 + 1e-6, "{i}: {a} vs {b}");
        }
        assert_eq!(f.label(576), "int4-g128-sym");
    }

    #[test]
    fn clip_search_never_increases_the_error() {
        let mut x = data(4096);
        for i in (0..4096).step_by(97) {
            x[i] *= 6.0; // outliers
        }
        for f in [QuantFormat { bits: 4, group_size: 64, symmetric: true }, QuantFormat { bits: 4, group_size: 32, symmetric: false }] {
            let plain = rel_error(&x, &quantize(&x, 4096, f, false).dequantize(4096));
            let searched = rel_error(&x, &quantize(&x, 4096, f, true).dequantize(4096));
            assert!(searched <= plain + 1e-9, "{f:?}: {searched} > {plain}");
            if f.symmetric {
                assert!(searched < 0.97 * plain, "{f:?}: search should help with outliers ({searched} vs {plain})");
            }
        }
    }
}

//! GPTQ (Frantar et al., 2022): quantize a linear layer's input columns one at a time and spread each
//! column's rounding error over the columns not yet quantized, weighted by the inverse Hessian of the layer's
//! calibration inputs (H = Σ xᵀx), so the layer's *outputs* on real activations move as little as possible.
//! The model is processed block by block: each block sees the outputs of the already-quantized blocks
//! before it.
//!
//! ```yaml
//! - pass: gptq
//!   bits: 4                # 4 or 8
//!   group_size: 128        # 32, 64, 128, 256 or per-channel
//!   symmetric: true
//!   damp_frac: 0.01        # dampening: this fraction of the mean Hessian diagonal is added to it
//!   block_size: 128        # columns per lazy batch update
//! ```
//!
//! Rows are independent given the Hessian, so each output row runs the column loop on its own thread; lazy
//! batching keeps each update inside a block of columns and applies it to the rest once per block.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use half::f16;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::quantized::{QuantFormat, QuantTensor};
use edgeforge_core::{Model, ModelConfig, TensorData};
use edgeforge_runtime::{weights_from_model, CaptureSite, LlamaRuntime};

use crate::options::{default_ignore, group_size_issues, Bits, GroupSize, TensorGlob};
use crate::rtn::{group_params, rel_error};

/// A fraction in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "f64", into = "f64")]
#[schemars(with = "f64")]
pub struct DampFrac(f64);

impl TryFrom<f64> for DampFrac {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if v > 0.0 && v <= 1.0 {
            Ok(DampFrac(v))
        } else {
            Err(format!("damp_frac = {v} must be in (0, 1], typically 0.01"))
        }
    }
}

impl From<DampFrac> for f64 {
    fn from(d: DampFrac) -> f64 {
        d.0
    }
}

fn default_true() -> bool {
    true
}
fn default_damp() -> DampFrac {
    DampFrac(0.01)
}
fn default_block() -> usize {
    128
}

/// Options of `gptq`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GptqOptions {
    pub bits: Bits,
    pub group_size: GroupSize,
    #[serde(default = "default_true")]
    pub symmetric: bool,
    /// Fraction of the mean Hessian diagonal added to the diagonal (more if the Hessian is not positive definite).
    #[serde(default = "default_damp")]
    pub damp_frac: DampFrac,
    /// Columns per lazy batch update.
    #[serde(default = "default_block")]
    pub block_size: usize,
    /// Globs over GGUF tensor names left as they are (default: the embedding and output head).
    #[serde(default = "default_ignore")]
    pub ignore: Vec<TensorGlob>,
}

pub struct Gptq {
    pub options: GptqOptions,
}

/// The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), row-major, after dampening; the dampening used and
/// whether it had to be raised.
fn inverse_hessian_factor(h: &mut [f64], n: usize, damp_frac: f64) -> Option<(Vec<f32>, f64, bool)> {
    let mean_diag = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    let mut damp = damp_frac * mean_diag.max(1e-12);
    for attempt in 0..6 {
        let m = Mat::<f64>::from_fn(n, n, |i, j| if i == j { h[i * n + j] + damp } else { h[i * n + j] });
        if let Ok(llt) = m.llt(Side::Lower) {
            let inv = llt.inverse();
            if let Ok(llt2) = inv.llt(Side::Lower) {
                let l = llt2.L();
                let mut u = vec![0f32; n * n];
                for i in 0..n {
                    for j in i..n {
                        u[i * n + j] = l[(j, i)] as f32;
                    }
                }
                if u.iter().all(|v| v.is_finite()) {
                    return Some((u, damp, attempt > 0));
                }
            }
        }
        damp *= 10.0;
    }
    None
}

/// One row's codes and its groups' (scale, zero point).
type RowResult = (Vec<u8>, Vec<(f16, u8)>);

/// GPTQ on one weight matrix (`rows × cols`, row-major) with the Hessian of its inputs (`cols × cols`).
/// Returns the quantized tensor and a note if the Hessian needed extra dampening.
pub fn gptq_matrix(
    weights: &[f32],
    rows: usize,
    cols: usize,
    hessian: &mut [f64],
    format: QuantFormat,
    damp_frac: f64,
    block_size: usize,
) -> Result<(QuantTensor, Option<String>), String> {
    // Inputs that never fire carry no information: pin their weights to zero, as the reference does.
    let dead: Vec<bool> = (0..cols).map(|i| hessian[i * cols + i] <= 0.0).collect();
    for (i, &d) in dead.iter().enumerate() {
        if d {
            hessian[i * cols + i] = 1.0;
        }
    }
    let (u, damp, raised) = inverse_hessian_factor(hessian, cols, damp_frac)
        .ok_or_else(|| "the Hessian stays singular even after raising the dampening a million-fold".to_owned())?;
    let note = raised.then(|| format!("Hessian not positive definite: dampening raised to {damp:.3e}"));
    let g = format.group_size;
    let levels = format.levels() as f32;
    let block = block_size.max(1);

    let per_row: Vec<RowResult> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let mut w: Vec<f32> = weights[r * cols..(r + 1) * cols].iter().zip(&dead).map(|(&v, &d)| if d { 0.0 } else { v }).collect();
            let mut codes = vec![0u8; cols];
            let mut params = Vec::with_capacity(format.groups_per_row(cols));
            let mut err = vec![0f32; block];
            for b0 in (0..cols).step_by(block) {
                let b1 = (b0 + block).min(cols);
                for i in b0..b1 {
                    if i % g == 0 {
                        params.push(group_params(&w[i..(i + g).min(cols)], format, false));
                    }
                    let (scale, zero) = params[i / g];
                    let (s, z) = (scale.to_f32(), if format.symmetric { levels / 2.0 } else { f32::from(zero) });
                    let q = if s != 0.0 { ((w[i] / s).round() + z).clamp(0.0, levels - 1.0) } else { z };
                    codes[i] = q as u8;
                    let e = (w[i] - s * (q - z)) / u[i * cols + i];
                    err[i - b0] = e;
                    let urow = &u[i * cols..(i + 1) * cols];
                    for j in i + 1..b1 {
                        w[j] -= e * urow[j];
                    }
                }
                // The lazy part: the block's errors reach the remaining columns once.
                for i in b0..b1 {
                    let e = err[i - b0];
                    let urow = &u[i * cols..(i + 1) * cols];
                    for j in b1..cols {
                        w[j] -= e * urow[j];
                    }
                }
            }
            (codes, params)
        })
        .collect();

    let mut codes_u8 = Vec::with_capacity(rows * cols);
    let mut scales = Vec::with_capacity(rows * cols / g);
    let mut zeros = Vec::new();
    for (c, p) in per_row {
        codes_u8.extend(c);
        for (s, z) in p {
            scales.push(s);
            if !format.symmetric {
                zeros.push(z);
            }
        }
    }
    let codes = if format.bits == 8 { codes_u8 } else { codes_u8.chunks(2).map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4)).collect() };
    Ok((QuantTensor { format, row_len: cols, scales, zeros, codes }, note))
}

/// Adds xᵀx of `x` (`n × d`, row-major) into `h` (`d × d`): one f32 GEMM per sequence (the bulk of GPTQ's
/// arithmetic), summed across sequences in f64 because activations with large outlier channels make the
/// running totals too wide for f32.
fn accumulate_hessian(h: &mut [f64], x: &[f32], d: usize, scratch: &mut Vec<f32>) {
    use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};
    let n = x.len() / d;
    scratch.clear();
    scratch.resize(d * d, 0.0);
    let ok = matmul(scratch, 0, d, MatRef::transposed(x, n, d), MatRef::row_major(x, n, d), false, Threads::Pool);
    debug_assert!(ok, "hessian shapes agree by construction");
    h.par_iter_mut().zip(scratch.par_iter()).for_each(|(a, &b)| *a += f64::from(b));
}

impl Gptq {
    pub fn new(options: GptqOptions) -> Self {
        Self { options }
    }
}

const SITES: [(CaptureSite, &[&str]); 4] = [
    (CaptureSite::Attention, &["attn_q", "attn_k", "attn_v"]),
    (CaptureSite::AttentionOutput, &["attn_output"]),
    (CaptureSite::FeedForward, &["ffn_gate", "ffn_up"]),
    (CaptureSite::FeedForwardDown, &["ffn_down"]),
];

impl Pass for Gptq {
    fn name(&self) -> &'static str {
        "gptq"
    }

    fn needs(&self) -> Needs {
        Needs { float_weights: true, calibration: true }
    }

    fn effects(&self) -> Effects {
        Effects { weights_changed: true, quantizes: true, changes_shapes: false }
    }

    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }

    fn check(&self, config: &ModelConfig) -> Vec<OptionIssue> {
        let mut issues = group_size_issues(self.options.group_size, config);
        if self.options.block_size == 0 {
            issues.push(OptionIssue { field: "block_size", message: "block_size must be positive".into() });
        }
        issues
    }

    fn estimate(&self, _config: &ModelConfig, n_params: u64) -> Estimate {
        Estimate { seconds: n_params as f64 / 135e6 * 400.0, peak_bytes: n_params * 4 + (400 << 20) }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        let cal = cx.calibration.filter(|c| !c.sequences.is_empty()).ok_or_else(|| PassError::Tensor {
            tensor: "(calibration)".into(),
            message: "gptq needs calibration sequences; add a `calibration` section to the recipe".into(),
        })?;
        let ignore: Vec<glob::Pattern> = self.options.ignore.iter().map(TensorGlob::pattern).collect();
        let mut runtime = LlamaRuntime::new(weights_from_model(model)?)
            .map_err(|e| PassError::Tensor { tensor: "(model)".into(), message: e.to_string() })?;
        let rt_err = |e: edgeforge_runtime::RuntimeError| PassError::Tensor { tensor: "(forward)".into(), message: e.to_string() };
        let mut hidden: Vec<(usize, Vec<f32>)> =
            cal.sequences.iter().map(|s| runtime.embed(s).map(|x| (s.len(), x))).collect::<Result<_, _>>().map_err(rt_err)?;
        let n_layers = model.config.n_layers;
        let mut outcome = PassOutcome::default();
        for li in 0..n_layers {
            cx.check_cancel()?;
            // 1. Hessians of this block's linear inputs, from the (already quantized) blocks before it.
            let widths = {
                let l = &runtime.weights().layers[li];
                let hd = runtime.weights().head_dim;
                [runtime.n_embd(), l.n_heads * hd, runtime.n_embd(), l.n_ff]
            };
            let mut hessians: Vec<Vec<f64>> = widths.iter().map(|&d| vec![0f64; d * d]).collect();
            let mut gemm_out: Vec<f32> = Vec::new();
            for (n, x) in &hidden {
                let mut scratch = x.clone();
                runtime
                    .run_layer(li, &mut scratch, *n, &mut |site, data| {
                        if let Some(k) = SITES.iter().position(|(s, _)| *s == site) {
                            accumulate_hessian(&mut hessians[k], data, widths[k], &mut gemm_out);
                        }
                    })
                    .map_err(rt_err)?;
            }
            // 2. Quantize each linear of the block with its Hessian.
            for (k, (_, names)) in SITES.iter().enumerate() {
                for short in *names {
                    let name = format!("blk.{li}.{short}.weight");
                    if ignore.iter().any(|p| p.matches(&name)) {
                        continue;
                    }
                    let Some(tensor) = model.tensors.get_mut(&name) else { continue };
                    let (rows, cols) = (tensor.shape[0], tensor.row_len());
                    let format = QuantFormat { bits: self.options.bits.get(), group_size: self.options.group_size.for_row(cols), symmetric: self.options.symmetric };
                    let values = tensor.to_f32(&name)?;
                    let mut h = hessians[k].clone();
                    let (q, note) = gptq_matrix(&values, rows, cols, &mut h, format, self.options.damp_frac.0, self.options.block_size)
                        .map_err(|message| PassError::Tensor { tensor: name.clone(), message })?;
                    if let Some(n) = note {
                        outcome.notes.push(format!("{name}: {n}"));
                    }
                    let from = tensor.format_name();
                    let err = rel_error(&values, &q.dequantize(values.len()));
                    tensor.data = TensorData::Quantized(q);
                    outcome.changed.push(TensorChange { tensor: name, from, to: tensor.format_name(), rel_error: err });
                }
            }
            // 3. The quantized block's outputs feed the next block.
            let layer = edgeforge_runtime::layer_from_model(model, li)?;
            runtime.set_layer(li, layer).map_err(rt_err)?;
            for (n, x) in &mut hidden {
                runtime.run_layer(li, x, *n, &mut |_, _| {}).map_err(rt_err)?;
            }
            (cx.progress)(li as u64 + 1, n_layers as u64);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtn::quantize;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// ‖(W − Q) Xᵀ‖² over calibration rows: the quantity GPTQ minimizes.
    fn output_error(w: &[f32], q: &[f32], x: &[f32], rows: usize, cols: usize) -> f64 {
        let n = x.len() / cols;
        let mut total = 0f64;
        for r in 0..rows {
            for t in 0..n {
                let mut d = 0f64;
                for c in 0..cols {
                    d += f64::from(w[r * cols + c] - q[r * cols + c]) * f64::from(x[t * cols + c]);
                }
                total += d * d;
            }
        }
        total
    }

    #[test]
    fn gptq_beats_round_to_nearest_on_correlated_inputs() {
        let (rows, cols, n) = (24, 64, 256);
        let mut rng = Rng(42);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        // Correlated inputs with a few large channels, as in real activations.
        let base: Vec<f32> = (0..n * 8).map(|_| rng.next()).collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| {
                let (t, c) = (i / cols, i % cols);
                let scale = if c % 16 == 0 { 8.0 } else { 1.0 };
                scale * (base[t * 8 + c % 8] + 0.3 * rng.next())
            })
            .collect();
        for format in [
            QuantFormat { bits: 4, group_size: 32, symmetric: true },
            QuantFormat { bits: 4, group_size: 64, symmetric: false },
            QuantFormat { bits: 8, group_size: 64, symmetric: true },
        ] {
            let mut h = vec![0f64; cols * cols];
            accumulate_hessian(&mut h, &x, cols, &mut Vec::new());
            let (q, note) = gptq_matrix(&w, rows, cols, &mut h, format, 0.01, 16).unwrap();
            assert!(note.is_none());
            assert!(q.is_consistent(rows * cols));
            let gptq = output_error(&w, &q.dequantize(rows * cols), &x, rows, cols);
            let rtn = output_error(&w, &quantize(&w, cols, format, false).dequantize(rows * cols), &x, rows, cols);
            assert!(gptq < 0.8 * rtn, "{format:?}: gptq {gptq} vs rtn {rtn}");
        }
    }

    #[test]
    fn singular_hessian_gets_more_damping_not_nans() {
        let (rows, cols) = (4, 32);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        // Rank-one inputs and a dead channel.
        let x: Vec<f32> = (0..10 * cols).map(|i| if i % cols == 3 { 0.0 } else { ((i / cols) as f32 + 1.0) * 0.1 }).collect();
        let mut h = vec![0f64; cols * cols];
        accumulate_hessian(&mut h, &x, cols, &mut Vec::new());
        let (q, _) = gptq_matrix(&w, rows, cols, &mut h, QuantFormat { bits: 4, group_size: 32, symmetric: true }, 1e-9, 128).unwrap();
        let deq = q.dequantize(rows * cols);
        assert!(deq.iter().all(|v| v.is_finite()));
        assert!((0..rows).all(|r| deq[r * cols + 3] == 0.0), "dead input channels are zeroed");
    }
}

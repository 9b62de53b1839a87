//! GPTQ (Frantar et al., 2022) over a whole model, block by block on calibration text.
//!
//! ```yaml
//! - pass: gptq
//!   bits: 4                # 3, 4 or 8
//!   group_size: 128        # 32, 64, 128, 256 or per-channel
//!   symmetric: true
//!   act_order: true        # columns by decreasing activation energy, static groups
//!   damp_frac: 0.01        # dampening: this fraction of the mean Hessian diagonal is added to it
//!   block_size: 128        # columns per lazy batch update
//!   overrides:             # mixed precision: first matching glob wins
//!     - { tensors: "blk.*.ffn_down.weight", bits: 8 }
//! ```
//!
//! Each block runs step by step on every calibration sequence ("true sequential"): q/k/v are quantized on
//! the Hessian of the normed input, then o_proj on the attention computed *with* the quantized q/k/v, then
//! gate/up, then down_proj on the SwiGLU state of the quantized gate/up. So every projection corrects for
//! the rounding of the ones before it, each projection is computed once per token, and only one block's
//! weights are ever held as floats.

mod hessian;
mod refit;
mod solve;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::{Model, ModelConfig, TensorData};
use edgeforge_runtime::{layer_from_model, Block, BlockDims, RuntimeError};

pub use hessian::Hessian;
pub use solve::{gptq_matrix, SolveOptions};

use crate::options::{default_ignore, Bits, FormatOverride, FormatPlan, GroupSize, TensorGlob};
use crate::rtn::rel_error;

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
    /// Bits per weight: 3, 4 or 8.
    pub bits: Bits,
    /// Elements per scale along a row: 32, 64, 128, 256 or `per-channel`.
    pub group_size: GroupSize,
    #[serde(default = "default_true")]
    pub symmetric: bool,
    /// Quantize columns by decreasing Hessian diagonal, with group scales fixed from the original weights
    /// (static groups), so grouped formats still hold the result.
    #[serde(default = "default_true")]
    pub act_order: bool,
    /// Pick each group's range by the least squared error (weighted by the Hessian diagonal) instead of
    /// min/max.
    #[serde(default = "default_true")]
    pub clip_search: bool,
    /// After GPTQ fixes the codes, refit each row's group scales by least squares on the calibration
    /// activations (same format, lower per-layer output error; measured on SmolLM2 int4 g128: no perplexity
    /// gain, hence off by default).
    #[serde(default)]
    pub refit_scales: bool,
    /// Fraction of the mean Hessian diagonal added to the diagonal (more if the Hessian is not positive definite).
    #[serde(default = "default_damp")]
    pub damp_frac: DampFrac,
    /// Columns per lazy batch update.
    #[serde(default = "default_block")]
    pub block_size: usize,
    /// Per-tensor formats (mixed precision); the first matching glob wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<FormatOverride>,
    /// Globs over GGUF tensor names left as they are (default: the embedding and output head).
    #[serde(default = "default_ignore")]
    pub ignore: Vec<TensorGlob>,
}

pub struct Gptq {
    pub options: GptqOptions,
}

impl Gptq {
    pub fn new(options: GptqOptions) -> Self {
        Self { options }
    }

    fn plan(&self) -> FormatPlan<'_> {
        FormatPlan {
            bits: self.options.bits,
            group_size: self.options.group_size,
            symmetric: self.options.symmetric,
            overrides: &self.options.overrides,
        }
    }

    fn solve_options(&self) -> SolveOptions {
        SolveOptions {
            damp_frac: self.options.damp_frac.0,
            block_size: self.options.block_size,
            act_order: self.options.act_order,
            clip_search: self.options.clip_search,
            refit_scales: self.options.refit_scales,
        }
    }

    /// GPTQ on the named projections of block `li` with their shared input Hessian, in the model.
    fn quantize_projections(&self, model: &mut Model, li: usize, names: &[&str], hessian: &Hessian, outcome: &mut PassOutcome) -> Result<(), PassError> {
        let ignore: Vec<glob::Pattern> = self.options.ignore.iter().map(TensorGlob::pattern).collect();
        for short in names {
            let name = format!("blk.{li}.{short}.weight");
            if ignore.iter().any(|p| p.matches(&name)) {
                continue;
            }
            let Some(tensor) = model.tensors.get_mut(&name) else { continue };
            let (rows, cols) = (tensor.shape[0], tensor.row_len());
            if cols != hessian.width {
                return Err(PassError::Tensor { tensor: name, message: format!("rows of {cols} but inputs of width {}", hessian.width) });
            }
            let format = self.plan().format_for(&name, cols);
            let values = tensor.to_f32(&name)?;
            let mut h = hessian.sum.clone();
            let (q, note) = gptq_matrix(&values, rows, cols, &mut h, format, self.solve_options())
                .map_err(|message| PassError::Tensor { tensor: name.clone(), message })?;
            if let Some(n) = note {
                outcome.notes.push(format!("{name}: {n}"));
            }
            let from = tensor.format_name();
            let err = rel_error(&values, &q.dequantize(values.len()));
            tensor.data = TensorData::Quantized(q);
            outcome.changed.push(TensorChange { tensor: name, from, to: tensor.format_name(), rel_error: err });
        }
        Ok(())
    }
}

fn runtime_error(e: RuntimeError) -> PassError {
    PassError::Tensor { tensor: "(forward)".into(), message: e.to_string() }
}

/// Token embeddings of every calibration sequence: `(length, [length × n_embd])`.
pub fn embed(model: &Model, sequences: &[Vec<u32>]) -> Result<Vec<(usize, Vec<f32>)>, PassError> {
    let c = &model.config;
    let table = model.tensor_f32("token_embd.weight", &[c.vocab_size, c.n_embd])?;
    let e = c.n_embd;
    sequences
        .iter()
        .map(|s| {
            let mut x = Vec::with_capacity(s.len() * e);
            for &t in s {
                let row = table.get(t as usize * e..(t as usize + 1) * e).ok_or_else(|| PassError::Tensor {
                    tensor: "(calibration)".into(),
                    message: format!("token id {t} is outside the vocabulary of {}", c.vocab_size),
                })?;
                x.extend_from_slice(row);
            }
            Ok((s.len(), x))
        })
        .collect()
}

/// Where the pass's time goes, for its report.
#[derive(Default)]
struct Stopwatch {
    forward_s: f64,
    hessian_s: f64,
    solve_s: f64,
}

impl Stopwatch {
    fn time<T>(slot: &mut f64, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let out = f();
        *slot += t.elapsed().as_secs_f64();
        out
    }
}

/// Σ xᵀx of `f(sequence)` over every calibration sequence.
fn hessian_of(
    width: usize,
    hidden: &[(usize, Vec<f32>)],
    clock: &mut Stopwatch,
    mut f: impl FnMut(&[f32], usize) -> Result<Vec<f32>, RuntimeError>,
) -> Result<Hessian, PassError> {
    let mut h = Hessian::new(width);
    for (n, x) in hidden {
        let input = Stopwatch::time(&mut clock.forward_s, || f(x, *n)).map_err(runtime_error)?;
        Stopwatch::time(&mut clock.hessian_s, || h.add(&input));
    }
    Ok(h)
}

impl Pass for Gptq {
    fn name(&self) -> &'static str {
        "gptq"
    }

    fn needs(&self) -> Needs {
        Needs { float_weights: true, calibration: true, original_model: false }
    }

    fn effects(&self) -> Effects {
        Effects { weights_changed: true, quantizes: true, changes_shapes: false }
    }

    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }

    fn check(&self, config: &ModelConfig) -> Vec<OptionIssue> {
        let mut issues = self.plan().issues(config);
        if self.options.block_size == 0 {
            issues.push(OptionIssue { field: "block_size", message: "block_size must be positive".into() });
        }
        issues
    }

    fn estimate(&self, _config: &ModelConfig, n_params: u64) -> Estimate {
        Estimate { seconds: n_params as f64 / 135e6 * 250.0, peak_bytes: n_params + (700 << 20) }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        let cal = cx.calibration.filter(|c| !c.sequences.is_empty()).ok_or_else(|| PassError::Tensor {
            tensor: "(calibration)".into(),
            message: "gptq needs calibration sequences; add a `calibration` section to the recipe".into(),
        })?;
        let c = model.config.clone();
        let dims = BlockDims { n_embd: c.n_embd, head_dim: c.head_dim, rope_base: c.rope_base, rms_eps: c.rms_eps };
        let mut hidden = embed(model, &cal.sequences)?;
        let mut outcome = PassOutcome::default();
        let mut clock = Stopwatch::default();
        const STEPS: u64 = 4;
        let total = c.n_layers as u64 * STEPS;
        let reload = |model: &Model, block: &mut Block, li: usize| -> Result<(), PassError> {
            block.set_weights(layer_from_model(model, li)?).map_err(runtime_error)
        };
        for li in 0..c.n_layers {
            let mut block = Block::new(layer_from_model(model, li)?, dims).map_err(runtime_error)?;
            let step = |k: u64| (cx.progress)(li as u64 * STEPS + k, total);

            cx.check_cancel()?;
            let h = hessian_of(c.n_embd, &hidden, &mut clock, |x, n| block.attn_norm(x, n))?;
            Stopwatch::time(&mut clock.solve_s, || self.quantize_projections(model, li, &["attn_q", "attn_k", "attn_v"], &h, &mut outcome))?;
            reload(model, &mut block, li)?;
            step(1);

            cx.check_cancel()?;
            let heads: Vec<Vec<f32>> = Stopwatch::time(&mut clock.forward_s, || {
                hidden.iter().map(|(n, x)| block.attn_norm(x, *n).and_then(|xn| block.attention_heads(&xn, *n))).collect::<Result<_, _>>()
            })
            .map_err(runtime_error)?;
            let width = block.weights().n_heads * c.head_dim;
            let mut h = Hessian::new(width);
            Stopwatch::time(&mut clock.hessian_s, || heads.iter().for_each(|x| h.add(x)));
            Stopwatch::time(&mut clock.solve_s, || self.quantize_projections(model, li, &["attn_output"], &h, &mut outcome))?;
            reload(model, &mut block, li)?;
            step(2);

            cx.check_cancel()?;
            Stopwatch::time(&mut clock.forward_s, || {
                hidden.iter_mut().zip(heads).try_for_each(|((n, x), heads)| block.add_attention_output(&heads, *n, x))
            })
            .map_err(runtime_error)?;
            let h = hessian_of(c.n_embd, &hidden, &mut clock, |x, n| block.ffn_norm(x, n))?;
            Stopwatch::time(&mut clock.solve_s, || self.quantize_projections(model, li, &["ffn_gate", "ffn_up"], &h, &mut outcome))?;
            reload(model, &mut block, li)?;
            step(3);

            cx.check_cancel()?;
            let states: Vec<Vec<f32>> = Stopwatch::time(&mut clock.forward_s, || {
                hidden.iter().map(|(n, x)| block.ffn_norm(x, *n).and_then(|xn| block.ffn_hidden(&xn, *n))).collect::<Result<_, _>>()
            })
            .map_err(runtime_error)?;
            let mut h = Hessian::new(block.weights().n_ff);
            Stopwatch::time(&mut clock.hessian_s, || states.iter().for_each(|x| h.add(x)));
            Stopwatch::time(&mut clock.solve_s, || self.quantize_projections(model, li, &["ffn_down"], &h, &mut outcome))?;
            reload(model, &mut block, li)?;
            Stopwatch::time(&mut clock.forward_s, || {
                hidden.iter_mut().zip(states).try_for_each(|((n, x), state)| block.add_ffn_output(&state, *n, x))
            })
            .map_err(runtime_error)?;
            step(4);
        }
        let tokens: usize = hidden.iter().map(|(n, _)| n).sum();
        outcome.notes.push(format!(
            "{} calibration sequences, {tokens} tokens; peak RSS {:.0} MiB; time in block forward {:.1} s, Hessians {:.1} s, GPTQ solves {:.1} s",
            hidden.len(),
            edgeforge_core::process::peak_rss_bytes() as f64 / (1u64 << 20) as f64,
            clock.forward_s,
            clock.hessian_s,
            clock.solve_s
        ));
        Ok(outcome)
    }
}

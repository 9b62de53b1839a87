//! AWQ (Lin et al., 2023): activation-aware scaling before rounding, folded into the model so inference
//! costs nothing extra.
//!
//! ```yaml
//! - pass: awq
//!   bits: 4
//!   group_size: 128
//!   symmetric: true
//!   grid: 20             # α points searched
//!   clip: true           # per-group range clipping search (not for q/k)
//!   quantize: true       # false: leave scaled float weights for a following `gptq` (AWQ+GPTQ)
//! ```
//!
//! Block by block on calibration text, four groups of linears share an input and get one scale vector
//! each, folded where the math allows: attn_norm → q,k,v (into the norm weight); v → o_proj (into attn_v's
//! rows; one scale per value channel, shared by the query heads that read it, so GQA stays exact);
//! ffn_norm → gate,up (into the norm weight); up → down_proj (into ffn_up's rows, since down's input
//! silu(gate)·up is linear in up). Scores go through each input's Hessian (see `error.rs`).

mod clip;
mod error;
mod search;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::{Model, ModelConfig, TensorData};
use edgeforge_runtime::{layer_from_model, Block, BlockDims, RuntimeError};

pub use search::{scales_for, search_scales, Consumer, ScaleChoice};

use crate::gptq::Hessian;
use crate::options::{default_ignore, Bits, FormatOverride, FormatPlan, GroupSize, TensorGlob};
use crate::rtn::{quantize, rel_error};

fn default_true() -> bool {
    true
}
fn default_grid() -> usize {
    20
}

/// Options of `awq`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwqOptions {
    /// Bits per weight the scales are searched for (and rounded to when `quantize`): 3, 4 or 8.
    pub bits: Bits,
    /// Elements per scale along a row: 32, 64, 128, 256 or `per-channel`.
    pub group_size: GroupSize,
    #[serde(default = "default_true")]
    pub symmetric: bool,
    /// Points of the α grid (α = k / grid).
    #[serde(default = "default_grid")]
    pub grid: usize,
    /// Search a clipping range per group (all linears but q and k, whose errors are amplified by the
    /// attention scores).
    #[serde(default = "default_true")]
    pub clip: bool,
    /// Round the scaled weights (round to nearest); false leaves them in float for a following `gptq`.
    #[serde(default = "default_true")]
    pub quantize: bool,
    /// Per-tensor formats (mixed precision); the first matching glob wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<FormatOverride>,
    /// Globs over GGUF tensor names left as they are (default: the embedding and output head).
    #[serde(default = "default_ignore")]
    pub ignore: Vec<TensorGlob>,
}

pub struct Awq {
    pub options: AwqOptions,
}

fn runtime_error(e: RuntimeError) -> PassError {
    PassError::Tensor { tensor: "(forward)".into(), message: e.to_string() }
}

/// Σ xᵀx (as f32) and mean |x| per channel over every sequence's `[n, width]` rows.
fn input_statistics(width: usize, xs: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let mut h = Hessian::new(width);
    let mut mean_abs = vec![0f64; width];
    let mut tokens = 0usize;
    for x in xs {
        h.add(x);
        for row in x.chunks_exact(width) {
            for (m, &v) in mean_abs.iter_mut().zip(row) {
                *m += f64::from(v.abs());
            }
        }
        tokens += x.len() / width.max(1);
    }
    let n = tokens.max(1) as f64;
    (h.matrix().iter().map(|&v| v as f32).collect(), mean_abs.iter().map(|&m| (m / n) as f32).collect())
}

/// D⁻¹ H D⁻¹: the Hessian of the inputs once they are divided by `scales`.
fn rescale_hessian(h: &mut [f32], scales: &[f32]) {
    let d = scales.len();
    for i in 0..d {
        for j in 0..d {
            h[i * d + j] /= scales[i] * scales[j];
        }
    }
}

/// What the searches chose, summed over blocks for the pass report.
#[derive(Default)]
struct Tally {
    /// Per group of linears: (Σ α, blocks, Σ error without scaling, Σ error with it).
    scales: std::collections::BTreeMap<String, (f64, usize, f64, f64)>,
    /// Per linear kind: (Σ group error before clipping, after).
    clips: std::collections::BTreeMap<&'static str, (f64, f64)>,
}

impl Tally {
    fn scale(&mut self, group: String, alpha: f64, plain: f64, scaled: f64) {
        let e = self.scales.entry(group).or_default();
        *e = (e.0 + alpha, e.1 + 1, e.2 + plain, e.3 + scaled);
    }

    fn clip(&mut self, kind: &'static str, before: f64, after: f64) {
        let e = self.clips.entry(kind).or_default();
        *e = (e.0 + before, e.1 + after);
    }

    fn lines(&self) -> Vec<String> {
        let pct = |a: f64, b: f64| if a > 0.0 { 100.0 * (1.0 - b / a) } else { 0.0 };
        let mut out: Vec<String> = self
            .scales
            .iter()
            .map(|(g, &(alpha, n, plain, scaled))| {
                format!("scales {{{g}}}: mean alpha {:.2} over {n} blocks, output error -{:.1}% vs unscaled rounding", alpha / n.max(1) as f64, pct(plain, scaled))
            })
            .collect();
        out.extend(self.clips.iter().map(|(k, &(b, a))| format!("clipping {k}: group output error -{:.1}%", pct(b, a))));
        out
    }
}

impl Awq {
    pub fn new(options: AwqOptions) -> Self {
        Self { options }
    }

    fn plan(&self) -> FormatPlan<'_> {
        FormatPlan { bits: self.options.bits, group_size: self.options.group_size, symmetric: self.options.symmetric, overrides: &self.options.overrides, scheme: None }
    }

    fn ignored(&self, name: &str) -> bool {
        self.options.ignore.iter().any(|g| g.pattern().matches(name))
    }

    /// Searches one scale vector for the linears `consumers` (short names in block `li`) that read inputs of
    /// width `d` with Hessian `h` and mean magnitudes `mean_abs`; returns it (all ones if nothing is searched).
    fn choose(&self, model: &Model, li: usize, consumers: &[&'static str], d: usize, h: &[f32], mean_abs: &[f32], tally: &mut Tally) -> Result<Vec<f32>, PassError> {
        let mut weights = Vec::new();
        for short in consumers {
            let name = format!("blk.{li}.{short}.weight");
            if self.ignored(&name) {
                return Ok(vec![1.0; d]);
            }
            let t = model.tensor(&name)?;
            weights.push((t.to_f32(&name)?, t.shape[0], self.plan().format_for(&name, d)));
        }
        let list: Vec<Consumer<'_>> = weights.iter().map(|(w, rows, format)| Consumer { weights: w, rows: *rows, format: *format }).collect();
        let choice = search_scales(&list, d, mean_abs, h, self.options.grid);
        tally.scale(consumers.join(","), choice.alpha, choice.error_plain, choice.error_scaled);
        Ok(choice.scales)
    }
}

/// Multiplies the columns of `name` (`[out, in]`) by `col_scales`, or divides its rows by `row_scales`,
/// storing the result as F32.
fn scale_tensor(model: &mut Model, name: &str, col_scales: Option<&[f32]>, row_scales: Option<&[f32]>) -> Result<(), PassError> {
    let Some(t) = model.tensors.get_mut(name) else {
        return Err(PassError::Tensor { tensor: name.to_owned(), message: "missing".into() });
    };
    let mut v = t.to_f32(name)?;
    let cols = t.row_len().max(1);
    for (i, x) in v.iter_mut().enumerate() {
        if let Some(s) = col_scales {
            *x *= s[i % cols];
        }
        if let Some(s) = row_scales {
            *x /= s[i / cols];
        }
    }
    t.data = TensorData::F32(v);
    Ok(())
}

/// Divides a norm weight (a vector) element by element by `scales`.
fn scale_norm(model: &mut Model, name: &str, scales: &[f32]) -> Result<(), PassError> {
    let Some(t) = model.tensors.get_mut(name) else {
        return Err(PassError::Tensor { tensor: name.to_owned(), message: "missing".into() });
    };
    let mut v = t.to_f32(name)?;
    if v.len() != scales.len() {
        return Err(PassError::Tensor { tensor: name.to_owned(), message: format!("{} values for {} channels", v.len(), scales.len()) });
    }
    v.iter_mut().zip(scales).for_each(|(x, s)| *x /= s);
    t.data = TensorData::F32(v);
    Ok(())
}

impl Pass for Awq {
    fn name(&self) -> &'static str {
        "awq"
    }

    fn needs(&self) -> Needs {
        Needs { float_weights: true, calibration: true, original_model: false }
    }

    fn effects(&self) -> Effects {
        Effects { weights_changed: true, quantizes: self.options.quantize, changes_shapes: false }
    }

    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }

    fn check(&self, config: &ModelConfig) -> Vec<OptionIssue> {
        let mut issues = self.plan().issues(config);
        if self.options.grid < 2 {
            issues.push(OptionIssue { field: "grid", message: "grid must be at least 2 (α = 0 and one more point)".into() });
        }
        if self.options.overrides.iter().any(|o| o.format.is_some()) {
            issues.push(OptionIssue {
                field: "overrides",
                message: "awq rounds to bits/group_size grids only; for block formats (`format:`) use `quantize: false` and put the formats on a following gptq pass".into(),
            });
        }
        issues
    }

    fn estimate(&self, _config: &ModelConfig, n_params: u64) -> Estimate {
        Estimate { seconds: n_params as f64 / 135e6 * 120.0, peak_bytes: n_params * 4 + (600 << 20), note: None }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        let cal = cx.calibration.filter(|c| !c.sequences.is_empty()).ok_or_else(|| PassError::Tensor {
            tensor: "(calibration)".into(),
            message: "awq needs calibration sequences; add a `calibration` section to the recipe".into(),
        })?;
        let c = model.config.clone();
        let (e, hd) = (c.n_embd, c.head_dim);
        let dims = BlockDims { n_embd: e, head_dim: hd, rope_base: c.rope_base, rms_eps: c.rms_eps };
        let mut hidden = crate::gptq::embed(model, &cal.sequences)?;
        let mut outcome = PassOutcome::default();
        let mut tally = Tally::default();
        let reload = |model: &Model, block: &mut Block, li: usize| -> Result<(), PassError> { block.set_weights(layer_from_model(model, li)?).map_err(runtime_error) };
        let mut before: Vec<(String, String, Vec<f32>)> = Vec::new();
        for li in 0..c.n_layers {
            cx.check_cancel()?;
            let linears = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
            for short in linears {
                let name = format!("blk.{li}.{short}.weight");
                let t = model.tensor(&name)?;
                before.push((name.clone(), t.format_name(), t.to_f32(&name)?));
            }
            let mut block = Block::new(layer_from_model(model, li)?, dims).map_err(runtime_error)?;
            let (n_heads, n_kv) = (block.weights().n_heads, block.weights().n_kv_heads);
            let group = n_heads / n_kv.max(1);

            // 1. attn_norm → q, k, v.
            let xs: Vec<Vec<f32>> = hidden.iter().map(|(n, x)| block.attn_norm(x, *n)).collect::<Result<_, _>>().map_err(runtime_error)?;
            let (mut h_attn, m_attn) = input_statistics(e, &xs);
            drop(xs);
            let s1 = self.choose(model, li, &["attn_q", "attn_k", "attn_v"], e, &h_attn, &m_attn, &mut tally)?;
            scale_norm(model, &format!("blk.{li}.attn_norm.weight"), &s1)?;
            for short in ["attn_q", "attn_k", "attn_v"] {
                scale_tensor(model, &format!("blk.{li}.{short}.weight"), Some(&s1), None)?;
            }
            rescale_hessian(&mut h_attn, &s1);
            reload(model, &mut block, li)?;

            // 2. v → o_proj: one scale per value channel, repeated for the query heads of its KV group.
            let heads: Vec<Vec<f32>> = hidden
                .iter()
                .map(|(n, x)| block.attn_norm(x, *n).and_then(|xn| block.attention_heads(&xn, *n)))
                .collect::<Result<_, _>>()
                .map_err(runtime_error)?;
            let qd = n_heads * hd;
            let (mut h_o, m_o) = input_statistics(qd, &heads);
            let kv_mean: Vec<f32> = (0..n_kv * hd)
                .map(|kc| {
                    let (kv, j) = (kc / hd, kc % hd);
                    (0..group).map(|g| m_o[(kv * group + g) * hd + j]).sum::<f32>() / group as f32
                })
                .collect();
            let expand = |kv_scales: &[f32]| -> Vec<f32> { (0..qd).map(|c| kv_scales[(c / hd / group) * hd + c % hd]).collect() };
            let name_o = format!("blk.{li}.attn_output.weight");
            let s2_kv = if self.ignored(&name_o) || self.ignored(&format!("blk.{li}.attn_v.weight")) {
                vec![1.0; n_kv * hd]
            } else {
                // Search over α on the value-channel statistics, scoring o_proj with the expanded scales.
                let w_o = model.tensor(&name_o)?.to_f32(&name_o)?;
                let consumer = [Consumer { weights: &w_o, rows: e, format: self.plan().format_for(&name_o, qd) }];
                let mut best = (f64::INFINITY, vec![1f32; n_kv * hd], 0.0);
                let mut plain = 0.0;
                for k in 0..self.options.grid.max(1) {
                    let alpha = k as f64 / self.options.grid as f64;
                    let s_kv = if k == 0 { vec![1f32; n_kv * hd] } else { scales_for(&kv_mean, alpha) };
                    let s = expand(&s_kv);
                    let choice_err = search::scaled_error_public(&consumer, qd, &s, &h_o);
                    if k == 0 {
                        plain = choice_err;
                    }
                    if choice_err < best.0 {
                        best = (choice_err, s_kv, alpha);
                    }
                }
                tally.scale("attn_v->attn_output".into(), best.2, plain, best.0);
                best.1
            };
            scale_tensor(model, &format!("blk.{li}.attn_v.weight"), None, Some(&s2_kv))?;
            // A value bias (Qwen 2) is part of v's output: it is divided with its rows, and stays float.
            let v_bias = format!("blk.{li}.attn_v.bias");
            if model.tensors.contains_key(&v_bias) {
                scale_norm(model, &v_bias, &s2_kv)?;
            }
            let s2 = expand(&s2_kv);
            scale_tensor(model, &name_o, Some(&s2), None)?;
            rescale_hessian(&mut h_o, &s2);
            reload(model, &mut block, li)?;

            // 3. ffn_norm → gate, up (the attention residual first: heads are unchanged by the fold).
            for ((n, x), hs) in hidden.iter_mut().zip(&heads) {
                let heads_now: Vec<f32> = hs.iter().enumerate().map(|(i, v)| v / s2[i % qd]).collect();
                block.add_attention_output(&heads_now, *n, x).map_err(runtime_error)?;
            }
            drop(heads);
            let xs: Vec<Vec<f32>> = hidden.iter().map(|(n, x)| block.ffn_norm(x, *n)).collect::<Result<_, _>>().map_err(runtime_error)?;
            let (mut h_ffn, m_ffn) = input_statistics(e, &xs);
            let s3 = self.choose(model, li, &["ffn_gate", "ffn_up"], e, &h_ffn, &m_ffn, &mut tally)?;
            scale_norm(model, &format!("blk.{li}.ffn_norm.weight"), &s3)?;
            for short in ["ffn_gate", "ffn_up"] {
                scale_tensor(model, &format!("blk.{li}.{short}.weight"), Some(&s3), None)?;
            }
            rescale_hessian(&mut h_ffn, &s3);
            reload(model, &mut block, li)?;

            // 4. up → down_proj.
            let ff = block.weights().n_ff;
            let states: Vec<Vec<f32>> = xs
                .iter()
                .zip(&hidden)
                .map(|(xn, (n, _))| {
                    let xn_now: Vec<f32> = xn.iter().enumerate().map(|(i, v)| v / s3[i % e]).collect();
                    block.ffn_hidden(&xn_now, *n)
                })
                .collect::<Result<_, _>>()
                .map_err(runtime_error)?;
            drop(xs);
            let (mut h_down, m_down) = input_statistics(ff, &states);
            drop(states);
            let s4 = self.choose(model, li, &["ffn_down"], ff, &h_down, &m_down, &mut tally)?;
            scale_tensor(model, &format!("blk.{li}.ffn_up.weight"), None, Some(&s4))?;
            scale_tensor(model, &format!("blk.{li}.ffn_down.weight"), Some(&s4), None)?;
            rescale_hessian(&mut h_down, &s4);

            // 5. Clipping (not q/k), then rounding, with each linear's Hessian in its scaled coordinates.
            let hessians: [(&str, &[f32], usize); 5] =
                [("attn_v", &h_attn, e), ("attn_output", &h_o, qd), ("ffn_gate", &h_ffn, e), ("ffn_up", &h_ffn, e), ("ffn_down", &h_down, ff)];
            if self.options.clip {
                for (short, h, d) in hessians {
                    let name = format!("blk.{li}.{short}.weight");
                    if self.ignored(&name) {
                        continue;
                    }
                    let format = self.plan().format_for(&name, d);
                    let Some(t) = model.tensors.get_mut(&name) else { continue };
                    let rows = t.shape[0];
                    let mut v = t.to_f32(&name)?;
                    let (b, a) = clip::clip_weights(&mut v, rows, d, format, h);
                    t.data = TensorData::F32(v);
                    tally.clip(short, b, a);
                }
            }
            if self.options.quantize {
                for short in linears {
                    let name = format!("blk.{li}.{short}.weight");
                    if self.ignored(&name) {
                        continue;
                    }
                    let Some(t) = model.tensors.get_mut(&name) else { continue };
                    let d = t.row_len();
                    let format = self.plan().format_for(&name, d);
                    let v = t.to_f32(&name)?;
                    t.data = TensorData::Quantized(quantize(&v, d, format, false));
                }
            }
            reload(model, &mut block, li)?;
            for (n, x) in &mut hidden {
                block.run(x, *n).map_err(runtime_error)?;
            }
            for (name, from, old) in before.drain(..) {
                let Some(t) = model.tensors.get(&name) else { continue };
                let now = t.to_f32(&name)?;
                outcome.changed.push(TensorChange { tensor: name, from, to: t.format_name(), rel_error: rel_error(&old, &now) });
            }
            (cx.progress)(li as u64 + 1, c.n_layers as u64);
        }
        outcome.notes = tally.lines();
        outcome.notes.push(format!(
            "{} calibration sequences; peak RSS {:.0} MiB; rel_error compares each weight matrix with its unscaled original, so it includes the (exact) folding",
            cal.sequences.len(),
            edgeforge_core::process::peak_rss_bytes() as f64 / (1u64 << 20) as f64
        ));
        Ok(outcome)
    }
}

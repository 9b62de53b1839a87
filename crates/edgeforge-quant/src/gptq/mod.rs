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
mod lazy;
mod refit;
mod solve;

use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use edgeforge_core::pass::{CalibrationData, Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::scheme::Scheme;

use crate::budget::{Budget, Calibrated, MeasureOptions};
use edgeforge_core::{Model, ModelConfig, TensorData};
use edgeforge_runtime::{layer_from_model, Block, BlockDims, RuntimeError};

pub use hessian::{Hessian, WorkSeconds};
pub use solve::{gptq_matrix, gptq_scheme, SolveOptions};

use crate::options::{default_ignore, Bits, FormatOverride, FormatPlan, GroupSize, SchemeName, Target, TensorGlob};
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
    /// Bits per weight of our integer grids: 3, 4 or 8 (with `group_size`); or set `format` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<Bits>,
    /// Elements per scale along a row: 32, 64, 128, 256 or `per-channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<GroupSize>,
    /// A ggml block type to quantize into directly (`q4_0`, `q4_1`, `iq4_nl`, `q5_0`, `q5_1`, `q8_0`,
    /// `q4_k`, `q5_k`, `q6_k`): GPTQ then picks codes on that format's own grid (IQ4_NL's non-linear levels,
    /// K-quants' two-level scales), so the GGUF holds exactly what GPTQ chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SchemeName>,
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
    /// Globs over GGUF tensor names left as they are (default: the embedding and output head, unless a
    /// `budget` is set: then the budget chooses their format too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<TensorGlob>>,
    /// Mixed precision under a byte budget: `{bytes: N}` (the GGUF file) or `{bits_per_weight: X}`; each
    /// tensor's format is chosen from `candidates` by measured sensitivity (crates/edgeforge-quant/src/budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Formats a budget chooses from (K-quants fall back as llama-quantize does on rows that are not a
    /// multiple of 256).
    #[serde(default = "default_candidates")]
    pub candidates: Vec<SchemeName>,
    /// Calibration sequences (their first 256 tokens) the budget's sensitivity measurement runs on.
    #[serde(default = "default_sensitivity_samples")]
    pub sensitivity_samples: usize,
}

fn default_candidates() -> Vec<SchemeName> {
    [Scheme::Q4_0, Scheme::IQ4_NL, Scheme::Q4_1, Scheme::Q5_0, Scheme::Q5_1, Scheme::Q6_K, Scheme::Q8_0].into_iter().map(SchemeName).collect()
}

fn default_sensitivity_samples() -> usize {
    4
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
            bits: self.options.bits.unwrap_or(Bits::FOUR),
            group_size: self.options.group_size.unwrap_or(GroupSize::Elements(32)),
            symmetric: self.options.symmetric,
            overrides: &self.options.overrides,
            scheme: self.options.format.map(|f| f.0),
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

    fn ignore(&self) -> Vec<glob::Pattern> {
        match &self.options.ignore {
            Some(globs) => globs.iter().map(TensorGlob::pattern).collect(),
            None if self.options.budget.is_some() => Vec::new(),
            None => default_ignore().iter().map(TensorGlob::pattern).collect(),
        }
    }

    /// GPTQ on the named projections of block `li` with their shared input Hessian, in the model.
    fn quantize_projections(&self, model: &mut Model, li: usize, names: &[&str], hessian: &Hessian, plan: &Allocation, outcome: &mut PassOutcome) -> Result<(), PassError> {
        for short in names {
            self.quantize_tensor(model, &format!("blk.{li}.{short}.weight"), hessian, plan, outcome)?;
        }
        Ok(())
    }

    /// GPTQ on one tensor with the Hessian of its inputs, into the budget's choice or the plan's target.
    /// A tensor the budget keeps in the format it is already stored in is left bit for bit as it is.
    fn quantize_tensor(&self, model: &mut Model, name: &str, hessian: &Hessian, plan: &Allocation, outcome: &mut PassOutcome) -> Result<(), PassError> {
        let name = name.to_owned();
        if plan.ignore.iter().any(|p| p.matches(&name)) {
            return Ok(());
        }
        {
            let Some(tensor) = model.tensors.get_mut(&name) else { return Ok(()) };
            let (rows, cols) = (tensor.shape[0], tensor.row_len());
            let target = plan.target(self, &name, cols);
            if keeps(target, &tensor.data) {
                let f = tensor.format_name();
                outcome.changed.push(TensorChange { tensor: name, from: f.clone(), to: f, rel_error: 0.0 });
                return Ok(());
            }
            if cols != hessian.width {
                return Err(PassError::Tensor { tensor: name, message: format!("rows of {cols} but inputs of width {}", hessian.width) });
            }
            let values = tensor.to_f32(&name)?;
            let mut h = hessian.matrix();
            let (data, note) = solve_target(&values, rows, cols, &mut h, target, self.solve_options())
                .map_err(|message| PassError::Tensor { tensor: name.clone(), message })?;
            if let Some(n) = note {
                outcome.notes.push(format!("{name}: {n}"));
            }
            let from = tensor.format_name();
            tensor.data = data;
            let err = rel_error(&values, &tensor.to_f32(&name)?);
            outcome.changed.push(TensorChange { tensor: name, from, to: tensor.format_name(), rel_error: err });
        }
        Ok(())
    }
}

/// What the byte budget decided (nothing without a budget), and the tensors the pass leaves alone.
struct Allocation {
    chosen: BTreeMap<String, Scheme>,
    ignore: Vec<glob::Pattern>,
    calibrated: Option<Calibrated>,
    predicted_kl: f64,
}

impl Allocation {
    /// The target of tensor `name`: the budget's choice, else the pass's plan.
    fn target(&self, pass: &Gptq, name: &str, cols: usize) -> Target {
        match self.chosen.get(name) {
            Some(&s) => Target::Scheme(s),
            None => pass.plan().target_for(name, cols),
        }
    }

    /// Whether GPTQ has anything to solve among the projections `names` of block `li`: not when each is
    /// ignored or kept as it is stored. Then their Hessians are not accumulated at all.
    fn solves(&self, pass: &Gptq, model: &Model, li: usize, names: &[&str]) -> bool {
        names.iter().any(|short| {
            let name = format!("blk.{li}.{short}.weight");
            let ignored = self.ignore.iter().any(|p| p.matches(&name));
            !ignored && model.tensors.get(&name).is_some_and(|t| !keeps(self.target(pass, &name, t.row_len()), &t.data))
        })
    }
}

/// A tensor already stored in exactly the target block type is kept bit for bit.
fn keeps(target: Target, data: &TensorData) -> bool {
    matches!((target, data), (Target::Scheme(s), TensorData::Blocks { dtype, .. }) if *dtype == s.ggml())
}

const PROJECTIONS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

impl Gptq {
    /// The tensors a budget covers: every block projection, the embedding and the output head, less `ignore`.
    fn budgeted(&self, model: &Model, ignore: &[glob::Pattern]) -> Vec<String> {
        model
            .tensors
            .iter()
            .filter(|(name, t)| {
                let projection = crate::budget::parse_block_tensor(name).is_some_and(|(_, k)| PROJECTIONS.contains(&k));
                t.shape.len() == 2 && (projection || *name == "token_embd.weight" || *name == "output.weight")
            })
            .map(|(name, _)| name.clone())
            .filter(|name| !ignore.iter().any(|p| p.matches(name)))
            .collect()
    }

    /// Measures sensitivity and solves the budget's knapsack; the choices go into `plan`.
    fn allocate_budget(&self, model: &mut Model, cal: &CalibrationData, budget: Budget, plan: &mut Allocation, outcome: &mut PassOutcome, cx: &PassContext<'_>) -> Result<(), PassError> {
        let err = |message: String| PassError::Tensor { tensor: "(budget)".into(), message };
        let names = self.budgeted(model, &plan.ignore);
        let n_params: u64 = names.iter().filter_map(|n| model.tensors.get(n)).map(|t| t.n_elems() as u64).sum();
        let overhead = crate::budget::gguf_overhead(model, &names);
        let available = match (budget.bytes, budget.bits_per_weight) {
            (Some(bytes), None) => bytes.checked_sub(overhead).ok_or_else(|| {
                err(format!("budget.bytes = {bytes} is less than the {overhead} bytes the file needs besides the quantized tensors"))
            })?,
            (None, Some(bpw)) => (bpw * n_params as f64 / 8.0) as u64,
            _ => return Err(err(budget.issue().unwrap_or_default())),
        };
        let candidates: Vec<Scheme> = self.options.candidates.iter().map(|c| c.0).collect();
        let mopts = MeasureOptions { sequences: self.options.sensitivity_samples, seq_len: 256, positions: 128, group_layers: 5 };
        let status = |d: u64, t: u64| (cx.status)(format!("measuring sensitivity: group {d}/{t}"));
        let calibrated = crate::budget::measure(model, &cal.sequences, &names, &candidates, mopts, &|| cx.check_cancel(), &status)?;
        let picks = crate::budget::allocate(&calibrated.choices, available).map_err(err)?;
        let mut counts: BTreeMap<Scheme, usize> = BTreeMap::new();
        let mut bytes = 0u64;
        for (tc, &ci) in calibrated.choices.iter().zip(&picks) {
            let c = &tc.choices[ci];
            plan.chosen.insert(tc.tensor.clone(), c.scheme);
            plan.predicted_kl += c.predicted_kl;
            bytes += c.bytes;
            *counts.entry(c.scheme).or_default() += 1;
        }
        let mix: Vec<String> = counts.iter().map(|(s, n)| format!("{} ×{n}", s.ggml())).collect();
        outcome.notes.push(format!(
            "budget: {available} bytes for {} tensors ({:.3} bits/weight) besides {overhead} bytes of metadata and other tensors (an upper bound); chose {} ({bytes} bytes, {:.3} bits/weight); sensitivity measured on {} groups ({} calibration sequences × {} tokens, KL at the last {} positions of each)",
            names.len(),
            available as f64 * 8.0 / n_params.max(1) as f64,
            mix.join(", "),
            bytes as f64 * 8.0 / n_params.max(1) as f64,
            calibrated.groups,
            mopts.sequences.min(cal.sequences.len()),
            mopts.seq_len,
            mopts.positions
        ));
        plan.calibrated = Some(calibrated);
        Ok(())
    }

    /// The embedding / output head: GPTQ on the Hessian of the output norm of the last block's outputs
    /// (the head's input). An untied embedding is only looked up, so it is rounded to nearest instead.
    fn quantize_head(&self, model: &mut Model, hidden: &[(usize, Vec<f32>)], plan: &Allocation, outcome: &mut PassOutcome) -> Result<(), PassError> {
        let tied = !model.tensors.contains_key("output.weight");
        let head = if tied { "token_embd.weight" } else { "output.weight" };
        if !model.tensors.contains_key(head) || plan.ignore.iter().any(|p| p.matches(head)) {
            return Ok(());
        }
        let c = &model.config;
        let norm = model.tensor_f32("output_norm.weight", &[c.n_embd])?;
        let mut h = Hessian::new(c.n_embd);
        let normed = |i: usize| -> Result<Vec<f32>, PassError> {
            let (n, x) = &hidden[i];
            let mut normed = vec![0f32; n * c.n_embd];
            edgeforge_runtime::rms_norm(x, &norm, c.rms_eps, &mut normed);
            Ok(normed)
        };
        h.add_each(hidden.len(), normed)?;
        self.quantize_tensor(model, head, &h, plan, outcome)?;
        if !tied && !plan.ignore.iter().any(|p| p.matches("token_embd.weight")) {
            let name = "token_embd.weight";
            let Some(t) = model.tensors.get_mut(name) else { return Ok(()) };
            let row_len = t.row_len();
            let target = plan.chosen.get(name).copied().map(Target::Scheme).unwrap_or_else(|| self.plan().target_for(name, row_len));
            let values = t.to_f32(name)?;
            let from = t.format_name();
            t.data = match target {
                Target::Scheme(s) => TensorData::Blocks { dtype: s.ggml(), bytes: s.quantize_rows(&values, row_len, None).into() },
                Target::Grid(f) => TensorData::Quantized(crate::rtn::quantize(&values, row_len, f, self.options.clip_search)),
            };
            let err = rel_error(&values, &t.to_f32(name)?);
            outcome.changed.push(TensorChange { tensor: name.into(), from, to: t.format_name(), rel_error: err });
        }
        Ok(())
    }
}

/// GPTQ of one matrix into its target: one of our integer grids, or a ggml block scheme.
pub fn solve_target(values: &[f32], rows: usize, cols: usize, h: &mut [f64], target: Target, opts: SolveOptions) -> Result<(TensorData, Option<String>), String> {
    match target {
        Target::Grid(f) => gptq_matrix(values, rows, cols, h, f, opts).map(|(q, n)| (TensorData::Quantized(q), n)),
        Target::Scheme(s) => gptq_scheme(values, rows, cols, h, s, opts).map(|(bytes, n)| (TensorData::Blocks { dtype: s.ggml(), bytes: bytes.into() }, n)),
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
            // The family's embedding scale (Gemma's √n_embd), as the runtime's forward applies it: the
            // calibration activations are the real model's.
            if c.features.scale_embeddings {
                let scale = (e as f32).sqrt();
                x.iter_mut().for_each(|v| *v *= scale);
            }
            Ok((s.len(), x))
        })
        .collect()
}

/// The scratch file a streamed model's quantized blocks go to (created on first use, in the pass's work
/// folder or the system's temporary folder), so the output leaves the heap block by block as the input does.
#[derive(Default)]
struct Spill(Option<edgeforge_core::SpillFile>);

impl Spill {
    fn block(&mut self, model: &mut Model, li: usize, dir: Option<&std::path::Path>) -> Result<(), PassError> {
        let io = |e: std::io::Error| PassError::Tensor { tensor: format!("blk.{li}"), message: format!("spilling the quantized block to a scratch file: {e}") };
        if self.0.is_none() {
            let dir = dir.map(std::path::Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
            std::fs::create_dir_all(&dir).map_err(io)?;
            self.0 = Some(edgeforge_core::SpillFile::new_in(&dir).map_err(io)?);
        }
        match &mut self.0 {
            Some(file) => model.spill_block(li, file).map_err(io),
            None => Ok(()),
        }
    }
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

impl Stopwatch {
    /// `wall` seconds of work that produced inputs and multiplied them, shared out in the ratio of the
    /// tasks' own seconds (which run side by side, so their sum exceeds the wall time).
    fn split(&mut self, wall: f64, work: WorkSeconds) {
        let total = work.input + work.product;
        if total > 0.0 {
            self.forward_s += wall * work.input / total;
            self.hessian_s += wall * work.product / total;
        }
    }
}

/// Σ xᵀx of `f(sequence)` over every calibration sequence; the sequences run a few at a time in parallel
/// (`f` should run on its calling thread, e.g. a `Block::single_threaded`), summed in their order.
fn hessian_of(
    width: usize,
    hidden: &[(usize, Vec<f32>)],
    clock: &mut Stopwatch,
    f: impl Fn(&[f32], usize) -> Result<Vec<f32>, RuntimeError> + Sync,
) -> Result<Hessian, PassError> {
    let mut h = Hessian::new(width);
    let t = std::time::Instant::now();
    let work = h.add_each(hidden.len(), |i| f(&hidden[i].1, hidden[i].0)).map_err(runtime_error)?;
    clock.split(t.elapsed().as_secs_f64(), work);
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
        if self.options.format.is_none() && (self.options.bits.is_none() || self.options.group_size.is_none()) {
            issues.push(OptionIssue {
                field: "format",
                message: "gptq needs a target: `format` (a ggml block type such as q4_0 or iq4_nl) or `bits` and `group_size`".into(),
            });
        }
        if let Some(issue) = self.options.budget.and_then(|b| b.issue()) {
            issues.push(OptionIssue { field: "budget", message: issue });
        }
        if self.options.budget.is_some() && self.options.candidates.is_empty() {
            issues.push(OptionIssue { field: "candidates", message: "a budget needs at least one candidate format".into() });
        }
        if self.options.block_size == 0 {
            issues.push(OptionIssue { field: "block_size", message: "block_size must be positive".into() });
        }
        issues
    }

    fn estimate(&self, _config: &ModelConfig, n_params: u64) -> Estimate {
        // 72 s for SmolLM2-135M with 128 x 512 calibration tokens on 2 cores (reports/bench/gptq.md).
        Estimate { seconds: n_params as f64 / 135e6 * 75.0, peak_bytes: n_params + (700 << 20), note: None }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        let cal = cx.calibration.filter(|c| !c.sequences.is_empty()).ok_or_else(|| PassError::Tensor {
            tensor: "(calibration)".into(),
            message: "gptq needs calibration sequences; add a `calibration` section to the recipe".into(),
        })?;
        let c = model.config.clone();
        let dims = BlockDims { n_embd: c.n_embd, head_dim: c.head_dim, rope_base: c.rope_base, rms_eps: c.rms_eps };
        let mut outcome = PassOutcome::default();
        let mut plan = Allocation { chosen: BTreeMap::new(), ignore: self.ignore(), calibrated: None, predicted_kl: 0.0 };
        if let Some(budget) = self.options.budget {
            self.allocate_budget(model, cal, budget, &mut plan, &mut outcome, cx)?;
        }
        let mut hidden = embed(model, &cal.sequences)?;
        let mut clock = Stopwatch::default();
        const STEPS: u64 = 4;
        let total = c.n_layers as u64 * STEPS;
        let reload = |model: &Model, block: &mut Block, li: usize| -> Result<(), PassError> {
            block.set_weights(layer_from_model(model, li)?).map_err(runtime_error)
        };
        // One buffer per sequence for the heads' outputs, then the SwiGLU states, of every layer: kept, not
        // freed and faulted in again per layer (403 MB of states for 128 x 512 tokens).
        let mut per_sequence: Vec<Vec<f32>> = vec![Vec::new(); hidden.len()];
        let mut spill = Spill::default();
        for li in 0..c.n_layers {
            let streamed = model.block_is_mapped(li);
            // Sequences run side by side, each block step on one thread: no synchronisation inside the
            // products, and the serial parts (softmax, norms) run in parallel too. Same bits as the pool.
            let mut block = Block::new(layer_from_model(model, li)?, dims).map_err(runtime_error)?.single_threaded();
            let step = |k: u64| (cx.progress)(li as u64 * STEPS + k, total);

            cx.check_cancel()?;
            let qkv = ["attn_q", "attn_k", "attn_v"];
            let h = if plan.solves(self, model, li, &qkv) { hessian_of(c.n_embd, &hidden, &mut clock, |x, n| block.attn_norm(x, n))? } else { Hessian::new(0) };
            Stopwatch::time(&mut clock.solve_s, || self.quantize_projections(model, li, &["attn_q", "attn_k", "attn_v"], &h, &plan, &mut outcome))?;
            reload(model, &mut block, li)?;
            step(1);

            cx.check_cancel()?;
            let heads = &mut per_sequence;
            Stopwatch::time(&mut clock.forward_s, || {
                heads.par_iter_mut().zip(&hidden).try_for_each(|(out, (n, x))| block.attention_heads_into(&block.attn_norm(x, *n)?, *n, out))
            })
            .map_err(runtime_error)?;
            let width = block.weights().n_heads * c.head_dim;
            let mut h = Hessian::new(if plan.solves(self, model, li, &["attn_output"]) { width } else { 0 });
            Stopwatch::time(&mut clock.hessian_s, || h.add_all(heads));
            Stopwatch::time(&mut clock.solve_s, || self.quantize_projections(model, li, &["attn_output"], &h, &plan, &mut outcome))?;
            reload(model, &mut block, li)?;
            step(2);

            cx.check_cancel()?;
            Stopwatch::time(&mut clock.forward_s, || {
                hidden.par_iter_mut().zip(&*heads).try_for_each(|((n, x), heads)| block.add_attention_output(heads, *n, x))
            })
            .map_err(runtime_error)?;
            let gate_up = ["ffn_gate", "ffn_up"];
            let h = if plan.solves(self, model, li, &gate_up) { hessian_of(c.n_embd, &hidden, &mut clock, |x, n| block.ffn_norm(x, n))? } else { Hessian::new(0) };
            Stopwatch::time(&mut clock.solve_s, || self.quantize_projections(model, li, &["ffn_gate", "ffn_up"], &h, &plan, &mut outcome))?;
            reload(model, &mut block, li)?;
            step(3);

            cx.check_cancel()?;
            let states = &mut per_sequence;
            Stopwatch::time(&mut clock.forward_s, || {
                states.par_iter_mut().zip(&hidden).try_for_each(|(out, (n, x))| block.ffn_hidden_into(&block.ffn_norm(x, *n)?, *n, out))
            })
            .map_err(runtime_error)?;
            let mut h = Hessian::new(if plan.solves(self, model, li, &["ffn_down"]) { block.weights().n_ff } else { 0 });
            Stopwatch::time(&mut clock.hessian_s, || h.add_all(states));
            Stopwatch::time(&mut clock.solve_s, || self.quantize_projections(model, li, &["ffn_down"], &h, &plan, &mut outcome))?;
            reload(model, &mut block, li)?;
            Stopwatch::time(&mut clock.forward_s, || {
                hidden.par_iter_mut().zip(&*states).try_for_each(|((n, x), state)| block.add_ffn_output(state, *n, x))
            })
            .map_err(runtime_error)?;
            drop(block);
            if streamed {
                spill.block(model, li, cx.work_dir)?;
            }
            step(4);
        }
        Stopwatch::time(&mut clock.solve_s, || self.quantize_head(model, &hidden, &plan, &mut outcome))?;
        if let Some(cb) = &plan.calibrated {
            let measured = crate::budget::measured_kl(model, cb)?;
            outcome.notes.push(format!(
                "budget: predicted KL divergence {:.5} (sum over tensors), measured {measured:.5} on the same calibration positions",
                plan.predicted_kl
            ));
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

//! The `tune-scales` pass: quantization-aware tuning of block scales after a quantizing pass (GPTQ or RTN
//! with `format:`). The integer codes stay as they are; the per-block f16 scale `d` (and the min `m` of
//! Q4_1/Q5_1) of every selected block tensor trains by distillation against the recipe's input model on
//! the calibration text, then is rounded to f16 and the block re-encoded with the same codes, so the GGUF
//! written afterwards holds the tuned fields.
//!
//! Only the 32-element formats with plain f16 fields are tuned (Q4_0, Q4_1, IQ4_NL, Q5_0, Q5_1, Q8_0).
//! K-quant tensors (Q4_K, Q5_K, Q6_K) are left untouched: their sub-block scales are 6-bit (8-bit for Q6_K)
//! multiples of a super-block f16, so a tuned scale would need a second rounding step.
//!
//! Parametrization: block k of a row dequantizes level ℓ to `d0·(1 + u)·ℓ + m0 + d0·v`, with `u`, `v`
//! trained from 0 (see [`BlockScales`]); the learning rate is therefore relative to each block's scale.

use burn::module::{Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use edgeforge_core::blocks;
use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::scheme::{BlockFit, Scheme};
use edgeforge_core::{Model, ModelConfig, TensorData as IrData};
use edgeforge_runtime::{weights_from_model_as, LlamaRuntime, WeightStorage};
use half::f16;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::data::DataOrder;
use crate::error::{DistillError, Result};
use crate::load::{llama_from_model, Trainable};
use crate::loss::{kl_loss, teacher_log_probs, TeacherTargets};
use crate::model::{BlockScales, Linear, Llama, Positions, LINEARS};
use crate::options::BackendChoice;
use crate::schedule::Schedule;
use crate::train::{device, token_tensor};

/// Options of `tune-scales`: after a quantizing pass, train the per-block scales (and mins) of the block
/// tensors with their codes fixed, by distillation (KL) against the recipe's input model on the
/// calibration text. The last `eval_samples` calibration sequences are held out to measure the KL before
/// and after.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TuneScalesOptions {
    /// Optimizer (Adam) steps, each on `batch_size` sequences.
    #[serde(default = "default_steps")]
    pub steps: u64,
    /// Peak learning rate, relative to each block's scale (0.001 moves a scale by about 0.1% per step);
    /// short warmup, cosine decay to a tenth.
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Use only the first this many calibration sequences (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    /// Crop calibration sequences to this many tokens (default: use them whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// Calibration sequences held out to measure the KL before and after (default: a quarter, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_samples: Option<usize>,
    /// Glob patterns of the tensors to tune (default: every block projection, `token_embd` and `output`
    /// stored in a 32-element block format).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<String>,
    /// Also tune the mins of Q4_1/Q5_1 blocks.
    #[serde(default = "default_true")]
    pub tune_mins: bool,
    /// Keep the tuned scales even when the held-out KL got worse (default: restore the original blocks).
    #[serde(default)]
    pub keep_if_worse: bool,
    #[serde(default)]
    pub backend: BackendChoice,
}

fn default_steps() -> u64 {
    50
}
fn default_lr() -> f64 {
    1e-3
}
fn default_batch() -> usize {
    2
}
fn default_true() -> bool {
    true
}

impl Default for TuneScalesOptions {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            lr: default_lr(),
            batch_size: default_batch(),
            samples: None,
            seq_len: None,
            eval_samples: None,
            tensors: Vec::new(),
            tune_mins: true,
            keep_if_worse: false,
            backend: BackendChoice::Flex,
        }
    }
}

impl TuneScalesOptions {
    pub fn issues(&self) -> Vec<OptionIssue> {
        let mut out = Vec::new();
        let mut bad = |field: &'static str, ok: bool, message: String| {
            if !ok {
                out.push(OptionIssue { field, message });
            }
        };
        bad("lr", self.lr.is_finite() && self.lr > 0.0 && self.lr < 1.0, "must be in (0, 1)".into());
        bad("batch_size", self.batch_size > 0, "must be positive".into());
        bad("samples", self.samples.is_none_or(|s| s > 0), "must be positive".into());
        bad("seq_len", self.seq_len.is_none_or(|s| s >= 2), "must be at least 2".into());
        bad("eval_samples", self.eval_samples.is_none_or(|s| s > 0), "must be positive".into());
        for p in &self.tensors {
            if let Err(e) = glob::Pattern::new(p) {
                bad("tensors", false, format!("`{p}` is not a glob pattern: {e}"));
            }
        }
        out
    }

    fn matches(&self, name: &str) -> bool {
        self.tensors.is_empty() || self.tensors.iter().any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(name)))
    }
}

pub struct TuneScales {
    pub options: TuneScalesOptions,
}

impl TuneScales {
    pub fn new(options: TuneScalesOptions) -> Self {
        Self { options }
    }
}

/// The linear tensors the burn model holds, in its order.
fn linear_names(model: &Model) -> Vec<String> {
    let mut names = vec!["token_embd.weight".to_owned()];
    for l in 0..model.config.n_layers {
        for s in LINEARS {
            names.push(format!("blk.{l}.{s}.weight"));
        }
    }
    if model.tensors.contains_key("output.weight") {
        names.push("output.weight".into());
    }
    names
}

/// One block tensor as fields and codes.
struct Decoded {
    name: String,
    scheme: Scheme,
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
    d: Vec<f16>,
    m: Vec<f16>,
    original: Vec<u8>,
}

fn decode_tensor(name: &str, shape: &[usize], scheme: Scheme, bytes: &[u8]) -> Result<Decoded> {
    let (rows, cols) = match shape {
        &[r, c] if c % 32 == 0 => (r, c),
        _ => return Err(DistillError::Shape { tensor: name.into(), message: format!("shape {shape:?} is not rows of whole 32-element blocks") }),
    };
    let bb = scheme.ggml().block_bytes();
    if bytes.len() != rows * cols / 32 * bb {
        return Err(DistillError::Shape { tensor: name.into(), message: format!("{} bytes for {rows}×{cols} {scheme}", bytes.len()) });
    }
    let n = rows * cols / 32;
    let (mut codes, mut d, mut m) = (Vec::with_capacity(rows * cols), Vec::with_capacity(n), Vec::with_capacity(n));
    for blk in bytes.chunks_exact(bb) {
        let (fit, c) = scheme.decode_block(blk).ok_or_else(|| DistillError::Shape { tensor: name.into(), message: format!("{scheme} block does not decode") })?;
        codes.extend(c);
        d.push(fit.d);
        m.push(fit.m);
    }
    Ok(Decoded { name: name.into(), scheme, rows, cols, codes, d, m, original: bytes.to_vec() })
}

struct Ids(u64);

impl Ids {
    fn param(&mut self, values: Vec<f32>, shape: [usize; 2], device: &Device, train: bool) -> Param<Tensor<2>> {
        self.0 += 1;
        Param::initialized(ParamId::from(self.0), Tensor::<2>::from_data(TensorData::new(values, shape), device)).set_require_grad(train)
    }
}

/// Levels (frozen, `[rows, cols]`) and the block scales of `t`.
fn quant_params(t: &Decoded, tune_mins: bool, device: &Device, ids: &mut Ids) -> (Param<Tensor<2>>, BlockScales) {
    let nb = t.cols / 32;
    let levels: Vec<f32> = t.codes.iter().map(|&c| t.scheme.level(c)).collect();
    let d0: Vec<f32> = t.d.iter().map(|v| v.to_f32()).collect();
    let m0: Vec<f32> = if t.scheme.info().offset { t.m.iter().map(|v| v.to_f32()).collect() } else { vec![0.0; d0.len()] };
    let zeros = vec![0f32; d0.len()];
    let levels = ids.param(levels, [t.rows, t.cols], device, false);
    let scales = BlockScales {
        d0: ids.param(d0, [t.rows, nb], device, false),
        m0: ids.param(m0, [t.rows, nb], device, false),
        u: ids.param(zeros.clone(), [t.rows, nb], device, true),
        // Formats without a min still get their (zero) offset applied when `v` is absent: `apply` skips it.
        v: (t.scheme.info().offset).then(|| ids.param(zeros, [t.rows, nb], device, tune_mins)),
        block: 32,
    };
    (levels, scales)
}

/// The block linear or output head `name` (`blk.N.attn_q.weight`, `output.weight`).
fn linear_mut<'a>(llama: &'a mut Llama, name: &str) -> Option<&'a mut Linear> {
    if name == "output.weight" {
        return llama.output.as_mut();
    }
    let (l, s) = name.strip_prefix("blk.")?.strip_suffix(".weight")?.split_once('.')?;
    llama.blocks.get_mut(l.parse::<usize>().ok()?)?.linear_mut(s)
}

fn scales_of<'a>(llama: &'a Llama, name: &str) -> Option<&'a BlockScales> {
    if name == "token_embd.weight" {
        return llama.embd_quant.as_ref();
    }
    if name == "output.weight" {
        return llama.output.as_ref()?.quant.as_ref();
    }
    let (l, s) = name.strip_prefix("blk.")?.strip_suffix(".weight")?.split_once('.')?;
    llama.blocks.get(l.parse::<usize>().ok()?)?.linear(s)?.quant.as_ref()
}

fn to_vec(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| DistillError::Data(format!("{e:?}")))
}

fn rt_err(e: impl std::fmt::Display) -> DistillError {
    DistillError::Data(format!("runtime: {e}"))
}

/// Log-softmax of each `vocab`-wide row, in f64.
fn log_softmax_rows(logits: &[f32], vocab: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(vocab) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let lse = f64::from(max) + row.iter().map(|&x| f64::from(x - max).exp()).sum::<f64>().ln();
        out.extend(row.iter().map(|&x| f64::from(x) - lse));
    }
    out
}

/// The teacher's log-probabilities on `sequences`, for [`mean_kl`].
pub fn runtime_log_probs(model: &Model, sequences: &[&[u32]]) -> Result<Vec<Vec<f64>>> {
    let rt = LlamaRuntime::new(weights_from_model_as(model, WeightStorage::Packed)?).map_err(rt_err)?;
    let vocab = rt.vocab_size();
    sequences
        .iter()
        .map(|s| {
            let mut cache = rt.new_cache(s.len());
            let logits = rt.forward(&mut cache, s, 0).map_err(rt_err)?;
            Ok(log_softmax_rows(&logits, vocab))
        })
        .collect()
}

/// Mean over every position of KL(teacher ‖ model), with the model run by the runtime.
pub fn mean_kl(teacher: &[Vec<f64>], model: &Model, sequences: &[&[u32]]) -> Result<f64> {
    let student = runtime_log_probs(model, sequences)?;
    let vocab = model.config.vocab_size.max(1);
    let (mut sum, mut n) = (0f64, 0usize);
    for (t, s) in teacher.iter().zip(&student) {
        for (tr, sr) in t.chunks_exact(vocab).zip(s.chunks_exact(vocab)) {
            sum += tr.iter().zip(sr).map(|(&a, &b)| a.exp() * (a - b)).sum::<f64>();
            n += 1;
        }
    }
    Ok(sum / n.max(1) as f64)
}

/// Block tensors the options select: (tunable, K-quant names left alone).
fn select(model: &Model, o: &TuneScalesOptions) -> Result<(Vec<Decoded>, Vec<String>)> {
    let (mut tuned, mut skipped) = (Vec::new(), Vec::new());
    for name in linear_names(model) {
        let Some(t) = model.tensors.get(&name) else { continue };
        let IrData::Blocks { dtype, bytes } = &t.data else { continue };
        if !o.matches(&name) {
            continue;
        }
        match Scheme::plain_f16_of(*dtype) {
            Some(s) => tuned.push(decode_tensor(&name, &t.shape, s, bytes)?),
            None if Scheme::ALL.iter().any(|s| s.ggml() == *dtype) => skipped.push(name),
            None => {}
        }
    }
    Ok((tuned, skipped))
}

/// Re-encode `t` with tuned `scale`/`offset` (`[rows·cols/32]`, f32) rounded to f16 and the same codes,
/// checking that the block dequantizer reproduces `f16(scale)·level + f16(offset)` bit for bit. Returns
/// the bytes and how many blocks' stored fields changed.
fn reencode(t: &Decoded, scale: &[f32], offset: Option<&[f32]>) -> Result<(Vec<u8>, usize)> {
    let bb = t.scheme.ggml().block_bytes();
    let mut bytes = Vec::with_capacity(t.original.len());
    let mut fits = Vec::with_capacity(t.d.len());
    let mut changed = 0;
    for (k, codes) in t.codes.chunks_exact(32).enumerate() {
        let d = f16::from_f32(scale[k]);
        let d = if d.is_finite() { d } else { t.d[k] };
        let m = match offset {
            Some(o) if f16::from_f32(o[k]).is_finite() => f16::from_f32(o[k]),
            _ => t.m[k],
        };
        if d != t.d[k] || m != t.m[k] {
            changed += 1;
        }
        let fit = BlockFit::plain(d, m);
        t.scheme.encode(&fit, codes, &mut bytes);
        fits.push(fit);
    }
    if bytes.len() != t.original.len() || bytes.len() != fits.len() * bb {
        return Err(DistillError::Shape { tensor: t.name.clone(), message: "re-encoded size differs".into() });
    }
    let mut decoded = vec![0f32; t.codes.len()];
    blocks::dequantize(t.scheme.ggml(), &bytes, &mut decoded).map_err(|e| DistillError::Data(format!("{}: {e}", t.name)))?;
    for (i, (&v, &c)) in decoded.iter().zip(&t.codes).enumerate() {
        let want = t.scheme.value(&fits[i / 32], 0, c);
        if v.to_bits() != want.to_bits() {
            return Err(DistillError::Shape { tensor: t.name.clone(), message: format!("element {i} decodes to {v}, expected {want}") });
        }
    }
    Ok((bytes, changed))
}

/// ‖a − b‖ / ‖a‖ of two dequantized byte strings.
fn rel_change(ty: edgeforge_core::GgmlType, a: &[u8], b: &[u8], n: usize) -> f64 {
    let (mut x, mut y) = (vec![0f32; n], vec![0f32; n]);
    if blocks::dequantize(ty, a, &mut x).is_err() || blocks::dequantize(ty, b, &mut y).is_err() {
        return f64::NAN;
    }
    let (mut diff, mut norm) = (0f64, 0f64);
    for (p, q) in x.iter().zip(&y) {
        diff += f64::from(p - q).powi(2);
        norm += f64::from(*p).powi(2);
    }
    if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    }
}

impl Pass for TuneScales {
    fn name(&self) -> &'static str {
        "tune-scales"
    }

    fn needs(&self) -> Needs {
        Needs { float_weights: false, calibration: true, original_model: true }
    }

    fn needs_quantized(&self) -> bool {
        true
    }

    fn effects(&self) -> Effects {
        Effects { weights_changed: true, quantizes: false, changes_shapes: false }
    }

    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }

    fn check(&self, config: &ModelConfig) -> Vec<OptionIssue> {
        let mut issues = self.options.issues();
        if let Some(s) = self.options.seq_len {
            if s > config.context_length && config.context_length > 0 {
                issues.push(OptionIssue { field: "seq_len", message: format!("{s} exceeds the model's context length {}", config.context_length) });
            }
        }
        if let Err(e) = device(self.options.backend) {
            issues.push(OptionIssue { field: "backend", message: e.to_string() });
        }
        issues
    }

    fn estimate_scales_with_calibration(&self) -> bool {
        false // steps x batch x seq_len of its own options
    }

    fn estimate(&self, config: &ModelConfig, n_params: u64) -> Estimate {
        // ~8 flops per parameter per token (student forward + backward, teacher forward) at ~70 GFLOP/s:
        // measured 613 s for 40 steps x 2 x 512 tokens on SmolLM2-135M (2 cores, with other work beside it).
        let seq = self.options.seq_len.unwrap_or(512) as u64;
        let tokens = self.options.steps * self.options.batch_size as u64 * seq;
        let seconds = 8.0 * n_params as f64 * tokens as f64 / 70e9;
        // Teacher and levels (f32), the rebuilt matrices and their gradients, plus burn's activations and
        // logits, which measured about twice this term (8.5 GB process peak for that run, 4.8 GB at 2 x 256).
        let act = 2 * (self.options.batch_size as u64 * seq) * (config.vocab_size as u64 * 16 + config.n_layers as u64 * config.n_embd as u64 * 64);
        Estimate { seconds, peak_bytes: n_params * 4 * 4 + act, note: None }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        Ok(run(&self.options, model, cx)?)
    }
}

fn run(o: &TuneScalesOptions, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome> {
    if let Some(issue) = o.issues().into_iter().next() {
        return Err(DistillError::Option { field: issue.field, message: issue.message });
    }
    let teacher = cx.original.ok_or(DistillError::Missing { what: "the recipe's input model as teacher" })?;
    let mut outcome = PassOutcome::default();

    // Text: the first `samples` calibration sequences, cropped; the last `eval_samples` held out.
    let all = cx.calibration.map(|c| c.sequences.as_slice()).unwrap_or_default();
    let all = &all[..o.samples.unwrap_or(usize::MAX).min(all.len())];
    let seq_len = o.seq_len.unwrap_or(usize::MAX).min(all.iter().map(Vec::len).max().unwrap_or(0));
    let seqs: Vec<&[u32]> = all.iter().filter(|s| s.len() >= seq_len).map(|s| &s[..seq_len]).collect();
    if seqs.is_empty() || seq_len < 2 {
        return Err(DistillError::Missing { what: "calibration sequences of at least 2 tokens (add a `calibration` section)" });
    }
    let (train_seqs, eval_seqs) = if seqs.len() == 1 {
        outcome.notes.push("only one calibration sequence: the KL below is measured on the training sequence itself".into());
        (seqs.clone(), seqs.clone())
    } else {
        let n_eval = o.eval_samples.unwrap_or((seqs.len() / 4).max(1)).min(seqs.len() - 1);
        let (a, b) = seqs.split_at(seqs.len() - n_eval);
        (a.to_vec(), b.to_vec())
    };

    let (tensors, skipped) = select(model, o)?;
    if tensors.is_empty() {
        return Err(DistillError::Option {
            field: "tensors",
            message: format!(
                "no selected tensor is stored in a format tune-scales can tune (q4_0, q4_1, iq4_nl, q5_0, q5_1, q8_0){}; quantize with `format:` first",
                if skipped.is_empty() { String::new() } else { format!(" ({} are K-quants, which this pass leaves alone)", skipped.len()) }
            ),
        });
    }

    // KL before, with the runtime on the held-out sequences.
    let teacher_lp = runtime_log_probs(teacher, &eval_seqs)?;
    let kl_before = mean_kl(&teacher_lp, model, &eval_seqs)?;
    cx.check_cancel().map_err(|_| DistillError::Cancelled)?;

    // The student: every weight frozen at its current (dequantized) value, the selected tensors as levels
    // with trainable block scales.
    let base = device(o.backend)?;
    let ad = base.clone().autodiff();
    let frozen = Trainable { embeddings: false, blocks: false };
    let teacher_llama = llama_from_model(teacher, &base, frozen)?;
    let mut student = llama_from_model(model, &ad, frozen)?;
    if teacher_llama.dims.vocab_size != student.dims.vocab_size {
        return Err(DistillError::Shape { tensor: "token_embd.weight".into(), message: "teacher and model vocabularies differ".into() });
    }
    let mut ids = Ids(1 << 40);
    for t in &tensors {
        let (levels, scales) = quant_params(t, o.tune_mins, &ad, &mut ids);
        if t.name == "token_embd.weight" {
            student.token_embd = levels;
            student.embd_quant = Some(scales);
        } else if let Some(lin) = linear_mut(&mut student, &t.name) {
            lin.weight = levels;
            lin.quant = Some(scales);
        }
    }

    let pos_base = Positions::new(seq_len, &teacher_llama, &base);
    let pos_ad = Positions::new(seq_len, &student, &ad);
    let mut optim: ModuleOptimizer = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.0).init();
    let schedule = Schedule { peak_lr: o.lr, warmup_steps: (o.steps / 10).min(5), total_steps: o.steps, min_frac: 0.1 };
    let mut order = DataOrder::new(train_seqs.len(), cx.seed);
    let started = std::time::Instant::now();
    let mut cursor = 0u64;
    let mut log = Vec::new();
    (cx.progress)(0, o.steps);
    for step in 0..o.steps {
        cx.check_cancel().map_err(|_| DistillError::Cancelled)?;
        let rows: Vec<&[u32]> = (0..o.batch_size as u64).map(|i| train_seqs[order.at(cursor + i)]).collect();
        cursor += o.batch_size as u64;
        let teacher_lp = teacher_log_probs(teacher_llama.forward(token_tensor(&rows, &base), &pos_base, false).logits, 1.0);
        let targets = TeacherTargets::Full(teacher_lp.autodiff());
        let out = student.forward(token_tensor(&rows, &ad), &pos_ad, false);
        let kl = kl_loss(out.logits, &targets, 1.0);
        let klv = f64::from(kl.clone().detach().into_scalar::<f32>());
        if !klv.is_finite() {
            return Err(DistillError::Diverged { step, loss: klv });
        }
        let grads = GradientsParams::from_grads(kl.backward(), &student);
        let lr = schedule.lr(step);
        student = optim.step(lr, student, grads);
        log.push(klv);
        (cx.progress)(step + 1, o.steps);
        let tps = ((step + 1) * (o.batch_size * seq_len) as u64) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        (cx.status)(format!("KL {klv:.4}, lr {lr:.2e}, {tps:.1} tok/s"));
    }
    let train_s = started.elapsed().as_secs_f64();

    // Round to f16 and re-encode with the same codes.
    let mut new_bytes = Vec::with_capacity(tensors.len());
    let (mut blocks_changed, mut blocks_total) = (0usize, 0usize);
    for t in &tensors {
        let s = scales_of(&student, &t.name).ok_or_else(|| DistillError::Shape { tensor: t.name.clone(), message: "lost its block scales".into() })?;
        let (scale, offset) = s.scale_offset();
        let scale = to_vec(scale.detach())?;
        let offset = offset.map(|o| to_vec(o.detach())).transpose()?;
        let (bytes, changed) = reencode(t, &scale, if o.tune_mins { offset.as_deref() } else { None })?;
        blocks_changed += changed;
        blocks_total += t.d.len();
        new_bytes.push(bytes);
    }
    let set = |model: &mut Model, t: &Decoded, bytes: Vec<u8>| {
        if let Some(e) = model.tensors.get_mut(&t.name) {
            e.data = IrData::Blocks { dtype: t.scheme.ggml(), bytes: bytes.into() };
        }
    };
    for (t, b) in tensors.iter().zip(&new_bytes) {
        set(model, t, b.clone());
    }
    let kl_after = mean_kl(&teacher_lp, model, &eval_seqs)?;

    let mut schemes: Vec<&str> = tensors.iter().map(|t| t.scheme.name()).collect();
    schemes.sort_unstable();
    schemes.dedup();
    outcome.notes.push(format!(
        "tuned the f16 block scales{} of {} tensors ({}) with their codes fixed: {} steps of {} × {} tokens, lr {:.1e} (relative), {:.0} s; {blocks_changed} of {blocks_total} blocks changed their stored fields",
        if tensors.iter().any(|t| t.scheme.info().offset) && o.tune_mins { " and mins" } else { "" },
        tensors.len(),
        schemes.join(", "),
        o.steps,
        o.batch_size,
        seq_len,
        o.lr,
        train_s
    ));
    if let (Some(a), Some(b)) = (log.first(), log.last()) {
        let k = log.len().min(5);
        let tail = log[log.len() - k..].iter().sum::<f64>() / k as f64;
        outcome.notes.push(format!("training KL (burn, batch of the step): {a:.4} at the first step → {b:.4} at the last (mean of the last {k}: {tail:.4})"));
    }
    if !skipped.is_empty() {
        outcome.notes.push(format!(
            "{} K-quant tensors left untouched (their 6-bit sub-scales would need a second rounding step): {}",
            skipped.len(),
            skipped.join(", ")
        ));
    }
    let recovered = if kl_before > 0.0 { 100.0 * (kl_before - kl_after) / kl_before } else { 0.0 };
    outcome.notes.push(format!(
        "KL(teacher ‖ model) on {} held-out calibration sequences × {seq_len} tokens (runtime): {kl_before:.5} before tuning → {kl_after:.5} after ({recovered:+.1}% of the quantization loss recovered)",
        eval_seqs.len()
    ));
    if kl_after > kl_before && !o.keep_if_worse {
        for t in &tensors {
            set(model, t, t.original.clone());
        }
        outcome.notes.push("the held-out KL got worse: the original blocks are restored (set `keep_if_worse: true` to keep the tuned ones)".into());
        return Ok(outcome);
    }
    for (t, b) in tensors.iter().zip(&new_bytes) {
        let name = t.scheme.ggml().to_string();
        outcome.changed.push(TensorChange {
            tensor: t.name.clone(),
            from: name.clone(),
            to: format!("{name} (tuned scales)"),
            rel_error: rel_change(t.scheme.ggml(), &t.original, b, t.rows * t.cols),
        });
    }
    Ok(outcome)
}

//! edgeforge-distill: knowledge distillation with burn. The recipe's input model is the teacher, the model
//! as earlier passes left it (pruned, reconstructed) is the student; the student learns the teacher's
//! temperature-softened next-token distributions (plus, optionally, its hidden states) on the calibration
//! text, then its weights go back into the model IR as f32. `objective: next-token` trains the same student
//! on the text alone (no teacher): the baseline that measures what distillation adds.
//!
//! burn stays inside this crate: other crates see only the `Distill` pass.

mod checkpoint;
mod data;
mod error;
pub mod load;
mod loss;
pub mod model;
mod options;
mod schedule;
mod swap;
pub mod teacher;
mod train;
mod tune;

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::{Model, ModelConfig};

pub use error::DistillError;
pub use loss::{hidden_mse, kl_loss, next_token_loss, teacher_log_probs, top_k, TeacherTargets};
pub use options::{BackendChoice, DistillOptions, Objective, TeacherEngine};
pub use swap::{ActivationSwap, ActivationSwapOptions, SwapTo};
pub use train::{device, train, TrainContext, TrainReport};
pub use tune::{mean_kl, runtime_log_probs, TuneScales, TuneScalesOptions};

pub struct Distill {
    pub options: DistillOptions,
}

impl Distill {
    pub fn new(options: DistillOptions) -> Self {
        Self { options }
    }
}

fn summarize(r: &TrainReport) -> Vec<String> {
    let mut notes = Vec::new();
    let first = r.log.first().map(|s| s.kl);
    let last = r.log.last().map(|s| s.kl);
    if let Some(at) = r.resumed_at_step {
        notes.push(format!("resumed from the checkpoint at step {at}"));
    }
    notes.push(format!(
        "{} of {} steps ({} tokens each, seq_len {}), {:.0} s, {:.1} training tokens/s on {} with {} threads{}",
        r.steps_done,
        r.steps_planned,
        r.tokens_per_step,
        r.seq_len,
        r.elapsed_s,
        r.tokens_per_s,
        r.backend,
        r.threads,
        if r.stopped_by_budget { ", stopped by max_minutes" } else { "" }
    ));
    match (r.teacher_engine, r.teacher_thread_s) {
        (Some(engine), Some(busy)) => notes.push(format!(
            "teacher run by {engine} on a thread of its own: {busy:.1} s computing top-k targets while the student trained; training waited {:.1} s of the {:.0} s for them",
            r.teacher_s, r.elapsed_s
        )),
        (Some(engine), None) => notes.push(format!("teacher run by {engine}: {:.1} s of the {:.0} s for its targets", r.teacher_s, r.elapsed_s)),
        _ => {}
    }
    if let (Some(a), Some(b)) = (first, last) {
        let term = match r.objective {
            Objective::Distill => "KL(teacher‖student)·T²",
            Objective::NextToken => "next-token cross-entropy (no teacher)",
        };
        notes.push(format!("{term}: {a:.4} at the first step → {b:.4} at the last"));
        if let (Some(a), Some(b), true) = (r.log.first(), r.log.last(), r.objective == Objective::Distill && r.log.iter().any(|s| s.ce > 0.0)) {
            notes.push(format!("next-token cross-entropy (ce_weight term): {:.4} at the first step → {:.4} at the last", a.ce, b.ce));
        }
    }
    // A coarse loss curve: about ten points, averaged over the steps between them.
    let n = r.log.len();
    if n > 0 {
        let stride = n.div_ceil(10);
        let points: Vec<String> = r
            .log
            .chunks(stride)
            .map(|c| format!("{}:{:.3}", c.last().map_or(0, |s| s.step), c.iter().map(|s| s.loss).sum::<f64>() / c.len() as f64))
            .collect();
        notes.push(format!("loss curve (step:mean loss): {}", points.join(" ")));
    }
    notes
}

impl Pass for Distill {
    fn name(&self) -> &'static str {
        "distill"
    }

    fn needs(&self) -> Needs {
        Needs { float_weights: true, calibration: true, original_model: self.options.objective == Objective::Distill }
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
        if let Err(e) = train::device(self.options.backend) {
            issues.push(OptionIssue { field: "backend", message: e.to_string() });
        }
        issues
    }

    fn estimate_scales_with_calibration(&self) -> bool {
        false // steps x batch x seq_len of its own options
    }

    fn work_tokens(&self, _calibration_tokens: Option<u64>) -> Option<u64> {
        let seq = self.options.seq_len.unwrap_or(512) as u64;
        Some(self.options.steps * (self.options.batch_size * self.options.grad_accum) as u64 * seq)
    }

    fn estimate(&self, config: &ModelConfig, n_params: u64) -> Estimate {
        // Training ≈ 6 flops per parameter per token, the teacher 2 more; ~15 GFLOP/s on a small CPU.
        let seq = self.options.seq_len.unwrap_or(512) as u64;
        let tokens = self.options.steps * (self.options.batch_size * self.options.grad_accum) as u64 * seq;
        let flops_per_param = if self.options.objective == Objective::Distill { 8.0 } else { 6.0 };
        let mut seconds = flops_per_param * n_params as f64 * tokens as f64 / 15e9;
        let mut note = None;
        if let Some(m) = self.options.max_minutes.filter(|m| m * 60.0 < seconds) {
            note = Some(format!("stops at max_minutes = {m} (the {} steps would take ~{seconds:.0} s)", self.options.steps));
            seconds = m * 60.0;
        }
        // Student weights, gradients and two AdamW moments (f32), the teacher, and per-token activations
        // (logits dominate: a few copies of batch·seq·vocab floats).
        let act = (self.options.batch_size as u64 * seq) * (config.vocab_size as u64 * 16 + config.n_layers as u64 * config.n_embd as u64 * 64);
        Estimate { seconds, peak_bytes: n_params * 4 * 5 + act, note }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        let o = &self.options;
        if let Some(issue) = o.issues().into_iter().next() {
            return Err(DistillError::Option { field: issue.field, message: issue.message }.into());
        }
        let mut outcome = PassOutcome::default();
        let sequences = cx.calibration.map(|c| c.sequences.as_slice()).unwrap_or_default();
        let cancelled = || cx.check_cancel().is_err();
        let tcx = TrainContext { sequences, seed: cx.seed, work_dir: cx.work_dir, progress: cx.progress, status: cx.status, cancelled: &cancelled };
        let report = train::train(cx.original, model, o, &tcx)?;
        outcome.notes.extend(summarize(&report));
        if let Some(dir) = cx.work_dir {
            let path = dir.join("distill-log.json");
            let json = serde_json::to_vec_pretty(&report).map_err(|e| DistillError::Data(e.to_string()))?;
            std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, json)).map_err(|e| DistillError::io(&path, e))?;
            outcome.notes.push(format!("per-step log: {}", path.display()));
        }
        outcome.changed = report
            .changed
            .into_iter()
            .map(|(tensor, from, rel_error)| TensorChange { tensor, from, to: "F32".into(), rel_error })
            .collect();
        Ok(outcome)
    }
}

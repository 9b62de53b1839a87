//! Options of the `distill` pass as written in recipes. Ranges are checked by `DistillOptions::issues`, which
//! `Pass::check` reports at the pass's line in the recipe before anything runs.

use edgeforge_core::pass::OptionIssue;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the student trains: `flex` (pure-Rust CPU, default), `ndarray` (deprecated CPU backend, cargo
/// feature `ndarray`) or `wgpu` (GPU, cargo feature `wgpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    #[default]
    Flex,
    Ndarray,
    Wgpu,
}

/// What the student learns from. `distill` (default): the teacher's next-token distributions (KL, plus
/// hidden states when `hidden_mse_weight` > 0). `next-token`: the calibration text's own next tokens
/// (cross-entropy, no teacher run): the same student, data and budget trained without distillation, the
/// baseline that shows what distillation adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    #[default]
    Distill,
    NextToken,
}

/// What runs the teacher. `auto` (default): the native runtime, unless `hidden_mse_weight` > 0 needs the
/// teacher's hidden states from burn. `runtime`: `edgeforge-runtime`'s kernels on the teacher's packed
/// blocks (several times faster than burn's f32 forward pass on CPU). `burn`: the teacher as a burn module on
/// the training backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherEngine {
    #[default]
    Auto,
    Runtime,
    Burn,
}

/// Options of `distill`: the input model of the recipe is the teacher, the model as the previous passes left
/// it is the student. Training text is the recipe's `calibration` sequences (`samples` × `seq_len`), visited
/// in a seeded order, `batch_size` sequences per micro-batch.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistillOptions {
    /// Optimizer steps (each `batch_size` × `grad_accum` sequences).
    #[serde(default = "default_steps")]
    pub steps: u64,
    /// Peak learning rate of AdamW, reached after `warmup_steps`, then cosine decay to `lr · min_lr_frac`.
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_warmup")]
    pub warmup_steps: u64,
    #[serde(default = "default_min_lr_frac")]
    pub min_lr_frac: f64,
    /// AdamW's decoupled weight decay (default 0: the student starts at good weights).
    #[serde(default)]
    pub weight_decay: f64,
    /// Sequences per micro-batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before one optimizer step.
    #[serde(default = "default_accum")]
    pub grad_accum: usize,
    /// Crop calibration sequences to this many tokens (default: use them whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// Softmax temperature of both distributions; the KL term is scaled by T² (Hinton et al., 2015) so its
    /// gradients keep their size as T changes.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Weight of the mean squared error between teacher and student hidden states after each block
    /// (0 = logits only). Needs the same `n_embd` and layer count in both.
    #[serde(default)]
    pub hidden_mse_weight: f64,
    /// Rescale the whole gradient when its global L2 norm exceeds this (0 = no clipping).
    #[serde(default = "default_clip")]
    pub max_grad_norm: f64,
    /// Stop (with a checkpoint) once this much wall time has been spent, resumed time included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_minutes: Option<f64>,
    /// Write a resumable checkpoint (student, optimizer state, step, data cursor) every this many steps.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Keep only the teacher's `k` most likely tokens per position, cached in memory after a sequence's first
    /// visit, instead of running the teacher on every step (the KL is then over those `k` tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_top_k: Option<usize>,
    /// Also train the token embedding (tied output head); off by default: it is 20% of the parameters,
    /// the slowest update, and passes before distillation rarely touch it.
    #[serde(default)]
    pub train_embeddings: bool,
    #[serde(default)]
    pub backend: BackendChoice,
    /// `distill` (learn the teacher) or `next-token` (learn the text alone: the no-distillation baseline).
    #[serde(default, skip_serializing_if = "is_distill")]
    pub objective: Objective,
    /// What runs the teacher: `auto` (default: the native runtime, or burn when hidden states are matched),
    /// `runtime` or `burn`.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub teacher_engine: TeacherEngine,
    /// Weight of the text's own next-token cross-entropy added to the distillation loss (0 = KL only):
    /// loss = KL·T² + `ce_weight` · cross-entropy (+ the hidden-state term).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ce_weight: f64,
}

fn is_distill(o: &Objective) -> bool {
    *o == Objective::Distill
}

fn is_auto(e: &TeacherEngine) -> bool {
    *e == TeacherEngine::Auto
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn default_steps() -> u64 {
    100
}
fn default_lr() -> f64 {
    5e-5
}
fn default_warmup() -> u64 {
    5
}
fn default_min_lr_frac() -> f64 {
    0.1
}
fn default_batch() -> usize {
    4
}
fn default_accum() -> usize {
    1
}
fn default_temperature() -> f64 {
    1.0
}
fn default_clip() -> f64 {
    1.0
}
fn default_checkpoint_every() -> u64 {
    25
}

impl Default for DistillOptions {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            lr: default_lr(),
            warmup_steps: default_warmup(),
            min_lr_frac: default_min_lr_frac(),
            weight_decay: 0.0,
            batch_size: default_batch(),
            grad_accum: default_accum(),
            seq_len: None,
            temperature: default_temperature(),
            hidden_mse_weight: 0.0,
            max_grad_norm: default_clip(),
            max_minutes: None,
            checkpoint_every: default_checkpoint_every(),
            teacher_top_k: None,
            train_embeddings: false,
            backend: BackendChoice::Flex,
            objective: Objective::Distill,
            teacher_engine: TeacherEngine::Auto,
            ce_weight: 0.0,
        }
    }
}

impl DistillOptions {
    /// Range checks that need no model.
    pub fn issues(&self) -> Vec<OptionIssue> {
        let mut out = Vec::new();
        let mut bad = |field: &'static str, ok: bool, message: &str| {
            if !ok {
                out.push(OptionIssue { field, message: message.to_owned() });
            }
        };
        bad("lr", self.lr.is_finite() && self.lr > 0.0 && self.lr < 1.0, "must be in (0, 1)");
        bad("min_lr_frac", (0.0..=1.0).contains(&self.min_lr_frac), "must be in [0, 1]");
        bad("weight_decay", (0.0..1.0).contains(&self.weight_decay), "must be in [0, 1)");
        bad("batch_size", self.batch_size > 0, "must be positive");
        bad("grad_accum", self.grad_accum > 0, "must be positive");
        bad("seq_len", self.seq_len.is_none_or(|s| s >= 2), "must be at least 2");
        bad("temperature", self.temperature.is_finite() && self.temperature > 0.0, "must be positive");
        bad("hidden_mse_weight", self.hidden_mse_weight.is_finite() && self.hidden_mse_weight >= 0.0, "must be non-negative");
        bad("max_grad_norm", self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0, "must be non-negative");
        bad("max_minutes", self.max_minutes.is_none_or(|m| m.is_finite() && m > 0.0), "must be positive");
        bad("checkpoint_every", self.checkpoint_every > 0, "must be positive");
        bad("teacher_top_k", self.teacher_top_k.is_none_or(|k| k > 0), "must be positive");
        bad("ce_weight", self.ce_weight.is_finite() && self.ce_weight >= 0.0, "must be non-negative");
        let hidden = self.hidden_mse_weight > 0.0;
        bad("teacher_engine", !(hidden && self.teacher_engine == TeacherEngine::Runtime), "the runtime teacher gives no hidden states: use burn (or auto) with hidden_mse_weight");
        let teacherless = self.objective == Objective::NextToken;
        let teacher_only = hidden || self.teacher_top_k.is_some() || self.ce_weight > 0.0 || self.teacher_engine != TeacherEngine::Auto;
        bad("objective", !(teacherless && teacher_only), "next-token trains without a teacher: drop hidden_mse_weight, teacher_top_k, teacher_engine and ce_weight");
        out
    }

    /// Whether the teacher runs in the native runtime (else in burn).
    pub fn runtime_teacher(&self) -> bool {
        match self.teacher_engine {
            TeacherEngine::Runtime => true,
            TeacherEngine::Burn => false,
            TeacherEngine::Auto => self.hidden_mse_weight == 0.0,
        }
    }
}

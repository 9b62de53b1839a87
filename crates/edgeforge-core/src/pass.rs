//! The contract between the pipeline runner and every compression pass. A pass declares what it needs and
//! what it changes (so `edgeforge validate` can check pass order without running anything), checks its options
//! against a model, estimates its cost for `--dry-run`, and runs on the model in place. The runner adds
//! timing, memory and size accounting around `run`, so passes report only what they changed.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::model::Model;

/// What a pass needs from the model state before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Needs {
    /// Weights must still be floats (pruning, distillation, a first quantization).
    pub float_weights: bool,
    /// Calibration text must be configured in the recipe.
    pub calibration: bool,
    /// The recipe's input model as loaded (`PassContext::original`), e.g. as a distillation teacher.
    pub original_model: bool,
}

/// What a pass does to the model state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Effects {
    pub weights_changed: bool,
    pub quantizes: bool,
    pub changes_shapes: bool,
}

/// A problem with a pass's options found before running: `field` is the option's name, so the recipe
/// crate can point at its line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionIssue {
    pub field: &'static str,
    pub message: String,
}

/// Threads a pass's [`Estimate`] is stated for; `--dry-run` scales it to the run's threads.
pub const ESTIMATE_BASIS_THREADS: usize = 2;
/// Calibration tokens (128 samples × 512) a calibrated pass's [`Estimate`] is stated for; `--dry-run` scales
/// it to the recipe's samples × seq_len.
pub const ESTIMATE_BASIS_CALIBRATION_TOKENS: u64 = 128 * 512;

/// A pass's cost on `ESTIMATE_BASIS_THREADS` threads and, for passes that read calibration text,
/// `ESTIMATE_BASIS_CALIBRATION_TOKENS` tokens.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub seconds: f64,
    pub peak_bytes: u64,
    /// What a reader should know about the figure (e.g. that a time cap bounds it).
    pub note: Option<String>,
}

/// One tensor a pass changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorChange {
    pub tensor: String,
    pub from: String,
    pub to: String,
    /// ‖W − W'‖ / ‖W‖ over the tensor.
    pub rel_error: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PassOutcome {
    pub changed: Vec<TensorChange>,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Model(#[from] crate::Error),
    #[error("tensor `{tensor}`: {message}")]
    Tensor { tensor: String, message: String },
}

/// Calibration text as token sequences (each `seq_len` long), drawn from the recipe's calibration dataset.
#[derive(Debug, Clone, Default)]
pub struct CalibrationData {
    pub sequences: Vec<Vec<u32>>,
}

/// Run-time services a pass may use.
pub struct PassContext<'a> {
    pub seed: u64,
    /// Present when the recipe has a `calibration` section.
    pub calibration: Option<&'a CalibrationData>,
    /// Called with (units done, units total) as the pass makes progress.
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
    /// A short status shown beside the progress bar (e.g. training loss and tokens/s).
    pub status: &'a (dyn Fn(String) + Sync),
    /// Set by Ctrl-C; long passes check it between units of work.
    pub cancel: &'a AtomicBool,
    /// The recipe's input model as loaded, before any pass: the teacher of distillation, the reference of
    /// reconstruction.
    pub original: Option<&'a Model>,
    /// A folder this pass may keep its own resumable state in (e.g. training checkpoints); it survives a
    /// crash and is reused by `--resume`.
    pub work_dir: Option<&'a std::path::Path>,
}

impl PassContext<'_> {
    pub fn check_cancel(&self) -> Result<(), PassError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(PassError::Cancelled)
        } else {
            Ok(())
        }
    }
}

pub trait Pass: Send + Sync {
    /// The recipe's `pass:` value, kebab-case.
    fn name(&self) -> &'static str;
    fn needs(&self) -> Needs;
    fn effects(&self) -> Effects;
    /// Options as recorded in reports and hashed into checkpoint keys.
    fn options_json(&self) -> serde_json::Value;
    /// Checks that need the model's shapes (e.g. a group size dividing every row).
    fn check(&self, config: &crate::ModelConfig) -> Vec<OptionIssue>;
    /// Cost on `ESTIMATE_BASIS_THREADS` threads (and `ESTIMATE_BASIS_CALIBRATION_TOKENS` calibration
    /// tokens when `estimate_scales_with_calibration`); `--dry-run` scales it to the run.
    fn estimate(&self, config: &crate::ModelConfig, n_params: u64) -> Estimate;
    /// Does `estimate` assume the basis calibration tokens (so the recipe's samples × seq_len scale it)?
    /// False for passes whose cost follows options of their own (distillation's steps and batches).
    fn estimate_scales_with_calibration(&self) -> bool {
        self.needs().calibration
    }
    /// Which kind of work this pass does, for measured-throughput records (`--dry-run` scales the latest
    /// measurement of the same kind): the pass name, refined where options change the work's nature.
    fn estimate_kind(&self) -> String {
        self.name().to_owned()
    }
    /// Tokens the pass's cost grows with, given the recipe's calibration tokens: those by default for
    /// passes that read calibration text, `None` when the cost does not grow with tokens.
    fn work_tokens(&self, calibration_tokens: Option<u64>) -> Option<u64> {
        calibration_tokens.filter(|_| self.estimate_scales_with_calibration())
    }
    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError>;
    /// The MLP activation the model has after this pass, when the pass sets it (`activation-swap`): lets
    /// `edgeforge validate` refuse targets that cannot express it before anything runs.
    fn activation_after(&self) -> Option<crate::Activation> {
        None
    }
    /// The pass works on weights an earlier pass quantized (`tune-scales`): `edgeforge validate` refuses
    /// it when no quantizing pass comes before it.
    fn needs_quantized(&self) -> bool {
        false
    }
}

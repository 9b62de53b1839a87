//! The `activation-swap` pass: the MLP gate's SiLU becomes ReLU (SwiGLU → ReGLU). No weight changes; only
//! `ModelConfig::activation`, which the runtime, the distillation model and every exporter follow.
//!
//! Why: an integrate-and-fire neuron driven by a constant input fires at a rate proportional to the input's
//! positive part, i.e. it computes ReLU. A model whose own activation is ReLU therefore runs on such a chip
//! without the SiLU→ReLU approximation. The swap alone hurts the model badly (every negative gate value
//! that SiLU passed as a small negative number is now zero), so a `distill` pass should follow it.

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome};
use edgeforge_core::{Activation, Model, ModelConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The activation the swap installs. Only `relu` exists for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SwapTo {
    #[default]
    Relu,
}

impl SwapTo {
    pub fn activation(self) -> Activation {
        match self {
            SwapTo::Relu => Activation::Relu,
        }
    }
}

/// Options of `activation-swap`: replace the MLP gate's activation (SiLU in llama models) by `to`. Weights
/// are unchanged, so follow it with `distill` to recover quality. GGUF cannot express a ReLU gate for the
/// llama architecture: a recipe with this pass cannot have a `gguf` target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivationSwapOptions {
    /// The new gate activation.
    #[serde(default)]
    pub to: SwapTo,
}

pub struct ActivationSwap {
    pub options: ActivationSwapOptions,
}

impl ActivationSwap {
    pub fn new(options: ActivationSwapOptions) -> Self {
        Self { options }
    }
}

impl Pass for ActivationSwap {
    fn name(&self) -> &'static str {
        "activation-swap"
    }

    fn needs(&self) -> Needs {
        // Works on quantized weights too: the activation sits between matmuls, not inside them.
        Needs::default()
    }

    fn effects(&self) -> Effects {
        Effects { weights_changed: false, quantizes: false, changes_shapes: false }
    }

    fn activation_after(&self) -> Option<Activation> {
        Some(self.options.to.activation())
    }

    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }

    fn check(&self, _config: &ModelConfig) -> Vec<OptionIssue> {
        Vec::new()
    }

    fn estimate(&self, _config: &ModelConfig, _n_params: u64) -> Estimate {
        Estimate { seconds: 0.0, peak_bytes: 0, note: None }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        cx.check_cancel()?;
        let from = model.config.activation;
        let to = self.options.to.activation();
        model.config.activation = to;
        let mut outcome = PassOutcome::default();
        if from == to {
            outcome.notes.push(format!("the MLP gate activation is already {to}: nothing changed"));
        } else {
            outcome.notes.push(format!(
                "MLP gate activation {from} → {to} in all {} blocks; no weights changed, so quality drops until a `distill` pass after this one retrains the blocks",
                model.config.n_layers
            ));
        }
        (cx.progress)(1, 1);
        Ok(outcome)
    }
}

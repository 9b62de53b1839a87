//! One interface for every output format, as `edgeforge_core::pass::Pass` is for passes: each format says
//! what it cannot hold (so `edgeforge validate` refuses before anything runs), what a device would receive
//! from it (the fit check's input, with the weight bytes the format really stores), writes its artifact and
//! sums up what it wrote. The recipe runner's target loop sees only `dyn Exporter`; adding a format is one
//! file here and one line in [`EXPORTERS`].

mod c_bundle;
mod gguf;
mod nir;
mod onnx;
mod safetensors;

use std::path::{Path, PathBuf};

use edgeforge_core::arch::block_shape;
use edgeforge_core::{Activation, Model, TensorData};
use edgeforge_targets::{ArtifactFormat, FitInput, Profile};

use crate::error::Result;

pub use nir::nir_settings;

/// How a target asks float matrices to be written (`float:` in a recipe target); `None` in a request leaves
/// it to the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatChoice {
    F16,
    F32,
}

/// One target of a recipe, in terms every exporter understands.
pub struct TargetRequest<'a> {
    /// The run's output folder; the exporter names its artifact inside it.
    pub out_dir: &'a Path,
    /// The recipe's file stem: artifacts are `{stem}.gguf`, `{stem}-hf`, ...
    pub stem: &'a str,
    pub float: Option<FloatChoice>,
    /// Tokens of context the device must hold.
    pub context_tokens: u64,
    /// The device profile (None: `generic`, no fit check).
    pub profile: Option<&'a Profile>,
    /// How many targets of this format the recipe has: with more than one, a format whose artifact name
    /// does not depend on its options adds the profile's name so one does not overwrite another.
    pub same_format_targets: usize,
    /// Real inputs of the layers the exporter asked for (`Exporter::wants_layer_inputs`), when the runner
    /// could compute them.
    pub layer_inputs: Option<&'a LayerInputs>,
}

impl TargetRequest<'_> {
    /// `{stem}-{suffix}` in the output folder, with `-{profile}` added when the recipe has several targets
    /// of this format (so one does not overwrite another).
    pub fn artifact_path(&self, suffix: &str) -> std::path::PathBuf {
        match self.profile.filter(|_| self.same_format_targets > 1) {
            Some(p) => {
                let tag: String = p.name.chars().map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' { ch } else { '_' }).collect();
                self.out_dir.join(format!("{}-{suffix}-{tag}", self.stem))
            }
            None => self.out_dir.join(format!("{}-{suffix}", self.stem)),
        }
    }
}

/// Inputs of some of the model's linear layers on real text, keyed by tensor name (one `n_in`-long vector
/// per token), and where they came from.
#[derive(Debug, Clone, Default)]
pub struct LayerInputs {
    pub source: String,
    pub by_tensor: std::collections::BTreeMap<String, Vec<Vec<f32>>>,
}

/// What an exporter wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The artifact (a file or a folder).
    pub path: PathBuf,
    /// Weight data as the device stores it (codes, scales, floats; not the artifact's bytes): what the fit
    /// after export is checked against.
    pub weight_bytes: u64,
    /// Notes for the run report's last pass (tensors written in another format than they had, ...).
    pub pass_notes: Vec<String>,
    /// Notes about the target: on its fit row when it has a profile, else with the pass notes.
    pub target_notes: Vec<String>,
    /// Energy per token on the device, an estimate, when the format can say.
    pub energy_per_token_uj_estimate: Option<f64>,
}

pub trait Exporter: Send + Sync {
    fn format(&self) -> ArtifactFormat;
    /// Why this format cannot hold a model whose MLP gate uses `activation` (None: it can).
    fn refusal(&self, activation: Activation) -> Option<&'static str> {
        let _ = activation;
        None
    }
    /// Linear layers (tensor names) whose real inputs on calibration text this format uses (e.g. to
    /// calibrate spiking thresholds); none by default.
    fn wants_layer_inputs(&self, model: &Model) -> Vec<String> {
        let _ = model;
        Vec::new()
    }
    /// The model as a device would receive it in this format.
    fn fit_input(&self, model: &Model, req: &TargetRequest<'_>) -> Result<FitInput> {
        fit_input(model, self.format(), req.context_tokens, req.float == Some(FloatChoice::F16), |_| true)
    }
    /// Write the artifact under `req.out_dir` (replacing an earlier one). A device the artifact does not fit
    /// is refused with `ExportError::DoesNotFit`, nothing left behind.
    fn write(&self, model: &Model, req: &TargetRequest<'_>) -> Result<Written>;
}

/// Every format this build writes.
pub static EXPORTERS: [&dyn Exporter; 5] = [&gguf::Gguf, &onnx::Onnx, &c_bundle::CBundle, &safetensors::Safetensors, &nir::Nir];

/// The exporter of `format`.
pub fn exporter(format: ArtifactFormat) -> &'static dyn Exporter {
    EXPORTERS.iter().copied().find(|e| e.format() == format).unwrap_or(EXPORTERS[0])
}

/// The model as a target would receive it: its weight bytes, bit widths and shapes. `on_device` says which
/// tensors' bit widths the device must support (all of them, except for formats that keep some on a host).
pub fn fit_input(model: &Model, format: ArtifactFormat, context_tokens: u64, f16_floats: bool, on_device: impl Fn(&str) -> bool) -> Result<FitInput> {
    let c = &model.config;
    let mut bits: Vec<u32> = Vec::new();
    let mut weight_bytes = 0u64;
    for (name, t) in &model.tensors {
        let b = match &t.data {
            TensorData::F32(_) if f16_floats && t.shape.len() == 2 => 16,
            TensorData::F32(_) => 32,
            TensorData::Blocks { dtype, .. } => dtype.code_bits(),
            TensorData::Quantized(q) => u32::from(q.format.bits),
        };
        weight_bytes += if b == 16 && matches!(t.data, TensorData::F32(_)) { t.n_elems() as u64 * 2 } else { t.storage_bytes() as u64 };
        if t.shape.len() == 2 && on_device(name) && !bits.contains(&b) {
            bits.push(b);
        }
    }
    bits.sort_unstable();
    let (mut kv, mut linear_params, mut linear_outputs, mut n_ff) = (0u64, 0u64, 0u64, 0u64);
    for l in 0..c.n_layers {
        let s = block_shape(model, l)?;
        let (e, q, kvd, ff) = (c.n_embd as u64, (s.n_heads * c.head_dim) as u64, (s.n_kv_heads * c.head_dim) as u64, s.n_ff as u64);
        kv += 2 * kvd;
        linear_params += e * (q + 2 * kvd) + q * e + 3 * e * ff;
        linear_outputs += q + 2 * kvd + e + 2 * ff + e;
        n_ff = n_ff.max(ff);
    }
    Ok(FitInput {
        format,
        weight_bytes,
        weight_bits: bits,
        params: model.tensors.values().map(|t| t.n_elems() as u64).sum(),
        embedding_params: model.tensors.get("token_embd.weight").map_or(0, |t| t.n_elems() as u64),
        n_layers: c.n_layers as u64,
        kv_floats_per_token: kv,
        n_embd: c.n_embd as u64,
        n_ff,
        vocab: c.vocab_size as u64,
        context_tokens,
        block_linear_params: linear_params,
        block_linear_outputs: linear_outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_has_exactly_one_exporter() {
        for f in [ArtifactFormat::Gguf, ArtifactFormat::Onnx, ArtifactFormat::CBundle, ArtifactFormat::Safetensors, ArtifactFormat::Nir] {
            assert_eq!(EXPORTERS.iter().filter(|e| e.format() == f).count(), 1, "{}", f.name());
            assert_eq!(exporter(f).format(), f);
        }
    }

    #[test]
    fn only_gguf_refuses_a_relu_model() {
        let refusing: Vec<&str> = EXPORTERS.iter().filter(|e| e.refusal(Activation::Relu).is_some()).map(|e| e.format().name()).collect();
        assert_eq!(refusing, ["gguf"]);
        assert!(EXPORTERS.iter().all(|e| e.refusal(Activation::Silu).is_none()));
    }
}

//! NIR for neuromorphic chips: `{stem}-nir` (`{stem}-nir-{profile}` when a recipe has several NIR targets),
//! limits from the profile's neuromorphic section. The chip holds only the block linears, so only their bit
//! widths are checked against it (embedding and head stay on the host).

use edgeforge_core::{Model, TensorData};
use edgeforge_targets::{ArtifactFormat, FitInput, Profile, GENERIC_PROFILE};

use super::{fit_input, Exporter, FloatChoice, TargetRequest, Written};
use crate::error::Result;
use crate::nir::{write_nir_with, NirLimits, NirOptions};

pub struct Nir;

impl Exporter for Nir {
    fn format(&self) -> ArtifactFormat {
        ArtifactFormat::Nir
    }

    /// The MLP gate of every block: its IF neurons' thresholds are calibrated on real activations.
    fn wants_layer_inputs(&self, model: &Model) -> Vec<String> {
        (0..model.config.n_layers).map(|l| format!("blk.{l}.ffn_gate.weight")).filter(|n| model.tensors.contains_key(n)).collect()
    }

    fn fit_input(&self, model: &Model, req: &TargetRequest<'_>) -> Result<FitInput> {
        fit_input(model, self.format(), req.context_tokens, req.float == Some(FloatChoice::F16), |name| name.starts_with("blk."))
    }

    fn write(&self, model: &Model, req: &TargetRequest<'_>) -> Result<Written> {
        let path = req.artifact_path("nir");
        let (limits, options) = nir_settings(req.profile, model);
        let summary = write_nir_with(model, &path, &limits, &options, req.layer_inputs)?;
        Ok(Written {
            path,
            weight_bytes: summary.weight_bytes,
            pass_notes: Vec::new(),
            target_notes: summary.notes,
            energy_per_token_uj_estimate: summary.energy.energy_per_token_uj,
        })
    }
}

/// The NIR exporter's limits (from the profile's neuromorphic section; unlimited without one) and options:
/// weights on the chip's widest grid, or on the model's own narrower one when every block linear is
/// already quantized (so its codes go over exactly).
pub fn nir_settings(profile: Option<&Profile>, model: &Model) -> (NirLimits, NirOptions) {
    let n = profile.and_then(|p| p.neuromorphic.as_ref());
    let limits = NirLimits {
        profile: profile.map_or_else(|| GENERIC_PROFILE.to_owned(), |p| p.name.clone()),
        neurons: n.map_or(u64::MAX, |n| n.chips * n.neurons_per_chip),
        synapses: n.map_or(u64::MAX, |n| n.chips * n.synapses_per_chip),
        weight_bits_max: n.map_or(8, |n| n.weight_bits_max),
        max_fan_in: n.and_then(|n| n.max_fan_in),
        synop_energy_pj: n.and_then(|n| n.synop_energy_pj),
        synop_energy_source: n.and_then(|n| n.synop_energy_source.clone()),
    };
    let chip_max = limits.weight_bits_max.clamp(2, 8);
    let block_bits: Vec<Option<u32>> = model
        .tensors
        .iter()
        .filter(|(name, t)| name.starts_with("blk.") && t.shape.len() == 2)
        .map(|(_, t)| match &t.data {
            TensorData::Quantized(q) => Some(u32::from(q.format.bits)),
            _ => None,
        })
        .collect();
    let model_bits = if block_bits.iter().all(Option::is_some) { block_bits.iter().flatten().copied().max() } else { None };
    let weight_bits = model_bits.filter(|b| (2..chip_max).contains(b)).unwrap_or(chip_max);
    (limits, NirOptions { weight_bits, ..Default::default() })
}

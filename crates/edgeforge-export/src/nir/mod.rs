//! Model IR → NIR (Neuromorphic Intermediate Representation) for spiking chips (Intel Loihi 2 via Lava,
//! and the NIR-reading toolchains of formats.md 4.3): a folder with `model.nir` (an HDF5 NIRGraph that
//! `nir.read` loads, type-checked) and `partition.json` (which ops run on the chip and which on the host,
//! per block, the counts checked against the device, an energy estimate and a rate-coding simulation).
//!
//! Only the block projections (and optionally the LM head) go to the chip, as Linear nodes on a signed
//! integer grid of the target's weight width with one scale per output row; the MLP gate is followed by IF
//! neurons (a rate-coded ReLU: standing in for SiLU, or exactly the model's activation after `activation-swap`). See partition.rs for what stays on the host.

mod energy;
mod hdf5;
mod partition;
pub mod quant;
pub mod sim;

use std::path::{Path, PathBuf};

use edgeforge_core::Model;
use serde_json::json;

pub use energy::EnergyEstimate;
pub use hdf5::{MetaValue, NirGraph, NirNode, NIR_VERSION};
pub use partition::{BlockPartition, ChipLayer, LimitCheck, NirLimits, HOST_BLOCK_OPS};
pub use sim::{RateSimulation, SimRow, TIMESTEPS};

use crate::atomic::StagedDir;
pub use crate::exporter::LayerInputs;
use crate::error::{ExportError, Result};

/// How to export (the limits come from the target profile, see [`NirLimits`]).
#[derive(Debug, Clone)]
pub struct NirOptions {
    /// Width of the chip's signed integer weights (2..=8).
    pub weight_bits: u32,
    /// Put the LM head on the chip too (it is 49 152 × 576 for SmolLM2: 28M synapses).
    pub lm_head_on_chip: bool,
    /// Export only the first N blocks (tests on the real model); None: all.
    pub max_blocks: Option<usize>,
    /// Timesteps a token is presented for, for the energy estimate.
    pub timesteps_per_token: u32,
    /// Input spikes per input per timestep for the energy estimate; None (the default): the rate measured on
    /// the simulated inputs.
    pub input_spike_rate: Option<f64>,
}

impl Default for NirOptions {
    fn default() -> Self {
        Self { weight_bits: 8, lm_head_on_chip: false, max_blocks: None, timesteps_per_token: 32, input_spike_rate: None }
    }
}

/// What was written, for reports and tests.
#[derive(Debug, Clone)]
pub struct NirSummary {
    pub dir: PathBuf,
    pub nir_bytes: u64,
    /// The chip's synaptic weight memory: every exported synapse at `weight_bits` (the file stores the same
    /// codes as float32, so `nir_bytes` is no measure of it); host-side tensors are not counted.
    pub weight_bytes: u64,
    pub nodes: usize,
    pub edges: usize,
    pub blocks_exported: usize,
    pub neurons: u64,
    pub synapses: u64,
    pub max_fan_in: u64,
    pub weight_bits: u32,
    pub energy: EnergyEstimate,
    pub simulation: Option<RateSimulation>,
    /// One-line statements for the run's report.
    pub notes: Vec<String>,
}

/// Synthetic inputs when no real activations are given: enough for a stable threshold and error figure,
/// few enough to keep the simulation of a 1536 × 576 layer around a second.
const SIM_INPUT_VECTORS: usize = 4;
/// Real input vectors the simulation runs on at most (thresholds use all given).
const SIM_MAX_VECTORS: usize = 16;
const SIM_SEED: u64 = 0x004E_4952; // "NIR"

const SILU_ASSUMPTION: &str = "the model's MLP activation is SiLU; the chip's IF neurons compute a rate-coded ReLU, so the chip part assumes the SiLU→ReLU substitution (a swap plus distillation, not performed by this export)";
const RELU_EXACT: &str = "the model's MLP activation is ReLU (activation-swap pass): the chip's IF neurons compute the model's own activation as a rate-coded ReLU, no substitution assumed (the only error is rate coding's, simulated below)";

/// What the chip's IF neurons mean for this model: an approximation (SiLU models) or the model's own
/// activation (ReLU models).
fn activation_statement(activation: edgeforge_core::Activation) -> (&'static str, &'static str) {
    match activation {
        edgeforge_core::Activation::Silu => (SILU_ASSUMPTION, "SiLU (as rate-coded ReLU)"),
        edgeforge_core::Activation::Relu => (RELU_EXACT, "none: the model's own ReLU (rate-coded)"),
        // Refused before this point (`llama_blocks_only`): only gemma models use it.
        edgeforge_core::Activation::GeluTanh => ("the model's MLP activation is GELU", "GELU"),
    }
}

const SYNTHETIC_INPUTS: &str = "synthetic: deterministic inputs uniform in [-1, 1] (no calibration text given); recalibrate on real activations";

/// One spiking layer's calibration: its inputs in [−1, 1], their source and scale, and the IF threshold.
struct SpikingCalibration {
    inputs: Vec<Vec<f32>>,
    source: String,
    input_scale: f32,
    threshold: f32,
}

/// Thresholds from the layer's real inputs when `layer_inputs` has them (scaled into [−1, 1] by their
/// largest magnitude, the scale the host divides by), else from synthetic inputs.
fn calibrate(tensor: &str, w: &quant::ChipWeights, layer_inputs: Option<&LayerInputs>) -> SpikingCalibration {
    let real = layer_inputs.and_then(|li| li.by_tensor.get(tensor).map(|v| (li, v))).filter(|(_, v)| !v.is_empty() && v.iter().all(|x| x.len() == w.n_in));
    let (input_scale, inputs, source) = match real {
        Some((li, raw)) => {
            let (scale, inputs) = sim::scale_inputs(raw);
            (scale, inputs, format!("{} vectors of real activations: {}", raw.len(), li.source))
        }
        None => (1.0, sim::test_inputs(SIM_INPUT_VECTORS, w.n_in, SIM_SEED), SYNTHETIC_INPUTS.to_owned()),
    };
    let threshold = sim::calibrate_threshold(w, &inputs);
    SpikingCalibration { inputs, source, input_scale, threshold }
}

/// Write `dir` (replaced if it exists) holding model.nir and partition.json, or refuse with the shortfall
/// and the fix when the chip part does not fit `limits`. Nothing is left behind on failure. Thresholds and
/// the simulation use synthetic inputs: see [`write_nir_with`] for real activations.
pub fn write_nir(model: &Model, dir: &Path, limits: &NirLimits, options: &NirOptions) -> Result<NirSummary> {
    write_nir_with(model, dir, limits, options, None)
}

/// [`write_nir`] with the real inputs of the spiking layers (`blk.N.ffn_gate.weight`) on calibration text:
/// IF thresholds calibrated on them, the simulation run on them, and the energy estimate's spike rate
/// measured from them.
pub fn write_nir_with(model: &Model, dir: &Path, limits: &NirLimits, options: &NirOptions, layer_inputs: Option<&LayerInputs>) -> Result<NirSummary> {
    crate::llama_blocks_only(model, "NIR")?;
    let bits = options.weight_bits;
    if !(2..=8).contains(&bits) {
        return Err(ExportError::Unsupported { what: format!("NIR export: weight_bits {bits} (2 to 8 supported)") });
    }
    let c = &model.config;
    let n_blocks = options.max_blocks.map_or(c.n_layers, |m| m.min(c.n_layers));
    let blocks = partition::partition_blocks(model, n_blocks)?;
    let head = options.lm_head_on_chip.then(|| partition::lm_head_layer(model));
    let layers: Vec<&ChipLayer> = blocks.iter().flat_map(|b| b.chip.iter()).chain(head.as_ref()).collect();
    let (checks, shortfalls, fixes) = partition::check_limits(&layers, bits, head.is_some(), limits);
    if !shortfalls.is_empty() {
        return Err(ExportError::DoesNotFit { target: limits.profile.clone(), shortfalls, fixes });
    }

    let (activation_note, substitutes) = activation_statement(c.activation);
    let mut graph = NirGraph::default();
    graph.metadata.push(("description".into(), MetaValue::Text(format!("edgeforge: chip part of a {}-block llama model", c.n_layers))));
    let mut simulation = None;
    let mut input_rates = Vec::new();
    let mut layer_json = Vec::new();
    let mut seen_segments = std::collections::BTreeSet::new();
    for layer in &layers {
        let t = model.tensor(&layer.tensor)?;
        let w = quant::chip_weights(&layer.tensor, t, bits)?;
        if w.n_in != layer.n_in || w.n_out != layer.n_out {
            return Err(ExportError::Unsupported { what: format!("{}: shape {:?}, expected [{}, {}]", layer.tensor, t.shape, layer.n_out, layer.n_in) });
        }
        let input = format!("{}.input", layer.segment);
        if seen_segments.insert(layer.segment.clone()) {
            graph.add(&input, NirNode::Input { shape: vec![layer.n_in as i64] });
        }
        let mut last = layer.node.clone();
        let mut threshold = None;
        if layer.spiking_activation {
            let cal = calibrate(&layer.tensor, &w, layer_inputs);
            threshold = Some((cal.threshold, cal.input_scale));
            input_rates.push(sim::mean_input_rate(&cal.inputs));
            if simulation.is_none() {
                let n = cal.inputs.len().min(SIM_MAX_VECTORS);
                let setup = sim::SimSetup { inputs: &cal.inputs[..n], source: &cal.source, input_scale: cal.input_scale, threshold: cal.threshold };
                simulation = Some(sim::simulate(&layer.node, &w, &t.to_f32(&layer.tensor)?, &setup, activation_note));
            }
            let act = layer.node.replace("_proj", "_act");
            graph.add(
                &act,
                NirNode::IntegrateAndFire {
                    r: w.scales.clone(),
                    v_threshold: vec![cal.threshold; w.n_out],
                    v_reset: vec![0.0; w.n_out],
                    metadata: vec![
                        ("substitutes".into(), MetaValue::Text(substitutes.into())),
                        ("input_scale".into(), MetaValue::Floats(vec![cal.input_scale])),
                        ("threshold_calibration".into(), MetaValue::Text(format!("largest ReLU output over the inputs divided by input_scale ({})", cal.source))),
                    ],
                },
            );
            graph.connect(&layer.node, &act);
            last = act;
        }
        let output = format!("{last}.output");
        graph.add(&output, NirNode::Output { shape: vec![layer.n_out as i64] });
        graph.connect(&input, &layer.node);
        graph.connect(&last, &output);
        layer_json.push(json!({
            "node": layer.node,
            "tensor": layer.tensor,
            "nir_type": "Linear",
            "weight_shape": [layer.n_out, layer.n_in],
            "weight_bits": bits,
            "exact_model_codes": w.exact_codes,
            "neurons": layer.n_out,
            "synapses": layer.synapses(),
            "fan_in": layer.n_in,
            "activation": match threshold {
                Some((v_threshold, input_scale)) => json!({"nir_type": "IF", "node": last.trim_end_matches(".output"), "v_threshold": v_threshold, "v_reset": 0.0, "input_scale": input_scale}),
                None => json!(null),
            },
        }));
        graph.add(
            &layer.node,
            NirNode::Linear {
                n_out: w.n_out,
                n_in: w.n_in,
                weight: w.int_weights,
                metadata: vec![
                    ("weight_bits".into(), MetaValue::Int(i64::from(bits))),
                    ("weight_scale".into(), MetaValue::Floats(w.scales)),
                    ("weight_encoding".into(), MetaValue::Text("weight holds signed integers; real weight[r, c] = weight[r, c] * weight_scale[r]".into())),
                    ("source_tensor".into(), MetaValue::Text(layer.tensor.clone())),
                ],
            },
        );
    }

    let neurons: u64 = layers.iter().map(|l| l.n_out as u64).sum();
    let synapses: u64 = layers.iter().map(|l| l.synapses()).sum();
    let max_fan_in = layers.iter().map(|l| l.n_in as u64).max().unwrap_or(0);
    let energy = energy::estimate(synapses, options.timesteps_per_token, spike_rate(options, &input_rates, simulation.as_ref()), limits.synop_energy_pj, limits.synop_energy_source.clone());

    let staged = StagedDir::new(dir, true)?;
    let nir_path = staged.path().join("model.nir");
    graph.write_hdf5(&nir_path).map_err(|reason| ExportError::Hdf5 { path: nir_path.clone(), reason })?;
    let nir_bytes = std::fs::metadata(&nir_path).map_err(|e| ExportError::io(&nir_path, e))?.len();

    let mut host_model_ops = vec!["token embedding lookup", "final RMSNorm (output_norm)", "sampling"];
    if head.is_none() {
        host_model_ops.insert(2, "LM head (output projection)");
    }
    let per_block: Vec<_> = blocks
        .iter()
        .map(|b| {
            let chip: Vec<_> = layer_json.iter().filter(|j| j["node"].as_str().is_some_and(|n| n.starts_with(&format!("block{}.", b.block)))).cloned().collect();
            json!({ "block": b.block, "chip": chip, "host": b.host, "neurons": b.neurons, "synapses": b.synapses, "max_fan_in": b.max_fan_in })
        })
        .collect();
    let partition = json!({
        "format": format!("NIR {NIR_VERSION} (HDF5); load with nir.read(\"model.nir\")"),
        "profile": limits,
        "weight_bits": bits,
        "weight_grid": "signed integers in [-2^(bits-1), 2^(bits-1)-1] stored as float32 in each Linear's weight, one float scale per output row in its metadata.weight_scale; the IF neurons' r carries the same scales",
        "blocks_exported": n_blocks,
        "blocks_total": c.n_layers,
        "host_model_ops": host_model_ops,
        "lm_head": head.as_ref().map_or(json!("host"), |_| layer_json.iter().find(|j| j["node"] == "lm_head").cloned().unwrap_or(json!(null))),
        "blocks": per_block,
        "totals": { "neurons": neurons, "synapses": synapses, "max_fan_in": max_fan_in, "nodes": graph.nodes.len(), "edges": graph.edges.len(), "nir_bytes": nir_bytes },
        "checks": checks,
        "fits": true,
        "energy_estimate": energy,
        "simulation": simulation,
        "model_activation": c.activation.name(),
        "activation_assumption": activation_note,
    });
    let json_path = staged.path().join("partition.json");
    let text = serde_json::to_string_pretty(&partition).map_err(|e| ExportError::Unsupported { what: format!("partition.json: {e}") })?;
    std::fs::write(&json_path, text + "\n").map_err(|e| ExportError::io(&json_path, e))?;
    let dir = staged.commit()?;

    let mut notes = vec![
        format!(
            "NIR ({}): chip holds {} linear layers of {n_blocks}/{} blocks{}: {neurons} neurons, {synapses} synapses, max fan-in {max_fan_in}, {bits}-bit weights; RMSNorm, RoPE, softmax attention, the SwiGLU product, residuals, embedding{} stay on the host",
            limits.profile,
            layers.len(),
            c.n_layers,
            if head.is_some() { " + LM head" } else { "" },
            if head.is_none() { " and LM head" } else { "" },
        ),
        format!("NIR energy per token: {}", energy.label),
    ];
    if let Some(s) = &simulation {
        let table: Vec<String> = s.rows.iter().map(|r| format!("T={}: {:.2}%", r.timesteps, 100.0 * r.rel_error)).collect();
        notes.push(format!(
            "NIR rate-coding simulation of {} ({}×{}) as exported (IF, reset to zero, θ {:.4}) on {}, relative error of rate×θ vs ReLU: {}; {}",
            s.layer, s.n_out, s.n_in, s.threshold, s.inputs, table.join(", "), activation_note
        ));
    }
    Ok(NirSummary {
        dir,
        nir_bytes,
        weight_bytes: (synapses * u64::from(bits)).div_ceil(8),
        nodes: graph.nodes.len(),
        edges: graph.edges.len(),
        blocks_exported: n_blocks,
        neurons,
        synapses,
        max_fan_in,
        weight_bits: bits,
        energy,
        simulation,
        notes,
    })
}

/// The energy estimate's spike rate: the option when set, else the mean measured over the spiking layers'
/// inputs (the simulation's own encoding), with its source.
fn spike_rate(options: &NirOptions, input_rates: &[f64], simulation: Option<&RateSimulation>) -> energy::SpikeRate {
    if let Some(rate) = options.input_spike_rate {
        return energy::SpikeRate { rate, source: "set in the export options".into() };
    }
    if input_rates.is_empty() {
        return energy::SpikeRate { rate: 0.0, source: "no spiking layer on the chip".into() };
    }
    let rate = input_rates.iter().sum::<f64>() / input_rates.len() as f64;
    let inputs = simulation.map_or("", |s| s.inputs.as_str());
    energy::SpikeRate { rate, source: format!("measured: mean input spikes per input per timestep of {} MLP gate layers' rate-coded inputs, {inputs}; applied to every chip layer", input_rates.len()) }
}

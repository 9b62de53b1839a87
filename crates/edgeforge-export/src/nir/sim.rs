//! A rate-coded simulation of one exported Linear → IF pair, to say how close the chip's spike rates come
//! to the float activation they stand for, as a function of the timesteps spent per token.
//!
//! Encoding: each input x_i in [−1, 1] (the host divides the layer's real input by its calibrated
//! `input_scale` first) drives a deterministic spike generator that accumulates |x_i| per timestep and sends
//! a signed unit spike (sign of x_i) whenever the accumulator reaches 1 (graded/signed spikes, as Loihi 2
//! carries them), so |x_i| is that input's spikes per timestep. Neuron j integrates
//! v_j += r_j · Σ_i W_ij s_i (W the chip's integers, r_j the row's scale, exactly the exported `r`) and
//! spikes when v_j ≥ θ. The exported IF neuron then resets to `v_reset` = 0, dropping the residual: that is
//! the table's headline error. Reset by subtraction (which keeps the residual, so rate × θ converges to
//! max(0, W·x)) is shown beside it for comparison only: it is not what the file holds. The estimate of
//! ReLU(W·x)_j is spikes_j / T × θ, with θ the exported `v_threshold`.

use serde::Serialize;

use super::quant::ChipWeights;

/// The timestep counts the table reports.
pub const TIMESTEPS: [u32; 6] = [8, 16, 32, 64, 128, 256];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    Subtract,
    ToZero,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimRow {
    pub timesteps: u32,
    /// ‖rate·θ − ReLU(W·x)‖₂ / ‖ReLU(W·x)‖₂ over all inputs, with the exported neuron (reset to zero).
    pub rel_error: f64,
    /// The same with reset by subtraction: not what the file holds, for comparison.
    pub rel_error_reset_by_subtraction: f64,
    /// Mean output spikes per neuron per timestep.
    pub mean_output_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateSimulation {
    /// The NIR node simulated (e.g. `block0.mlp.gate_proj`).
    pub layer: String,
    pub n_in: usize,
    pub n_out: usize,
    pub input_vectors: usize,
    /// Where the inputs came from (real activations on calibration text, or synthetic).
    pub inputs: String,
    /// The exported `v_threshold` of this layer's IF neurons.
    pub threshold: f32,
    /// The host's divisor that brings this layer's real inputs into [−1, 1] (1 for synthetic inputs).
    pub input_scale: f32,
    /// Mean |x|: input spikes per input per timestep.
    pub mean_input_rate: f64,
    /// The float reference's own distance from the unquantized weights: ‖ReLU(W_chip·x) − ReLU(W·x)‖ / ‖ReLU(W·x)‖.
    pub quantization_rel_error: f64,
    pub assumption: String,
    pub rows: Vec<SimRow>,
}

/// Deterministic inputs in [−1, 1] (splitmix64), so the table is the same on every run.
pub fn test_inputs(n_vectors: usize, n_in: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    (0..n_vectors).map(|_| (0..n_in).map(|_| next()).collect()).collect()
}

/// max(0, W·x) with real-valued row-major `w` ([n_out, n_in]), accumulated in f64: the float reference.
pub fn relu_reference(w: &[f32], n_out: usize, n_in: usize, x: &[f32]) -> Vec<f32> {
    (0..n_out)
        .map(|j| {
            let row = &w[j * n_in..(j + 1) * n_in];
            let y: f64 = row.iter().zip(x).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            y.max(0.0) as f32
        })
        .collect()
}

/// Spike counts of IF neurons driven through `w` by rate-coded `x` over `timesteps` steps. Inputs outside
/// [−1, 1] are clipped (the host scales its activations into that range).
pub fn if_spike_counts(w: &ChipWeights, x: &[f32], timesteps: u32, threshold: f32, reset: Reset) -> Vec<u32> {
    let (n_out, n_in) = (w.n_out, w.n_in);
    let mut acc = vec![0f32; n_in];
    let mut v = vec![0f32; n_out];
    let mut counts = vec![0u32; n_out];
    let mut spikes: Vec<(usize, f32)> = Vec::with_capacity(n_in);
    for _ in 0..timesteps {
        spikes.clear();
        for (i, (a, xi)) in acc.iter_mut().zip(x).enumerate() {
            *a += xi.abs().min(1.0);
            if *a >= 1.0 {
                *a -= 1.0;
                spikes.push((i, xi.signum()));
            }
        }
        for j in 0..n_out {
            let row = &w.int_weights[j * n_in..(j + 1) * n_in];
            let current: f32 = spikes.iter().map(|&(i, s)| row[i] * s).sum();
            v[j] += w.scales[j] * current;
            if v[j] >= threshold {
                counts[j] += 1;
                v[j] = match reset {
                    Reset::Subtract => v[j] - threshold,
                    Reset::ToZero => 0.0,
                };
            }
        }
    }
    counts
}

fn rel_error(estimate: &[f32], reference: &[f32]) -> f64 {
    let num: f64 = estimate.iter().zip(reference).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum();
    let den: f64 = reference.iter().map(|b| f64::from(*b).powi(2)).sum();
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    }
}

/// Inputs of one layer brought into [−1, 1] by their largest magnitude: (that scale, the scaled vectors).
pub fn scale_inputs(raw: &[Vec<f32>]) -> (f32, Vec<Vec<f32>>) {
    let scale = raw.iter().flatten().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    (scale, raw.iter().map(|x| x.iter().map(|v| v / scale).collect()).collect())
}

/// Mean spikes per input per timestep of rate-coded `inputs` (the mean of |x| clipped to 1).
pub fn mean_input_rate(inputs: &[Vec<f32>]) -> f64 {
    let n = inputs.iter().map(Vec::len).sum::<usize>().max(1);
    inputs.iter().flatten().map(|v| f64::from(v.abs().min(1.0))).sum::<f64>() / n as f64
}

/// The IF threshold for chip weights `w` on `inputs`: the largest ReLU output (the usual normalisation of
/// ANN→SNN conversion, so no neuron must fire more than once per step).
pub fn calibrate_threshold(w: &ChipWeights, inputs: &[Vec<f32>]) -> f32 {
    let chip = w.dequantized();
    inputs.iter().flat_map(|x| relu_reference(&chip, w.n_out, w.n_in, x)).fold(0f32, f32::max).max(f32::MIN_POSITIVE)
}

/// What a simulation is run on: the layer's inputs (already in [−1, 1]), where they came from, the scale
/// the host divided them by, and the exported threshold.
pub struct SimSetup<'a> {
    pub inputs: &'a [Vec<f32>],
    pub source: &'a str,
    pub input_scale: f32,
    pub threshold: f32,
}

/// The error table for `layer`'s chip weights `w` (float weights `w_float` for the quantization figure).
pub fn simulate(layer: &str, w: &ChipWeights, w_float: &[f32], setup: &SimSetup<'_>, assumption: &str) -> RateSimulation {
    let (inputs, threshold) = (setup.inputs, setup.threshold);
    let chip = w.dequantized();
    let flat_refs: Vec<f32> = inputs.iter().flat_map(|x| relu_reference(&chip, w.n_out, w.n_in, x)).collect();
    let float_refs: Vec<f32> = inputs.iter().flat_map(|x| relu_reference(w_float, w.n_out, w.n_in, x)).collect();
    let rows = TIMESTEPS
        .iter()
        .map(|&t| {
            let mut est = Vec::with_capacity(flat_refs.len());
            let mut est_sub = Vec::with_capacity(flat_refs.len());
            let mut spikes = 0u64;
            for x in inputs {
                let c = if_spike_counts(w, x, t, threshold, Reset::ToZero);
                spikes += c.iter().map(|&n| u64::from(n)).sum::<u64>();
                est.extend(c.iter().map(|&n| n as f32 / t as f32 * threshold));
                let z = if_spike_counts(w, x, t, threshold, Reset::Subtract);
                est_sub.extend(z.iter().map(|&n| n as f32 / t as f32 * threshold));
            }
            SimRow {
                timesteps: t,
                rel_error: rel_error(&est, &flat_refs),
                rel_error_reset_by_subtraction: rel_error(&est_sub, &flat_refs),
                mean_output_rate: spikes as f64 / (flat_refs.len().max(1) as f64 * f64::from(t)),
            }
        })
        .collect();
    RateSimulation {
        layer: layer.to_owned(),
        n_in: w.n_in,
        n_out: w.n_out,
        input_vectors: inputs.len(),
        inputs: setup.source.to_owned(),
        threshold,
        input_scale: setup.input_scale,
        mean_input_rate: mean_input_rate(inputs),
        quantization_rel_error: rel_error(&flat_refs, &float_refs),
        assumption: assumption.to_owned(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nir::quant::quantize_rows;

    /// One neuron, one input: the rate code of x = 0.5 through weight 1 with θ = 0.5 fires every step.
    #[test]
    fn a_single_synapse_matches_the_scalar_float_reference() {
        let w = quantize_rows(&[1.0], 1, 1, 8);
        for (x, want) in [(0.5f32, 0.5f32), (0.25, 0.25), (-0.5, 0.0), (1.0, 1.0)] {
            let c = if_spike_counts(&w, &[x], 256, 1.0, Reset::Subtract);
            let got = c[0] as f32 / 256.0;
            assert!((got - want).abs() <= 1.0 / 256.0 + 1e-6, "x {x}: rate·θ {got} vs ReLU {want}");
        }
    }

    /// x = 1 through weight 1 with θ = 1.5 (one input spike per step): the exported neuron (reset to zero)
    /// fires every second step (rate × θ = 0.75, a quarter below the ReLU), reset by subtraction two steps in
    /// three (1.0).
    #[test]
    fn the_headline_error_is_the_exported_reset_to_zero_neuron() {
        let w = quantize_rows(&[1.0], 1, 1, 8);
        let inputs = vec![vec![1.0f32]];
        let setup = SimSetup { inputs: &inputs, source: "test", input_scale: 1.0, threshold: 1.5 };
        let sim = simulate("test", &w, &[1.0], &setup, "ReLU");
        let last = &sim.rows[5];
        assert!((last.rel_error - 0.25).abs() < 0.01, "{last:?}");
        assert!(last.rel_error_reset_by_subtraction < 0.01, "{last:?}");
        assert!((sim.mean_input_rate - 1.0).abs() < 1e-6);
    }

    #[test]
    fn error_falls_with_timesteps_on_a_random_layer() {
        let (n_out, n_in) = (24, 40);
        let w_float: Vec<f32> = test_inputs(1, n_out * n_in, 3).remove(0).iter().map(|v| v * 0.2).collect();
        let w = quantize_rows(&w_float, n_out, n_in, 8);
        let inputs = test_inputs(6, n_in, 11);
        let threshold = calibrate_threshold(&w, &inputs);
        let setup = SimSetup { inputs: &inputs, source: "test", input_scale: 1.0, threshold };
        let sim = simulate("test", &w, &w_float, &setup, "ReLU");
        // Reset by subtraction keeps the residual, so its rate converges to the ReLU.
        let errs: Vec<f64> = sim.rows.iter().map(|r| r.rel_error_reset_by_subtraction).collect();
        assert!(errs[5] < 0.05, "{errs:?}");
        assert!(errs[5] < errs[0] / 4.0, "{errs:?}");
        for pair in errs.windows(2) {
            assert!(pair[1] <= pair[0] * 1.2, "not falling: {errs:?}");
        }
        assert!(sim.quantization_rel_error < 0.02, "{}", sim.quantization_rel_error);
    }
}

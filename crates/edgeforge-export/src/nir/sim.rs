//! A rate-coded simulation of one exported Linear → IF pair, to say how close the chip's spike rates come
//! to the float activation they stand for, as a function of the timesteps spent per token.
//!
//! Encoding: each input x_i in [−1, 1] drives a deterministic spike generator that accumulates |x_i| per
//! timestep and sends a signed unit spike (sign of x_i) whenever the accumulator reaches 1 (graded/signed
//! spikes, as Loihi 2 carries them). Neuron j integrates v_j += r_j · Σ_i W_ij s_i (W the chip's integers,
//! r_j the row's scale, exactly the exported `r`), spikes when v_j ≥ θ and then either subtracts θ (reset
//! by subtraction, which keeps the residual and makes rate × θ converge to max(0, W·x)) or resets to 0
//! (NIR's `v_reset`, which drops the residual at each spike). The estimate of ReLU(W·x)_j is
//! spikes_j / T × θ. θ is set from the data (the largest ReLU output over the inputs, the usual
//! normalisation of ANN→SNN conversion) so no neuron must fire more than once per step.

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
    /// ‖rate·θ − ReLU(W·x)‖₂ / ‖ReLU(W·x)‖₂ over all inputs, reset by subtraction.
    pub rel_error: f64,
    /// The same with reset to zero (NIR's IF as written: `v_reset` = 0).
    pub rel_error_reset_to_zero: f64,
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
    pub threshold: f32,
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

/// The error table for `layer`'s chip weights `w` (float weights `w_float` for the quantization figure).
pub fn simulate(layer: &str, w: &ChipWeights, w_float: &[f32], inputs: &[Vec<f32>], assumption: &str) -> RateSimulation {
    let chip = w.dequantized();
    let refs: Vec<Vec<f32>> = inputs.iter().map(|x| relu_reference(&chip, w.n_out, w.n_in, x)).collect();
    let float_refs: Vec<f32> = inputs.iter().flat_map(|x| relu_reference(w_float, w.n_out, w.n_in, x)).collect();
    let flat_refs: Vec<f32> = refs.iter().flatten().copied().collect();
    let threshold = flat_refs.iter().fold(0f32, |m, v| m.max(*v)).max(f32::MIN_POSITIVE);
    let n_inputs = inputs.iter().map(Vec::len).sum::<usize>().max(1);
    let mean_input_rate = inputs.iter().flatten().map(|v| f64::from(v.abs().min(1.0))).sum::<f64>() / n_inputs as f64;
    let rows = TIMESTEPS
        .iter()
        .map(|&t| {
            let mut est = Vec::with_capacity(flat_refs.len());
            let mut est_zero = Vec::with_capacity(flat_refs.len());
            let mut spikes = 0u64;
            for x in inputs {
                let c = if_spike_counts(w, x, t, threshold, Reset::Subtract);
                spikes += c.iter().map(|&n| u64::from(n)).sum::<u64>();
                est.extend(c.iter().map(|&n| n as f32 / t as f32 * threshold));
                let z = if_spike_counts(w, x, t, threshold, Reset::ToZero);
                est_zero.extend(z.iter().map(|&n| n as f32 / t as f32 * threshold));
            }
            SimRow {
                timesteps: t,
                rel_error: rel_error(&est, &flat_refs),
                rel_error_reset_to_zero: rel_error(&est_zero, &flat_refs),
                mean_output_rate: spikes as f64 / (flat_refs.len().max(1) as f64 * f64::from(t)),
            }
        })
        .collect();
    RateSimulation {
        layer: layer.to_owned(),
        n_in: w.n_in,
        n_out: w.n_out,
        input_vectors: inputs.len(),
        threshold,
        mean_input_rate,
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

    #[test]
    fn error_falls_with_timesteps_on_a_random_layer() {
        let (n_out, n_in) = (24, 40);
        let w_float: Vec<f32> = test_inputs(1, n_out * n_in, 3).remove(0).iter().map(|v| v * 0.2).collect();
        let w = quantize_rows(&w_float, n_out, n_in, 8);
        let inputs = test_inputs(6, n_in, 11);
        let sim = simulate("test", &w, &w_float, &inputs, "ReLU");
        let errs: Vec<f64> = sim.rows.iter().map(|r| r.rel_error).collect();
        assert!(errs[5] < 0.05, "{errs:?}");
        assert!(errs[5] < errs[0] / 4.0, "{errs:?}");
        for pair in errs.windows(2) {
            assert!(pair[1] <= pair[0] * 1.2, "not falling: {errs:?}");
        }
        assert!(sim.quantization_rel_error < 0.02, "{}", sim.quantization_rel_error);
    }
}

//! Energy per token, an estimate: synaptic operations × the profile's energy per synaptic operation.
//!
//! Under rate coding every input spike into a layer is delivered to each of the layer's outputs, so one
//! token costs Σ_layers n_in × n_out × (input spikes per input per timestep) × T synaptic operations. The
//! spike rate is measured by the rate-coding simulation (its inputs' mean spikes per input per timestep) and
//! applied to every chip layer; T is an option; both are stated in the output, and neuron updates, host work
//! and chip-host traffic are not counted.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct EnergyEstimate {
    pub timesteps_per_token: u32,
    /// Input spikes per input neuron per timestep.
    pub input_spike_rate: f64,
    /// Where that rate comes from.
    pub input_spike_rate_source: String,
    pub synops_per_token: f64,
    /// None when the profile publishes no energy per synaptic operation.
    pub synop_energy_pj: Option<f64>,
    pub energy_per_token_uj: Option<f64>,
    pub source: Option<String>,
    pub label: String,
}

/// The spike rate (per input per timestep) and where it comes from.
pub struct SpikeRate {
    pub rate: f64,
    pub source: String,
}

pub fn estimate(synapses: u64, timesteps_per_token: u32, spike_rate: SpikeRate, synop_energy_pj: Option<f64>, source: Option<String>) -> EnergyEstimate {
    let SpikeRate { rate: input_spike_rate, source: rate_source } = spike_rate;
    let input_spike_rate = (input_spike_rate * 1e4).round() / 1e4;
    let synops = synapses as f64 * input_spike_rate * f64::from(timesteps_per_token);
    let energy = synop_energy_pj.map(|pj| synops * pj * 1e-6);
    let label = match (energy, &source) {
        (Some(uj), Some(src)) => format!(
            "estimate, not a measurement: {:.3e} synaptic ops/token ({synapses} synapses × spike rate {input_spike_rate} ({rate_source}) × {timesteps_per_token} timesteps) × {} pJ/synop = {:.1} µJ/token; chip synapses only (host, neuron updates and I/O excluded); source: {src}",
            synops,
            synop_energy_pj.unwrap_or(0.0),
            uj
        ),
        (Some(uj), None) => format!("estimate, not a measurement: {synops:.3e} synaptic ops/token = {uj:.1} µJ/token (profile gives no source)"),
        (None, _) => format!("{synops:.3e} synaptic ops/token ({synapses} synapses × spike rate {input_spike_rate} ({rate_source}) × {timesteps_per_token} timesteps); no energy figure: the profile has no synop_energy_pj"),
    };
    EnergyEstimate { timesteps_per_token, input_spike_rate, input_spike_rate_source: rate_source, synops_per_token: synops, synop_energy_pj, energy_per_token_uj: energy, source, label }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synops_times_energy() {
        let rate = super::SpikeRate { rate: 0.1, source: "test".into() };
        let e = super::estimate(1_000_000, 32, rate, Some(23.6), Some("paper".into()));
        assert!((e.synops_per_token - 3.2e6).abs() < 1.0);
        assert!((e.energy_per_token_uj.unwrap_or(0.0) - 75.52).abs() < 1e-6);
        assert!(e.label.contains("estimate") && e.label.contains("paper"));
    }
}

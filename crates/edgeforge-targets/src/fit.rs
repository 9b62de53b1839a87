//! Does a model fit a target? Checked before anything is written: the format and weight widths the device
//! accepts, its memory (RAM budget; or flash for weights and SRAM+PSRAM for the working set on a
//! microcontroller; or synapses and neurons on a neuromorphic chip). A model that does not fit gets the
//! shortfall in numbers and the recipe changes that would close it. Decode speed is a roofline estimate
//! from the profile's bandwidth (every weight byte read once per token), labelled as such.

use serde::Serialize;

use crate::profile::{ArtifactFormat, DeviceKind, Profile};

/// What the fit check needs to know about the model as it would be exported.
#[derive(Debug, Clone, Serialize)]
pub struct FitInput {
    pub format: ArtifactFormat,
    /// Bytes of weights in the artifact (as written, or as planned for formats not yet written).
    pub weight_bytes: u64,
    /// Bit widths of the model's matrices (16 or 32 for float ones).
    pub weight_bits: Vec<u32>,
    pub params: u64,
    /// Token embedding parameters (vocabulary × n_embd), the part vocabulary pruning shrinks.
    pub embedding_params: u64,
    pub n_layers: u64,
    /// Key + value floats per token per layer (2 × n_kv_heads × head_dim), summed over layers.
    pub kv_floats_per_token: u64,
    pub n_embd: u64,
    pub n_ff: u64,
    pub vocab: u64,
    /// Context the device must hold (KV cache).
    pub context_tokens: u64,
    /// Weights and output features of the linear layers inside the blocks (what a neuromorphic chip would
    /// hold as synapses and neurons).
    pub block_linear_params: u64,
    pub block_linear_outputs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub profile: String,
    pub fits: bool,
    /// Each way the model does not fit, with numbers.
    pub shortfalls: Vec<String>,
    /// Recipe changes that would make it fit.
    pub suggestions: Vec<String>,
    /// Weights + KV cache at the context + working buffers (estimate).
    pub peak_memory_bytes: u64,
    /// Roofline estimate: bandwidth / bytes read per token. `None` without a bandwidth in the profile.
    pub decode_tok_s_estimate: Option<f64>,
    pub notes: Vec<String>,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl FitInput {
    /// KV cache (f32) at the context plus logits and a few hidden-sized buffers.
    fn working_bytes(&self) -> u64 {
        let kv = self.kv_floats_per_token * self.context_tokens * 4;
        let buffers = (self.vocab + 4 * self.n_embd + 2 * self.n_ff) * 4;
        kv + buffers
    }

    /// Bytes the model would take with every matrix at `bits` (scales included at one f16 per 32).
    fn bytes_at(&self, bits: u32) -> u64 {
        (self.params as f64 * (f64::from(bits) + 0.5) / 8.0) as u64
    }
}

/// A count as people read it: 134.5M, 28.3k, 912.
fn count(n: f64) -> String {
    match n {
        n if n >= 1e6 => format!("{:.1}M", n / 1e6),
        n if n >= 1e3 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// How the parameter count would have to shrink for `need` bytes to become `have`; nothing when `need`
/// already fits (the other suggestions, e.g. quantizing, are enough).
fn shrink_advice(input: &FitInput, need: u64, have: u64, out: &mut Vec<String>) {
    if need <= have {
        return;
    }
    let keep = have as f64 / need.max(1) as f64;
    out.push(format!(
        "shrink the model to at most {:.0}% of its parameters ({} of {}): e.g. `prune` with `mlp: {{ ratio: … }}`, `heads` and `depth: {{ blocks: … }}`, then `distill` to recover",
        100.0 * keep,
        count(input.params as f64 * keep),
        count(input.params as f64)
    ));
    if input.embedding_params as f64 > input.params as f64 * keep * 0.5 {
        out.push(format!(
            "the token embedding alone is {} parameters ({} tokens × {}): keep only the tokens your text uses (vocabulary pruning)",
            count(input.embedding_params as f64),
            input.vocab,
            input.embedding_params / input.vocab.max(1)
        ));
    }
}

pub fn check_fit(profile: &Profile, input: &FitInput) -> Fit {
    let mut shortfalls = Vec::new();
    let mut suggestions = Vec::new();
    let mut notes = Vec::new();
    let name = &profile.name;
    if !profile.formats.contains(&input.format) {
        let accepted: Vec<&str> = profile.formats.iter().map(|f| f.name()).collect();
        shortfalls.push(format!("{name} runs {}, not {}", accepted.join("/"), input.format.name()));
        suggestions.push(format!("use `format: {}` for this profile", accepted.first().copied().unwrap_or("?")));
    }
    let max_bits = profile.weight_bits.iter().copied().max().unwrap_or(32);
    let unsupported: Vec<u32> = input.weight_bits.iter().copied().filter(|b| !profile.weight_bits.contains(b)).collect();
    if !unsupported.is_empty() {
        shortfalls.push(format!("weights of {unsupported:?} bits; {name} takes {:?}", profile.weight_bits));
        if let Some(b) = profile.weight_bits.iter().copied().filter(|b| *b <= 8).max() {
            suggestions.push(format!("quantize every matrix to {b} bits (e.g. `gptq` with `bits: {b}`)"));
        }
    }
    let working = input.working_bytes();
    let peak = input.weight_bytes + working;
    match profile.kind {
        DeviceKind::Mcu => {
            let flash = profile.memory.flash_bytes.unwrap_or(0);
            let ram = profile.memory.sram_bytes.unwrap_or(0) + profile.memory.psram_bytes.unwrap_or(0);
            if input.weight_bytes > flash {
                shortfalls.push(format!("needs {} of weights, {name} has {} of flash", mb(input.weight_bytes), mb(flash)));
                let at4 = input.bytes_at(4);
                // Only for matrices wider than 4 bits: an int4 model's group scales make `at4` a hair smaller.
                if at4 < input.weight_bytes && input.weight_bits.iter().any(|&b| b > 4) {
                    suggestions.push(format!("quantize to 4 bits (about {})", mb(at4)));
                }
                shrink_advice(input, input.weight_bytes.min(at4), flash, &mut suggestions);
            }
            if working > ram {
                shortfalls.push(format!(
                    "needs {} of working memory (KV cache for {} tokens + buffers), {name} has {} of SRAM+PSRAM",
                    mb(working),
                    input.context_tokens,
                    mb(ram)
                ));
                suggestions.push("shorten the context (fewer KV-cache tokens) or prune attention heads / blocks".into());
            }
        }
        DeviceKind::Neuromorphic => {
            if let Some(n) = &profile.neuromorphic {
                let synapses = n.chips * n.synapses_per_chip;
                let neurons = n.chips * n.neurons_per_chip;
                if input.block_linear_params > synapses {
                    shortfalls.push(format!("needs {:.1}M synapses, {name} has {:.1}M", input.block_linear_params as f64 / 1e6, synapses as f64 / 1e6));
                    shrink_advice(input, input.block_linear_params, synapses, &mut suggestions);
                }
                if input.block_linear_outputs > neurons {
                    shortfalls.push(format!("needs {} neurons, {name} has {neurons}", input.block_linear_outputs));
                }
                if let Some(b) = input.weight_bits.iter().copied().filter(|b| *b > n.weight_bits_max).max() {
                    shortfalls.push(format!("{b}-bit weights; {name} holds at most {} bits", n.weight_bits_max));
                    suggestions.push(format!("quantize to {} bits before exporting NIR", n.weight_bits_max));
                }
                // Block linears take n_embd inputs (q/k/v, gate/up) or n_ff (down); o_proj's q width is n_embd here.
                let fan_in = input.n_embd.max(input.n_ff);
                if let Some(max) = n.max_fan_in.filter(|m| fan_in > *m) {
                    shortfalls.push(format!("block linears take up to {fan_in} inputs, {name} dense layers at most {max}"));
                    suggestions.push(format!("prune the MLP to a feed-forward width of at most {max} (`prune` with `mlp: {{ ratio: … }}`)"));
                }
                notes.push("softmax attention, RMSNorm and the embedding lookup run on the host; the chip holds the block linears".into());
            }
        }
        DeviceKind::Board | DeviceKind::Phone | DeviceKind::Host | DeviceKind::Cluster => {
            // A cluster's whole budget here; the per-node check is the cluster plan's (cluster.rs).
            let nodes = profile.cluster.as_ref().map(|c| c.nodes.iter().map(crate::cluster::ClusterNode::budget).sum::<u64>());
            let budget = nodes.or(profile.memory.budget_bytes).or(profile.memory.ram_bytes).unwrap_or(u64::MAX);
            if peak > budget {
                shortfalls.push(format!("needs about {} (weights {} + KV cache and buffers {}), {name} allows {}", mb(peak), mb(input.weight_bytes), mb(working), mb(budget)));
                if max_bits > 4 {
                    suggestions.push(format!("quantize to 4 bits (weights about {})", mb(input.bytes_at(4))));
                }
                shrink_advice(input, input.weight_bytes, budget.saturating_sub(working), &mut suggestions);
            }
        }
    }
    let decode = profile.bandwidth_gb_s.map(|gb| {
        let per_token = input.weight_bytes + input.kv_floats_per_token * input.context_tokens / 2 * 4;
        gb * 1e9 / per_token.max(1) as f64
    });
    if decode.is_some() {
        notes.push("decode speed is a roofline estimate (peak bandwidth / bytes read per token), not a measurement".into());
    }
    Fit {
        profile: name.clone(),
        fits: shortfalls.is_empty(),
        shortfalls,
        suggestions,
        peak_memory_bytes: peak,
        decode_tok_s_estimate: decode,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_profile;

    fn smollm2(format: ArtifactFormat, bits: u32) -> FitInput {
        let params = 134_515_008u64;
        FitInput {
            format,
            weight_bytes: (params as f64 * (f64::from(bits) + 0.5) / 8.0) as u64,
            weight_bits: vec![bits],
            params,
            embedding_params: 49_152 * 576,
            n_layers: 30,
            kv_floats_per_token: 30 * 2 * 3 * 64,
            n_embd: 576,
            n_ff: 1536,
            vocab: 49_152,
            context_tokens: 2048,
            block_linear_params: 30 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536),
            block_linear_outputs: 30 * (576 + 192 + 192 + 576 + 1536 * 2 + 576),
        }
    }

    fn profile(name: &str) -> Profile {
        load_profile(name, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_reference_model_fits_a_pi_and_a_phone_with_roofline_estimates() {
        let fit = check_fit(&profile("raspberry-pi-5"), &smollm2(ArtifactFormat::Gguf, 8));
        assert!(fit.fits, "{:?}", fit.shortfalls);
        let est = fit.decode_tok_s_estimate.unwrap_or(0.0);
        assert!(est > 50.0 && est < 500.0, "{est}");
        assert!(check_fit(&profile("android-phone"), &smollm2(ArtifactFormat::Onnx, 4)).fits);
    }

    #[test]
    fn an_mcu_refuses_with_the_shortfall_and_the_fixes() {
        let fit = check_fit(&profile("esp32-s3"), &smollm2(ArtifactFormat::CBundle, 8));
        assert!(!fit.fits);
        let text = fit.shortfalls.join("; ");
        assert!(text.contains("needs 142.9 MB of weights, esp32-s3 has 16.8 MB of flash"), "{text}");
        let fixes = fit.suggestions.join("; ");
        assert!(fixes.contains("quantize to 4 bits") && fixes.contains("vocabulary pruning") && fixes.contains("prune"), "{fixes}");
    }

    #[test]
    fn wrong_format_and_too_wide_weights_are_named() {
        let fit = check_fit(&profile("akida"), &smollm2(ArtifactFormat::Gguf, 8));
        let text = fit.shortfalls.join("; ");
        assert!(text.contains("akida runs nir, not gguf") && text.contains("8-bit weights; akida holds at most 4 bits"), "{text}");
        let loihi = check_fit(&profile("loihi2"), &smollm2(ArtifactFormat::Nir, 8));
        assert!(loihi.fits, "{:?}", loihi.shortfalls);
        let wide = FitInput { n_ff: 4096, ..smollm2(ArtifactFormat::Nir, 4) };
        let text = check_fit(&profile("akida"), &wide).shortfalls.join("; ");
        assert!(text.contains("block linears take up to 4096 inputs, akida dense layers at most 2048"), "{text}");
        assert!(check_fit(&profile("akida"), &smollm2(ArtifactFormat::Nir, 4)).fits);
    }

    /// A tiny model whose 8-bit weights overflow a small flash but whose 4-bit ones fit: quantizing is the
    /// fix, not "shrink to 1018% of its parameters (0.3M of 0.0M)"; a real shrink names small counts in k.
    #[test]
    fn small_models_get_sensible_shrink_advice() {
        let params = 30_000u64;
        let tiny = FitInput { weight_bytes: params, params, embedding_params: 8_000, vocab: 250, context_tokens: 16, ..smollm2(ArtifactFormat::CBundle, 8) };
        let mut flash = profile("esp32-s3");
        flash.memory.flash_bytes = Some(20_000);
        flash.memory.sram_bytes = Some(1 << 30);
        let fit = check_fit(&flash, &tiny);
        let fixes = fit.suggestions.join("; ");
        assert!(!fit.fits && fixes.contains("quantize to 4 bits") && !fixes.contains("shrink the model"), "{fixes}");
        flash.memory.flash_bytes = Some(5_000);
        let fixes = check_fit(&flash, &tiny).suggestions.join("; ");
        assert!(fixes.contains("shrink the model to at most 30% of its parameters (8.9k of 30.0k)"), "{fixes}");
        assert!(fixes.contains("the token embedding alone is 8.0k parameters"), "{fixes}");
        assert_eq!((count(912.0), count(28_300.0), count(134_515_008.0)), ("912".to_owned(), "28.3k".to_owned(), "134.5M".to_owned()));
    }
}

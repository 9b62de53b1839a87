//! Which parts of a llama model a spiking chip can run, and whether they fit.
//!
//! NIR expresses linear maps (Linear/Affine) and spiking neurons, nothing else: no softmax, normalisation,
//! elementwise product, RoPE or table lookup. So per block the chip holds the seven projections and, for
//! the MLP gate, IF neurons computing the activation as a rate-coded ReLU (exactly the model's activation
//! after `activation-swap`, otherwise standing in for SiLU); RMSNorm, RoPE, the attention scores/softmax/weighted sum, the SwiGLU product and the residual
//! adds stay on the host. The embedding lookup, the final norm and (unless asked) the LM head are host work.
//! Each contiguous chip part is a segment with its own Input/Output nodes, where the host hands over.

use serde::Serialize;

use edgeforge_core::arch::block_shape;
use edgeforge_core::Model;

use crate::error::Result;

/// One linear map on the chip.
#[derive(Debug, Clone, Serialize)]
pub struct ChipLayer {
    /// NIR node name, e.g. `block3.mlp.gate_proj`.
    pub node: String,
    /// Source tensor (GGUF name).
    pub tensor: String,
    /// The segment (host hand-over unit) it belongs to, e.g. `block3.mlp_in`.
    #[serde(skip)]
    pub segment: String,
    pub n_in: usize,
    pub n_out: usize,
    /// IF neurons after it (the activation substitute), or a plain read-out to the host.
    pub spiking_activation: bool,
}

impl ChipLayer {
    pub fn synapses(&self) -> u64 {
        self.n_in as u64 * self.n_out as u64
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockPartition {
    pub block: usize,
    pub chip: Vec<ChipLayer>,
    pub host: Vec<&'static str>,
    pub neurons: u64,
    pub synapses: u64,
    pub max_fan_in: u64,
}

/// What the host does in every block.
pub const HOST_BLOCK_OPS: [&str; 7] = [
    "input RMSNorm (attn_norm)",
    "RoPE on q and k",
    "attention scores q·kᵀ, softmax, weighted sum of v (with the KV cache)",
    "residual add after attention",
    "post-attention RMSNorm (ffn_norm)",
    "SwiGLU product act(gate) ⊙ up",
    "residual add after the MLP",
];

/// Per-block partition of the first `n_blocks` blocks.
pub fn partition_blocks(model: &Model, n_blocks: usize) -> Result<Vec<BlockPartition>> {
    let c = &model.config;
    let mut out = Vec::with_capacity(n_blocks);
    for l in 0..n_blocks {
        let s = block_shape(model, l)?;
        let (e, q, kv, ff) = (c.n_embd, s.n_heads * c.head_dim, s.n_kv_heads * c.head_dim, s.n_ff);
        let layer = |segment: &str, node: &str, tensor: &str, n_in: usize, n_out: usize, spiking: bool| ChipLayer {
            node: format!("block{l}.{node}"),
            tensor: format!("blk.{l}.{tensor}.weight"),
            segment: format!("block{l}.{segment}"),
            n_in,
            n_out,
            spiking_activation: spiking,
        };
        let chip = vec![
            layer("attn_qkv", "attn.q_proj", "attn_q", e, q, false),
            layer("attn_qkv", "attn.k_proj", "attn_k", e, kv, false),
            layer("attn_qkv", "attn.v_proj", "attn_v", e, kv, false),
            layer("attn_out", "attn.o_proj", "attn_output", q, e, false),
            layer("mlp_in", "mlp.gate_proj", "ffn_gate", e, ff, true),
            layer("mlp_in", "mlp.up_proj", "ffn_up", e, ff, false),
            layer("mlp_down", "mlp.down_proj", "ffn_down", ff, e, false),
        ];
        out.push(BlockPartition {
            block: l,
            neurons: chip.iter().map(|c| c.n_out as u64).sum(),
            synapses: chip.iter().map(ChipLayer::synapses).sum(),
            max_fan_in: chip.iter().map(|c| c.n_in as u64).max().unwrap_or(0),
            chip,
            host: HOST_BLOCK_OPS.to_vec(),
        });
    }
    Ok(out)
}

/// The LM head as a chip layer (`lm_head`), reading the tied embedding when there is no `output.weight`.
pub fn lm_head_layer(model: &Model) -> ChipLayer {
    let c = &model.config;
    let tensor = if model.tensors.contains_key("output.weight") { "output.weight" } else { "token_embd.weight" };
    ChipLayer {
        node: "lm_head".into(),
        tensor: tensor.into(),
        segment: "lm_head".into(),
        n_in: c.n_embd,
        n_out: c.vocab_size,
        spiking_activation: false,
    }
}

/// The capacity a chip (or board of chips) offers, from the target profile.
#[derive(Debug, Clone, Serialize)]
pub struct NirLimits {
    pub profile: String,
    pub neurons: u64,
    pub synapses: u64,
    pub weight_bits_max: u32,
    /// Largest input vector one dense layer takes (Akida 2.0 Dense1D: 2048), when the device has one.
    pub max_fan_in: Option<u64>,
    pub synop_energy_pj: Option<f64>,
    pub synop_energy_source: Option<String>,
}

/// One checked quantity: what the export needs against what the device has.
#[derive(Debug, Clone, Serialize)]
pub struct LimitCheck {
    pub what: &'static str,
    pub needed: u64,
    pub available: u64,
    pub ok: bool,
}

/// The checks and, for each failed one, the shortfall and the recipe changes that close it.
pub fn check_limits(layers: &[&ChipLayer], weight_bits: u32, lm_head: bool, limits: &NirLimits) -> (Vec<LimitCheck>, Vec<String>, Vec<String>) {
    let neurons: u64 = layers.iter().map(|c| c.n_out as u64).sum();
    let synapses: u64 = layers.iter().map(|c| c.synapses()).sum();
    // The first of the widest layers, so the message names the earliest block.
    let widest = layers.iter().copied().reduce(|a, b| if b.n_in > a.n_in { b } else { a });
    let fan_in = widest.map_or(0, |c| c.n_in as u64);
    let name = &limits.profile;
    let mut checks = vec![
        LimitCheck { what: "neurons", needed: neurons, available: limits.neurons, ok: neurons <= limits.neurons },
        LimitCheck { what: "synapses", needed: synapses, available: limits.synapses, ok: synapses <= limits.synapses },
        LimitCheck { what: "weight_bits", needed: u64::from(weight_bits), available: u64::from(limits.weight_bits_max), ok: weight_bits <= limits.weight_bits_max },
    ];
    if let Some(max) = limits.max_fan_in {
        checks.push(LimitCheck { what: "max_fan_in", needed: fan_in, available: max, ok: fan_in <= max });
    }
    let (mut shortfalls, mut fixes) = (Vec::new(), Vec::new());
    let head_synapses = layers.iter().filter(|c| c.node == "lm_head").map(|c| c.synapses()).sum::<u64>();
    for c in checks.iter().filter(|c| !c.ok) {
        match c.what {
            "neurons" | "synapses" => {
                shortfalls.push(format!("the chip part needs {} {}, {name} has {}", c.needed, c.what, c.available));
                if lm_head && c.needed - head_synapses.min(c.needed) <= c.available && c.what == "synapses" {
                    fixes.push("keep the LM head on the host (do not put `lm_head` on the chip)".into());
                }
                let keep = 100.0 * c.available as f64 / c.needed.max(1) as f64;
                fixes.push(format!(
                    "shrink the blocks to at most {keep:.0}% of their {}: `prune` with `mlp: {{ ratio: … }}`, `heads` or `depth: {{ blocks: … }}`, then `distill`; or a profile with more `chips`",
                    c.what
                ));
            }
            "weight_bits" => {
                shortfalls.push(format!("{weight_bits}-bit weights; {name} holds at most {} bits", limits.weight_bits_max));
                fixes.push(format!("quantize to {} bits (e.g. `quantize-rtn` or `gptq` with `bits: {}`)", limits.weight_bits_max, limits.weight_bits_max));
            }
            _ => {
                let layer = widest.map_or("?", |c| c.node.as_str());
                shortfalls.push(format!("{layer} takes {} inputs, {name} dense layers take at most {}", c.needed, c.available));
                fixes.push(format!("prune the MLP so the feed-forward width is at most {} (`prune` with `mlp: {{ ratio: … }}`)", c.available));
            }
        }
    }
    (checks, shortfalls, fixes)
}

//! Options of the `prune` and `reconstruct` passes, as recipes write them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeforge_core::pass::OptionIssue;

/// How a unit (channel, head, KV group) is scored; low scores are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// Wanda-style |W|·‖X‖: the weights that read the unit's activation, times that activation's norm
    /// over the calibration tokens. Needs calibration data.
    #[default]
    Wanda,
    /// Weight norms alone (no data).
    Magnitude,
}

/// Where the ratio applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The same ratio (or `ratio_by_block`) in every block: blocks stay the same width.
    #[default]
    PerBlock,
    /// Rank units of all blocks together (scores normalised by each block's mean), so less important
    /// blocks lose more. Blocks end up different widths; GGUF export pads them back (exactly).
    Global,
}

/// What an attention-pruning unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HeadUnit {
    /// A KV head with all the query heads that read it (keeps the query/KV ratio).
    #[default]
    KvGroup,
    /// Query heads, the same number from every KV group, so grouped-query attention stays valid.
    QueryHead,
}

fn default_ff_multiple() -> usize {
    32
}
fn default_one() -> usize {
    1
}

/// Remove MLP intermediate channels: rows of gate and up, the matching columns of down.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPrune {
    /// Fraction of channels to remove, in [0, 1).
    #[serde(default)]
    pub ratio: f64,
    /// One ratio per block (overrides `ratio`; needs `scope: per-block`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_by_block: Option<Vec<f64>>,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub criterion: Criterion,
    /// Kept channels per block are a multiple of this (32 or 64 suit the 32-wide GGUF blocks and SIMD kernels).
    #[serde(default = "default_ff_multiple")]
    pub keep_multiple: usize,
}

/// Remove attention heads, GQA-aware.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadPrune {
    /// Fraction of query heads to remove, in [0, 1).
    #[serde(default)]
    pub ratio: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_by_block: Option<Vec<f64>>,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub criterion: Criterion,
    #[serde(default)]
    pub unit: HeadUnit,
}

/// How blocks are scored for depth pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BlockCriterion {
    /// 1 − mean cosine similarity between a block's input and output hidden states on calibration text
    /// (a block that barely turns the residual stream matters little). Needs calibration data.
    #[default]
    Cosine,
}

/// Remove whole blocks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DepthPrune {
    /// How many blocks to remove.
    pub blocks: usize,
    #[serde(default)]
    pub criterion: BlockCriterion,
    /// Blocks never removed (e.g. the first, which often matters more than its score says).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<usize>,
}

/// Options of `prune`: any of the three kinds, applied in one pass from one set of calibration statistics.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp: Option<ChannelPrune>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<HeadPrune>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<DepthPrune>,
    /// Keep at least this many units of each kind in every block.
    #[serde(default = "default_one")]
    pub min_keep: usize,
    /// Score on only the first this many calibration sequences (the recipe's calibration set may be larger
    /// for a later `distill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
}

fn ratio_issues(field: &'static str, ratio: f64, by_block: Option<&Vec<f64>>, scope: Scope, n_layers: Option<usize>, out: &mut Vec<OptionIssue>) {
    let bad = |r: f64| !(0.0..1.0).contains(&r);
    if bad(ratio) {
        out.push(OptionIssue { field, message: format!("ratio = {ratio} must be in [0, 1), e.g. 0.25 to remove a quarter") });
    }
    if let Some(v) = by_block {
        if let Some(r) = v.iter().find(|r| bad(**r)) {
            out.push(OptionIssue { field, message: format!("ratio_by_block has {r}; every ratio must be in [0, 1)") });
        }
        if scope == Scope::Global {
            out.push(OptionIssue { field, message: "ratio_by_block needs scope: per-block (a global ranking has one ratio)".into() });
        }
        if let Some(n) = n_layers.filter(|n| *n != v.len()) {
            out.push(OptionIssue { field, message: format!("ratio_by_block has {} ratios, the model has {n} blocks", v.len()) });
        }
    }
}

impl PruneOptions {
    pub fn needs_calibration(&self) -> bool {
        self.mlp.as_ref().is_some_and(|m| m.criterion == Criterion::Wanda)
            || self.heads.as_ref().is_some_and(|h| h.criterion == Criterion::Wanda)
            || self.depth.is_some()
    }

    /// Problems found without a model (`n_layers: None`) or against one.
    pub fn issues(&self, n_layers: Option<usize>) -> Vec<OptionIssue> {
        let mut out = Vec::new();
        if self.mlp.is_none() && self.heads.is_none() && self.depth.is_none() {
            out.push(OptionIssue { field: "mlp", message: "nothing to prune: give at least one of `mlp`, `heads`, `depth`".into() });
        }
        if self.samples == Some(0) {
            out.push(OptionIssue { field: "samples", message: "must be at least 1".into() });
        }
        if self.min_keep == 0 {
            out.push(OptionIssue { field: "min_keep", message: "must be at least 1".into() });
        }
        if let Some(m) = &self.mlp {
            ratio_issues("mlp", m.ratio, m.ratio_by_block.as_ref(), m.scope, n_layers, &mut out);
            if m.keep_multiple == 0 {
                out.push(OptionIssue { field: "mlp", message: "keep_multiple must be at least 1 (32 or 64 suit GGUF and SIMD kernels)".into() });
            }
        }
        if let Some(h) = &self.heads {
            ratio_issues("heads", h.ratio, h.ratio_by_block.as_ref(), h.scope, n_layers, &mut out);
        }
        if let (Some(d), Some(n)) = (&self.depth, n_layers) {
            if d.blocks >= n {
                out.push(OptionIssue { field: "depth", message: format!("blocks = {} would leave nothing of the model's {n} blocks", d.blocks) });
            }
            if let Some(k) = d.keep.iter().find(|k| **k >= n) {
                out.push(OptionIssue { field: "depth", message: format!("keep lists block {k}, the model has blocks 0..{}", n - 1) });
            }
            if n.saturating_sub(d.keep.len()) < d.blocks {
                out.push(OptionIssue { field: "depth", message: format!("cannot remove {} blocks while keeping {} of {n}", d.blocks, d.keep.len()) });
            }
        }
        out
    }
}

/// What the reconstructed projections are fitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReconstructTarget {
    /// The original block's attention / MLP output on the same (pruned model's) input: each block makes up
    /// for its own removed channels.
    #[default]
    Local,
    /// The original model's residual stream at the same point: also absorbs what earlier pruning (and
    /// removed blocks) changed upstream.
    Stream,
}

fn default_ridge() -> f64 {
    1e-3
}

/// Options of `reconstruct`: refit o_proj and down_proj by ridge least squares on calibration activations.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconstructOptions {
    /// Ridge term as a fraction of the mean diagonal of the input Gram matrix.
    #[serde(default = "default_ridge")]
    pub ridge: f64,
    #[serde(default)]
    pub target: ReconstructTarget,
    /// Refit projections whose input was not pruned too (only meaningful with `target: stream`).
    #[serde(default)]
    pub all_blocks: bool,
    /// Fit on only the first this many calibration sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
}

impl ReconstructOptions {
    pub fn issues(&self) -> Vec<OptionIssue> {
        let mut out = Vec::new();
        if self.samples == Some(0) {
            out.push(OptionIssue { field: "samples", message: "must be at least 1".into() });
        }
        if !(self.ridge > 0.0 && self.ridge < 1.0) {
            out.push(OptionIssue { field: "ridge", message: format!("ridge = {} must be in (0, 1), typically 1e-3", self.ridge) });
        }
        out
    }
}

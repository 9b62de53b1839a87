//! edgeforge-prune: structured pruning that makes models genuinely smaller (tensors shrink, blocks go),
//! and the least-squares reconstruction that recovers much of the loss before any training.
//!
//! - `prune`: MLP channels, attention heads (whole KV groups, or query heads evenly within groups) and
//!   whole blocks, scored by Wanda-style |W|·‖X‖, weight magnitude, or (blocks) how little a block turns
//!   the residual stream; ratios per block or global, kept widths a multiple of 32/64.
//! - `prune-vocab`: keep the tokens a corpus uses (plus bytes, special tokens, merge intermediates), shrink
//!   the embedding and output head, remap the tokenizer.
//! - `reconstruct`: ridge refit of o_proj and down_proj against the original model's block outputs.

mod options;
mod prune_pass;
mod reconstruct;
mod scores;
mod select;
mod shrink;
mod stats;
mod vocab_pass;

use edgeforge_core::pass::PassError;
use edgeforge_runtime::RuntimeError;

pub use options::{BlockCriterion, ChannelPrune, Criterion, DepthPrune, HeadPrune, HeadUnit, PruneOptions, ReconstructOptions, ReconstructTarget, Scope};
pub use prune_pass::Prune;
pub use reconstruct::Reconstruct;
pub use vocab_pass::{PruneVocab, PruneVocabOptions};
pub use shrink::{keep_channels, keep_heads, refresh_config, remove_blocks};

fn runtime_error(e: RuntimeError) -> PassError {
    PassError::Tensor { tensor: "(forward)".into(), message: e.to_string() }
}

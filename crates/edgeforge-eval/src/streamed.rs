//! Perplexity of a model larger than memory: layer by layer instead of token by token.
//!
//! The normal evaluation holds every layer's weights and runs each chunk through all of them. Here the
//! chunks' hidden states are held instead (a group of chunks at a time, `activation_budget` bytes), and the
//! weights of one block at a time are read from the model (views into the GGUF's map), run on every chunk
//! of the group, and released. Peak memory is one block's weights, the group's hidden states, the embedding
//! and the head: flat in depth. Each block sees whole chunks (batch = ctx), so the figure equals the normal
//! evaluation's with `--batch` equal to `--ctx`.

use std::ops::ControlFlow;

use edgeforge_core::Model;
use edgeforge_runtime::{head_from_model, layer_from_model, Block, BlockDims, LlamaRuntime, Rounding};

use crate::error::{EvalError, Result};
use crate::perplexity::{score_chunk, ChunkProgress, NllStats, PerplexityOptions, PerplexityResult};

/// Hidden states held at once when the caller gives no budget: 256 MiB.
pub const DEFAULT_ACTIVATION_BUDGET: usize = 256 << 20;

/// llama.cpp's perplexity protocol (see `perplexity`), computed one block at a time over groups of chunks.
pub fn perplexity_streamed(
    model: &Model,
    rounding: Rounding,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    activation_budget: usize,
    mut on_chunk: impl FnMut(ChunkProgress) -> ControlFlow<()>,
) -> Result<PerplexityResult> {
    let n_chunks = opts.chunk_count(tokens.len())?;
    let (ctx, first) = (opts.ctx, opts.ctx / 2);
    let mut head = LlamaRuntime::new(head_from_model(model)?)?;
    head.set_rounding(rounding);
    let c = &model.config;
    let per_chunk = ctx * c.n_embd * std::mem::size_of::<f32>();
    let group = (activation_budget / per_chunk.max(1)).clamp(1, n_chunks);
    let dims = BlockDims { n_embd: c.n_embd, head_dim: c.head_dim, rope_base: c.rope_base, rms_eps: c.rms_eps };

    let mut stats = NllStats::default();
    let mut running = Vec::with_capacity(n_chunks);
    for g0 in (0..n_chunks).step_by(group) {
        let chunks: Vec<Vec<u32>> = (g0..(g0 + group).min(n_chunks)).map(|i| opts.chunk(tokens, i, bos)).collect();
        let mut hidden = chunks.iter().map(|ch| head.embed(ch)).collect::<Result<Vec<_>, _>>()?;
        for l in 0..c.n_layers {
            let mut layer = layer_from_model(model, l)?;
            layer.set_rounding(rounding);
            let block = Block::new(layer, dims)?;
            for x in &mut hidden {
                block.run(x, ctx)?;
            }
            drop(block);
            model.release_block(l);
        }
        for (chunk, x) in chunks.iter().zip(&hidden) {
            let logits = head.head_logits(&x[first * c.n_embd..], ctx - first)?;
            score_chunk(&logits, chunk, first, head.vocab_size(), &mut stats);
            running.push(stats.perplexity());
            let progress = ChunkProgress { chunks_done: running.len(), chunks_total: n_chunks, tokens_scored: stats.count, perplexity: stats.perplexity() };
            if on_chunk(progress).is_break() {
                return Err(EvalError::Cancelled);
            }
        }
    }
    Ok(PerplexityResult::of(&stats, n_chunks, ctx, ctx, tokens.len(), running))
}

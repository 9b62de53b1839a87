//! The forward pass: one code path for batched prefill and single-token decode. Float linears and
//! attention products go through `kernels::matmul` (gemm), packed linears through `kernels::qmatmul`;
//! row-wise steps run in parallel over rows.

use rayon::prelude::*;

use crate::block::{self, linear, sized, BlockDims, LayerCache};
use crate::error::RuntimeError;
use crate::kernels::matmul::Threads;
use crate::kv_cache::KvCache;
use crate::ops;
use crate::rope::{RopeTable, RopeTables};
use crate::weights::{LayerWeights, LlamaWeights};

/// Where a layer's linear inputs are shown to `run_layer`'s capture: the normed input of q/k/v, the
/// attention heads feeding o_proj, the normed input of gate/up, and the SwiGLU product feeding down_proj.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureSite {
    Attention,
    AttentionOutput,
    FeedForward,
    FeedForwardDown,
}

pub struct LlamaRuntime {
    w: LlamaWeights,
    kv_width: usize,
    attention: block::Attention,
}

impl LlamaRuntime {
    pub fn new(w: LlamaWeights) -> Result<Self, RuntimeError> {
        w.validate()?;
        let kv_width = w.max_kv_width();
        Ok(Self { w, kv_width, attention: block::Attention::Exact })
    }

    pub fn vocab_size(&self) -> usize {
        self.w.vocab_size
    }

    pub fn n_embd(&self) -> usize {
        self.w.n_embd
    }

    /// Set how every block weight rounds its activations: `Rounding::Exact` (f32, the default) or
    /// `Rounding::Q8` (llama.cpp's 8-bit activation blocks and integer dot products).
    /// `Rounding::Q8` also computes attention as llama.cpp's default does (f16 KV cache, flash attention:
    /// `block::Attention::LlamaCpp`), so that perplexity reproduces llama-perplexity's figure.
    pub fn set_rounding(&mut self, rounding: crate::Rounding) {
        self.attention = if rounding == crate::Rounding::Q8 { block::Attention::LlamaCpp } else { block::Attention::Exact };
        let w = &mut self.w;
        w.token_embd.set_rounding(rounding);
        if let Some(o) = &mut w.output {
            o.set_rounding(rounding);
        }
        for l in &mut w.layers {
            l.set_rounding(rounding);
        }
    }

    pub fn weights(&self) -> &LlamaWeights {
        &self.w
    }

    pub fn new_cache(&self, max_tokens: usize) -> KvCache {
        KvCache::new(self.w.layers.len(), self.kv_width, max_tokens)
    }

    /// Run `tokens` at positions `cache.len()..`, append their keys and values to the cache, and return the
    /// logits of `tokens[logits_from..]`, row-major `[tokens.len() - logits_from, vocab]`.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32], logits_from: usize) -> Result<Vec<f32>, RuntimeError> {
        let mut logits = Vec::new();
        self.forward_into(cache, tokens, logits_from, &mut logits)?;
        Ok(logits)
    }

    /// `forward` into `logits` (resized, its allocation reused): a decode loop that passes the same vector
    /// every step allocates nothing per token.
    pub fn forward_into(&self, cache: &mut KvCache, tokens: &[u32], logits_from: usize, logits: &mut Vec<f32>) -> Result<(), RuntimeError> {
        let w = &self.w;
        let n = tokens.len();
        if logits_from > n {
            return Err(RuntimeError::LogitsFrom { from: logits_from, n });
        }
        if cache.k.len() != w.layers.len() || cache.width != self.kv_width {
            return Err(RuntimeError::CacheMismatch {
                cache_layers: cache.k.len(),
                cache_width: cache.width,
                model_layers: w.layers.len(),
                model_width: self.kv_width,
            });
        }
        if cache.len + n > cache.capacity {
            return Err(RuntimeError::CacheFull { capacity: cache.capacity, used: cache.len, requested: n });
        }
        if let Some((position, &id)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= w.vocab_size) {
            return Err(RuntimeError::TokenOutOfRange { id, position, vocab_size: w.vocab_size });
        }
        if n == 0 {
            logits.clear();
            return Ok(());
        }

        if n > WORKSPACE_MAX_TOKENS {
            // A long batch (a prompt) gets buffers of its own, freed after the call: kept with the cache they
            // would stay resident, sized for the prompt, while the context decodes.
            return self.forward_with(cache, tokens, logits_from, &mut Workspace::default(), logits);
        }
        // The context's buffers, moved out for the call and put back whatever happens.
        let mut ws = std::mem::take(&mut cache.ws);
        let out = self.forward_with(cache, tokens, logits_from, &mut ws, logits);
        cache.ws = ws;
        out
    }

    /// `forward_into` with the buffers `ws`.
    fn forward_with(&self, cache: &mut KvCache, tokens: &[u32], logits_from: usize, ws: &mut Workspace, logits: &mut Vec<f32>) -> Result<(), RuntimeError> {
        let w = &self.w;
        let (n, e) = (tokens.len(), w.n_embd);
        let mut x = std::mem::take(&mut ws.x);
        x.resize(n * e, 0.0);
        let out = (|| {
            x.par_chunks_mut(e).zip(tokens.par_iter()).try_for_each(|(row, &t)| w.token_embd.row_into(t as usize, row, "token_embd"))?;
            self.scale_embeddings(&mut x);
            let mut ropes = RopeTables::default();
            let d = BlockDims::of(w);
            for (li, layer) in w.layers.iter().enumerate() {
                let rope = ropes.get(w.head_dim, &block::rope_params(layer, d), cache.len, n, self.attention == block::Attention::LlamaCpp);
                self.layer(li, layer, &mut x, n, cache, &rope, ws, &mut |_, _| {})?;
            }
            cache.len += n;
            self.head_logits_into(&x[logits_from * e..], n - logits_from, &mut ws.normed, logits)
        })();
        ws.x = x;
        out
    }

    /// Embedding rows times the model's embedding scale (Gemma's √n_embd), if it has one.
    fn scale_embeddings(&self, x: &mut [f32]) {
        if let Some(s) = self.w.head.embd_scale {
            x.par_iter_mut().for_each(|v| *v *= s);
        }
    }

    /// The output norm of hidden states `x` (`[n, n_embd]`): what the output head reads.
    pub fn output_normed(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut normed = vec![0f32; n * self.w.n_embd];
        ops::rms_norm(&x[..n * self.w.n_embd], &self.w.output_norm, self.w.rms_eps, &mut normed);
        normed
    }

    /// Logits `[n, vocab]` of the last layer's hidden states `x` (`[n, n_embd]`): output norm, then head.
    pub fn head_logits(&self, x: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let mut logits = Vec::new();
        self.head_logits_into(x, n, &mut Vec::new(), &mut logits)?;
        Ok(logits)
    }

    /// `head_logits` into `logits`, with `normed` for the normed states (both resized, allocations reused).
    fn head_logits_into(&self, x: &[f32], n: usize, normed: &mut Vec<f32>, logits: &mut Vec<f32>) -> Result<(), RuntimeError> {
        let w = &self.w;
        let normed = block::sized(normed, n * w.n_embd);
        ops::rms_norm(&x[..n * w.n_embd], &w.output_norm, w.rms_eps, normed);
        let head = w.output.as_ref().unwrap_or(&w.token_embd);
        let logits = block::sized(logits, n * w.vocab_size);
        linear(normed, n, head, w.vocab_size, w.n_embd, logits, "output")?;
        if let Some(c) = w.head.final_softcap {
            // ggml's order: scale by 1/c, tanh, scale by c.
            let inv = 1.0 / c;
            logits.par_iter_mut().for_each(|z| *z = c * (*z * inv).tanh());
        }
        Ok(())
    }

    /// Swap the token embedding (and, when tied, the output head), e.g. to measure its quantization alone;
    /// returns the previous one.
    pub fn replace_token_embd(&mut self, table: crate::Linear) -> crate::Linear {
        std::mem::replace(&mut self.w.token_embd, table)
    }

    /// Swap the untied output head, if the model has one; returns the previous one.
    pub fn replace_output(&mut self, head: crate::Linear) -> Option<crate::Linear> {
        self.w.output.as_mut().map(|o| std::mem::replace(o, head))
    }

    /// Layers in the model.
    pub fn n_layers(&self) -> usize {
        self.w.layers.len()
    }

    /// Token embeddings `[tokens.len(), n_embd]`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let e = self.w.n_embd;
        let mut x = vec![0f32; tokens.len() * e];
        for (position, (&t, row)) in tokens.iter().zip(x.chunks_exact_mut(e)).enumerate() {
            if t as usize >= self.w.vocab_size {
                return Err(RuntimeError::TokenOutOfRange { id: t, position, vocab_size: self.w.vocab_size });
            }
            self.w.token_embd.row_into(t as usize, row, "token_embd")?;
        }
        self.scale_embeddings(&mut x);
        Ok(x)
    }

    /// Run layer `li` alone on hidden states `x` (`[n, n_embd]`, positions 0..n), in place, showing `capture`
    /// the input of each of its linear layers. Calibration passes use this to go through a model one block at
    /// a time.
    pub fn run_layer(&self, li: usize, x: &mut [f32], n: usize, capture: &mut dyn FnMut(CaptureSite, &[f32])) -> Result<(), RuntimeError> {
        let l = self.w.layers.get(li).ok_or(RuntimeError::BadShape { what: "layer index", value: li, why: "past the last layer" })?;
        if x.len() != n * self.w.n_embd {
            return Err(RuntimeError::WeightLength { tensor: "hidden states".into(), expected: n * self.w.n_embd, got: x.len() });
        }
        let mut cache = KvCache::new(self.w.layers.len(), self.kv_width, n);
        let rope = RopeTable::new(self.w.head_dim, &block::rope_params(l, BlockDims::of(&self.w)), 0, n);
        self.layer(li, l, x, n, &mut cache, &rope, &mut Workspace::default(), capture)
    }

    /// Swap in new weights for one layer (e.g. after quantizing it), checked like the originals.
    pub fn set_layer(&mut self, li: usize, layer: LayerWeights) -> Result<(), RuntimeError> {
        let old = self.w.layers.get_mut(li).ok_or(RuntimeError::BadShape { what: "layer index", value: li, why: "past the last layer" })?;
        let previous = std::mem::replace(old, layer);
        if let Err(e) = self.w.validate() {
            self.w.layers[li] = previous;
            return Err(e);
        }
        self.kv_width = self.w.max_kv_width();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        li: usize,
        l: &LayerWeights,
        x: &mut [f32],
        n: usize,
        cache: &mut KvCache,
        rope: &RopeTable,
        s: &mut Workspace,
        capture: &mut dyn FnMut(CaptureSite, &[f32]),
    ) -> Result<(), RuntimeError> {
        let d = BlockDims::of(&self.w);
        let e = d.n_embd;
        let xn = sized(&mut s.bufs[0], n * e);
        block::attn_norm(l, d, x, xn);
        capture(CaptureSite::Attention, xn);
        let layer_cache = LayerCache { k: &mut cache.k[li], v: &mut cache.v[li], width: cache.width, past: cache.len };
        block::attention_heads_into(l, d, xn, n, layer_cache, rope, Threads::Pool, self.attention, &mut s.attn, &mut s.heads)?;
        capture(CaptureSite::AttentionOutput, &s.heads);
        block::add_attention_output(l, d, &s.heads, n, x, &mut s.bufs[1], Threads::Pool)?;

        let xn = sized(&mut s.bufs[0], n * e);
        block::ffn_norm(l, d, x, xn);
        capture(CaptureSite::FeedForward, xn);
        block::ffn_hidden_into(l, d, xn, n, Threads::Pool, self.attention, &mut s.up, &mut s.hidden)?;
        capture(CaptureSite::FeedForwardDown, &s.hidden);
        block::add_ffn_output(l, d, &s.hidden, n, x, &mut s.bufs[1], Threads::Pool)
    }
}

/// Largest call whose buffers are kept with the KV cache (decode steps and short batches).
const WORKSPACE_MAX_TOKENS: usize = 16;

/// Buffers of the forward pass (hidden states, normed inputs, q/k/v, heads, the feed-forward's hidden
/// state): kept with a KV cache, so every call on that context reuses them and decode steps do not allocate
/// them again.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    x: Vec<f32>,
    bufs: [Vec<f32>; 2],
    attn: block::AttnScratch,
    heads: Vec<f32>,
    up: Vec<f32>,
    hidden: Vec<f32>,
    /// The output norm's states (the head's input).
    normed: Vec<f32>,
}

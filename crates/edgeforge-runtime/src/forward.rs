//! The forward pass: one code path for batched prefill and single-token decode. Float linears and
//! attention products go through `kernels::matmul` (gemm), packed linears through `kernels::qmatmul`;
//! row-wise steps run in parallel over rows.

use rayon::prelude::*;

use crate::error::RuntimeError;
use crate::kernels::matmul::{matmul, MatRef, Threads};
use crate::kv_cache::KvCache;
use crate::ops;
use crate::rope::RopeTable;
use crate::weights::{LayerWeights, Linear, LlamaWeights};

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
}

/// `y[n × out] = x[n × in] · W^T` for a row-major `[out, in]` weight, f32 (gemm) or packed (qmatmul).
fn linear(x: &[f32], n: usize, w: &Linear, out_dim: usize, in_dim: usize, y: &mut [f32], what: &'static str) -> Result<(), RuntimeError> {
    w.forward(x, n, out_dim, in_dim, y, what)
}

impl LlamaRuntime {
    pub fn new(w: LlamaWeights) -> Result<Self, RuntimeError> {
        w.validate()?;
        let kv_width = w.max_kv_width();
        Ok(Self { w, kv_width })
    }

    pub fn vocab_size(&self) -> usize {
        self.w.vocab_size
    }

    pub fn n_embd(&self) -> usize {
        self.w.n_embd
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
        let w = &self.w;
        let (n, e) = (tokens.len(), w.n_embd);
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
            return Ok(Vec::new());
        }

        let mut x = vec![0f32; n * e];
        x.par_chunks_mut(e).zip(tokens.par_iter()).try_for_each(|(row, &t)| w.token_embd.row_into(t as usize, row, "token_embd"))?;
        let rope = RopeTable::new(w.head_dim, w.rope_base, cache.len, n);
        let mut scratch = Scratch::default();
        for (li, layer) in w.layers.iter().enumerate() {
            self.layer(li, layer, &mut x, n, cache, &rope, &mut scratch, &mut |_, _| {})?;
        }
        cache.len += n;

        let m = n - logits_from;
        let mut normed = vec![0f32; m * e];
        ops::rms_norm(&x[logits_from * e..], &w.output_norm, w.rms_eps, &mut normed);
        let head = w.output.as_ref().unwrap_or(&w.token_embd);
        let mut logits = vec![0f32; m * w.vocab_size];
        linear(&normed, m, head, w.vocab_size, e, &mut logits, "output")?;
        Ok(logits)
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
        let rope = RopeTable::new(self.w.head_dim, self.w.rope_base, 0, n);
        self.layer(li, l, x, n, &mut cache, &rope, &mut Scratch::default(), capture)
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
        s: &mut Scratch,
        capture: &mut dyn FnMut(CaptureSite, &[f32]),
    ) -> Result<(), RuntimeError> {
        let w = &self.w;
        let (e, hd) = (w.n_embd, w.head_dim);
        let (qd, kvd, ff) = (l.n_heads * hd, l.n_kv_heads * hd, l.n_ff);
        let past = cache.len;
        let total = past + n;

        // Attention.
        let xn = s.buf(0, n * e);
        ops::rms_norm(x, &l.attn_norm, w.rms_eps, xn);
        let xn = &*xn;
        capture(CaptureSite::Attention, xn);
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        linear(xn, n, &l.wq, qd, e, &mut q, "attn_q")?;
        linear(xn, n, &l.wk, kvd, e, &mut k, "attn_k")?;
        linear(xn, n, &l.wv, kvd, e, &mut v, "attn_v")?;
        rope.apply(&mut q, qd);
        rope.apply(&mut k, kvd);
        let (kc, vc) = (&mut cache.k[li], &mut cache.v[li]);
        let cw = cache.width;
        for r in 0..n {
            kc[(past + r) * cw..][..kvd].copy_from_slice(&k[r * kvd..(r + 1) * kvd]);
            vc[(past + r) * cw..][..kvd].copy_from_slice(&v[r * kvd..(r + 1) * kvd]);
        }
        let (kc, vc) = (&*kc, &*vc);

        let group = l.n_heads / l.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut heads_out = vec![0f32; n * qd];
        let per_head: Vec<Result<Vec<f32>, RuntimeError>> = (0..l.n_heads)
            .into_par_iter()
            .map(|h| {
                let kvh = h / group;
                let mut scores = vec![0f32; n * total];
                let qh = MatRef { data: &q, offset: h * hd, rows: n, cols: hd, row_stride: qd, col_stride: 1 };
                let kt = MatRef { data: kc, offset: kvh * hd, rows: hd, cols: total, row_stride: 1, col_stride: cw };
                if !matmul(&mut scores, 0, total, qh, kt, false, Threads::Single) {
                    return Err(RuntimeError::Kernel { what: "attention scores" });
                }
                for (r, row) in scores.chunks_exact_mut(total).enumerate() {
                    for sv in row.iter_mut() {
                        *sv *= scale;
                    }
                    ops::softmax_prefix(row, past + r + 1);
                }
                let mut out = vec![0f32; n * hd];
                let p = MatRef::row_major(&scores, n, total);
                let vh = MatRef { data: vc, offset: kvh * hd, rows: total, cols: hd, row_stride: cw, col_stride: 1 };
                if !matmul(&mut out, 0, hd, p, vh, false, Threads::Single) {
                    return Err(RuntimeError::Kernel { what: "attention values" });
                }
                Ok(out)
            })
            .collect();
        for (h, out) in per_head.into_iter().enumerate() {
            let out = out?;
            for r in 0..n {
                heads_out[r * qd + h * hd..][..hd].copy_from_slice(&out[r * hd..(r + 1) * hd]);
            }
        }
        capture(CaptureSite::AttentionOutput, &heads_out);
        let proj = s.buf(1, n * e);
        linear(&heads_out, n, &l.wo, e, qd, proj, "attn_output")?;
        ops::add_in_place(x, proj);

        // Feed-forward (SwiGLU).
        let xn = s.buf(0, n * e);
        ops::rms_norm(x, &l.ffn_norm, w.rms_eps, xn);
        let xn = &*xn;
        capture(CaptureSite::FeedForward, xn);
        let mut gate = vec![0f32; n * ff];
        let mut up = vec![0f32; n * ff];
        linear(xn, n, &l.w_gate, ff, e, &mut gate, "ffn_gate")?;
        linear(xn, n, &l.w_up, ff, e, &mut up, "ffn_up")?;
        ops::silu_mul(&mut gate, &up);
        capture(CaptureSite::FeedForwardDown, &gate);
        let down = s.buf(1, n * e);
        linear(&gate, n, &l.w_down, e, ff, down, "ffn_down")?;
        ops::add_in_place(x, down);
        Ok(())
    }
}

/// Reused per-call buffers of the model width.
#[derive(Default)]
struct Scratch {
    bufs: [Vec<f32>; 2],
}

impl Scratch {
    fn buf(&mut self, i: usize, len: usize) -> &mut [f32] {
        let b = &mut self.bufs[i];
        b.resize(len, 0.0);
        &mut b[..len]
    }
}

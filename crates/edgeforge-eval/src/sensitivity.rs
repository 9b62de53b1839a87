//! Which parts of a model suffer most from quantization: each unit (one tensor, one block, or one kind of
//! projection across blocks) is quantized alone, the rest left as it is, and the KL divergence of the
//! next-token distributions from the untouched model is measured at perplexity's positions. A recipe
//! then keeps the top of the ranking at 8 bits (`overrides`).

use std::ops::ControlFlow;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use edgeforge_core::{Model, Tensor, TensorData};
use edgeforge_runtime::{layer_from_model, weights_from_model, LlamaRuntime};

use crate::error::{EvalError, Result};
use crate::kld::{compare_to_base, log_probs};
use crate::perplexity::PerplexityOptions;

/// What is quantized alone at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// Every projection of every block (`blk.7.ffn_down.weight`).
    Tensor,
    /// All projections of one block (`blk.7.*`).
    Block,
    /// One projection kind across every block (`blk.*.ffn_down.weight`).
    Kind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitSensitivity {
    /// A glob over tensor names that selects the unit (usable as a recipe override).
    pub unit: String,
    pub tensors: Vec<String>,
    pub mean_kld: f64,
    pub top1_agreement_frac: f64,
    pub perplexity: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SensitivityResult {
    pub granularity: Granularity,
    pub base_perplexity: f64,
    pub ctx: usize,
    pub chunks: usize,
    pub positions: usize,
    /// Most sensitive first.
    pub units: Vec<UnitSensitivity>,
}

const PROJECTIONS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// The units of `model` at `granularity`: (glob, tensor names, block indices touched).
fn units(model: &Model, granularity: Granularity) -> Vec<(String, Vec<String>, Vec<usize>)> {
    let n_layers = model.config.n_layers;
    let present = |l: usize, p: &str| {
        let name = format!("blk.{l}.{p}.weight");
        model.tensors.contains_key(&name).then_some(name)
    };
    match granularity {
        Granularity::Tensor => (0..n_layers)
            .flat_map(|l| PROJECTIONS.iter().filter_map(move |p| present(l, p).map(|n| (n.clone(), vec![n], vec![l]))))
            .collect(),
        Granularity::Block => (0..n_layers)
            .map(|l| (format!("blk.{l}.*"), PROJECTIONS.iter().filter_map(|p| present(l, p)).collect(), vec![l]))
            .collect(),
        Granularity::Kind => PROJECTIONS
            .iter()
            .map(|p| (format!("blk.*.{p}.weight"), (0..n_layers).filter_map(|l| present(l, p)).collect(), (0..n_layers).collect()))
            .collect(),
    }
}

/// Rank `model`'s units by the KL divergence `perturb` (e.g. round-to-nearest at the target format)
/// causes when applied to that unit alone. The model is changed while measuring and restored before
/// returning, also on error.
pub fn sensitivity(
    model: &mut Model,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    granularity: Granularity,
    perturb: &(dyn Fn(&str, &Tensor) -> std::result::Result<TensorData, String> + Sync),
    mut on_unit: impl FnMut(usize, usize, &str) -> ControlFlow<()>,
) -> Result<SensitivityResult> {
    let mut runtime = LlamaRuntime::new(weights_from_model(model)?)?;
    let n_chunks = opts.chunk_count(tokens.len())?;
    let chunks: Vec<Vec<u32>> = (0..n_chunks).map(|i| opts.chunk(tokens, i, bos)).collect();
    let first = opts.ctx / 2;
    let vocab = runtime.vocab_size();
    let mut cache = runtime.new_cache(opts.ctx);

    // The untouched model's log-probabilities at every scored position, computed once.
    let mut base: Vec<Vec<f32>> = Vec::with_capacity(n_chunks);
    let mut base_nll = 0f64;
    for chunk in &chunks {
        cache.clear();
        let logits = runtime.forward(&mut cache, chunk, first)?;
        let lp: Vec<f32> = logits.par_chunks(vocab).flat_map_iter(|row| log_probs(row).into_iter().map(|v| v as f32)).collect();
        base_nll += (first..opts.ctx - 1).map(|pos| -f64::from(lp[(pos - first) * vocab + chunk[pos + 1] as usize])).sum::<f64>();
        base.push(lp);
    }
    let positions = n_chunks * (opts.ctx - 1 - first);

    let all = units(model, granularity);
    let mut ranked = Vec::with_capacity(all.len());
    for (k, (glob, names, layers)) in all.iter().enumerate() {
        if on_unit(k, all.len(), glob).is_break() {
            return Err(EvalError::Cancelled);
        }
        // Swap the unit's tensors for their perturbed versions, measure, swap back.
        let mut saved: Vec<(String, TensorData)> = Vec::with_capacity(names.len());
        let mut measured = (|| -> Result<UnitSensitivity> {
            for name in names {
                let tensor = model.tensors.get_mut(name).ok_or_else(|| EvalError::Options(format!("tensor {name} vanished")))?;
                let new = perturb(name, tensor).map_err(|why| EvalError::Options(format!("{name}: {why}")))?;
                saved.push((name.clone(), std::mem::replace(&mut tensor.data, new)));
            }
            for &l in layers {
                runtime.set_layer(l, layer_from_model(model, l)?)?;
            }
            let (mut kl, mut agree, mut nll) = (0f64, 0usize, 0f64);
            for (chunk, lp) in chunks.iter().zip(&base) {
                cache.clear();
                let logits = runtime.forward(&mut cache, chunk, first)?;
                let per: Vec<(f64, bool, f64)> = (first..opts.ctx - 1)
                    .into_par_iter()
                    .map(|pos| {
                        let r = (pos - first) * vocab..(pos - first + 1) * vocab;
                        compare_to_base(&lp[r.clone()], &logits[r], chunk[pos + 1] as usize)
                    })
                    .collect();
                for (d, same, n) in per {
                    kl += d;
                    agree += usize::from(same);
                    nll += n;
                }
            }
            let n = positions as f64;
            Ok(UnitSensitivity {
                unit: glob.clone(),
                tensors: names.clone(),
                mean_kld: kl / n,
                top1_agreement_frac: agree as f64 / n,
                perplexity: (nll / n).exp(),
            })
        })();
        for (name, data) in saved.drain(..) {
            if let Some(t) = model.tensors.get_mut(&name) {
                t.data = data;
            }
        }
        for &l in layers {
            if let Err(e) = layer_from_model(model, l).map_err(EvalError::from).and_then(|w| runtime.set_layer(l, w).map_err(EvalError::from)) {
                measured = Err(e);
            }
        }
        ranked.push(measured?);
    }
    ranked.sort_by(|a, b| b.mean_kld.total_cmp(&a.mean_kld).then_with(|| a.unit.cmp(&b.unit)));
    Ok(SensitivityResult {
        granularity,
        base_perplexity: (base_nll / positions as f64).exp(),
        ctx: opts.ctx,
        chunks: n_chunks,
        positions,
        units: ranked,
    })
}

//! Measured sensitivity for the byte-budget allocation (see the module above for the model).

use std::collections::BTreeMap;

use rayon::prelude::*;

use edgeforge_core::pass::PassError;
use edgeforge_core::scheme::Scheme;
use edgeforge_core::{Model, TensorData};
use edgeforge_runtime::{layer_from_model_as, weights_from_model_as, CaptureSite, Linear, LlamaRuntime, RuntimeError, WeightStorage};

use super::{Choice, TensorChoices};

/// How much calibration text the measurement uses.
#[derive(Debug, Clone, Copy)]
pub struct MeasureOptions {
    /// Calibration sequences (the first ones of the recipe's calibration set).
    pub sequences: usize,
    /// Tokens of each sequence that are run.
    pub seq_len: usize,
    /// Scored positions at the end of each sequence (the KL divergence is averaged over them).
    pub positions: usize,
    /// Consecutive blocks whose tensors of one kind are measured together.
    pub group_layers: usize,
}

/// The candidates of every budgeted tensor with their predicted KL, and what is needed to measure the
/// quantized model's KL on the same text afterwards.
pub struct Calibrated {
    pub choices: Vec<TensorChoices>,
    /// Groups whose KL divergence was measured.
    pub groups: usize,
    sequences: Vec<Vec<u32>>,
    /// Per sequence: the unquantized model's log-probabilities at the scored positions.
    base: Vec<Vec<f32>>,
    positions: usize,
}

fn rt_err(e: RuntimeError) -> PassError {
    PassError::Tensor { tensor: "(sensitivity forward)".into(), message: e.to_string() }
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
    let lse = max + sum.ln() as f32;
    row.iter().map(|&v| v - lse).collect()
}

/// Summed KL(base ‖ model) over the rows of `logits` (`[rows, vocab]`) against `base` log-probabilities.
fn kl_sum(base: &[f32], logits: &[f32], vocab: usize) -> f64 {
    base.par_chunks(vocab)
        .zip(logits.par_chunks(vocab))
        .map(|(b, l)| {
            let lp = log_softmax(l);
            b.iter().zip(&lp).map(|(&pb, &pq)| f64::from(pb).exp() * f64::from(pb - pq)).sum::<f64>()
        })
        .sum()
}

/// Index of a projection's input site, and the projection kinds the budget knows.
fn site_of(kind: &str) -> Option<usize> {
    Some(match kind {
        "attn_q" | "attn_k" | "attn_v" => 0,
        "attn_output" => 1,
        "ffn_gate" | "ffn_up" => 2,
        "ffn_down" => 3,
        _ => return None,
    })
}

fn site_index(site: CaptureSite) -> usize {
    match site {
        CaptureSite::Attention => 0,
        CaptureSite::AttentionOutput => 1,
        CaptureSite::FeedForward => 2,
        CaptureSite::FeedForwardDown => 3,
    }
}

/// `blk.L.KIND.weight` → (L, KIND).
pub fn parse_block_tensor(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?.strip_suffix(".weight")?;
    let (l, kind) = rest.split_once('.')?;
    Some((l.parse().ok()?, kind))
}

/// Per-column sums of squares of `x` (`[n, width]`), added to `acc`.
fn add_squares(acc: &mut Vec<f64>, x: &[f32], width: usize) {
    if acc.len() != width {
        *acc = vec![0.0; width];
    }
    for row in x.chunks_exact(width) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += f64::from(v) * f64::from(v);
        }
    }
}

/// Round-to-nearest of `values` into `scheme`, each block fitted with `importance`; the decoded values.
fn round_trip(scheme: Scheme, values: &[f32], row_len: usize, importance: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let bytes = scheme.quantize_rows(values, row_len, Some(importance));
    let mut out = vec![0f32; values.len()];
    // The bytes were just encoded for exactly these many elements.
    let _ = edgeforge_core::blocks::dequantize(scheme.ggml(), &bytes, &mut out);
    (bytes, out)
}

/// Σ importance_j (w − q)² over every `stride`-th row, scaled to the whole tensor.
fn weighted_error(scheme: Scheme, values: &[f32], row_len: usize, importance: &[f32], stride: usize) -> f64 {
    let rows = values.len() / row_len;
    let picked: Vec<usize> = (0..rows).step_by(stride.max(1)).collect();
    let sample: Vec<f32> = picked.iter().flat_map(|&r| values[r * row_len..(r + 1) * row_len].iter().copied()).collect();
    let (_, q) = round_trip(scheme, &sample, row_len, importance);
    let err: f64 = sample.iter().zip(&q).enumerate().map(|(i, (&a, &b))| f64::from(importance[i % row_len]) * f64::from(a - b).powi(2)).sum();
    err * rows as f64 / picked.len().max(1) as f64
}

struct Budgeted {
    name: String,
    row_len: usize,
    n_elems: usize,
    importance: Vec<f32>,
    /// (scheme, weighted error) per candidate.
    errors: Vec<(Scheme, f64)>,
}

/// Measures the sensitivity of the tensors `names` of `model` (float weights) for `candidates`. The
/// model is modified while measuring and restored before returning.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    model: &mut Model,
    sequences: &[Vec<u32>],
    names: &[String],
    candidates: &[Scheme],
    opts: MeasureOptions,
    check_cancel: &dyn Fn() -> Result<(), PassError>,
    progress: &dyn Fn(u64, u64),
) -> Result<Calibrated, PassError> {
    let mut rt = LlamaRuntime::new(weights_from_model_as(model, WeightStorage::F32)?).map_err(rt_err)?;
    let (n_layers, e, vocab) = (rt.n_layers(), rt.n_embd(), rt.vocab_size());
    let seqs: Vec<Vec<u32>> = sequences.iter().take(opts.sequences.max(1)).map(|s| s[..s.len().min(opts.seq_len)].to_vec()).collect();

    // One float forward: every layer's input per sequence, the input importance of every projection, and
    // the unquantized model's log-probabilities at the scored positions.
    let mut states: Vec<Vec<Vec<f32>>> = Vec::with_capacity(seqs.len());
    let mut site_imp: Vec<[Vec<f64>; 4]> = (0..n_layers).map(|_| Default::default()).collect();
    let mut head_imp: Vec<f64> = Vec::new();
    let mut base = Vec::with_capacity(seqs.len());
    let mut positions = 0;
    for s in &seqs {
        let n = s.len();
        let mut x = rt.embed(s).map_err(rt_err)?;
        let mut per_layer = vec![x.clone()];
        for l in 0..n_layers {
            let imp = &mut site_imp[l];
            rt.run_layer(l, &mut x, n, &mut |site, input| {
                let width = input.len() / n.max(1);
                add_squares(&mut imp[site_index(site)], input, width);
            })
            .map_err(rt_err)?;
            per_layer.push(x.clone());
        }
        add_squares(&mut head_imp, &rt.output_normed(&x, n), e);
        let p = opts.positions.min(n);
        let logits = rt.head_logits(&x[(n - p) * e..], p).map_err(rt_err)?;
        base.push(logits.par_chunks(vocab).flat_map_iter(log_softmax).collect::<Vec<f32>>());
        positions += p;
        states.push(per_layer);
    }
    check_cancel()?;

    // Importance-weighted rounding error of every tensor for every candidate.
    let mut budgeted = Vec::with_capacity(names.len());
    for name in names {
        let t = model.tensor(name)?;
        let row_len = t.row_len();
        let importance: Vec<f32> = match parse_block_tensor(name).and_then(|(l, k)| site_of(k).map(|s| (l, s))) {
            Some((l, s)) => site_imp[l][s].iter().map(|&v| v as f32).collect(),
            None if name == "token_embd.weight" && !model.tensors.contains_key("output.weight") => head_imp.iter().map(|&v| v as f32).collect(),
            None if name == "output.weight" => head_imp.iter().map(|&v| v as f32).collect(),
            None => vec![1.0; row_len],
        };
        if importance.len() != row_len {
            return Err(PassError::Tensor { tensor: name.clone(), message: format!("rows of {row_len} but inputs of width {}", importance.len()) });
        }
        let values = t.to_f32(name)?;
        let stride = (values.len() / row_len / 128).max(1);
        let mut errors: Vec<(Scheme, f64)> = Vec::new();
        for s in candidates.iter().filter_map(|s| s.for_row(row_len)) {
            if errors.iter().any(|(x, _)| *x == s) {
                continue;
            }
            // A tensor already stored in this format keeps its bytes: no error at all.
            let exact = matches!(&t.data, TensorData::Blocks { dtype, .. } if *dtype == s.ggml());
            errors.push((s, if exact { 0.0 } else { weighted_error(s, &values, row_len, &importance, stride) }));
        }
        if errors.is_empty() {
            return Err(PassError::Tensor { tensor: name.clone(), message: format!("none of the candidate formats holds rows of {row_len}") });
        }
        budgeted.push(Budgeted { name: name.clone(), row_len, n_elems: values.len(), importance, errors });
    }

    // Groups: one kind in `group_layers` consecutive blocks; anything else alone.
    let mut groups: BTreeMap<(String, usize), Vec<usize>> = BTreeMap::new();
    for (i, b) in budgeted.iter().enumerate() {
        let key = match parse_block_tensor(&b.name) {
            Some((l, kind)) => (kind.to_owned(), l / opts.group_layers.max(1)),
            None => (b.name.clone(), usize::MAX),
        };
        groups.entry(key).or_default().push(i);
    }
    let total = groups.len() as u64;
    let mut choices: Vec<Option<TensorChoices>> = vec![None; budgeted.len()];
    for (done, members) in groups.values().enumerate() {
        check_cancel()?;
        // The probe: each member's cheapest candidate.
        let probe = |b: &Budgeted| -> (Scheme, f64) {
            b.errors.iter().copied().min_by(|x, y| x.0.bytes_for(b.n_elems).cmp(&y.0.bytes_for(b.n_elems)).then(y.1.total_cmp(&x.1))).unwrap_or((Scheme::Q8_0, 0.0))
        };
        let probe_error: f64 = members.iter().map(|&i| probe(&budgeted[i]).1).sum();
        let kl = if probe_error > 0.0 {
            let swapped: Vec<(String, Scheme, usize, Vec<f32>)> = members
                .iter()
                .map(|&i| {
                    let b = &budgeted[i];
                    (b.name.clone(), probe(b).0, b.row_len, b.importance.clone())
                })
                .collect();
            group_kl(model, &mut rt, &seqs, &states, &base, &swapped, positions)?
        } else {
            0.0
        };
        let per_error = if probe_error > 0.0 { kl / probe_error } else { 0.0 };
        for &i in members {
            let b = &budgeted[i];
            choices[i] = Some(TensorChoices {
                tensor: b.name.clone(),
                choices: b
                    .errors
                    .iter()
                    .map(|&(scheme, err)| Choice { scheme, bytes: scheme.bytes_for(b.n_elems) as u64, predicted_kl: per_error * err, weighted_error: err })
                    .collect(),
            });
        }
        progress(done as u64 + 1, total);
    }
    Ok(Calibrated { choices: choices.into_iter().flatten().collect(), groups: groups.len(), sequences: seqs, base, positions })
}

/// Mean KL divergence (per scored position) when the tensors `swapped` (name, scheme, row length,
/// importance) are rounded to their scheme and everything else is left as it is.
#[allow(clippy::too_many_arguments)]
fn group_kl(
    model: &mut Model,
    rt: &mut LlamaRuntime,
    seqs: &[Vec<u32>],
    states: &[Vec<Vec<f32>>],
    base: &[Vec<f32>],
    swapped: &[(String, Scheme, usize, Vec<f32>)],
    positions: usize,
) -> Result<f64, PassError> {
    let n_layers = rt.n_layers();
    let mut saved: Vec<(String, TensorData)> = Vec::new();
    let mut first = n_layers;
    let mut layers: Vec<usize> = Vec::new();
    let mut head: Option<(bool, Vec<f32>)> = None;
    for (name, scheme, row_len, imp) in swapped {
        let t = model.tensors.get_mut(name).ok_or_else(|| PassError::Tensor { tensor: name.clone(), message: "missing".into() })?;
        let values = t.to_f32(name)?;
        let (bytes, deq) = round_trip(*scheme, &values, *row_len, imp);
        saved.push((name.clone(), std::mem::replace(&mut t.data, TensorData::Blocks { dtype: scheme.ggml(), bytes: bytes.into() })));
        match parse_block_tensor(name) {
            Some((l, _)) => {
                first = first.min(l);
                if !layers.contains(&l) {
                    layers.push(l);
                }
            }
            None => {
                first = 0;
                head = Some((name == "token_embd.weight", deq));
            }
        }
    }
    let result = (|| -> Result<f64, PassError> {
        for &l in &layers {
            rt.set_layer(l, layer_from_model_as(model, l, WeightStorage::F32)?).map_err(rt_err)?;
        }
        let mut old_head = None;
        if let Some((is_embd, deq)) = head.take() {
            old_head = Some((is_embd, if is_embd { Some(rt.replace_token_embd(Linear::F32(deq))) } else { rt.replace_output(Linear::F32(deq)) }));
        }
        let run = (|| -> Result<f64, PassError> {
            let (e, vocab) = (rt.n_embd(), rt.vocab_size());
            let mut kl = 0f64;
            for ((per_layer, b), tokens) in states.iter().zip(base).zip(seqs) {
                let n = per_layer[0].len() / e;
                // An embedding change alters the very first hidden states: start from the tokens.
                let x0 = if old_head.as_ref().is_some_and(|(is_embd, _)| *is_embd) { Some(rt.embed(tokens).map_err(rt_err)?) } else { None };
                let mut x = x0.unwrap_or_else(|| per_layer[first].clone());
                for l in first..n_layers {
                    rt.run_layer(l, &mut x, n, &mut |_, _| {}).map_err(rt_err)?;
                }
                let p = b.len() / vocab;
                let logits = rt.head_logits(&x[(n - p) * e..], p).map_err(rt_err)?;
                kl += kl_sum(b, &logits, vocab);
            }
            Ok(kl / positions.max(1) as f64)
        })();
        if let Some((is_embd, Some(old))) = old_head {
            if is_embd {
                rt.replace_token_embd(old);
            } else {
                rt.replace_output(old);
            }
        }
        run
    })();
    for (name, data) in saved {
        if let Some(t) = model.tensors.get_mut(&name) {
            t.data = data;
        }
    }
    for &l in &layers {
        rt.set_layer(l, layer_from_model_as(model, l, WeightStorage::F32)?).map_err(rt_err)?;
    }
    result
}

/// Mean KL divergence of `model` (as it is now, e.g. quantized) from the unquantized model on the
/// measurement's calibration positions.
pub fn measured_kl(model: &Model, cal: &Calibrated) -> Result<f64, PassError> {
    let rt = LlamaRuntime::new(weights_from_model_as(model, WeightStorage::Packed)?).map_err(rt_err)?;
    let vocab = rt.vocab_size();
    let mut kl = 0f64;
    for (s, b) in cal.sequences.iter().zip(&cal.base) {
        let mut cache = rt.new_cache(s.len());
        let p = b.len() / vocab;
        let logits = rt.forward(&mut cache, s, s.len() - p).map_err(rt_err)?;
        kl += kl_sum(b, &logits, vocab);
    }
    Ok(kl / cal.positions.max(1) as f64)
}

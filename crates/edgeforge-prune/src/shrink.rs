//! Physically remove units from the model IR: rows and columns go, blocks go and the rest are renumbered.
//! Pruned tensors become F32 (the kept values exactly as they were); untouched tensors keep their format.

use std::collections::BTreeMap;

use edgeforge_core::arch::block_shape;
use edgeforge_core::pass::PassError;
use edgeforge_core::{Model, Tensor, TensorData};

fn matrix(model: &Model, name: &str) -> Result<(usize, usize, Vec<f32>), PassError> {
    let t = model.tensor(name)?;
    match t.shape.as_slice() {
        &[r, c] => Ok((r, c, t.to_f32(name)?)),
        other => Err(PassError::Tensor { tensor: name.to_owned(), message: format!("expected a matrix, got shape {other:?}") }),
    }
}

fn check_indices(name: &str, idx: &[usize], len: usize) -> Result<(), PassError> {
    if idx.is_empty() || idx.iter().any(|&i| i >= len) || idx.windows(2).any(|w| w[0] >= w[1]) {
        return Err(PassError::Tensor { tensor: name.to_owned(), message: format!("kept indices must be ascending, unique and below {len}") });
    }
    Ok(())
}

/// Keep rows `rows` (ascending) of matrix `name`.
pub fn keep_rows(model: &mut Model, name: &str, rows: &[usize]) -> Result<(), PassError> {
    let (r, c, v) = matrix(model, name)?;
    check_indices(name, rows, r)?;
    let out: Vec<f32> = rows.iter().flat_map(|&i| v[i * c..(i + 1) * c].iter().copied()).collect();
    model.tensors.insert(name.to_owned(), Tensor { shape: vec![rows.len(), c], data: TensorData::F32(out) });
    Ok(())
}

/// Keep columns `cols` (ascending) of matrix `name`.
pub fn keep_cols(model: &mut Model, name: &str, cols: &[usize]) -> Result<(), PassError> {
    let (r, c, v) = matrix(model, name)?;
    check_indices(name, cols, c)?;
    let out: Vec<f32> = (0..r).flat_map(|i| cols.iter().map(move |&j| (i, j))).map(|(i, j)| v[i * c + j]).collect();
    model.tensors.insert(name.to_owned(), Tensor { shape: vec![r, cols.len()], data: TensorData::F32(out) });
    Ok(())
}

/// Keep FFN channels `keep` of block `l`: gate/up rows, down columns.
pub fn keep_channels(model: &mut Model, l: usize, keep: &[usize]) -> Result<(), PassError> {
    keep_rows(model, &format!("blk.{l}.ffn_gate.weight"), keep)?;
    keep_rows(model, &format!("blk.{l}.ffn_up.weight"), keep)?;
    keep_cols(model, &format!("blk.{l}.ffn_down.weight"), keep)
}

/// Keep query heads `q_heads` and KV heads `kv_heads` (both ascending) of block `l`. The caller keeps the
/// grouping valid: every kept KV head keeps the same number of query heads, and each kept query head's
/// KV head is kept.
pub fn keep_heads(model: &mut Model, l: usize, q_heads: &[usize], kv_heads: &[usize]) -> Result<(), PassError> {
    let hd = model.config.head_dim;
    let dims = |heads: &[usize]| -> Vec<usize> { heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect() };
    let (q, kv) = (dims(q_heads), dims(kv_heads));
    keep_rows(model, &format!("blk.{l}.attn_q.weight"), &q)?;
    keep_rows(model, &format!("blk.{l}.attn_k.weight"), &kv)?;
    keep_rows(model, &format!("blk.{l}.attn_v.weight"), &kv)?;
    // Biases (Qwen 2) lose the same rows. The q/k norms (Qwen 3, Gemma 3) are per head_dim, shared by
    // every head: they survive head pruning unchanged.
    for (bias, keep) in [("attn_q.bias", &q), ("attn_k.bias", &kv), ("attn_v.bias", &kv)] {
        keep_entries(model, &format!("blk.{l}.{bias}"), keep)?;
    }
    keep_cols(model, &format!("blk.{l}.attn_output.weight"), &q)
}

/// Keep entries `keep` (ascending) of vector `name`, if the model has it.
fn keep_entries(model: &mut Model, name: &str, keep: &[usize]) -> Result<(), PassError> {
    let Some(t) = model.tensors.get(name) else { return Ok(()) };
    let v = t.to_f32(name)?;
    check_indices(name, keep, v.len())?;
    let out: Vec<f32> = keep.iter().map(|&i| v[i]).collect();
    model.tensors.insert(name.to_owned(), Tensor { shape: vec![keep.len()], data: TensorData::F32(out) });
    Ok(())
}

/// Remove the blocks in `remove`, renumber the rest in order, and record each survivor's origin.
pub fn remove_blocks(model: &mut Model, remove: &[usize]) {
    let n = model.config.n_layers;
    let survivors: Vec<usize> = (0..n).filter(|l| !remove.contains(l)).collect();
    let origins: Vec<usize> = survivors.iter().map(|&l| model.origin_of(l)).collect();
    let mut tensors = BTreeMap::new();
    for (name, t) in std::mem::take(&mut model.tensors) {
        let Some(rest) = name.strip_prefix("blk.") else {
            tensors.insert(name, t);
            continue;
        };
        let (idx, suffix) = rest.split_once('.').unwrap_or((rest, ""));
        match idx.parse::<usize>().ok().and_then(|l| survivors.iter().position(|&s| s == l)) {
            Some(new) => {
                tensors.insert(format!("blk.{new}.{suffix}"), t);
            }
            None if idx.parse::<usize>().is_ok() => {} // a removed block's tensor
            None => {
                tensors.insert(name, t);
            }
        }
    }
    model.tensors = tensors;
    model.config.n_layers = survivors.len();
    model.block_origin = origins;
}

/// Set the config's sizes to the widest block's (heads: the largest KV count times the largest group) (per-block sizes live in the tensors' shapes).
pub fn refresh_config(model: &mut Model) -> Result<(), PassError> {
    let shapes = (0..model.config.n_layers).map(|l| block_shape(model, l)).collect::<Result<Vec<_>, _>>()?;
    let c = &mut model.config;
    c.n_ff = shapes.iter().map(|s| s.n_ff).max().unwrap_or(c.n_ff);
    // The largest KV count times the largest group, so n_kv_heads still divides n_heads.
    c.n_kv_heads = shapes.iter().map(|s| s.n_kv_heads).max().unwrap_or(c.n_kv_heads);
    c.n_heads = c.n_kv_heads * shapes.iter().map(|s| s.n_heads / s.n_kv_heads.max(1)).max().unwrap_or(1);
    Ok(())
}

//! Pruned models whose blocks differ in width, made uniform for formats that need one size per model.
//!
//! llama.cpp's `llama` architecture reads `feed_forward_length` and the head counts per layer but creates
//! every block's tensors with layer 0's sizes, so a GGUF with uneven blocks does not load. Padding is
//! exact: a zero FFN channel (zero gate and up rows, zero down column) adds silu(0)·0 = 0, and a zero
//! query head (zero q rows, zero o_proj columns) adds nothing whatever its attention weights are; a
//! missing KV head gets zero k/v rows and only zero query heads read it. The padded tensors are floats.

use std::collections::BTreeMap;

use edgeforge_core::arch::{block_shape, BlockShape};
use edgeforge_core::{Model, Tensor, TensorData};

use crate::error::Result;

/// The uniform sizes a model exports with, and float replacements for the tensors of narrower blocks.
pub struct UniformShapes {
    pub shape: BlockShape,
    pub padded: BTreeMap<String, Tensor>,
}

/// Rows of `src` (`[rows, cols]`) placed at `row_map[i]` in a zero `[out_rows, cols]` matrix.
fn scatter_rows(src: &[f32], cols: usize, row_map: &[usize], out_rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; out_rows * cols];
    for (i, &r) in row_map.iter().enumerate() {
        out[r * cols..(r + 1) * cols].copy_from_slice(&src[i * cols..(i + 1) * cols]);
    }
    out
}

/// Columns of `src` (`[rows, cols]`) placed at `col_map[j]` in a zero `[rows, out_cols]` matrix.
fn scatter_cols(src: &[f32], rows: usize, col_map: &[usize], out_cols: usize) -> Vec<f32> {
    let cols = col_map.len();
    let mut out = vec![0f32; rows * out_cols];
    for r in 0..rows {
        for (j, &c) in col_map.iter().enumerate() {
            out[r * out_cols + c] = src[r * cols + j];
        }
    }
    out
}

/// Each head's `head_dim` rows, moved from head `h` to head `head_map[h]`.
fn expand_heads(head_map: &[usize], head_dim: usize) -> Vec<usize> {
    head_map.iter().flat_map(|&h| (0..head_dim).map(move |d| h * head_dim + d)).collect()
}

/// Sizes every block can be padded to, and the padded tensors of the blocks that need it (none for a model
/// whose blocks already agree).
pub fn uniform_shapes(model: &Model) -> Result<UniformShapes> {
    let c = &model.config;
    let shapes: Vec<BlockShape> = (0..c.n_layers).map(|l| block_shape(model, l)).collect::<edgeforge_core::Result<_>>()?;
    let n_kv = shapes.iter().map(|s| s.n_kv_heads).max().unwrap_or(c.n_kv_heads);
    let group = shapes.iter().map(|s| s.n_heads / s.n_kv_heads.max(1)).max().unwrap_or(1);
    let target = BlockShape { n_heads: n_kv * group, n_kv_heads: n_kv, n_ff: shapes.iter().map(|s| s.n_ff).max().unwrap_or(c.n_ff) };
    let mut padded = BTreeMap::new();
    let (e, hd) = (c.n_embd, c.head_dim);
    for (l, s) in shapes.iter().enumerate() {
        if *s == target {
            continue;
        }
        let name = |t: &str| format!("blk.{l}.{t}.weight");
        let floats = |t: &str| model.tensor(&name(t)).and_then(|x| x.to_f32(&name(t)));
        let mut put = |t: &str, shape: Vec<usize>, v: Vec<f32>| {
            padded.insert(name(t), Tensor { shape, data: TensorData::F32(v) });
        };
        if s.n_ff != target.n_ff {
            let ff_map: Vec<usize> = (0..s.n_ff).collect();
            put("ffn_gate", vec![target.n_ff, e], scatter_rows(&floats("ffn_gate")?, e, &ff_map, target.n_ff));
            put("ffn_up", vec![target.n_ff, e], scatter_rows(&floats("ffn_up")?, e, &ff_map, target.n_ff));
            put("ffn_down", vec![e, target.n_ff], scatter_cols(&floats("ffn_down")?, e, &ff_map, target.n_ff));
        }
        if (s.n_heads, s.n_kv_heads) != (target.n_heads, target.n_kv_heads) {
            // KV head g keeps its place; its j-th query head goes to slot g·group + j of the padded layout.
            let g_have = s.n_heads / s.n_kv_heads.max(1);
            let kv_map: Vec<usize> = (0..s.n_kv_heads).collect();
            let q_map: Vec<usize> = (0..s.n_heads).map(|h| (h / g_have) * group + h % g_have).collect();
            let (q_rows, kv_rows) = (expand_heads(&q_map, hd), expand_heads(&kv_map, hd));
            let (tq, tkv) = (target.n_heads * hd, target.n_kv_heads * hd);
            put("attn_q", vec![tq, e], scatter_rows(&floats("attn_q")?, e, &q_rows, tq));
            put("attn_k", vec![tkv, e], scatter_rows(&floats("attn_k")?, e, &kv_rows, tkv));
            put("attn_v", vec![tkv, e], scatter_rows(&floats("attn_v")?, e, &kv_rows, tkv));
            put("attn_output", vec![e, tq], scatter_cols(&floats("attn_output")?, e, &q_rows, tq));
        }
    }
    Ok(UniformShapes { shape: target, padded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_places_rows_and_columns_and_zeros_the_rest() {
        let src = [1.0, 2.0, 3.0, 4.0]; // 2×2
        assert_eq!(scatter_rows(&src, 2, &[0, 2], 3), vec![1.0, 2.0, 0.0, 0.0, 3.0, 4.0]);
        assert_eq!(scatter_cols(&src, 2, &[1, 2], 3), vec![0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
        assert_eq!(expand_heads(&[1], 2), vec![2, 3]);
    }
}

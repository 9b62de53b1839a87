//! Importance of each prunable unit of one block.
//!
//! Wanda (Sun et al., 2023) scores a weight by |W_ij|·‖X_j‖₂; a structured unit is scored by the weights
//! that read its activation: an FFN channel j by Σ_o |W_down[o, j]|·‖h_j‖, a query head by the same sum
//! over its o_proj columns. Magnitude scores use the Frobenius norms of every weight the unit owns.

use edgeforge_core::pass::PassError;
use edgeforge_core::Model;

use crate::options::Criterion;
use crate::stats::BlockStats;

fn matrix(model: &Model, name: &str) -> Result<(usize, usize, Vec<f32>), PassError> {
    let t = model.tensor(name)?;
    let (r, c) = (t.shape.first().copied().unwrap_or(0), t.row_len());
    Ok((r, c, t.to_f32(name)?))
}

/// Σ_o |W[o, j]| per column j (or Σ W² when `squared`).
fn col_sums(w: &[f32], cols: usize, squared: bool) -> Vec<f64> {
    let mut out = vec![0f64; cols];
    for row in w.chunks_exact(cols) {
        for (s, v) in out.iter_mut().zip(row) {
            let v = f64::from(*v);
            *s += if squared { v * v } else { v.abs() };
        }
    }
    out
}

/// Σ_i W[j, i]² per row j.
fn row_sq(w: &[f32], cols: usize) -> Vec<f64> {
    w.chunks_exact(cols).map(|r| r.iter().map(|v| f64::from(*v) * f64::from(*v)).sum()).collect()
}

fn missing_stats(l: usize) -> PassError {
    PassError::Tensor { tensor: format!("blk.{l}"), message: "no calibration statistics for this block".into() }
}

/// One score per FFN channel of block `l`.
pub fn channel_scores(model: &Model, l: usize, criterion: Criterion, stats: Option<&BlockStats>) -> Result<Vec<f64>, PassError> {
    let (_, ff, down) = matrix(model, &format!("blk.{l}.ffn_down.weight"))?;
    match criterion {
        Criterion::Wanda => {
            let s = stats.ok_or_else(|| missing_stats(l))?;
            if s.ffn_hidden_sq.len() != ff {
                return Err(missing_stats(l));
            }
            Ok(col_sums(&down, ff, false).iter().zip(&s.ffn_hidden_sq).map(|(w, x)| w * x.sqrt()).collect())
        }
        Criterion::Magnitude => {
            let (_, e, gate) = matrix(model, &format!("blk.{l}.ffn_gate.weight"))?;
            let (_, _, up) = matrix(model, &format!("blk.{l}.ffn_up.weight"))?;
            let d = col_sums(&down, ff, true);
            Ok(row_sq(&gate, e).iter().zip(row_sq(&up, e)).zip(d).map(|((g, u), d)| (g + u + d).sqrt()).collect())
        }
    }
}

/// One score per query head of block `l`.
pub fn query_head_scores(model: &Model, l: usize, criterion: Criterion, stats: Option<&BlockStats>) -> Result<Vec<f64>, PassError> {
    let hd = model.config.head_dim;
    let (_, qd, wo) = matrix(model, &format!("blk.{l}.attn_output.weight"))?;
    let per_dim = match criterion {
        Criterion::Wanda => {
            let s = stats.ok_or_else(|| missing_stats(l))?;
            if s.heads_sq.len() != qd {
                return Err(missing_stats(l));
            }
            col_sums(&wo, qd, false).iter().zip(&s.heads_sq).map(|(w, x)| w * x.sqrt()).collect::<Vec<_>>()
        }
        Criterion::Magnitude => {
            let (_, e, wq) = matrix(model, &format!("blk.{l}.attn_q.weight"))?;
            col_sums(&wo, qd, true).iter().zip(row_sq(&wq, e)).map(|(o, q)| o + q).collect()
        }
    };
    let heads: Vec<f64> = per_dim.chunks(hd.max(1)).map(|c| c.iter().sum()).collect();
    Ok(match criterion {
        Criterion::Wanda => heads,
        Criterion::Magnitude => heads.iter().map(|v| v.sqrt()).collect(),
    })
}

/// One score per KV group of block `l`: the sum of its query heads' scores.
pub fn kv_group_scores(query: &[f64], n_kv_heads: usize) -> Vec<f64> {
    let group = query.len() / n_kv_heads.max(1);
    query.chunks(group.max(1)).map(|c| c.iter().sum()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_and_row_sums() {
        let w = [1.0, -2.0, 3.0, -4.0]; // 2×2
        assert_eq!(col_sums(&w, 2, false), vec![4.0, 6.0]);
        assert_eq!(col_sums(&w, 2, true), vec![10.0, 20.0]);
        assert_eq!(row_sq(&w, 2), vec![5.0, 25.0]);
        assert_eq!(kv_group_scores(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2), vec![6.0, 15.0]);
    }
}

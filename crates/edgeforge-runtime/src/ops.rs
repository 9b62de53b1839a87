//! Row-wise operations of the forward pass, parallel over rows.

use rayon::prelude::*;

use crate::kernels::exp::exp_in_place;

/// `out[r] = x[r] / rms(x[r]) * weight`, rows of `weight.len()`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    out.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(o, xr)| {
        // As ggml computes it: f32 squares summed in f64, the mean and the scale in f32.
        let mean_sq = (xr.iter().map(|&v| f64::from(v * v)).sum::<f64>() / n as f64) as f32;
        let scale = 1.0 / (mean_sq + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    });
}

/// SwiGLU gate: `gate ← silu(gate) * up`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    gate.par_chunks_mut(CHUNK).zip(up.par_chunks(CHUNK)).for_each(|(g, u)| {
        // exp(-g) for the whole chunk at once (the vector kernel gives f32::exp's bits).
        let mut e = [0f32; CHUNK];
        let e = &mut e[..g.len()];
        for (e, &g) in e.iter_mut().zip(g.iter()) {
            *e = -g;
        }
        exp_in_place(e);
        for ((g, &u), &e) in g.iter_mut().zip(u).zip(e.iter()) {
            *g = *g / (1.0 + e) * u;
        }
    });
}

/// Elements per parallel task of the element-wise ops.
const CHUNK: usize = 4096;

/// ReGLU gate: `gate ← relu(gate) * up` (the MLP after the `activation-swap` pass).
pub fn relu_mul(gate: &mut [f32], up: &[f32]) {
    gate.par_chunks_mut(4096).zip(up.par_chunks(4096)).for_each(|(g, u)| {
        for (g, &u) in g.iter_mut().zip(u) {
            *g = g.max(0.0) * u;
        }
    });
}

/// GeGLU gate: `gate ← gelu_tanh(gate) * up` (Gemma).
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    gate.par_chunks_mut(CHUNK).zip(up.par_chunks(CHUNK)).for_each(|(g, u)| {
        for (g, &u) in g.iter_mut().zip(u) {
            *g = edgeforge_core::model::gelu_tanh(*g) * u;
        }
    });
}

pub fn add_in_place(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(4096).zip(x.par_chunks(4096)).for_each(|(a, x)| {
        for (a, &x) in a.iter_mut().zip(x) {
            *a += x;
        }
    });
}

/// `y[r] += bias` for every row of `bias.len()`.
pub fn add_bias(y: &mut [f32], bias: &[f32]) {
    y.par_chunks_mut(bias.len()).for_each(|row| {
        for (a, &b) in row.iter_mut().zip(bias) {
            *a += b;
        }
    });
}

/// Softmax of `row[lo..hi]` in place; entries outside (keys before a sliding window, future positions)
/// become 0.
pub fn softmax_range(row: &mut [f32], lo: usize, hi: usize) {
    row[..lo].fill(0.0);
    softmax_prefix(&mut row[lo..], hi - lo);
}

/// Softmax of `row[..valid]` in place; entries from `valid` on (masked future positions) become 0.
pub fn softmax_prefix(row: &mut [f32], valid: usize) {
    let (live, masked) = row.split_at_mut(valid);
    masked.fill(0.0);
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in live.iter_mut() {
        *v -= max;
    }
    exp_in_place(live);
    // Summed in order, as one loop doing both would.
    let sum = live.iter().fold(0f32, |s, &v| s + v);
    let inv = 1.0 / sum;
    for v in live.iter_mut() {
        *v *= inv;
    }
}

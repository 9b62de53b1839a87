//! AWQ's clipping search: per output row and group, shrink the weight range by a factor from a grid and
//! keep the factor whose rounded group has the least output error on the calibration inputs (through the
//! group's diagonal block of the Hessian, i.e. ignoring interactions between groups, as AWQ does).
//! Outliers in the weights otherwise stretch the grid for every other weight of their group.

use rayon::prelude::*;

use edgeforge_core::quantized::QuantFormat;

use crate::rtn::quantize;

/// Shrink factors tried, from no clipping down to half the range.
const FACTORS: usize = 20;

/// Clips `weights` (`rows × d`, row-major) in place, group by group, given the inputs' Hessian `h`
/// (`d × d`). Returns the summed group errors before and after.
pub fn clip_weights(weights: &mut [f32], rows: usize, d: usize, format: QuantFormat, h: &[f32]) -> (f64, f64) {
    let g = format.group_size.max(1);
    let results: Vec<(f64, f64)> = weights
        .par_chunks_mut(d)
        .take(rows)
        .map(|row| {
            let (mut before, mut after) = (0f64, 0f64);
            for g0 in (0..d).step_by(g) {
                let g1 = (g0 + g).min(d);
                let group = row[g0..g1].to_vec();
                let (lo, hi) = group.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                let mut best = (f64::INFINITY, 1f32);
                let mut first = 0f64;
                for k in 0..FACTORS {
                    let f = 1.0 - 0.5 * k as f32 / FACTORS as f32;
                    let clipped: Vec<f32> = group.iter().map(|&v| v.clamp(lo * f, hi * f)).collect();
                    let fmt = QuantFormat { group_size: g1 - g0, ..format };
                    let q = quantize(&clipped, g1 - g0, fmt, false).dequantize(clipped.len());
                    let delta: Vec<f32> = group.iter().zip(&q).map(|(a, b)| a - b).collect();
                    let mut e = 0f64;
                    for (i, &di) in delta.iter().enumerate() {
                        let hrow = &h[(g0 + i) * d + g0..(g0 + i) * d + g1];
                        let hd: f32 = hrow.iter().zip(&delta).map(|(a, b)| a * b).sum();
                        e += f64::from(di) * f64::from(hd);
                    }
                    if k == 0 {
                        first = e;
                    }
                    if e < best.0 {
                        best = (e, f);
                    }
                }
                for v in &mut row[g0..g1] {
                    *v = v.clamp(lo * best.1, hi * best.1);
                }
                before += first;
                after += best.0;
            }
            (before, after)
        })
        .collect();
    results.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y))
}

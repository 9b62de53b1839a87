//! AWQ's clipping search: per output row and group, shrink the weight range by a factor from a grid and
//! keep the factor whose rounded group has the least output error on the calibration inputs (through the
//! group's diagonal block of the Hessian, i.e. ignoring interactions between groups, as AWQ does).
//! Outliers in the weights otherwise stretch the grid for every other weight of their group.

use rayon::prelude::*;

use edgeforge_core::quantized::QuantFormat;

use crate::rtn::group_params;

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
                let mut delta = vec![0f32; g1 - g0];
                for k in 0..FACTORS {
                    let f = 1.0 - 0.5 * k as f32 / FACTORS as f32;
                    let clipped: Vec<f32> = group.iter().map(|&v| v.clamp(lo * f, hi * f)).collect();
                    round_trip_error(&group, &clipped, format, &mut delta);
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

/// `delta = original − dequantize(quantize(clipped))` for one group, rounded as round-to-nearest does.
fn round_trip_error(original: &[f32], clipped: &[f32], format: QuantFormat, delta: &mut [f32]) {
    let (scale, zero) = group_params(clipped, format, false);
    let levels = format.levels() as f32;
    let (s, z) = (scale.to_f32(), if format.symmetric { levels / 2.0 } else { f32::from(zero) });
    for ((d, &w), &c) in delta.iter_mut().zip(original).zip(clipped) {
        let q = if s != 0.0 { ((c / s).round() + z).clamp(0.0, levels - 1.0) } else { z };
        *d = w - s * (q - z);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_an_outlier_lowers_the_group_error_and_never_raises_it() {
        let (rows, d) = (4, 64);
        let mut w: Vec<f32> = (0..rows * d).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.1).collect();
        w[5] = 2.0; // one outlier in row 0, group 0, on an input channel that is rarely driven
        let h: Vec<f32> = (0..d * d).map(|k| if k / d == k % d { if k % d == 5 { 1e-3 } else { 1.0 } } else { 0.0 }).collect();
        let format = QuantFormat { bits: 4, group_size: 32, symmetric: true };
        let original = w.clone();
        let (before, after) = clip_weights(&mut w, rows, d, format, &h);
        assert!(after <= before, "{after} > {before}");
        assert!(after < 0.9 * before, "the outlier group should gain: {after} vs {before}");
        assert!(w[5] < original[5], "the outlier is clipped");
        assert!(w.iter().zip(&original).all(|(a, b)| a.abs() <= b.abs() + 1e-7), "clipping only shrinks");
    }
}

//! The scalar reference kernel, and the fallback on CPUs without a SIMD path. Every SIMD kernel computes
//! the same sum with the same grouping: per group `Σ x_i · (c_i − z)` (integer difference, exact in f32),
//! then `acc += scale · group_sum`; they differ only in the order of additions inside a group.

use super::packed::Row;

/// `out[t] = Σ_i x[t·x_stride + i] · w_i` over the row for `NT` tokens.
pub(crate) fn row_dot<const NT: usize>(row: Row<'_>, x: &[f32], x_stride: usize, out: &mut [f32; NT]) {
    let gs = row.group_size.max(1);
    let mut acc = [0f32; NT];
    for (g, &scale) in row.scales.iter().enumerate() {
        let start = g * gs;
        let end = (start + gs).min(row.len);
        let zero = i32::from(row.zeros.get(g));
        let mut group = [0f32; NT];
        for i in start..end {
            let v = (i32::from(row.code(i)) - zero) as f32;
            for (t, s) in group.iter_mut().enumerate() {
                *s += x[t * x_stride + i] * v;
            }
        }
        for (a, s) in acc.iter_mut().zip(group) {
            *a += scale * s;
        }
    }
    *out = acc;
}

//! GPTQ on one weight matrix given the Hessian of its inputs: quantize input columns one at a time and
//! spread each column's rounding error over the columns not yet quantized, weighted by the inverse
//! Hessian, so the layer's outputs on calibration activations move as little as possible.

use faer::linalg::solvers::DenseSolveCore;
use faer::traits::pulp::{Arch, Simd, WithSimd};
use faer::{Mat, Side};
use half::f16;
use rayon::prelude::*;

use edgeforge_core::quantized::{pack_codes, QuantFormat, QuantTensor};
use edgeforge_core::scheme::{BlockFit, Scheme};

use crate::rtn::{group_params, group_params_weighted};

/// How the column loop runs.
#[derive(Debug, Clone, Copy)]
pub struct SolveOptions {
    /// Fraction of the mean Hessian diagonal added to the diagonal.
    pub damp_frac: f64,
    /// Columns per lazy batch update.
    pub block_size: usize,
    /// Quantize columns in order of decreasing Hessian diagonal (largest activations first), with every
    /// group's scale fixed from the original weights beforehand ("static groups"), so the stored layout is
    /// still plain consecutive groups that grouped formats (Q4_0, ...) can hold.
    pub act_order: bool,
    /// Choose each group's range by the least squared error over shrink factors rather than min/max.
    pub clip_search: bool,
    /// After the codes are fixed, refit each row's scales by least squares in the Hessian norm.
    pub refit_scales: bool,
}

/// The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), row-major, after dampening; the dampening used and
/// whether it had to be raised.
fn inverse_hessian_factor(h: &[f64], n: usize, damp_frac: f64) -> Option<(Vec<f32>, f64, bool)> {
    let mean_diag = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    let mut damp = damp_frac * mean_diag.max(1e-12);
    for attempt in 0..6 {
        let m = Mat::<f64>::from_fn(n, n, |i, j| if i == j { h[i * n + j] + damp } else { h[i * n + j] });
        if let Ok(llt) = m.llt(Side::Lower) {
            let inv = llt.inverse();
            if let Ok(llt2) = inv.llt(Side::Lower) {
                let l = llt2.L();
                let mut u = vec![0f32; n * n];
                for i in 0..n {
                    for j in i..n {
                        u[i * n + j] = l[(j, i)] as f32;
                    }
                }
                if u.iter().all(|v| v.is_finite()) {
                    return Some((u, damp, attempt > 0));
                }
            }
        }
        damp *= 10.0;
    }
    None
}

/// Column order: identity, or decreasing Hessian diagonal (ties by index, so the order is reproducible).
fn column_order(hessian: &[f64], cols: usize, act_order: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cols).collect();
    if act_order {
        order.sort_by(|&a, &b| hessian[b * cols + b].total_cmp(&hessian[a * cols + a]).then(a.cmp(&b)));
    }
    order
}

/// One row's codes (original column order) and its groups' (scale, zero point).
type RowResult = (Vec<u8>, Vec<(f16, u8)>);

/// What every row's column loop shares: the dead input channels, the column order, the upper Cholesky
/// factor of the (permuted, dampened) inverse Hessian, the Hessian diagonal as importance, and a note if
/// the dampening had to be raised.
struct Prepared {
    dead: Vec<bool>,
    order: Vec<usize>,
    u: Vec<f32>,
    importance: Vec<f32>,
    note: Option<String>,
}

/// Dead channels get a unit diagonal (modifying `hessian`), columns are ordered and H⁻¹ factored.
fn prepare(hessian: &mut [f64], cols: usize, opts: SolveOptions) -> Result<Prepared, String> {
    // Inputs that never fire carry no information: pin their weights to zero.
    let dead: Vec<bool> = (0..cols).map(|i| hessian[i * cols + i] <= 0.0).collect();
    for (i, &d) in dead.iter().enumerate() {
        if d {
            hessian[i * cols + i] = 1.0;
        }
    }
    let order = column_order(hessian, cols, opts.act_order);
    let permuted: Vec<f64> = if opts.act_order {
        (0..cols * cols).map(|k| hessian[order[k / cols] * cols + order[k % cols]]).collect()
    } else {
        hessian.to_vec()
    };
    let (u, damp, raised) = inverse_hessian_factor(&permuted, cols, opts.damp_frac)
        .ok_or_else(|| "the Hessian stays singular even after raising the dampening a million-fold".to_owned())?;
    let note = raised.then(|| format!("Hessian not positive definite: dampening raised to {damp:.3e}"));
    let importance: Vec<f32> = (0..cols).map(|i| hessian[i * cols + i] as f32).collect();
    Ok(Prepared { dead, order, u, importance, note })
}

impl Prepared {
    /// Row `r` of `weights` with dead channels zeroed.
    fn original_row(&self, weights: &[f32], r: usize) -> Vec<f32> {
        let cols = self.order.len();
        weights[r * cols..(r + 1) * cols].iter().zip(&self.dead).map(|(&v, &d)| if d { 0.0 } else { v }).collect()
    }

    /// The column loop of a few rows at once: columns in `order`, each rounded by `round(k, i, col, w)`
    /// (row `k` of `originals`, position in the order, original column, the permuted row as updated so far)
    /// to a code and its dequantized value, and its error spread over the columns not yet quantized through
    /// H⁻¹'s factor, with lazy batch updates of `block` columns. Returns each row's codes in original
    /// column order.
    ///
    /// Every row's arithmetic is exactly the one-row loop's (same operations on the same values in the same
    /// order); the rows only share the lazy update's pass over U (`lazy::lazy_update`), so U is read once
    /// per group of rows instead of once per row (U is 9 MB for a 1536-wide input: streaming it once per
    /// weight row made this loop memory-bound).
    fn solve_rows(&self, originals: &[Vec<f32>], block: usize, mut round: impl FnMut(usize, usize, usize, &[f32]) -> (u8, f32)) -> Vec<Vec<u8>> {
        let (order, u) = (&self.order, &self.u);
        let cols = order.len();
        let mut ws: Vec<Vec<f32>> = originals.iter().map(|o| order.iter().map(|&c| o[c]).collect()).collect();
        let mut codes = vec![vec![0u8; cols]; originals.len()];
        let mut errs = vec![vec![0f32; block]; originals.len()];
        let arch = Arch::new();
        for b0 in (0..cols).step_by(block) {
            let b1 = (b0 + block).min(cols);
            arch.dispatch(WithinBlock { ws: &mut ws, codes: &mut codes, errs: &mut errs, round: &mut round, order, u, b0, b1 });
            // The lazy part: the block's errors reach the remaining columns once.
            super::lazy::lazy_update(&mut ws, &errs, u, cols, b0, b1);
        }
        codes
    }
}

/// The columns `b0..b1` of a block for each row: round, then spread the error over the block's later
/// columns. Compiled for the widest vector unit (pulp's dispatch: the build targets baseline x86-64) with the
/// rows interleaved column by column, so their independent updates overlap; each row sees the same
/// operations in the same order as the one-row loop.
struct WithinBlock<'a, R> {
    ws: &'a mut [Vec<f32>],
    codes: &'a mut [Vec<u8>],
    errs: &'a mut [Vec<f32>],
    round: &'a mut R,
    order: &'a [usize],
    u: &'a [f32],
    b0: usize,
    b1: usize,
}

impl<R: FnMut(usize, usize, usize, &[f32]) -> (u8, f32)> WithSimd for WithinBlock<'_, R> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let WithinBlock { ws, codes, errs, round, order, u, b0, b1 } = self;
        let cols = order.len();
        for i in b0..b1 {
            let c = order[i];
            let urow = &u[i * cols + i + 1..i * cols + b1];
            for (k, ((w, codes), err)) in ws.iter_mut().zip(codes.iter_mut()).zip(errs.iter_mut()).enumerate() {
                let (code, value) = round(k, i, c, w);
                codes[c] = code;
                let e = (w[i] - value) / u[i * cols + i];
                err[i - b0] = e;
                for (wj, &uj) in w[i + 1..b1].iter_mut().zip(urow) {
                    *wj -= e * uj;
                }
            }
        }
    }
}

/// Rows solved together by `solve_rows` (they share each pass over U; more rows, fewer passes, but more
/// working memory per task and coarser parallelism).
const ROWS_PER_TASK: usize = super::lazy::ROWS;

/// Row ranges of `ROWS_PER_TASK`, in parallel, in order.
fn chunks_of_rows(rows: usize) -> impl IndexedParallelIterator<Item = std::ops::Range<usize>> {
    (0..rows.div_ceil(ROWS_PER_TASK)).into_par_iter().map(move |t| t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(rows))
}

/// GPTQ on one weight matrix (`rows × cols`, row-major) with the Hessian of its inputs (`cols × cols`,
/// modified: dead channels get a unit diagonal). Returns the quantized tensor and a note if the Hessian
/// needed extra dampening.
pub fn gptq_matrix(
    weights: &[f32],
    rows: usize,
    cols: usize,
    hessian: &mut [f64],
    format: QuantFormat,
    opts: SolveOptions,
) -> Result<(QuantTensor, Option<String>), String> {
    let p = prepare(hessian, cols, opts)?;
    let g = format.group_size.max(1);
    let levels = format.levels() as f32;
    let block = opts.block_size.max(1);
    let n_groups = format.groups_per_row(cols);
    let importance = &p.importance;

    let per_row: Vec<RowResult> = chunks_of_rows(rows)
        .flat_map_iter(|range| {
            let originals: Vec<Vec<f32>> = range.map(|r| p.original_row(weights, r)).collect();
            // Static groups: every scale from the original weights, before any error is spread.
            let mut params: Vec<Vec<(f16, u8)>> = originals
                .iter()
                .map(|original| {
                    if opts.act_order {
                        (0..n_groups)
                            .map(|k| {
                                let range = k * g..((k + 1) * g).min(cols);
                                group_params_weighted(&original[range.clone()], Some(&importance[range]), format, opts.clip_search)
                            })
                            .collect()
                    } else {
                        Vec::with_capacity(n_groups)
                    }
                })
                .collect();
            let codes = p.solve_rows(&originals, block, |k, i, c, w| {
                let params = &mut params[k];
                // In natural order, a group's scale comes from its weights as updated so far.
                if !opts.act_order && i % g == 0 {
                    params.push(group_params(&w[i..(i + g).min(cols)], format, opts.clip_search));
                }
                let (scale, zero) = params[c / g];
                let (s, z) = (scale.to_f32(), if format.symmetric { levels / 2.0 } else { f32::from(zero) });
                let q = if s != 0.0 { ((w[i] / s).round() + z).clamp(0.0, levels - 1.0) } else { z };
                (q as u8, s * (q - z))
            });
            codes.into_iter().zip(params)
        })
        .collect();

    let mut codes_u8 = Vec::with_capacity(rows * cols);
    let mut scales = Vec::with_capacity(rows * n_groups);
    let mut zeros = Vec::new();
    for (c, params) in per_row {
        codes_u8.extend(c);
        for (s, z) in params {
            scales.push(s);
            if !format.symmetric {
                zeros.push(z);
            }
        }
    }
    let codes = pack_codes(&codes_u8, format.bits);
    let mut q = QuantTensor { format, row_len: cols, scales, zeros, codes };
    if opts.refit_scales {
        let original: Vec<f32> = weights.iter().enumerate().map(|(i, &v)| if p.dead[i % cols] { 0.0 } else { v }).collect();
        crate::gptq::refit::refit_scales(&mut q, &original, rows, cols, hessian);
    }
    Ok((q, p.note))
}

/// GPTQ into a ggml block scheme (Q4_0 … Q6_K, IQ4_NL): every block's stored fields are fitted to the
/// original weights' range first (static groups, whatever the column order; see `fit_block_range`),
/// then the column loop picks codes on those grids. Returns the tensor's bytes in the scheme's GGUF type;
/// `cols` must be a whole number of the scheme's blocks.
pub fn gptq_scheme(
    weights: &[f32],
    rows: usize,
    cols: usize,
    hessian: &mut [f64],
    scheme: Scheme,
    opts: SolveOptions,
) -> Result<(Vec<u8>, Option<String>), String> {
    let b = scheme.block();
    if cols % b != 0 {
        return Err(format!("rows of {cols} are not a whole number of {scheme}'s {b}-element blocks"));
    }
    let p = prepare(hessian, cols, opts)?;
    let block = opts.block_size.max(1);
    let bytes: Vec<u8> = chunks_of_rows(rows)
        .flat_map_iter(|range| {
            let originals: Vec<Vec<f32>> = range.map(|r| p.original_row(weights, r)).collect();
            let fits: Vec<Vec<BlockFit>> = originals
                .iter()
                .map(|original| original.chunks(b).zip(p.importance.chunks(b)).map(|(x, w)| scheme.fit_block_range(x, w)).collect())
                .collect();
            let codes = p.solve_rows(&originals, block, |k, i, c, w| scheme.round(&fits[k][c / b], c % b, w[i]));
            let mut out = Vec::with_capacity(scheme.bytes_for(cols) * codes.len());
            for (fits, codes) in fits.iter().zip(&codes) {
                for (k, fit) in fits.iter().enumerate() {
                    scheme.encode(fit, &codes[k * b..(k + 1) * b], &mut out);
                }
            }
            out
        })
        .collect();
    Ok((bytes, p.note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gptq::hessian::Hessian;
    use crate::rtn::quantize;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// ‖(W − Q) Xᵀ‖² over calibration rows: the quantity GPTQ minimizes.
    fn output_error(w: &[f32], q: &[f32], x: &[f32], rows: usize, cols: usize) -> f64 {
        let n = x.len() / cols;
        let mut total = 0f64;
        for r in 0..rows {
            for t in 0..n {
                let mut d = 0f64;
                for c in 0..cols {
                    d += f64::from(w[r * cols + c] - q[r * cols + c]) * f64::from(x[t * cols + c]);
                }
                total += d * d;
            }
        }
        total
    }

    fn opts(act_order: bool, block_size: usize) -> SolveOptions {
        SolveOptions { damp_frac: 0.01, block_size, act_order, clip_search: false, refit_scales: false }
    }

    #[test]
    fn gptq_beats_round_to_nearest_on_correlated_inputs() {
        let (rows, cols, n) = (24, 96, 256);
        let mut rng = Rng(42);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        // Correlated inputs with a few large channels, as in real activations.
        let base: Vec<f32> = (0..n * 8).map(|_| rng.next()).collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| {
                let (t, c) = (i / cols, i % cols);
                let scale = if c % 16 == 5 { 8.0 } else { 1.0 };
                scale * (base[t * 8 + c % 8] + 0.3 * rng.next())
            })
            .collect();
        for format in [
            QuantFormat { bits: 4, group_size: 32, symmetric: true },
            QuantFormat { bits: 4, group_size: 64, symmetric: false },
            QuantFormat { bits: 3, group_size: 32, symmetric: true },
            QuantFormat { bits: 8, group_size: 64, symmetric: true },
            QuantFormat { bits: 4, group_size: 96, symmetric: true },
        ] {
            let rtn = output_error(&w, &quantize(&w, cols, format, false).dequantize(rows * cols), &x, rows, cols);
            for act_order in [false, true] {
                let mut h = Hessian::new(cols);
                h.add(&x);
                let (q, note) = gptq_matrix(&w, rows, cols, &mut h.matrix(), format, opts(act_order, 16)).unwrap();
                assert!(note.is_none());
                assert!(q.is_consistent(rows * cols));
                let gptq = output_error(&w, &q.dequantize(rows * cols), &x, rows, cols);
                assert!(gptq < 0.8 * rtn, "{format:?} act_order={act_order}: gptq {gptq} vs rtn {rtn}");
            }
        }
    }

    #[test]
    fn gptq_into_every_block_scheme_beats_its_round_to_nearest() {
        // Rows of 256 so the K-quants apply too; correlated inputs with a few large channels.
        let (rows, cols, n) = (16, 256, 400);
        let mut rng = Rng(77);
        let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.next()).collect();
        let base: Vec<f32> = (0..n * 8).map(|_| rng.next()).collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| {
                let (t, c) = (i / cols, i % cols);
                (if c % 16 == 5 { 8.0 } else { 1.0 }) * (base[t * 8 + c % 8] + 0.3 * rng.next())
            })
            .collect();
        let decode = |s: Scheme, bytes: &[u8]| {
            let mut out = vec![0f32; rows * cols];
            edgeforge_core::blocks::dequantize(s.ggml(), bytes, &mut out).unwrap();
            out
        };
        for s in Scheme::ALL {
            let mut h = Hessian::new(cols);
            h.add(&x);
            let hm = h.matrix();
            let importance: Vec<f32> = (0..cols).map(|i| hm[i * cols + i] as f32).collect();
            let rtn = output_error(&w, &decode(s, &s.quantize_rows(&w, cols, Some(&importance))), &x, rows, cols);
            for act_order in [false, true] {
                let mut h2 = h.matrix();
                let (bytes, note) = gptq_scheme(&w, rows, cols, &mut h2, s, opts(act_order, 32)).unwrap();
                assert!(note.is_none());
                assert_eq!(bytes.len(), s.bytes_for(rows * cols));
                let gptq = output_error(&w, &decode(s, &bytes), &x, rows, cols);
                assert!(gptq < 0.9 * rtn, "{s} act_order={act_order}: gptq {gptq} vs weighted rtn {rtn}");
            }
        }
    }

    #[test]
    fn refitting_scales_never_raises_the_output_error() {
        let (rows, cols, n) = (16, 96, 300);
        let mut rng = Rng(5);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        let base: Vec<f32> = (0..n * 6).map(|_| rng.next()).collect();
        let x: Vec<f32> = (0..n * cols).map(|i| (if i % cols % 11 == 0 { 6.0 } else { 1.0 }) * (base[i / cols * 6 + i % 6] + 0.2 * rng.next())).collect();
        let mut gains = Vec::new();
        for format in [
            QuantFormat { bits: 4, group_size: 32, symmetric: true },
            QuantFormat { bits: 4, group_size: 64, symmetric: false },
            QuantFormat { bits: 3, group_size: 96, symmetric: true },
        ] {
            let run = |refit_scales| {
                let mut h = Hessian::new(cols);
                h.add(&x);
                let o = SolveOptions { refit_scales, ..opts(true, 32) };
                let (q, _) = gptq_matrix(&w, rows, cols, &mut h.matrix(), format, o).unwrap();
                assert!(q.is_consistent(rows * cols));
                output_error(&w, &q.dequantize(rows * cols), &x, rows, cols)
            };
            let (plain, refit) = (run(false), run(true));
            assert!(refit <= plain * 1.0001, "{format:?}: {refit} > {plain}");
            gains.push(plain / refit);
        }
        assert!(gains.iter().any(|&g| g > 1.01), "refit should help somewhere: {gains:?}");
    }

    #[test]
    fn lazy_blocks_do_not_change_the_result() {
        let (rows, cols) = (6, 80);
        let mut rng = Rng(7);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        let x: Vec<f32> = (0..200 * cols).map(|_| rng.next()).collect();
        let format = QuantFormat { bits: 4, group_size: 32, symmetric: true };
        for act_order in [false, true] {
            let run = |block| {
                let mut h = Hessian::new(cols);
                h.add(&x);
                gptq_matrix(&w, rows, cols, &mut h.matrix(), format, opts(act_order, block)).unwrap().0.dequantize(rows * cols)
            };
            let (a, b) = (run(1), run(128));
            let max_diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            // Same arithmetic up to f32 summation order: codes may flip only where a value sits on a rounding edge.
            let flipped = a.iter().zip(&b).filter(|(p, q)| p != q).count();
            assert!(flipped * 50 < a.len(), "act_order={act_order}: {flipped} codes differ (max diff {max_diff})");
        }
    }

    #[test]
    fn rows_solved_together_get_the_codes_they_get_alone() {
        let (rows, cols) = (11, 96);
        let mut rng = Rng(13);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        let x: Vec<f32> = (0..150 * cols).map(|i| rng.next() * (1.0 + (i % cols % 7) as f32)).collect();
        for act_order in [false, true] {
            let mut h = Hessian::new(cols);
            h.add(&x);
            let mut hm = h.matrix();
            let p = prepare(&mut hm, cols, opts(act_order, 32)).unwrap();
            let originals: Vec<Vec<f32>> = (0..rows).map(|r| p.original_row(&w, r)).collect();
            let round = |_k: usize, i: usize, _c: usize, w: &[f32]| {
                let q = (w[i] / 0.25).round().clamp(-8.0, 7.0);
                ((q + 8.0) as u8, q * 0.25)
            };
            let together = p.solve_rows(&originals, 32, round);
            for (r, original) in originals.iter().enumerate() {
                let alone = p.solve_rows(std::slice::from_ref(original), 32, round);
                assert_eq!(alone[0], together[r], "act_order={act_order}, row {r}");
            }
        }
    }

    #[test]
    fn act_order_keeps_plain_groups_of_the_original_weights() {
        let (rows, cols) = (3, 64);
        let mut rng = Rng(9);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        let x: Vec<f32> = (0..100 * cols).map(|i| rng.next() * (1.0 + (i % cols) as f32 / 8.0)).collect();
        let format = QuantFormat { bits: 4, group_size: 32, symmetric: true };
        let mut h = Hessian::new(cols);
        h.add(&x);
        let (q, _) = gptq_matrix(&w, rows, cols, &mut h.matrix(), format, opts(true, 16)).unwrap();
        let rtn = quantize(&w, cols, format, false);
        assert_eq!(q.scales, rtn.scales, "static groups: scales are those of the original weights");
    }

    #[test]
    fn singular_hessian_gets_more_damping_not_nans() {
        let (rows, cols) = (4, 32);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        // Rank-one inputs and a dead channel.
        let x: Vec<f32> = (0..10 * cols).map(|i| if i % cols == 3 { 0.0 } else { ((i / cols) as f32 + 1.0) * 0.1 }).collect();
        for act_order in [false, true] {
            let mut h = Hessian::new(cols);
            h.add(&x);
            let o = SolveOptions { damp_frac: 1e-9, ..opts(act_order, 128) };
            let (q, _) = gptq_matrix(&w, rows, cols, &mut h.matrix(), QuantFormat { bits: 4, group_size: 32, symmetric: true }, o).unwrap();
            let deq = q.dequantize(rows * cols);
            assert!(deq.iter().all(|v| v.is_finite()));
            assert!((0..rows).all(|r| deq[r * cols + 3] == 0.0), "dead input channels are zeroed");
        }
    }
}

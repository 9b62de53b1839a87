//! The `reconstruct` pass: after pruning, refit each block's o_proj and down_proj (the projections that
//! read the pruned channels) so the block's output matches the original model's, by ridge least squares on
//! calibration activations: W' = argmin ‖Y − H W'ᵀ‖² + λ‖W'‖², i.e. W'ᵀ = (HᵀH + λI)⁻¹ HᵀY, solved with a
//! Cholesky factorisation (faer). H is the pruned block's own activation, Y the original block's output
//! on the same input (`target: local`) or what the original residual stream needs (`target: stream`).
//!
//! Blocks run in order on the pruned model's hidden states, each refitted before the next sees its output,
//! so later blocks are fitted on the inputs they will really get. Memory: one block of each model plus the
//! calibration hidden states.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::{Model, ModelConfig, Tensor, TensorData};
use edgeforge_quant::Hessian;
use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};
use edgeforge_runtime::{layer_from_model_as, Block, WeightStorage};

use crate::options::{ReconstructOptions, ReconstructTarget};
use crate::runtime_error;
use crate::stats::block_dims;

pub struct Reconstruct {
    pub options: ReconstructOptions,
}

impl Reconstruct {
    pub fn new(options: ReconstructOptions) -> Self {
        Self { options }
    }
}

/// Running HᵀH and HᵀY of one projection's refit.
struct Normal {
    gram: Hessian,
    /// `width × out` row-major, f64.
    cross: Vec<f64>,
    out: usize,
    scratch: Vec<f32>,
}

impl Normal {
    fn new(width: usize, out: usize) -> Self {
        Self { gram: Hessian::new(width), cross: vec![0.0; width * out], out, scratch: Vec::new() }
    }

    /// Add `n` tokens of input `h` (`n × width`) and target `y` (`n × out`).
    fn add(&mut self, h: &[f32], y: &[f32], n: usize) -> Result<(), PassError> {
        let (w, o) = (self.gram.width, self.out);
        self.gram.add(h);
        self.scratch.clear();
        self.scratch.resize(w * o, 0.0);
        let a = MatRef { data: h, offset: 0, rows: w, cols: n, row_stride: 1, col_stride: w };
        let b = MatRef { data: y, offset: 0, rows: n, cols: o, row_stride: o, col_stride: 1 };
        if !matmul(&mut self.scratch, 0, o, a, b, false, Threads::Pool) {
            return Err(PassError::Tensor { tensor: "(reconstruct)".into(), message: "activation and target shapes disagree".into() });
        }
        for (c, s) in self.cross.iter_mut().zip(&self.scratch) {
            *c += f64::from(*s);
        }
        Ok(())
    }

    /// The refitted weight `[out, width]` (row-major, as GGUF stores projections), or `None` if even a
    /// much larger ridge leaves the system singular.
    fn solve(&self, ridge_frac: f64) -> Option<Vec<f32>> {
        let (w, o) = (self.gram.width, self.out);
        let g = &self.gram.matrix();
        let mean_diag = (0..w).map(|i| g[i * w + i]).sum::<f64>() / w.max(1) as f64;
        let rhs = Mat::<f64>::from_fn(w, o, |i, j| self.cross[i * o + j]);
        let mut lambda = ridge_frac * mean_diag.max(1e-12);
        for _ in 0..6 {
            let m = Mat::<f64>::from_fn(w, w, |i, j| if i == j { g[i * w + j] + lambda } else { g[i * w + j] });
            if let Ok(llt) = m.llt(Side::Lower) {
                let x = llt.solve(&rhs); // width × out = W'ᵀ
                let mut out = vec![0f32; o * w];
                for r in 0..o {
                    for c in 0..w {
                        out[r * w + c] = x[(c, r)] as f32;
                    }
                }
                if out.iter().all(|v| v.is_finite()) {
                    return Some(out);
                }
            }
            lambda *= 10.0;
        }
        None
    }
}

/// `W · h` for each token (a projection's output alone), via the block's own add-output step on zeros.
fn projection_out(n: usize, e: usize, add: impl FnOnce(&mut [f32]) -> Result<(), PassError>) -> Result<Vec<f32>, PassError> {
    let mut y = vec![0f32; n * e];
    add(&mut y)?;
    Ok(y)
}

fn rel_change(old: &[f32], new: &[f32]) -> f64 {
    let (mut d, mut o) = (0f64, 0f64);
    for (a, b) in old.iter().zip(new) {
        d += f64::from(a - b).powi(2);
        o += f64::from(*a).powi(2);
    }
    (d / o.max(f64::MIN_POSITIVE)).sqrt()
}

impl Reconstruct {
    fn refit(&self, model: &mut Model, name: String, normal: &Normal, outcome: &mut PassOutcome) -> Result<(), PassError> {
        let t = model.tensor(&name)?;
        let (shape, old, from) = (t.shape.clone(), t.to_f32(&name)?, t.format_name());
        let new = normal.solve(self.options.ridge).ok_or_else(|| PassError::Tensor {
            tensor: name.clone(),
            message: "the activations' Gram matrix stays singular even with 10⁵× the ridge".into(),
        })?;
        outcome.changed.push(TensorChange { tensor: name.clone(), from, to: "F32".into(), rel_error: rel_change(&old, &new) });
        model.tensors.insert(name, Tensor { shape, data: TensorData::F32(new) });
        Ok(())
    }
}

impl Pass for Reconstruct {
    fn name(&self) -> &'static str {
        "reconstruct"
    }

    fn needs(&self) -> Needs {
        Needs { float_weights: true, calibration: true, original_model: true }
    }

    fn effects(&self) -> Effects {
        Effects { weights_changed: true, quantizes: false, changes_shapes: false }
    }

    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }

    fn check(&self, _config: &ModelConfig) -> Vec<OptionIssue> {
        self.options.issues()
    }

    fn estimate(&self, _config: &ModelConfig, n_params: u64) -> Estimate {
        // Two models' forward sweeps over the basis calibration tokens plus the Gram products.
        let tokens = edgeforge_core::pass::ESTIMATE_BASIS_CALIBRATION_TOKENS as f64;
        Estimate { seconds: 6.0 * n_params as f64 * tokens / 15e9, peak_bytes: n_params * 8, note: None }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        if let Some(issue) = self.options.issues().into_iter().next() {
            return Err(PassError::Tensor { tensor: format!("(option {})", issue.field), message: issue.message });
        }
        let original = cx.original.ok_or_else(|| PassError::Tensor { tensor: "(reconstruct)".into(), message: "needs the recipe's input model".into() })?;
        let cal = cx.calibration.filter(|c| !c.sequences.is_empty()).ok_or_else(|| PassError::Tensor {
            tensor: "(calibration)".into(),
            message: "reconstruct needs calibration data; add a `calibration` section to the recipe".into(),
        })?;
        let sequences = &cal.sequences[..self.options.samples.unwrap_or(usize::MAX).min(cal.sequences.len())];
        let stream = self.options.target == ReconstructTarget::Stream;
        let e = model.config.n_embd;
        let mut xs = edgeforge_quant::embed(model, sequences)?;
        // The original model's stream (target: stream) and the index of the next original block it enters.
        let mut xo = if stream { Some(xs.clone()) } else { None };
        let mut next_orig = 0usize;
        let mut outcome = PassOutcome::default();
        let (mut refitted, mut skipped) = (0usize, 0usize);
        let n_layers = model.config.n_layers;
        for li in 0..n_layers {
            cx.check_cancel()?;
            let origin = model.origin_of(li);
            let oblock = |l: usize| -> Result<Block, PassError> {
                Block::new(layer_from_model_as(original, l, WeightStorage::F32)?, block_dims(original)).map_err(runtime_error)
            };
            if let Some(xo) = xo.as_mut() {
                // Blocks removed by depth pruning still act on the original stream.
                for skipped_block in next_orig..origin {
                    let b = oblock(skipped_block)?;
                    for (n, x) in xo.iter_mut() {
                        b.run(x, *n).map_err(runtime_error)?;
                    }
                }
            }
            next_orig = origin + 1;
            let ob = oblock(origin)?;
            let mut sb = Block::new(layer_from_model_as(model, li, WeightStorage::F32)?, block_dims(model)).map_err(runtime_error)?;
            let (o_sh, s_sh) = (ob.weights(), sb.weights());
            let attn_pruned = s_sh.n_heads != o_sh.n_heads;
            let ffn_pruned = s_sh.n_ff != o_sh.n_ff;
            let qd = s_sh.n_heads * model.config.head_dim;

            // Attention: refit o_proj.
            let mut heads_all = Vec::with_capacity(xs.len());
            let mut normal = Normal::new(qd, e);
            let fit_attn = attn_pruned || (stream && self.options.all_blocks);
            for (i, (n, x)) in xs.iter().enumerate() {
                let n = *n;
                let heads = sb.attn_norm(x, n).and_then(|xn| sb.attention_heads(&xn, n)).map_err(runtime_error)?;
                if fit_attn {
                    let y = match xo.as_mut() {
                        Some(xo) => {
                            let (_, xo_i) = &mut xo[i];
                            let oh = ob.attn_norm(xo_i, n).and_then(|xn| ob.attention_heads(&xn, n)).map_err(runtime_error)?;
                            ob.add_attention_output(&oh, n, xo_i).map_err(runtime_error)?;
                            xo_i.iter().zip(x).map(|(a, b)| a - b).collect()
                        }
                        None => {
                            let oh = ob.attn_norm(x, n).and_then(|xn| ob.attention_heads(&xn, n)).map_err(runtime_error)?;
                            projection_out(n, e, |y| ob.add_attention_output(&oh, n, y).map_err(runtime_error))?
                        }
                    };
                    normal.add(&heads, &y, n)?;
                } else if let Some(xo) = xo.as_mut() {
                    let (_, xo_i) = &mut xo[i];
                    let oh = ob.attn_norm(xo_i, n).and_then(|xn| ob.attention_heads(&xn, n)).map_err(runtime_error)?;
                    ob.add_attention_output(&oh, n, xo_i).map_err(runtime_error)?;
                }
                heads_all.push(heads);
            }
            if fit_attn {
                self.refit(model, format!("blk.{li}.attn_output.weight"), &normal, &mut outcome)?;
                sb.set_weights(layer_from_model_as(model, li, WeightStorage::F32)?).map_err(runtime_error)?;
                refitted += 1;
            } else {
                skipped += 1;
            }
            for ((n, x), heads) in xs.iter_mut().zip(heads_all) {
                sb.add_attention_output(&heads, *n, x).map_err(runtime_error)?;
            }

            // MLP: refit down_proj.
            let ff = sb.weights().n_ff;
            let mut normal = Normal::new(ff, e);
            let fit_ffn = ffn_pruned || (stream && self.options.all_blocks);
            let mut hidden_all = Vec::with_capacity(xs.len());
            for (i, (n, x)) in xs.iter().enumerate() {
                let n = *n;
                let h = sb.ffn_norm(x, n).and_then(|xn| sb.ffn_hidden(&xn, n)).map_err(runtime_error)?;
                let target = |xin: &[f32]| -> Result<Vec<f32>, PassError> {
                    let oh = ob.ffn_norm(xin, n).and_then(|xn| ob.ffn_hidden(&xn, n)).map_err(runtime_error)?;
                    projection_out(n, e, |y| ob.add_ffn_output(&oh, n, y).map_err(runtime_error))
                };
                match xo.as_mut() {
                    Some(xo) => {
                        let (_, xo_i) = &mut xo[i];
                        let delta = target(xo_i)?;
                        xo_i.iter_mut().zip(&delta).for_each(|(a, d)| *a += d);
                        if fit_ffn {
                            let y: Vec<f32> = xo_i.iter().zip(x).map(|(a, b)| a - b).collect();
                            normal.add(&h, &y, n)?;
                        }
                    }
                    None if fit_ffn => normal.add(&h, &target(x)?, n)?,
                    None => {}
                }
                hidden_all.push(h);
            }
            if fit_ffn {
                self.refit(model, format!("blk.{li}.ffn_down.weight"), &normal, &mut outcome)?;
                sb.set_weights(layer_from_model_as(model, li, WeightStorage::F32)?).map_err(runtime_error)?;
                refitted += 1;
            } else {
                skipped += 1;
            }
            for ((n, x), h) in xs.iter_mut().zip(hidden_all) {
                sb.add_ffn_output(&h, *n, x).map_err(runtime_error)?;
            }
            (cx.progress)(li as u64 + 1, n_layers as u64);
        }
        let tokens: usize = sequences.iter().map(Vec::len).sum();
        outcome.notes.push(format!(
            "refitted {refitted} projections (target {:?}, ridge {} × mean Gram diagonal) on {tokens} calibration tokens; {skipped} left as they were (input not pruned)",
            self.options.target, self.options.ridge
        ));
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_solve_recovers_an_exact_linear_map() {
        // y = W h with W = [[1, 2], [3, -1], [0, 0.5]]: the normal equations give W back (tiny ridge).
        let w = [[1.0f32, 2.0], [3.0, -1.0], [0.0, 0.5]];
        let hs: Vec<[f32; 2]> = (0..50).map(|i| [((i * 7) % 11) as f32 - 5.0, ((i * 3) % 13) as f32 - 6.0]).collect();
        let h: Vec<f32> = hs.iter().flatten().copied().collect();
        let y: Vec<f32> = hs.iter().flat_map(|x| w.iter().map(move |r| r[0] * x[0] + r[1] * x[1])).collect();
        let mut n = Normal::new(2, 3);
        n.add(&h, &y, 50).expect("shapes agree");
        let got = n.solve(1e-9).expect("well conditioned");
        for (g, want) in got.iter().zip(w.iter().flatten()) {
            assert!((g - want).abs() < 1e-3, "{got:?}");
        }
    }
}

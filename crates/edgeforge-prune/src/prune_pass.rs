//! The `prune` pass: score units on calibration statistics of the unpruned model (one forward sweep), pick
//! what each block keeps, then shrink the tensors and drop whole blocks.

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::{Model, ModelConfig};

use crate::options::{HeadUnit, PruneOptions, Scope};
use crate::scores::{channel_scores, kv_group_scores, query_head_scores};
use crate::select::{allocate, top};
use crate::shrink::{keep_channels, keep_heads, refresh_config, remove_blocks};
use crate::stats::{collect, BlockStats};

pub struct Prune {
    pub options: PruneOptions,
}

impl Prune {
    pub fn new(options: PruneOptions) -> Self {
        Self { options }
    }
}

fn norm_sq(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum()
}

/// Cuts a family forbids. Phi-3: llama.cpp's graph fixes the query width at `n_embd`, so a file with fewer
/// query heads does not load. Families whose layers slide by position (Gemma 2: even layers; Gemma 3: five of
/// every six, with their own RoPE base): removing blocks renumbers the survivors, and llama.cpp (like our
/// runtime) assigns local/global attention by the new index, so global layers would become local.
fn family_issues(o: &PruneOptions, config: &ModelConfig) -> Vec<OptionIssue> {
    let family = config.features.family;
    let t = family.traits();
    let mut out = Vec::new();
    if t.fixed_query_width && o.heads.is_some() {
        out.push(OptionIssue {
            field: "heads",
            message: format!("{} models cannot lose attention heads: llama.cpp's {} graph sizes the query and attention output as n_embd; prune `mlp` channels or `depth` instead", t.gguf_arch, t.gguf_arch),
        });
    }
    if t.swa_period > 0 && config.features.sliding_window.is_some() && o.depth.is_some() {
        out.push(OptionIssue {
            field: "depth",
            message: format!("{} layers alternate local and global attention by position (a period of {}): removing blocks would turn global layers local; prune `mlp` channels or `heads` instead", t.gguf_arch, t.swa_period),
        });
    }
    out
}

fn option_error(issue: OptionIssue) -> PassError {
    PassError::Tensor { tensor: format!("(option {})", issue.field), message: issue.message }
}

fn ratios(ratio: f64, by_block: Option<&Vec<f64>>, blocks: &[usize]) -> Vec<f64> {
    match by_block {
        Some(v) => blocks.iter().map(|&b| v.get(b).copied().unwrap_or(ratio)).collect(),
        None => vec![ratio],
    }
}

/// Compact "kept per block" text: runs of equal counts collapse ("30×1152" or "1152 1088 …").
fn counts_text(counts: &[usize]) -> String {
    if counts.windows(2).all(|w| w[0] == w[1]) {
        format!("{}×{}", counts.len(), counts.first().copied().unwrap_or(0))
    } else {
        counts.iter().map(usize::to_string).collect::<Vec<_>>().join(" ")
    }
}

impl Prune {
    /// Depth: the `blocks` lowest-importance blocks not listed in `keep`, with the importance of each.
    fn blocks_to_remove(&self, stats: Option<&[BlockStats]>, outcome: &mut PassOutcome) -> Result<Vec<usize>, PassError> {
        let Some(d) = &self.options.depth else { return Ok(Vec::new()) };
        let stats = stats.ok_or_else(|| PassError::Tensor { tensor: "(depth)".into(), message: "needs calibration statistics".into() })?;
        let importance: Vec<f64> = stats.iter().map(|s| 1.0 - s.mean_cos()).collect();
        let mut order: Vec<usize> = (0..importance.len()).filter(|b| !d.keep.contains(b)).collect();
        order.sort_by(|&a, &b| importance[a].total_cmp(&importance[b]).then(a.cmp(&b)));
        let mut remove: Vec<usize> = order.into_iter().take(d.blocks).collect();
        remove.sort_unstable();
        outcome.notes.push(format!(
            "block importance (1 − mean cos(input, output)): {}",
            importance.iter().enumerate().map(|(b, v)| format!("{b}:{v:.4}")).collect::<Vec<_>>().join(" ")
        ));
        outcome.notes.push(format!("removed blocks {remove:?} (lowest importance)"));
        Ok(remove)
    }

    fn prune_heads(&self, model: &mut Model, blocks: &[usize], stats: Option<&[BlockStats]>, outcome: &mut PassOutcome) -> Result<(), PassError> {
        let Some(h) = &self.options.heads else { return Ok(()) };
        let mut scores = Vec::new();
        let mut n_kv = Vec::new();
        for &l in blocks {
            let q = query_head_scores(model, l, h.criterion, stats.and_then(|s| s.get(l)))?;
            let kv = edgeforge_core::arch::block_shape(model, l)?.n_kv_heads;
            n_kv.push(kv);
            scores.push(q);
        }
        let global = h.scope == Scope::Global;
        let r = ratios(h.ratio, h.ratio_by_block.as_ref(), blocks);
        let mut kept_q = Vec::new();
        match h.unit {
            HeadUnit::KvGroup => {
                let group_scores: Vec<Vec<f64>> = scores.iter().zip(&n_kv).map(|(q, &kv)| kv_group_scores(q, kv)).collect();
                let counts = allocate(&group_scores, &r, global, 1, self.options.min_keep);
                for (((&l, q), g), &count) in blocks.iter().zip(&scores).zip(&group_scores).zip(&counts) {
                    let group = q.len() / g.len().max(1);
                    let kv = top(g, count);
                    let qh: Vec<usize> = kv.iter().flat_map(|&k| k * group..(k + 1) * group).collect();
                    kept_q.push(qh.len());
                    keep_heads(model, l, &qh, &kv)?;
                }
            }
            HeadUnit::QueryHead => {
                // Counts in multiples of the KV count, so every group loses the same number of query heads.
                let multiple = n_kv.iter().copied().max().unwrap_or(1);
                let counts = allocate(&scores, &r, global, multiple, self.options.min_keep.max(multiple));
                for (((&l, q), &kv), &count) in blocks.iter().zip(&scores).zip(&n_kv).zip(&counts) {
                    let group = q.len() / kv.max(1);
                    let per_group = (count / kv.max(1)).clamp(1, group.max(1));
                    let qh: Vec<usize> = (0..kv)
                        .flat_map(|g| top(&q[g * group..(g + 1) * group], per_group).into_iter().map(move |j| g * group + j))
                        .collect();
                    kept_q.push(qh.len());
                    keep_heads(model, l, &qh, &(0..kv).collect::<Vec<_>>())?;
                }
            }
        }
        outcome.notes.push(format!("attention ({:?}, {:?}, {:?}): query heads kept per block {}", h.unit, h.criterion, h.scope, counts_text(&kept_q)));
        Ok(())
    }

    fn prune_channels(&self, model: &mut Model, blocks: &[usize], stats: Option<&[BlockStats]>, outcome: &mut PassOutcome) -> Result<(), PassError> {
        let Some(m) = &self.options.mlp else { return Ok(()) };
        let scores =
            blocks.iter().map(|&l| channel_scores(model, l, m.criterion, stats.and_then(|s| s.get(l)))).collect::<Result<Vec<_>, _>>()?;
        let r = ratios(m.ratio, m.ratio_by_block.as_ref(), blocks);
        let counts = allocate(&scores, &r, m.scope == Scope::Global, m.keep_multiple, self.options.min_keep);
        for ((&l, s), &count) in blocks.iter().zip(&scores).zip(&counts) {
            keep_channels(model, l, &top(s, count))?;
        }
        let before: usize = scores.iter().map(Vec::len).sum();
        let after: usize = counts.iter().sum();
        outcome.notes.push(format!(
            "MLP ({:?}, {:?}): {after} of {before} channels kept ({:.1}% removed); per block {}",
            m.criterion,
            m.scope,
            100.0 * (before - after) as f64 / before.max(1) as f64,
            counts_text(&counts)
        ));
        Ok(())
    }
}

impl Pass for Prune {
    fn name(&self) -> &'static str {
        "prune"
    }

    fn needs(&self) -> Needs {
        Needs { float_weights: true, calibration: self.options.needs_calibration(), original_model: false }
    }

    fn effects(&self) -> Effects {
        Effects { weights_changed: true, quantizes: false, changes_shapes: true }
    }

    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }

    fn check(&self, config: &ModelConfig) -> Vec<OptionIssue> {
        let mut out = self.options.issues(Some(config.n_layers));
        out.extend(family_issues(&self.options, config));
        out
    }

    fn estimate_kind(&self) -> String {
        // Removing whole blocks and narrowing them are different work: measured apart.
        match (self.options.depth.is_some(), self.options.mlp.is_some() || self.options.heads.is_some()) {
            (true, true) => "prune:depth+width".into(),
            (true, false) => "prune:depth".into(),
            _ => "prune:width".into(),
        }
    }

    fn estimate(&self, _config: &ModelConfig, n_params: u64) -> Estimate {
        // One forward sweep over the basis calibration tokens at ~15 GFLOP/s, then the copies.
        let tokens = edgeforge_core::pass::ESTIMATE_BASIS_CALIBRATION_TOKENS as f64;
        let seconds = if self.options.needs_calibration() { 2.0 * n_params as f64 * tokens / 15e9 } else { 2.0 };
        Estimate { seconds, peak_bytes: n_params * 8, note: None }
    }

    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        if let Some(issue) = self.options.issues(Some(model.config.n_layers)).into_iter().next() {
            return Err(option_error(issue));
        }
        let stats = if self.options.needs_calibration() {
            let cal = cx.calibration.filter(|c| !c.sequences.is_empty()).ok_or_else(|| PassError::Tensor {
                tensor: "(calibration)".into(),
                message: "prune with criterion wanda or depth pruning needs calibration data; add a `calibration` section or use criterion: magnitude".into(),
            })?;
            let n = self.options.samples.unwrap_or(usize::MAX).min(cal.sequences.len());
            Some(collect(model, &cal.sequences[..n], cx)?)
        } else {
            None
        };
        // Shapes and squared norms before: a pruned tensor is a subset of the original, so the energy it
        // lost is ‖W‖² − ‖W'‖², which is ‖W − W'‖² with the removed entries counted as zeros.
        let before = model
            .tensors
            .iter()
            .filter(|(_, t)| t.shape.len() == 2 && t.shape[0] != model.config.vocab_size)
            .map(|(n, t)| Ok((n.clone(), t.shape.clone(), norm_sq(&t.to_f32(n)?))))
            .collect::<Result<Vec<_>, PassError>>()?;
        let params_before: usize = model.tensors.values().map(|t| t.n_elems()).sum();
        let mut outcome = PassOutcome::default();
        let remove = self.blocks_to_remove(stats.as_deref(), &mut outcome)?;
        let blocks: Vec<usize> = (0..model.config.n_layers).filter(|b| !remove.contains(b)).collect();
        self.prune_heads(model, &blocks, stats.as_deref(), &mut outcome)?;
        self.prune_channels(model, &blocks, stats.as_deref(), &mut outcome)?;
        for (name, shape, energy) in &before {
            if let Some(t) = model.tensors.get(name).filter(|t| &t.shape != shape) {
                let kept = norm_sq(&t.to_f32(name)?);
                outcome.changed.push(TensorChange {
                    tensor: name.clone(),
                    from: format!("{shape:?}"),
                    to: format!("{:?} F32", t.shape),
                    rel_error: ((energy - kept).max(0.0) / energy.max(f64::MIN_POSITIVE)).sqrt(),
                });
            }
        }
        remove_blocks(model, &remove);
        refresh_config(model)?;
        let params_after: usize = model.tensors.values().map(|t| t.n_elems()).sum();
        outcome.notes.push(format!(
            "parameters {params_before} → {params_after} ({:.1}% fewer); {} blocks",
            100.0 * (params_before - params_after) as f64 / params_before.max(1) as f64,
            model.config.n_layers
        ));
        Ok(outcome)
    }
}

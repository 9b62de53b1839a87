//! Structured pruning on tiny models built by the test: removing units must equal zeroing them out in the
//! unpruned model (exact up to float summation order), GGUF export of uneven blocks must load back with
//! the same logits, and reconstruction must bring the pruned model closer to the original.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::AtomicBool;

use edgeforge_core::pass::{CalibrationData, Pass, PassContext};
use edgeforge_core::{load_model, Model, Tensor, TensorData};
use edgeforge_prune::{ChannelPrune, Criterion, DepthPrune, HeadPrune, HeadUnit, Prune, PruneOptions, Reconstruct, ReconstructOptions, ReconstructTarget, Scope};
use edgeforge_runtime::{weights_from_model, LlamaRuntime};
use edgeforge_tests::{write_tiny_gguf, Rng, TinySpec};

const E: usize = 48;
const SPEC: TinySpec = TinySpec { n_embd: E, n_layers: 3, n_heads: 6, n_kv_heads: 2, n_ff: 64, tied: true, seed: 11, f16: false };

fn tiny(dir: &Path) -> Model {
    load_model(&write_tiny_gguf(dir, "tiny.gguf", &SPEC)).unwrap()
}

fn calibration(vocab: usize) -> CalibrationData {
    let mut rng = Rng::new(5);
    CalibrationData { sequences: (0..6).map(|_| (0..24).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()).collect() }
}

fn run_pass(pass: &dyn Pass, model: &mut Model, original: Option<&Model>, cal: &CalibrationData) {
    let cancel = AtomicBool::new(false);
    let progress = |_: u64, _: u64| {};
    let cx = PassContext { seed: 0, calibration: Some(cal), progress: &progress, status: &|_| {}, cancel: &cancel, original, work_dir: None };
    pass.run(model, &cx).unwrap();
}

fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let rt = LlamaRuntime::new(weights_from_model(model).unwrap()).unwrap();
    let mut cache = rt.new_cache(tokens.len());
    rt.forward(&mut cache, tokens, 0).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn floats(model: &Model, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = model.tensor(name).unwrap();
    (t.shape.clone(), t.to_f32(name).unwrap())
}

fn set(model: &mut Model, name: &str, shape: Vec<usize>, v: Vec<f32>) {
    model.tensors.insert(name.to_owned(), Tensor { shape, data: TensorData::F32(v) });
}

/// Which rows of `orig` (`[rows, cols]`) survive in `pruned`, matched by exact values.
fn kept_rows(orig: &[f32], pruned: &[f32], cols: usize) -> Vec<usize> {
    pruned
        .chunks_exact(cols)
        .map(|row| orig.chunks_exact(cols).position(|o| o == row).expect("every kept row is an original row"))
        .collect()
}

fn zero_cols(model: &mut Model, name: &str, cols: &[usize]) {
    let (shape, mut v) = floats(model, name);
    for r in 0..shape[0] {
        for &c in cols {
            v[r * shape[1] + c] = 0.0;
        }
    }
    set(model, name, shape, v);
}

fn options() -> PruneOptions {
    PruneOptions { mlp: None, heads: None, depth: None, min_keep: 1, samples: None }
}

const TOKENS: [u32; 12] = [3, 17, 4, 9, 22, 1, 30, 5, 8, 12, 2, 19];

#[test]
fn removing_mlp_channels_equals_zeroing_them() {
    let dir = tempfile::tempdir().unwrap();
    for criterion in [Criterion::Magnitude, Criterion::Wanda] {
        let mut pruned = tiny(dir.path());
        let cal = calibration(pruned.config.vocab_size);
        let o = PruneOptions { mlp: Some(ChannelPrune { ratio: 0.25, ratio_by_block: None, scope: Scope::PerBlock, criterion, keep_multiple: 8 }), ..options() };
        run_pass(&Prune::new(o), &mut pruned, None, &cal);
        let mut masked = tiny(dir.path());
        for l in 0..SPEC.n_layers {
            let name = format!("blk.{l}.ffn_gate.weight");
            let (shape, v) = floats(&pruned, &name);
            assert_eq!(shape, vec![48, E], "64 channels less 25%, a multiple of 8");
            let kept = kept_rows(&floats(&masked, &name).1, &v, E);
            let removed: Vec<usize> = (0..64).filter(|c| !kept.contains(c)).collect();
            zero_cols(&mut masked, &format!("blk.{l}.ffn_down.weight"), &removed);
        }
        assert_eq!(pruned.config.n_ff, 48);
        let d = max_abs_diff(&logits(&pruned, &TOKENS), &logits(&masked, &TOKENS));
        assert!(d < 1e-4, "{criterion:?}: pruned and masked models differ by {d}");
    }
}

#[test]
fn removing_heads_keeps_gqa_valid_and_equals_zeroing_them() {
    let dir = tempfile::tempdir().unwrap();
    for (unit, want_q, want_kv) in [(HeadUnit::KvGroup, 3, 1), (HeadUnit::QueryHead, 4, 2)] {
        let mut pruned = tiny(dir.path());
        let head_dim = pruned.config.head_dim;
        let cal = calibration(pruned.config.vocab_size);
        let ratio = if unit == HeadUnit::KvGroup { 0.5 } else { 1.0 / 3.0 };
        let o = PruneOptions { heads: Some(HeadPrune { ratio, ratio_by_block: None, scope: Scope::PerBlock, criterion: Criterion::Wanda, unit }), ..options() };
        run_pass(&Prune::new(o), &mut pruned, None, &cal);
        let mut masked = tiny(dir.path());
        for l in 0..SPEC.n_layers {
            let shape = edgeforge_core::arch::block_shape(&pruned, l).unwrap();
            assert_eq!((shape.n_heads, shape.n_kv_heads), (want_q, want_kv), "{unit:?} block {l}");
            // Query heads kept, by matching each kept head's q rows against the original's.
            let (_, q_orig) = floats(&masked, &format!("blk.{l}.attn_q.weight"));
            let (_, q_new) = floats(&pruned, &format!("blk.{l}.attn_q.weight"));
            let w = head_dim * E;
            let kept: Vec<usize> = q_new.chunks_exact(w).map(|h| q_orig.chunks_exact(w).position(|o| o == h).unwrap()).collect();
            // Each kept query head still reads its own KV head: kept KV heads in order, `group` each.
            let group = want_q / want_kv;
            let (_, k_orig) = floats(&masked, &format!("blk.{l}.attn_k.weight"));
            let (_, k_new) = floats(&pruned, &format!("blk.{l}.attn_k.weight"));
            let kv_kept: Vec<usize> = k_new.chunks_exact(w).map(|h| k_orig.chunks_exact(w).position(|o| o == h).unwrap()).collect();
            for (i, &qh) in kept.iter().enumerate() {
                assert_eq!(qh / (SPEC.n_heads / SPEC.n_kv_heads), kv_kept[i / group], "{unit:?}: query head {qh} must keep its KV head");
            }
            let removed_dims: Vec<usize> = (0..SPEC.n_heads).filter(|h| !kept.contains(h)).flat_map(|h| h * head_dim..(h + 1) * head_dim).collect();
            zero_cols(&mut masked, &format!("blk.{l}.attn_output.weight"), &removed_dims);
        }
        let d = max_abs_diff(&logits(&pruned, &TOKENS), &logits(&masked, &TOKENS));
        assert!(d < 1e-4, "{unit:?}: pruned and masked models differ by {d}");
    }
}

#[test]
fn removing_a_block_equals_making_it_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut pruned = tiny(dir.path());
    let cal = calibration(pruned.config.vocab_size);
    let o = PruneOptions { depth: Some(DepthPrune { blocks: 1, criterion: Default::default(), keep: vec![0] }), ..options() };
    run_pass(&Prune::new(o), &mut pruned, None, &cal);
    assert_eq!(pruned.config.n_layers, 2);
    assert_eq!(pruned.block_origin.len(), 2);
    assert_eq!(pruned.block_origin[0], 0, "block 0 is listed in keep");
    let removed = (0..3).find(|b| !pruned.block_origin.contains(b)).unwrap();
    let mut masked = tiny(dir.path());
    for t in ["attn_output", "ffn_down"] {
        let name = format!("blk.{removed}.{t}.weight");
        let (shape, v) = floats(&masked, &name);
        set(&mut masked, &name, shape, vec![0.0; v.len()]);
    }
    let d = max_abs_diff(&logits(&pruned, &TOKENS), &logits(&masked, &TOKENS));
    assert!(d < 1e-4, "pruned and masked models differ by {d}");
}

#[test]
fn uneven_blocks_export_to_gguf_padded_and_load_back_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut pruned = tiny(dir.path());
    let cal = calibration(pruned.config.vocab_size);
    let o = PruneOptions {
        mlp: Some(ChannelPrune { ratio: 0.5, ratio_by_block: Some(vec![0.0, 0.5, 0.25]), scope: Scope::PerBlock, criterion: Criterion::Wanda, keep_multiple: 8 }),
        heads: Some(HeadPrune { ratio: 0.5, ratio_by_block: Some(vec![0.0, 0.5, 0.0]), scope: Scope::PerBlock, criterion: Criterion::Magnitude, unit: HeadUnit::KvGroup }),
        ..options()
    };
    run_pass(&Prune::new(o), &mut pruned, None, &cal);
    let widths: Vec<usize> = (0..3).map(|l| edgeforge_core::arch::block_shape(&pruned, l).unwrap().n_ff).collect();
    assert_eq!(widths, vec![64, 32, 48]);
    assert_eq!(edgeforge_core::arch::block_shape(&pruned, 1).unwrap().n_kv_heads, 1);
    let path = dir.path().join("pruned.gguf");
    let notes = edgeforge_export::gguf_model::write_gguf(&pruned, &path, "pruned").unwrap();
    assert!(notes.fallbacks.iter().any(|n| n.contains("zero-padded")), "{:?}", notes.fallbacks);
    let back = load_model(&path).unwrap();
    assert_eq!((back.config.n_ff, back.config.n_heads, back.config.n_kv_heads), (64, 6, 2));
    let d = max_abs_diff(&logits(&pruned, &TOKENS), &logits(&back, &TOKENS));
    assert!(d < 1e-4, "padded export differs by {d}");
}

#[test]
fn global_scope_prunes_blocks_unevenly_to_the_overall_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let mut pruned = tiny(dir.path());
    let cal = calibration(pruned.config.vocab_size);
    let o = PruneOptions { mlp: Some(ChannelPrune { ratio: 0.5, ratio_by_block: None, scope: Scope::Global, criterion: Criterion::Wanda, keep_multiple: 1 }), ..options() };
    run_pass(&Prune::new(o), &mut pruned, None, &cal);
    let widths: Vec<usize> = (0..3).map(|l| edgeforge_core::arch::block_shape(&pruned, l).unwrap().n_ff).collect();
    assert_eq!(widths.iter().sum::<usize>(), 96, "{widths:?}");
    logits(&pruned, &TOKENS);
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>() / a.len() as f64
}

#[test]
fn reconstruction_brings_the_pruned_model_closer_to_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let original = tiny(dir.path());
    let cal = calibration(original.config.vocab_size);
    let reference: Vec<Vec<f32>> = cal.sequences.iter().map(|s| logits(&original, s)).collect();
    let error = |m: &Model| cal.sequences.iter().zip(&reference).map(|(s, r)| mse(&logits(m, s), r)).sum::<f64>();
    let prune = PruneOptions {
        mlp: Some(ChannelPrune { ratio: 0.5, ratio_by_block: None, scope: Scope::PerBlock, criterion: Criterion::Wanda, keep_multiple: 8 }),
        heads: Some(HeadPrune { ratio: 1.0 / 3.0, ratio_by_block: None, scope: Scope::PerBlock, criterion: Criterion::Wanda, unit: HeadUnit::QueryHead }),
        ..options()
    };
    let mut pruned = tiny(dir.path());
    run_pass(&Prune::new(prune.clone()), &mut pruned, None, &cal);
    let before = error(&pruned);
    for target in [ReconstructTarget::Local, ReconstructTarget::Stream] {
        let mut m = tiny(dir.path());
        run_pass(&Prune::new(prune.clone()), &mut m, None, &cal);
        run_pass(&Reconstruct::new(ReconstructOptions { ridge: 1e-3, target, all_blocks: false, samples: None }), &mut m, Some(&original), &cal);
        let after = error(&m);
        assert!(after < 0.8 * before, "{target:?}: logit MSE {before} → {after}");
    }
    // Depth pruning plus a stream-target refit of every block: the survivors absorb part of the removed block.
    let depth = PruneOptions { depth: Some(DepthPrune { blocks: 1, criterion: Default::default(), keep: vec![] }), ..options() };
    let mut m = tiny(dir.path());
    run_pass(&Prune::new(depth), &mut m, None, &cal);
    let before = error(&m);
    run_pass(&Reconstruct::new(ReconstructOptions { ridge: 1e-3, target: ReconstructTarget::Stream, all_blocks: true, samples: None }), &mut m, Some(&original), &cal);
    let after = error(&m);
    assert!(after < before, "depth + stream refit: logit MSE {before} → {after}");
}

#[test]
fn bad_options_are_refused_with_the_field() {
    let o = PruneOptions { mlp: Some(ChannelPrune { ratio: 1.2, ratio_by_block: Some(vec![0.1]), scope: Scope::Global, criterion: Criterion::Wanda, keep_multiple: 0 }), ..options() };
    let issues = o.issues(Some(3));
    let text = format!("{issues:?}");
    for want in ["ratio = 1.2", "scope: per-block", "has 1 ratios, the model has 3", "keep_multiple"] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
    let none = options().issues(Some(3));
    assert!(format!("{none:?}").contains("nothing to prune"));
    let deep = PruneOptions { depth: Some(DepthPrune { blocks: 3, criterion: Default::default(), keep: vec![] }), ..options() };
    assert!(format!("{:?}", deep.issues(Some(3))).contains("would leave nothing"));
}

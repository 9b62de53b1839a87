//! Real inputs of a model's linear layers on calibration text, for exporters that calibrate on them (NIR's
//! spiking thresholds): the recipe's calibration text (wikitext-2 valid when the recipe has none; never the
//! evaluation text), a few windows at fixed offsets, run through the model block by block.

use std::collections::BTreeMap;

use edgeforge_core::Model;
use edgeforge_export::exporter::LayerInputs;
use edgeforge_runtime::{weights_from_model, CaptureSite, LlamaRuntime};

use crate::parse::RecipeFile;
use crate::RecipeError;

/// Calibration text when the recipe names none.
const DEFAULT_TEXT: &str = "wikitext-2-valid";
/// Windows × tokens per window: 64 input vectors per layer.
const WINDOWS: usize = 4;
const WINDOW_TOKENS: usize = 16;

/// Which input a tensor's linear layer sees in the runtime's capture.
fn site_of(tensor: &str) -> Option<(usize, CaptureSite)> {
    let rest = tensor.strip_prefix("blk.")?;
    let (layer, name) = rest.split_once('.')?;
    let site = match name {
        "attn_q.weight" | "attn_k.weight" | "attn_v.weight" => CaptureSite::Attention,
        "attn_output.weight" => CaptureSite::AttentionOutput,
        "ffn_gate.weight" | "ffn_up.weight" => CaptureSite::FeedForward,
        "ffn_down.weight" => CaptureSite::FeedForwardDown,
        _ => return None,
    };
    Some((layer.parse().ok()?, site))
}

/// The inputs of `wanted` tensors' layers, or `None` when the calibration text is not available (the
/// exporter then says its figures come from synthetic inputs).
pub fn layer_inputs(rf: &RecipeFile, model: &Model, wanted: &[String]) -> Result<Option<LayerInputs>, RecipeError> {
    let sites: Vec<(String, usize, CaptureSite)> = wanted.iter().filter_map(|t| site_of(t).map(|(l, s)| (t.clone(), l, s))).collect();
    let Some(last_layer) = sites.iter().map(|s| s.1).max() else { return Ok(None) };
    let name = rf.recipe.calibration.as_ref().map_or(DEFAULT_TEXT.to_owned(), |c| c.dataset.value.clone());
    let Ok(text) = crate::validate::recipe_text(rf, &name) else { return Ok(None) };
    let tokens = model.tokenizer.encode(&text.text, false).map_err(edgeforge_eval::EvalError::from)?;
    if tokens.len() < WINDOWS * WINDOW_TOKENS {
        return Ok(None);
    }
    let runtime = LlamaRuntime::new(weights_from_model(model)?)?;
    let bos = if model.tokenizer.add_bos() { model.tokenizer.bos_id() } else { None };
    let mut by_tensor: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
    let stride = (tokens.len() - WINDOW_TOKENS) / WINDOWS;
    for w in 0..WINDOWS {
        // BOS first when the model adds one; its position (an outlier the text never has) is not kept.
        let window: Vec<u32> = bos.into_iter().chain(tokens[w * stride..w * stride + WINDOW_TOKENS].iter().copied()).collect();
        let skip = usize::from(bos.is_some());
        let n = window.len();
        let mut x = runtime.embed(&window)?;
        for li in 0..=last_layer {
            runtime.run_layer(li, &mut x, n, &mut |site, input| {
                for (tensor, _, _) in sites.iter().filter(|s| s.1 == li && s.2 == site) {
                    let n_in = (input.len() / n).max(1);
                    by_tensor.entry(tensor.clone()).or_default().extend(input.chunks_exact(n_in).skip(skip).map(<[f32]>::to_vec));
                }
            })?;
        }
    }
    let source = format!("{} ({WINDOWS} windows of {WINDOW_TOKENS} tokens at even offsets after BOS, sha256 {})", text.dataset.clone().unwrap_or(name), &text.sha256[..12]);
    Ok(Some(LayerInputs { source, by_tensor }))
}

//! The `prune-vocab` pass: keep the tokens a corpus uses (and what any text needs to still tokenize, see
//! `Tokenizer::prune`), and drop the other rows of the token embedding and the output head. Kept rows keep
//! their storage format (float or ggml blocks); the pass checks that the corpus tokenizes to the same tokens
//! under the new ids and decodes back to itself, and reports the share of the rest of the text (outside the
//! slice) whose tokens survived as single ids.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeforge_core::pass::{Effects, Estimate, Needs, OptionIssue, Pass, PassContext, PassError, PassOutcome, TensorChange};
use edgeforge_core::{Model, ModelConfig, Tensor};
use edgeforge_eval::datasets::{manifests, resolve_text, text_slice, Slice};

fn whole() -> Slice {
    Slice::WHOLE
}

/// Options of `prune-vocab`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneVocabOptions {
    /// The text whose tokens are kept: a dataset name (datasets/) or a path to a text file.
    pub corpus: String,
    /// The part of the text used, `[from, to]` as shares of its bytes cut at line starts (default: all).
    #[serde(default = "whole")]
    #[schemars(with = "[f64; 2]")]
    pub slice: Slice,
}

pub struct PruneVocab {
    pub options: PruneVocabOptions,
}

impl PruneVocab {
    pub fn new(options: PruneVocabOptions) -> Self {
        Self { options }
    }
}

fn pass_error(tensor: &str, message: impl std::fmt::Display) -> PassError {
    PassError::Tensor { tensor: tensor.to_owned(), message: message.to_string() }
}

/// Rows `rows` of `t` in their own storage (float or ggml blocks), or as floats for our integer codes.
fn select_rows(name: &str, t: &Tensor, rows: &[u32]) -> Result<Tensor, PassError> {
    let parts: Option<Vec<Tensor>> = rows.iter().map(|&r| t.row_range(r as usize, 1)).collect();
    if let Some(t) = parts.and_then(|p| Tensor::concat_rows(&p.iter().collect::<Vec<_>>())) {
        return Ok(t);
    }
    let cols = t.row_len();
    let v = t.to_f32(name)?;
    let out = rows.iter().flat_map(|&r| v[r as usize * cols..(r as usize + 1) * cols].iter().copied()).collect();
    Ok(Tensor { shape: vec![rows.len(), cols], data: edgeforge_core::TensorData::F32(out) })
}

/// A path to an existing file, or a dataset's name or file name (found or fetched at run time).
fn corpus_known(spec: &str) -> bool {
    std::path::Path::new(spec).is_file() || manifests().unwrap_or_default().iter().any(|m| m.name == spec || m.file == spec)
}

fn encode(model: &Model, text: &str) -> Result<Vec<u32>, PassError> {
    model.tokenizer.encode(text, false).map_err(|e| pass_error("(tokenizer)", e))
}

/// The pruned tokenizer must give the corpus the same tokens (under the new ids) and decode it back.
fn verify(model: &Model, text: &str, expected: &[u32]) -> Result<(), PassError> {
    let ids = encode(model, text)?;
    if ids != expected {
        let at = ids.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(ids.len().min(expected.len()));
        return Err(pass_error("(tokenizer)", format!("the pruned tokenizer splits the corpus differently from token {at} on")));
    }
    let back = model.tokenizer.decode(&ids).map_err(|e| pass_error("(tokenizer)", e))?;
    if back != text {
        return Err(pass_error("(tokenizer)", "the corpus does not decode back to itself with the pruned tokenizer"));
    }
    Ok(())
}

impl Pass for PruneVocab {
    fn name(&self) -> &'static str {
        "prune-vocab"
    }
    fn needs(&self) -> Needs {
        Needs::default()
    }
    fn effects(&self) -> Effects {
        Effects { weights_changed: true, quantizes: false, changes_shapes: true }
    }
    fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or_default()
    }
    fn check(&self, _config: &ModelConfig) -> Vec<OptionIssue> {
        let mut out = Vec::new();
        if !corpus_known(&self.options.corpus) {
            let names: Vec<String> = manifests().unwrap_or_default().into_iter().map(|m| m.name).collect();
            out.push(OptionIssue { field: "corpus", message: format!("`{}` is neither a text file nor a dataset name ({})", self.options.corpus, names.join(", ")) });
        }
        out
    }
    fn estimate(&self, _config: &ModelConfig, _n_params: u64) -> Estimate {
        Estimate { seconds: 10.0, peak_bytes: 0, note: Some("tokenizes the corpus three times".into()) }
    }
    fn run(&self, model: &mut Model, cx: &PassContext<'_>) -> Result<PassOutcome, PassError> {
        let resolved = resolve_text(&self.options.corpus).map_err(|e| pass_error("(option corpus)", e))?;
        let [from, to] = self.options.slice.0;
        let train = text_slice(&resolved.text, [from, to]);
        let rest: String = [text_slice(&resolved.text, [0.0, from]), text_slice(&resolved.text, [to, 1.0])].concat();
        let ids = encode(model, train)?;
        let old_vocab = model.config.vocab_size;
        let mut used = vec![false; model.tokenizer.vocab_size()];
        for &i in &ids {
            used[i as usize] = true;
        }
        cx.check_cancel()?;
        let pruned = model.tokenizer.prune(&used).map_err(|e| pass_error("(tokenizer)", e))?;
        let mut new_id = vec![u32::MAX; used.len()];
        for (n, &o) in pruned.kept.iter().enumerate() {
            new_id[o as usize] = n as u32;
        }
        let rest_ids = encode(model, &rest)?;
        let covered = rest_ids.iter().filter(|&&i| new_id[i as usize] != u32::MAX).count();
        let mut outcome = PassOutcome::default();
        let mut saved = 0usize;
        for name in ["token_embd.weight", "output.weight"] {
            let Some(t) = model.tensors.get(name) else { continue };
            let shrunk = select_rows(name, t, &pruned.kept)?;
            saved += t.storage_bytes().saturating_sub(shrunk.storage_bytes());
            outcome.changed.push(TensorChange { tensor: name.to_owned(), from: format!("{:?}", t.shape), to: format!("{:?}", shrunk.shape), rel_error: 0.0 });
            model.tensors.insert(name.to_owned(), shrunk);
        }
        model.tokenizer = pruned.tokenizer;
        model.config.vocab_size = pruned.kept.len();
        verify(model, train, &ids.iter().map(|&i| new_id[i as usize]).collect::<Vec<_>>())?;
        let distinct = used.iter().filter(|&&u| u).count();
        outcome.notes.push(format!(
            "kept {} of {old_vocab} tokens ({distinct} used by the corpus's {} tokens, the rest bytes, special tokens and merge intermediates); {saved} bytes saved; corpus coverage 100% (same tokens, checked; decodes back to itself)",
            pruned.kept.len(),
            ids.len()
        ));
        if !rest_ids.is_empty() {
            outcome.notes.push(format!("held-out text (outside the slice): {:.2}% of its {} tokens kept as single ids", 100.0 * covered as f64 / rest_ids.len() as f64, rest_ids.len()));
        }
        Ok(outcome)
    }
}

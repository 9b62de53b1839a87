//! Which tensors a quantization pass touches: 2-D linear weights, minus `ignore` globs over GGUF names.

use edgeforge_core::Model;

pub(crate) fn targets(model: &Model, ignore: &[glob::Pattern]) -> Vec<String> {
    model
        .tensors
        .iter()
        .filter(|(name, t)| t.shape.len() == 2 && !ignore.iter().any(|p| p.matches(name)))
        .map(|(name, _)| name.clone())
        .collect()
}

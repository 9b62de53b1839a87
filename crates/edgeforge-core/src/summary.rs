//! What `edgeforge inspect` and reports say about a model: parameter counts by kind, storage types, bits
//! per weight. Computed from the IR, so it is the same for a GGUF file and an HF folder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::arch::TensorKind;
use crate::model::{Model, ModelConfig, SourceFormat};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Footprint {
    pub tensors: usize,
    pub params: u64,
    pub bytes: u64,
    pub bits_per_weight: f64,
}

impl Footprint {
    fn add(&mut self, params: u64, bytes: u64) {
        self.tensors += 1;
        self.params += params;
        self.bytes += bytes;
        self.bits_per_weight = if self.params == 0 { 0.0 } else { self.bytes as f64 * 8.0 / self.params as f64 };
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenizerSummary {
    pub vocab_size: usize,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub add_bos: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub path: String,
    pub format: SourceFormat,
    pub file_bytes: u64,
    pub sha256: String,
    pub config: ModelConfig,
    /// All stored weights (a tied output head counts once).
    pub total: Footprint,
    pub by_kind: BTreeMap<TensorKind, Footprint>,
    /// Keyed by llama.cpp type name (`Q4_1`, `F32`, ...).
    pub by_type: BTreeMap<String, Footprint>,
    pub tokenizer: TokenizerSummary,
}

pub fn summarize(model: &Model) -> ModelSummary {
    let mut total = Footprint::default();
    let mut by_kind: BTreeMap<TensorKind, Footprint> = BTreeMap::new();
    let mut by_type: BTreeMap<String, Footprint> = BTreeMap::new();
    for (name, t) in &model.tensors {
        let (params, bytes) = (t.n_elems() as u64, t.storage_bytes() as u64);
        total.add(params, bytes);
        by_kind.entry(TensorKind::of(name)).or_default().add(params, bytes);
        by_type.entry(t.format_name()).or_default().add(params, bytes);
    }
    ModelSummary {
        path: model.source.path.display().to_string(),
        format: model.source.format,
        file_bytes: model.source.file_bytes,
        sha256: model.source.sha256.clone(),
        config: model.config.clone(),
        total,
        by_kind,
        by_type,
        tokenizer: TokenizerSummary {
            vocab_size: model.tokenizer.vocab_size(),
            bos_id: model.tokenizer.bos_id(),
            eos_id: model.tokenizer.eos_id(),
            add_bos: model.tokenizer.add_bos(),
        },
    }
}

/// `n` and the noun, singular for 1 ("1 chunk", "3 chunks", "1 thread"): labels that read as English.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod count_tests {
    #[test]
    fn one_is_singular() {
        assert_eq!(super::count(1u32, "chunk"), "1 chunk");
        assert_eq!(super::count(0u32, "thread"), "0 threads");
        assert_eq!(super::count(25u64, "chunk"), "25 chunks");
    }
}

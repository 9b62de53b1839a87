//! Measured pass throughput, so `--dry-run` estimates from this machine once it has run a pass of the same
//! kind. After every pass of a real run the runner records its seconds with the work it did (parameters,
//! the tokens its cost grows with, threads); the plan scales the latest record of the same kind
//! (`Pass::estimate_kind`) linearly in parameters, tokens and 1/threads, and says which record it used.
//! Without a record the pass's built-in estimate is used, labelled as such.
//!
//! The records live in `$EDGEFORGE_MEASURED` or `~/.cache/edgeforge/measured-passes.json` (written whole
//! to a temporary file and renamed; a damaged file is ignored, never an error: these are hints).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One measured pass.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub seconds: f64,
    pub params: u64,
    /// The tokens its cost grows with (calibration or training tokens), `None` when it does not.
    pub tokens: Option<u64>,
    pub threads: usize,
    /// The edgeforge version that measured it.
    pub version: String,
}

impl Sample {
    /// The time this sample predicts for `params`, `tokens` and `threads`.
    pub fn scaled(&self, params: u64, tokens: Option<u64>, threads: usize) -> f64 {
        let by_tokens = match (tokens, self.tokens) {
            (Some(t), Some(st)) if st > 0 => t as f64 / st as f64,
            _ => 1.0,
        };
        self.seconds * (params as f64 / self.params.max(1) as f64) * by_tokens * (self.threads.max(1) as f64 / threads.max(1) as f64)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    passes: BTreeMap<String, Sample>,
}

fn store() -> Option<PathBuf> {
    std::env::var_os("EDGEFORGE_MEASURED")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/edgeforge/measured-passes.json")))
}

fn read() -> Records {
    store()
        .and_then(|p| edgeforge_core::read_limit::read_at_most(&p, 1 << 20, "measurement record").ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The latest record of a kind of pass, if this machine has one.
pub fn latest(kind: &str) -> Option<Sample> {
    read().passes.remove(kind)
}

/// Keep `sample` as the latest of its kind. Best effort: a store that cannot be written is skipped.
pub fn record(kind: &str, sample: Sample) {
    let Some(path) = store() else { return };
    let mut records = read();
    records.passes.insert(kind.to_owned(), sample);
    let Ok(json) = serde_json::to_vec_pretty(&records) else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = edgeforge_export::atomic::write_file(&path, |f| f.write_all(&json));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_scales_linearly_in_parameters_tokens_and_threads() {
        let s = Sample { seconds: 100.0, params: 1000, tokens: Some(500), threads: 2, version: "x".into() };
        assert_eq!(s.scaled(1000, Some(500), 2), 100.0);
        assert_eq!(s.scaled(2000, Some(1000), 1), 800.0);
        let flat = Sample { tokens: None, ..s };
        assert_eq!(flat.scaled(1000, Some(123), 2), 100.0);
    }
}

//! report.json. `schema_version` changes whenever a field changes meaning or disappears; readers refuse
//! versions they do not know.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use edgeforge_core::pass::TensorChange;

pub const REPORT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub edgeforge_version: String,
    pub recipe: Option<RecipeInfo>,
    pub environment: Environment,
    pub model_before: ModelStats,
    pub model_after: ModelStats,
    pub passes: Vec<PassReport>,
    pub metrics_before: Metrics,
    pub metrics_after: Metrics,
    pub artifacts: Vec<Artifact>,
    /// Each target's fit check against its device profile (refusals included).
    #[serde(default)]
    pub targets: Vec<TargetFit>,
    pub gates: Option<GateOutcome>,
    pub seconds_total: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipeInfo {
    pub path: String,
    pub sha256: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub git_describe: Option<String>,
    pub cpu_model: String,
    pub cpu_features: Vec<String>,
    pub threads: usize,
    pub os: String,
    pub seed: u64,
}

pub use edgeforge_core::summary::Footprint;
/// Latency as `edgeforge eval latency` measures it.
pub use edgeforge_eval::LatencyResult as LatencyMetric;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelStats {
    pub path: String,
    pub sha256: String,
    pub params: u64,
    pub bytes: u64,
    pub bits_per_weight: f64,
    pub by_kind: BTreeMap<String, Footprint>,
    pub by_format: BTreeMap<String, Footprint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassReport {
    pub name: String,
    pub options: serde_json::Value,
    pub seconds: f64,
    pub peak_rss_bytes: u64,
    pub params_before: u64,
    pub params_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub changed: Vec<TensorChange>,
    pub notes: Vec<String>,
    /// The model's perplexity right after this pass (`eval.perplexity.after_each_pass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity_after: Option<PerplexityMetric>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub perplexity: Option<PerplexityMetric>,
    pub latency: Option<LatencyMetric>,
    /// Against the input model (only on the result side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kld: Option<KldMetric>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KldMetric {
    pub mean_kld: f64,
    pub kld_stderr: f64,
    pub top1_agreement_frac: f64,
    pub ctx: usize,
    pub chunks: usize,
    pub positions: usize,
    pub dataset: String,
    pub dataset_sha256: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerplexityMetric {
    pub perplexity: f64,
    pub ppl_stderr: f64,
    pub ctx: usize,
    pub chunks: usize,
    pub tokens_scored: usize,
    pub dataset: String,
    pub dataset_sha256: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub format: String,
    pub profile: Option<String>,
    pub bytes: u64,
    pub sha256: String,
}

/// A target's fit check: whether the model fits the device, why not and what to change, and estimates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetFit {
    pub format: String,
    pub profile: String,
    pub fits: bool,
    pub shortfalls: Vec<String>,
    pub suggestions: Vec<String>,
    /// Written artifact's size (none when refused).
    pub artifact_bytes: Option<u64>,
    /// The weight bytes the fit was checked with: the model's estimate before writing, then the weight data
    /// the exporter reports having written (never the artifact's size, which counts C source text,
    /// READMEs, partition.json or float32 HDF5 that the device does not hold as weights).
    #[serde(default)]
    pub weight_bytes: u64,
    /// Weights + KV cache at the target's context + buffers (an estimate).
    pub peak_memory_bytes: u64,
    pub context_tokens: u64,
    /// Roofline estimate from the profile's bandwidth, not a measurement.
    pub decode_tok_s_estimate: Option<f64>,
    /// Neuromorphic targets (NIR): energy per token from synaptic operations × the profile's energy per
    /// synaptic operation under assumed spike rates; an estimate, never a measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_per_token_uj_estimate: Option<f64>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateOutcome {
    pub baseline: String,
    pub passed: bool,
    pub checks: Vec<crate::compare::GateCheck>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an edgeforge report: {reason}", path.display())]
    Invalid { path: std::path::PathBuf, reason: String },
    #[error("{}: report schema version {found} is not supported (this edgeforge reads {REPORT_SCHEMA_VERSION})", path.display())]
    Version { path: std::path::PathBuf, found: u64 },
}

impl Report {
    pub fn read(path: &Path) -> Result<Report, ReportError> {
        let bytes = edgeforge_core::read_limit::read_at_most(path, edgeforge_core::read_limit::MAX_DOCUMENT_BYTES, "report")
            .map_err(|source| ReportError::Io { path: path.to_path_buf(), source })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ReportError::Invalid { path: path.to_path_buf(), reason: e.to_string() })?;
        match v.get("schema_version").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(REPORT_SCHEMA_VERSION) => {}
            Some(found) => return Err(ReportError::Version { path: path.to_path_buf(), found }),
            None => return Err(ReportError::Invalid { path: path.to_path_buf(), reason: "no schema_version".into() }),
        }
        serde_json::from_value(v).map_err(|e| ReportError::Invalid { path: path.to_path_buf(), reason: e.to_string() })
    }
}

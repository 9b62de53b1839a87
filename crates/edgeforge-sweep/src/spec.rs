//! The sweep file, as typed data: a base recipe, the axes that vary it and the objective that ranks the
//! variants. Every key is checked while parsing, so errors point at the sweep file's line and column.
//!
//! ```yaml
//! version: 1
//! recipe: ../recipes/smollm2-int4-rtn.yaml      # relative to this file
//! grid:                                          # every combination (cartesian product)
//!   passes[0].bits: [4, 8]
//!   passes[0].group_size: [32, 64, 128]
//! points:                                        # and/or explicit variants
//!   - { passes.0.bits: 3, passes.0.group_size: 32 }  # `passes.0` = `passes[0]` (no quotes needed in {})
//! objective: { best: perplexity, max_size_bytes: 95000000 }
//! # or: objective: { pareto: [size_bytes, perplexity, decode_tok_s] }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::{DuplicateKeyPolicy, Options, Spanned};

use edgeforge_recipe::diagnostic::{Diagnostic, Place};

use crate::node::Node;
use crate::SweepError;

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    #[serde(default = "one")]
    pub version: u32,
    /// The base recipe, relative to the sweep file.
    #[schemars(with = "String")]
    pub recipe: Spanned<String>,
    /// Axes: a recipe path (`passes[1].bits`, `eval.perplexity.chunks`) and its values; every combination
    /// is a variant.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<serde_json::Value>>")]
    pub grid: BTreeMap<String, Spanned<Vec<Node>>>,
    /// Explicit variants, each a map from recipe path to value.
    #[serde(default)]
    #[schemars(with = "Vec<BTreeMap<String, serde_json::Value>>")]
    pub points: Vec<Spanned<Node>>,
    #[schemars(with = "Objective")]
    pub objective: Spanned<Objective>,
}

/// How variants are ranked: the best by one metric (under optional limits), or the Pareto front.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// The one metric to optimise: the lowest perplexity, kld or size_bytes, the highest decode_tok_s.
    pub best: Option<Metric>,
    /// Metrics whose Pareto front is reported (every variant no other beats on all of them).
    pub pareto: Option<Vec<Metric>>,
    /// Variants whose shipped artifact is larger are not chosen.
    pub max_size_bytes: Option<u64>,
    /// Variants with a higher perplexity are not chosen.
    pub max_perplexity: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Perplexity after the passes (report metrics_after.perplexity).
    Perplexity,
    /// Mean KL divergence from the input model (report metrics_after.kld).
    Kld,
    /// Bytes of the first target's artifact (the file a user ships), else the in-memory model bytes.
    SizeBytes,
    /// Decode speed after the passes (report metrics_after.latency); higher is better.
    DecodeTokS,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Perplexity => "perplexity",
            Metric::Kld => "kld",
            Metric::SizeBytes => "size_bytes",
            Metric::DecodeTokS => "decode_tok_s",
        }
    }

    /// True when larger values are better.
    pub fn maximise(self) -> bool {
        matches!(self, Metric::DecodeTokS)
    }
}

/// A parsed sweep file and where it came from.
#[derive(Debug, Clone)]
pub struct SweepFile {
    pub path: PathBuf,
    pub sweep: Sweep,
}

impl SweepFile {
    pub fn diagnostic(&self, at: impl Into<Place>, message: impl Into<String>) -> Diagnostic {
        let at = at.into();
        Diagnostic { path: self.path.clone(), line: at.line, column: at.column, message: message.into(), hint: None }
    }

    /// The base recipe's path (relative paths resolve against the sweep file's folder).
    pub fn recipe_path(&self) -> PathBuf {
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        dir.join(&self.sweep.recipe.value)
    }
}

pub fn parse_sweep(path: &Path) -> Result<SweepFile, SweepError> {
    let limit = edgeforge_core::read_limit::MAX_DOCUMENT_BYTES;
    let text = edgeforge_core::read_limit::read_text_at_most(path, limit, "sweep").map_err(|source| match source.kind() {
        std::io::ErrorKind::InvalidData => SweepError::Invalid(vec![Diagnostic { path: path.to_path_buf(), line: 1, column: 1, message: source.to_string(), hint: None }]),
        _ => SweepError::Io { path: path.to_path_buf(), source },
    })?;
    let mut options = Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    let sweep: Sweep = serde_saphyr::from_str_with_options(&text, options).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let message = edgeforge_recipe::parse::first_line_without_location(&e.to_string());
        SweepError::Invalid(vec![Diagnostic { path: path.to_path_buf(), line, column, message, hint: None }])
    })?;
    let sf = SweepFile { path: path.to_path_buf(), sweep };
    check(&sf)?;
    Ok(sf)
}

/// What the types cannot say: the version, at least one variant, an objective with exactly one kind.
fn check(sf: &SweepFile) -> Result<(), SweepError> {
    let s = &sf.sweep;
    let mut diags = Vec::new();
    if s.version != 1 {
        diags.push(sf.diagnostic(Place::START, format!("version {} is not supported; this edgeforge reads sweep version 1", s.version)));
    }
    if s.grid.is_empty() && s.points.is_empty() {
        diags.push(sf.diagnostic(Place::START, "no variants: give `grid` (recipe path: [values]) and/or `points` (a list of {recipe path: value})"));
    }
    for p in &s.points {
        if !matches!(p.value, Node::Map(ref m) if !m.is_empty()) {
            diags.push(sf.diagnostic(p.referenced, "each point is a map of recipe path to value, e.g. { passes[0].bits: 4 }"));
        }
    }
    for (key, values) in &s.grid {
        if values.value.is_empty() {
            diags.push(sf.diagnostic(values.referenced, format!("grid axis `{key}` has no values; list at least one")));
        }
    }
    let o = &s.objective;
    match (&o.value.best, &o.value.pareto) {
        (Some(_), Some(_)) | (None, None) => diags.push(sf.diagnostic(
            o.referenced,
            "objective: give exactly one of `best: METRIC` or `pareto: [METRIC, ...]` (metrics: perplexity, kld, size_bytes, decode_tok_s)",
        )),
        (None, Some(p)) if p.len() < 2 => diags.push(sf.diagnostic(o.referenced, "objective.pareto needs at least two metrics")),
        _ => {}
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(SweepError::Invalid(diags))
    }
}

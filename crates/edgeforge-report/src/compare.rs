//! Two reports side by side, and the gates CI checks: the result of `new` against the result of `base`
//! (or, for `baseline: input`, a report's result against its own input model).

use serde::{Deserialize, Serialize};

use crate::schema::{Metrics, Report};

/// Thresholds (the recipe's `gates` and `compare`'s flags share these names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GateSpec {
    pub max_ppl_increase_pct: Option<f64>,
    pub min_decode_speedup: Option<f64>,
    pub max_size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateCheck {
    pub gate: String,
    pub limit: f64,
    pub measured: Option<f64>,
    pub passed: bool,
    pub detail: String,
}

/// One side of a comparison: what a model measured and how big it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Side {
    pub label: String,
    pub perplexity: Option<f64>,
    pub ppl_stderr: Option<f64>,
    pub decode_tok_s: Option<f64>,
    pub prefill_tok_s: Option<f64>,
    pub size_bytes: u64,
    pub bits_per_weight: f64,
    /// (dataset sha256, ctx, chunks) of the perplexity, which must agree for the figures to be comparable.
    pub ppl_settings: Option<(String, usize, usize)>,
    /// The files the run wrote (what a user ships): the size gate checks each of them.
    #[serde(default)]
    pub artifacts: Vec<ShippedFile>,
}

/// One artifact of a report, as the size gate sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShippedFile {
    pub path: String,
    /// The recipe's spelling of the target format (`gguf`, `onnx`, `c-bundle`, ...).
    pub format: String,
    pub bytes: u64,
}

/// Two perplexities measured on different text or settings cannot be compared.
#[derive(Debug, thiserror::Error)]
#[error("the reports measured perplexity differently ({base} vs {new}); rerun one with the other's eval settings")]
pub struct NotComparable {
    pub base: String,
    pub new: String,
}

impl Side {
    pub fn of(label: &str, metrics: &Metrics, size_bytes: u64, bits_per_weight: f64) -> Side {
        Side {
            label: label.to_owned(),
            perplexity: metrics.perplexity.as_ref().map(|p| p.perplexity),
            ppl_stderr: metrics.perplexity.as_ref().map(|p| p.ppl_stderr),
            decode_tok_s: metrics.latency.as_ref().and_then(|l| l.decode_tok_s),
            prefill_tok_s: metrics.latency.as_ref().map(|l| l.prefill_tok_s),
            size_bytes,
            bits_per_weight,
            ppl_settings: metrics.perplexity.as_ref().map(|p| (p.dataset_sha256.clone(), p.ctx, p.chunks)),
            artifacts: Vec::new(),
        }
    }

    /// The result model of a report, with the artifacts it wrote.
    pub fn result(label: &str, r: &Report) -> Side {
        let mut side = Side::of(label, &r.metrics_after, r.model_after.bytes, r.model_after.bits_per_weight);
        side.artifacts = r.artifacts.iter().map(|a| ShippedFile { path: a.path.clone(), format: a.format.clone(), bytes: a.bytes }).collect();
        side
    }

    /// The input model of a report.
    pub fn input(label: &str, r: &Report) -> Side {
        Side::of(label, &r.metrics_before, r.model_before.bytes, r.model_before.bits_per_weight)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub base: Side,
    pub new: Side,
    pub ppl_increase_pct: Option<f64>,
    pub decode_speedup: Option<f64>,
    pub size_ratio: f64,
    pub checks: Vec<GateCheck>,
    pub passed: bool,
}

pub fn compare(base: Side, new: Side, gates: &GateSpec) -> Result<Comparison, NotComparable> {
    if let (Some(b), Some(n)) = (&base.ppl_settings, &new.ppl_settings) {
        if b != n {
            let show = |s: &(String, usize, usize)| format!("text {}…, ctx {}, {}", &s.0[..s.0.len().min(8)], s.1, edgeforge_core::summary::count(s.2 as u64, "chunk"));
            return Err(NotComparable { base: show(b), new: show(n) });
        }
    }
    let ppl_increase_pct = match (base.perplexity, new.perplexity) {
        (Some(b), Some(n)) if b > 0.0 => Some(100.0 * (n - b) / b),
        _ => None,
    };
    let decode_speedup = match (base.decode_tok_s, new.decode_tok_s) {
        (Some(b), Some(n)) if b > 0.0 => Some(n / b),
        _ => None,
    };
    let mut checks = Vec::new();
    if let Some(limit) = gates.max_ppl_increase_pct {
        let passed = ppl_increase_pct.is_some_and(|v| v <= limit);
        let detail = match ppl_increase_pct {
            Some(v) if passed => format!("perplexity {v:+.2}% <= +{limit}%"),
            Some(v) => format!("perplexity rose {v:.2}%, {:.2} points over the +{limit}% limit", v - limit),
            None => "perplexity was not measured on both sides".to_owned(),
        };
        checks.push(GateCheck { gate: "max_ppl_increase_pct".into(), limit, measured: ppl_increase_pct, passed, detail });
    }
    if let Some(limit) = gates.min_decode_speedup {
        let passed = decode_speedup.is_some_and(|v| v >= limit);
        let detail = match decode_speedup {
            Some(v) if passed => format!("decode {v:.2}x >= {limit}x"),
            Some(v) => format!("decode speedup {v:.2}x is {:.2}x short of {limit}x", limit - v),
            None => "decode speed was not measured on both sides".to_owned(),
        };
        checks.push(GateCheck { gate: "min_decode_speedup".into(), limit, measured: decode_speedup, passed, detail });
    }
    if let Some(limit) = gates.max_size_bytes {
        checks.extend(size_checks(&new, limit));
    }
    let passed = checks.iter().all(|c| c.passed);
    let size_ratio = if base.size_bytes == 0 { 0.0 } else { new.size_bytes as f64 / base.size_bytes as f64 };
    Ok(Comparison { base, new, ppl_increase_pct, decode_speedup, size_ratio, checks, passed })
}

/// The size gate: every artifact `new` wrote (the files a user ships, by format) must be at most `limit`
/// bytes; a report without artifacts is checked on its in-memory model bytes, and the detail says so.
fn size_checks(new: &Side, limit: u64) -> Vec<GateCheck> {
    let check = |what: String, bytes: u64| {
        let passed = bytes <= limit;
        let detail = if passed { format!("{what}: {bytes} bytes <= {limit}") } else { format!("{what}: {bytes} bytes is {} over the {limit}-byte limit", bytes - limit) };
        GateCheck { gate: "max_size_bytes".into(), limit: limit as f64, measured: Some(bytes as f64), passed, detail }
    };
    if new.artifacts.is_empty() {
        return vec![check("in-memory model (the report has no artifact)".to_owned(), new.size_bytes)];
    }
    new.artifacts.iter().map(|a| check(format!("{} artifact {}", a.format, a.path), a.bytes)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(ppl: f64, decode: f64, size: u64) -> Side {
        Side {
            label: "x".into(),
            perplexity: Some(ppl),
            ppl_stderr: Some(0.1),
            decode_tok_s: Some(decode),
            prefill_tok_s: Some(100.0),
            size_bytes: size,
            bits_per_weight: 4.5,
            ppl_settings: Some(("ab".into(), 512, 3)),
            artifacts: Vec::new(),
        }
    }

    #[test]
    fn gates_pass_and_fail_by_the_right_margin() {
        let gates = GateSpec { max_ppl_increase_pct: Some(5.0), min_decode_speedup: Some(1.5), max_size_bytes: Some(1000) };
        let ok = compare(side(20.0, 10.0, 2000), side(20.8, 16.0, 900), &gates).unwrap();
        assert!(ok.passed, "{:?}", ok.checks);
        assert!((ok.ppl_increase_pct.unwrap() - 4.0).abs() < 1e-9);
        let bad = compare(side(20.0, 10.0, 2000), side(22.0, 12.0, 1200), &gates).unwrap();
        assert!(!bad.passed);
        assert_eq!(bad.checks.iter().filter(|c| !c.passed).count(), 3);
        assert!(bad.checks[0].detail.contains("10.00%"), "{}", bad.checks[0].detail);
        assert!(bad.checks[2].detail.contains("200 over"), "{}", bad.checks[2].detail);
    }

    #[test]
    fn different_eval_settings_are_not_compared() {
        let mut new = side(20.0, 10.0, 10);
        new.ppl_settings = Some(("ab".into(), 512, 25));
        assert!(compare(side(20.0, 10.0, 10), new, &GateSpec::default()).is_err());
    }

    #[test]
    fn a_gate_without_its_measurement_fails() {
        let mut new = side(20.0, 10.0, 10);
        new.perplexity = None;
        let c = compare(side(20.0, 10.0, 10), new, &GateSpec { max_ppl_increase_pct: Some(1.0), ..GateSpec::default() }).unwrap();
        assert!(!c.passed);
    }

    #[test]
    fn the_size_gate_checks_every_artifact_not_the_in_memory_model() {
        // The model's tensors take 86,623,488 bytes in memory; the GGUF it became is 91,726,144 bytes.
        let mut new = side(20.0, 10.0, 86_623_488);
        new.artifacts = vec![
            ShippedFile { path: "q.gguf".into(), format: "gguf".into(), bytes: 91_726_144 },
            ShippedFile { path: "q.onnx".into(), format: "onnx".into(), bytes: 80_000_000 },
        ];
        let gates = GateSpec { max_size_bytes: Some(90_000_000), ..GateSpec::default() };
        let c = compare(side(20.0, 10.0, 10), new.clone(), &gates).unwrap();
        assert!(!c.passed, "{:?}", c.checks);
        assert_eq!(c.checks.len(), 2);
        assert!(!c.checks[0].passed && c.checks[0].detail.contains("gguf artifact q.gguf"), "{:?}", c.checks[0]);
        assert!(c.checks[1].passed, "{:?}", c.checks[1]);
        // Without artifacts the in-memory bytes are checked, and the detail says so.
        new.artifacts.clear();
        let c = compare(side(20.0, 10.0, 10), new, &gates).unwrap();
        assert!(c.passed && c.checks[0].detail.contains("no artifact"), "{:?}", c.checks);
    }
}

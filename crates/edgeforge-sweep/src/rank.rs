//! Ranking the variants by the sweep's objective, and the summary table (Markdown and JSON).

use serde::Serialize;

use edgeforge_report::schema::Report;

use crate::spec::{Metric, Objective};

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran, wrote its report, every gate held (or none was set).
    Ok,
    /// Ran and wrote its report, but one of the recipe's gates failed: listed, never chosen.
    GateFailed,
    /// Did not produce a report.
    Failed { why: String, log_tail: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub variant: String,
    pub settings: Vec<(String, String)>,
    pub status: Status,
    pub perplexity: Option<f64>,
    pub kld: Option<f64>,
    pub size_bytes: Option<u64>,
    pub decode_tok_s: Option<f64>,
    /// Within the objective's limits (and not failed).
    pub eligible: bool,
    pub pareto: bool,
    pub chosen: bool,
}

impl Row {
    pub fn from_report(variant: String, settings: Vec<(String, String)>, report: &Report) -> Row {
        let m = &report.metrics_after;
        let passed = report.gates.as_ref().is_none_or(|g| g.passed);
        Row {
            variant,
            settings,
            status: if passed { Status::Ok } else { Status::GateFailed },
            perplexity: m.perplexity.as_ref().map(|p| p.perplexity),
            kld: m.kld.as_ref().map(|k| k.mean_kld),
            size_bytes: Some(report.artifacts.first().map_or(report.model_after.bytes, |a| a.bytes)),
            decode_tok_s: m.latency.as_ref().and_then(|l| l.decode_tok_s),
            eligible: false,
            pareto: false,
            chosen: false,
        }
    }

    pub fn failed(variant: String, settings: Vec<(String, String)>, why: String, log_tail: String) -> Row {
        Row { variant, settings, status: Status::Failed { why, log_tail }, perplexity: None, kld: None, size_bytes: None, decode_tok_s: None, eligible: false, pareto: false, chosen: false }
    }

    /// The metric as a cost (lower is better), if measured.
    fn cost(&self, m: Metric) -> Option<f64> {
        let v = match m {
            Metric::Perplexity => self.perplexity,
            Metric::Kld => self.kld,
            Metric::SizeBytes => self.size_bytes.map(|b| b as f64),
            Metric::DecodeTokS => self.decode_tok_s,
        }?;
        Some(if m.maximise() { -v } else { v })
    }
}

/// Marks eligible rows, the Pareto front of the objective's metrics (or of the one metric), and the chosen
/// row: the best by `best`, or for a Pareto objective the front member with the lowest first metric. Ties
/// go to the earlier variant. Returns the chosen index.
pub fn rank(rows: &mut [Row], o: &Objective) -> Option<usize> {
    for r in rows.iter_mut() {
        let in_size = o.max_size_bytes.is_none_or(|max| r.size_bytes.is_some_and(|s| s <= max));
        let in_ppl = o.max_perplexity.is_none_or(|max| r.perplexity.is_some_and(|p| p <= max));
        r.eligible = r.status == Status::Ok && in_size && in_ppl;
        (r.pareto, r.chosen) = (false, false);
    }
    let metrics: Vec<Metric> = match (&o.best, &o.pareto) {
        (Some(m), _) => vec![*m],
        (None, Some(p)) => p.clone(),
        (None, None) => Vec::new(),
    };
    let costs: Vec<Option<Vec<f64>>> = rows.iter().map(|r| if r.eligible { metrics.iter().map(|&m| r.cost(m)).collect() } else { None }).collect();
    for i in 0..rows.len() {
        let Some(ci) = &costs[i] else { continue };
        let dominated = costs.iter().flatten().any(|cj| cj.iter().zip(ci).all(|(a, b)| a <= b) && cj.iter().zip(ci).any(|(a, b)| a < b));
        rows[i].pareto = !dominated;
    }
    let mut chosen: Option<(usize, f64)> = None;
    for (i, c) in costs.iter().enumerate() {
        if let (Some(c), true) = (c, rows[i].pareto) {
            if chosen.is_none_or(|(_, best)| c[0] < best) {
                chosen = Some((i, c[0]));
            }
        }
    }
    let idx = chosen.map(|(i, _)| i);
    if let Some(i) = idx {
        rows[i].chosen = true;
    }
    idx
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".to_owned(), |x| x.to_string())
}

/// The sweep's table: one line per variant, its settings, metrics, status and rank marks.
pub fn markdown(rows: &[Row], objective: &str) -> String {
    let mut o = format!("Objective: {objective}\n\n| variant | settings | perplexity | KLD | size (bytes) | decode tok/s | status | Pareto | chosen |\n|---|---|---:|---:|---:|---:|---|---|---|\n");
    for r in rows {
        let settings = r.settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
        let status = match &r.status {
            Status::Ok if r.eligible => "ok".to_owned(),
            Status::Ok => "ok (outside the objective's limits)".to_owned(),
            Status::GateFailed => "a recipe gate failed".to_owned(),
            Status::Failed { why, .. } => format!("FAILED: {why}"),
        };
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.variant,
            settings,
            opt(r.perplexity.map(|p| format!("{p:.4}"))),
            opt(r.kld.map(|k| format!("{k:.5}"))),
            opt(r.size_bytes),
            opt(r.decode_tok_s.map(|d| format!("{d:.1}"))),
            status.replace('|', "/"),
            if r.pareto { "yes" } else { "" },
            if r.chosen { "**chosen**" } else { "" },
        ));
    }
    for r in rows {
        if let Status::Failed { why, log_tail } = &r.status {
            o.push_str(&format!("\n{} failed: {why}\n```\n{log_tail}\n```\n", r.variant));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, ppl: f64, size: u64, decode: f64) -> Row {
        Row {
            variant: name.into(),
            settings: vec![],
            status: Status::Ok,
            perplexity: Some(ppl),
            kld: None,
            size_bytes: Some(size),
            decode_tok_s: Some(decode),
            eligible: false,
            pareto: false,
            chosen: false,
        }
    }

    #[test]
    fn best_under_a_budget_and_pareto_front() {
        let mut rows = vec![row("a", 10.0, 100, 5.0), row("b", 9.0, 200, 4.0), row("c", 11.0, 150, 6.0), row("d", 8.0, 300, 3.0)];
        rows.push(Row::failed("e".into(), vec![], "boom".into(), "tail".into()));
        let best = Objective { best: Some(Metric::Perplexity), pareto: None, max_size_bytes: Some(250), max_perplexity: None };
        assert_eq!(rank(&mut rows, &best), Some(1)); // d is better but over the budget
        assert!(!rows[3].eligible && !rows[4].eligible);
        let pareto = Objective { best: None, pareto: Some(vec![Metric::SizeBytes, Metric::Perplexity]), max_size_bytes: None, max_perplexity: None };
        let chosen = rank(&mut rows, &pareto);
        let front: Vec<&str> = rows.iter().filter(|r| r.pareto).map(|r| r.variant.as_str()).collect();
        assert_eq!(front, ["a", "b", "d"]); // c is larger and worse than a
        assert_eq!(chosen, Some(0)); // the smallest on the front
        let fast = Objective { best: Some(Metric::DecodeTokS), pareto: None, max_size_bytes: None, max_perplexity: None };
        assert_eq!(rank(&mut rows, &fast), Some(2));
        let md = markdown(&rows, "x");
        assert!(md.contains("FAILED: boom") && md.contains("```\ntail\n```"), "{md}");
    }
}

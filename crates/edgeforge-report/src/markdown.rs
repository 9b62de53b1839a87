//! Markdown for people: the run report and the comparison table for pull-request comments.

use std::fmt::Write;

use edgeforge_core::summary::count;

use crate::compare::Comparison;
use crate::schema::{Metrics, PerplexityMetric, Report};

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |x| format!("{x:.digits$}"))
}

fn peak_scope(s: edgeforge_eval::PeakRssScope) -> &'static str {
    match s {
        edgeforge_eval::PeakRssScope::Measurement => "of the measurement",
        edgeforge_eval::PeakRssScope::Process => "process lifetime",
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn comparison_table(c: &Comparison) -> String {
    let mut o = String::new();
    let verdict = match (c.checks.is_empty(), c.passed) {
        (true, _) => "no gates checked",
        (false, true) => "✅ all gates hold",
        (false, false) => "❌ a gate failed",
    };
    let _ = writeln!(o, "### edgeforge compare: {verdict}\n");
    let _ = writeln!(o, "| metric | {} | {} | change |", c.base.label, c.new.label);
    let _ = writeln!(o, "|---|---|---|---|");
    let ppl = |s: &crate::compare::Side| match (s.perplexity, s.ppl_stderr) {
        (Some(p), Some(e)) => format!("{p:.4} ± {e:.4}"),
        (Some(p), None) => format!("{p:.4}"),
        _ => "–".into(),
    };
    let _ = writeln!(o, "| perplexity | {} | {} | {} |", ppl(&c.base), ppl(&c.new), c.ppl_increase_pct.map_or("–".into(), |v| format!("{v:+.2}%")));
    let _ = writeln!(
        o,
        "| decode tok/s | {} | {} | {} |",
        opt(c.base.decode_tok_s, 1),
        opt(c.new.decode_tok_s, 1),
        c.decode_speedup.map_or("–".into(), |v| format!("{v:.2}x"))
    );
    let _ = writeln!(o, "| prefill tok/s | {} | {} | |", opt(c.base.prefill_tok_s, 1), opt(c.new.prefill_tok_s, 1));
    let _ = writeln!(o, "| size | {} | {} | {:.2}x |", mib(c.base.size_bytes), mib(c.new.size_bytes), c.size_ratio);
    let _ = writeln!(o, "| bits/weight | {:.3} | {:.3} | |", c.base.bits_per_weight, c.new.bits_per_weight);
    if !c.checks.is_empty() {
        let _ = writeln!(o, "\n| gate | limit | measured | result |\n|---|---|---|---|");
        for g in &c.checks {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} {} |",
                g.gate,
                g.limit,
                opt(g.measured, 3),
                if g.passed { "pass:" } else { "FAIL:" },
                g.detail
            );
        }
    }
    o
}

fn perplexity_row(o: &mut String, label: &str, p: &PerplexityMetric) {
    let _ = writeln!(o, "| {label} | perplexity ({}, ctx {}, {}) | {:.4} ± {:.4} |", p.dataset, p.ctx, count(p.chunks as u64, "chunk"), p.perplexity, p.ppl_stderr);
}

fn metrics_rows(o: &mut String, label: &str, m: &Metrics) {
    if let Some(p) = &m.perplexity {
        perplexity_row(o, label, p);
    }
    if let Some(k) = &m.kld {
        let _ = writeln!(
            o,
            "| {label} | KL divergence from the input ({}, ctx {}, {}) | {:.4} ± {:.4}, top-1 agreement {:.2}% |",
            k.dataset, k.ctx, count(k.chunks as u64, "chunk"), k.mean_kld, k.kld_stderr, 100.0 * k.top1_agreement_frac
        );
    }
    if let Some(l) = &m.latency {
        let _ = writeln!(
            o,
            "| {label} | latency ({} prompt + {} generated, {}, {}) | prefill {:.1} tok/s, decode {} tok/s, TTFT {:.1} ms, per token p50 {} ms / p95 {} ms, peak RSS {} ({}){} |",
            l.prompt_tokens,
            l.gen_tokens,
            count(l.threads as u64, "thread"),
            count(l.repeats as u64, "repeat"),
            l.prefill_tok_s,
            opt(l.decode_tok_s, 1),
            l.ttft_ms,
            opt(l.decode_p50_ms, 2),
            opt(l.decode_p95_ms, 2),
            mib(l.peak_rss_bytes),
            peak_scope(l.peak_rss_scope),
            l.notes.iter().map(|n| format!("; {n}")).collect::<String>()
        );
    }
}

pub fn report(r: &Report) -> String {
    let mut o = String::new();
    let title = r.recipe.as_ref().map_or("edgeforge run".to_owned(), |x| format!("edgeforge run: {}", x.path));
    let _ = writeln!(o, "# {title}\n");
    let e = &r.environment;
    let _ = writeln!(
        o,
        "edgeforge {} ({}), {}, seed {}, {} on {}; total {:.1} s.\n",
        r.edgeforge_version,
        e.git_describe.as_deref().unwrap_or("no git"),
        count(e.threads as u64, "thread"),
        e.seed,
        e.cpu_model,
        e.os,
        r.seconds_total
    );
    let _ = writeln!(o, "## Model\n\n| | params | size | bits/weight | sha256 |\n|---|---|---|---|---|");
    for (label, m) in [("before", &r.model_before), ("after", &r.model_after)] {
        let _ = writeln!(o, "| {label} | {} | {} | {:.3} | {}… |", m.params, mib(m.bytes), m.bits_per_weight, &m.sha256[..m.sha256.len().min(12)]);
    }
    let _ = writeln!(o, "\n| format (after) | params | size | bits/weight |\n|---|---|---|---|");
    for (f, fp) in &r.model_after.by_format {
        let _ = writeln!(o, "| {f} | {} | {} | {:.3} |", fp.params, mib(fp.bytes), fp.bits_per_weight);
    }
    let _ = writeln!(o, "\n## Passes\n\n| pass | seconds | peak RSS | size before → after | tensors changed | mean rel. error |\n|---|---|---|---|---|---|");
    for p in &r.passes {
        let mean_err = if p.changed.is_empty() { 0.0 } else { p.changed.iter().map(|c| c.rel_error).sum::<f64>() / p.changed.len() as f64 };
        let _ = writeln!(
            o,
            "| {} | {:.1} | {} | {} → {} | {} | {:.4} |",
            p.name, p.seconds, mib(p.peak_rss_bytes), mib(p.bytes_before), mib(p.bytes_after), p.changed.len(), mean_err
        );
        for n in &p.notes {
            let _ = writeln!(o, "|  | note: {n} | | | | |");
        }
    }
    let _ = writeln!(o, "\n## Metrics\n\n| model | measurement | value |\n|---|---|---|");
    metrics_rows(&mut o, "before", &r.metrics_before);
    for (i, p) in r.passes.iter().enumerate() {
        if let Some(ppl) = &p.perplexity_after {
            perplexity_row(&mut o, &format!("after pass {}: {}", i + 1, p.name), ppl);
        }
    }
    metrics_rows(&mut o, "after", &r.metrics_after);
    if !r.artifacts.is_empty() {
        let _ = writeln!(o, "\n## Artifacts\n\n| file | format | profile | size | sha256 |\n|---|---|---|---|---|");
        for a in &r.artifacts {
            let _ = writeln!(o, "| {} | {} | {} | {} | {}… |", a.path, a.format, a.profile.as_deref().unwrap_or("–"), mib(a.bytes), &a.sha256[..a.sha256.len().min(12)]);
        }
    }
    if !r.targets.is_empty() {
        let _ = writeln!(o, "\n## Targets\n\n| format | profile | fits | artifact | peak memory (estimate) | decode tok/s (roofline estimate) |\n|---|---|---|---|---|---|");
        for t in &r.targets {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} at {} tokens of context | {} |",
                t.format,
                t.profile,
                if t.fits { "yes" } else { "**refused**" },
                t.artifact_bytes.map_or("–".into(), mib),
                mib(t.peak_memory_bytes),
                t.context_tokens,
                t.decode_tok_s_estimate.map_or("–".into(), |v| format!("{v:.1}"))
            );
            for s in &t.shortfalls {
                let _ = writeln!(o, "|  | shortfall: {s} | | | | |");
            }
            for s in &t.suggestions {
                let _ = writeln!(o, "|  | to fit: {s} | | | | |");
            }
            for n in &t.notes {
                let _ = writeln!(o, "|  | note: {n} | | | | |");
            }
        }
    }
    if let Some(g) = &r.gates {
        let _ = writeln!(o, "\n## Gates (baseline: {}): {}\n", g.baseline, if g.passed { "all hold" } else { "FAILED" });
        for c in &g.checks {
            let _ = writeln!(o, "- {} {}: {}", if c.passed { "pass" } else { "FAIL" }, c.gate, c.detail);
        }
    }
    o
}

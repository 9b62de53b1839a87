//! Many reports → one table (Markdown and CSV, through a polars DataFrame) and an SVG plot of size against
//! perplexity with the Pareto front marked (no other run is both smaller and better).

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::schema::{Report, ReportError};

pub struct Summary {
    pub frame: DataFrame,
    pub markdown: String,
    pub csv: String,
    pub svg: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("{0}")]
    Report(#[from] ReportError),
    #[error("{}: no report.json files found under this folder", .0.display())]
    Empty(PathBuf),
    #[error("table: {0}")]
    Table(#[from] PolarsError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every `report.json` below `dir`, in path order.
pub fn find_reports(dir: &Path) -> Result<Vec<(PathBuf, Report)>, SummaryError> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| SummaryError::Io { path: d.clone(), source })?;
        for e in entries {
            let p = e.map_err(|source| SummaryError::Io { path: d.clone(), source })?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "report.json") {
                found.push(p);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(SummaryError::Empty(dir.to_path_buf()));
    }
    found.into_iter().map(|p| Report::read(&p).map(|r| (p, r)).map_err(SummaryError::from)).collect()
}

/// Indices on the Pareto front of (size, perplexity), both lower-is-better.
fn pareto(points: &[(f64, f64)]) -> Vec<bool> {
    points
        .iter()
        .map(|&(s, p)| !points.iter().any(|&(s2, p2)| (s2 <= s && p2 < p) || (s2 < s && p2 <= p)))
        .collect()
}

pub fn summarize(dir: &Path) -> Result<Summary, SummaryError> {
    let reports = find_reports(dir)?;
    let run: Vec<String> = reports
        .iter()
        .map(|(p, _)| p.parent().and_then(|d| d.strip_prefix(dir).ok()).map_or_else(|| p.display().to_string(), |d| d.display().to_string()))
        .map(|s| if s.is_empty() { ".".to_owned() } else { s })
        .collect();
    let recipe: Vec<String> = reports.iter().map(|(_, r)| r.recipe.as_ref().map_or("–".to_owned(), |x| x.path.clone())).collect();
    let ppl: Vec<Option<f64>> = reports.iter().map(|(_, r)| r.metrics_after.perplexity.as_ref().map(|p| p.perplexity)).collect();
    let stderr: Vec<Option<f64>> = reports.iter().map(|(_, r)| r.metrics_after.perplexity.as_ref().map(|p| p.ppl_stderr)).collect();
    let size: Vec<u64> = reports.iter().map(|(_, r)| r.model_after.bytes).collect();
    let bpw: Vec<f64> = reports.iter().map(|(_, r)| r.model_after.bits_per_weight).collect();
    let decode: Vec<Option<f64>> = reports.iter().map(|(_, r)| r.metrics_after.latency.as_ref().and_then(|l| l.decode_tok_s)).collect();
    let points: Vec<(f64, f64)> = size.iter().zip(&ppl).map(|(&s, p)| (s as f64, p.unwrap_or(f64::INFINITY))).collect();
    let front = pareto(&points);

    let frame = DataFrame::new_infer_height(vec![
        Column::new("run".into(), run),
        Column::new("recipe".into(), recipe),
        Column::new("perplexity".into(), ppl),
        Column::new("ppl_stderr".into(), stderr),
        Column::new("size_bytes".into(), size),
        Column::new("bits_per_weight".into(), bpw),
        Column::new("decode_tok_s".into(), decode),
        Column::new("pareto".into(), front),
    ])?
    .sort(["size_bytes"], SortMultipleOptions::default())?;

    let mut csv_bytes = Vec::new();
    let mut to_write = frame.clone();
    CsvWriter::new(&mut csv_bytes).finish(&mut to_write)?;
    let csv = String::from_utf8_lossy(&csv_bytes).into_owned();
    let markdown = markdown(&frame)?;
    let svg = svg(&frame)?;
    Ok(Summary { frame, markdown, csv, svg })
}

fn markdown(df: &DataFrame) -> Result<String, PolarsError> {
    let run = df.column("run")?.str()?;
    let recipe = df.column("recipe")?.str()?;
    let ppl = df.column("perplexity")?.f64()?;
    let se = df.column("ppl_stderr")?.f64()?;
    let size = df.column("size_bytes")?.u64()?;
    let bpw = df.column("bits_per_weight")?.f64()?;
    let decode = df.column("decode_tok_s")?.f64()?;
    let front = df.column("pareto")?.bool()?;
    let mut o = String::from("| run | recipe | perplexity | size (MiB) | bits/weight | decode tok/s | Pareto |\n|---|---|---|---|---|---|---|\n");
    for i in 0..df.height() {
        let p = match (ppl.get(i), se.get(i)) {
            (Some(p), Some(e)) => format!("{p:.4} ± {e:.4}"),
            _ => "–".into(),
        };
        o.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.3} | {} | {} |\n",
            run.get(i).unwrap_or("–"),
            recipe.get(i).unwrap_or("–"),
            p,
            size.get(i).unwrap_or(0) as f64 / 1048576.0,
            bpw.get(i).unwrap_or(0.0),
            decode.get(i).map_or("–".into(), |d| format!("{d:.1}")),
            if front.get(i) == Some(true) { "★" } else { "" }
        ));
    }
    Ok(o)
}

/// A small scatter plot written directly as SVG: a handful of points and lines, so a plotting crate (and its
/// font and raster dependencies) would cost more build time than it saves.
fn svg(df: &DataFrame) -> Result<String, PolarsError> {
    let size = df.column("size_bytes")?.u64()?;
    let ppl = df.column("perplexity")?.f64()?;
    let front = df.column("pareto")?.bool()?;
    let run = df.column("run")?.str()?;
    let pts: Vec<(f64, f64, bool, String)> = (0..df.height())
        .filter_map(|i| Some((size.get(i)? as f64 / 1048576.0, ppl.get(i)?, front.get(i) == Some(true), run.get(i).unwrap_or("").to_owned())))
        .collect();
    let (w, h, m) = (640.0, 420.0, 60.0);
    let (xmin, xmax) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (ymin, ymax) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = |lo: f64, hi: f64| if (hi - lo).abs() < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)) };
    let ((xmin, xmax), (ymin, ymax)) = (pad(xmin, xmax), pad(ymin, ymax));
    let x = |v: f64| m + (v - xmin) / (xmax - xmin) * (w - 2.0 * m);
    let y = |v: f64| h - m - (v - ymin) / (ymax - ymin) * (h - 2.0 * m);
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    o.push_str(&format!("<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", h - m, w - m, h - m));
    o.push_str(&format!("<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n", h - m));
    o.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">model size (MiB)</text>\n", w / 2.0, h - 20.0));
    o.push_str(&format!("<text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">perplexity</text>\n", h / 2.0, h / 2.0));
    for (v, anchor) in [(xmin, "start"), (xmax, "end")] {
        o.push_str(&format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{v:.1}</text>\n", x(v), h - m + 16.0));
    }
    for v in [ymin, ymax] {
        o.push_str(&format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n", m - 6.0, y(v) + 4.0));
    }
    let mut frontier: Vec<&(f64, f64, bool, String)> = pts.iter().filter(|p| p.2).collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    if frontier.len() > 1 {
        let path: Vec<String> = frontier.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
        o.push_str(&format!("<polyline points=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>\n", path.join(" ")));
    }
    for (sx, py, on_front, label) in &pts {
        let color = if *on_front { "#d62728" } else { "#1f77b4" };
        o.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{color}\"><title>{label}</title></circle>\n", x(*sx), y(*py)));
        o.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n", x(*sx) + 7.0, y(*py) - 7.0, xml_escape(label)));
    }
    o.push_str("<text x=\"{}\" y=\"30\">Pareto front (red): no other run is both smaller and lower in perplexity</text>\n".replace("{}", &format!("{m}")).as_str());
    o.push_str("</svg>\n");
    Ok(o)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let pts = [(10.0, 20.0), (5.0, 30.0), (8.0, 19.0), (12.0, 25.0), (5.0, 31.0)];
        assert_eq!(pareto(&pts), vec![false, true, true, false, false]);
    }
}

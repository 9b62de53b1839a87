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
    /// The distinct evaluation settings of the reports (more than one: perplexities compare only within one).
    pub settings: Vec<String>,
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

/// Whether a JSON file is an edgeforge report (a run's `report.json`, or one saved under another name such as
/// `reports/baseline-smollm2-int4-rtn.json`), judged by the keys only a report has at its top level; other
/// JSON files (manifest.json, which shares the version keys, summaries, distillation logs) are not. Files over
/// `MAX_REPORT_BYTES` are not read. A damaged `report.json` is still returned, so reading it fails with the
/// reason.
fn looks_like_report(p: &Path) -> bool {
    const MAX_REPORT_BYTES: u64 = 64 << 20;
    if p.file_name().is_some_and(|n| n == "report.json") {
        return true;
    }
    if p.extension().is_none_or(|e| e != "json") || std::fs::metadata(p).map_or(true, |m| m.len() > MAX_REPORT_BYTES) {
        return false;
    }
    let Ok(text) = std::fs::read(p) else { return false };
    let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(&text) else { return false };
    ["schema_version", "edgeforge_version", "model_after", "metrics_after"].iter().all(|k| top.contains_key(*k))
}

/// Every report below `dir` (see `looks_like_report`), in path order.
pub fn find_reports(dir: &Path) -> Result<Vec<(PathBuf, Report)>, SummaryError> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| SummaryError::Io { path: d.clone(), source })?;
        for e in entries {
            let p = e.map_err(|source| SummaryError::Io { path: d.clone(), source })?.path();
            if p.is_dir() {
                stack.push(p);
            } else if looks_like_report(&p) {
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

/// A run's name in the table: its folder for `report.json`, else the file's path without `.json`.
fn run_label(dir: &Path, p: &Path) -> String {
    let named = if p.file_name().is_some_and(|n| n == "report.json") { p.parent().map(Path::to_path_buf) } else { Some(p.with_extension("")) };
    let s = named.as_deref().and_then(|d| d.strip_prefix(dir).ok()).map_or_else(|| p.display().to_string(), |d| d.display().to_string());
    if s.is_empty() {
        ".".to_owned()
    } else {
        s
    }
}

/// The evaluation a perplexity was measured with; figures compare only within one setting.
fn eval_setting(r: &Report) -> String {
    r.metrics_after.perplexity.as_ref().map_or_else(|| "no perplexity".to_owned(), |p| {
        format!("{} (sha256 {}…), ctx {}, {} chunk{}", p.dataset, &p.dataset_sha256[..p.dataset_sha256.len().min(8)], p.ctx, p.chunks, if p.chunks == 1 { "" } else { "s" })
    })
}

/// Indices on the Pareto front of (size, perplexity), both lower-is-better, among the points of the same
/// evaluation setting (`group`): perplexities measured on different text or settings are not compared.
fn pareto(points: &[(f64, f64)], group: &[String]) -> Vec<bool> {
    points
        .iter()
        .zip(group)
        .map(|(&(s, p), g)| !points.iter().zip(group).any(|(&(s2, p2), g2)| g2 == g && ((s2 <= s && p2 < p) || (s2 < s && p2 <= p))))
        .collect()
}

pub fn summarize(dir: &Path) -> Result<Summary, SummaryError> {
    let reports = find_reports(dir)?;
    let run: Vec<String> = reports.iter().map(|(p, _)| run_label(dir, p)).collect();
    let recipe: Vec<String> = reports.iter().map(|(_, r)| r.recipe.as_ref().map_or("–".to_owned(), |x| x.path.clone())).collect();
    let eval: Vec<String> = reports.iter().map(|(_, r)| eval_setting(r)).collect();
    let ppl: Vec<Option<f64>> = reports.iter().map(|(_, r)| r.metrics_after.perplexity.as_ref().map(|p| p.perplexity)).collect();
    let stderr: Vec<Option<f64>> = reports.iter().map(|(_, r)| r.metrics_after.perplexity.as_ref().map(|p| p.ppl_stderr)).collect();
    let size: Vec<u64> = reports.iter().map(|(_, r)| r.model_after.bytes).collect();
    let bpw: Vec<f64> = reports.iter().map(|(_, r)| r.model_after.bits_per_weight).collect();
    let decode: Vec<Option<f64>> = reports.iter().map(|(_, r)| r.metrics_after.latency.as_ref().and_then(|l| l.decode_tok_s)).collect();
    let points: Vec<(f64, f64)> = size.iter().zip(&ppl).map(|(&s, p)| (s as f64, p.unwrap_or(f64::INFINITY))).collect();
    let front = pareto(&points, &eval);
    let mut settings = eval.clone();
    settings.sort();
    settings.dedup();

    let frame = DataFrame::new_infer_height(vec![
        Column::new("run".into(), run),
        Column::new("recipe".into(), recipe),
        Column::new("eval".into(), eval),
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
    let markdown = markdown(&frame, &settings)?;
    let svg = svg(&frame, &settings)?;
    Ok(Summary { frame, markdown, csv, svg, settings })
}

/// The warning printed above a table that mixes evaluation settings.
fn mixed_settings_note(settings: &[String]) -> Option<String> {
    (settings.len() > 1).then(|| {
        format!(
            "Note: these reports measured perplexity in {} different ways ({}); perplexities compare only within one setting, and the Pareto front is marked per setting.\n\n",
            settings.len(),
            settings.join("; ")
        )
    })
}

fn markdown(df: &DataFrame, settings: &[String]) -> Result<String, PolarsError> {
    let run = df.column("run")?.str()?;
    let recipe = df.column("recipe")?.str()?;
    let eval = df.column("eval")?.str()?;
    let ppl = df.column("perplexity")?.f64()?;
    let se = df.column("ppl_stderr")?.f64()?;
    let size = df.column("size_bytes")?.u64()?;
    let bpw = df.column("bits_per_weight")?.f64()?;
    let decode = df.column("decode_tok_s")?.f64()?;
    let front = df.column("pareto")?.bool()?;
    let mut o = mixed_settings_note(settings).unwrap_or_default();
    if settings.len() == 1 {
        o.push_str(&format!("Perplexity: {}.\n\n", settings[0]));
    }
    o.push_str("| run | recipe | eval | perplexity | size (MiB) | bits/weight | decode tok/s | Pareto |\n|---|---|---|---|---|---|---|---|\n");
    for i in 0..df.height() {
        let p = match (ppl.get(i), se.get(i)) {
            (Some(p), Some(e)) => format!("{p:.4} ± {e:.4}"),
            _ => "–".into(),
        };
        o.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.3} | {} | {} |\n",
            run.get(i).unwrap_or("–"),
            recipe.get(i).unwrap_or("–"),
            eval.get(i).unwrap_or("–"),
            p,
            size.get(i).unwrap_or(0) as f64 / 1048576.0,
            bpw.get(i).unwrap_or(0.0),
            decode.get(i).map_or("–".into(), |d| format!("{d:.1}")),
            if front.get(i) == Some(true) { "★" } else { "" }
        ));
    }
    Ok(o)
}

/// One point of the plot: size (MiB), perplexity, its standard error, on the front, run label, setting.
struct Point {
    size: f64,
    ppl: f64,
    se: f64,
    front: bool,
    label: String,
    setting: String,
}

fn plot_points(df: &DataFrame) -> Result<Vec<Point>, PolarsError> {
    let size = df.column("size_bytes")?.u64()?;
    let ppl = df.column("perplexity")?.f64()?;
    let se = df.column("ppl_stderr")?.f64()?;
    let front = df.column("pareto")?.bool()?;
    let run = df.column("run")?.str()?;
    let eval = df.column("eval")?.str()?;
    Ok((0..df.height())
        .filter_map(|i| {
            Some(Point {
                size: size.get(i)? as f64 / 1048576.0,
                ppl: ppl.get(i)?,
                se: se.get(i).unwrap_or(0.0),
                front: front.get(i) == Some(true),
                label: run.get(i).unwrap_or("").to_owned(),
                setting: eval.get(i).unwrap_or("").to_owned(),
            })
        })
        .collect())
}

/// `s` cut to `max` characters with an ellipsis, so labels stay on the canvas.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// A small scatter plot written directly as SVG: a handful of points and lines, so a plotting crate (and its
/// font and raster dependencies) would cost more build time than it saves. Each point carries its ±1
/// standard-error bar (often larger than the differences between runs); the title names the evaluation
/// setting; a legend explains both colours; labels are shortened to stay on the canvas.
fn svg(df: &DataFrame, settings: &[String]) -> Result<String, PolarsError> {
    let pts = plot_points(df)?;
    let (w, h, m) = (720.0, 460.0, 70.0);
    let (xmin, xmax) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.size), b.max(p.size)));
    let (ymin, ymax) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.ppl - p.se), b.max(p.ppl + p.se)));
    let pad = |lo: f64, hi: f64| if (hi - lo).abs() < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)) };
    let ((xmin, xmax), (ymin, ymax)) = (pad(xmin, xmax), pad(ymin, ymax));
    let x = |v: f64| m + (v - xmin) / (xmax - xmin) * (w - 2.0 * m);
    let y = |v: f64| h - m - (v - ymin) / (ymax - ymin) * (h - 2.0 * m);
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let title = match settings {
        [one] => format!("perplexity on {one}"),
        _ => format!("perplexity measured {} ways (fronts per setting): {}", settings.len(), settings.join("; ")),
    };
    o.push_str(&format!("<text x=\"{m}\" y=\"20\" font-weight=\"bold\">{}</text>\n", xml_escape(&shorten(&title, 100))));
    o.push_str(&format!("<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", h - m, w - m, h - m));
    o.push_str(&format!("<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n", h - m));
    o.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">model size (MiB)</text>\n", w / 2.0, h - 20.0));
    o.push_str(&format!("<text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">perplexity (±1 standard error)</text>\n", h / 2.0, h / 2.0));
    for (v, anchor) in [(xmin, "start"), (xmax, "end")] {
        o.push_str(&format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{v:.1}</text>\n", x(v), h - m + 16.0));
    }
    for v in [ymin, ymax] {
        o.push_str(&format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n", m - 6.0, y(v) + 4.0));
    }
    for setting in settings {
        let mut frontier: Vec<&Point> = pts.iter().filter(|p| p.front && &p.setting == setting).collect();
        frontier.sort_by(|a, b| a.size.total_cmp(&b.size));
        if frontier.len() > 1 {
            let path: Vec<String> = frontier.iter().map(|p| format!("{:.1},{:.1}", x(p.size), y(p.ppl))).collect();
            o.push_str(&format!("<polyline points=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>\n", path.join(" ")));
        }
    }
    for p in &pts {
        let color = if p.front { "#d62728" } else { "#1f77b4" };
        let (cx, cy) = (x(p.size), y(p.ppl));
        o.push_str(&format!("<line class=\"error-bar\" x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"{color}\"/>\n", y(p.ppl + p.se), y(p.ppl - p.se)));
        o.push_str(&format!("<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"{color}\"><title>{}: {:.4} ± {:.4}</title></circle>\n", xml_escape(&p.label), p.ppl, p.se));
        // Labels right of the point, or left of it in the right third so they stay on the canvas.
        let (lx, anchor) = if cx > w * 2.0 / 3.0 { (cx - 7.0, "end") } else { (cx + 7.0, "start") };
        o.push_str(&format!("<text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>\n", cy - 7.0, xml_escape(&shorten(&p.label, 28))));
    }
    let ly = 38.0;
    o.push_str(&format!("<circle cx=\"{}\" cy=\"{}\" r=\"5\" fill=\"#d62728\"/><text x=\"{}\" y=\"{}\">on the Pareto front: no other run is both smaller and lower in perplexity</text>\n", m + 5.0, ly, m + 14.0, ly + 4.0));
    o.push_str(&format!("<circle cx=\"{}\" cy=\"{}\" r=\"5\" fill=\"#1f77b4\"/><text x=\"{}\" y=\"{}\">dominated by another run</text>\n", m + 5.0, ly + 16.0, m + 14.0, ly + 20.0));
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
        let same = vec!["a".to_owned(); 5];
        assert_eq!(pareto(&pts, &same), vec![false, true, true, false, false]);
        // A point measured another way is only compared with its own kind.
        let mixed: Vec<String> = ["a", "a", "a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(pareto(&pts, &mixed), vec![false, true, true, true, false]);
    }
}

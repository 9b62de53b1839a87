//! edgeforge-sweep: run many variants of one recipe (a grid of axes and/or a list of points), locally as
//! child processes or on a Ray cluster, and rank them by an objective.
//!
//! Every variant is validated before any runs; a variant whose report already exists for the same recipe
//! text is skipped (a sweep resumes where it stopped); the input model's baseline metrics are computed
//! once (the first variant runs alone and fills the baseline cache the others read).

// SweepError carries the recipe crate's errors; cold paths only.
#![allow(clippy::result_large_err)]

pub mod executor;
pub mod local;
pub mod node;
pub mod rank;
pub mod ray;
pub mod spec;
pub mod variants;

use std::path::{Path, PathBuf};

use edgeforge_recipe::diagnostic::Diagnostic;
use edgeforge_report::schema::Report;

pub use executor::{ExecutorConfig, EXECUTORS};
pub use spec::{parse_sweep, SweepFile};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Problems in the sweep file or in its variants, each at the sweep file's line and column.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    #[error("unknown executor `{name}`; known: {known}")]
    UnknownExecutor { name: String, known: String },
    #[error("the ray executor needs --ray-address (the head's dashboard, e.g. http://127.0.0.1:8265)")]
    RayAddress,
    #[error("cannot use the Ray cluster at {address}: {why}; start one with `ray start --head` or use --executor local")]
    Ray { address: String, why: String },
    #[error("{0}")]
    Recipe(#[from] edgeforge_recipe::RecipeError),
    #[error("{0}")]
    Summary(#[from] edgeforge_report::summarize::SummaryError),
}

/// How to run a sweep.
pub struct SweepOptions {
    pub out_dir: PathBuf,
    pub executor: String,
    pub config: ExecutorConfig,
    /// Variants running at once.
    pub max_parallel: usize,
    /// Threads each variant's run uses.
    pub threads_per_variant: usize,
    pub seed: Option<u64>,
    /// Called with (variants done, variants to run, the one that just ended and its outcome).
    pub progress: Box<dyn Fn(usize, usize, &str, &executor::JobOutcome) + Sync>,
}

/// What a sweep did.
pub struct SweepOutcome {
    pub rows: Vec<rank::Row>,
    pub chosen: Option<usize>,
    pub skipped: Vec<String>,
    pub markdown: String,
    pub summary_dir: PathBuf,
}

/// Validates every variant, runs those without a report, ranks all of them and writes
/// `OUT/sweep-summary.{md,json}` and the `summarize` files (summary.md/.csv/.svg) of `OUT/variants`.
pub fn run_sweep(sf: &SweepFile, opts: &SweepOptions) -> Result<SweepOutcome, SweepError> {
    let variants = variants::expand(sf, &opts.out_dir)?;
    let exec = executor::executor(&opts.executor, &opts.config)?;
    if let Some(m) = edgeforge_recipe::models::known(&first_model(&variants)) {
        // Fetch a known model once, here, rather than in every variant at the same time.
        edgeforge_recipe::models::fetch(m)?;
    }
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    for v in &variants {
        let dir = opts.out_dir.join("variants").join(&v.name);
        let recipe = dir.join("recipe.yaml");
        if up_to_date(&dir, &v.recipe_text) {
            skipped.push(v.name.clone());
            continue;
        }
        write_atomic(&recipe, v.recipe_text.as_bytes())?;
        jobs.push(executor::Job { name: v.name.clone(), recipe, out: dir, threads: opts.threads_per_variant, seed: opts.seed });
    }
    let total = jobs.len();
    let done_count = std::sync::atomic::AtomicUsize::new(0);
    let done = |i: usize, o: &executor::JobOutcome| {
        let n = done_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        (opts.progress)(n, total, &jobs[i].name, o);
    };
    // The first variant alone: it computes the input model's baseline metrics into the shared cache.
    let (first, rest) = jobs.split_at(jobs.len().min(1));
    let mut outcomes = executor::run_all(exec.as_ref(), first, 1, &done);
    outcomes.extend(executor::run_all(exec.as_ref(), rest, opts.max_parallel, &|i, o| done(i + first.len(), o)));
    let mut rows = Vec::new();
    for v in &variants {
        let settings: Vec<(String, String)> = v.settings.iter().map(|(k, n)| (k.clone(), n.short())).collect();
        let failure = jobs.iter().zip(&outcomes).find(|(j, _)| j.name == v.name).and_then(|(_, o)| match o {
            executor::JobOutcome::Failed { why, log_tail } => Some((why.clone(), log_tail.clone())),
            executor::JobOutcome::Finished => None,
        });
        let report_path = opts.out_dir.join("variants").join(&v.name).join("report.json");
        rows.push(match (failure, Report::read(&report_path)) {
            (None, Ok(r)) => rank::Row::from_report(v.name.clone(), settings, &r),
            (Some((why, tail)), _) => rank::Row::failed(v.name.clone(), settings, why, tail),
            (None, Err(e)) => rank::Row::failed(v.name.clone(), settings, e.to_string(), String::new()),
        });
    }
    let chosen = rank::rank(&mut rows, &sf.sweep.objective.value);
    let markdown = rank::markdown(&rows, &describe(&sf.sweep.objective.value));
    write_atomic(&opts.out_dir.join("sweep-summary.md"), markdown.as_bytes())?;
    let json = serde_json::json!({ "sweep": sf.path.display().to_string(), "executor": exec.name(), "rows": rows, "chosen": chosen.map(|i| rows[i].variant.clone()) });
    write_atomic(&opts.out_dir.join("sweep-summary.json"), serde_json::to_string_pretty(&json).unwrap_or_default().as_bytes())?;
    let summary_dir = opts.out_dir.join("variants");
    if rows.iter().any(|r| !matches!(r.status, rank::Status::Failed { .. })) {
        let s = edgeforge_report::summarize::summarize(&summary_dir)?;
        for (name, body) in [("summary.md", &s.markdown), ("summary.csv", &s.csv), ("summary.svg", &s.svg)] {
            write_atomic(&opts.out_dir.join(name), body.as_bytes())?;
        }
    }
    Ok(SweepOutcome { rows, chosen, skipped, markdown, summary_dir })
}

fn first_model(variants: &[variants::Variant]) -> String {
    variants
        .first()
        .and_then(|v| edgeforge_recipe::parse::parse_recipe_text(Path::new("recipe.yaml"), v.recipe_text.clone()).ok())
        .map(|rf| rf.recipe.model.value)
        .unwrap_or_default()
}

/// A variant is done when its report exists and was made from this exact recipe text.
fn up_to_date(dir: &Path, recipe_text: &str) -> bool {
    let want = edgeforge_core::hash::sha256_hex(&[recipe_text.as_bytes()]);
    Report::read(&dir.join("report.json")).is_ok_and(|r| r.recipe.is_some_and(|x| x.sha256 == want))
}

fn describe(o: &spec::Objective) -> String {
    let mut s = match (&o.best, &o.pareto) {
        (Some(m), _) if m.maximise() => format!("highest {}", m.name()),
        (Some(m), _) => format!("lowest {}", m.name()),
        (None, Some(p)) => format!("Pareto front of {} (chosen: lowest {} on the front)", p.iter().map(|m| m.name()).collect::<Vec<_>>().join(" × "), p.first().map_or("", |m| m.name())),
        (None, None) => String::new(),
    };
    if let Some(b) = o.max_size_bytes {
        s.push_str(&format!(", size ≤ {b} bytes"));
    }
    if let Some(p) = o.max_perplexity {
        s.push_str(&format!(", perplexity ≤ {p}"));
    }
    s
}

/// Through a temporary name and a rename (edgeforge_export::atomic): never a half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    let io = |source| SweepError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    edgeforge_export::atomic::write_file(path, |w| w.write_all(bytes)).map_err(io)
}

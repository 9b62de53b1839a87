//! Where variants run. One trait, one registry: `local` (child processes on this machine) and `ray` (jobs
//! on a Ray cluster through its Jobs REST API). A new executor is one file and one line in `EXECUTORS`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::SweepError;

/// One variant to run: `edgeforge run RECIPE --out OUT --threads THREADS`.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub recipe: PathBuf,
    pub out: PathBuf,
    pub threads: usize,
    pub seed: Option<u64>,
}

impl Job {
    /// The command line, as arguments after the binary.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["run".to_owned(), self.recipe.display().to_string(), "--out".to_owned(), self.out.display().to_string(), "--threads".to_owned(), self.threads.to_string()];
        if let Some(s) = self.seed {
            a.extend(["--seed".to_owned(), s.to_string()]);
        }
        a
    }

    /// A run counts as finished when it wrote its report: exit 0, or exit 1 for a failed gate (the report
    /// records which gate).
    pub fn finished(&self) -> bool {
        self.out.join("report.json").is_file()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Finished,
    /// The run ended without a report: why, and the end of its log.
    Failed { why: String, log_tail: String },
}

/// Runs one variant to its end (blocking). Implementations are called from several threads at once.
pub trait Executor: Send + Sync {
    fn name(&self) -> &'static str;
    fn run_one(&self, job: &Job) -> JobOutcome;
}

/// What an executor needs from the command line.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The edgeforge binary the variants run (every Ray node must be able to execute this path).
    pub binary: PathBuf,
    /// Ray dashboard address (`http://127.0.0.1:8265`).
    pub ray_address: Option<String>,
}

type Make = fn(&ExecutorConfig) -> Result<Box<dyn Executor>, SweepError>;

/// The registry: name and constructor.
pub const EXECUTORS: [(&str, Make); 2] = [("local", crate::local::make), ("ray", crate::ray::make)];

pub fn executor(name: &str, cfg: &ExecutorConfig) -> Result<Box<dyn Executor>, SweepError> {
    match EXECUTORS.iter().find(|(n, _)| *n == name) {
        Some((_, make)) => make(cfg),
        None => Err(SweepError::UnknownExecutor { name: name.to_owned(), known: EXECUTORS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ") }),
    }
}

/// Runs `jobs` with at most `parallel` at once; `done(i, outcome)` is called as job `i` ends.
pub fn run_all(exec: &dyn Executor, jobs: &[Job], parallel: usize, done: &(dyn Fn(usize, &JobOutcome) + Sync)) -> Vec<JobOutcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<JobOutcome>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let outcome = exec.run_one(job);
                done(i, &outcome);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(outcome);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.into_iter().map(|r| r.unwrap_or(JobOutcome::Failed { why: "not run".into(), log_tail: String::new() })).collect()
}

/// The last `n` lines of a log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last lines of a log file (empty if it cannot be read).
pub fn tail_of_file(path: &Path, n: usize) -> String {
    edgeforge_core::read_limit::read_text_at_most(path, edgeforge_core::read_limit::MAX_DOCUMENT_BYTES, "log").map(|t| tail(&t, n)).unwrap_or_default()
}

//! `edgeforge sweep`: validate every variant, run them (locally or on Ray), print the ranked table.

use anyhow::anyhow;
use edgeforge_sweep::executor::JobOutcome;
use edgeforge_sweep::{SweepError, SweepOptions};

use crate::cli::SweepArgs;
use crate::exit::Failure;

impl From<SweepError> for Failure {
    fn from(e: SweepError) -> Self {
        match e {
            // One line per problem, like recipe diagnostics.
            SweepError::Invalid(d) => Failure::BadInput(anyhow!(edgeforge_recipe::RecipeError::Invalid(d))),
            SweepError::Recipe(r) => r.into(),
            e @ (SweepError::UnknownExecutor { .. } | SweepError::RayAddress | SweepError::Ray { .. }) => Failure::BadInput(e.into()),
            e @ (SweepError::Io { .. } | SweepError::Summary(_)) => Failure::Internal(e.into()),
        }
    }
}

pub fn sweep(a: SweepArgs) -> Result<(), Failure> {
    let sf = edgeforge_sweep::parse_sweep(&a.sweep)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_parallel = a.max_parallel.unwrap_or(cores).max(1);
    let threads = a.threads_per_variant.unwrap_or((cores / max_parallel).max(1));
    let binary = std::env::current_exe().map_err(|e| Failure::Internal(anyhow!("cannot find the edgeforge binary: {e}")))?;
    let bar = crate::progress::items_bar(0, "variants");
    let progress_bar = bar.clone();
    let opts = SweepOptions {
        out_dir: a.out.clone(),
        executor: a.executor.clone(),
        config: edgeforge_sweep::ExecutorConfig { binary, ray_address: a.ray_address.clone() },
        max_parallel,
        threads_per_variant: threads,
        seed: a.seed,
        progress: Box::new(move |done, total, name, outcome| {
            progress_bar.set_length(total as u64);
            progress_bar.set_position(done as u64);
            match outcome {
                JobOutcome::Finished => progress_bar.set_message(format!("{name} done")),
                JobOutcome::Failed { why, .. } => progress_bar.println(format!("edgeforge: variant {name} failed: {why}")),
            }
        }),
    };
    let outcome = edgeforge_sweep::run_sweep(&sf, &opts)?;
    bar.finish_and_clear();
    if !outcome.skipped.is_empty() {
        println!("skipped {} variant(s) whose report is up to date: {}", outcome.skipped.len(), outcome.skipped.join(", "));
    }
    print!("{}", outcome.markdown);
    println!("\nwrote {}, sweep-summary.json, summary.md/.csv/.svg", a.out.join("sweep-summary.md").display());
    let failed: Vec<&str> = outcome.rows.iter().filter(|r| matches!(r.status, edgeforge_sweep::rank::Status::Failed { .. })).map(|r| r.variant.as_str()).collect();
    match outcome.chosen {
        Some(i) => {
            let r = &outcome.rows[i];
            let settings: Vec<String> = r.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("chosen: {} ({}): {}", r.variant, settings.join(", "), a.out.join("variants").join(&r.variant).join("report.md").display());
        }
        None => println!("chosen: none (no variant finished within the objective's limits)"),
    }
    if !failed.is_empty() {
        return Err(Failure::GateFailed(anyhow!("{} variant(s) failed: {}", failed.len(), failed.join(", "))));
    }
    if outcome.chosen.is_none() {
        return Err(Failure::GateFailed(anyhow!("no variant meets the objective")));
    }
    Ok(())
}

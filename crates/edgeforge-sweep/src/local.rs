//! The local executor: each variant is an `edgeforge run` child process on this machine; its output goes to
//! the variant's run.log.

use std::process::{Command, Stdio};

use crate::executor::{tail_of_file, Executor, ExecutorConfig, Job, JobOutcome};
use crate::SweepError;

pub struct Local {
    binary: std::path::PathBuf,
}

pub fn make(cfg: &ExecutorConfig) -> Result<Box<dyn Executor>, SweepError> {
    Ok(Box::new(Local { binary: cfg.binary.clone() }))
}

impl Executor for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn run_one(&self, job: &Job) -> JobOutcome {
        let log_path = job.out.join("run.log");
        let spawned = std::fs::create_dir_all(&job.out).and_then(|()| std::fs::File::create(&log_path)).and_then(|log| {
            let err = log.try_clone()?;
            Command::new(&self.binary).args(job.args()).stdin(Stdio::null()).stdout(log).stderr(err).status()
        });
        match spawned {
            Ok(_) if job.finished() => JobOutcome::Finished,
            Ok(status) => JobOutcome::Failed { why: format!("edgeforge run ended with {status} and no report"), log_tail: tail_of_file(&log_path, 20) },
            Err(e) => JobOutcome::Failed { why: format!("could not start {}: {e}", self.binary.display()), log_tail: String::new() },
        }
    }
}

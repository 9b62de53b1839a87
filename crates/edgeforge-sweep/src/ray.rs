//! The Ray executor: each variant is a Ray job submitted through the Jobs REST API of the head's dashboard
//! (`POST /api/jobs/`, `GET /api/jobs/{id}`, `GET /api/jobs/{id}/logs`). The entrypoint is our binary on the
//! variant's recipe, so nodes need no Python of ours; the binary, the recipes and the output folder must be
//! at the same paths on every node (a shared file system). A job that ends without a report is retried once;
//! a second failure is reported with its log tail.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::executor::{tail, Executor, ExecutorConfig, Job, JobOutcome};
use crate::SweepError;

/// Environment variables passed to every job, so a node finds data, models and caches as we do.
const FORWARDED_ENV: [&str; 5] = ["EDGEFORGE_DATA", "EDGEFORGE_MODELS", "EDGEFORGE_TEST_MODEL", "HOME", "PATH"];
const POLL: Duration = Duration::from_millis(500);
const ATTEMPTS: usize = 2;

pub struct Ray {
    address: String,
    binary: std::path::PathBuf,
    agent: ureq::Agent,
    /// Makes submission ids unique across sweeps on one cluster.
    tag: String,
}

pub fn make(cfg: &ExecutorConfig) -> Result<Box<dyn Executor>, SweepError> {
    let address = cfg.ray_address.clone().ok_or(SweepError::RayAddress)?.trim_end_matches('/').to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(60))).http_status_as_error(false).build().into();
    let ray = Ray { address, binary: cfg.binary.clone(), agent, tag: unique_tag() };
    let version = ray.get_json("/api/version").map_err(|why| SweepError::Ray { address: ray.address.clone(), why })?;
    if version.get("ray_version").is_none() {
        return Err(SweepError::Ray { address: ray.address.clone(), why: format!("/api/version answered {version}, not a Ray dashboard") });
    }
    Ok(Box::new(ray))
}

fn unique_tag() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// POSIX shell single quoting.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Ray {
    fn get_json(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.address);
        let resp = self.agent.get(&url).call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body: Value = resp.into_body().read_json().map_err(|e| format!("GET {url}: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("GET {url}: HTTP {status}: {body}"))
        }
    }

    fn submit(&self, job: &Job, id: &str) -> Result<(), String> {
        let mut entry = vec![quote(&self.binary.display().to_string())];
        entry.extend(job.args().iter().map(|a| quote(a)));
        entry.push(format!("> {} 2>&1", quote(&job.out.join("run.log").display().to_string())));
        let env: serde_json::Map<String, Value> = FORWARDED_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), Value::String(v)))).collect();
        let body = json!({
            "entrypoint": format!("mkdir -p {} && {}", quote(&job.out.display().to_string()), entry.join(" ")),
            "submission_id": id,
            "entrypoint_num_cpus": job.threads,
            "runtime_env": { "env_vars": env },
            "metadata": { "edgeforge_variant": job.name },
        });
        let url = format!("{}/api/jobs/", self.address);
        let resp = self.agent.post(&url).send_json(&body).map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = resp.into_body().read_to_string().unwrap_or_default();
            Err(format!("POST {url}: HTTP {status}: {}", tail(&text, 5)))
        }
    }

    /// Polls until the job is SUCCEEDED, FAILED or STOPPED; returns the status and Ray's message.
    fn wait(&self, id: &str) -> Result<(String, String), String> {
        loop {
            let v = self.get_json(&format!("/api/jobs/{id}"))?;
            let status = v.get("status").and_then(Value::as_str).unwrap_or("UNKNOWN").to_owned();
            if matches!(status.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED") {
                let message = v.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
                return Ok((status, message));
            }
            std::thread::sleep(POLL);
        }
    }

    fn logs(&self, id: &str) -> String {
        self.get_json(&format!("/api/jobs/{id}/logs")).ok().and_then(|v| v.get("logs").and_then(Value::as_str).map(str::to_owned)).unwrap_or_default()
    }

    fn attempt(&self, job: &Job, attempt: usize) -> JobOutcome {
        let id = format!("edgeforge-{}-{}-{attempt}", self.tag, job.name);
        if let Err(why) = self.submit(job, &id) {
            return JobOutcome::Failed { why, log_tail: String::new() };
        }
        match self.wait(&id) {
            Ok(_) if job.finished() => JobOutcome::Finished,
            Ok((status, message)) => {
                let run_log = crate::executor::tail_of_file(&job.out.join("run.log"), 20);
                let log_tail = if run_log.is_empty() { tail(&self.logs(&id), 20) } else { run_log };
                JobOutcome::Failed { why: format!("Ray job {id} {status}: {message}"), log_tail }
            }
            Err(why) => JobOutcome::Failed { why, log_tail: String::new() },
        }
    }
}

impl Executor for Ray {
    fn name(&self) -> &'static str {
        "ray"
    }

    fn run_one(&self, job: &Job) -> JobOutcome {
        let mut last = JobOutcome::Failed { why: "not run".into(), log_tail: String::new() };
        for attempt in 1..=ATTEMPTS {
            last = self.attempt(job, attempt);
            if last == JobOutcome::Finished {
                break;
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}

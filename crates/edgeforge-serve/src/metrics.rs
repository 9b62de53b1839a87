//! /metrics in the Prometheus (OpenMetrics) text format through `prometheus-client`: requests by endpoint
//! and status, tokens in and out, time to first token and per-token latency histograms, queue depth and
//! rejections, resident memory. RSS is read from a /proc/self/status handle opened before the sandbox
//! closes the filesystem.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    pub ttft: Histogram,
    pub per_token: Histogram,
    pub queue_depth: Gauge,
    pub queue_rejections: Counter,
    pub cancelled: Counter,
    rss_bytes: Gauge,
    status_file: Mutex<Option<File>>,
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::with_prefix("edgeforge_serve"),
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            completion_tokens: Counter::default(),
            // 1 ms .. ~33 s.
            ttft: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 0.5 ms .. ~1 s.
            per_token: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
            queue_depth: Gauge::default(),
            queue_rejections: Counter::default(),
            cancelled: Counter::default(),
            rss_bytes: Gauge::default(),
            status_file: Mutex::new(File::open("/proc/self/status").ok()),
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register("requests", "HTTP requests by endpoint and status code", self.requests.clone());
        r.register("prompt_tokens", "Prompt tokens processed", self.prompt_tokens.clone());
        r.register("completion_tokens", "Tokens generated", self.completion_tokens.clone());
        r.register("time_to_first_token_seconds", "From the start of a request's prefill to its first generated token", self.ttft.clone());
        r.register("time_per_output_token_seconds", "Time between consecutive generated tokens", self.per_token.clone());
        r.register("queue_depth", "Generation requests waiting for the model", self.queue_depth.clone());
        r.register("queue_rejections", "Requests refused with 429 because the queue was full", self.queue_rejections.clone());
        r.register("cancelled", "Generations stopped because the client went away", self.cancelled.clone());
        r.register("resident_memory_bytes", "Resident set size of the server process", self.rss_bytes.clone());
        self
    }

    pub fn count_request(&self, endpoint: &str, status: u16) {
        self.requests.get_or_create(&RequestLabels { endpoint: endpoint.to_owned(), status: status.to_string() }).inc();
    }

    /// Resident set size now (VmRSS), if /proc was readable at startup.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    /// A `kB` field of /proc/self/status (e.g. `VmSize:`), in bytes.
    pub fn status_bytes(&self, field: &str) -> Option<u64> {
        let guard = self.status_file.lock().ok()?;
        let f = guard.as_ref()?;
        let mut buf = vec![0u8; 4096];
        let n = f.read_at(&mut buf, 0).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let kb: u64 = text.lines().find_map(|l| l.strip_prefix(field))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        if let Some(rss) = self.rss_bytes() {
            self.rss_bytes.set(rss as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

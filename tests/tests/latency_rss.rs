//! `eval latency`'s peak RSS is the measurement's own, not the process's lifetime high-water mark. Its own
//! test binary: the peak is per process, so no other test may allocate while it runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_eval::{latency, LatencyOptions, PeakRssScope};
use edgeforge_runtime::{weights_from_model, LlamaRuntime};
use edgeforge_tests::{write_tiny_gguf, TinySpec};

#[test]
fn peak_rss_covers_the_measurement_not_an_earlier_peak() {
    let dir = tempfile::tempdir().unwrap();
    let model = edgeforge_core::load_model(&write_tiny_gguf(dir.path(), "a.gguf", &TinySpec::default())).unwrap();
    let runtime = LlamaRuntime::new(weights_from_model(&model).unwrap()).unwrap();
    // An earlier peak of 512 MiB, given back to the system before the measurement.
    let big = vec![1u8; 512 << 20];
    assert_eq!(big.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>(), (512 << 20) / 4096);
    drop(big);
    assert!(edgeforge_core::process::peak_rss_bytes() >= 512 << 20, "the earlier peak was not resident");
    let r = latency(&runtime, &LatencyOptions { prompt_tokens: 16, gen_tokens: 4, repeats: 2, seed: 0 }).unwrap();
    assert_eq!(r.peak_rss_scope, PeakRssScope::Measurement, "{:?}", r.notes);
    assert!(r.peak_rss_bytes > 0 && r.peak_rss_bytes < 256 << 20, "peak {} bytes includes the earlier 512 MiB", r.peak_rss_bytes);
}

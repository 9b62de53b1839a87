//! Shared by the benchmark tests.

use std::time::{Duration, Instant};

/// Seconds per call: the best of 5 batches, each long enough (~40 ms) to swamp timer noise.
pub fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    let mut calls = 0u32;
    while t.elapsed() < Duration::from_millis(40) {
        f();
        calls += 1;
    }
    let per_batch = calls.max(1);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed().as_secs_f64() / f64::from(per_batch)
        })
        .fold(f64::INFINITY, f64::min)
}


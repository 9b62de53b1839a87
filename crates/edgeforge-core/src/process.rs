//! Facts about the running process that reports record.

/// Peak resident set size of this process so far (Linux `VmHWM`), 0 where unavailable.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Starts a new peak: after this, `peak_rss_bytes` reports the peak from now on (Linux: writing 5 to
/// `/proc/self/clear_refs` resets VmHWM to the current RSS). Returns false where that is not possible, in
/// which case the peak stays the process's lifetime peak.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// sha256 of the running executable's file: an identity of the code that computes a result, finer than the
/// version string (two builds of one version differ here). Hashed once per process (streamed, ~0.3 s for a
/// 100 MB binary); `None` where the executable cannot be read.
pub fn executable_sha256() -> Option<String> {
    static HASH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    HASH.get_or_init(|| crate::hash::sha256_file_hex(&std::env::current_exe().ok()?).ok()).clone()
}

//! A full disk, for real: `edgeforge run` writes into a small tmpfs (mounted by the test in its own user and
//! mount namespace, `unshare -rm`, so no root is needed) that holds either nothing but the lock file or the
//! checkpoint but not the GGUF. The run must fail with the operating system's "No space left on device",
//! exit non-zero without a panic, and leave no temp file and no partial artifact behind.
//!
//! Where the kernel refuses unprivileged user namespaces the test says so by name and returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use edgeforge_tests::{write_tiny_gguf, TinySpec};

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

/// Whether `unshare -rm` can mount a tmpfs here.
fn namespaces_work() -> bool {
    Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run the recipe into a tmpfs of `size_bytes` mounted at `mnt`; returns (exit code, stderr, files left
/// on the tmpfs after the run, with their sizes).
fn run_on_tmpfs(dir: &Path, size_bytes: u64) -> (i32, String, Vec<(String, u64)>) {
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o size={size_bytes} none '{m}'; set +e; '{BIN}' run '{r}' --out '{m}/out' --threads 1; echo \"rc=$?\" >&2; mkdir -p '{k}'; cp '{m}'/out/checkpoints/*.ckpt '{k}/' 2>/dev/null; cd '{m}' && find . -type f -printf '%p %s\\n'",
        m = mnt.display(),
        k = dir.join("kept").display(),
        r = dir.join("q.yaml").display()
    );
    let o = Command::new("unshare").args(["-rm", "sh", "-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let rc = stderr.lines().rev().find_map(|l| l.strip_prefix("rc=")).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no exit code:\n{stderr}"));
    let files = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.rsplit_once(' ').map(|(p, s)| (p.to_owned(), s.parse().unwrap())))
        .collect();
    (rc, stderr, files)
}

fn setup(dir: &Path) {
    write_tiny_gguf(dir, "tiny.gguf", &TinySpec { n_embd: 256, n_layers: 4, n_ff: 512, ..TinySpec::default() });
    let recipe = format!(
        "version: 1\nmodel: {}\npasses:\n  - {{ pass: quantize-rtn, bits: 8, group_size: 32, symmetric: true }}\ntargets:\n  - {{ format: gguf }}\n",
        dir.join("tiny.gguf").display()
    );
    std::fs::write(dir.join("q.yaml"), recipe).unwrap();
}

fn assert_clean_failure(what: &str, rc: i32, stderr: &str, files: &[(String, u64)]) {
    assert!(rc != 0 && rc != 101, "{what}: exit {rc}\n{stderr}");
    assert!(stderr.contains("No space left on device"), "{what}: the error does not say the disk is full:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what}: panic\n{stderr}");
    for (f, _) in files {
        assert!(!f.contains(".tmp") && !f.ends_with(".part") && !f.contains(".tmp-"), "{what}: temp file left behind: {f} ({files:?})");
        assert!(!f.ends_with(".gguf"), "{what}: partial artifact left behind: {f} ({files:?})");
    }
}

#[test]
fn a_full_disk_leaves_no_partial_checkpoint_or_artifact() {
    if !namespaces_work() {
        eprintln!("SKIPPED a_full_disk_leaves_no_partial_checkpoint_or_artifact: `unshare -rm` cannot mount a tmpfs here (no unprivileged user namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());

    // The sizes of a successful run's checkpoint and GGUF, measured on the ordinary disk.
    let ok = Command::new(BIN).args(["run", dir.path().join("q.yaml").to_str().unwrap(), "--out", dir.path().join("ok").to_str().unwrap(), "--threads", "1"]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let ckpt = std::fs::metadata(dir.path().join("ok/checkpoints/000-quantize-rtn.ckpt")).unwrap().len();
    let gguf = std::fs::metadata(dir.path().join("ok/q.gguf")).unwrap().len();
    assert!(ckpt > 64 << 10 && gguf > 64 << 10, "the model is too small for the test: checkpoint {ckpt}, gguf {gguf}");

    // Full while writing the checkpoint: nothing of it may remain.
    let (rc, stderr, files) = run_on_tmpfs(dir.path(), 32 << 10);
    assert_clean_failure("checkpoint", rc, &stderr, &files);
    assert!(!files.iter().any(|(f, _)| f.ends_with(".ckpt")), "a checkpoint was left on a disk too small for it: {files:?}");

    // Room for the checkpoint, not for the GGUF: the finished checkpoint stays whole, the GGUF is gone.
    let (rc, stderr, files) = run_on_tmpfs(dir.path(), ckpt + gguf / 2 + (16 << 10));
    assert_clean_failure("artifact", rc, &stderr, &files);
    assert!(files.iter().any(|(f, _)| f.ends_with("000-quantize-rtn.ckpt")), "the checkpoint written before the disk filled is gone: {files:?}\n{stderr}");
    // Its size varies by a few bytes between runs (the pass timings in its header), so check it is whole by
    // its own structure: the header it declares parses, and the data after it has the sha256 it records.
    let bytes = std::fs::read(dir.path().join("kept/000-quantize-rtn.ckpt")).unwrap();
    assert!(checkpoint_is_whole(&bytes), "the checkpoint written before the disk filled is not whole ({} bytes, a good run's is {ckpt})", bytes.len());
}

/// `EFCK`, version, header length, JSON header, data whose sha256 the header records.
fn checkpoint_is_whole(bytes: &[u8]) -> bool {
    if bytes.len() < 16 || &bytes[..4] != b"EFCK" {
        return false;
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let Some(header) = bytes.get(16..16 + hlen) else { return false };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(header) else { return false };
    let data = &bytes[16 + hlen..];
    header["data_sha256"].as_str() == Some(edgeforge_core::hash::sha256_hex(&[data]).as_str())
}

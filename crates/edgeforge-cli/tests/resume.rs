//! kill -9 in the middle of a real run, then `--resume`: the same metrics and the same artifact bytes as an
//! uninterrupted run, and the finished pass is not run again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

fn recipe(dir: &Path) -> std::path::PathBuf {
    let model = edgeforge_tests::reference_model();
    let text = format!(
        "version: 1\nmodel: {}\npasses:\n  - pass: quantize-rtn\n    bits: 4\n    group_size: 64\neval:\n  perplexity: {{ dataset: wikitext-2-test, ctx: 512, chunks: 2 }}\ntargets:\n  - {{ format: gguf, profile: raspberry-pi-5 }}\n",
        model.display()
    );
    let p = dir.join("int4.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn kill_9_then_resume_gives_the_same_metrics_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let status = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", a.to_str().unwrap(), "--threads", "2"]).status().unwrap();
    assert!(status.success());

    let mut child = Command::new(BIN)
        .args(["run", r.to_str().unwrap(), "--out", b.to_str().unwrap(), "--threads", "2"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = b.join("checkpoints/000-quantize-rtn.ckpt");
    let t0 = Instant::now();
    while !ckpt.exists() && t0.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    assert!(ckpt.exists(), "the run never wrote its checkpoint");
    assert!(!b.join("report.json").exists(), "the run finished before it could be killed");
    let written = std::fs::metadata(&ckpt).unwrap().modified().unwrap();

    let out = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", b.to_str().unwrap(), "--threads", "2", "--resume"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(&ckpt).unwrap().modified().unwrap(), written, "the finished pass ran again");

    let (ra, rb) = (report(&a), report(&b));
    // Each field must be there (a missing one is null on both sides, which would compare equal).
    let ppl = |r: &serde_json::Value| r["metrics_after"]["perplexity"]["perplexity"].as_f64();
    assert!(ppl(&ra).is_some_and(|p| p.is_finite() && p > 1.0), "{}", ra["metrics_after"]);
    assert_eq!(ppl(&ra), ppl(&rb));
    let hashes = |r: &serde_json::Value| [r["model_after"]["sha256"].as_str().map(str::to_owned), r["artifacts"][0]["sha256"].as_str().map(str::to_owned)];
    assert!(hashes(&ra).iter().all(|h| h.as_ref().is_some_and(|h| h.len() == 64)), "{ra}");
    assert_eq!(hashes(&ra), hashes(&rb));
    assert_eq!(std::fs::read(a.join("int4.gguf")).unwrap(), std::fs::read(b.join("int4.gguf")).unwrap());
    // Nothing half-written is left under a final name.
    for entry in std::fs::read_dir(&b).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "{name}");
    }
}

/// Send `signal` once the first pass has checkpointed: the run stops at the next safe point with exit 130,
/// writes no artifact, and `--resume` finishes it.
fn signal_stops_cleanly_and_resume_finishes(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe(dir.path());
    let out = dir.path().join("c");
    let child = Command::new(BIN)
        .args(["run", r.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = out.join("checkpoints/000-quantize-rtn.ckpt");
    let t0 = Instant::now();
    while !ckpt.exists() && t0.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let res = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(!out.join("report.json").exists());
    assert!(!out.join("int4.gguf").exists(), "no artifact may appear after an interrupted run");
    let res = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--resume"]).output().unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert!(out.join("report.json").is_file() && out.join("int4.gguf").is_file());
}

#[test]
fn ctrl_c_stops_cleanly_and_resume_finishes() {
    signal_stops_cleanly_and_resume_finishes("-INT");
}

#[test]
fn sigterm_behaves_like_ctrl_c() {
    signal_stops_cleanly_and_resume_finishes("-TERM");
}

#[test]
fn a_second_run_into_the_same_out_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe(dir.path());
    let out = dir.path().join("busy");
    std::fs::create_dir_all(&out).unwrap();
    // This test process plays the first run: it holds the lock while the binary tries to start.
    let held = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(out.join(".edgeforge.lock")).unwrap();
    held.lock().unwrap();
    let res = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("another edgeforge run is writing into this folder"), "{stderr}");
    assert!(!out.join("checkpoints").exists(), "the refused run must not write anything");
    held.unlock().unwrap();
    let res = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"]).output().unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
}

/// A three-pass recipe on a synthetic model big enough that GPTQ takes a moment: its checkpoint names.
const CKPTS: [&str; 3] = ["000-prune.ckpt", "001-reconstruct.ckpt", "002-gptq.ckpt"];

fn three_pass_recipe(dir: &Path) -> std::path::PathBuf {
    use edgeforge_tests::{write_tiny_gguf, TinySpec};
    write_tiny_gguf(dir, "mid.gguf", &TinySpec { n_embd: 256, n_layers: 6, n_heads: 8, n_kv_heads: 4, n_ff: 768, ..TinySpec::default() });
    let text: String = (0..4000).map(|i| format!("the {} cat sat on mat number {i}; ", ["red", "big", "old", "odd"][i % 4])).collect();
    std::fs::write(dir.join("cal.txt"), text).unwrap();
    let recipe = "version: 1\nmodel: mid.gguf\ncalibration: { dataset: cal.txt, samples: 32, seq_len: 128, seed: 5 }\npasses:\n  \
                  - pass: prune\n    mlp: { ratio: 0.25, criterion: wanda, scope: per-block }\n  \
                  - { pass: reconstruct, ridge: 0.001 }\n  \
                  - { pass: gptq, bits: 4, group_size: 32 }\n\
                  eval:\n  perplexity: { dataset: cal.txt, ctx: 128, chunks: 16 }\ntargets:\n  - { format: gguf }\n";
    let p = dir.join("three.yaml");
    std::fs::write(&p, recipe).unwrap();
    p
}

/// Start a run into `out`, wait for checkpoint `after` (or none), then `delay`, then SIGKILL it. Returns
/// which checkpoints existed at the kill.
fn kill_run(r: &Path, out: &Path, after: Option<&str>, delay: Duration) -> Vec<bool> {
    let mut child = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    if let Some(c) = after {
        let ckpt = out.join("checkpoints").join(c);
        while !ckpt.exists() && t0.elapsed() < Duration::from_secs(300) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("report.json").exists(), "the run finished before it could be killed");
    CKPTS.iter().map(|c| out.join("checkpoints").join(c).exists()).collect()
}

/// kill -9 at every pass boundary (after each checkpoint) and in the middle of the GPTQ pass (resumed from the last checkpoint, the pass runs again from its start), then
/// `--resume`: every resumed run gives the uninterrupted run's model hash and artifact bytes.
#[test]
fn kill_9_at_every_boundary_and_inside_a_pass_then_resume_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let r = three_pass_recipe(dir.path());
    let whole = dir.path().join("whole");
    let o = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", whole.to_str().unwrap(), "--threads", "2"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = report(&whole);
    let gptq_s = reference["passes"][2]["seconds"].as_f64().unwrap();
    assert!(gptq_s > 0.2, "GPTQ took {gptq_s} s: too short to be interrupted reliably");
    let bytes = std::fs::read(whole.join("three.gguf")).unwrap();

    // (label, checkpoint to wait for, delay after it, checkpoints that must exist at the kill)
    let cases = [
        ("after pass 1 (prune)", Some(CKPTS[0]), Duration::ZERO, [true, false, false]),
        ("after pass 2 (reconstruct)", Some(CKPTS[1]), Duration::ZERO, [true, true, false]),
        ("inside pass 3 (GPTQ)", Some(CKPTS[1]), Duration::from_secs_f64(gptq_s / 2.0), [true, true, false]),
        ("after pass 3, evaluating", Some(CKPTS[2]), Duration::ZERO, [true, true, true]),
    ];
    for (i, (label, after, delay, expect)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("k{i}"));
        let at_kill = kill_run(&r, &out, after, delay);
        assert_eq!(at_kill, expect, "{label}: checkpoints at the kill");
        let res = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--resume"]).output().unwrap();
        assert!(res.status.success(), "{label}: {}", String::from_utf8_lossy(&res.stderr));
        let resumed = report(&out);
        assert_eq!(resumed["model_after"]["sha256"], reference["model_after"]["sha256"], "{label}");
        let ppl = |r: &serde_json::Value| r["metrics_after"]["perplexity"]["perplexity"].as_f64();
        assert!(ppl(&reference).is_some_and(f64::is_finite), "{reference}");
        assert_eq!(ppl(&resumed), ppl(&reference), "{label}");
        assert!(std::fs::read(out.join("three.gguf")).unwrap() == bytes, "{label}: artifact bytes differ");
    }
}

/// `prune-vocab` changes the tokenizer, not only tensors: resuming after it must restore the pruned
/// tokenizer from the checkpoint (else the eval text would be tokenized with ids past the new vocabulary).
#[test]
fn resume_after_prune_vocab_restores_the_pruned_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version: 1\nmodel: {}\npasses:\n  - pass: prune-vocab\n    corpus: tinyshakespeare\n    slice: [0.0, 0.9]\n  - pass: quantize-rtn\n    bits: 8\n    group_size: per-channel\neval:\n  perplexity: {{ dataset: tinyshakespeare, slice: [0.9, 1.0], ctx: 128, chunks: 2 }}\ntargets:\n  - {{ format: gguf }}\n",
        edgeforge_tests::reference_model().display()
    );
    let r = dir.path().join("vocab.yaml");
    std::fs::write(&r, text).unwrap();
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        let o = Command::new(BIN).args(["run", r.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"]).args(extra).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        report(&out)
    };
    let first = run(&[]);
    std::fs::remove_file(out.join("checkpoints/001-quantize-rtn.ckpt")).unwrap();
    std::fs::remove_file(out.join("report.json")).unwrap();
    let second = run(&["--resume"]);
    let ppl = |r: &serde_json::Value| r["metrics_after"]["perplexity"]["perplexity"].as_f64();
    assert!(ppl(&first).is_some_and(|p| p.is_finite() && p > 1.0), "{}", first["metrics_after"]);
    assert_eq!(ppl(&first), ppl(&second));
    assert_eq!(first["artifacts"][0]["sha256"], second["artifacts"][0]["sha256"]);
}

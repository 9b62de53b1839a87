//! `edgeforge sweep` on a tiny model: every variant validated first (errors at the sweep file's line:col),
//! a second run skips finished variants, and the same sweep through a real Ray head (started here with
//! `ray start --head`, installed by scripts/test.sh) gives the same metrics and artifact bytes as the
//! local executor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use edgeforge_tests::{write_tiny_gguf, TinySpec};

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

fn setup(dir: &Path) {
    write_tiny_gguf(dir, "tiny.gguf", &TinySpec { n_ff: 64, ..TinySpec::default() });
    let text: String = (0..400).map(|i| format!("The {i} quick brown foxes jump over {} lazy dogs. ", i * 7 % 13)).collect();
    std::fs::write(dir.join("cal.txt"), text).unwrap();
    let recipe = "version: 1\nmodel: tiny.gguf\ncalibration: { dataset: cal.txt, samples: 4, seq_len: 32, seed: 3 }\npasses:\n  - pass: gptq\n    bits: 4\n    group_size: 32\n    block_size: 16\neval:\n  perplexity: { dataset: cal.txt, ctx: 32, chunks: 4 }\n  kld: { dataset: cal.txt, ctx: 32, chunks: 4 }\ntargets:\n  - { format: gguf }\n";
    std::fs::create_dir_all(dir.join("recipes")).unwrap();
    // The base recipe sits in another folder than the sweep: its relative paths must still resolve.
    std::fs::write(dir.join("recipes/base.yaml"), recipe.replace("tiny.gguf", "../tiny.gguf").replace("cal.txt", "../cal.txt")).unwrap();
    let sweep = "version: 1\nrecipe: recipes/base.yaml\ngrid:\n  passes[0].bits: [4, 8]\n  passes[0].act_order: [false, true]\nobjective: { pareto: [size_bytes, perplexity] }\n";
    std::fs::write(dir.join("sweep.yaml"), sweep).unwrap();
}

fn sweep(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.current_dir(dir).args(["sweep", "sweep.yaml", "--out", out, "--max-parallel", "2", "--threads-per-variant", "1"]).args(extra);
    c.output().unwrap()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("sweep-summary.json")).unwrap()).unwrap()
}

/// (variant, perplexity, kld, artifact sha256) per row.
fn results(out: &Path) -> Vec<(String, f64, f64, String)> {
    let s = summary(out);
    s["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = r["variant"].as_str().unwrap().to_owned();
            let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("variants").join(&name).join("report.json")).unwrap()).unwrap();
            let sha = report["artifacts"][0]["sha256"].as_str().unwrap().to_owned();
            (name, r["perplexity"].as_f64().unwrap(), r["kld"].as_f64().unwrap(), sha)
        })
        .collect()
}

#[test]
fn a_bad_variant_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let bad = "version: 1\nrecipe: recipes/base.yaml\ngrid:\n  passes[0].bits: [4, 99]\npoints:\n  - { passes.5.bits: 4 }\nobjective: { best: perplexity }\n";
    std::fs::write(dir.path().join("sweep.yaml"), bad).unwrap();
    let out = sweep(dir.path(), "out", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("sweep.yaml:4:") && lines[0].contains("variant 01-bits99") && lines[0].contains("99"), "{err}");
    assert!(lines[1].contains("sweep.yaml:6:") && lines[1].contains("out of range"), "{err}");
    assert!(!dir.path().join("out/variants").exists(), "nothing may run before every variant is valid");
}

#[test]
fn local_sweep_ranks_resumes_and_matches_ray() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = sweep(dir.path(), "local", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("chosen: "), "{stdout}");
    let local = results(&dir.path().join("local"));
    assert_eq!(local.len(), 4);
    assert!(local.iter().all(|(_, p, k, _)| p.is_finite() && *p > 1.0 && *k >= 0.0), "{local:?}");
    // 8-bit variants are larger and closer to the input than 4-bit ones.
    let kld = |name: &str| local.iter().find(|r| r.0.contains(name)).unwrap().2;
    assert!(kld("act_orderfalse-bits8") < kld("act_orderfalse-bits4"), "{local:?}");
    let s = summary(&dir.path().join("local"));
    let chosen = s["chosen"].as_str().unwrap();
    let front: Vec<&str> = s["rows"].as_array().unwrap().iter().filter(|r| r["pareto"] == true).map(|r| r["variant"].as_str().unwrap()).collect();
    assert!(front.contains(&chosen), "{s}");
    for f in ["sweep-summary.md", "summary.md", "summary.csv", "summary.svg"] {
        assert!(dir.path().join("local").join(f).is_file(), "{f}");
    }

    // Resume: nothing runs again.
    let again = sweep(dir.path(), "local", &[]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("skipped 4 variant(s)"), "{}", String::from_utf8_lossy(&again.stdout));

    // The same sweep as Ray jobs.
    let Some(ray) = RayHead::start(dir.path()) else { return };
    let out = sweep(dir.path(), "ray", &["--executor", "ray", "--ray-address", &ray.address]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(results(&dir.path().join("ray")), local);
    assert_eq!(summary(&dir.path().join("ray"))["executor"], "ray");
}

/// A Ray head on 127.0.0.1 for this test, stopped on drop. `None` (with the reason printed) when `ray` is
/// not installed and this is not CI; in CI (CI=true) a missing Ray fails the test.
struct RayHead {
    address: String,
    temp: std::path::PathBuf,
}

impl RayHead {
    fn start(dir: &Path) -> Option<RayHead> {
        if Command::new("ray").arg("--version").output().is_err() {
            assert!(std::env::var("CI").is_err(), "ray is not installed; scripts/test.sh installs ray[default]");
            eprintln!("SKIPPED the Ray half: `ray` is not on PATH (scripts/test.sh installs it)");
            return None;
        }
        let port = free_port();
        // A short temp dir of our own: Ray's socket paths must stay under 107 bytes.
        let temp = std::path::PathBuf::from(format!("/tmp/ef-ray-{}", std::process::id()));
        let status = Command::new("ray")
            .current_dir(dir)
            .args(["start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--disable-usage-stats"])
            .args(["--dashboard-port", &port.to_string(), "--port", &free_port().to_string(), "--temp-dir", temp.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(status.status.success(), "ray start failed: {}", String::from_utf8_lossy(&status.stderr));
        Some(RayHead { address: format!("http://127.0.0.1:{port}"), temp })
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        let _ = Command::new("ray").args(["stop", "--force"]).output();
        let _ = std::fs::remove_dir_all(&self.temp);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

//! A GGUF target on a `kind: cluster` profile writes the model and its llama.cpp RPC plan into one folder
//! (listed in the manifest, so `verify` passes), and a cluster too small for the model is refused with the
//! shortfall. benches/rpc-cluster.sh runs such a plan in llama.cpp's RPC backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use edgeforge_tests::{write_tiny_gguf, TinySpec};

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

fn profile(dir: &Path, budget_b: u64) {
    let text = format!(
        "name: two\ndescription: test\nkind: cluster\nformats: [gguf]\nweight_bits: [4, 8, 16, 32]\ncluster:\n  nodes:\n    - {{ name: a, host: 127.0.0.1, port: 7001, ram_bytes: 1000000000, bandwidth_gb_s: 10.0 }}\n    - {{ name: b, host: 127.0.0.1, port: 7002, ram_bytes: 1000000000, budget_bytes: {budget_b}, bandwidth_gb_s: 10.0, link_gb_s: 0.1 }}\n"
    );
    std::fs::write(dir.join("two.yaml"), text).unwrap();
}

fn run(dir: &Path, out: &str) -> (std::process::Output, serde_json::Value) {
    let recipe = "version: 1\nmodel: tiny.gguf\ntargets:\n  - { format: gguf, profile: two.yaml, context: 64 }\n";
    std::fs::write(dir.join("c.yaml"), recipe).unwrap();
    let o = Command::new(BIN).current_dir(dir).args(["run", "c.yaml", "--out", out, "--threads", "1"]).output().unwrap();
    let report = serde_json::from_slice(&std::fs::read(dir.join(out).join("report.json")).unwrap()).unwrap();
    (o, report)
}

#[test]
fn the_plan_is_written_beside_the_gguf_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec { n_layers: 4, ..TinySpec::default() });
    profile(dir.path(), 500_000_000);
    let (o, report) = run(dir.path(), "out");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let folder = dir.path().join("out/c-cluster");
    for f in ["c.gguf", "cluster-plan.md", "cluster-plan.json"] {
        assert!(folder.join(f).is_file(), "{f}");
    }
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(folder.join("cluster-plan.json")).unwrap()).unwrap();
    assert_eq!(plan["tensor_split"], serde_json::json!([2, 2]));
    assert_eq!(plan["rpc"], "127.0.0.1:7001,127.0.0.1:7002");
    let md = std::fs::read_to_string(folder.join("cluster-plan.md")).unwrap();
    assert!(md.contains("--rpc 127.0.0.1:7001,127.0.0.1:7002 -ngl 5 --tensor-split 2,2") && md.contains("rpc-server -H 0.0.0.0 -p 7002"), "{md}");
    assert_eq!(report["artifacts"][0]["path"], "c-cluster");
    assert!(report["targets"][0]["notes"].to_string().contains("cluster plan"), "{}", report["targets"][0]);
    let v = Command::new(BIN).args(["verify", dir.path().join("out").to_str().unwrap()]).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn a_cluster_too_small_for_the_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec { n_layers: 4, ..TinySpec::default() });
    // Node a's default budget (75% of 1 GB) holds everything except what the plan must give b: b holds
    // nothing, and the output head it would carry does not fit.
    profile(dir.path(), 1);
    let (_, report) = run(dir.path(), "out");
    let t = &report["targets"][0];
    assert_eq!(t["fits"], true, "the whole-cluster budget is enough: {t}");
    // Now a node a that is too small as well.
    let text = std::fs::read_to_string(dir.path().join("two.yaml")).unwrap().replace("ram_bytes: 1000000000, bandwidth_gb_s: 10.0 }", "ram_bytes: 1000000000, budget_bytes: 1, bandwidth_gb_s: 10.0 }");
    std::fs::write(dir.path().join("two.yaml"), text).unwrap();
    let (_, report) = run(dir.path(), "out2");
    let t = &report["targets"][0];
    assert_eq!(t["fits"], false, "{t}");
    assert!(t["shortfalls"].to_string().contains("two allows"), "{t}");
    assert!(!dir.path().join("out2/c-cluster").exists());
}

//! The shipped int4 recipe on the real model, compared with the baseline report committed in reports/
//! (what the README's CI workflow does), then summarized together with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

#[test]
fn int4_recipe_matches_the_committed_baseline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Make sure the named model is in the cache (the binary would fetch it itself, this only saves a step).
    let _ = edgeforge_tests::reference_model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int4");
    let run = Command::new(BIN)
        .current_dir(&root)
        .args(["run", "recipes/smollm2-int4-rtn.yaml", "--out", out.to_str().unwrap(), "--threads", "2"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["gates"]["passed"], true);
    assert_eq!(report["artifacts"][0]["format"], "gguf");
    assert!(out.join("smollm2-int4-rtn.gguf").is_file());

    let baseline = root.join("reports/baseline-smollm2-int4-rtn.json");
    let cmp = Command::new(BIN)
        .args(["compare", baseline.to_str().unwrap(), out.join("report.json").to_str().unwrap(), "--max-ppl-increase-pct", "1", "--max-size-bytes", "90000000"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert_eq!(cmp.status.code(), Some(0), "{table}{}", String::from_utf8_lossy(&cmp.stderr));
    assert!(table.contains("all gates hold"), "{table}");
}

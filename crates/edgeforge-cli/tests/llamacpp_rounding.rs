//! `eval perplexity --rounding llamacpp` reproduces llama-perplexity on the reference model (issue 14, item
//! 3): the running perplexity after each of the first four chunks of wiki.test.raw (ctx 512, batch 512),
//! rounded to the four decimals llama-perplexity prints, equals what it prints. The figures were printed
//! by the pinned llama.cpp build's `llama-perplexity -m SmolLM2-135M-Instruct.Q4_1.gguf -f wiki.test.raw -c
//! 512 -b 512 --chunks 25 -t 2` (its defaults: f16 KV cache, flash attention), run by
//! benches/rounding-vs-llamacpp.sh (reports/bench/rounding-vs-llamacpp.md); benches/llamacpp-bitexact.sh
//! checks every op of such a batch bit for bit against that build's own tensors. The default `exact`
//! rounding differs from them (checked too: the option is what makes the difference).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use edgeforge_tests::reference_model;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

/// llama-perplexity's running figures `[1]..[4]` on the reference model (see the module comment).
const LLAMA_PERPLEXITY: [&str; 4] = ["13.0665", "21.4582", "22.6003", "22.8855"];

fn running(rounding: &str) -> Vec<String> {
    let model = reference_model();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let args = ["eval", "perplexity", "--model", model.to_str().unwrap(), "--text", "wikitext-2-test", "--ctx", "512", "--batch", "512", "--chunks", "4", "--threads", "2", "--rounding", rounding, "--json"];
    let out = Command::new(BIN).args(args).current_dir(root).output().unwrap();
    assert!(out.status.success(), "edgeforge {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["running_perplexity"].as_array().unwrap().iter().map(|p| format!("{:.4}", p.as_f64().unwrap())).collect()
}

#[test]
fn llamacpp_rounding_prints_llama_perplexitys_figures() {
    assert_eq!(running("llamacpp"), LLAMA_PERPLEXITY);
    assert_ne!(running("exact"), LLAMA_PERPLEXITY);
}

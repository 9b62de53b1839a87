//! Models larger than memory (issue 16): quantization and evaluation read one block at a time from the
//! memory-mapped input. Synthetic llama models the test writes (random F16 weights, 30 and 120 blocks of
//! the same width) go through `eval perplexity --stream` and a GPTQ recipe (Q4_0, streamed evaluation,
//! GGUF out). Checked:
//! - the streamed perplexity equals the normal one (batch = ctx), on both depths;
//! - peak RSS is flat in depth (the 120-block run within 15% of the 30-block run) for the streamed
//!   evaluation and for the GPTQ pass (the report's per-pass peak), although the 120-block file is 4x larger;
//! - a wider 160-block model (n_embd 512, 1.0 GB) runs through both under a heap limit (RLIMIT_DATA,
//!   `ulimit -d`, 600 MiB) smaller than the model file: its weights are never copied to the heap (read-only
//!   file maps do not count toward that limit; `ulimit -v` would count the map itself);
//! - the exported GGUF scores what the report says.
//! Times are printed (time linear in depth is a benchmark's claim, not a test's).
//!
//! The children run with `MALLOC_MMAP_THRESHOLD_=131072`: glibc's default raises its mmap threshold after
//! the first large free, so each block's freed float buffers stay in the heap, fragmented; measured here the
//! GPTQ pass then peaks at 209 MiB for 30 blocks and 276 MiB for 120 (+32%), and 181 vs 188 MiB (+4%)
//! with the fixed threshold. The README says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use edgeforge_tests::{write_tiny_gguf, TinySpec};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn spec(n_layers: usize) -> TinySpec {
    TinySpec { n_embd: 256, n_layers, n_heads: 4, n_kv_heads: 2, n_ff: 768, tied: true, seed: 11, f16: true }
}

/// `edgeforge ARGS` under `ulimit -d KIB` when given; stdout on success.
fn edgeforge(args: &[&str], data_limit_kib: Option<u64>) -> Vec<u8> {
    let mut cmd = match data_limit_kib {
        Some(kib) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("ulimit -d {kib} && exec \"$0\" \"$@\"")).arg(BIN).args(args);
            c
        }
        None => {
            let mut c = Command::new(BIN);
            c.args(args);
            c
        }
    };
    let out = cmd.current_dir(root()).env("MALLOC_MMAP_THRESHOLD_", "131072").output().unwrap();
    assert!(out.status.success(), "edgeforge {args:?} (heap limit {data_limit_kib:?} KiB): {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn perplexity(model: &Path, stream: bool, limit: Option<u64>) -> Value {
    let mut args = vec!["eval", "perplexity", "--model", model.to_str().unwrap(), "--text", "wikitext-2-test", "--ctx", "128", "--batch", "128", "--chunks", "8", "--threads", "2", "--json"];
    if stream {
        args.push("--stream");
    }
    serde_json::from_slice(&edgeforge(&args, limit)).unwrap()
}

fn gptq(model: &Path, out: &Path, limit: Option<u64>) -> Value {
    let recipe = out.with_extension("yaml");
    std::fs::write(
        &recipe,
        format!(
            "version: 1\nmodel: {}\ncalibration: {{ dataset: wikitext-2-valid, samples: 8, seq_len: 128, seed: 1 }}\npasses:\n  - {{ pass: gptq, format: q4_0 }}\n\
             eval:\n  perplexity: {{ dataset: wikitext-2-test, ctx: 128, chunks: 8, stream: true }}\ntargets:\n  - {{ format: gguf }}\n",
            model.display()
        ),
    )
    .unwrap();
    edgeforge(&["run", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2"], limit);
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

fn mib(b: f64) -> f64 {
    b / (1u64 << 20) as f64
}

#[test]
fn gptq_and_perplexity_stream_blocks_with_peak_rss_flat_in_depth() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for n_layers in [30, 120] {
        let model = write_tiny_gguf(dir.path(), &format!("synthetic-{n_layers}.gguf"), &spec(n_layers));
        let file_bytes = std::fs::metadata(&model).unwrap().len();
        let normal = perplexity(&model, false, None);
        let streamed = perplexity(&model, true, None);
        let (p0, p1) = (normal["perplexity"].as_f64().unwrap(), streamed["perplexity"].as_f64().unwrap());
        assert_eq!(p0, p1, "{n_layers} blocks: streamed perplexity differs from the normal evaluation");
        let report = gptq(&model, &dir.path().join(format!("gptq-{n_layers}")), None);
        let pass = &report["passes"][0];
        let after = report["metrics_after"]["perplexity"]["perplexity"].as_f64().unwrap();
        let exported = dir.path().join(format!("gptq-{n_layers}/gptq-{n_layers}.gguf"));
        let reread = perplexity(&exported, false, None)["perplexity"].as_f64().unwrap();
        assert!((reread / after - 1.0).abs() < 1e-9, "{n_layers} blocks: export scores {reread}, the report says {after}");
        rows.push((
            n_layers,
            file_bytes,
            normal["peak_rss_bytes"].as_f64().unwrap(),
            streamed["peak_rss_bytes"].as_f64().unwrap(),
            streamed["seconds"].as_f64().unwrap(),
            pass["peak_rss_bytes"].as_f64().unwrap(),
            pass["seconds"].as_f64().unwrap(),
            model,
        ));
    }
    for r in &rows {
        println!(
            "{} blocks, file {:.1} MiB: perplexity peak RSS normal {:.1} MiB, streamed {:.1} MiB ({:.2} s); GPTQ pass peak RSS {:.1} MiB ({:.2} s)",
            r.0, mib(r.1 as f64), mib(r.2), mib(r.3), r.4, mib(r.5), r.6
        );
    }
    let (small, big) = (&rows[0], &rows[1]);
    let file_growth = (big.1 - small.1) as f64;
    assert!(big.2 - small.2 > 0.4 * file_growth, "the normal evaluation should grow with depth ({:.1} -> {:.1} MiB): the models are too small to show streaming", mib(small.2), mib(big.2));
    assert!(big.3 <= small.3 * 1.15, "streamed perplexity peak RSS grew with depth: {:.1} -> {:.1} MiB", mib(small.3), mib(big.3));
    assert!(big.5 <= small.5 * 1.15, "GPTQ pass peak RSS grew with depth: {:.1} -> {:.1} MiB", mib(small.5), mib(big.5));

    // A model larger than the heap limit the children run under.
    let wide = TinySpec { n_embd: 512, n_heads: 8, n_kv_heads: 4, n_ff: 1536, ..spec(160) };
    let model = write_tiny_gguf(dir.path(), "synthetic-wide-160.gguf", &wide);
    let file_bytes = std::fs::metadata(&model).unwrap().len();
    let limit_kib = 600 * 1024;
    assert!(file_bytes > limit_kib * 1024, "the model ({file_bytes} bytes) must be larger than the limit");
    let streamed = perplexity(&model, true, Some(limit_kib));
    assert!(streamed["perplexity"].as_f64().is_some_and(f64::is_finite), "{streamed}");
    let report = gptq(&model, &dir.path().join("gptq-limited"), Some(limit_kib));
    println!(
        "under ulimit -d {limit_kib} KiB ({:.0} MiB; the model file is {:.1} MiB): streamed perplexity {:.4} (peak RSS {:.1} MiB), GPTQ pass {:.2} s peak RSS {:.1} MiB, streamed evaluation and GGUF export ok (after {:.4})",
        limit_kib as f64 / 1024.0,
        mib(file_bytes as f64),
        streamed["perplexity"].as_f64().unwrap(),
        mib(streamed["peak_rss_bytes"].as_f64().unwrap()),
        report["passes"][0]["seconds"].as_f64().unwrap(),
        mib(report["passes"][0]["peak_rss_bytes"].as_f64().unwrap()),
        report["metrics_after"]["perplexity"]["perplexity"].as_f64().unwrap()
    );
}

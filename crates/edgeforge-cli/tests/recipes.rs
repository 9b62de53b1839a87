//! Recipes through the binary: the malformed catalogue (each answered at its line and column with exit 2),
//! validate/dry-run on good recipes, and a full run on a tiny model built by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use edgeforge_tests::{write_tiny_gguf, TinySpec};

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

const GOOD_HEAD: &str = "version: 1\nmodel: tiny.gguf\n";

/// (name, recipe text, expected "line:col", expected words in the message)
const CASES: &[(&str, &str, &str, &[&str])] = &[
    ("field-dedented", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    group_size: 32\n  bits: 4\n", "5:5", &["missing field `bits`", "`bits` is at line 6 column 3", "indent it to column 5"]),
    ("duplicate-key-named", "version: 1\nmodel: tiny.gguf\nmodel: other.gguf\n", "3:1", &["duplicate key `model`", "already set at line 2"]),
    ("line-over-indented", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n     bits: 4\n    group_size: 32\n", "4:", &["quantize-rtn bits", "line 5 is indented more than the keys above it"]),
    ("profile-unknown", "version: 1\nmodel: tiny.gguf\ntargets:\n  - format: gguf\n    profile: rasberry-pi-5\n", "5:14", &["targets[0].profile", "rasberry-pi-5", "did you mean `raspberry-pi-5`?"]),
    ("profile-lacks-format", "version: 1\nmodel: tiny.gguf\ntargets:\n  - format: safetensors\n  - format: gguf\n    profile: esp32-s3\n", "6:14", &["targets[1]", "does not run `gguf`", "c-bundle"]),
    ("prune-vocab-slice", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: prune-vocab\n    corpus: tinyshakespeare\n    slice: [0.9, 0.1]\n", "6:12", &["slice [0.9, 0.1]", "0 ≤ from < to ≤ 1"]),
    ("prune-vocab-corpus", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: prune-vocab\n    corpus: no-such-text\n", "4:", &["prune-vocab: corpus", "no-such-text", "tinyshakespeare"]),
    ("calibration-slice", "version: 1\nmodel: tiny.gguf\ncalibration: { dataset: tinyshakespeare, slice: [1.0, 2.0], samples: 4, seq_len: 16 }\n", "3:49", &["slice [1, 2]", "0 ≤ from < to ≤ 1"]),
    ("unknown-top-key", "version: 1\nmodel: tiny.gguf\npasess: []\n", "3:1", &["unknown field `pasess`", "did you mean `passes`?"]),
    ("unknown-pass", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantise-rtn\n    bits: 4\n", "4:", &["unknown pass `quantise-rtn`", "did you mean `quantize-rtn`?"]),
    ("distill-option-typo", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: distill\n    stepz: 10\n", "5:5", &["unknown field `stepz`", "did you mean `steps`?"]),
    ("prune-ratio-type", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: prune\n    mlp: { ratio: half }\n", "5:", &["ratio"]),
    ("awq-grid-type", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: awq\n    bits: 4\n    group_size: 32\n    grid: many\n", "7:11", &["grid"]),
    ("pass-option-typo", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 4\n    group_szie: 32\n", "6:5", &["unknown field `group_szie`", "did you mean `group_size`?"]),
    ("bits-wrong-type", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: four\n    group_size: 32\n", "5:11", &["invalid u8", "expected a whole number"]),
    ("bits-out-of-range", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 5\n    group_size: 32\n", "5:11", &["bits = 5 is not supported"]),
    ("group-size-odd", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 4\n    group_size: 48\n", "6:17", &["group_size = 48 is not supported"]),
    ("group-size-name", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 4\n    group_size: per-row\n", "6:17", &["per-row"]),
    ("override-typo", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 4\n    group_size: 32\n    overrides:\n      - { tensors: \"blk.*\", bitz: 8 }\n", "8:", &["unknown field `bitz`"]),
    ("override-bits", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 4\n    group_size: 32\n    overrides:\n      - tensors: \"blk.*\"\n        bits: 6\n", "9:15", &["bits = 6 is not supported"]),
    ("missing-bits", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    group_size: 32\n", "5:", &["missing field `bits`"]),
    ("pass-key-not-first", "version: 1\nmodel: tiny.gguf\npasses:\n  - bits: 4\n    pass: quantize-rtn\n", "4:", &["must start with `pass: NAME`"]),
    ("negative-samples", "version: 1\nmodel: tiny.gguf\ncalibration: { dataset: wikitext-2-valid, samples: -3, seq_len: 64 }\n", "3:", &["-3 is not allowed here"]),
    ("zero-ctx", "version: 1\nmodel: tiny.gguf\neval:\n  perplexity: { dataset: wikitext-2-test, ctx: 0 }\n", "4:", &["0 is not allowed here"]),
    ("negative-gate", "version: 1\nmodel: tiny.gguf\ngates:\n  max_ppl_increase_pct: -1.0\n", "4:", &["expected a number >= 0"]),
    ("tabs", "version: 1\nmodel: tiny.gguf\neval:\n\tperplexity: { dataset: wikitext-2-test, ctx: 8 }\n", "4:", &["tab"]),
    ("duplicate-key", "version: 1\nmodel: tiny.gguf\nmodel: other.gguf\n", "3:1", &["duplicate"]),
    ("missing-model-file", "version: 1\nmodel: no-such-model.gguf\n", "2:8", &["no-such-model.gguf", "neither a known model name nor a file", "looked for"]),
    ("model-name-typo", "version: 1\nmodel: smollm2-135m-instruc\n", "2:8", &["did you mean `smollm2-135m-instruct`?"]),
    ("missing-dataset", "version: 1\nmodel: tiny.gguf\neval:\n  perplexity: { dataset: no-such-text, ctx: 8 }\n", "4:", &["no-such-text", "neither a file", "nor a known dataset"]),
    ("illegal-pass-order", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: per-channel\n  - pass: quantize-rtn\n    bits: 4\n    group_size: 32\n", "7:", &["needs float weights", "already quantized"]),
    ("tune-scales-before-quantizing", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: tune-scales\n    steps: 5\n", "4:", &["tunes quantized weights", "no pass before it quantizes", "after a quantizing pass"]),
    ("group-not-dividing-model", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 4\n    group_size: 64\n", "4:", &["group_size 64 is longer than the model's n_embd (32)"]),
    ("unknown-target-format", "version: 1\nmodel: tiny.gguf\ntargets:\n  - { format: tflite }\n", "4:", &["unknown variant `tflite`"]),
    ("unknown-profile", "version: 1\nmodel: tiny.gguf\ntargets:\n  - { format: gguf, profile: raspberry-pi-6 }\n", "4:30", &["unknown profile `raspberry-pi-6`", "did you mean `raspberry-pi-5`?"]),
    ("gate-without-measurement", "version: 1\nmodel: tiny.gguf\ngates:\n  baseline: input\n  min_decode_speedup: 1.5\n", "4:", &["needs eval.latency"]),
    ("gate-without-decode-steps", "version: 1\nmodel: tiny.gguf\neval:\n  latency: { prompt_tokens: 8, gen_tokens: 1, repeats: 1 }\ngates:\n  baseline: input\n  min_decode_speedup: 1.5\n", "6:", &["gen_tokens = 1 times none", "hint: set eval.latency.gen_tokens to 2 or more"]),
    ("baseline-missing", "version: 1\nmodel: tiny.gguf\ngates:\n  baseline: reports/none.json\n", "4:13", &["neither `input` nor an existing report.json"]),
    ("wrong-version", "version: 2\nmodel: tiny.gguf\n", "1:1", &["version 2 is not supported"]),
    ("not-a-mapping", "- just\n- a list\n", "1:", &["expected"]),
    ("swap-then-gguf", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: activation-swap\n    to: relu\ntargets:\n  - { format: gguf }\n", "1:1", &["gguf target cannot hold this model", "always applies SiLU", "drop the gguf target"]),
    ("swap-to-unknown", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: activation-swap\n    to: gelu\n", "5:", &["unknown variant `gelu`"]),
    ("ignore-bad-glob", "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: quantize-rtn\n    bits: 4\n    group_size: 32\n    ignore: [\"blk.[\"]\n", "7:", &["not a valid glob"]),
];

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec { n_ff: 64, ..TinySpec::default() });
    dir
}

fn run(args: &[&str], cwd: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).current_dir(cwd).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn malformed_recipes_are_answered_at_their_line_and_column() {
    assert!(CASES.len() >= 20);
    let dir = setup();
    let mut failures = Vec::new();
    for (name, text, place, words) in CASES {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, stderr) = run(&["validate", path.to_str().unwrap()], dir.path());
        let first = stderr.lines().next().unwrap_or("");
        let want_prefix = format!("edgeforge: error: {}:{place}", path.display());
        // A tab hint only where the file has a tab; no parser option names.
        let wrong_words = (!text.contains('\t') && first.contains("tab")) || first.contains("DuplicateKeyPolicy");
        let ok = code == Some(2) && first.starts_with(&want_prefix) && words.iter().all(|w| first.contains(w)) && !stderr.contains("panicked") && !wrong_words;
        if !ok {
            failures.push(format!("{name}: exit {code:?}, wanted prefix {want_prefix} and {words:?}, got: {stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn validate_reports_every_error_of_every_file() {
    let dir = setup();
    let put = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap();
        name.to_owned()
    };
    let good = put("good.yaml", "version: 1\nmodel: tiny.gguf\n");
    let two = put("two.yaml", "version: 1\nmodel: tiny.gguf\ntargets:\n  - format: gguf\n    profile: esp32-s3\n  - format: gguf\n    profile: nosuchboard\n");
    let one = put("one.yaml", "version: 1\nmodel: tiny.gguf\ntargets:\n  - format: gguf\n    profile: stm32h7\n");
    let (code, stdout, stderr) = run(&["validate", &two, &good, &one], dir.path());
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    // One status line per file, in order.
    let status: Vec<&str> = stdout.lines().collect();
    assert_eq!(status, ["two.yaml: 2 errors", "good.yaml: ok", "one.yaml: 1 error"], "{stdout}");
    // Every error of every file, each at its line.
    for needle in ["two.yaml:5:14", "two.yaml:7:14", "nosuchboard", "one.yaml:5:14", "2 of 3 recipe files invalid"] {
        assert!(stderr.contains(needle), "{needle} missing:\n{stderr}");
    }
}

#[test]
fn recipe_paths_are_relative_to_the_recipe_folder_and_errors_say_where_they_looked() {
    // tiny.gguf and cal.txt are in the working directory; the recipe is in sub/.
    let dir = setup();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("cal.txt"), "the cat sat on the hat. ".repeat(200)).unwrap();
    std::fs::write(dir.path().join("sub/r.yaml"), "version: 1\nmodel: tiny.gguf\n").unwrap();
    let (code, _, stderr) = run(&["validate", "sub/r.yaml"], dir.path());
    assert_eq!(code, Some(2), "the working directory's tiny.gguf was used: {stderr}");
    let looked = std::fs::canonicalize(dir.path()).unwrap().join("sub").join("tiny.gguf");
    assert!(stderr.contains(&format!("looked for {}", looked.display())) && stderr.contains("exists relative to the working directory"), "{stderr}");
    std::fs::write(dir.path().join("sub/r.yaml"), "version: 1\nmodel: ../tiny.gguf\ncalibration: { dataset: cal.txt, samples: 2, seq_len: 16 }\n").unwrap();
    let (code, _, stderr) = run(&["validate", "sub/r.yaml"], dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    let looked = std::fs::canonicalize(dir.path()).unwrap().join("sub").join("cal.txt");
    assert!(stderr.contains(&format!("looked for {}", looked.display())) && stderr.contains("known dataset"), "{stderr}");
    std::fs::write(dir.path().join("sub/r.yaml"), "version: 1\nmodel: ../tiny.gguf\ncalibration: { dataset: ../cal.txt, samples: 2, seq_len: 16 }\n").unwrap();
    let (code, _, stderr) = run(&["validate", "sub/r.yaml"], "/".as_ref());
    assert_eq!(code, Some(2), "run from / with a relative recipe path that does not exist there: {stderr}");
    let (code, stdout, stderr) = run(&["validate", dir.path().join("sub/r.yaml").to_str().unwrap()], "/".as_ref());
    assert_eq!(code, Some(0), "the same recipe from another working directory: {stdout}{stderr}");
}

#[test]
fn shipped_recipes_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let recipes: Vec<String> = std::fs::read_dir(root.join("recipes"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(recipes.len() >= 3, "{recipes:?}");
    let mut args = vec!["validate"];
    args.extend(recipes.iter().map(String::as_str));
    let (code, stdout, stderr) = run(&args, &root);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[test]
fn good_recipe_on_a_tiny_model_runs_end_to_end() {
    let dir = setup();
    let text = format!(
        "{GOOD_HEAD}passes:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: 32\neval:\n  latency: {{ prompt_tokens: 8, gen_tokens: 4, repeats: 2 }}\ntargets:\n  - {{ format: gguf }}\n  - {{ format: safetensors }}\ngates:\n  max_size_bytes: 100000000\n"
    );
    std::fs::write(dir.path().join("r.yaml"), text).unwrap();
    let (code, stdout, stderr) = run(&["run", "r.yaml", "--out", "out", "--dry-run"], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("pass 0: quantize-rtn"), "{stdout}");
    let (code, stdout, stderr) = run(&["run", "r.yaml", "--out", "out", "--threads", "1"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["passes"][0]["name"], "quantize-rtn");
    assert!(report["model_after"]["bytes"].as_u64().unwrap() < report["model_before"]["bytes"].as_u64().unwrap());
    let lat = &report["metrics_after"]["latency"];
    let decode = lat["decode_tok_s"].as_f64().filter(|v| v.is_finite() && *v > 0.0);
    assert!(decode.is_some() && lat["decode_p95_ms"].as_f64() >= lat["decode_p50_ms"].as_f64(), "{lat}");
    // pp's mean rate and mean time come from the same repetitions (llama-bench's protocol): AM >= HM.
    let ratio = lat["prefill_tok_s"].as_f64().unwrap() * lat["ttft_ms"].as_f64().unwrap() / 1000.0 / 8.0;
    assert!((1.0 - 1e-9..10.0).contains(&ratio), "{lat}");
    assert_eq!(report["gates"]["passed"], true);
    assert!(dir.path().join("out/report.md").is_file());
    // The GGUF written loads back through our own reader with Q8_0 matrices.
    let g = edgeforge_core::load_model(&dir.path().join("out/r.gguf")).unwrap();
    assert_eq!(g.tensors["blk.0.ffn_up.weight"].format_name(), "Q8_0");
    // A gate that cannot hold fails the run with exit 1, naming the gate.
    let strict = std::fs::read_to_string(dir.path().join("r.yaml")).unwrap().replace("100000000", "1000");
    std::fs::write(dir.path().join("strict.yaml"), strict).unwrap();
    let (code, _, stderr) = run(&["run", "strict.yaml", "--out", "out2"], dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("max_size_bytes"), "{stderr}");
}

/// `--dry-run` uses this machine's measured throughput after a real run of the same kind of pass, says
/// when a time cap bounds distillation, and tells depth pruning from width pruning.
#[test]
fn dry_run_estimates_from_measured_runs_and_says_what_bounds_them() {
    let dir = setup();
    let store = dir.path().join("measured.json");
    let run = |args: &[&str]| {
        let o = Command::new(BIN).args(args).env("EDGEFORGE_MEASURED", &store).current_dir(dir.path()).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    std::fs::write(dir.path().join("q.yaml"), format!("{GOOD_HEAD}passes:\n  - {{ pass: quantize-rtn, bits: 8, group_size: 32 }}\n")).unwrap();
    let before = run(&["run", "q.yaml", "--out", "p", "--dry-run", "--threads", "2"]);
    assert!(before.contains("pass 0: quantize-rtn") && before.contains("built-in figure"), "{before}");
    run(&["run", "q.yaml", "--out", "real", "--threads", "1"]);
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    let measured = rec["passes"]["quantize-rtn"]["seconds"].as_f64().unwrap();
    assert_eq!(rec["passes"]["quantize-rtn"]["threads"], 1);
    let after = run(&["run", "q.yaml", "--out", "p", "--dry-run", "--threads", "2"]);
    let line = after.lines().find(|l| l.starts_with("pass 0: quantize-rtn")).unwrap();
    assert!(line.contains("measured here: quantize-rtn took"), "{after}");
    // Linear in 1/threads: the 1-thread measurement predicts half on 2 threads.
    let shown: f64 = line.split('~').nth(1).and_then(|x| x.split(' ').next()).and_then(|x| x.parse().ok()).unwrap();
    assert!((shown - measured / 2.0).abs() <= 0.01 * measured.max(1e-3) + 0.005, "{shown} vs {measured}/2: {line}");
    // Distillation bounded by its time cap says so; depth and width pruning are different kinds.
    std::fs::write(
        dir.path().join("d.yaml"),
        format!("{GOOD_HEAD}calibration: {{ dataset: cal.txt, samples: 4, seq_len: 32 }}\npasses:\n  - pass: prune\n    depth: {{ blocks: 1 }}\n  - pass: distill\n    steps: 100000\n    max_minutes: 1\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("cal.txt"), "the cat sat on the hat. ".repeat(200)).unwrap();
    let plan = run(&["run", "d.yaml", "--out", "p2", "--dry-run"]);
    assert!(plan.contains("stops at max_minutes = 1"), "{plan}");
    assert!(!plan.contains("measured here: prune"), "no prune of any kind was measured: {plan}");
}

/// The baseline cache is keyed by the build: the same binary reuses its "before" figures, a rebuilt one (same
/// version string, different code) measures them again.
#[test]
fn baseline_cache_is_keyed_by_the_build_not_just_the_version() {
    let dir = setup();
    let home = dir.path().join("home");
    std::fs::write(dir.path().join("r.yaml"), format!("{GOOD_HEAD}eval:\n  latency: {{ prompt_tokens: 4, gen_tokens: 2, repeats: 1 }}\n")).unwrap();
    let cached = || std::fs::read_dir(home.join(".cache/edgeforge/baselines")).map_or(0, Iterator::count);
    let run_with = |bin: &Path, out: &str| {
        let res = Command::new(bin).args(["run", "r.yaml", "--out", out, "--threads", "1"]).env("HOME", &home).current_dir(dir.path()).output().unwrap();
        assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    };
    run_with(Path::new(BIN), "a");
    assert_eq!(cached(), 1);
    run_with(Path::new(BIN), "b");
    assert_eq!(cached(), 1, "the same build reuses its baseline");
    // A different build of the same version: the binary with one more byte (ELF ignores trailing data).
    let rebuilt = dir.path().join("edgeforge-rebuilt");
    std::fs::copy(BIN, &rebuilt).unwrap();
    std::fs::OpenOptions::new().append(true).open(&rebuilt).and_then(|mut f| std::io::Write::write_all(&mut f, b"\0")).unwrap();
    run_with(&rebuilt, "c");
    assert_eq!(cached(), 2, "a rebuilt edgeforge reused the old build's baseline");
    let entry = std::fs::read_dir(home.join(".cache/edgeforge/baselines")).unwrap().next().unwrap().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
    assert_eq!(body["settings"]["build_sha256"].as_str().map(str::len), Some(64), "{}", body["settings"]);
}

/// A disk that fills while the checkpoint is written: the run fails with the I/O error in one line and leaves
/// no temporary file. The full disk is a file-size limit (RLIMIT_FSIZE via `ulimit -f`, SIGXFSZ ignored so
/// writes past it fail with EFBIG, "File too large"), which needs no privileges, unlike a small tmpfs.
#[test]
fn a_checkpoint_that_cannot_be_written_leaves_no_temporary_file() {
    let dir = setup();
    let home = dir.path().join("home");
    let recipe = format!("{GOOD_HEAD}passes:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: 32\n");
    std::fs::write(dir.path().join("r.yaml"), recipe).unwrap();
    // 16 blocks of 512 bytes (dash) or 1 KiB (bash): the tiny model's checkpoint is larger than either.
    let script = format!("trap '' XFSZ; ulimit -f 16 && exec {BIN} run r.yaml --out out --threads 1");
    let res = Command::new("sh").args(["-c", &script]).env("HOME", &home).current_dir(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("000-quantize-rtn.ckpt") && stderr.contains("File too large"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let left: Vec<String> = std::fs::read_dir(dir.path().join("out/checkpoints")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `--dry-run` estimates follow the run: twice the calibration tokens (samples or seq_len) is twice a
/// calibrated pass's time, twice the threads half of it; the basis is stated.
#[test]
fn dry_run_estimates_scale_with_threads_samples_and_seq_len() {
    let dir = setup();
    std::fs::write(dir.path().join("cal.txt"), "the cat sat on the mat. ".repeat(200)).unwrap();
    let seconds = |samples: u32, seq_len: u32, threads: &str| -> (f64, String) {
        let recipe = format!(
            "{GOOD_HEAD}calibration: {{ dataset: cal.txt, samples: {samples}, seq_len: {seq_len} }}\npasses:\n  - pass: awq\n    bits: 4\n    group_size: 32\n"
        );
        std::fs::write(dir.path().join("d.yaml"), recipe).unwrap();
        let (code, stdout, stderr) = run(&["run", "d.yaml", "--out", "out", "--dry-run", "--threads", threads], dir.path());
        assert_eq!(code, Some(0), "{stderr}");
        let line = stdout.lines().find(|l| l.starts_with("pass 0: awq")).unwrap_or_else(|| panic!("{stdout}"));
        let s = line.split('~').nth(1).and_then(|x| x.split(' ').next()).and_then(|x| x.parse::<f64>().ok());
        (s.unwrap_or_else(|| panic!("{line}")), stdout)
    };
    let (base, stdout) = seconds(8, 64, "2");
    assert!(base > 0.0, "{stdout}");
    assert!(stdout.contains("estimates, not measurements: 2 threads, calibration 8 samples x 64 seq_len = 512 tokens"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("total: ~")), "{stdout}");
    let close = |a: f64, b: f64| (a / b - 1.0).abs() < 0.02;
    let (more_samples, _) = seconds(16, 64, "2");
    let (longer, _) = seconds(8, 128, "2");
    let (fewer_threads, _) = seconds(8, 64, "1");
    assert!(close(more_samples, 2.0 * base) && close(longer, 2.0 * base), "{base} {more_samples} {longer}");
    assert!(close(fewer_threads, 2.0 * base), "{base} {fewer_threads}");
}

fn report_with(dir: &Path, name: &str, ppl: f64, decode: f64, bytes: u64) -> String {
    let base: serde_json::Value = serde_json::json!({
        "schema_version": 1, "edgeforge_version": "0.1.0", "recipe": null,
        "environment": {"git_describe": null, "cpu_model": "x", "cpu_features": [], "threads": 2, "os": "linux", "seed": 0},
        "model_before": {"path": "m", "sha256": "00", "params": 10, "bytes": bytes * 2, "bits_per_weight": 8.0, "by_kind": {}, "by_format": {}},
        "model_after": {"path": "m", "sha256": "11", "params": 10, "bytes": bytes, "bits_per_weight": 4.5, "by_kind": {}, "by_format": {}},
        "passes": [], "metrics_before": {"perplexity": null, "latency": null},
        "metrics_after": {
            "perplexity": {"perplexity": ppl, "ppl_stderr": 0.5, "ctx": 512, "chunks": 3, "tokens_scored": 765, "dataset": "wikitext-2-test", "dataset_sha256": "ab", "seconds": 1.0},
            "latency": {"prefill_tok_s": 300.0, "decode_tok_s": decode, "ttft_ms": 10.0, "decode_p50_ms": 20.0, "decode_p95_ms": 25.0, "peak_rss_bytes": 1, "threads": 2, "prompt_tokens": 128, "gen_tokens": 64, "repeats": 5}
        },
        "artifacts": [], "gates": null, "seconds_total": 1.0
    });
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(&base).unwrap()).unwrap();
    p.display().to_string()
}

#[test]
fn compare_exit_codes_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let base = report_with(dir.path(), "base.json", 20.0, 30.0, 1000);
    let good = report_with(dir.path(), "good.json", 20.5, 45.0, 900);
    let bad = report_with(dir.path(), "bad.json", 23.0, 31.0, 900);
    let (code, stdout, _) = run(&["compare", &base, &good, "--max-ppl-increase-pct", "5", "--min-decode-speedup", "1.4"], dir.path());
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("| perplexity | 20.0000 ± 0.5000 | 20.5000 ± 0.5000 | +2.50% |"), "{stdout}");
    assert!(stdout.contains("| decode tok/s | 30.0 | 45.0 | 1.50x |"), "{stdout}");
    assert!(stdout.contains("all gates hold"));
    let (code, stdout, stderr) = run(&["compare", &base, &bad, "--max-ppl-increase-pct", "5", "--min-decode-speedup", "1.4"], dir.path());
    assert_eq!(code, Some(1));
    assert!(stdout.contains("FAIL: perplexity rose 15.00%, 10.00 points over the +5% limit"), "{stdout}");
    assert!(stderr.contains("max_ppl_increase_pct") && stderr.contains("min_decode_speedup"), "{stderr}");
    let (code, stdout, _) = run(&["compare", &base, &bad, "--max-size-bytes", "950", "--format", "json"], dir.path());
    assert_eq!(code, Some(0));
    let c: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(c["passed"], true);
    // Bad input: a missing file, a file that is not a report, an unknown schema version.
    std::fs::write(dir.path().join("junk.json"), "{\"hello\": 1}").unwrap();
    std::fs::write(dir.path().join("v9.json"), "{\"schema_version\": 9}").unwrap();
    for other in ["missing.json", "junk.json", "v9.json"] {
        let (code, _, stderr) = run(&["compare", &base, other], dir.path());
        assert_eq!(code, Some(2), "{other}: {stderr}");
        assert!(stderr.contains(other), "{stderr}");
    }
}

#[test]
fn summarize_a_folder_of_reports() {
    let dir = tempfile::tempdir().unwrap();
    for (sub, ppl, size) in [("int8", 20.1, 140_000_000u64), ("int4", 23.0, 80_000_000), ("bad", 24.0, 90_000_000)] {
        let d = dir.path().join("runs").join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let p = report_with(&d, "report.json", ppl, 30.0, size);
        assert!(p.ends_with("report.json"));
    }
    let runs = dir.path().join("runs");
    let (code, stdout, stderr) = run(&["summarize", runs.to_str().unwrap()], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    let md = std::fs::read_to_string(runs.join("summary.md")).unwrap();
    assert_eq!(md, stdout.split("\nwrote").next().unwrap());
    assert!(md.starts_with("Perplexity: wikitext-2-test (sha256 ab…), ctx 512, 3 chunks."), "{md}");
    let rows: Vec<&str> = md.lines().skip_while(|l| !l.starts_with("| run |")).skip(2).collect();
    assert_eq!(rows.len(), 3, "{md}");
    // Sorted by size; int4 and int8 are on the Pareto front, `bad` (bigger and worse than int4) is not.
    assert!(rows[0].starts_with("| int4 |") && rows[0].ends_with("★ |"), "{md}");
    assert!(rows[1].starts_with("| bad |") && !rows[1].contains('★'), "{md}");
    assert!(rows[2].starts_with("| int8 |") && rows[2].ends_with("★ |"), "{md}");
    let csv = std::fs::read_to_string(runs.join("summary.csv")).unwrap();
    assert!(csv.starts_with("run,recipe,eval,perplexity,ppl_stderr,size_bytes,bits_per_weight,decode_tok_s,pareto"), "{csv}");
    let svg = std::fs::read_to_string(runs.join("summary.svg")).unwrap();
    // Three runs (each with its error bar and a tooltip), two legend entries, the setting in the title.
    assert_eq!(svg.matches("<circle").count(), 5, "{svg}");
    assert_eq!(svg.matches("class=\"error-bar\"").count(), 3, "{svg}");
    assert!(svg.contains("<title>int4: 23.0000 ± 0.5000</title>"), "{svg}");
    assert!(svg.contains("perplexity on wikitext-2-test (sha256 ab…), ctx 512, 3 chunks"), "{svg}");
    assert!(svg.contains("dominated by another run") && svg.contains("on the Pareto front"), "{svg}");
    assert!(svg.contains("<polyline"));
    let (code, _, stderr) = run(&["summarize", dir.path().join("nothing").to_str().unwrap()], dir.path());
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn summarize_finds_reports_under_any_name_and_says_when_settings_differ() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(runs.join("a")).unwrap();
    report_with(&runs.join("a"), "report.json", 20.0, 30.0, 1000);
    let saved = report_with(&runs, "baseline-int4.json", 21.0, 30.0, 900);
    // Measured on 25 chunks instead of 3: not comparable with the others.
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    v["metrics_after"]["perplexity"]["chunks"] = 25.into();
    std::fs::write(&saved, v.to_string()).unwrap();
    std::fs::write(runs.join("manifest.json"), "{\"schema_version\": 1, \"edgeforge_version\": \"0.1.0\", \"files\": []}").unwrap();
    let (code, stdout, stderr) = run(&["summarize", runs.to_str().unwrap()], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("| baseline-int4 |") && stdout.contains("| a |"), "a report not named report.json was left out:\n{stdout}");
    assert!(stdout.contains("measured perplexity in 2 different ways") && stdout.contains("ctx 512, 25 chunks"), "{stdout}");
    // Each is alone in its setting, so both are on their setting's front.
    assert_eq!(stdout.matches('★').count(), 2, "{stdout}");
    let svg = std::fs::read_to_string(runs.join("summary.svg")).unwrap();
    assert!(svg.contains("perplexity measured 2 ways"), "{svg}");
}

#[test]
fn compare_refuses_reports_measured_differently() {
    let dir = tempfile::tempdir().unwrap();
    let a = report_with(dir.path(), "a.json", 20.0, 30.0, 1000);
    let b = report_with(dir.path(), "b.json", 20.0, 30.0, 1000);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&b).unwrap()).unwrap();
    v["metrics_after"]["perplexity"]["chunks"] = 25.into();
    std::fs::write(&b, v.to_string()).unwrap();
    let (code, _, stderr) = run(&["compare", &a, &b, "--no-gates"], dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("measured perplexity differently"), "{stderr}");
}

/// A report whose recorded recipe has a `gates` block.
fn with_recipe_gates(path: &str, gates: &str) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let text = format!("version: 1\nmodel: m.gguf\ngates:\n{gates}");
    v["recipe"] = serde_json::json!({ "path": "r.yaml", "sha256": "00", "text": text });
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn compare_without_gates_checks_the_recorded_ones_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let base = report_with(dir.path(), "base.json", 20.0, 30.0, 1000);
    let worse = report_with(dir.path(), "worse.json", 22.0, 30.0, 1000);
    // No gate anywhere: a CI step that forgot its flags does not stay green.
    let (code, stdout, stderr) = run(&["compare", &base, &worse], dir.path());
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("no gates checked") && stderr.contains("--no-gates"), "{stderr}");
    assert!(!stdout.contains("all gates hold"), "{stdout}");
    // --no-gates prints the table and says nothing was checked.
    let (code, stdout, stderr) = run(&["compare", &base, &worse, "--no-gates"], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("no gates checked") && !stdout.contains("all gates hold"), "{stdout}");
    // Both reports' recipes have gates: the new report's apply (perplexity +10% > +5%).
    with_recipe_gates(&base, "  max_ppl_increase_pct: 5\n");
    with_recipe_gates(&worse, "  max_ppl_increase_pct: 5\n");
    let (code, stdout, stderr) = run(&["compare", &base, &worse], dir.path());
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("gates from the `gates` block recorded in") && stdout.contains("perplexity rose 10.00%"), "{stdout}{stderr}");
    // Flags take precedence over the recorded gates.
    let (code, _, stderr) = run(&["compare", &base, &worse, "--max-ppl-increase-pct", "15"], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_size_gate_checks_the_shipped_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let base = report_with(dir.path(), "base.json", 20.0, 30.0, 1000);
    let new = report_with(dir.path(), "new.json", 20.0, 30.0, 86_623_488);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&new).unwrap()).unwrap();
    v["artifacts"] = serde_json::json!([{ "path": "q.gguf", "format": "gguf", "profile": null, "bytes": 91_726_144u64, "sha256": "00" }]);
    std::fs::write(&new, v.to_string()).unwrap();
    let (code, stdout, stderr) = run(&["compare", &base, &new, "--max-size-bytes", "90000000"], dir.path());
    assert_eq!(code, Some(1), "the 91.7 MB GGUF passed a 90 MB gate:\n{stdout}{stderr}");
    assert!(stdout.contains("gguf artifact q.gguf: 91726144 bytes is 1726144 over"), "{stdout}");
    let (code, _, stderr) = run(&["compare", &base, &new, "--max-size-bytes", "92000000"], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    // --help says what each gate measures and in which unit.
    let (_, help, _) = run(&["compare", "--help"], dir.path());
    for needle in ["PERCENT", "RATIO", "BYTES", "artifact", "--no-gates", "Examples:"] {
        assert!(help.contains(needle), "compare --help lacks {needle}:\n{help}");
    }
}

/// recipes/recipe.schema.json is generated by `edgeforge schema`; a change to the recipe types must regenerate it.
#[test]
fn committed_json_schema_matches_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (code, stdout, _) = run(&["schema"], &root);
    assert_eq!(code, Some(0));
    let committed = std::fs::read_to_string(root.join("recipes/recipe.schema.json")).unwrap();
    assert_eq!(stdout, committed, "regenerate with: edgeforge schema > recipes/recipe.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(schema["additionalProperties"], false, "unknown top-level keys must be refused");
    assert!(stdout.contains("\"quantize-rtn\""));
}

#[test]
fn gptq_recipe_on_a_tiny_model_quantizes_every_linear_block_by_block() {
    let dir = setup();
    let text: String = (0..400).map(|i| format!("the cat {i} sat on the mat = {} ", i * 7)).collect();
    std::fs::write(dir.path().join("cal.txt"), &text).unwrap();
    let recipe = format!(
        "{GOOD_HEAD}calibration: {{ dataset: cal.txt, samples: 4, seq_len: 32, seed: 3 }}\npasses:\n  - pass: gptq\n    bits: 4\n    group_size: 32\n    block_size: 16\ntargets:\n  - {{ format: gguf }}\n"
    );
    std::fs::write(dir.path().join("g.yaml"), recipe).unwrap();
    let (code, stdout, stderr) = run(&["run", "g.yaml", "--out", "out"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let changed = report["passes"][0]["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 2 * 7, "every linear of both blocks");
    // Rows of 32 (n_embd) make a group of 32 one scale per row: "per-channel"; ffn_down rows of 64 keep g32.
    assert!(changed.iter().all(|c| c["to"] == "int4-g32-sym" || c["to"] == "int4-per-channel-sym"), "{changed:?}");
    assert!(changed.iter().any(|c| c["to"] == "int4-g32-sym"));
    let g = edgeforge_core::load_model(&dir.path().join("out/g.gguf")).unwrap();
    assert_eq!(g.tensors["blk.1.ffn_down.weight"].format_name(), "Q4_0");
    // Without a calibration section the recipe is refused before anything runs.
    let no_cal = "version: 1\nmodel: tiny.gguf\npasses:\n  - pass: gptq\n    bits: 4\n    group_size: 32\n";
    std::fs::write(dir.path().join("n.yaml"), no_cal).unwrap();
    let (code, _, stderr) = run(&["validate", "n.yaml"], dir.path());
    assert_eq!(code, Some(2));
    assert!(stderr.contains("n.yaml:4:5") && stderr.contains("needs calibration data"), "{stderr}");
}

#[test]
fn mixed_precision_overrides_and_kld_eval_on_a_tiny_model() {
    let dir = setup();
    let text: String = (0..400).map(|i| format!("the cat {i} sat on the mat = {} ", i * 7)).collect();
    std::fs::write(dir.path().join("cal.txt"), &text).unwrap();
    let recipe = format!(
        "{GOOD_HEAD}calibration: {{ dataset: cal.txt, samples: 4, seq_len: 32, seed: 3 }}\npasses:\n  - pass: gptq\n    bits: 4\n    group_size: 32\n    act_order: true\n    overrides:\n      - {{ tensors: \"blk.1.*\", bits: 8 }}\n      - {{ tensors: \"*.ffn_down.weight\", bits: 3, symmetric: false }}\neval:\n  kld: {{ dataset: cal.txt, ctx: 32, chunks: 3 }}\ntargets:\n  - {{ format: gguf }}\n"
    );
    std::fs::write(dir.path().join("m.yaml"), recipe).unwrap();
    let (code, stdout, stderr) = run(&["run", "m.yaml", "--out", "out"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let changed = report["passes"][0]["changed"].as_array().unwrap();
    let to = |name: &str| changed.iter().find(|c| c["tensor"] == name).map(|c| c["to"].as_str().unwrap().to_owned()).unwrap();
    // First matching rule wins: block 1 is all 8-bit, block 0's down projection 3-bit asymmetric, the rest 4-bit.
    assert_eq!(to("blk.1.ffn_down.weight"), "int8-g32-sym");
    assert_eq!(to("blk.1.attn_q.weight"), "int8-per-channel-sym");
    assert_eq!(to("blk.0.ffn_down.weight"), "int3-g32-asym");
    assert_eq!(to("blk.0.ffn_up.weight"), "int4-per-channel-sym");
    let kld = &report["metrics_after"]["kld"];
    assert!(kld["mean_kld"].as_f64().unwrap() > 0.0, "{kld}");
    let top1 = kld["top1_agreement_frac"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&top1), "{kld}");
    assert_eq!(kld["positions"], 3 * 15);
    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(md.contains("KL divergence from the input"), "{md}");
    // 3-bit has no GGUF block type: written as F16, with a note; 8-bit maps to Q8_0.
    let g = edgeforge_core::load_model(&dir.path().join("out/m.gguf")).unwrap();
    assert_eq!(g.tensors["blk.0.ffn_down.weight"].format_name(), "F16");
    assert_eq!(g.tensors["blk.1.ffn_down.weight"].format_name(), "Q8_0");
    assert!(report["passes"][0]["notes"].to_string().contains("written as F16"), "{}", report["passes"][0]["notes"]);
}

#[test]
fn awq_folding_keeps_the_function_and_composes_with_gptq() {
    let dir = setup();
    let text: String = (0..400).map(|i| format!("the cat {i} sat on the mat = {} ", i * 7)).collect();
    std::fs::write(dir.path().join("cal.txt"), &text).unwrap();
    let head = format!("{GOOD_HEAD}calibration: {{ dataset: cal.txt, samples: 4, seq_len: 32, seed: 3 }}\n");
    let eval = "eval:\n  perplexity: { dataset: cal.txt, ctx: 32, chunks: 4 }\n  kld: { dataset: cal.txt, ctx: 32, chunks: 4 }\n";
    // Scales only (no rounding, no clipping): the folded model computes the same function.
    let fold_only = format!("{head}passes:\n  - pass: awq\n    bits: 4\n    group_size: 32\n    clip: false\n    quantize: false\n{eval}");
    std::fs::write(dir.path().join("fold.yaml"), fold_only).unwrap();
    let (code, stdout, stderr) = run(&["run", "fold.yaml", "--out", "fold"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("fold/report.json")).unwrap()).unwrap();
    let ppl = |side: &str| report[side]["perplexity"]["perplexity"].as_f64().unwrap();
    assert!((ppl("metrics_before") / ppl("metrics_after") - 1.0).abs() < 1e-4, "{} vs {}", ppl("metrics_before"), ppl("metrics_after"));
    assert!(report["metrics_after"]["kld"]["mean_kld"].as_f64().unwrap() < 1e-6, "{}", report["metrics_after"]["kld"]);
    let notes = report["passes"][0]["notes"].to_string();
    assert!(notes.contains("alpha") && notes.contains("attn_v->attn_output"), "{notes}");
    // AWQ scales, then GPTQ rounding; and AWQ rounding on its own.
    for (name, passes) in [
        ("awq-gptq", "  - pass: awq\n    bits: 4\n    group_size: 32\n    quantize: false\n  - pass: gptq\n    bits: 4\n    group_size: 32\n"),
        ("awq", "  - pass: awq\n    bits: 4\n    group_size: 32\n"),
    ] {
        std::fs::write(dir.path().join(format!("{name}.yaml")), format!("{head}passes:\n{passes}{eval}targets:\n  - {{ format: gguf }}\n")).unwrap();
        let (code, stdout, stderr) = run(&["run", &format!("{name}.yaml"), "--out", name], dir.path());
        assert_eq!(code, Some(0), "{name}: {stdout}{stderr}");
        let g = edgeforge_core::load_model(&dir.path().join(format!("{name}/{name}.gguf"))).unwrap();
        assert_eq!(g.tensors["blk.1.ffn_down.weight"].format_name(), "Q4_0", "{name}");
    }
    // Rounding twice is refused: GPTQ needs float weights.
    let twice = format!("{head}passes:\n  - pass: awq\n    bits: 4\n    group_size: 32\n  - pass: gptq\n    bits: 4\n    group_size: 32\n");
    std::fs::write(dir.path().join("twice.yaml"), twice).unwrap();
    let (code, _, stderr) = run(&["validate", "twice.yaml"], dir.path());
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn prune_reconstruct_distill_quantize_on_a_tiny_model_writes_a_gguf_that_loads() {
    let dir = setup();
    let text: String = (0..400).map(|i| format!("the cat {i} sat on the mat = {} ", i * 7)).collect();
    std::fs::write(dir.path().join("cal.txt"), &text).unwrap();
    let recipe = format!(
        "{GOOD_HEAD}calibration: {{ dataset: cal.txt, samples: 6, seq_len: 32, seed: 3 }}\npasses:\n  - pass: prune\n    mlp: {{ ratio: 0.5, criterion: wanda, keep_multiple: 16 }}\n    depth: {{ blocks: 1 }}\n  - pass: reconstruct\n    target: stream\n    all_blocks: true\n  - pass: distill\n    steps: 3\n    batch_size: 2\n    lr: 0.001\n  - pass: gptq\n    bits: 8\n    group_size: per-channel\neval:\n  perplexity: {{ dataset: cal.txt, ctx: 32, chunks: 2, after_each_pass: true }}\ntargets:\n  - {{ format: gguf }}\n"
    );
    std::fs::write(dir.path().join("p.yaml"), recipe).unwrap();
    let (code, stdout, stderr) = run(&["run", "p.yaml", "--out", "out"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let names: Vec<&str> = report["passes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["prune", "reconstruct", "distill", "gptq"]);
    // after_each_pass: a perplexity after every pass, each a different model; the last one is the result's.
    let ppl = |v: &serde_json::Value| v["perplexity"].as_f64().unwrap();
    let after: Vec<f64> = report["passes"].as_array().unwrap().iter().map(|p| ppl(&p["perplexity_after"])).collect();
    let before = ppl(&report["metrics_before"]["perplexity"]);
    assert!(after.iter().all(|p| p.is_finite() && *p != before), "{after:?} vs {before}");
    assert!(after.windows(2).all(|w| w[0] != w[1]), "{after:?}");
    assert_eq!(after[3], ppl(&report["metrics_after"]["perplexity"]));
    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    let row = md.lines().find(|l| l.starts_with("| after pass 1: prune | perplexity (")).unwrap_or_else(|| panic!("{md}"));
    assert!(row.contains(&format!("| {:.4} ±", after[0])), "{row}");
    assert!(report["model_after"]["params"].as_u64() < report["model_before"]["params"].as_u64(), "{}", report["model_after"]);
    let g = edgeforge_core::load_model(&dir.path().join("out/p.gguf")).unwrap();
    assert_eq!((g.config.n_layers, g.config.n_ff), (1, 32), "one block of two left, 64 → 32 channels");
    assert_eq!(g.tensors["blk.0.ffn_down.weight"].format_name(), "Q8_0");
}

#[test]
fn targets_are_fit_checked_refused_with_the_fix_and_verified_by_manifest() {
    let dir = setup();
    std::fs::write(
        dir.path().join("tiny-board.yaml"),
        "name: tiny-board\ndescription: a board with 1 kB for the model\nkind: board\nformats: [gguf]\nweight_bits: [4, 8, 16, 32]\nmemory: { ram_bytes: 4096, budget_bytes: 1000 }\nbandwidth_gb_s: 1.0\n",
    )
    .unwrap();
    let recipe = format!("{GOOD_HEAD}targets:\n  - {{ format: gguf, profile: raspberry-pi-5 }}\n  - {{ format: gguf, profile: tiny-board.yaml }}\n");
    std::fs::write(dir.path().join("t.yaml"), recipe).unwrap();
    std::process::Command::new(BIN).args(["keygen", "--out", "keys", "--name", "k"]).current_dir(dir.path()).output().unwrap();
    let (code, stdout, stderr) = run(&["run", "t.yaml", "--out", "out", "--sign-key", "keys/k.key"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0]["fits"], true);
    assert!(targets[0]["decode_tok_s_estimate"].as_f64().unwrap() > 0.0);
    assert_eq!(targets[1]["fits"], false);
    let short = targets[1]["shortfalls"][0].as_str().unwrap();
    assert!(short.contains("tiny-board allows 0.0 MB"), "{short}");
    assert!(!targets[1]["suggestions"].as_array().unwrap().is_empty());
    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(md.contains("**refused**") && md.contains("roofline estimate"), "{md}");
    assert_eq!(report["artifacts"].as_array().unwrap().len(), 1, "the refused target writes nothing");

    let (code, out, err) = run(&["verify", "out", "--public-key", "keys/k.pub"], dir.path());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1 files match manifest.json, signature valid"), "{out}");
    let gguf = dir.path().join("out/t.gguf");
    let mut bytes = std::fs::read(&gguf).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&gguf, &bytes).unwrap();
    let (code, out, _) = run(&["verify", "out"], dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("MISMATCH t.gguf: sha256"), "{out}");
    bytes[last] ^= 0x80;
    std::fs::write(&gguf, &bytes).unwrap();
    let manifest = dir.path().join("out/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("\"edgeforge_version\"", "\"edgeforge_version\" ");
    std::fs::write(&manifest, text).unwrap();
    let (code, out, _) = run(&["verify", "out", "--public-key", "keys/k.pub"], dir.path());
    assert_eq!(code, Some(1), "a manifest edited after signing must fail: {out}");
    assert!(out.contains("MISMATCH manifest.sig"), "{out}");
}

#[test]
fn a_c_bundle_target_for_an_mcu_profile_is_written_and_listed_in_the_manifest() {
    let dir = setup();
    let recipe = format!("{GOOD_HEAD}passes:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: per-channel\n    ignore: []\ntargets:\n  - {{ format: c-bundle, profile: stm32h7, context: 128 }}\n");
    std::fs::write(dir.path().join("m.yaml"), recipe).unwrap();
    let (code, stdout, stderr) = run(&["run", "m.yaml", "--out", "out"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let mcu = ["mcu/startup.c", "mcu/semihost.c", "mcu/semihost.h", "mcu/mcu_main.c", "mcu/mps2_an500.ld"];
    for f in ["edgeforge_model.c", "edgeforge_model.h", "model_weights.c", "model_config.h", "main.c", "Makefile", "README.md"].into_iter().chain(mcu) {
        assert!(dir.path().join("out/m-c").join(f).is_file(), "{f}");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["targets"][0]["fits"], true, "{}", report["targets"]);
    let (code, out, err) = run(&["verify", "out"], dir.path());
    assert_eq!(code, Some(0), "{out}{err}");
    // The 7 host files and the 5 of `mcu/` (subfolders are listed too).
    assert!(out.contains("12 files match manifest.json"), "{out}");
    verify_catches_a_flipped_byte(dir.path(), "m-c/model_weights.c");
}

/// Two C bundle targets write two folders, named after their profiles, and the digest covers `mcu/`.
#[test]
fn two_c_bundle_targets_write_one_folder_per_profile() {
    let dir = setup();
    let recipe = format!("{GOOD_HEAD}passes:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: per-channel\n    ignore: []\ntargets:\n  - {{ format: c-bundle, profile: stm32h7, context: 64 }}\n  - {{ format: c-bundle, profile: esp32-s3, context: 64 }}\n");
    std::fs::write(dir.path().join("m.yaml"), recipe).unwrap();
    let (code, stdout, stderr) = run(&["run", "m.yaml", "--out", "out"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for p in ["stm32h7", "esp32-s3"] {
        assert!(dir.path().join(format!("out/m-c-{p}/mcu/startup.c")).is_file(), "{p}");
    }
    let (code, out, err) = run(&["verify", "out"], dir.path());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("24 files match manifest.json"), "{out}");
}

/// The fit after export counts the weight bytes the exporter wrote, not the artifact's bytes (the C bundle's
/// source text is several times its weights): a device whose flash holds the weights but not the text keeps
/// the "fits" the check before writing gave.
#[test]
fn the_fit_after_export_uses_the_exported_weight_bytes_not_the_artifact_size() {
    let dir = setup();
    let head = format!("{GOOD_HEAD}passes:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: per-channel\n    ignore: []\ntargets:\n");
    std::fs::write(dir.path().join("a.yaml"), format!("{head}  - {{ format: c-bundle, profile: stm32h7, context: 128 }}\n")).unwrap();
    let (code, stdout, stderr) = run(&["run", "a.yaml", "--out", "a"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("a/report.json")).unwrap()).unwrap();
    let artifact = report["targets"][0]["artifact_bytes"].as_u64().unwrap();
    // Flash for the weights, not for the C text.
    let profile = format!(
        "name: tight\ndescription: flash between the weight bytes and the artifact's\nkind: mcu\nformats: [c-bundle]\nweight_bits: [4, 8]\nmemory:\n  flash_bytes: {}\n  sram_bytes: 1048576\n  psram_bytes: 0\n",
        artifact - 1
    );
    std::fs::write(dir.path().join("tight.yaml"), profile).unwrap();
    std::fs::write(dir.path().join("b.yaml"), format!("{head}  - {{ format: c-bundle, profile: tight.yaml, context: 128 }}\n")).unwrap();
    let (code, stdout, stderr) = run(&["run", "b.yaml", "--out", "b"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("b/report.json")).unwrap()).unwrap();
    let fit = &report["targets"][0];
    assert_eq!(fit["fits"], true, "{fit}");
    assert_eq!(fit["artifact_bytes"].as_u64(), Some(artifact), "{fit}");
    assert!(dir.path().join("b/b-c/model_weights.c").is_file());
    let weights = fit["weight_bytes"].as_u64().unwrap_or(0);
    assert!(weights > 0 && weights < artifact / 2, "weights {weights}, artifact {artifact}");
}

/// `edgeforge verify` must fail on one flipped bit in `file` (a path under `out/`), naming it, and pass again
/// once the byte is restored.
fn verify_catches_a_flipped_byte(dir: &Path, file: &str) {
    let path = dir.join("out").join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let (code, out, _) = run(&["verify", "out"], dir);
    assert_eq!(code, Some(1), "{file}: {out}");
    assert!(out.contains(&format!("MISMATCH {file}")), "{out}");
    bytes[mid] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let (code, out, _) = run(&["verify", "out"], dir);
    assert_eq!(code, Some(0), "{file} restored: {out}");
}

#[test]
fn a_nir_target_is_written_for_loihi2_read_by_nir_and_refused_for_akida_at_8_bits() {
    let dir = setup();
    let recipe = format!("{GOOD_HEAD}passes:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: per-channel\ntargets:\n  - {{ format: nir, profile: loihi2 }}\n  - {{ format: nir, profile: akida }}\n");
    std::fs::write(dir.path().join("n.yaml"), recipe).unwrap();
    let (code, stdout, stderr) = run(&["run", "n.yaml", "--out", "out"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // Two NIR targets: each folder carries its profile's name.
    let nir_dir = dir.path().join("out/n-nir-loihi2");
    assert!(nir_dir.join("model.nir").is_file() && nir_dir.join("partition.json").is_file());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets[0]["fits"], true, "{}", report["targets"]);
    assert!(targets[0]["energy_per_token_uj_estimate"].as_f64().unwrap() > 0.0);
    let notes = targets[0]["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect::<Vec<_>>().join("\n");
    assert!(notes.contains("NIR energy per token: estimate") && notes.contains("T=256"), "{notes}");
    assert_eq!(targets[1]["fits"], false);
    assert!(targets[1]["suggestions"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().contains("quantize to 4 bits")), "{}", targets[1]);
    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(md.contains("note: NIR"), "{md}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/check_nir.py");
    let out = Command::new("python3").arg(script).arg(&nir_dir).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (code, out, err) = run(&["verify", "out"], dir.path());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2 files match manifest.json"), "{out}");
    verify_catches_a_flipped_byte(dir.path(), "n-nir-loihi2/model.nir");
}

#[test]
fn an_onnx_target_for_a_phone_profile_is_written_and_listed_in_the_manifest() {
    let dir = setup();
    let recipe = format!("{GOOD_HEAD}passes:\n  - pass: quantize-rtn\n    bits: 4\n    group_size: 32\n    ignore: []\ntargets:\n  - {{ format: onnx, profile: android-phone, context: 256 }}\n");
    std::fs::write(dir.path().join("m.yaml"), recipe).unwrap();
    let (code, stdout, stderr) = run(&["run", "m.yaml", "--out", "out"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for f in ["model.onnx", "genai_config.json", "tokenizer.json"] {
        assert!(dir.path().join("out/m-onnx").join(f).is_file(), "{f}");
    }
    let genai: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/m-onnx/genai_config.json")).unwrap()).unwrap();
    assert_eq!(genai["search"]["max_length"], 256, "RoPE tables and genai's max_length follow the target's context");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["targets"][0]["fits"], true, "{}", report["targets"]);
    let (code, out, err) = run(&["verify", "out"], dir.path());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("files match manifest.json"), "{out}");
    verify_catches_a_flipped_byte(dir.path(), "m-onnx/model.onnx");
}

#[test]
fn activation_swap_then_distill_then_nir_on_a_tiny_model() {
    let dir = setup();
    let text: String = (0..400).map(|i| format!("the cat {i} sat on the mat = {} ", i * 7)).collect();
    std::fs::write(dir.path().join("cal.txt"), &text).unwrap();
    let recipe = format!(
        "{GOOD_HEAD}calibration: {{ dataset: cal.txt, samples: 6, seq_len: 32, seed: 3 }}\npasses:\n  - pass: activation-swap\n    to: relu\n  - pass: distill\n    steps: 3\n    batch_size: 2\n    lr: 0.001\n  - pass: quantize-rtn\n    bits: 8\n    group_size: per-channel\neval:\n  perplexity: {{ dataset: cal.txt, ctx: 32, chunks: 2 }}\ntargets:\n  - {{ format: nir, profile: loihi2 }}\n  - {{ format: safetensors }}\n"
    );
    std::fs::write(dir.path().join("s.yaml"), &recipe).unwrap();
    let (code, stdout, stderr) = run(&["validate", "s.yaml"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, stdout, stderr) = run(&["run", "s.yaml", "--out", "out"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap()).unwrap();
    let passes = report["passes"].as_array().unwrap();
    let names: Vec<&str> = passes.iter().map(|p| p["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["activation-swap", "distill", "quantize-rtn"]);
    let swap_notes = passes[0]["notes"].to_string();
    assert!(swap_notes.contains("silu → relu") && swap_notes.contains("no weights changed") && swap_notes.contains("distill"), "{swap_notes}");
    let partition: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/s-nir/partition.json")).unwrap()).unwrap();
    assert_eq!(partition["model_activation"], "relu");
    assert!(partition["activation_assumption"].as_str().unwrap().contains("own activation"));
    // What was exported is what was simulated: the IF neurons' threshold and reset, calibrated on the
    // model's real MLP inputs from the calibration text, and the energy estimate's spike rate measured there.
    let sim = &partition["simulation"];
    assert!(sim["inputs"].as_str().unwrap().contains("real activations: cal.txt"), "{sim}");
    let gate = &partition["blocks"][0]["chip"][4]["activation"];
    assert_eq!(gate["v_threshold"], sim["threshold"]);
    assert_eq!(gate["v_reset"], 0.0);
    assert_eq!(gate["input_scale"], sim["input_scale"]);
    let energy = &partition["energy_estimate"];
    let rate = energy["input_spike_rate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate < 1.0 && (rate - 0.1).abs() > 1e-9, "{energy}");
    assert!(energy["input_spike_rate_source"].as_str().unwrap().starts_with("measured") && energy["label"].as_str().unwrap().contains("cal.txt"), "{energy}");
    let hf = edgeforge_core::load_model(&dir.path().join("out/s-hf")).unwrap();
    assert_eq!(hf.config.activation, edgeforge_core::Activation::Relu);

    // Resumed from the checkpoints (which carry the config), the model is still ReLU.
    let (code, stdout, stderr) = run(&["run", "s.yaml", "--out", "out", "--resume"], dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/s-nir/partition.json")).unwrap()).unwrap();
    assert_eq!(again["model_activation"], "relu");
}

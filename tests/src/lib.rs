//! Support for edgeforge's integration tests: tiny llama models written as real GGUF files, and the
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failures should stop the test
//! location of the reference model and evaluation texts.

use std::path::{Path, PathBuf};

use edgeforge_core::gguf::{MetaArray, MetaValue};
use edgeforge_core::GgmlType;
use edgeforge_export::gguf::{GgufTensor, GgufWriter};

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The reference model: `$EDGEFORGE_TEST_MODEL`, else fetched (or found cached) by scripts/fetch-model.sh.
pub fn reference_model() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEFORGE_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let script = repo_root().join("scripts/fetch-model.sh");
    let out = std::process::Command::new("bash").arg(&script).output().expect("run scripts/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A folder holding the shared evaluation texts (`shared/data` beside the repository).
pub fn shared_data() -> PathBuf {
    let d = repo_root().parent().map(|p| p.join("shared/data")).unwrap_or_default();
    assert!(d.is_dir(), "{} not found: the tests expect ../shared/data beside the repository", d.display());
    d
}

/// SplitMix64: deterministic test data without a rand dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-scale, scale).
    pub fn uniform(&mut self, scale: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (u * 2.0 - 1.0) * scale
    }
}

/// GPT-2's byte → printable-character map used by byte-level BPE vocabularies.
pub fn byte_level_alphabet() -> Vec<String> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut map = vec![0u32; 256];
    for &b in &printable {
        map[b as usize] = b;
    }
    let mut next = 256;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            map[b as usize] = next;
            next += 1;
        }
    }
    printable.clear();
    map.iter().map(|&c| char::from_u32(c).map(String::from).unwrap_or_default()).collect()
}

/// Shape of a tiny test model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub n_embd: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub n_ff: usize,
    pub tied: bool,
    pub seed: u64,
    /// Store matrices as F16 instead of F32.
    pub f16: bool,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self { n_embd: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 48, tied: true, seed: 7, f16: false }
    }
}

/// Token strings and merges of the tiny vocabulary: 2 control tokens, 256 byte symbols, a few merges.
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens = vec!["<|endoftext|>".to_owned(), "<|im_start|>".to_owned()];
    let mut types = vec![3, 3];
    for s in byte_level_alphabet() {
        tokens.push(s);
        types.push(1);
    }
    let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ =", "o n"].iter().map(|s| (*s).to_owned()).collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (tokens, types, merges)
}

/// A complete tiny llama model as GGUF bytes, with tokenizer metadata a real loader accepts.
pub fn tiny_gguf(spec: &TinySpec) -> GgufWriter {
    let (tokens, types, merges) = tiny_vocab();
    let vocab = tokens.len();
    let head_dim = spec.n_embd / spec.n_heads;
    let mut w = GgufWriter::new();
    let s = |x: &str| MetaValue::Str(x.to_owned());
    w.meta("general.architecture", s("llama"))
        .meta("general.name", s("edgeforge tiny test model"))
        .meta("llama.context_length", MetaValue::U32(256))
        .meta("llama.embedding_length", MetaValue::U32(spec.n_embd as u32))
        .meta("llama.block_count", MetaValue::U32(spec.n_layers as u32))
        .meta("llama.feed_forward_length", MetaValue::U32(spec.n_ff as u32))
        .meta("llama.attention.head_count", MetaValue::U32(spec.n_heads as u32))
        .meta("llama.attention.head_count_kv", MetaValue::U32(spec.n_kv_heads as u32))
        .meta("llama.rope.freq_base", MetaValue::F32(10_000.0))
        .meta("llama.rope.dimension_count", MetaValue::U32(head_dim as u32))
        .meta("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5))
        .meta("tokenizer.ggml.model", s("gpt2"))
        .meta("tokenizer.ggml.pre", s("smollm"))
        .meta("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::Str(tokens)))
        .meta("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(types)))
        .meta("tokenizer.ggml.merges", MetaValue::Array(MetaArray::Str(merges)))
        .meta("tokenizer.ggml.bos_token_id", MetaValue::U32(0))
        .meta("tokenizer.ggml.eos_token_id", MetaValue::U32(0))
        .meta("tokenizer.ggml.add_bos_token", MetaValue::Bool(false));
    let mut rng = Rng::new(spec.seed);
    let mut add = |w: &mut GgufWriter, name: String, shape: Vec<usize>, norm: bool| {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| if norm { 1.0 + rng.uniform(0.2) } else { rng.uniform(0.3) }).collect();
        let (dtype, bytes) = if spec.f16 && !norm {
            (GgmlType::F16, vals.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect())
        } else {
            (GgmlType::F32, vals.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        w.tensor(GgufTensor { name, shape, dtype, bytes });
    };
    let (e, q, kv, ff) = (spec.n_embd, spec.n_heads * head_dim, spec.n_kv_heads * head_dim, spec.n_ff);
    add(&mut w, "token_embd.weight".into(), vec![vocab, e], false);
    for l in 0..spec.n_layers {
        add(&mut w, format!("blk.{l}.attn_norm.weight"), vec![e], true);
        add(&mut w, format!("blk.{l}.attn_q.weight"), vec![q, e], false);
        add(&mut w, format!("blk.{l}.attn_k.weight"), vec![kv, e], false);
        add(&mut w, format!("blk.{l}.attn_v.weight"), vec![kv, e], false);
        add(&mut w, format!("blk.{l}.attn_output.weight"), vec![e, q], false);
        add(&mut w, format!("blk.{l}.ffn_norm.weight"), vec![e], true);
        add(&mut w, format!("blk.{l}.ffn_gate.weight"), vec![ff, e], false);
        add(&mut w, format!("blk.{l}.ffn_up.weight"), vec![ff, e], false);
        add(&mut w, format!("blk.{l}.ffn_down.weight"), vec![e, ff], false);
    }
    add(&mut w, "output_norm.weight".into(), vec![e], true);
    if !spec.tied {
        add(&mut w, "output.weight".into(), vec![vocab, e], false);
    }
    w
}

/// Write the tiny model to `dir/name` and return its path.
pub fn write_tiny_gguf(dir: &Path, name: &str, spec: &TinySpec) -> PathBuf {
    let p = dir.join(name);
    tiny_gguf(spec).write(&p).expect("write tiny gguf");
    p
}

/// Quantize `model` in place with round to nearest; `options` is the recipe's `quantize-rtn` block as JSON.
pub fn quantize_rtn(model: &mut edgeforge_core::Model, options: serde_json::Value) {
    use edgeforge_core::pass::{Pass, PassContext};
    let o: edgeforge_quant::RtnOptions = serde_json::from_value(options).unwrap();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let cx = PassContext { seed: 0, calibration: None, progress: &|_, _| {}, status: &|_| {}, cancel: &cancel, original: None, work_dir: None };
    edgeforge_quant::QuantizeRtn::new(o).run(model, &cx).unwrap();
}

/// Our runtime's logits for every position of `prompt`, `[prompt.len(), vocab]`: what exporters are checked against.
pub fn runtime_logits(model: &edgeforge_core::Model, prompt: &[u32]) -> Vec<f32> {
    let rt = edgeforge_runtime::LlamaRuntime::new(edgeforge_runtime::weights_from_model(model).unwrap()).unwrap();
    let mut cache = rt.new_cache(prompt.len());
    rt.forward(&mut cache, prompt, 0).unwrap()
}

/// onnxruntime's logits for `prompt` from an exported ONNX folder, through `tests/python/check_onnx.py`
/// (which also runs onnx.checker and the op checks): (whole prompt in one call, token by token through the
/// KV cache), each `[prompt.len(), vocab]`, and the checker's JSON line. `scratch` receives the raw logits.
pub fn onnxruntime_logits(model_dir: &Path, prompt: &[u32], vocab: usize, scratch: &Path) -> (Vec<f32>, Vec<f32>, String) {
    let ids = prompt.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let run = std::process::Command::new("python3")
        .arg(repo_root().join("tests/python/check_onnx.py"))
        .arg(model_dir)
        .arg(ids)
        .arg(scratch)
        .output()
        .expect("python3 must be installed (with onnx and onnxruntime: see scripts/test.sh)");
    assert!(run.status.success(), "check_onnx.py failed:\n{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    let bytes = std::fs::read(scratch).unwrap();
    let n = prompt.len() * vocab;
    assert_eq!(bytes.len(), 2 * n * 4, "one-call and cached logits");
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (floats[..n].to_vec(), floats[n..].to_vec(), String::from_utf8_lossy(&run.stdout).trim().to_owned())
}

/// Largest elementwise |a − b| (same lengths).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// The tiny family models' file stems (in `tiny_family_models()`) and their GGUF architectures.
pub const TINY_FAMILIES: [(&str, &str); 7] =
    [("llama", "llama"), ("llama3", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3"), ("gemma2", "gemma2"), ("gemma3", "gemma3"), ("phi3", "phi3")];

/// The tiny random model of every family that tests/python/make_tiny_family.py writes (GGUF with llama.cpp's
/// names and keys, and an HF folder each), generated once per test binary into a folder kept for its lifetime.
pub fn tiny_family_models() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = std::process::Command::new("python3")
            .arg(repo_root().join("tests/python/make_tiny_family.py"))
            .arg(reference_model())
            .arg(dir.path())
            .output()
            .expect("python3 with gguf==0.19.0 and numpy (scripts/test.sh installs them)");
        assert!(run.status.success(), "make_tiny_family.py failed:\n{}", String::from_utf8_lossy(&run.stderr));
        dir
    })
    .path()
}

/// The C bundle on QEMU's emulated Cortex-M7 (`make run-mcu` in a bundle folder): tool check, run, parse.
pub mod mcu {
    use std::path::Path;
    use std::process::Command;

    /// What `make run-mcu` printed: every prompt position's logits, the greedy ids, SysTick counts per token.
    pub struct McuRun {
        pub logits: Vec<f32>,
        pub generated: Vec<u32>,
        pub ticks: Vec<u64>,
    }

    /// Whether arm-none-eabi-gcc and qemu-system-arm are here; missing tools fail under CI=true (scripts/test.sh
    /// installs them) and skip locally with the reason printed.
    pub fn tools_present() -> bool {
        let missing: Vec<&str> = ["arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm"]
            .into_iter()
            .filter(|t| Command::new(t).arg("--version").output().is_err())
            .collect();
        if missing.is_empty() {
            return true;
        }
        assert!(std::env::var("CI").is_err(), "{missing:?} missing; scripts/test.sh installs gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm");
        eprintln!("skipped: {missing:?} not installed (scripts/test.sh installs them)");
        false
    }

    /// Run `program args` in `dir`; its stdout (a failure shows both streams).
    pub fn tool(dir: &Path, program: &str, args: &[&str]) -> String {
        let out = Command::new(program).args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{program} {args:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn parse(text: &str, vocab: usize) -> McuRun {
        let mut run = McuRun { logits: Vec::new(), generated: Vec::new(), ticks: Vec::new() };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("L") => {
                    let row: Vec<f32> = words.skip(1).map(|h| f32::from_bits(u32::from_str_radix(h, 16).unwrap())).collect();
                    assert_eq!(row.len(), vocab, "{line}");
                    run.logits.extend(row);
                }
                Some("G") => run.generated = words.map(|w| w.parse().unwrap()).collect(),
                Some("C") => run.ticks = words.map(|w| w.parse().unwrap()).collect(),
                _ => {}
            }
        }
        run
    }

    /// Cross-compile the bundle in `dir` for the Cortex-M7 (weights in `weights`: FLASH or EXT) and run it in
    /// QEMU on `prompt` plus `n_gen` greedy tokens.
    pub fn run(dir: &Path, prompt: &[u32], vocab: usize, n_gen: usize, weights: &str) -> McuRun {
        let ids = prompt.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let args = ["-s".to_owned(), "run-mcu".to_owned(), format!("PROMPT={ids}"), format!("N_GEN={n_gen}"), format!("MCU_WEIGHTS={weights}")];
        let make = Command::new("make").args(&args).current_dir(dir).output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&make.stdout), String::from_utf8_lossy(&make.stderr));
        let tail = err.get(err.len().saturating_sub(2000)..).unwrap_or_default();
        assert!(make.status.success(), "make run-mcu failed ({}):\n{out}{tail}", make.status);
        // QEMU prints the guest's semihosting text on its stderr.
        let run = parse(&format!("{out}{err}"), vocab);
        assert_eq!(run.logits.len(), prompt.len() * vocab, "QEMU output (end):\n{tail}");
        run
    }

    /// Check the emulated run against our runtime: every prompt position's logits within 1e-4 × the largest
    /// |logit| (the two sum in different orders in f32), and the same greedy ids wherever the runtime's top-2
    /// margin exceeds that tolerance (a near-tie may break either way). Returns the largest difference.
    pub fn check_against_runtime(name: &str, model: &edgeforge_core::Model, prompt: &[u32], run: &McuRun) -> f32 {
        let ours = crate::runtime_logits(model, prompt);
        let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let diff = crate::max_abs_diff(&run.logits, &ours);
        assert!(diff <= 1e-4 * scale, "{name}: Cortex-M7 logits differ from the runtime by {diff} (largest logit {scale})");
        let vocab = model.config.vocab_size;
        let mut ids = prompt.to_vec();
        for (i, &c) in run.generated.iter().enumerate() {
            let logits = crate::runtime_logits(model, &ids);
            let last = &logits[logits.len() - vocab..];
            let mut order: Vec<usize> = (0..vocab).collect();
            order.sort_by(|&a, &b| last[b].total_cmp(&last[a]).then(a.cmp(&b)));
            if last[order[0]] - last[order[1]] > 1e-4 * scale {
                assert_eq!(c as usize, order[0], "{name}: generated token {i}: Cortex-M7 {c}, runtime {}", order[0]);
            }
            ids.push(c);
        }
        diff
    }

    /// Mean emulated instructions per token over `ticks` (SysTick at 25 MHz, one instruction per virtual
    /// nanosecond with `-icount shift=0`: 40 instructions a tick).
    pub fn instructions_per_token(ticks: &[u64]) -> f64 {
        ticks.iter().sum::<u64>() as f64 / ticks.len().max(1) as f64 * 40.0
    }
}

//! One function per subcommand: call the libraries, print the result.

use std::time::Instant;

use anyhow::anyhow;
use edgeforge_core::summary::{count, summarize, ModelSummary};
use edgeforge_core::Model;
use edgeforge_eval::datasets::resolve_text;
use edgeforge_eval::{PerplexityOptions, PerplexityResult};
use serde::Serialize;

use crate::cli::{Cli, Command, ConvertArgs, ConvertTarget, EvalCommand, FloatDtype, InspectArgs, PerplexityArgs, TokenizeArgs};
use crate::exit::Failure;
use crate::progress;

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Inspect(a) => inspect(a),
        Command::Eval(EvalCommand::Perplexity(a)) => eval_perplexity(a),
        Command::Convert(a) => convert(a),
        Command::Tokenize(a) => tokenize(a),
        Command::Run(a) => {
            let pool = thread_pool(a.threads.threads)?;
            crate::recipe_cmds::run(a, pool)
        }
        Command::Validate(a) => crate::recipe_cmds::validate(a),
        Command::Schema => crate::recipe_cmds::schema(),
        Command::Compare(a) => crate::recipe_cmds::compare_reports(a),
        Command::Summarize(a) => crate::recipe_cmds::summarize(a),
        Command::Sweep(a) => crate::sweep_cmd::sweep(a),
        Command::Verify(a) => crate::verify_cmd::verify(a),
        Command::Keygen(a) => crate::verify_cmd::keygen(a),
        Command::Serve(a) => crate::verify_cmd::serve(a),
        Command::Sensitivity(a) => {
            let pool = thread_pool(a.threads.threads)?;
            pool.install(|| crate::sensitivity_cmd::sensitivity(a))
        }
        Command::Eval(EvalCommand::Kld(a)) => {
            let pool = thread_pool(a.threads.threads)?;
            pool.install(|| kld(a))
        }
        Command::Eval(EvalCommand::Latency(a)) => {
            let pool = thread_pool(a.threads.threads)?;
            pool.install(|| crate::recipe_cmds::latency(a))
        }
    }
}

fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool, Failure> {
    let n = match threads {
        Some(0) => return Err(Failure::BadInput(anyhow!("--threads must be at least 1"))),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| Failure::Internal(anyhow!("cannot start {n} worker threads: {e}")))
}

pub(crate) fn load(path: &std::path::Path) -> Result<Model, Failure> {
    let bar = progress::spinner("loading model");
    let model = edgeforge_core::load_model(path);
    bar.finish_and_clear();
    Ok(model?)
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Internal(e.into()))?;
    println!("{text}");
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<(), Failure> {
    let model = load(&a.path)?;
    let summary = summarize(&model);
    if a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            summary: &'a ModelSummary,
            #[serde(skip_serializing_if = "Option::is_none")]
            tensors: Option<Vec<TensorRow>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metadata: Option<Vec<(String, String)>>,
        }
        let tensors = a.tensors.then(|| tensor_rows(&model));
        let metadata = if a.metadata { Some(gguf_metadata(&a.path)?) } else { None };
        return print_json(&Out { summary: &summary, tensors, metadata });
    }
    print!("{}", render_summary(&summary));
    if a.metadata {
        println!("\nmetadata");
        for (key, value) in gguf_metadata(&a.path)? {
            println!("  {key:<44} {value}");
        }
    }
    if a.tensors {
        println!("\ntensors");
        for t in tensor_rows(&model) {
            println!("  {:<28} {:>16} {:>6} {:>12} bytes", t.name, format!("{:?}", t.shape), t.dtype, t.bytes);
        }
    }
    Ok(())
}

/// GGUF metadata keys with short renderings (arrays by length); empty for Hugging Face folders.
fn gguf_metadata(path: &std::path::Path) -> Result<Vec<(String, String)>, Failure> {
    if path.is_dir() {
        return Ok(Vec::new());
    }
    let file = edgeforge_core::gguf::GgufFile::open(path)?;
    Ok(file.metadata.iter().map(|(k, v)| (k.clone(), v.summary())).collect())
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    bytes: usize,
}

fn tensor_rows(model: &Model) -> Vec<TensorRow> {
    model
        .tensors
        .iter()
        .map(|(name, t)| TensorRow { name: name.clone(), shape: t.shape.clone(), dtype: t.format_name(), bytes: t.storage_bytes() })
        .collect()
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn render_summary(s: &ModelSummary) -> String {
    use std::fmt::Write;
    let c = &s.config;
    let mut o = String::new();
    let _ = writeln!(o, "model         {} ({}, {} bytes)", s.path, s.format, thousands(s.file_bytes));
    let _ = writeln!(o, "sha256        {}", s.sha256);
    let _ = writeln!(
        o,
        "architecture  {}: {} layers, n_embd {}, {} heads ({} kv) x {}, ffn {}, vocab {}, context {}",
        c.architecture, c.n_layers, c.n_embd, c.n_heads, c.n_kv_heads, c.head_dim, c.n_ff, c.vocab_size, c.context_length
    );
    let _ = writeln!(
        o,
        "              rope base {}, rms eps {:e}, output head {}",
        c.rope_base,
        c.rms_eps,
        if c.tied_embeddings { "tied to token_embd" } else { "separate" }
    );
    let _ = writeln!(
        o,
        "tokenizer     vocab {}, bos {}, eos {}, add_bos {}",
        s.tokenizer.vocab_size,
        s.tokenizer.bos_id.map_or("none".to_owned(), |i| i.to_string()),
        s.tokenizer.eos_id.map_or("none".to_owned(), |i| i.to_string()),
        s.tokenizer.add_bos
    );
    let _ = writeln!(o, "\n{:<12} {:>8} {:>14} {:>14} {:>8}", "kind", "tensors", "params", "bytes", "bits/w");
    let mut row = |label: &str, f: &edgeforge_core::summary::Footprint| {
        let _ = writeln!(o, "{:<12} {:>8} {:>14} {:>14} {:>8.3}", label, f.tensors, thousands(f.params), thousands(f.bytes), f.bits_per_weight);
    };
    for (kind, f) in &s.by_kind {
        row(kind.name(), f);
    }
    row("total", &s.total);
    let _ = writeln!(o, "\n{:<12} {:>8} {:>14} {:>14} {:>8}", "type", "tensors", "params", "bytes", "bits/w");
    for (ty, f) in &s.by_type {
        let _ = writeln!(o, "{:<12} {:>8} {:>14} {:>14} {:>8.3}", ty, f.tensors, thousands(f.params), thousands(f.bytes), f.bits_per_weight);
    }
    o
}

#[derive(Serialize)]
struct PerplexityReport {
    perplexity: f64,
    ppl_stderr: f64,
    tokens_scored: usize,
    chunks: usize,
    ctx: usize,
    batch: usize,
    /// Seconds spent in the chunk loop (forward passes and scoring), as llama-perplexity's timing covers.
    seconds: f64,
    /// Tokens run through the model (chunks × ctx) per second of `seconds` (what llama-perplexity's timing
    /// counts), not only the scored ones.
    tokens_per_second: f64,
    /// Scored tokens (the second half of each chunk) per second.
    scored_tokens_per_second: f64,
    load_seconds: f64,
    tokenize_seconds: f64,
    threads: usize,
    /// Whether the model was evaluated one block at a time (`--stream`).
    streamed: bool,
    /// Peak resident set of the process over loading and evaluation (Linux VmHWM).
    peak_rss_bytes: u64,
    model: String,
    model_sha256: String,
    text: String,
    text_sha256: String,
    text_tokens: usize,
    running_perplexity: Vec<f64>,
    edgeforge_version: &'static str,
}

fn eval_perplexity(a: PerplexityArgs) -> Result<(), Failure> {
    let opts = PerplexityOptions { ctx: a.ctx, batch: a.batch, max_chunks: a.chunks };
    opts.validate()?;
    let pool = thread_pool(a.threads.threads)?;
    let text = resolve_text(&a.text)?;
    pool.install(|| {
        let t_load = Instant::now();
        let model = load(&a.model)?;
        // The full runtime holds every layer; a streamed evaluation reads one block at a time.
        let runtime = if a.stream {
            None
        } else {
            let weights = edgeforge_runtime::weights_from_model(&model)?;
            let mut runtime = edgeforge_runtime::LlamaRuntime::new(weights).map_err(|e| Failure::BadInput(e.into()))?;
            runtime.set_rounding(a.rounding.runtime());
            Some(runtime)
        };
        let load_seconds = t_load.elapsed().as_secs_f64();

        let t_tok = Instant::now();
        let tokens = model.tokenizer.encode(&text.text, true).map_err(|e| Failure::BadInput(e.into()))?;
        let tokenize_seconds = t_tok.elapsed().as_secs_f64();
        let bos = if model.tokenizer.add_bos() { model.tokenizer.bos_id() } else { None };

        let n_chunks = (tokens.len() / a.ctx).min(a.chunks.unwrap_or(usize::MAX));
        let bar = progress::chunks_bar(n_chunks);
        let t_eval = Instant::now();
        let on_chunk = |p: edgeforge_eval::ChunkProgress| {
            bar.set_message(format!("ppl {:.4}", p.perplexity));
            bar.set_position(p.chunks_done as u64);
            std::ops::ControlFlow::Continue(())
        };
        let result: PerplexityResult = match &runtime {
            Some(runtime) => edgeforge_eval::perplexity(runtime, &tokens, bos, &opts, on_chunk)?,
            None => {
                let budget = edgeforge_eval::streamed::DEFAULT_ACTIVATION_BUDGET;
                edgeforge_eval::perplexity_streamed(&model, a.rounding.runtime(), &tokens, bos, &opts, budget, on_chunk)?
            }
        };
        let seconds = t_eval.elapsed().as_secs_f64();
        bar.finish_and_clear();

        let report = PerplexityReport {
            perplexity: result.perplexity,
            ppl_stderr: result.ppl_stderr,
            tokens_scored: result.tokens_scored,
            chunks: result.chunks,
            ctx: result.ctx,
            batch: result.batch,
            seconds,
            tokens_per_second: (result.chunks * result.ctx) as f64 / seconds,
            scored_tokens_per_second: result.tokens_scored as f64 / seconds,
            load_seconds,
            tokenize_seconds,
            threads: rayon::current_num_threads(),
            streamed: a.stream,
            peak_rss_bytes: edgeforge_core::process::peak_rss_bytes(),
            model: a.model.display().to_string(),
            model_sha256: model.source.sha256.clone(),
            text: text.path.display().to_string(),
            text_sha256: text.sha256.clone(),
            text_tokens: result.text_tokens,
            running_perplexity: result.running_perplexity.clone(),
            edgeforge_version: env!("CARGO_PKG_VERSION"),
        };
        if a.json {
            return print_json(&report);
        }
        let running: Vec<String> =
            report.running_perplexity.iter().enumerate().map(|(i, p)| format!("[{}]{:.4}", i + 1, p)).collect();
        println!("{}", running.join(" "));
        println!(
            "perplexity {:.4} ± {:.5} over {} of {} tokens ({} scored); {:.2} s, {:.1} tokens/s processed (every token of every chunk, as llama-perplexity counts), {}",
            report.perplexity, report.ppl_stderr, count(report.chunks as u64, "chunk"), report.ctx, report.tokens_scored, report.seconds,
            report.tokens_per_second, count(report.threads as u64, "thread")
        );
        Ok(())
    })
}

/// A result with what produced it, as perplexity's JSON has: the model's path and sha256 (and the base
/// model's, for KL divergence) and the edgeforge version.
#[derive(Serialize)]
pub(crate) struct Provenance<'a, T: Serialize> {
    pub model: String,
    pub model_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
    pub edgeforge_version: &'static str,
    #[serde(flatten)]
    pub result: &'a T,
}

fn kld(a: crate::cli::KldArgs) -> Result<(), Failure> {
    let text = resolve_text(&a.text)?;
    let runtime_of = |path: &std::path::Path| -> Result<(Model, edgeforge_runtime::LlamaRuntime), Failure> {
        let m = load(path)?;
        let rt = edgeforge_runtime::LlamaRuntime::new(edgeforge_runtime::weights_from_model(&m)?).map_err(|e| Failure::BadInput(e.into()))?;
        Ok((m, rt))
    };
    let (base, base_rt) = runtime_of(&a.base)?;
    let (model, model_rt) = runtime_of(&a.model)?;
    let model_sha256 = model.source.sha256.clone();
    drop(model);
    let tokens = base.tokenizer.encode(&text.text, true).map_err(|e| Failure::BadInput(e.into()))?;
    let bos = if base.tokenizer.add_bos() { base.tokenizer.bos_id() } else { None };
    let opts = PerplexityOptions { ctx: a.ctx, batch: a.ctx, max_chunks: a.chunks };
    let bar = progress::chunks_bar((tokens.len() / a.ctx.max(1)).min(a.chunks.unwrap_or(usize::MAX)));
    let r = edgeforge_eval::kl_divergence(&base_rt, &model_rt, &tokens, bos, &opts, |p| {
        bar.set_position(p.chunks_done as u64);
        std::ops::ControlFlow::Continue(())
    })?;
    bar.finish_and_clear();
    if a.json {
        return print_json(&Provenance {
            model: a.model.display().to_string(),
            model_sha256,
            base: Some(a.base.display().to_string()),
            base_sha256: Some(base.source.sha256.clone()),
            edgeforge_version: env!("CARGO_PKG_VERSION"),
            result: &r,
        });
    }
    println!(
        "mean KL divergence {:.6} ± {:.6}, top-1 agreement {:.2}% over {} ({} of {} tokens); perplexity {:.4} (base) vs {:.4}",
        r.mean_kld, r.kld_stderr, 100.0 * r.top1_agreement_frac, count(r.positions as u64, "position"), count(r.chunks as u64, "chunk"), r.ctx, r.base_perplexity, r.model_perplexity
    );
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<(), Failure> {
    let model = load(&a.input)?;
    let dtype = match a.dtype {
        FloatDtype::F32 => edgeforge_export::hf::FloatType::F32,
        FloatDtype::F16 => edgeforge_export::hf::FloatType::F16,
        FloatDtype::Bf16 => edgeforge_export::hf::FloatType::BF16,
    };
    let out = match a.to {
        ConvertTarget::HfSafetensors => {
            let bar = progress::spinner("writing Hugging Face folder");
            let r = edgeforge_export::hf::write_hf_dir(&model, &a.out, dtype, a.force);
            bar.finish_and_clear();
            r?.dir
        }
        ConvertTarget::Gguf => {
            if a.out.exists() && !a.force {
                return Err(Failure::BadInput(anyhow!("{} exists; pass --force to replace it", a.out.display())));
            }
            let stem = a.out.file_stem().map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned());
            let bar = progress::spinner("writing GGUF");
            let r = edgeforge_export::gguf_model::write_gguf(&model, &a.out, &stem);
            bar.finish_and_clear();
            for note in r?.fallbacks {
                println!("note: {note}");
            }
            a.out.clone()
        }
    };
    println!("wrote {}", out.display());
    Ok(())
}

fn tokenize(a: TokenizeArgs) -> Result<(), Failure> {
    // `--text -` reads standard input (at most the limit a text file has).
    let (text, source) = if a.text == "-" {
        let bytes = edgeforge_core::read_limit::read_reader_at_most(std::io::stdin().lock(), edgeforge_core::read_limit::MAX_TEXT_BYTES, "text")
            .map_err(|e| Failure::BadInput(anyhow!("standard input: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| Failure::BadInput(anyhow!("standard input: not UTF-8 text ({e})")))?;
        (text, "standard input".to_owned())
    } else {
        let t = resolve_text(&a.text)?;
        (t.text, t.path.display().to_string())
    };
    let model = load(&a.model)?;
    let ids = model.tokenizer.encode(&text, a.add_special).map_err(|e| Failure::BadInput(e.into()))?;
    if a.ids {
        let mut out = String::with_capacity(ids.len() * 6);
        for id in &ids {
            out.push_str(&id.to_string());
            out.push('\n');
        }
        print!("{out}");
    } else {
        println!("{} ({} bytes of {source})", edgeforge_core::summary::count(ids.len() as u64, "token"), text.len());
    }
    Ok(())
}

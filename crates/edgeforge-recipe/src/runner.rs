//! Executes a recipe: evaluate the input (cached by model hash and eval settings), run each pass with a
//! checkpoint after it, evaluate the result, write the targets, check the gates, write report.json and
//! report.md. `resume` continues after the last checkpoint whose key matches; every file is written under
//! a temporary name and renamed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use edgeforge_core::pass::{Pass, PassContext};
use edgeforge_core::summary::summarize;
use edgeforge_core::Model;
use edgeforge_eval::latency::peak_rss_bytes;
use edgeforge_eval::{LatencyOptions, PerplexityOptions};
use edgeforge_report::compare::{compare, GateSpec, Side};
use edgeforge_report::{
    Artifact, Environment, GateOutcome, KldMetric, Metrics, ModelStats, PassReport, PerplexityMetric, RecipeInfo,
    Report, REPORT_SCHEMA_VERSION,
};
use edgeforge_runtime::{weights_from_model, LlamaRuntime};

use crate::parse::RecipeFile;
use crate::schema::{PerplexityEval, Recipe};
use crate::validate::{resolve_path, validate};
use crate::{checkpoint, RecipeError};

/// Where the runner is, for progress bars (the CLI draws them; the library never prints).
pub enum Progress<'a> {
    Stage { label: &'a str, total: u64 },
    Advance { done: u64, total: Option<u64>, message: Option<String> },
    Done,
}

pub struct RunOptions<'a> {
    pub out_dir: PathBuf,
    pub resume: bool,
    pub seed: Option<u64>,
    pub cancel: &'a AtomicBool,
    pub progress: &'a (dyn Fn(Progress<'_>) + Sync),
    /// Where baseline evaluations are cached (None: no cache).
    pub baseline_cache: Option<PathBuf>,
    pub git_describe: Option<String>,
    /// An ed25519 seed (hex) to sign manifest.json with.
    pub signing_key: Option<PathBuf>,
}

pub fn environment(seed: u64, git_describe: Option<String>) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| cpuinfo.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned());
    let wanted = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "neon", "asimd", "dotprod"];
    let flags = field("flags").or_else(|| field("Features")).unwrap_or_default();
    Environment {
        git_describe,
        cpu_model: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
        cpu_features: flags.split_whitespace().filter(|f| wanted.contains(f)).map(str::to_owned).collect(),
        threads: rayon::current_num_threads(),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        seed,
    }
}

pub fn model_stats(model: &Model) -> ModelStats {
    let s = summarize(model);
    ModelStats {
        path: s.path.clone(),
        sha256: s.sha256.clone(),
        params: s.total.params,
        bytes: s.total.bytes,
        bits_per_weight: s.total.bits_per_weight,
        by_kind: s.by_kind.iter().map(|(k, f)| (k.name().to_owned(), f.clone())).collect(),
        by_format: s.by_type,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecipeError> {
    edgeforge_export::atomic::write_file(path, |w| w.write_all(bytes)).map_err(|source| RecipeError::Io { path: path.to_path_buf(), source })
}

/// A recipe's eval text, tokenized for `model`, with the BOS id to put at each chunk start (if any).
fn eval_tokens(rf: &RecipeFile, dataset: &str, slice: Option<edgeforge_eval::datasets::Slice>, model: &Model) -> Result<(edgeforge_eval::datasets::ResolvedText, Vec<u32>, Option<u32>), RecipeError> {
    let text = crate::validate::recipe_text(rf, dataset)?;
    let part = slice.map_or(text.text.as_str(), |s| edgeforge_eval::datasets::text_slice(&text.text, s.0));
    let tokens = model.tokenizer.encode(part, true).map_err(edgeforge_eval::EvalError::from)?;
    let bos = if model.tokenizer.add_bos() { model.tokenizer.bos_id() } else { None };
    Ok((text, tokens, bos))
}

/// Stop a chunk loop at the next chunk once Ctrl-C has been pressed.
fn until_cancelled(cancel: &AtomicBool) -> std::ops::ControlFlow<()> {
    if cancel.load(Ordering::Relaxed) {
        std::ops::ControlFlow::Break(())
    } else {
        std::ops::ControlFlow::Continue(())
    }
}

fn eval_error(e: edgeforge_eval::EvalError) -> RecipeError {
    match e {
        edgeforge_eval::EvalError::Cancelled => RecipeError::Interrupted,
        e => e.into(),
    }
}

/// Perplexity and latency of `model` as the recipe's eval section asks (`known_perplexity`: this model's
/// perplexity when already computed, e.g. after the last pass).
pub fn evaluate(
    rf: &RecipeFile,
    model: &Model,
    seed: u64,
    progress: &(dyn Fn(Progress<'_>) + Sync),
    cancel: &AtomicBool,
    label: &str,
    known_perplexity: Option<PerplexityMetric>,
) -> Result<Metrics, RecipeError> {
    let r = &rf.recipe;
    if r.eval.perplexity.is_none() && r.eval.latency.is_none() {
        return Ok(Metrics::default());
    }
    let score = r.eval.perplexity.as_ref().filter(|_| known_perplexity.is_none());
    // Every layer's weights at once, unless the only evaluation is a streamed perplexity.
    let needs_runtime = r.eval.latency.is_some() || score.is_some_and(|p| !p.stream);
    let mut runtime = if needs_runtime { Some(LlamaRuntime::new(weights_from_model(model)?)?) } else { None };
    let mut metrics = Metrics { perplexity: known_perplexity, ..Metrics::default() };
    if let Some(p) = score {
        metrics.perplexity = Some(evaluate_perplexity(rf, p, model, runtime.as_ref(), progress, cancel, label)?);
    }
    if let (Some(l), Some(runtime)) = (&r.eval.latency, &mut runtime) {
        // Timed as `edgeforge eval latency` times by default (`--rounding fast`): 8-bit activation blocks and
        // integer dot products for decode steps on block and packed weights, f32 for the prompt batch.
        runtime.set_rounding(edgeforge_runtime::Rounding::Q8Decode);
        let runtime = &*runtime;
        let stage = format!("{label}: latency");
        progress(Progress::Stage { label: &stage, total: 0 });
        let run = || {
            edgeforge_eval::latency(
                runtime,
                &LatencyOptions { prompt_tokens: l.prompt_tokens.get(), gen_tokens: l.gen_tokens.get(), repeats: l.repeats.get(), seed },
            )
        };
        let res = match l.threads {
            Some(n) if n.get() != rayon::current_num_threads() => rayon::ThreadPoolBuilder::new()
                .num_threads(n.get())
                .build()
                .map_err(|e| edgeforge_eval::EvalError::Options(e.to_string()))?
                .install(run)?,
            _ => run()?,
        };
        progress(Progress::Done);
        metrics.latency = Some(res);
    }
    Ok(metrics)
}

/// Perplexity of `model` as `p` asks, on `runtime` (built from `model`) or, streamed, one block at a time.
fn evaluate_perplexity(
    rf: &RecipeFile,
    p: &PerplexityEval,
    model: &Model,
    runtime: Option<&LlamaRuntime>,
    progress: &(dyn Fn(Progress<'_>) + Sync),
    cancel: &AtomicBool,
    label: &str,
) -> Result<PerplexityMetric, RecipeError> {
    let (text, tokens, bos) = eval_tokens(rf, &p.dataset.value, p.slice, model)?;
    let opts = PerplexityOptions { ctx: p.ctx.get(), batch: p.batch.map_or(p.ctx.get(), |b| b.get()), max_chunks: p.chunks.map(|c| c.get()) };
    let total = (tokens.len() / opts.ctx).min(opts.max_chunks.unwrap_or(usize::MAX)) as u64;
    let stage = format!("{label}: perplexity");
    progress(Progress::Stage { label: &stage, total });
    let t = Instant::now();
    let on_chunk = |c: edgeforge_eval::ChunkProgress| {
        progress(Progress::Advance { done: c.chunks_done as u64, total: None, message: Some(format!("ppl {:.4}", c.perplexity)) });
        until_cancelled(cancel)
    };
    let res = match runtime {
        Some(runtime) if !p.stream => edgeforge_eval::perplexity(runtime, &tokens, bos, &opts, on_chunk),
        _ => {
            let budget = edgeforge_eval::streamed::DEFAULT_ACTIVATION_BUDGET;
            edgeforge_eval::perplexity_streamed(model, edgeforge_runtime::Rounding::Exact, &tokens, bos, &opts, budget, on_chunk)
        }
    }
    .map_err(eval_error)?;
    progress(Progress::Done);
    Ok(PerplexityMetric {
        perplexity: res.perplexity,
        ppl_stderr: res.ppl_stderr,
        ctx: res.ctx,
        chunks: res.chunks,
        tokens_scored: res.tokens_scored,
        dataset: text.dataset.clone().unwrap_or_else(|| text.path.display().to_string()),
        dataset_sha256: text.sha256.clone(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The perplexity after a pass, when the recipe asks for one after each (`eval.perplexity.after_each_pass`).
fn perplexity_after_pass(rf: &RecipeFile, model: &Model, opts: &RunOptions<'_>, label: &str) -> Result<Option<PerplexityMetric>, RecipeError> {
    let Some(p) = rf.recipe.eval.perplexity.as_ref().filter(|p| p.after_each_pass) else { return Ok(None) };
    let runtime = if p.stream { None } else { Some(LlamaRuntime::new(weights_from_model(model)?)?) };
    evaluate_perplexity(rf, p, model, runtime.as_ref(), opts.progress, opts.cancel, label).map(Some)
}

/// KL divergence of `model` from `base` (the input model, loaded again from its file) as eval.kld asks.
fn evaluate_kld(rf: &RecipeFile, base_path: &Path, model: &Model, progress: &(dyn Fn(Progress<'_>) + Sync), cancel: &AtomicBool) -> Result<Option<KldMetric>, RecipeError> {
    let Some(k) = &rf.recipe.eval.kld else { return Ok(None) };
    let base_model = edgeforge_core::load_model(base_path)?;
    let base = LlamaRuntime::new(weights_from_model(&base_model)?)?;
    drop(base_model);
    let runtime = LlamaRuntime::new(weights_from_model(model)?)?;
    let (text, tokens, bos) = eval_tokens(rf, &k.dataset.value, None, model)?;
    let opts = PerplexityOptions { ctx: k.ctx.get(), batch: k.ctx.get(), max_chunks: k.chunks.map(|c| c.get()) };
    let total = opts.chunk_count(tokens.len())? as u64;
    progress(Progress::Stage { label: "result: KL divergence", total });
    let t = Instant::now();
    let res = edgeforge_eval::kld::kl_divergence(&base, &runtime, &tokens, bos, &opts, |c| {
        progress(Progress::Advance { done: c.chunks_done as u64, total: None, message: None });
        until_cancelled(cancel)
    })
    .map_err(eval_error)?;
    progress(Progress::Done);
    Ok(Some(KldMetric {
        mean_kld: res.mean_kld,
        kld_stderr: res.kld_stderr,
        top1_agreement_frac: res.top1_agreement_frac,
        ctx: res.ctx,
        chunks: res.chunks,
        positions: res.positions,
        dataset: text.dataset.clone().unwrap_or_else(|| text.path.display().to_string()),
        dataset_sha256: text.sha256.clone(),
        seconds: t.elapsed().as_secs_f64(),
    }))
}

/// The input model's metrics, from the cache when the same model was evaluated with the same settings by the
/// same build: the key holds the running executable's sha256, so a rebuilt edgeforge (any code change, same
/// version string) measures its "before" figures afresh. Without a build identity nothing is cached.
fn baseline_metrics(rf: &RecipeFile, model: &Model, seed: u64, opts: &RunOptions<'_>) -> Result<Metrics, RecipeError> {
    let r = &rf.recipe;
    let build = edgeforge_core::process::executable_sha256();
    let settings = serde_json::json!({
        "model": model.source.sha256,
        "perplexity": r.eval.perplexity.as_ref().map(|p| (p.dataset.value.clone(), p.ctx.get(), p.chunks.map(|c| c.get()), p.batch.map(|b| b.get()), p.slice.map(|s| s.0))),
        "latency": r.eval.latency.as_ref().map(|l| (l.prompt_tokens.get(), l.gen_tokens.get(), l.repeats.get(), l.threads.map(|t| t.get()))),
        "threads": rayon::current_num_threads(),
        "seed": seed,
        "version": env!("CARGO_PKG_VERSION"),
        "build_sha256": build,
    });
    let key = edgeforge_core::hash::sha256_hex(&[settings.to_string().as_bytes()]);
    let cached = opts.baseline_cache.as_ref().filter(|_| build.is_some()).map(|d| d.join(format!("{key}.json")));
    if let Some(p) = &cached {
        if let Some(m) = std::fs::read(p).ok().and_then(|b| serde_json::from_slice::<CachedMetrics>(&b).ok()) {
            return Ok(m.metrics);
        }
    }
    let metrics = evaluate(rf, model, seed, opts.progress, opts.cancel, "input", None)?;
    if let Some(p) = &cached {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let body = serde_json::to_vec_pretty(&CachedMetrics { settings, metrics: metrics.clone() }).unwrap_or_default();
        let _ = write_atomic(p, &body);
    }
    Ok(metrics)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedMetrics {
    settings: serde_json::Value,
    metrics: Metrics,
}

fn cancelled(opts: &RunOptions<'_>) -> Result<(), RecipeError> {
    if opts.cancel.load(Ordering::Relaxed) {
        Err(RecipeError::Interrupted)
    } else {
        Ok(())
    }
}

/// The passes' state: the model as the last pass left it and each pass's report.
struct PassesDone {
    model: Model,
    reports: Vec<PassReport>,
}

pub fn run(rf: &RecipeFile, opts: &RunOptions<'_>) -> Result<Report, RecipeError> {
    let t_total = Instant::now();
    let r: &Recipe = &rf.recipe;
    let seed = opts.seed.or_else(|| r.calibration.as_ref().map(|c| c.seed)).unwrap_or(0);
    let validated = validate(rf, true)?;
    let model_path = validated.model_path.clone().ok_or_else(|| RecipeError::Fetch { name: r.model.value.clone(), why: "not available".into() })?;
    let ckpt_dir = opts.out_dir.join("checkpoints");
    std::fs::create_dir_all(&ckpt_dir).map_err(|source| RecipeError::Io { path: ckpt_dir.clone(), source })?;

    (opts.progress)(Progress::Stage { label: "loading model", total: 0 });
    let model = edgeforge_core::load_model(&model_path)?;
    (opts.progress)(Progress::Done);
    let model_before = model_stats(&model);
    let metrics_before = baseline_metrics(rf, &model, seed, opts)?;
    cancelled(opts)?;

    let PassesDone { model, mut reports } = run_passes(rf, &validated.passes, model, &model_path, &ckpt_dir, seed, opts)?;
    cancelled(opts)?;

    // With a perplexity after each pass, the last one is the result's.
    let known = reports.last().and_then(|p| p.perplexity_after.clone());
    let mut metrics_after = if validated.passes.is_empty() { metrics_before.clone() } else { evaluate(rf, &model, seed, opts.progress, opts.cancel, "result", known)? };
    if !validated.passes.is_empty() {
        metrics_after.kld = evaluate_kld(rf, &model_path, &model, opts.progress, opts.cancel)?;
    }
    cancelled(opts)?;

    let (artifacts, fits) = crate::targets::write_targets(rf, &model, &opts.out_dir, &mut reports, opts.progress)?;
    if !artifacts.is_empty() {
        write_manifest(rf, &artifacts, &metrics_before, &metrics_after, opts)?;
    }

    let mut model_after = model_stats(&model);
    model_after.sha256 = content_sha256(&model);
    let mut report = Report {
        schema_version: REPORT_SCHEMA_VERSION,
        edgeforge_version: env!("CARGO_PKG_VERSION").to_owned(),
        recipe: Some(RecipeInfo { path: rf.path.display().to_string(), sha256: rf.sha256.clone(), text: rf.text.clone() }),
        environment: environment(seed, opts.git_describe.clone()),
        model_before,
        model_after,
        passes: reports,
        metrics_before,
        metrics_after,
        artifacts,
        targets: fits,
        gates: None,
        seconds_total: t_total.elapsed().as_secs_f64(),
    };
    report.gates = check_gates(rf, &report)?;
    let json = serde_json::to_vec_pretty(&report).map_err(|e| RecipeError::Checkpoint { path: opts.out_dir.clone(), why: e.to_string() })?;
    write_atomic(&opts.out_dir.join("report.json"), &json)?;
    write_atomic(&opts.out_dir.join("report.md"), edgeforge_report::markdown::report(&report).as_bytes())?;
    Ok(report)
}

/// The pass (index) to start from and the reports of those before it: after the last checkpoint whose key
/// matches when resuming (its model state read into `model`), else 0.
fn resume_point(passes: &[Box<dyn Pass>], keys: &[String], ckpt_dir: &Path, model: &mut Model, resume: bool) -> Result<(usize, Vec<PassReport>), RecipeError> {
    if resume {
        for i in (0..passes.len()).rev() {
            let path = checkpoint::path_for(ckpt_dir, i, passes[i].name());
            if path.is_file() {
                if let Some(done) = checkpoint::read_into(&path, &keys[i], model)? {
                    return Ok((i + 1, done));
                }
            }
        }
    }
    Ok((0, Vec::new()))
}

/// Run the passes in order with a checkpoint after each (from the last matching one when resuming).
fn run_passes(
    rf: &RecipeFile,
    passes: &[Box<dyn Pass>],
    mut model: Model,
    model_path: &Path,
    ckpt_dir: &Path,
    seed: u64,
    opts: &RunOptions<'_>,
) -> Result<PassesDone, RecipeError> {
    // Checkpoint keys: the input and each pass's options so far.
    let options: Vec<serde_json::Value> = passes.iter().map(|p| serde_json::json!({ "pass": p.name(), "options": p.options_json() })).collect();
    let keys: Vec<String> = (0..options.len()).map(|i| checkpoint::key(&model.source.sha256, &options[..=i], seed)).collect();
    let (start, mut reports) = resume_point(passes, &keys, ckpt_dir, &mut model, opts.resume)?;

    let calibration = if passes.iter().skip(start).any(|p| p.needs().calibration) {
        Some(calibration_data(rf, &model, seed)?)
    } else {
        None
    };
    // Passes that learn from the input model (distillation) get it as it was loaded.
    let original = if passes.iter().skip(start).any(|p| p.needs().original_model) {
        Some(edgeforge_core::load_model(model_path)?)
    } else {
        None
    };
    for (i, pass) in passes.iter().enumerate().skip(start) {
        cancelled(opts)?;
        let label = format!("pass {}/{}: {}", i + 1, passes.len(), pass.name());
        let work_dir = ckpt_dir.join(format!("pass-{i}-{}.work", pass.name()));
        let services = PassServices { seed, calibration: calibration.as_ref(), original: original.as_ref(), work_dir: &work_dir };
        let mut report = run_pass(i, pass.as_ref(), &mut model, &label, &services, opts)?;
        report.perplexity_after = perplexity_after_pass(rf, &model, opts, &label)?;
        let cal_tokens = rf.recipe.calibration.as_ref().map(|c| (c.samples.get() * c.seq_len.get()) as u64);
        let sample = crate::measured::Sample {
            seconds: report.seconds,
            params: report.params_before,
            tokens: pass.work_tokens(cal_tokens),
            threads: rayon::current_num_threads(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        crate::measured::record(&pass.estimate_kind(), sample);
        reports.push(report);
        checkpoint::write(&checkpoint::path_for(ckpt_dir, i, pass.name()), &keys[i], i, &model, &reports)?;
    }
    Ok(PassesDone { model, reports })
}

/// What the runner hands every pass besides the model.
struct PassServices<'a> {
    seed: u64,
    calibration: Option<&'a edgeforge_core::pass::CalibrationData>,
    original: Option<&'a Model>,
    work_dir: &'a Path,
}

/// One pass with its progress bar, timed and measured (size, parameters, its own peak RSS).
fn run_pass(i: usize, pass: &dyn Pass, model: &mut Model, label: &str, s: &PassServices<'_>, opts: &RunOptions<'_>) -> Result<PassReport, RecipeError> {
    let before = summarize(model);
    (opts.progress)(Progress::Stage { label, total: 0 });
    // The last (done, total), so a status line can be shown without moving the bar.
    let last = std::sync::Mutex::new((0u64, 0u64));
    let progress = |done: u64, total: u64| {
        if let Ok(mut l) = last.lock() {
            *l = (done, total);
        }
        (opts.progress)(Progress::Advance { done, total: Some(total), message: None });
    };
    let status = |message: String| {
        let (done, total) = last.lock().map(|l| *l).unwrap_or_default();
        (opts.progress)(Progress::Advance { done, total: Some(total), message: Some(message) });
    };
    let cx = PassContext {
        seed: s.seed,
        calibration: s.calibration,
        progress: &progress,
        status: &status,
        cancel: opts.cancel,
        original: s.original,
        work_dir: Some(s.work_dir),
    };
    // Each pass's report shows its own peak, not the evaluation's before it.
    let peak_is_own = edgeforge_core::process::reset_peak_rss();
    let t = Instant::now();
    let outcome = pass.run(model, &cx).map_err(|source| match source {
        edgeforge_core::pass::PassError::Cancelled => RecipeError::Interrupted,
        source => RecipeError::Pass { index: i, name: pass.name().to_owned(), source },
    })?;
    (opts.progress)(Progress::Done);
    let after = summarize(model);
    Ok(PassReport {
        name: pass.name().to_owned(),
        options: pass.options_json(),
        seconds: t.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        params_before: before.total.params,
        params_after: after.total.params,
        bytes_before: before.total.bytes,
        bytes_after: after.total.bytes,
        changed: outcome.changed,
        notes: if peak_is_own { outcome.notes } else { [outcome.notes, vec!["peak RSS is the process's lifetime peak (could not reset it)".into()]].concat() },
        perplexity_after: None,
    })
}

/// manifest.json over every artifact written, with the recipe's hash and the before/after metrics, signed
/// when a key is given.
fn write_manifest(rf: &RecipeFile, artifacts: &[Artifact], before: &Metrics, after: &Metrics, opts: &RunOptions<'_>) -> Result<(), RecipeError> {
    let mut files = Vec::new();
    for a in artifacts {
        files.extend(crate::targets::artifact_files(&opts.out_dir.join(&a.path))?);
    }
    let targets: Vec<serde_json::Value> = artifacts.iter().map(|a| serde_json::json!({ "path": a.path, "format": a.format, "profile": a.profile })).collect();
    let metrics = serde_json::json!({ "before": before, "after": after });
    let key = opts.signing_key.as_deref().map(edgeforge_targets::manifest::read_signing_key).transpose().map_err(|e| RecipeError::Target(e.to_string()))?;
    let manifest = edgeforge_targets::manifest::build(&opts.out_dir, &files, Some(rf.sha256.clone()), targets, metrics).map_err(|e| RecipeError::Target(e.to_string()))?;
    edgeforge_targets::manifest::write(&opts.out_dir, &manifest, key.as_ref()).map_err(|e| RecipeError::Target(e.to_string()))?;
    Ok(())
}

/// The recipe's gates against its baseline (`input`: this run's input model; else a report.json).
fn check_gates(rf: &RecipeFile, report: &Report) -> Result<Option<GateOutcome>, RecipeError> {
    let Some(g) = &rf.recipe.gates else { return Ok(None) };
    let spec = GateSpec {
        max_ppl_increase_pct: g.max_ppl_increase_pct.map(|v| v.get()),
        min_decode_speedup: g.min_decode_speedup.map(|v| v.get()),
        max_size_bytes: g.max_size_bytes.map(|v| v.get() as u64),
    };
    let baseline = g.baseline.as_ref().map_or("input".to_owned(), |b| b.value.clone());
    let base_report;
    let base = if baseline == "input" {
        Side::input("input", report)
    } else {
        let p = resolve_path(rf, &baseline);
        base_report = Report::read(&p).map_err(|e| RecipeError::Checkpoint { path: p.clone(), why: e.to_string() })?;
        Side::result("baseline", &base_report)
    };
    let c = compare(base, Side::result("result", report), &spec).map_err(|e| RecipeError::Checkpoint { path: PathBuf::from(&baseline), why: e.to_string() })?;
    Ok(Some(GateOutcome { baseline, passed: c.passed, checks: c.checks }))
}

/// sha256 over every tensor's name, shape, format and bytes: identifies a model state that has no file.
pub fn content_sha256(model: &Model) -> String {
    use sha2::Digest;
    let mut sha = sha2::Sha256::new();
    for (name, t) in &model.tensors {
        sha.update(format!("{name}{:?}{}", t.shape, t.format_name()).as_bytes());
        match &t.data {
            edgeforge_core::TensorData::F32(v) => v.iter().for_each(|x| sha.update(x.to_le_bytes())),
            edgeforge_core::TensorData::Blocks { bytes, .. } => {
                sha.update(&bytes[..]);
                bytes.release();
            }
            edgeforge_core::TensorData::Quantized(q) => {
                q.scales.iter().for_each(|s| sha.update(s.to_le_bytes()));
                sha.update(&q.zeros);
                sha.update(&q.codes);
            }
        }
    }
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `samples` windows of `seq_len` tokens at seeded random offsets in the calibration text (BOS first when the
/// model adds one).
fn calibration_data(rf: &RecipeFile, model: &Model, seed: u64) -> Result<edgeforge_core::pass::CalibrationData, RecipeError> {
    let Some(c) = &rf.recipe.calibration else {
        return Ok(edgeforge_core::pass::CalibrationData::default());
    };
    let text = crate::validate::recipe_text(rf, &c.dataset.value)?;
    let part = c.slice.map_or(text.text.as_str(), |s| edgeforge_eval::datasets::text_slice(&text.text, s.0));
    let tokens = model.tokenizer.encode(part, false).map_err(edgeforge_eval::EvalError::from)?;
    let (n, len) = (c.samples.get(), c.seq_len.get());
    if tokens.len() <= len {
        return Err(edgeforge_eval::EvalError::TextTooShort { tokens: tokens.len(), ctx: len }.into());
    }
    let bos = if model.tokenizer.add_bos() { model.tokenizer.bos_id() } else { None };
    let mut state = c.seed ^ seed ^ 0x2545_F491_4F6C_DD1D;
    let sequences = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let start = (state % (tokens.len() - len) as u64) as usize;
            let mut s = tokens[start..start + len].to_vec();
            if let Some(b) = bos {
                s[0] = b;
            }
            s
        })
        .collect();
    Ok(edgeforge_core::pass::CalibrationData { sequences })
}

//! `run`, `validate`, `schema`, `compare`, `summarize` and `eval latency`.

// RecipeError is large because it carries every library's typed error; it only travels on the way out.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use edgeforge_recipe::runner::{self, Progress, RunOptions};
use edgeforge_recipe::{parse_recipe, RecipeError};
use edgeforge_report::compare::{compare, GateSpec, Side};
use edgeforge_report::Report;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{CompareArgs, CompareFormat, LatencyArgs, RunArgs, SummarizeArgs, ValidateArgs};
use crate::exit::Failure;

impl From<RecipeError> for Failure {
    fn from(e: RecipeError) -> Self {
        match e {
            RecipeError::Eval(edgeforge_eval::EvalError::Download { .. }) => Failure::Internal(e.into()),
            RecipeError::Invalid(_)
            | RecipeError::Model(_)
            | RecipeError::Fetch { .. }
            | RecipeError::Eval(_)
            | RecipeError::CheckpointCorrupt { .. } => {
                Failure::BadInput(e.into())
            }
            // A file named on the command line or in the recipe that is not there: the user's to fix.
            RecipeError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => Failure::BadInput(e.into()),
            RecipeError::Interrupted => Failure::Interrupted(e.into()),
            _ => Failure::Internal(e.into()),
        }
    }
}

fn git_describe() -> Option<String> {
    let out = std::process::Command::new("git").args(["describe", "--always", "--dirty", "--tags"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// indicatif bars driven by the runner's progress events.
struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn event(&self, p: Progress<'_>) {
        let Ok(mut cur) = self.current.lock() else { return };
        match p {
            Progress::Stage { label, total } => {
                if let Some(b) = cur.take() {
                    b.finish_and_clear();
                }
                let bar = if total > 0 {
                    let b = ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} {elapsed} (ETA {eta})")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    b
                } else {
                    let b = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
                    b.set_style(ProgressStyle::with_template("{spinner} {prefix} {pos} {msg} {elapsed}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
                    b.enable_steady_tick(std::time::Duration::from_millis(150));
                    b
                };
                bar.set_prefix(label.to_owned());
                *cur = Some(bar);
            }
            Progress::Advance { done, total, message } => {
                if let Some(b) = cur.as_ref() {
                    if let Some(t) = total {
                        if b.length() != Some(t) {
                            b.set_length(t);
                            b.set_style(
                                ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} {elapsed} (ETA {eta})")
                                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                                    .progress_chars("=> "),
                            );
                        }
                    }
                    if let Some(m) = message {
                        b.set_message(m);
                    }
                    b.set_position(done);
                }
            }
            Progress::Done => {
                if let Some(b) = cur.take() {
                    b.finish_and_clear();
                }
            }
        }
    }
}

/// Two runs into one --out would interleave checkpoints and artifacts: the first takes an exclusive lock on
/// `OUT/.edgeforge.lock` (released by the OS when the process ends, however it ends) and a second is refused.
fn lock_out_dir(out: &std::path::Path) -> Result<std::fs::File, Failure> {
    let path = out.join(edgeforge_targets::manifest::RUN_LOCK);
    let io = |e: std::io::Error| Failure::Internal(anyhow!("{}: {e}", path.display()));
    std::fs::create_dir_all(out).map_err(io)?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Failure::BadInput(anyhow!(
            "{}: another edgeforge run is writing into this folder (it holds .edgeforge.lock); wait for it to end or choose another --out",
            out.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

pub fn run(a: RunArgs, pool: rayon::ThreadPool) -> Result<(), Failure> {
    let rf = parse_recipe(&a.recipe)?;
    if a.dry_run {
        for line in edgeforge_recipe::plan::plan(&rf, pool.current_num_threads())? {
            println!("{line}");
        }
        return Ok(());
    }
    let _lock = lock_out_dir(&a.out)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    // The first Ctrl-C (or SIGTERM, SIGHUP: ctrlc's `termination` feature) asks for a stop at the next safe point (after the current tensor or chunk); a second
    // one exits at once. Either way no final file is half-written: every write goes to a temporary name first.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\nedgeforge: stopping at the next safe point (Ctrl-C again to stop now); resume with --resume");
    });
    let bars = Bars { current: Mutex::new(None) };
    let progress = |p: Progress<'_>| bars.event(p);
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let opts = RunOptions {
        out_dir: a.out.clone(),
        resume: a.resume,
        seed: a.seed,
        cancel: &cancel,
        progress: &progress,
        baseline_cache: home.map(|h| h.join(".cache/edgeforge/baselines")),
        git_describe: git_describe(),
        signing_key: a.sign_key.clone(),
    };
    let report = pool.install(|| runner::run(&rf, &opts))?;
    bars.event(Progress::Done);
    let b = &report.metrics_before;
    let r = &report.metrics_after;
    if let (Some(pb), Some(pr)) = (&b.perplexity, &r.perplexity) {
        println!("perplexity {:.4} ± {:.4} -> {:.4} ± {:.4}", pb.perplexity, pb.ppl_stderr, pr.perplexity, pr.ppl_stderr);
    }
    if let Some(k) = &r.kld {
        println!("KL divergence from the input {:.6} ± {:.6}, top-1 agreement {:.2}%", k.mean_kld, k.kld_stderr, 100.0 * k.top1_agreement_frac);
    }
    if let (Some(lb), Some(lr)) = (&b.latency, &r.latency) {
        let rate = |v: Option<f64>| v.map_or_else(|| "not measured".to_owned(), |x| format!("{x:.1}"));
        println!("decode {} -> {} tok/s, prefill {:.1} -> {:.1} tok/s", rate(lb.decode_tok_s), rate(lr.decode_tok_s), lb.prefill_tok_s, lr.prefill_tok_s);
    }
    println!(
        "size {} -> {} bytes, {:.3} -> {:.3} bits/weight",
        report.model_before.bytes, report.model_after.bytes, report.model_before.bits_per_weight, report.model_after.bits_per_weight
    );
    for art in &report.artifacts {
        println!("wrote {} ({} bytes)", a.out.join(&art.path).display(), art.bytes);
    }
    println!("report: {}", a.out.join("report.md").display());
    if let Some(g) = &report.gates {
        if !g.passed {
            let failed: Vec<String> = g.checks.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.gate, c.detail)).collect();
            return Err(Failure::GateFailed(anyhow!("gate failed: {}", failed.join("; "))));
        }
    }
    Ok(())
}

pub fn validate(a: ValidateArgs) -> Result<(), Failure> {
    if a.recipes.is_empty() {
        return Err(Failure::BadInput(anyhow!("name at least one recipe file")));
    }
    // Every file is checked and every error of every file is printed (stderr), with one status line per
    // file (stdout), so one run shows everything to fix.
    let mut failed = 0usize;
    for path in &a.recipes {
        match parse_recipe(path).and_then(|rf| edgeforge_recipe::validate::validate(&rf, false).map(|_| ())) {
            Ok(()) => println!("{}: ok", path.display()),
            // One file: its errors are the command's error, one line each.
            Err(e) if a.recipes.len() == 1 => {
                let n = if let RecipeError::Invalid(d) = &e { d.len() } else { 1 };
                println!("{}: {n} error{}", path.display(), if n == 1 { "" } else { "s" });
                return Err(e.into());
            }
            Err(e) => {
                failed += 1;
                let lines: Vec<String> = match &e {
                    RecipeError::Invalid(diags) => diags.iter().map(|d| d.to_string()).collect(),
                    _ => vec![Failure::from(e).message()],
                };
                for line in &lines {
                    eprintln!("edgeforge: error: {line}");
                }
                println!("{}: {} error{}", path.display(), lines.len(), if lines.len() == 1 { "" } else { "s" });
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(Failure::BadInput(anyhow!("{failed} of {} recipe file{} invalid (errors above)", a.recipes.len(), if a.recipes.len() == 1 { "" } else { "s" })))
    }
}

pub fn schema() -> Result<(), Failure> {
    let schema = schemars::schema_for!(edgeforge_recipe::schema::Recipe);
    let text = serde_json::to_string_pretty(&schema).map_err(|e| Failure::Internal(e.into()))?;
    println!("{text}");
    Ok(())
}

pub fn compare_reports(a: CompareArgs) -> Result<(), Failure> {
    let read = |p: &std::path::Path| Report::read(p).map_err(|e| Failure::BadInput(e.into()));
    let (base, new) = (read(&a.base)?, read(&a.new)?);
    let (gates, source) = compare_gates(&a, &base, &new)?;
    let c = compare(Side::result(&a.base.display().to_string(), &base), Side::result(&a.new.display().to_string(), &new), &gates)
        .map_err(|e| Failure::BadInput(e.into()))?;
    if c.checks.is_empty() && !a.no_gates {
        return Err(Failure::BadInput(anyhow!(
            "compare: no gates checked: no gate flag (--max-ppl-increase-pct, --min-decode-speedup, --max-size-bytes), no --recipe, and the two reports' recipes do not both have a `gates` block (fix: pass a gate, or --no-gates to print the table without checking anything)"
        )));
    }
    if let Some(source) = source {
        eprintln!("compare: gates from {source}");
    }
    match a.format {
        CompareFormat::Md => print!("{}", edgeforge_report::markdown::comparison_table(&c)),
        CompareFormat::Json => println!("{}", serde_json::to_string_pretty(&c).map_err(|e| Failure::Internal(e.into()))?),
    }
    if c.passed {
        Ok(())
    } else {
        let failed: Vec<String> = c.checks.iter().filter(|g| !g.passed).map(|g| format!("{}: {}", g.gate, g.detail)).collect();
        Err(Failure::GateFailed(anyhow!("gate failed: {}", failed.join("; "))))
    }
}

fn gates_are_empty(g: &GateSpec) -> bool {
    g.max_ppl_increase_pct.is_none() && g.min_decode_speedup.is_none() && g.max_size_bytes.is_none()
}

fn gates_of(g: &edgeforge_recipe::schema::Gates) -> GateSpec {
    GateSpec {
        max_ppl_increase_pct: g.max_ppl_increase_pct.map(|v| v.get()),
        min_decode_speedup: g.min_decode_speedup.map(|v| v.get()),
        max_size_bytes: g.max_size_bytes.map(|v| v.get() as u64),
    }
}

/// The `gates` block of the recipe a report recorded, if it has one and still parses.
fn recorded_gates(r: &Report) -> Option<GateSpec> {
    let info = r.recipe.as_ref()?;
    let rf = edgeforge_recipe::parse::parse_recipe_text(std::path::Path::new(&info.path), info.text.clone()).ok()?;
    rf.recipe.gates.as_ref().map(gates_of).filter(|g| !gates_are_empty(g))
}

/// The gates to check and where they came from: the flags over `--recipe`'s gates; with neither, the gates
/// recorded in the new report's recipe when both reports' recipes have a `gates` block.
fn compare_gates(a: &CompareArgs, base: &Report, new: &Report) -> Result<(GateSpec, Option<String>), Failure> {
    let mut gates = GateSpec::default();
    let mut source = None;
    if let Some(rp) = &a.recipe {
        let rf = parse_recipe(rp)?;
        if let Some(g) = &rf.recipe.gates {
            gates = gates_of(g);
            source = Some(format!("{}'s `gates` block", rp.display()));
        }
    }
    for (flag, v) in [(&mut gates.max_ppl_increase_pct, a.max_ppl_increase_pct), (&mut gates.min_decode_speedup, a.min_decode_speedup)] {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Failure::BadInput(anyhow!("gate values must be numbers >= 0, got {v}")));
            }
            *flag = Some(v);
        }
    }
    if a.max_size_bytes.is_some() {
        gates.max_size_bytes = a.max_size_bytes;
    }
    if a.recipe.is_none() && gates_are_empty(&gates) && !a.no_gates {
        if let (Some(_), Some(g)) = (recorded_gates(base), recorded_gates(new)) {
            return Ok((g, Some(format!("the `gates` block recorded in {}'s recipe", a.new.display()))));
        }
    }
    Ok((gates, source))
}

pub fn summarize(a: SummarizeArgs) -> Result<(), Failure> {
    let s = edgeforge_report::summarize::summarize(&a.dir).map_err(|e| match e {
        edgeforge_report::summarize::SummaryError::Table(_) => Failure::Internal(e.into()),
        _ => Failure::BadInput(e.into()),
    })?;
    let out = a.out.unwrap_or_else(|| a.dir.clone());
    std::fs::create_dir_all(&out).map_err(|e| Failure::Internal(e.into()))?;
    for (name, body) in [("summary.md", &s.markdown), ("summary.csv", &s.csv), ("summary.svg", &s.svg)] {
        let p = out.join(name);
        let tmp = out.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &p)).map_err(|e| Failure::Internal(anyhow!("{}: {e}", p.display())))?;
    }
    print!("{}", s.markdown);
    println!("\nwrote {}, summary.csv and summary.svg", out.join("summary.md").display());
    Ok(())
}

pub fn latency(a: LatencyArgs) -> Result<(), Failure> {
    let mut model = edgeforge_core::load_model(&a.model)?;
    let model_sha256 = model.source.sha256.clone();
    let ctx = model.config.context_length;
    for (flag, tokens) in [("--prompt-tokens", a.prompt_tokens), ("--gen-tokens", a.gen_tokens)] {
        if ctx > 0 && tokens > ctx {
            return Err(Failure::BadInput(anyhow!("{flag} {tokens} is longer than {}'s context of {ctx} tokens (fix: use at most {ctx})", a.model.display())));
        }
    }
    // The block weights move into the runtime (no second copy); the rest of the model is not measured.
    let mut runtime = edgeforge_runtime::LlamaRuntime::new(edgeforge_runtime::weights_from_model_owned(&mut model)?).map_err(|e| Failure::BadInput(e.into()))?;
    drop(model);
    runtime.set_rounding(a.rounding.runtime());
    let opts = edgeforge_eval::LatencyOptions { prompt_tokens: a.prompt_tokens, gen_tokens: a.gen_tokens, repeats: a.repeats, seed: a.seed };
    let r = edgeforge_eval::latency(&runtime, &opts)?;
    if a.json {
        let out = crate::commands::Provenance { model: a.model.display().to_string(), model_sha256, base: None, base_sha256: None, edgeforge_version: env!("CARGO_PKG_VERSION"), result: &r };
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| Failure::Internal(e.into()))?);
    } else {
        // llama-bench's table: one row per test, t/s as mean ± sample standard deviation.
        let (pp, tg) = r.test_names();
        println!("| model | threads | rounding | test | t/s |\n| --- | ---: | --- | --- | ---: |");
        let row = |test: &str, mean: f64, sd: f64| println!("| {} | {} | {:?} | {test} | {mean:.2} ± {sd:.2} |", a.model.display(), r.threads, a.rounding);
        row(&pp, r.prefill_tok_s, r.prefill_tok_s_sd);
        if let (Some(m), Some(sd)) = (r.decode_tok_s, r.decode_tok_s_sd) {
            row(&tg, m, sd);
        }
        let show = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |x| format!("{x:.2}"));
        println!(
            "TTFT {:.1} ms, tg per token p50 {} ms p95 {} ms, {} repetitions, peak RSS {:.1} MiB ({:?})",
            r.ttft_ms,
            show(r.decode_p50_ms),
            show(r.decode_p95_ms),
            r.repeats,
            r.peak_rss_bytes as f64 / 1048576.0,
            r.peak_rss_scope
        );
        for n in &r.notes {
            println!("note: {n}");
        }
    }
    Ok(())
}

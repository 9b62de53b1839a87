//! `--dry-run`: the plan of a recipe with time and memory estimates, each stated with its basis.
//!
//! Pass estimates come from this machine's latest measured run of the same kind of pass (`measured.rs`) when
//! there is one; otherwise from the built-in figures: pass estimates (`Pass::estimate`) are figures taken on
//! `ESTIMATE_BASIS_THREADS` threads with `ESTIMATE_BASIS_CALIBRATION_TOKENS` calibration tokens (128 × 512; GPTQ on
//! SmolLM2-135M took 258 s there, `benches/gptq.sh`), scaled here linearly: seconds by the recipe's
//! calibration tokens (samples × seq_len) for passes that read calibration text, and by
//! `BASIS_THREADS / threads`; peak memory by the calibration activations (tokens × n_embd × 4 bytes, twice:
//! a block's input and output). Evaluation uses throughputs measured on SmolLM2-135M on 2 threads, scaled by
//! parameters and threads. Linear thread scaling is optimistic past a few cores.

use edgeforge_core::summary::summarize;

use crate::parse::RecipeFile;
use crate::validate::validate;
use crate::RecipeError;

use edgeforge_core::pass::{ESTIMATE_BASIS_CALIBRATION_TOKENS as BASIS_CALIBRATION_TOKENS, ESTIMATE_BASIS_THREADS as BASIS_THREADS};

/// SmolLM2-135M on 2 threads: perplexity's batched forward, latency's prefill and decode (README).
const BASIS_PARAMS: f64 = 135e6;
const PPL_TOK_S: f64 = 480.0;
const PREFILL_TOK_S: f64 = 350.0;
const DECODE_TOK_S: f64 = 55.0;

/// A duration with three significant figures, so tiny models do not show "~0 s".
fn secs(s: f64) -> String {
    if s >= 100.0 || s <= 0.0 || !s.is_finite() {
        return format!("{s:.0} s");
    }
    let digits = (2.0 - s.log10().floor()).clamp(0.0, 12.0) as usize;
    format!("{s:.digits$} s")
}

/// The plan, one line each: the basis, evaluation, passes, targets and the total.
pub fn plan(rf: &RecipeFile, threads: usize) -> Result<Vec<String>, RecipeError> {
    let v = validate(rf, false)?;
    let r = &rf.recipe;
    let threads = threads.max(1);
    let mut lines = vec![format!("model: {} ({})", r.model.value, v.model_path.as_ref().map_or("not fetched yet".into(), |p| p.display().to_string()))];
    let model = match &v.model_path {
        Some(p) => Some(edgeforge_core::load_model(p)?),
        None => None,
    };
    let n_params = model.as_ref().map_or(135_000_000, |m| summarize(m).total.params);
    let size = n_params as f64 / BASIS_PARAMS;
    let cal_tokens = r.calibration.as_ref().map(|c| (c.samples.get() * c.seq_len.get()) as u64);
    lines.push(format!(
        "estimates, not measurements: {threads} threads, calibration {}, {:.1}M parameters; pass figures measured on {BASIS_THREADS} threads with {BASIS_CALIBRATION_TOKENS} calibration tokens, scaled linearly by tokens, parameters and {BASIS_THREADS}/threads",
        r.calibration.as_ref().map_or("none".to_owned(), |c| format!("{} samples x {} seq_len = {} tokens", c.samples.get(), c.seq_len.get(), c.samples.get() * c.seq_len.get())),
        n_params as f64 / 1e6
    ));
    let per_thread = BASIS_THREADS as f64 / threads as f64;
    let mut total = 0.0;
    if let Some(p) = &r.eval.perplexity {
        let chunks = p.chunks.map_or(80, |c| c.get());
        let s = (chunks * p.ctx.get()) as f64 / PPL_TOK_S * size * per_thread;
        total += 2.0 * s;
        lines.push(format!("eval perplexity on {} (ctx {}, {chunks} chunks = {} tokens / ~{PPL_TOK_S} tok/s, x params/135M, x {BASIS_THREADS}/threads): ~{} per model, twice (input cached)", p.dataset.value, p.ctx.get(), chunks * p.ctx.get(), secs(s)));
    }
    if let Some(l) = &r.eval.latency {
        let lt = BASIS_THREADS as f64 / l.threads.map_or(threads, |t| t.get()) as f64;
        let (prompt, gen, repeats) = (l.prompt_tokens.get() as f64, l.gen_tokens.get() as f64, l.repeats.get() as f64);
        let s = repeats * (prompt / PREFILL_TOK_S + (gen - 1.0) / DECODE_TOK_S) * size * lt;
        total += 2.0 * s;
        lines.push(format!("eval latency: {prompt} prompt + {gen} generated tokens x {repeats} repeats (prefill ~{PREFILL_TOK_S}, decode ~{DECODE_TOK_S} tok/s, x params/135M, x {BASIS_THREADS}/threads): ~{} per model", secs(s)));
    }
    if let Some(k) = &r.eval.kld {
        // Two models scored over the chunks (the input's logits are recomputed, not cached).
        let chunks = k.chunks.map_or(80, |c| c.get());
        let s = 2.0 * (chunks * k.ctx.get()) as f64 / PPL_TOK_S * size * per_thread;
        total += s;
        lines.push(format!("eval KL divergence on {} (ctx {}, {} = {} tokens, both models / ~{PPL_TOK_S} tok/s, x params/135M, x {BASIS_THREADS}/threads): ~{}", k.dataset.value, k.ctx.get(), edgeforge_core::summary::count(chunks as u64, "chunk"), chunks * k.ctx.get(), secs(s)));
    }
    for (i, pass) in v.passes.iter().enumerate() {
        let Some(m) = &model else {
            lines.push(format!("pass {i}: {}", pass.name()));
            continue;
        };
        let est = pass.estimate(&m.config, n_params);
        let (mut seconds, mut peak) = (est.seconds * per_thread, est.peak_bytes);
        let mut basis = format!("built-in figure x {BASIS_THREADS}/{threads} threads");
        if let (true, Some(tokens)) = (pass.estimate_scales_with_calibration(), cal_tokens) {
            seconds *= tokens as f64 / BASIS_CALIBRATION_TOKENS as f64;
            let act = |t: u64| t * m.config.n_embd as u64 * 4 * 2;
            peak = (peak + act(tokens)).saturating_sub(act(BASIS_CALIBRATION_TOKENS));
            basis = format!("{basis} x {tokens}/{BASIS_CALIBRATION_TOKENS} calibration tokens");
        }
        let kind = pass.estimate_kind();
        if let Some(s) = crate::measured::latest(&kind) {
            let tokens = pass.work_tokens(cal_tokens);
            seconds = s.scaled(n_params, tokens, threads);
            basis = format!(
                "measured here: {kind} took {} for {:.1}M parameters{} on {} (edgeforge {}), scaled to this run",
                secs(s.seconds),
                s.params as f64 / 1e6,
                s.tokens.map_or(String::new(), |t| format!(", {t} tokens")),
                edgeforge_core::summary::count(s.threads as u64, "thread"),
                s.version
            );
        }
        if let Some(note) = &est.note {
            basis = format!("{basis}; {note}");
        }
        total += seconds;
        lines.push(format!("pass {i}: {} ~{}, peak ~{:.0} MiB ({basis})", pass.name(), secs(seconds), peak as f64 / 1048576.0));
    }
    for t in &r.targets {
        lines.push(format!("target: {} for {}", crate::targets::artifact_format(t.format).name(), t.profile_name().unwrap_or("generic")));
    }
    lines.push(format!("total: ~{} (estimate)", secs(total)));
    Ok(lines)
}

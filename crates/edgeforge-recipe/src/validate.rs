//! Everything that can be checked without running: files exist, datasets resolve, pass order is legal,
//! options fit the model's shapes, gates have the measurements they compare. All problems are reported
//! at once, each at its line and column.

use std::path::PathBuf;

use serde_saphyr::Spanned;

use edgeforge_core::pass::Pass;

use crate::diagnostic::{suggest, Diagnostic, Place};
use crate::models;
use crate::parse::RecipeFile;
use crate::schema::Gates;
use crate::RecipeError;

pub use edgeforge_targets::GENERIC_PROFILE;

pub struct Validated {
    /// The model file or folder; `None` for a known model that is not fetched yet.
    pub model_path: Option<PathBuf>,
    pub passes: Vec<Box<dyn Pass>>,
}

/// How a recipe names a file: relative to the recipe's folder if that exists, else as given.
/// The one rule for paths in a recipe: a relative path is relative to the recipe's folder (an absolute path
/// is used as it is), never to the working directory, so a recipe means the same files wherever it is run
/// from.
pub fn resolve_path(rf: &RecipeFile, spec: &str) -> PathBuf {
    rf.base_dir().join(spec)
}

/// A recipe's text: a file at `spec` relative to the recipe's folder, else a named dataset searched in the
/// `shared/data` above the recipe's folder and then the usual places (`edgeforge_eval::datasets::search_dirs`).
pub fn recipe_text(rf: &RecipeFile, spec: &str) -> Result<edgeforge_eval::datasets::ResolvedText, edgeforge_eval::EvalError> {
    let path = resolve_path(rf, spec);
    if path.is_file() {
        return edgeforge_eval::datasets::resolve_text(&path.display().to_string());
    }
    let near: Vec<PathBuf> = edgeforge_eval::datasets::shared_data_above(&rf.base_dir()).into_iter().collect();
    edgeforge_eval::datasets::resolve_dataset_searching(spec, &near).map_err(|e| match e {
        edgeforge_eval::EvalError::UnknownText { spec, known } => edgeforge_eval::EvalError::UnknownRecipeText { spec, tried: path, known },
        other => other,
    })
}

fn resolve_text(rf: &RecipeFile, spec: &Spanned<String>, diags: &mut Vec<Diagnostic>) {
    if let Err(e) = recipe_text(rf, &spec.value) {
        diags.push(rf.diagnostic(spec.referenced, e.to_string(), None));
    }
}

pub fn validate(rf: &RecipeFile, fetch_model: bool) -> Result<Validated, RecipeError> {
    let r = &rf.recipe;
    let mut diags = Vec::new();
    let top = Place::START;

    if r.version != 1 {
        diags.push(rf.diagnostic(top, format!("version {} is not supported; this edgeforge reads version 1", r.version), None));
    }

    // Model.
    let model_path = match models::known(&r.model.value) {
        Some(m) if fetch_model => match models::fetch(m) {
            Ok(p) => Some(p),
            Err(e) => {
                diags.push(rf.diagnostic(r.model.referenced, e.to_string(), None));
                None
            }
        },
        Some(m) => models::cached(m),
        None => {
            let p = resolve_path(rf, &r.model.value);
            if p.exists() {
                Some(p)
            } else {
                let names = models::KNOWN_MODELS.iter().map(|m| m.name);
                let from_cwd = std::path::Path::new(&r.model.value).exists().then(|| {
                    format!("`{}` exists relative to the working directory, but paths in a recipe are relative to the recipe's folder: write it relative to {} or as an absolute path", r.model.value, rf.base_dir().display())
                });
                diags.push(rf.diagnostic(
                    r.model.referenced,
                    format!("model `{}` is neither a known model name nor a file (looked for {}; paths in a recipe are relative to its folder)", r.model.value, p.display()),
                    from_cwd.or_else(|| suggest(&r.model.value, names)).or_else(|| Some("known models: smollm2-135m-instruct".into())),
                ));
                None
            }
        }
    };

    // Datasets.
    if let Some(c) = &r.calibration {
        resolve_text(rf, &c.dataset, &mut diags);
    }
    if let Some(p) = &r.eval.perplexity {
        resolve_text(rf, &p.dataset, &mut diags);
        if p.ctx.get() < 4 {
            diags.push(rf.diagnostic(p.dataset.referenced, format!("eval.perplexity.ctx = {} is too small (at least 4)", p.ctx.get()), None));
        }
    }

    if let Some(k) = &r.eval.kld {
        resolve_text(rf, &k.dataset, &mut diags);
        if k.ctx.get() < 4 {
            diags.push(rf.diagnostic(k.dataset.referenced, format!("eval.kld.ctx = {} is too small (at least 4)", k.ctx.get()), None));
        }
    }

    // Passes: calibration needs and order.
    let passes: Vec<Box<dyn Pass>> = r.passes.iter().map(|p| p.value.build()).collect();
    let mut quantized_by: Option<(usize, &'static str)> = None;
    for (i, (spec, pass)) in r.passes.iter().zip(&passes).enumerate() {
        let needs = pass.needs();
        if pass.needs_quantized() && quantized_by.is_none() {
            diags.push(rf.diagnostic(
                spec.referenced,
                format!("passes[{i}] ({}) tunes quantized weights, but no pass before it quantizes the model", pass.name()),
                Some(format!("put {} after a quantizing pass, e.g. `gptq` with `format: q4_0`", pass.name())),
            ));
        }
        if needs.calibration && r.calibration.is_none() {
            diags.push(rf.diagnostic(
                spec.referenced,
                format!("passes[{i}] ({}) needs calibration data, but the recipe has no `calibration` section", pass.name()),
                Some("add `calibration: { dataset: wikitext-2-valid, samples: 128, seq_len: 512 }`".into()),
            ));
        }
        if let (true, Some((j, name))) = (needs.float_weights, quantized_by) {
            diags.push(rf.diagnostic(
                spec.referenced,
                format!("passes[{i}] ({}) needs float weights, but passes[{j}] ({name}) already quantized them", pass.name()),
                Some(format!("move {} before {name}", pass.name())),
            ));
        }
        if pass.effects().quantizes && quantized_by.is_none() {
            quantized_by = Some((i, pass.name()));
        }
    }

    // Targets. A pass that sets the MLP activation rules out the formats that cannot express it (GGUF's llama
    // architecture always applies SiLU, see `edgeforge_export::ExportError::GgufActivation`).
    if let Some(act) = passes.iter().rev().find_map(|p| p.activation_after()) {
        check_target_activation(rf, act, top, &mut diags);
    }
    for (i, t) in r.targets.iter().enumerate() {
        check_target_profile(rf, i, t, &mut diags);
    }

    // Gates.
    if let Some(g) = &r.gates {
        check_gates(rf, g, &mut diags);
    }

    // Checks that need the model's shapes.
    if let Some(path) = &model_path {
        if diags.is_empty() {
            match edgeforge_core::load_model(path) {
                Ok(model) => {
                    for (spec, pass) in r.passes.iter().zip(&passes) {
                        for issue in pass.check(&model.config) {
                            diags.push(rf.diagnostic(spec.referenced, format!("{}: {}: {}", pass.name(), issue.field, issue.message), None));
                        }
                    }
                    if let Some(p) = &r.eval.perplexity {
                        if p.ctx.get() > model.config.context_length {
                            diags.push(rf.diagnostic(
                                p.dataset.referenced,
                                format!("eval.perplexity.ctx = {} exceeds the model's context length {}", p.ctx.get(), model.config.context_length),
                                None,
                            ));
                        }
                    }
                }
                Err(e) => diags.push(rf.diagnostic(r.model.referenced, e.to_string(), None)),
            }
        }
    }

    if diags.is_empty() {
        Ok(Validated { model_path, passes })
    } else {
        Err(RecipeError::Invalid(diags))
    }
}

fn check_gates(rf: &RecipeFile, g: &Gates, diags: &mut Vec<Diagnostic>) {
    let r = &rf.recipe;
    let at = g.baseline.as_ref().map_or(Place::START, |b| b.referenced.into());
    if let Some(b) = &g.baseline {
        let path = resolve_path(rf, &b.value);
        if b.value != "input" && !path.is_file() {
            diags.push(rf.diagnostic(b.referenced, format!("gates.baseline `{}` is neither `input` nor an existing report.json (looked for {}; paths in a recipe are relative to its folder)", b.value, path.display()), None));
        } else if b.value != "input" {
            // Read now, not after the passes have run: a corrupt baseline is the recipe's problem, at its line.
            if let Err(e) = edgeforge_report::Report::read(&path) {
                diags.push(rf.diagnostic(b.referenced, format!("gates.baseline: {e}"), None));
            }
        }
    }
    if g.max_ppl_increase_pct.is_some() && r.eval.perplexity.is_none() {
        diags.push(rf.diagnostic(at, "gates.max_ppl_increase_pct needs eval.perplexity to measure", Some("add an eval.perplexity section".into())));
    }
    if g.min_decode_speedup.is_some() && r.eval.latency.is_none() {
        diags.push(rf.diagnostic(at, "gates.min_decode_speedup needs eval.latency to measure", Some("add an eval.latency section".into())));
    }
    if g.min_decode_speedup.is_some() && r.eval.latency.as_ref().is_some_and(|l| l.gen_tokens.get() < 2) {
        let hint = Some("set eval.latency.gen_tokens to 2 or more".into());
        diags.push(rf.diagnostic(at, "gates.min_decode_speedup needs decode steps, but eval.latency.gen_tokens = 1 times none (the only token comes from the prefill)", hint));
    }
}

/// A target's profile exists (at the profile's line:col, with the nearest shipped name) and lists the
/// target's format among the formats the device runs.
fn check_target_profile(rf: &RecipeFile, i: usize, t: &crate::schema::Target, diags: &mut Vec<Diagnostic>) {
    let Some(spanned) = t.profile.as_ref().filter(|p| p.value != GENERIC_PROFILE) else { return };
    let (name, at) = (spanned.value.as_str(), spanned.referenced);
    match edgeforge_targets::load_profile(name, &rf.base_dir()) {
        Err(e) => {
            let shipped = edgeforge_targets::profile::shipped_names();
            diags.push(rf.diagnostic(at, format!("targets[{i}].profile: {e}"), suggest(name, shipped.iter().map(String::as_str))));
        }
        Ok(profile) => {
            let format = crate::targets::artifact_format(t.format);
            if !profile.formats.contains(&format) {
                let runs: Vec<&str> = profile.formats.iter().map(|f| f.name()).collect();
                diags.push(rf.diagnostic(
                    at,
                    format!("targets[{i}]: profile `{name}` does not run `{}` artifacts (it runs: {})", format.name(), if runs.is_empty() { "none".to_owned() } else { runs.join(", ") }),
                    Some(format!("use format {} for this profile, or a profile that runs {}", runs.first().copied().unwrap_or("(none)"), format.name())),
                ));
            }
        }
    }
}

/// One diagnostic per target format that cannot hold a model whose MLP gate is `act`, naming the formats
/// that can.
fn check_target_activation(rf: &RecipeFile, act: edgeforge_core::Activation, at: Place, diags: &mut Vec<Diagnostic>) {
    use edgeforge_export::exporter::{exporter, EXPORTERS};
    let formats: Vec<_> = rf.recipe.targets.iter().map(|t| crate::targets::artifact_format(t.format)).collect();
    let able: Vec<&str> = EXPORTERS.iter().filter(|e| e.refusal(act).is_none()).map(|e| e.format().name()).collect();
    let able = match able.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => able.join(""),
    };
    for (i, f) in formats.iter().enumerate() {
        let Some(why) = exporter(*f).refusal(act).filter(|_| !formats[..i].contains(f)) else { continue };
        let name = f.name();
        diags.push(rf.diagnostic(
            at,
            format!("targets: a {name} target cannot hold this model: after activation-swap its MLP gate is {act}, and {why}"),
            Some(format!("drop the {name} target ({able} express {act}), or remove activation-swap")),
        ));
    }
}

//! The recipe's `targets`: a fit check against each device profile before anything is written (a model
//! that does not fit is refused with the shortfall and the fix, and the other targets still run), then the
//! artifact, then manifest.json over everything written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeforge_core::Model;
use edgeforge_export::exporter::{exporter, FloatChoice, TargetRequest, Written};
use edgeforge_export::ExportError;
use edgeforge_report::{Artifact, PassReport, TargetFit};
use edgeforge_targets::{check_fit, ArtifactFormat, FitInput, Profile};

use crate::parse::RecipeFile;
use crate::runner::Progress;
use crate::schema::{FloatFormat, Target, TargetFormat};
use crate::validate::GENERIC_PROFILE;
use crate::RecipeError;

/// Context a target must hold when the recipe does not say (`context:` on the target).
pub const DEFAULT_CONTEXT_TOKENS: u64 = 2048;

pub fn artifact_format(f: TargetFormat) -> ArtifactFormat {
    match f {
        TargetFormat::Gguf => ArtifactFormat::Gguf,
        TargetFormat::Safetensors => ArtifactFormat::Safetensors,
        TargetFormat::Onnx => ArtifactFormat::Onnx,
        TargetFormat::CBundle => ArtifactFormat::CBundle,
        TargetFormat::Nir => ArtifactFormat::Nir,
    }
}

/// The target's `float:` as the exporters take it.
pub fn float_choice(t: &Target) -> Option<FloatChoice> {
    t.float.map(|f| match f {
        FloatFormat::F16 => FloatChoice::F16,
        FloatFormat::F32 => FloatChoice::F32,
    })
}

/// The profile a target names, or `None` for no profile / `generic`.
pub fn profile_of(t: &Target, base_dir: &Path) -> Result<Option<Profile>, RecipeError> {
    match t.profile_name() {
        None | Some(GENERIC_PROFILE) => Ok(None),
        Some(name) => edgeforge_targets::load_profile(name, base_dir).map(Some).map_err(|e| RecipeError::Target(e.to_string())),
    }
}

/// The fit of `model` to `profile` as a report row (`artifact_bytes` filled in once written).
pub fn fit_row(profile: &Profile, t: &Target, input: &FitInput) -> TargetFit {
    let fit = check_fit(profile, input);
    TargetFit {
        format: artifact_format(t.format).name().to_owned(),
        profile: profile.name.clone(),
        fits: fit.fits,
        shortfalls: fit.shortfalls,
        suggestions: fit.suggestions,
        artifact_bytes: None,
        weight_bytes: input.weight_bytes,
        peak_memory_bytes: fit.peak_memory_bytes,
        context_tokens: input.context_tokens,
        decode_tok_s_estimate: fit.decode_tok_s_estimate,
        energy_per_token_uj_estimate: None,
        notes: fit.notes,
    }
}

/// Every file of an artifact (a file, or the files of a folder).
pub fn artifact_files(path: &Path) -> Result<Vec<PathBuf>, RecipeError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|source| RecipeError::Io { path: d.clone(), source })? {
            let p = e.map_err(|source| RecipeError::Io { path: d.clone(), source })?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Each target in turn: the fit check first (a model that does not fit is refused, with the shortfall and
/// the fix in its report row, and the other targets still run), then the exporter, then the fit again with
/// the weight bytes the exporter really wrote. Exporter notes go to the last pass's report (or the target's
/// fit row).
pub fn write_targets(
    rf: &RecipeFile,
    model: &Model,
    out_dir: &Path,
    reports: &mut [PassReport],
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(Vec<Artifact>, Vec<TargetFit>), RecipeError> {
    let mut artifacts = Vec::new();
    let mut fits = Vec::new();
    let stem = rf.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let mut wanted: Vec<String> = rf.recipe.targets.iter().flat_map(|t| exporter(artifact_format(t.format)).wants_layer_inputs(model)).collect();
    wanted.sort();
    wanted.dedup();
    let layer_inputs = if wanted.is_empty() { None } else { crate::activations::layer_inputs(rf, model, &wanted)? };
    for t in &rf.recipe.targets {
        progress(Progress::Stage { label: "writing targets", total: 0 });
        let profile = profile_of(t, &rf.base_dir())?;
        let req = TargetRequest {
            out_dir,
            stem: &stem,
            float: float_choice(t),
            context_tokens: t.context.map_or(DEFAULT_CONTEXT_TOKENS, |c| c.get() as u64),
            profile: profile.as_ref(),
            same_format_targets: rf.recipe.targets.iter().filter(|x| x.format == t.format).count(),
            layer_inputs: layer_inputs.as_ref(),
        };
        let written = write_target(t, model, &req, &mut fits)?;
        progress(Progress::Done);
        let Some(w) = written else { continue };
        let (bytes, sha256) = artifact_digest(&w.path)?;
        let last = reports.last_mut();
        if let Some(p) = &profile {
            if let Some(last) = last {
                last.notes.extend(w.pass_notes);
            }
            // The estimate again with the weight bytes actually written (not the artifact's bytes).
            let mut input = exporter(artifact_format(t.format)).fit_input(model, &req)?;
            input.weight_bytes = w.weight_bytes;
            let mut f = fit_row(p, t, &input);
            f.artifact_bytes = Some(bytes);
            f.energy_per_token_uj_estimate = w.energy_per_token_uj_estimate;
            f.notes.extend(w.target_notes);
            fits.push(f);
        } else if let Some(last) = last {
            // No fit row to carry the target's notes (generic target): the last pass's notes do.
            last.notes.extend(w.pass_notes.into_iter().chain(w.target_notes));
        }
        artifacts.push(Artifact {
            path: w.path.strip_prefix(out_dir).unwrap_or(&w.path).display().to_string(),
            format: artifact_format(t.format).name().to_owned(),
            profile: t.profile_name().map(str::to_owned),
            bytes,
            sha256,
        });
    }
    Ok((artifacts, fits))
}

/// One target's fit check and export; `None` (with the refused fit row pushed) when the device cannot hold
/// it, by the fit check before writing or by the exporter's own finer check.
fn write_target(t: &Target, model: &Model, req: &TargetRequest<'_>, fits: &mut Vec<TargetFit>) -> Result<Option<Written>, RecipeError> {
    let exporter = exporter(artifact_format(t.format));
    let fit = match req.profile {
        Some(p) => Some(fit_row(p, t, &exporter.fit_input(model, req)?)),
        None => None,
    };
    if let Some(f) = fit.as_ref().filter(|f| !f.fits) {
        fits.push(f.clone());
        return Ok(None);
    }
    match exporter.write(model, req) {
        Ok(w) => Ok(Some(w)),
        Err(ExportError::DoesNotFit { shortfalls, fixes, .. }) => match fit {
            Some(mut f) => {
                f.fits = false;
                f.shortfalls.extend(shortfalls);
                f.suggestions.extend(fixes);
                fits.push(f);
                Ok(None)
            }
            None => Err(RecipeError::Target(format!("{} export refused: {}; fix: {}", artifact_format(t.format).name(), shortfalls.join("; "), fixes.join("; or ")))),
        },
        Err(e) => Err(e.into()),
    }
}

/// Size and sha256 of a file, or of a folder's files (recursively) in path order.
fn artifact_digest(path: &Path) -> Result<(u64, String), RecipeError> {
    let mut files: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    // Every file, subfolders included (the C bundle has `mcu/`).
    for p in artifact_files(path)? {
        let bytes = std::fs::read(&p).map_err(|source| RecipeError::Io { path: p.clone(), source })?;
        files.insert(p, bytes);
    }
    let bytes = files.values().map(|b| b.len() as u64).sum();
    let parts: Vec<&[u8]> = files.values().map(Vec::as_slice).collect();
    Ok((bytes, edgeforge_core::hash::sha256_hex(&parts)))
}

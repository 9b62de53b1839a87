//! The recipe's `targets`: a fit check against each device profile before anything is written (a model
//! that does not fit is refused with the shortfall and the fix, and the other targets still run), then the
//! artifact, then manifest.json over everything written.

use std::path::{Path, PathBuf};

use edgeforge_core::arch::block_shape;
use edgeforge_core::{Model, TensorData};
use edgeforge_report::TargetFit;
use edgeforge_targets::{check_fit, ArtifactFormat, FitInput, Profile};

use crate::schema::{Target, TargetFormat};
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

/// The model as a target would receive it: its weight bytes, bit widths and shapes.
pub fn fit_input(model: &Model, format: ArtifactFormat, context_tokens: u64, f16_floats: bool) -> Result<FitInput, RecipeError> {
    let c = &model.config;
    let mut bits: Vec<u32> = Vec::new();
    let mut weight_bytes = 0u64;
    for (name, t) in &model.tensors {
        let b = match &t.data {
            TensorData::F32(_) if f16_floats && t.shape.len() == 2 => 16,
            TensorData::F32(_) => 32,
            TensorData::Blocks { dtype, .. } => dtype.code_bits(),
            TensorData::Quantized(q) => u32::from(q.format.bits),
        };
        weight_bytes += if b == 16 && matches!(t.data, TensorData::F32(_)) { t.n_elems() as u64 * 2 } else { t.storage_bytes() as u64 };
        // A spiking chip holds only the block linears (embedding and head stay on the host by default), so
        // only their widths are checked against it.
        let on_device = format != ArtifactFormat::Nir || name.starts_with("blk.");
        if t.shape.len() == 2 && on_device && !bits.contains(&b) {
            bits.push(b);
        }
    }
    bits.sort_unstable();
    let (mut kv, mut linear_params, mut linear_outputs, mut n_ff) = (0u64, 0u64, 0u64, 0u64);
    for l in 0..c.n_layers {
        let s = block_shape(model, l)?;
        let (e, q, kvd, ff) = (c.n_embd as u64, (s.n_heads * c.head_dim) as u64, (s.n_kv_heads * c.head_dim) as u64, s.n_ff as u64);
        kv += 2 * kvd;
        linear_params += e * (q + 2 * kvd) + q * e + 3 * e * ff;
        linear_outputs += q + 2 * kvd + e + 2 * ff + e;
        n_ff = n_ff.max(ff);
    }
    Ok(FitInput {
        format,
        weight_bytes,
        weight_bits: bits,
        params: model.tensors.values().map(|t| t.n_elems() as u64).sum(),
        embedding_params: model.tensors.get("token_embd.weight").map_or(0, |t| t.n_elems() as u64),
        n_layers: c.n_layers as u64,
        kv_floats_per_token: kv,
        n_embd: c.n_embd as u64,
        n_ff,
        vocab: c.vocab_size as u64,
        context_tokens,
        block_linear_params: linear_params,
        block_linear_outputs: linear_outputs,
    })
}

/// The profile a target names, or `None` for no profile / `generic`.
pub fn profile_of(t: &Target, base_dir: &Path) -> Result<Option<Profile>, RecipeError> {
    match t.profile.as_deref() {
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

/// The NIR exporter's limits (from the profile's neuromorphic section; unlimited without one) and options:
/// weights on the chip's widest grid, or on the model's own narrower one when every block linear is
/// already quantized (so its codes go over exactly).
pub fn nir_settings(profile: Option<&Profile>, model: &Model) -> (edgeforge_export::nir::NirLimits, edgeforge_export::nir::NirOptions) {
    let n = profile.and_then(|p| p.neuromorphic.as_ref());
    let limits = edgeforge_export::nir::NirLimits {
        profile: profile.map_or_else(|| GENERIC_PROFILE.to_owned(), |p| p.name.clone()),
        neurons: n.map_or(u64::MAX, |n| n.chips * n.neurons_per_chip),
        synapses: n.map_or(u64::MAX, |n| n.chips * n.synapses_per_chip),
        weight_bits_max: n.map_or(8, |n| n.weight_bits_max),
        max_fan_in: n.and_then(|n| n.max_fan_in),
        synop_energy_pj: n.and_then(|n| n.synop_energy_pj),
        synop_energy_source: n.and_then(|n| n.synop_energy_source.clone()),
    };
    let chip_max = limits.weight_bits_max.clamp(2, 8);
    let block_bits: Vec<Option<u32>> = model
        .tensors
        .iter()
        .filter(|(name, t)| name.starts_with("blk.") && t.shape.len() == 2)
        .map(|(_, t)| match &t.data {
            TensorData::Quantized(q) => Some(u32::from(q.format.bits)),
            _ => None,
        })
        .collect();
    let model_bits = if block_bits.iter().all(Option::is_some) { block_bits.iter().flatten().copied().max() } else { None };
    let weight_bits = model_bits.filter(|b| (2..chip_max).contains(b)).unwrap_or(chip_max);
    (limits, edgeforge_export::nir::NirOptions { weight_bits, ..Default::default() })
}

/// A GGUF for a `kind: cluster` profile: the file goes into `DIR` with the llama.cpp RPC plan beside it
/// (cluster-plan.md with the commands, cluster-plan.json). Returns the plan; when a node cannot hold its
/// share the folder is removed and the plan (with `fits: false` and the shortfall) is returned for the report.
pub fn write_cluster_plan(profile: &Profile, dir: &Path, gguf: &Path, context: u64) -> Result<edgeforge_targets::cluster::ClusterPlan, RecipeError> {
    let cluster = profile.cluster.as_ref().ok_or_else(|| RecipeError::Target(format!("profile {} lists no cluster nodes", profile.name)))?;
    let input = edgeforge_targets::cluster::ClusterInput::from_gguf(gguf, context).map_err(|e| RecipeError::Target(e.to_string()))?;
    let plan = edgeforge_targets::cluster::plan(profile, cluster, &input);
    if !plan.fits {
        let _ = std::fs::remove_dir_all(dir);
        return Ok(plan);
    }
    let name = gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let io = |path: PathBuf| move |source| RecipeError::Io { path, source };
    let md = dir.join("cluster-plan.md");
    edgeforge_export::atomic::write_file(&md, |w| w.write_all(plan.markdown(&name).as_bytes())).map_err(io(md.clone()))?;
    let json = dir.join("cluster-plan.json");
    let text = serde_json::to_string_pretty(&plan).map_err(|e| RecipeError::Target(e.to_string()))?;
    edgeforge_export::atomic::write_file(&json, |w| w.write_all(text.as_bytes())).map_err(io(json.clone()))?;
    Ok(plan)
}

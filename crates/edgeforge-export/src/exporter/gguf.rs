//! llama.cpp GGUF: `{stem}.gguf`; for a `kind: cluster` profile, `{stem}-cluster/` with the GGUF and the
//! llama.cpp RPC plan beside it (cluster-plan.md with the commands, cluster-plan.json).

use std::path::Path;

use edgeforge_core::{Activation, Model};
use edgeforge_targets::cluster::{plan, Cluster, ClusterInput};
use edgeforge_targets::{ArtifactFormat, Profile};

use super::{Exporter, FloatChoice, TargetRequest, Written};
use crate::error::{ExportError, Result};
use crate::gguf_model::{write_gguf_with, GgufOptions};

pub struct Gguf;

impl Exporter for Gguf {
    fn format(&self) -> ArtifactFormat {
        ArtifactFormat::Gguf
    }

    fn refusal(&self, activation: Activation) -> Option<&'static str> {
        (activation != Activation::Silu).then_some("llama.cpp's llama architecture always applies SiLU")
    }

    fn write(&self, model: &Model, req: &TargetRequest<'_>) -> Result<Written> {
        let options = GgufOptions { f16_matrices: req.float == Some(FloatChoice::F16) };
        let cluster = req.profile.and_then(|p| p.cluster.as_ref().map(|c| (p, c)));
        let Some((profile, cluster)) = cluster else {
            let path = req.out_dir.join(format!("{}.gguf", req.stem));
            let notes = write_gguf_with(model, &path, req.stem, options)?;
            return Ok(Written { path, weight_bytes: notes.weight_bytes, pass_notes: notes.fallbacks, ..Written::default() });
        };
        let dir = req.out_dir.join(format!("{}-cluster", req.stem));
        std::fs::create_dir_all(&dir).map_err(|source| ExportError::Io { path: dir.clone(), source })?;
        let gguf = dir.join(format!("{}.gguf", req.stem));
        let notes = write_gguf_with(model, &gguf, req.stem, options)?;
        let result = write_plan(profile, cluster, &dir, &gguf, req.context_tokens);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let note = result?;
        Ok(Written { path: dir, weight_bytes: notes.weight_bytes, pass_notes: notes.fallbacks, target_notes: vec![note], ..Written::default() })
    }
}

/// Plans the cluster from the GGUF just written and writes the plan beside it; a node that cannot hold its
/// share refuses the target (`DoesNotFit`). Returns the note for the target's fit row.
fn write_plan(profile: &Profile, cluster: &Cluster, dir: &Path, gguf: &Path, context: u64) -> Result<String> {
    let invalid = |path: &Path, e: String| ExportError::Io { path: path.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) };
    let input = ClusterInput::from_gguf(gguf, context).map_err(|e| invalid(gguf, e.to_string()))?;
    let p = plan(profile, cluster, &input);
    if !p.fits {
        let fixes = vec!["add a node, raise a node's budget_bytes, or quantize to fewer bits".to_owned()];
        return Err(ExportError::DoesNotFit { target: profile.name.clone(), shortfalls: p.shortfalls, fixes });
    }
    let name = gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let json = serde_json::to_string_pretty(&p).map_err(|e| invalid(dir, e.to_string()))?;
    for (file, body) in [("cluster-plan.md", p.markdown(&name)), ("cluster-plan.json", json)] {
        let path = dir.join(file);
        crate::atomic::write_file(&path, |w| w.write_all(body.as_bytes())).map_err(|source| ExportError::Io { path: path.clone(), source })?;
    }
    Ok(format!(
        "cluster plan: --tensor-split {:?} over {} nodes; decode about {:.1} tok/s ({})",
        p.tensor_split,
        p.nodes.len(),
        p.decode_tok_s_estimate,
        p.estimate_note
    ))
}

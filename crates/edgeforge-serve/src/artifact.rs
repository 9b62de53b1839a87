//! Verify the export folder against manifest.json (edgeforge-targets' `verify`, the same check as
//! `edgeforge verify`) before anything is loaded, then load the GGUF artifact it lists and check that the
//! bytes loaded are the bytes verified.

use std::path::{Path, PathBuf};

use edgeforge_runtime::LlamaRuntime;
use edgeforge_targets::manifest::{self, Manifest, SignatureState};
use edgeforge_tokenizer::Tokenizer;

use crate::error::ServeError;

/// A folder that matched its manifest.
#[derive(Debug, Clone)]
pub struct Verified {
    pub dir: PathBuf,
    /// The GGUF artifact listed in the manifest, and its sha256 there.
    pub gguf: PathBuf,
    pub gguf_sha256: String,
    pub files_checked: usize,
    pub signature: Option<SignatureState>,
}

/// Check every file of `dir` against its manifest (size, sha256, no unlisted file) and the ed25519
/// signature: with `public_key`, and refused when the manifest is signed but no key is given.
pub fn verify_dir(dir: &Path, public_key: Option<&Path>) -> Result<Verified, ServeError> {
    let refused = |problem: String| ServeError::Refused { dir: dir.to_path_buf(), problem };
    let key = public_key.map(manifest::read_public_key).transpose()?;
    if key.is_none() && dir.join(manifest::SIGNATURE).exists() {
        return Err(refused(format!("{}: the manifest is signed but no --public-key was given to check it (fix: pass --public-key KEY.pub)", manifest::SIGNATURE)));
    }
    let v = manifest::verify(dir, key.as_ref())?;
    if let Some(first) = v.problems.first() {
        let more = match v.problems.len() {
            1 => String::new(),
            n => format!(" (and {} more problem(s); `edgeforge verify {}` lists them)", n - 1, dir.display()),
        };
        return Err(refused(format!("{first}{more}")));
    }
    let m = read_manifest(dir)?;
    let entry = m.files.iter().find(|f| f.path.ends_with(".gguf")).ok_or_else(|| refused(format!("{}: lists no .gguf artifact to serve", manifest::MANIFEST)))?;
    Ok(Verified { dir: dir.to_path_buf(), gguf: dir.join(&entry.path), gguf_sha256: entry.sha256.clone(), files_checked: v.files_checked, signature: v.signature })
}

fn read_manifest(dir: &Path) -> Result<Manifest, ServeError> {
    let path = dir.join(manifest::MANIFEST);
    let bytes = edgeforge_core::read_limit::read_at_most(&path, edgeforge_core::read_limit::MAX_DOCUMENT_BYTES, "manifest")
        .map_err(|e| ServeError::BadInput(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| ServeError::BadInput(format!("{}: {e}", path.display())))
}

/// The model ready to serve.
pub struct Loaded {
    pub runtime: LlamaRuntime,
    pub tokenizer: Tokenizer,
    /// `tokenizer.chat_template` from the GGUF metadata, if the file has one.
    pub chat_template: Option<String>,
    pub context_length: usize,
    /// The artifact's file name, served as the model id.
    pub name: String,
}

/// Load the verified GGUF. The loader hashes the bytes it mapped: they must be the manifest's, so a file
/// swapped between the check and the load is refused too.
pub fn load(v: &Verified) -> Result<Loaded, ServeError> {
    let mut model = edgeforge_core::load_model(&v.gguf)?;
    if model.source.sha256 != v.gguf_sha256 {
        return Err(ServeError::Refused {
            dir: v.dir.clone(),
            problem: format!("{}: changed after verification (sha256 {}, manifest says {})", v.gguf.display(), model.source.sha256, v.gguf_sha256),
        });
    }
    let chat_template = chat_template(&v.gguf)?;
    let runtime = LlamaRuntime::new(edgeforge_runtime::weights_from_model_owned(&mut model)?)?;
    let name = v.gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Loaded { runtime, tokenizer: model.tokenizer, chat_template, context_length: model.config.context_length, name })
}

fn chat_template(gguf: &Path) -> Result<Option<String>, ServeError> {
    let file = edgeforge_core::gguf::GgufFile::open(gguf)?;
    Ok(file.optional_str("tokenizer.chat_template")?.map(str::to_owned))
}

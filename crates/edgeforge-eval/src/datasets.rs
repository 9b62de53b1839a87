//! Evaluation and calibration texts: manifests (compiled in from `datasets/*.yaml`) and the run-time lookup.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{EvalError, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub licence: String,
    #[serde(rename = "use")]
    pub intended_use: String,
    pub source_url: String,
    pub how_to_get: String,
}

const MANIFEST_SOURCES: [(&str, &str); 4] = [
    ("wikitext-2-test.yaml", include_str!("../../../datasets/wikitext-2-test.yaml")),
    ("wikitext-2-valid.yaml", include_str!("../../../datasets/wikitext-2-valid.yaml")),
    ("wikitext-2-test-tokens.yaml", include_str!("../../../datasets/wikitext-2-test-tokens.yaml")),
    ("tinyshakespeare.yaml", include_str!("../../../datasets/tinyshakespeare.yaml")),
];

/// The manifests shipped with this build.
pub fn manifests() -> Result<Vec<DatasetManifest>> {
    MANIFEST_SOURCES
        .iter()
        .map(|(file, text)| {
            serde_saphyr::from_str(text)
                .map_err(|e| EvalError::Manifest { file: (*file).to_owned(), reason: e.to_string() })
        })
        .collect()
}

/// A text located on disk and checked.
#[derive(Debug, Clone)]
pub struct ResolvedText {
    pub path: PathBuf,
    /// The manifest it matched, if it was asked for by name.
    pub dataset: Option<String>,
    pub sha256: String,
    pub text: String,
}

/// Folders searched for a named dataset, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("EDGEFORGE_DATA") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for anc in cwd.ancestors() {
            let d = anc.join("shared").join("data");
            if d.is_dir() {
                dirs.push(d);
                break;
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/edgeforge/data"));
    }
    dirs
}

/// `spec` is a path to an existing file, a dataset name (`wikitext-2-test`) or a manifest's file name
/// (`wiki.test.raw`).
pub fn resolve_text(spec: &str) -> Result<ResolvedText> {
    resolve_text_in(spec, &search_dirs())
}

/// `resolve_text` with an explicit list of folders to search for named datasets.
pub fn resolve_text_in(spec: &str, dirs: &[PathBuf]) -> Result<ResolvedText> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return read_text(as_path, None);
    }
    let all = manifests()?;
    let Some(m) = all.iter().find(|m| m.name == spec || m.file == spec) else {
        return Err(EvalError::UnknownText {
            spec: spec.to_owned(),
            known: all.iter().map(|m| format!("{} ({})", m.name, m.file)).collect(),
        });
    };
    for dir in dirs {
        let candidate = dir.join(&m.file);
        if candidate.is_file() {
            let resolved = read_text(&candidate, Some(m.name.clone()))?;
            if resolved.sha256 != m.sha256 {
                return Err(EvalError::CorruptText {
                    path: candidate,
                    name: m.name.clone(),
                    expected: m.sha256.clone(),
                    got: resolved.sha256,
                    how_to_get: m.how_to_get.clone(),
                });
            }
            return Ok(resolved);
        }
    }
    Err(EvalError::MissingText {
        name: m.name.clone(),
        file: m.file.clone(),
        searched: dirs.to_vec(),
        how_to_get: m.how_to_get.clone(),
        source_url: m.source_url.clone(),
    })
}

/// Largest text read into memory: wikitext-103's training split is about half of it. The size is checked
/// before reading, so a huge (or sparse) file is refused instead of filling memory.
const MAX_TEXT_BYTES: u64 = 1 << 30;

fn read_text(path: &Path, dataset: Option<String>) -> Result<ResolvedText> {
    let bytes = edgeforge_core::read_limit::read_at_most(path, MAX_TEXT_BYTES, "text").map_err(|source| {
        match source.get_ref().and_then(|e| e.downcast_ref::<edgeforge_core::read_limit::TooLarge>()) {
            Some(t) => EvalError::TextTooLarge { path: path.to_path_buf(), bytes: t.bytes, max_bytes: t.max_bytes },
            None => EvalError::Io { path: path.to_path_buf(), source },
        }
    })?;
    if bytes.is_empty() {
        return Err(EvalError::EmptyText { path: path.to_path_buf() });
    }
    let sha256 = edgeforge_core::hash::sha256_hex(&[&bytes]);
    let text = String::from_utf8(bytes).map_err(|e| EvalError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    if let Some(offset) = text.bytes().position(|b| b == 0) {
        return Err(EvalError::NulByte { path: path.to_path_buf(), offset });
    }
    Ok(ResolvedText { path: path.to_path_buf(), dataset, sha256, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_manifests_parse_and_are_distinct() {
        let all = manifests().unwrap();
        assert_eq!(all.len(), MANIFEST_SOURCES.len());
        for m in &all {
            assert_eq!(m.sha256.len(), 64, "{}", m.name);
            assert_eq!(all.iter().filter(|o| o.name == m.name || o.file == m.file).count(), 1);
        }
    }

    #[test]
    fn empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.txt");
        std::fs::write(&p, b"").unwrap();
        let e = resolve_text(p.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, EvalError::EmptyText { .. }), "{e}");
        assert!(e.to_string().contains("empty.txt"));
    }

    #[test]
    fn named_dataset_is_found_checked_and_explained_when_missing_or_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let e = resolve_text_in("wikitext-2-test", &dirs).unwrap_err();
        assert!(matches!(e, EvalError::MissingText { .. }), "{e}");
        assert!(e.to_string().contains("wikitext-2-raw-v1.zip") && e.to_string().contains(&dir.path().display().to_string()), "{e}");
        std::fs::write(dir.path().join("wiki.test.raw"), " \n = Not Robert Boulter = \n").unwrap();
        let e = resolve_text_in("wiki.test.raw", &dirs).unwrap_err();
        assert!(matches!(e, EvalError::CorruptText { .. }) && e.to_string().contains("173c87a5"), "{e}");
        // The real file, where CI and developers keep it, resolves by name and by file name.
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
        if shared.join("wiki.test.raw").is_file() {
            let r = resolve_text_in("wikitext-2-test", &[dir.path().to_path_buf(), shared.clone()]);
            assert!(matches!(r, Err(EvalError::CorruptText { .. })), "first folder wins, and its file is corrupt");
            let r = resolve_text_in("wiki.test.raw", &[shared]).unwrap();
            assert_eq!(r.dataset.as_deref(), Some("wikitext-2-test"));
            assert_eq!(r.text.len(), 1_290_590);
        }
    }

    #[test]
    fn unknown_name_lists_known_ones() {
        let e = resolve_text("no-such-dataset").unwrap_err();
        assert!(e.to_string().contains("wikitext-2-test"), "{e}");
    }
}

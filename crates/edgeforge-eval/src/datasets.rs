//! Evaluation and calibration texts: manifests (compiled in from `datasets/*.yaml`) and the run-time lookup.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::download::{DownloadEvent, DownloadSpec};
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
    /// Where edgeforge downloads the file from on first use: the file itself, byte for byte (so `bytes` and
    /// `sha256` check the download). Absent when no such address is known (the file must be fetched by hand).
    #[serde(default)]
    pub download_url: Option<String>,
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

/// Where downloaded datasets are kept: `$EDGEFORGE_DATASET_CACHE`, else `~/.cache/edgeforge/datasets`.
pub fn download_dir() -> Option<PathBuf> {
    std::env::var_os("EDGEFORGE_DATASET_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/edgeforge/datasets")))
}

/// Is downloading allowed (`EDGEFORGE_OFFLINE` unset or `0`)?
fn online() -> bool {
    std::env::var_os("EDGEFORGE_OFFLINE").is_none_or(|v| v == "0")
}

/// Draws download progress (the CLI sets an indicatif bar; nothing is drawn otherwise).
type ProgressHook = Box<dyn Fn(DownloadEvent<'_>) + Send + Sync>;
static DOWNLOAD_PROGRESS: std::sync::OnceLock<ProgressHook> = std::sync::OnceLock::new();

/// Set once, by the binary: called as a dataset downloads.
pub fn set_download_progress(hook: ProgressHook) {
    let _ = DOWNLOAD_PROGRESS.set(hook);
}

fn report_progress(e: DownloadEvent<'_>) {
    if let Some(h) = DOWNLOAD_PROGRESS.get() {
        h(e);
    }
}

/// Folders searched for a named dataset, in order (the download folder last).
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("EDGEFORGE_DATA") {
        dirs.push(PathBuf::from(d));
    }
    // `shared/data` in the nearest ancestor of the working directory, then of the source checkout this
    // binary was built from (so a checkout's `../shared/data` is found from any working directory).
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    for start in std::env::current_dir().ok().into_iter().chain([checkout]) {
        if let Some(d) = shared_data_above(&start).filter(|d| !dirs.contains(d)) {
            dirs.push(d);
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/edgeforge/data"));
    }
    dirs.extend(download_dir());
    dirs
}

/// `shared/data` in the nearest ancestor of `start` (itself included) that has one.
pub fn shared_data_above(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|a| a.join("shared").join("data")).find(|d| d.is_dir())
}

/// A named dataset only (`spec` is never taken as a path relative to the working directory), searched in
/// `first` before the usual [`search_dirs`] (a recipe's folder's `shared/data`).
pub fn resolve_dataset_searching(spec: &str, first: &[PathBuf]) -> Result<ResolvedText> {
    let download = download_dir().filter(|_| online());
    let mut dirs: Vec<PathBuf> = first.to_vec();
    dirs.extend(search_dirs().into_iter().filter(|d| !first.contains(d)));
    resolve_named(spec, &dirs, download.as_deref())
}

/// `spec` is a path to an existing file, a dataset name (`wikitext-2-test`) or a manifest's file name
/// (`wiki.test.raw`). A named dataset found in none of the [`search_dirs`] is downloaded into
/// [`download_dir`] when its manifest has a `download_url` (unless `EDGEFORGE_OFFLINE` is set).
pub fn resolve_text(spec: &str) -> Result<ResolvedText> {
    let download = download_dir().filter(|_| online());
    resolve_text_with(spec, &search_dirs(), download.as_deref())
}

/// `resolve_text` with an explicit list of folders to search for named datasets, never downloading.
pub fn resolve_text_in(spec: &str, dirs: &[PathBuf]) -> Result<ResolvedText> {
    resolve_text_with(spec, dirs, None)
}

fn resolve_text_with(spec: &str, dirs: &[PathBuf], download: Option<&Path>) -> Result<ResolvedText> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return read_text(as_path, None);
    }
    resolve_named(spec, dirs, download)
}

fn resolve_named(spec: &str, dirs: &[PathBuf], download: Option<&Path>) -> Result<ResolvedText> {
    let all = manifests()?;
    let Some(m) = all.iter().find(|m| m.name == spec || m.file == spec) else {
        return Err(EvalError::UnknownText {
            spec: spec.to_owned(),
            known: all.iter().map(|m| format!("{} ({})", m.name, m.file)).collect(),
        });
    };
    find_or_download(m, dirs, download)
}

/// The manifest's file from the first of `dirs` that has it (no network then); else, when `download` is
/// given and the manifest has a `download_url`, downloaded into that folder.
pub fn find_or_download(m: &DatasetManifest, dirs: &[PathBuf], download: Option<&Path>) -> Result<ResolvedText> {
    let found = find_in(m, dirs);
    let (Err(EvalError::MissingText { .. }), Some(dir), Some(url)) = (&found, download, m.download_url.as_deref()) else { return found };
    let dest = dir.join(&m.file);
    let spec = DownloadSpec { name: &m.name, url, dest: &dest, bytes: m.bytes, sha256: &m.sha256 };
    crate::download::download(&spec, &report_progress).map_err(|source| EvalError::Download { name: m.name.clone(), url: url.to_owned(), source })?;
    find_in(m, &[dir.to_path_buf()])
}

fn find_in(m: &DatasetManifest, dirs: &[PathBuf]) -> Result<ResolvedText> {
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

/// Texts are read whole up to `MAX_TEXT_BYTES`; the size is checked before reading, so a huge (or sparse)
/// file is refused instead of filling memory.
fn read_text(path: &Path, dataset: Option<String>) -> Result<ResolvedText> {
    let bytes = edgeforge_core::read_limit::read_at_most(path, edgeforge_core::read_limit::MAX_TEXT_BYTES, "text").map_err(|source| {
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

/// The part `[from, to]` (shares of its bytes, 0 ≤ from ≤ to ≤ 1) of `text`, both ends moved forward to the
/// next line start, so `[0, f]` and `[f, 1]` split a text into two parts that share no line.
pub fn text_slice(text: &str, [from, to]: [f64; 2]) -> &str {
    let cut = |share: f64| -> usize {
        let at = ((text.len() as f64 * share.clamp(0.0, 1.0)) as usize).min(text.len());
        if at == 0 {
            return 0;
        }
        text[at - 1..].find('\n').map_or(text.len(), |i| at + i)
    };
    let (a, b) = (cut(from), cut(to));
    text.get(a..b.max(a)).unwrap_or_default()
}

/// A part of a text, `[from, to]` as shares of its bytes (0 ≤ from < to ≤ 1), checked when read so a bad one
/// is reported at its place in the recipe.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "[f64; 2]", into = "[f64; 2]")]
pub struct Slice(pub [f64; 2]);

impl TryFrom<[f64; 2]> for Slice {
    type Error = String;
    fn try_from(v: [f64; 2]) -> std::result::Result<Self, String> {
        slice_issue(v).map_or(Ok(Slice(v)), Err)
    }
}

impl From<Slice> for [f64; 2] {
    fn from(s: Slice) -> Self {
        s.0
    }
}

impl Slice {
    pub const WHOLE: Slice = Slice([0.0, 1.0]);
}

/// Checks a `[from, to]` slice: one message when it is not 0 ≤ from < to ≤ 1.
pub fn slice_issue([from, to]: [f64; 2]) -> Option<String> {
    (!((0.0..1.0).contains(&from) && from < to && to <= 1.0)).then(|| format!("slice [{from}, {to}] must be two shares with 0 ≤ from < to ≤ 1, e.g. [0.0, 0.9]"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slices_split_a_text_at_line_starts_without_overlap() {
        let text = "one\ntwo\nthree\nfour\n";
        let (a, b) = (text_slice(text, [0.0, 0.5]), text_slice(text, [0.5, 1.0]));
        assert_eq!(format!("{a}{b}"), text);
        assert!(a.ends_with('\n') && !b.is_empty(), "{a:?} {b:?}");
        assert_eq!(text_slice(text, [0.0, 1.0]), text);
        assert!(slice_issue([0.0, 0.9]).is_none());
        for bad in [[0.9, 0.1], [-0.1, 0.5], [0.0, 1.5], [f64::NAN, 1.0], [0.5, 0.5]] {
            assert!(slice_issue(bad).is_some(), "{bad:?}");
        }
    }

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


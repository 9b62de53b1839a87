//! Artifacts appear whole or not at all: everything is written under a temporary name in the destination's
//! own folder (same filesystem, so the final rename is atomic), then renamed into place.

use std::path::{Path, PathBuf};

use crate::error::{ExportError, Result};

/// A folder being built next to its final place; dropped without `commit`, it is removed.
pub struct StagedDir {
    staging: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Refuses an existing `dest` unless `replace` is set.
    pub fn new(dest: &Path, replace: bool) -> Result<Self> {
        if dest.exists() && !replace {
            return Err(ExportError::Exists { path: dest.to_path_buf() });
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| ExportError::io(&parent, e))?;
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| ExportError::io(&staging, e))?;
        }
        std::fs::create_dir(&staging).map_err(|e| ExportError::io(&staging, e))?;
        Ok(Self { staging, dest: dest.to_path_buf(), committed: false })
    }

    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Move the finished folder into place (replacing an old one only now, after everything was written).
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.dest.exists() {
            let old = self.staging.with_extension("old");
            std::fs::rename(&self.dest, &old).map_err(|e| ExportError::io(&self.dest, e))?;
            std::fs::rename(&self.staging, &self.dest).map_err(|e| ExportError::io(&self.dest, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| ExportError::io(&old, e))?;
        } else {
            std::fs::rename(&self.staging, &self.dest).map_err(|e| ExportError::io(&self.dest, e))?;
        }
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

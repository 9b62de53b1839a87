//! Artifacts appear whole or not at all: everything is written under a temporary name in the destination's
//! own folder (same filesystem, so the final rename is atomic), then renamed into place. On every error path
//! (a failed write such as a full disk, a failed sync or rename, an early return, a panic) the temporary
//! file or folder is removed, so nothing half-written is left behind.

use std::io::Write;
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

/// Write the file `dest` whole or not at all: `write` fills a temporary file in `dest`'s folder (buffered),
/// which is flushed, synced and renamed over `dest`. When `write` or any later step fails, the temporary file
/// is removed (it is deleted on drop unless persisted) and the error returned; `dest` is untouched.
pub fn write_file(dest: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    // Through the plain `File`: tempfile's own `Write` would name its temporary path in every error.
    let mut out = std::io::BufWriter::new(tmp.as_file());
    write(&mut out)?;
    out.flush()?;
    drop(out);
    tmp.as_file().sync_all()?;
    // Temp files are created owner-only; an output file is meant to be shared like any other.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// A fresh folder with `name` written in it as `first`.
    fn folder_with(name: &str, first: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dest = tmp.path().join(name);
        assert!(write_file(&dest, |w| w.write_all(first)).is_ok());
        (tmp, dest)
    }

    #[test]
    fn a_writer_that_fails_midway_leaves_no_file_and_the_old_one_intact() {
        let (tmp, dest) = folder_with("000-pass.ckpt", b"old");
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let r = write_file(&dest, |w| {
            w.write_all(&[7u8; 1 << 16])?;
            Err(full)
        });
        assert_eq!(r.map_err(|e| e.kind()), Err(std::io::ErrorKind::StorageFull));
        assert_eq!(entries(tmp.path()), ["000-pass.ckpt"], "the temporary file must be gone");
        assert_eq!(std::fs::read(&dest).ok().as_deref(), Some(&b"old"[..]));
    }

    #[test]
    fn a_finished_file_replaces_the_old_one_and_is_readable_by_others() {
        let (tmp, dest) = folder_with("a.gguf", b"one");
        assert!(write_file(&dest, |w| w.write_all(b"two")).is_ok());
        assert_eq!(entries(tmp.path()), ["a.gguf"]);
        assert_eq!(std::fs::read(&dest).ok().as_deref(), Some(&b"two"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&dest).map(|m| m.permissions().mode() & 0o777).ok(), Some(0o644));
        }
    }
}

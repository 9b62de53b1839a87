//! manifest.json beside every export: each file's size and sha256, the target, the recipe's hash, the
//! edgeforge version and the metrics measured before export; optionally signed with ed25519
//! (manifest.sig holds the hex signature of manifest.json's exact bytes). `verify` re-hashes everything
//! and reports each mismatch.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TargetError};

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
/// The lock a run holds on its output folder (edgeforge-cli); bookkeeping, like checkpoints/ and report.*.
pub const RUN_LOCK: &str = ".edgeforge.lock";
const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the manifest's folder, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub edgeforge_version: String,
    pub recipe_sha256: Option<String>,
    /// Per artifact: its format and target profile.
    pub targets: Vec<serde_json::Value>,
    pub files: Vec<FileEntry>,
    /// What was measured before export (perplexity, latency, …), as in report.json.
    pub metrics: serde_json::Value,
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).map_err(|e| TargetError::io(path, e))?;
    let mut h = Sha256::new();
    let bytes = std::io::copy(&mut f, &mut h).map_err(|e| TargetError::io(path, e))?;
    Ok((bytes, hex::encode(h.finalize())))
}

/// Every regular file under `dir` (recursively), except the manifest and its signature, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| TargetError::io(&d, e))? {
            let p = e.map_err(|e| TargetError::io(&d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.parent() != Some(dir) || !matches!(p.file_name().and_then(|n| n.to_str()), Some(MANIFEST | SIGNATURE)) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Hash the given files (relative to `dir`) into a manifest.
pub fn build(dir: &Path, files: &[PathBuf], recipe_sha256: Option<String>, targets: Vec<serde_json::Value>, metrics: serde_json::Value) -> Result<Manifest> {
    let mut entries = Vec::new();
    for f in files {
        let (bytes, sha256) = sha256_file(f)?;
        entries.push(FileEntry { path: relative(dir, f), bytes, sha256 });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest { schema_version: SCHEMA_VERSION, edgeforge_version: env!("CARGO_PKG_VERSION").to_owned(), recipe_sha256, targets, files: entries, metrics })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path)).map_err(|e| TargetError::io(path, e))
}

/// Write `manifest.json` (and `manifest.sig` when a signing key is given) into `dir`.
pub fn write(dir: &Path, manifest: &Manifest, signing_key: Option<&SigningKey>) -> Result<PathBuf> {
    let path = dir.join(MANIFEST);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| TargetError::Manifest { path: path.clone(), message: e.to_string() })?;
    write_atomic(&path, &json)?;
    if let Some(key) = signing_key {
        let sig = key.sign(&json);
        write_atomic(&dir.join(SIGNATURE), hex::encode(sig.to_bytes()).as_bytes())?;
    }
    Ok(path)
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Verification {
    pub files_checked: usize,
    pub problems: Vec<String>,
    /// Checked only when a public key is given.
    pub signature: Option<SignatureState>,
}

/// The signature of a manifest under the given public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureState {
    Valid,
    /// manifest.sig exists but does not verify (tampered, or another key).
    Invalid,
    /// There is no manifest.sig: the run was not signed.
    NotSigned,
}

/// Check every file listed in `dir/manifest.json` (size and sha256), files present but not listed, and
/// with a public key the signature.
pub fn verify(dir: &Path, public_key: Option<&VerifyingKey>) -> Result<Verification> {
    let path = dir.join(MANIFEST);
    let json = edgeforge_core::read_limit::read_at_most(&path, edgeforge_core::read_limit::MAX_DOCUMENT_BYTES, "manifest")
        .map_err(|e| TargetError::io(&path, e))?;
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| TargetError::Manifest { path: path.clone(), message: format!("not a valid manifest: {e}") })?;
    let mut v = Verification::default();
    for f in &manifest.files {
        // Checked before the path is joined: "/etc/passwd" joined to the folder is /etc/passwd.
        if f.path.split(['/', '\\']).any(|c| c == ".." || c.is_empty()) {
            return Err(TargetError::Manifest { path, message: format!("file path `{}` leaves the folder", f.path) });
        }
        let p = dir.join(&f.path);
        match sha256_file(&p) {
            Err(_) => v.problems.push(format!("{}: listed but missing", f.path)),
            Ok((bytes, _)) if bytes != f.bytes => v.problems.push(format!("{}: {bytes} bytes, manifest says {}", f.path, f.bytes)),
            Ok((_, sha)) if sha != f.sha256 => v.problems.push(format!("{}: sha256 {sha}, manifest says {}", f.path, f.sha256)),
            Ok(_) => {}
        }
        v.files_checked += 1;
    }
    for p in files_under(dir)? {
        let rel = relative(dir, &p);
        if !manifest.files.iter().any(|f| f.path == rel) && !rel.starts_with("checkpoints/") && !rel.starts_with("report.") && rel != RUN_LOCK {
            v.problems.push(format!("{rel}: present but not in the manifest"));
        }
    }
    if let Some(key) = public_key {
        let sig_path = dir.join(SIGNATURE);
        let state = if !sig_path.exists() {
            SignatureState::NotSigned
        } else {
            let ok = edgeforge_core::read_limit::read_at_most(&sig_path, 4096, "signature")
                .ok()
                .and_then(|s| hex::decode(String::from_utf8_lossy(&s).trim()).ok())
                .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
                .is_some_and(|b| key.verify(&json, &Signature::from_bytes(&b)).is_ok());
            if ok {
                SignatureState::Valid
            } else {
                SignatureState::Invalid
            }
        };
        match state {
            SignatureState::Valid => {}
            SignatureState::Invalid => v.problems.push(format!("{SIGNATURE}: does not match manifest.json under the given public key")),
            SignatureState::NotSigned => v.problems.push(format!("not signed: there is no {SIGNATURE} (the run was made without --sign-key), but a public key was given")),
        }
        v.signature = Some(state);
    }
    Ok(v)
}

/// A signing key from a file holding its 32-byte seed in hex.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(|e| TargetError::io(path, e))?;
    let bytes = hex::decode(text.trim()).map_err(|e| TargetError::Key { path: path.to_owned(), message: format!("not hex: {e}") })?;
    let seed = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| TargetError::Key { path: path.to_owned(), message: format!("{} bytes, expected a 32-byte ed25519 seed in hex", bytes.len()) })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A public key from a file holding its 32 bytes in hex.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(|e| TargetError::io(path, e))?;
    let bytes = hex::decode(text.trim()).map_err(|e| TargetError::Key { path: path.to_owned(), message: format!("not hex: {e}") })?;
    let raw = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| TargetError::Key { path: path.to_owned(), message: format!("{} bytes, expected a 32-byte ed25519 public key in hex", bytes.len()) })?;
    VerifyingKey::from_bytes(&raw).map_err(|e| TargetError::Key { path: path.to_owned(), message: e.to_string() })
}

/// Write a new key pair (`NAME.key` with the seed, `NAME.pub` with the public key, both hex) from 32
/// bytes of operating-system randomness. The private key file is created owner-only (0600 on Unix) before a
/// byte is written. An existing key is refused unless `overwrite`.
pub fn generate_key_pair(dir: &Path, name: &str, overwrite: bool) -> Result<(PathBuf, PathBuf)> {
    let (k, p) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    for existing in [&k, &p] {
        if !overwrite && existing.exists() {
            return Err(TargetError::Key { path: existing.clone(), message: "already exists; refusing to replace a key (pass --force to replace it, or choose another --name)".into() });
        }
    }
    let mut seed = [0u8; 32];
    let urandom = Path::new("/dev/urandom");
    let mut f = std::fs::File::open(urandom).map_err(|e| TargetError::io(urandom, e))?;
    std::io::Read::read_exact(&mut f, &mut seed).map_err(|e| TargetError::io(urandom, e))?;
    let key = SigningKey::from_bytes(&seed);
    write_private(&k, hex::encode(seed).as_bytes())?;
    write_atomic(&p, hex::encode(key.verifying_key().to_bytes()).as_bytes())?;
    Ok((k, p))
}

/// `bytes` into a new owner-only temporary file beside `path`, then renamed over it: the secret is never
/// readable by others, not even for a moment.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("key-tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(TargetError::io(path, e))
        }
    }
}

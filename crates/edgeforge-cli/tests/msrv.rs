//! The declared `rust-version` is one the workspace can be built with: not below what any locked
//! dependency declares (read from the registry sources cargo unpacked), and inherited by every crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// "1.85" and "1.85.0" are the same version.
fn version(s: &str) -> [u32; 3] {
    let mut v = [0; 3];
    for (slot, part) in v.iter_mut().zip(s.split('.')) {
        *slot = part.parse().unwrap();
    }
    v
}

/// The value of the first `key = "value"` line in a manifest.
fn field(manifest: &str, key: &str) -> Option<String> {
    manifest.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_owned())
    })
}

fn registry_sources() -> Vec<PathBuf> {
    let home = std::env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry/src")) else { return Vec::new() };
    std::fs::read_dir(src).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
}

#[test]
fn rust_version_covers_every_locked_dependency_and_every_crate_inherits_it() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let declared = field(&manifest, "rust-version").expect("[workspace.package] rust-version");
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let sources = registry_sources();
    let (mut checked, mut above) = (0, Vec::new());
    for entry in lock.split("[[package]]").skip(1) {
        let (Some(name), Some(ver)) = (field(entry, "name"), field(entry, "version")) else { continue };
        let Some(text) = sources.iter().find_map(|s| std::fs::read_to_string(s.join(format!("{name}-{ver}/Cargo.toml"))).ok()) else { continue };
        checked += 1;
        if let Some(needs) = field(&text, "rust-version") {
            if version(&needs) > version(&declared) {
                above.push(format!("{name} {ver} needs {needs}"));
            }
        }
    }
    assert!(checked > 0, "no dependency sources found under $CARGO_HOME/registry/src: nothing was checked");
    assert!(above.is_empty(), "rust-version = {declared}, but: {}", above.join(", "));
    eprintln!("{checked} locked dependencies checked against rust-version {declared}");
    for dir in std::fs::read_dir(root().join("crates")).unwrap() {
        let path = dir.unwrap().path().join("Cargo.toml");
        if !path.is_file() {
            continue; // crates/README.md
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("rust-version.workspace = true"), "{} does not inherit rust-version", path.display());
    }
}

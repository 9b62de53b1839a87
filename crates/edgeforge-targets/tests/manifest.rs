//! `verify` catches a flipped byte in any artifact, a tampered manifest, a missing or extra file, and a
//! signature that does not match.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use edgeforge_targets::manifest::{build, generate_key_pair, read_public_key, read_signing_key, verify, write, SignatureState, MANIFEST};

fn export(dir: &Path) {
    std::fs::write(dir.join("model.gguf"), (0..5000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    std::fs::create_dir_all(dir.join("bundle")).unwrap();
    std::fs::write(dir.join("bundle/model.c"), "const signed char w[4] = {1, -2, 3, -4};\n").unwrap();
    let files = vec![dir.join("model.gguf"), dir.join("bundle/model.c")];
    let targets = vec![serde_json::json!({ "format": "gguf", "profile": "raspberry-pi-5" })];
    let m = build(dir, &files, Some("abc".into()), targets, serde_json::json!({ "perplexity": 25.37 })).unwrap();
    let key = read_signing_key(&dir.join("../signing.key")).ok();
    write(dir, &m, key.as_ref()).unwrap();
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_clean_export_verifies_and_any_flipped_byte_does_not() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    export(&dir);
    // The run's lock file is bookkeeping, like checkpoints/ and report.*: not an unlisted artifact.
    std::fs::write(dir.join(edgeforge_targets::manifest::RUN_LOCK), b"").unwrap();
    let v = verify(&dir, None).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.files_checked, 2);
    for (file, at) in [("model.gguf", 0), ("model.gguf", 19_999), ("bundle/model.c", 7)] {
        flip_byte(&dir.join(file), at);
        let v = verify(&dir, None).unwrap();
        assert!(v.problems.iter().any(|p| p.starts_with(file) && p.contains("sha256")), "{file}@{at}: {:?}", v.problems);
        flip_byte(&dir.join(file), at);
    }
    std::fs::remove_file(dir.join("bundle/model.c")).unwrap();
    assert!(verify(&dir, None).unwrap().problems.iter().any(|p| p.contains("listed but missing")));
    std::fs::write(dir.join("bundle/model.c"), "const signed char w[4] = {1, -2, 3, -4};\n").unwrap();
    std::fs::write(dir.join("extra.bin"), b"x").unwrap();
    assert!(verify(&dir, None).unwrap().problems.iter().any(|p| p.contains("extra.bin: present but not in the manifest")));
}

#[test]
fn a_tampered_manifest_is_caught_by_hashes_and_by_the_signature() {
    let root = tempfile::tempdir().unwrap();
    let (key, public) = generate_key_pair(root.path(), "signing", false).unwrap();
    assert!(key.ends_with("signing.key"));
    let dir = root.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    export(&dir);
    let pk = read_public_key(&public).unwrap();
    let v = verify(&dir, Some(&pk)).unwrap();
    assert!(v.problems.is_empty() && v.signature == Some(SignatureState::Valid), "{:?}", v.problems);

    // Edit a recorded hash: the file no longer matches it.
    let text = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["files"][0]["sha256"] = serde_json::json!("00".repeat(32));
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    assert!(verify(&dir, None).unwrap().problems.iter().any(|p| p.contains("sha256")));

    // Edit only the metrics: every hash still matches, but the signature does not.
    m["files"] = serde_json::from_str::<serde_json::Value>(&text).unwrap()["files"].clone();
    m["metrics"]["perplexity"] = serde_json::json!(20.0);
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    assert!(verify(&dir, None).unwrap().problems.is_empty(), "hashes alone cannot see a metrics edit");
    let v = verify(&dir, Some(&pk)).unwrap();
    assert_eq!(v.signature, Some(SignatureState::Invalid));
    assert!(v.problems.iter().any(|p| p.contains("manifest.sig")), "{:?}", v.problems);

    // The right manifest under someone else's key fails too.
    std::fs::write(dir.join(MANIFEST), &text).unwrap();
    let (_, other) = generate_key_pair(root.path(), "other", false).unwrap();
    assert_eq!(verify(&dir, Some(&read_public_key(&other).unwrap())).unwrap().signature, Some(SignatureState::Invalid));
    assert_eq!(verify(&dir, Some(&pk)).unwrap().signature, Some(SignatureState::Valid));
    // Garbage in place of a key file is a clear error.
    std::fs::write(root.path().join("bad.pub"), "zz").unwrap();
    assert!(read_public_key(&root.path().join("bad.pub")).unwrap_err().to_string().contains("not hex"));
}

#[test]
fn an_unsigned_folder_is_reported_as_not_signed() {
    let root = tempfile::tempdir().unwrap();
    let (_, public) = generate_key_pair(root.path(), "signing", false).unwrap();
    let dir = root.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.gguf"), b"GGUF").unwrap();
    let m = build(&dir, &[dir.join("model.gguf")], None, vec![], serde_json::json!({})).unwrap();
    write(&dir, &m, None).unwrap();
    let v = verify(&dir, Some(&read_public_key(&public).unwrap())).unwrap();
    assert_eq!(v.signature, Some(SignatureState::NotSigned));
    assert!(v.problems.iter().any(|p| p.starts_with("not signed")), "{:?}", v.problems);
}

#[cfg(unix)]
#[test]
fn the_private_key_is_owner_only_and_never_silently_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let (key, public) = generate_key_pair(root.path(), "k", false).unwrap();
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let seed = std::fs::read_to_string(&key).unwrap();
    let err = generate_key_pair(root.path(), "k", false).unwrap_err().to_string();
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), seed, "the refused call changed the key");
    generate_key_pair(root.path(), "k", true).unwrap();
    assert_ne!(std::fs::read_to_string(&key).unwrap(), seed);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(public.exists());
}

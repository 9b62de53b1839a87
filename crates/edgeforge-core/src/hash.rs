//! Content hashes recorded in reports so results can be tied to exact inputs.

use sha2::{Digest, Sha256};

pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex(&h.finalize())
}

/// sha256 of `bytes` (a mapped file), `piece` bytes at a time, calling `done(offset, len)` after each piece
/// is hashed (to release its pages).
pub fn sha256_hex_pieces(bytes: &[u8], piece: usize, mut done: impl FnMut(usize, usize)) -> String {
    let mut h = Sha256::new();
    for (i, p) in bytes.chunks(piece.max(1)).enumerate() {
        h.update(p);
        done(i * piece, p.len());
    }
    hex(&h.finalize())
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file's contents, read in 1 MiB pieces (the file is never held in memory whole).
pub fn sha256_file_hex(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => return Ok(hex(&h.finalize())),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

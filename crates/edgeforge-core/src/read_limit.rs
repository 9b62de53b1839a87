//! Reading a whole file whose size the caller bounds: the size is checked before anything is allocated, so
//! a 2 GB (or sparse) file given where a recipe, a report or a config belongs is refused, not read.

use std::io::Read;
use std::path::Path;

/// The io error inside `read_at_most`'s error when the file is over the limit (downcast to tell it apart).
#[derive(Debug, thiserror::Error)]
#[error("{bytes} bytes is more than a {what} may hold ({max_bytes} at most)")]
pub struct TooLarge {
    pub what: &'static str,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// The whole file, if it holds at most `max_bytes`; `what` names the kind of file in the error.
pub fn read_at_most(path: &Path, max_bytes: u64, what: &'static str) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let bytes = file.metadata()?.len();
    if bytes > max_bytes {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, TooLarge { what, bytes, max_bytes }));
    }
    let mut out = Vec::with_capacity(bytes as usize);
    // `take` bounds the read even if the file grows after the size check.
    file.take(max_bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// `read_at_most` for text: invalid UTF-8 is an `InvalidData` error.
pub fn read_text_at_most(path: &Path, max_bytes: u64, what: &'static str) -> std::io::Result<String> {
    String::from_utf8(read_at_most(path, max_bytes, what)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()))
}

/// JSON and YAML inputs (recipes, reports, manifests, config.json) are kilobytes; this is far above any.
pub const MAX_DOCUMENT_BYTES: u64 = 64 << 20;

/// Evaluation and calibration texts: the largest we read whole (wikitext-103 is about half of this).
pub const MAX_TEXT_BYTES: u64 = 1 << 30;

/// Everything `reader` gives (standard input), if it is at most `max_bytes`; refused as soon as it is more,
/// without holding more than `max_bytes + 1` bytes.
pub fn read_reader_at_most(reader: impl Read, max_bytes: u64, what: &'static str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(max_bytes.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max_bytes {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, TooLarge { what, bytes: out.len() as u64, max_bytes }));
    }
    Ok(out)
}

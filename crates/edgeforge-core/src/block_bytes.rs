//! The bytes of a tensor in a ggml block format: owned, or a view into a memory-mapped file.
//!
//! A model loaded from GGUF keeps its tensors as views into the file's map, so loading copies nothing and a
//! model larger than memory can be processed one block at a time: whoever has finished with a tensor calls
//! [`BlockBytes::release`], and its pages leave the process's resident set (the kernel reads them again if
//! they are touched later). Dropping the last user of a view releases its pages too.

use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

#[derive(Clone)]
pub enum BlockBytes {
    Owned(Vec<u8>),
    Mapped(MappedRange),
}

/// `len` bytes at `start` of a shared read-only map.
#[derive(Clone)]
pub struct MappedRange {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl MappedRange {
    /// The range `start..start + len` of `map`; `None` when it does not lie inside the map.
    pub(crate) fn new(map: Arc<Mmap>, start: usize, len: usize) -> Option<Self> {
        (start.checked_add(len)? <= map.len()).then_some(Self { map, start, len })
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        crate::mmap::release(&self.map, self.start, self.len);
    }
}

impl BlockBytes {
    /// Hand the pages of a mapped view back to the kernel (nothing for owned bytes).
    pub fn release(&self) {
        if let BlockBytes::Mapped(m) = self {
            crate::mmap::release(&m.map, m.start, m.len);
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, BlockBytes::Mapped(_))
    }

    /// The bytes as an owned vector (moved when owned, copied from the map otherwise).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            BlockBytes::Owned(v) => v,
            BlockBytes::Mapped(m) => m.map[m.start..m.start + m.len].to_vec(),
        }
    }
}

impl Default for BlockBytes {
    fn default() -> Self {
        BlockBytes::Owned(Vec::new())
    }
}

impl Deref for BlockBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            BlockBytes::Owned(v) => v,
            BlockBytes::Mapped(m) => &m.map[m.start..m.start + m.len],
        }
    }
}

impl AsRef<[u8]> for BlockBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for BlockBytes {
    fn from(v: Vec<u8>) -> Self {
        BlockBytes::Owned(v)
    }
}

impl FromIterator<u8> for BlockBytes {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
        BlockBytes::Owned(iter.into_iter().collect())
    }
}

impl std::fmt::Debug for BlockBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockBytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            BlockBytes::Mapped(m) => write!(f, "Mapped({} bytes at {})", m.len, m.start),
        }
    }
}

impl PartialEq for BlockBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// Writes tensors' bytes to an unlinked scratch file and maps them back, so the results of a pass over a
/// model larger than memory leave the heap as they are produced (each view releasable like the input's).
pub struct SpillFile {
    file: std::fs::File,
    len: u64,
}

impl SpillFile {
    /// An anonymous scratch file in `dir` (removed by the OS when the last view of it is dropped).
    pub fn new_in(dir: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self { file: tempfile::tempfile_in(dir)?, len: 0 })
    }

    /// Append `bytes` at the next page boundary and return a mapped view of them.
    pub fn spill(&mut self, bytes: &[u8]) -> std::io::Result<BlockBytes> {
        use std::io::{Seek, SeekFrom, Write};
        if bytes.is_empty() {
            return Ok(BlockBytes::Owned(Vec::new()));
        }
        let page = page_size();
        let offset = self.len.div_ceil(page) * page;
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.write_all(bytes)?;
        self.len = offset + bytes.len() as u64;
        let map = crate::mmap::map_range(&self.file, offset, bytes.len())?;
        let range = MappedRange::new(Arc::new(map), 0, bytes.len()).ok_or_else(|| std::io::Error::other("spill map shorter than written"))?;
        Ok(BlockBytes::Mapped(range))
    }
}

fn page_size() -> u64 {
    // 64 KiB: a multiple of every page size Linux uses on x86_64 and aarch64, so offsets are always aligned.
    1 << 16
}

/// Views of every tensor of `map` whose ranges are given, sharing one map.
pub(crate) fn mapped(map: &Arc<Mmap>, start: usize, len: usize) -> Option<BlockBytes> {
    MappedRange::new(Arc::clone(map), start, len).map(BlockBytes::Mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_bytes_read_back_and_release_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = SpillFile::new_in(dir.path()).unwrap();
        let a: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let b = vec![7u8; 3];
        let va = spill.spill(&a).unwrap();
        let vb = spill.spill(&b).unwrap();
        assert!(va.is_mapped() && vb.is_mapped());
        va.release();
        assert_eq!(&*va, &a[..]);
        assert_eq!(&*vb, &b[..]);
        assert_eq!(va.clone().into_vec(), a);
    }
}

//! The crate's one memory-mapping call.
#![allow(unsafe_code)]

use memmap2::Mmap;

/// Map a whole file read-only.
pub(crate) fn map_file(file: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the mapped file may be modified or truncated by another process
    // while mapped, which would change or invalidate the bytes under us. Model files are opened read-only and
    // not written while edgeforge runs; every range we slice was bounds-checked against the mapped length.
    unsafe { Mmap::map(file) }
}

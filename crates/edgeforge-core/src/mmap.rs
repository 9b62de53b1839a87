//! The crate's memory-mapping calls: mapping a file, and handing a mapped range's pages back to the kernel.
#![allow(unsafe_code)]

use memmap2::{Mmap, MmapOptions, UncheckedAdvice};

/// Map a whole file read-only.
pub(crate) fn map_file(file: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the mapped file may be modified or truncated by another process
    // while mapped, which would change or invalidate the bytes under us. Model files are opened read-only and
    // not written while edgeforge runs; every range we slice was bounds-checked against the mapped length.
    unsafe { Mmap::map(file) }
}

/// Map `len` bytes of `file` from `offset` (a multiple of the page size) read-only.
pub(crate) fn map_range(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Mmap> {
    // SAFETY: as in `map_file`; the spill files mapped here are private to this process, written once
    // before mapping and never written again.
    unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
}

/// Drop the resident pages of `map[offset..offset + len]` from this process (they are read again from the
/// page cache or the file on the next access). Errors are ignored: releasing is an optimisation.
pub(crate) fn release(map: &Mmap, offset: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: MADV_DONTNEED on a read-only private file mapping discards only this process's page-table
    // entries: the mapping was never written, so no private copy is lost, and the next read refaults the
    // same bytes from the file. No reference into the range is invalidated (the data stays the same).
    let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, len) };
}

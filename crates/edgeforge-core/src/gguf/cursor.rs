//! A bounds-checked little-endian cursor over the mapped file.

use crate::error::GgufError;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Largest string a GGUF header may hold before we refuse it even if the file is long enough
/// (llama.cpp's reader has a similar cap); tokens and chat templates are far below this.
const MAX_STRING_BYTES: u64 = 1 << 24;

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos as u64
    }

    pub(crate) fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        if self.buf.len() - self.pos < n {
            return Err(GgufError::Truncated {
                what,
                len: self.buf.len() as u64,
                needed: (n - (self.buf.len() - self.pos)) as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn f32(&mut self, what: &'static str) -> Result<f32, GgufError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn f64(&mut self, what: &'static str) -> Result<f64, GgufError> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_bytes_each` long: refused when the rest of the file could not
    /// hold them, so no allocation is ever sized by an unchecked number.
    pub(crate) fn count(&mut self, what: &'static str, min_bytes_each: u64) -> Result<usize, GgufError> {
        let count = self.u64(what)?;
        let bytes_left = self.remaining();
        if count > bytes_left / min_bytes_each.max(1) {
            return Err(GgufError::CountTooLarge { what, count, bytes_left, min_bytes_each });
        }
        usize::try_from(count).map_err(|_| GgufError::CountTooLarge { what, count, bytes_left, min_bytes_each })
    }

    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let bytes_left = self.remaining();
        if len > bytes_left || len > MAX_STRING_BYTES {
            return Err(GgufError::StringTooLong { what, len, bytes_left });
        }
        let bytes = self.take(len as usize, what)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| GgufError::NotUtf8 { what })
    }
}

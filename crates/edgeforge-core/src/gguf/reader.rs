//! The GGUF header walk: magic, version, metadata, tensor infos, then a check that every tensor's data lies
//! inside the file. Tensor bytes stay in the memory map until a caller asks for them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::cursor::Cursor;
use super::metadata::{read_value, MetaValue};
use crate::dtype::GgmlType;
use crate::error::{Error, GgufError, Result};

const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;
/// name length u64 + n_dims u32 + type u32 + offset u64: the least a tensor info can take.
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// key length u64 + value type u32 + a one-byte value.
const MIN_KV_BYTES: u64 = 13;

#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    /// GGUF order: `ne[0]` is the contiguous (innermost) dimension.
    pub ne: Vec<u64>,
    pub dtype: GgmlType,
    /// Absolute byte range in the file.
    pub data_start: u64,
    pub data_len: u64,
}

impl GgufTensorInfo {
    pub fn n_elems(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Row-major shape, outermost first (PyTorch order): GGUF's `ne` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<GgufTensorInfo>,
    mmap: std::sync::Arc<Mmap>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // Mapping keeps a 100 MB-1 GB model out of the heap until tensors are read.
        let mmap = crate::mmap::map_file(&file).map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), mmap)
    }

    fn parse(path: PathBuf, mmap: Mmap) -> Result<Self> {
        let parsed = {
            let mut c = Cursor::new(&mmap);
            match parse_header(&mut c) {
                Ok(p) => Ok(p),
                Err(kind) => Err((c.pos(), kind)),
            }
        };
        let (version, metadata, infos, data_offset, alignment) =
            parsed.map_err(|(offset, kind)| Error::Gguf { path: path.clone(), offset, kind })?;
        let file_len = mmap.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for raw in infos {
            let err = |kind| Error::Gguf { path: path.clone(), offset: data_offset, kind };
            if raw.offset % alignment != 0 {
                return Err(err(GgufError::Misaligned { tensor: raw.name, offset: raw.offset, alignment }));
            }
            let data_len = raw.dtype.bytes_for(raw.n_elems).ok_or_else(|| {
                err(GgufError::BadShape { tensor: raw.name.clone(), ne: raw.ne.clone() })
            })?;
            let start = data_offset.checked_add(raw.offset);
            let end = start.and_then(|s| s.checked_add(data_len));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => tensors.push(GgufTensorInfo {
                    name: raw.name,
                    ne: raw.ne,
                    dtype: raw.dtype,
                    data_start: start,
                    data_len,
                }),
                _ => {
                    return Err(err(GgufError::DataOutOfRange {
                        tensor: raw.name,
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    }))
                }
            }
        }
        let index = metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        Ok(Self { path, version, alignment, metadata, index, tensors, mmap: std::sync::Arc::new(mmap) })
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The raw bytes of a tensor (a view into the map; its range was checked at open).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        let start = info.data_start as usize;
        &self.mmap[start..start + info.data_len as usize]
    }

    /// The tensor's bytes as a view sharing the file's map (no copy; see `BlockBytes`).
    pub fn tensor_view(&self, info: &GgufTensorInfo) -> crate::BlockBytes {
        crate::block_bytes::mapped(&self.mmap, info.data_start as usize, info.data_len as usize)
            .unwrap_or_else(|| crate::BlockBytes::Owned(self.tensor_bytes(info).to_vec()))
    }

    /// Release the pages of `len` bytes at `offset` of the map (after hashing or reading them once).
    pub fn release(&self, offset: usize, len: usize) {
        crate::mmap::release(&self.mmap, offset, len);
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// The whole mapped file (for hashing without a second read).
    pub fn bytes(&self) -> &[u8] {
        &self.mmap
    }

    pub fn key_error(&self, kind: GgufError) -> Error {
        Error::Gguf { path: self.path.clone(), offset: 0, kind }
    }

    pub fn require_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| self.key_error(GgufError::MissingKey { key: key.to_owned() }))?;
        v.as_u64().ok_or_else(|| {
            self.key_error(GgufError::KeyType { key: key.to_owned(), expected: "unsigned integer", got: v.type_name() })
        })
    }

    /// A key that may be absent; present with the wrong type is an error naming the key.
    fn optional<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        extract: impl Fn(&'a MetaValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => extract(v)
                .map(Some)
                .ok_or_else(|| self.key_error(GgufError::KeyType { key: key.to_owned(), expected, got: v.type_name() })),
        }
    }

    pub fn optional_f64(&self, key: &str) -> Result<Option<f64>> {
        self.optional(key, "number", MetaValue::as_f64)
    }

    pub fn optional_str(&self, key: &str) -> Result<Option<&str>> {
        self.optional(key, "string", MetaValue::as_str)
    }

    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>> {
        self.optional(key, "bool", MetaValue::as_bool)
    }
}

struct RawInfo {
    name: String,
    ne: Vec<u64>,
    n_elems: u64,
    dtype: GgmlType,
    offset: u64,
}

type Header = (u32, Vec<(String, MetaValue)>, Vec<RawInfo>, u64, u64);

fn parse_header(c: &mut Cursor<'_>) -> std::result::Result<Header, GgufError> {
    let magic = c.take(4, "magic")?;
    if magic != b"GGUF" {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(GgufError::BadMagic { found });
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::Version { version });
    }
    let n_tensors = c.count("tensors", MIN_TENSOR_INFO_BYTES)?;
    let n_kv = c.count("metadata entries", MIN_KV_BYTES)?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = HashSet::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let type_id = c.u32("metadata value type")?;
        let value = read_value(c, &key, type_id)?;
        if !seen.insert(key.clone()) {
            return Err(GgufError::DuplicateKey { key });
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, MetaValue::U32(a))) => u64::from(*a),
        Some((k, v)) => return Err(GgufError::KeyType { key: k.clone(), expected: "u32", got: v.type_name() }),
    };
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment { alignment });
    }

    let mut infos = Vec::with_capacity(n_tensors);
    let mut names = HashSet::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims { tensor: name, n_dims });
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64("tensor dimension")?);
        }
        let n_elems = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| n > 0);
        let Some(n_elems) = n_elems else {
            return Err(GgufError::BadShape { tensor: name, ne });
        };
        let type_id = c.u32("tensor type")?;
        let dtype = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType { tensor: name.clone(), type_id })?;
        let row_len = ne.first().copied().unwrap_or(1);
        if row_len % dtype.block_elems() as u64 != 0 {
            return Err(GgufError::RowNotWholeBlocks { tensor: name, dtype, row_len, block: dtype.block_elems() });
        }
        let offset = c.u64("tensor data offset")?;
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { name });
        }
        infos.push(RawInfo { name, ne, n_elems, dtype, offset });
    }
    let data_offset = c.pos().div_ceil(alignment) * alignment;
    Ok((version, metadata, infos, data_offset, alignment))
}

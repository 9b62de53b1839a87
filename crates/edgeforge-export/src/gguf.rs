//! A GGUF v3 writer: metadata then tensor infos then the data section, each tensor padded to the alignment,
//! offsets the running sum of padded sizes in info order (what llama.cpp's reader demands).
//! Written under a temporary name and renamed, so a reader never sees half a file.

use std::path::Path;

use edgeforge_core::gguf::{MetaArray, MetaValue};
use edgeforge_core::GgmlType;

use crate::error::{ExportError, Result};

const ALIGNMENT: usize = 32;

pub struct GgufTensor {
    pub name: String,
    /// Row-major shape, outermost first (written reversed as GGUF `ne`).
    pub shape: Vec<usize>,
    pub dtype: GgmlType,
    /// Owned, or a view into the input model's map (written without a copy, its pages released once written).
    pub bytes: edgeforge_core::BlockBytes,
}

#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<GgufTensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn meta(&mut self, key: &str, value: MetaValue) -> &mut Self {
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Set a key, replacing an earlier value (tests use it to make variants of a valid file).
    pub fn set_meta(&mut self, key: &str, value: MetaValue) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
        self
    }

    pub fn tensor(&mut self, t: GgufTensor) -> &mut Self {
        self.tensors.push(t);
        self
    }

    /// The whole file as bytes (tests build malformed variants from this).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    /// Header, tensor infos, then each tensor's data padded to the alignment, streamed into `w`: a tensor
    /// mapped from the input is copied from the map and its pages released, so writing a model larger than
    /// memory holds one tensor at a time.
    fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.dtype.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += t.bytes.len().div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        pad(&mut out);
        w.write_all(&out)?;
        let zeros = [0u8; ALIGNMENT];
        for t in &self.tensors {
            w.write_all(&t.bytes)?;
            w.write_all(&zeros[..t.bytes.len().div_ceil(ALIGNMENT) * ALIGNMENT - t.bytes.len()])?;
            t.bytes.release();
        }
        Ok(())
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        crate::atomic::write_file(path, |w| self.write_to(w)).map_err(|e| ExportError::io(path, e))
    }
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::Str(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    out.extend_from_slice(&type_id(v).to_le_bytes());
    put_payload(out, v);
}

fn put_payload(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::Str(s) => put_str(out, s),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &MetaArray) {
    macro_rules! each {
        ($v:expr, $id:expr, $f:expr) => {{
            out.extend_from_slice(&($id as u32).to_le_bytes());
            out.extend_from_slice(&($v.len() as u64).to_le_bytes());
            for x in $v {
                #[allow(clippy::redundant_closure_call)]
                ($f)(&mut *out, x);
            }
        }};
    }
    match a {
        MetaArray::U8(v) => each!(v, 0, |o: &mut Vec<u8>, x: &u8| o.push(*x)),
        MetaArray::I8(v) => each!(v, 1, |o: &mut Vec<u8>, x: &i8| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U16(v) => each!(v, 2, |o: &mut Vec<u8>, x: &u16| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I16(v) => each!(v, 3, |o: &mut Vec<u8>, x: &i16| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U32(v) => each!(v, 4, |o: &mut Vec<u8>, x: &u32| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I32(v) => each!(v, 5, |o: &mut Vec<u8>, x: &i32| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F32(v) => each!(v, 6, |o: &mut Vec<u8>, x: &f32| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::Bool(v) => each!(v, 7, |o: &mut Vec<u8>, x: &bool| o.push(u8::from(*x))),
        MetaArray::Str(v) => each!(v, 8, |o: &mut Vec<u8>, x: &String| put_str(o, x)),
        MetaArray::U64(v) => each!(v, 10, |o: &mut Vec<u8>, x: &u64| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I64(v) => each!(v, 11, |o: &mut Vec<u8>, x: &i64| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F64(v) => each!(v, 12, |o: &mut Vec<u8>, x: &f64| o.extend_from_slice(&x.to_le_bytes())),
    }
}

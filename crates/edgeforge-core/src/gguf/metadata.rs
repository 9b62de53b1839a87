//! GGUF metadata values and typed access to them.

use super::cursor::Cursor;
use crate::error::GgufError;

#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(MetaArray),
}

/// Arrays are homogeneous in GGUF; keeping them typed avoids a boxed value per token for 49k-entry vocabularies.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::Str(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Integer arrays as i64 (per-layer head counts may be stored as i32 or u32).
    pub fn as_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            MetaArray::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::U64(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I64(v) => v.clone(),
            _ => return None,
        })
    }
}

impl MetaValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "string",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
            MetaValue::Array(_) => "array",
        }
    }

    /// Any non-negative integer scalar.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(x) => Some(u64::from(x)),
            MetaValue::U16(x) => Some(u64::from(x)),
            MetaValue::U32(x) => Some(u64::from(x)),
            MetaValue::U64(x) => Some(x),
            MetaValue::I8(x) => u64::try_from(x).ok(),
            MetaValue::I16(x) => u64::try_from(x).ok(),
            MetaValue::I32(x) => u64::try_from(x).ok(),
            MetaValue::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(x) => Some(f64::from(x)),
            MetaValue::F64(x) => Some(x),
            _ => self.as_u64().map(|x| x as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short rendering for `inspect` (arrays summarized by length).
    pub fn summary(&self) -> String {
        match self {
            MetaValue::Str(s) if s.len() > 60 => format!("{:?}… ({} bytes)", &s[..s.floor_char_boundary_compat(60)], s.len()),
            MetaValue::Str(s) => format!("{s:?}"),
            MetaValue::Array(a) => format!("[{} items]", a.len()),
            MetaValue::U8(x) => x.to_string(),
            MetaValue::I8(x) => x.to_string(),
            MetaValue::U16(x) => x.to_string(),
            MetaValue::I16(x) => x.to_string(),
            MetaValue::U32(x) => x.to_string(),
            MetaValue::I32(x) => x.to_string(),
            MetaValue::F32(x) => x.to_string(),
            MetaValue::Bool(x) => x.to_string(),
            MetaValue::U64(x) => x.to_string(),
            MetaValue::I64(x) => x.to_string(),
            MetaValue::F64(x) => x.to_string(),
        }
    }
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}
impl FloorCharBoundary for String {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

const TYPE_ARRAY: u32 = 9;

/// Smallest encoded size of one element of a value type, used to bound array counts before allocating.
fn min_bytes(type_id: u32) -> u64 {
    match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8, // a string is at least its u64 length
        _ => 1,
    }
}

pub(crate) fn read_value(c: &mut Cursor<'_>, key: &str, type_id: u32) -> Result<MetaValue, GgufError> {
    const W: &str = "metadata value";
    Ok(match type_id {
        0 => MetaValue::U8(c.u8(W)?),
        1 => MetaValue::I8(c.u8(W)? as i8),
        2 => MetaValue::U16(c.u16(W)?),
        3 => MetaValue::I16(c.u16(W)? as i16),
        4 => MetaValue::U32(c.u32(W)?),
        5 => MetaValue::I32(c.u32(W)? as i32),
        6 => MetaValue::F32(c.f32(W)?),
        7 => MetaValue::Bool(c.u8(W)? != 0),
        8 => MetaValue::Str(c.string("metadata string")?),
        10 => MetaValue::U64(c.u64(W)?),
        11 => MetaValue::I64(c.u64(W)? as i64),
        12 => MetaValue::F64(c.f64(W)?),
        TYPE_ARRAY => MetaValue::Array(read_array(c, key)?),
        other => return Err(GgufError::UnknownValueType { key: key.to_owned(), type_id: other }),
    })
}

fn read_array(c: &mut Cursor<'_>, key: &str) -> Result<MetaArray, GgufError> {
    let elem = c.u32("array element type")?;
    if elem == TYPE_ARRAY {
        return Err(GgufError::NestedArray { key: key.to_owned() });
    }
    if !(0..=12).contains(&elem) {
        return Err(GgufError::UnknownValueType { key: key.to_owned(), type_id: elem });
    }
    let n = c.count("array elements", min_bytes(elem))?;
    const W: &str = "array element";
    macro_rules! collect {
        ($variant:ident, $read:expr) => {{
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push($read);
            }
            MetaArray::$variant(v)
        }};
    }
    Ok(match elem {
        0 => collect!(U8, c.u8(W)?),
        1 => collect!(I8, c.u8(W)? as i8),
        2 => collect!(U16, c.u16(W)?),
        3 => collect!(I16, c.u16(W)? as i16),
        4 => collect!(U32, c.u32(W)?),
        5 => collect!(I32, c.u32(W)? as i32),
        6 => collect!(F32, c.f32(W)?),
        7 => collect!(Bool, c.u8(W)? != 0),
        8 => collect!(Str, c.string("array string")?),
        10 => collect!(U64, c.u64(W)?),
        11 => collect!(I64, c.u64(W)? as i64),
        _ => collect!(F64, c.f64(W)?),
    })
}

//! A small graph builder over the prost ONNX types: unique value names, nodes with typed attributes,
//! initializers from Rust slices. Node and initializer order is the order of the calls, so the same model
//! always gives the same bytes.

use super::proto::onnx as pb;

/// ONNX element types we write (values of `TensorProto.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    U8,
    I64,
    Bool,
}

impl ElemType {
    pub fn code(self) -> i32 {
        match self {
            ElemType::F32 => pb::tensor_proto::DataType::Float as i32,
            ElemType::U8 => pb::tensor_proto::DataType::Uint8 as i32,
            ElemType::I64 => pb::tensor_proto::DataType::Int64 as i32,
            ElemType::Bool => pb::tensor_proto::DataType::Bool as i32,
        }
    }
}

/// One node attribute.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
}

/// A dimension of a graph input or output: fixed, or named (`batch_size`, `sequence_length`, ...).
pub enum Dim {
    Fixed(usize),
    Named(&'static str),
}

#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    next_id: usize,
}

pub fn to_i64(v: usize) -> i64 {
    // Sizes come from tensors already in memory, so they fit in i64 on every platform we build for.
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn dims_i64(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| to_i64(d)).collect()
}

impl GraphBuilder {
    /// A fresh value name `{hint}_{n}`: every intermediate is distinct without the caller tracking names.
    pub fn fresh(&mut self, hint: &str) -> String {
        self.next_id += 1;
        format!("{hint}_{}", self.next_id)
    }

    /// Add a node with one output named after `hint`; returns the output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, hint: &str) -> String {
        let out = self.fresh(hint);
        self.node("", op_type, inputs, &[out.as_str()], attrs);
        out
    }

    /// Add a node of `domain` (`""` for standard ONNX, `com.microsoft` for contrib ops) with given outputs.
    pub fn node(&mut self, domain: &str, op_type: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, Attr)>) {
        let name = format!("{op_type}_{}", self.nodes.len());
        let attribute = attrs
            .into_iter()
            .map(|(k, a)| {
                use pb::attribute_proto::AttributeType as T;
                let mut p = pb::AttributeProto { name: Some(k.to_owned()), ..Default::default() };
                match a {
                    Attr::Int(i) => (p.i, p.r#type) = (Some(i), Some(T::Int as i32)),
                    Attr::Ints(v) => (p.ints, p.r#type) = (v, Some(T::Ints as i32)),
                }
                p
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            name: Some(name),
            op_type: Some(op_type.to_owned()),
            domain: Some(domain.to_owned()),
            attribute,
            ..Default::default()
        });
    }

    /// An initializer holding `raw` little-endian bytes of `elem` with `shape`; returns its name.
    pub fn initializer(&mut self, name: &str, elem: ElemType, shape: &[usize], raw: Vec<u8>) -> String {
        self.initializers.push(tensor(name, elem, shape, raw));
        name.to_owned()
    }

    pub fn initializer_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> String {
        self.initializer(name, ElemType::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// A small int64 constant (shapes, axes) as an initializer.
    pub fn const_i64(&mut self, hint: &str, values: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(tensor(&name, ElemType::I64, &[values.len()], values.iter().flat_map(|v| v.to_le_bytes()).collect()));
        name
    }

    /// A float scalar (rank 0) as an initializer.
    pub fn scalar_f32(&mut self, hint: &str, value: f32) -> String {
        let name = self.fresh(hint);
        self.initializers.push(tensor(&name, ElemType::F32, &[], value.to_le_bytes().to_vec()));
        name
    }

    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) {
        self.inputs.push(value_info(name, elem, dims));
    }

    pub fn output(&mut self, name: &str, elem: ElemType, dims: &[Dim]) {
        self.outputs.push(value_info(name, elem, dims));
    }

    /// Give an existing value a graph-output name (ONNX outputs are named values, so this is an Identity).
    pub fn rename(&mut self, from: &str, to: &str) {
        self.node("", "Identity", &[from], &[to], vec![]);
    }

    pub fn finish(self, name: &str) -> pb::GraphProto {
        pb::GraphProto {
            node: self.nodes,
            name: Some(name.to_owned()),
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        }
    }
}

pub fn tensor(name: &str, elem: ElemType, shape: &[usize], raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto { dims: dims_i64(shape), data_type: Some(elem.code()), name: Some(name.to_owned()), raw_data: Some(raw), ..Default::default() }
}

fn value_info(name: &str, elem: ElemType, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::dimension::Value;
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => Value::DimValue(to_i64(*n)),
                Dim::Named(s) => Value::DimParam((*s).to_owned()),
            }),
            ..Default::default()
        })
        .collect();
    let tensor_type = pb::type_proto::Tensor { elem_type: Some(elem.code()), shape: Some(pb::TensorShapeProto { dim }) };
    pb::ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(pb::TypeProto { value: Some(pb::type_proto::Value::TensorType(tensor_type)), ..Default::default() }),
        ..Default::default()
    }
}

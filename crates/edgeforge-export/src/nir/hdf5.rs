//! A NIR graph in memory and its HDF5 form, laid out as `nir.write` lays it out and `nir.read` reads it
//! (neuromorphs/NIR `nir/serialization.py`, package nir 1.0.8):
//!
//! ```text
//! /version                    string scalar
//! /node/type                  "NIRGraph"
//! /node/edges                 string [E, 2] (source, target)
//! /node/nodes/<name>/type     string scalar (Input, Output, Linear, IF, ...)
//! /node/nodes/<name>/<param>  float32 arrays, int64 shapes
//! /node/nodes/<name>/metadata optional group of scalars/arrays/strings
//! ```
//!
//! Strings are fixed-length ASCII (h5py hands them to nir as bytes, which it decodes like its own
//! variable-length UTF-8) and arrays are uncompressed: simplest to emit and read back the same.

use std::collections::BTreeMap;

use hdf5_pure::{FileBuilder, GroupBuilder};

/// The NIR version string written to `/version`: the format of nir 1.0.8, which reads these files.
pub const NIR_VERSION: &str = "1.0.8";

/// A metadata value stored under a node's `metadata` group.
#[derive(Debug, Clone)]
pub enum MetaValue {
    Int(i64),
    Float(f32),
    Floats(Vec<f32>),
    Text(String),
}

/// The node kinds the exporter emits: graph boundaries, weights, and integrate-and-fire neurons. (NIR has
/// more; these are the ones every hardware consumer in formats.md 4.3 reads, except Linear on Sinabs/Norse,
/// which take Affine.)
#[derive(Debug, Clone)]
pub enum NirNode {
    Input { shape: Vec<i64> },
    Output { shape: Vec<i64> },
    /// `weight` row-major `[n_out, n_in]`: y = W·x.
    Linear { n_out: usize, n_in: usize, weight: Vec<f32>, metadata: Vec<(String, MetaValue)> },
    /// dv/dt = r·x; a spike when v > v_threshold, then v = v_reset (NIR's definition; sim.rs also runs the
    /// reset-by-subtraction variant rate-coded conversions rely on).
    IntegrateAndFire { r: Vec<f32>, v_threshold: Vec<f32>, v_reset: Vec<f32>, metadata: Vec<(String, MetaValue)> },
}

impl NirNode {
    pub fn type_name(&self) -> &'static str {
        match self {
            NirNode::Input { .. } => "Input",
            NirNode::Output { .. } => "Output",
            NirNode::Linear { .. } => "Linear",
            NirNode::IntegrateAndFire { .. } => "IF",
        }
    }
}

/// Nodes by name (a BTreeMap, so the file's order does not depend on hashing) and edges in insertion order.
#[derive(Debug, Clone, Default)]
pub struct NirGraph {
    pub nodes: BTreeMap<String, NirNode>,
    pub edges: Vec<(String, String)>,
    pub metadata: Vec<(String, MetaValue)>,
}

impl NirGraph {
    pub fn add(&mut self, name: impl Into<String>, node: NirNode) {
        self.nodes.insert(name.into(), node);
    }

    pub fn connect(&mut self, from: &str, to: &str) {
        self.edges.push((from.to_owned(), to.to_owned()));
    }

    /// Write the HDF5 file to `path` (streamed, not buffered whole). Errors are the HDF5 writer's, as text.
    pub fn write_hdf5(&self, path: &std::path::Path) -> Result<(), String> {
        let err = |e: hdf5_pure::FormatError| e.to_string();
        let mut file = FileBuilder::new();
        file.create_dataset("version").with_ascii_strings(&[NIR_VERSION]).map_err(err)?.with_shape(&[]);
        let mut graph = file.create_group("node");
        scalar_text(&mut graph, "type", "NIRGraph")?;
        let flat: Vec<&str> = self.edges.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]).collect();
        if flat.is_empty() {
            return Err("a NIR graph needs at least one edge".into());
        }
        graph.create_dataset("edges").with_ascii_strings(&flat).map_err(err)?.with_shape(&[self.edges.len() as u64, 2]);
        write_metadata(&mut graph, &self.metadata)?;
        let mut nodes = graph.create_group("nodes");
        for (name, node) in &self.nodes {
            let mut g = nodes.create_group(name);
            scalar_text(&mut g, "type", node.type_name())?;
            match node {
                NirNode::Input { shape } | NirNode::Output { shape } => {
                    g.create_dataset("shape").with_i64_data(shape);
                }
                NirNode::Linear { n_out, n_in, weight, metadata } => {
                    g.create_dataset("weight").with_f32_data(weight).with_shape(&[*n_out as u64, *n_in as u64]);
                    write_metadata(&mut g, metadata)?;
                }
                NirNode::IntegrateAndFire { r, v_threshold, v_reset, metadata } => {
                    g.create_dataset("r").with_f32_data(r);
                    g.create_dataset("v_threshold").with_f32_data(v_threshold);
                    g.create_dataset("v_reset").with_f32_data(v_reset);
                    write_metadata(&mut g, metadata)?;
                }
            }
            nodes.add_group(g.finish());
        }
        graph.add_group(nodes.finish());
        file.add_group(graph.finish());
        let out = std::fs::File::create(path).map_err(|e| e.to_string())?;
        file.finish_to(out).map_err(|e| e.to_string())
    }
}

fn scalar_text(g: &mut GroupBuilder, name: &str, value: &str) -> Result<(), String> {
    g.create_dataset(name).with_ascii_strings(&[value]).map_err(|e| e.to_string())?.with_shape(&[]);
    Ok(())
}

fn write_metadata(parent: &mut GroupBuilder, metadata: &[(String, MetaValue)]) -> Result<(), String> {
    if metadata.is_empty() {
        return Ok(());
    }
    let mut g = parent.create_group("metadata");
    for (key, value) in metadata {
        match value {
            MetaValue::Int(v) => {
                g.create_dataset(key).with_i64_data(&[*v]).with_shape(&[]);
            }
            MetaValue::Float(v) => {
                g.create_dataset(key).with_f32_data(&[*v]).with_shape(&[]);
            }
            MetaValue::Floats(v) => {
                g.create_dataset(key).with_f32_data(v);
            }
            MetaValue::Text(v) => scalar_text(&mut g, key, v)?,
        }
    }
    parent.add_group(g.finish());
    Ok(())
}

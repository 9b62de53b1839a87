//! Model loading entry point: picks the reader from what the path is, then checks the tensor set.

use std::io::Read;
use std::path::Path;

use crate::arch;
use crate::error::{ConfigProblem, Error, Result};
use crate::model::Model;

/// Load a `.gguf` file or a Hugging Face folder (config.json + safetensors + tokenizer.json).
pub fn load_model(path: &Path) -> Result<Model> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        if path.join("config.json").is_file() {
            return crate::load_hf::load_hf_dir(path);
        }
        return Err(Error::UnknownModelFormat { path: path.to_path_buf(), what: "this folder has no config.json and" });
    }
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    if n == 4 && &magic == b"GGUF" || path.extension().is_some_and(|e| e == "gguf") {
        return crate::load_gguf::load_gguf(path);
    }
    if path.file_name().is_some_and(|n| n == "config.json" || n.to_string_lossy().ends_with(".safetensors")) {
        if let Some(dir) = path.parent() {
            return crate::load_hf::load_hf_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
        }
    }
    Err(Error::UnknownModelFormat { path: path.to_path_buf(), what: "this file" })
}

/// The layer count comes from the file's metadata; before the expected tensor list (one entry per tensor
/// of every layer) is built, it must agree with the number of tensors the file actually holds, so a header
/// declaring millions of layers cannot size an allocation.
fn check_tensor_count(model: &Model) -> Result<()> {
    let cfg = &model.config;
    let needed = arch::expected_tensor_count(cfg);
    // The blocks alone need more tensors than the file holds: the layer count itself is wrong (a missing
    // tensor or two in a file whose layer count is right is reported by name by the check that follows).
    let blocks_need = arch::BLOCK_TENSORS.saturating_mul(cfg.n_layers as u64);
    if blocks_need > model.tensors.len() as u64 {
        let field = match model.source.format {
            crate::model::SourceFormat::Gguf => "block_count",
            _ => "num_hidden_layers",
        };
        return Err(Error::Config {
            path: model.source.path.clone(),
            problem: ConfigProblem::TensorCount { field, layers: cfg.n_layers, needed, held: model.tensors.len() },
        });
    }
    Ok(())
}

/// Every expected tensor present with the expected shape, nothing left over that we would silently ignore.
pub(crate) fn check_tensors(model: &Model) -> Result<()> {
    check_tensor_count(model)?;
    let expected = arch::expected_tensors(&model.config);
    for (name, shape) in &expected {
        let t = model.tensor(name)?;
        if &t.shape != shape {
            return Err(Error::TensorShape {
                path: model.source.path.clone(),
                tensor: name.clone(),
                expected: shape.clone(),
                got: t.shape.clone(),
            });
        }
    }
    if let Some(extra) = model.tensors.keys().find(|k| !expected.iter().any(|(n, _)| n == *k)) {
        return Err(Error::TensorType {
            path: model.source.path.clone(),
            tensor: extra.clone(),
            dtype: model.tensors[extra].format_name(),
            why: "this architecture has no such tensor",
        });
    }
    Ok(())
}

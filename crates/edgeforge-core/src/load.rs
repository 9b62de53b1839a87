//! Model loading entry point: picks the reader from what the path is, then checks the tensor set.

use std::io::Read;
use std::path::Path;

use crate::arch;
use crate::error::{Error, Result};
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

/// Every expected tensor present with the expected shape, nothing left over that we would silently ignore.
pub(crate) fn check_tensors(model: &Model) -> Result<()> {
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
            why: "the llama architecture has no such tensor",
        });
    }
    Ok(())
}

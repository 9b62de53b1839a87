//! Model IR ↔ burn parameters. Block sizes are read from each block's tensor shapes (not the config), so a
//! student whose blocks were pruned unevenly loads as it is. Parameter ids are numbered in load order, so
//! a resumed run's optimizer state finds its parameters again.

use burn::module::{Param, ParamId};
use burn::tensor::{Device, Tensor, TensorData};
use edgeforge_core::model::{Activation, Model, TensorData as IrData};

use crate::error::{DistillError, Result};
use crate::model::{Block, BlockShape, Dims, Linear, Llama, RmsNorm};

/// Names of one block's tensors, in the order `Block` stores them.
pub const BLOCK_TENSORS: [&str; 9] =
    ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"];

/// Which parameters train.
#[derive(Debug, Clone, Copy)]
pub struct Trainable {
    pub embeddings: bool,
    pub blocks: bool,
}

struct Loader<'a> {
    model: &'a Model,
    device: &'a Device,
    next_id: u64,
    trainable: Trainable,
}

impl Loader<'_> {
    fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.model.tensor(name)?;
        Ok((t.shape.clone(), t.to_f32(name)?))
    }

    fn param<const D: usize>(&mut self, name: &str, shape: [usize; D], values: Vec<f32>, train: bool) -> Param<Tensor<D>> {
        let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), self.device);
        let id = ParamId::from(self.next_id);
        self.next_id += 1;
        let _ = name;
        Param::initialized(id, tensor).set_require_grad(train)
    }

    fn matrix(&mut self, name: &str, rows: Option<usize>, cols: usize, train: bool) -> Result<Linear> {
        let (shape, values) = self.floats(name)?;
        match shape.as_slice() {
            &[r, c] if c == cols && rows.is_none_or(|want| want == r) && r > 0 => {
                Ok(Linear::float(self.param(name, [r, c], values, train)))
            }
            _ => Err(DistillError::Shape {
                tensor: name.to_owned(),
                message: format!("shape {shape:?}, expected [{}, {cols}]", rows.map_or("rows".into(), |r| r.to_string())),
            }),
        }
    }

    fn norm(&mut self, name: &str, width: usize, eps: f64, train: bool) -> Result<RmsNorm> {
        let (shape, values) = self.floats(name)?;
        if shape != [width] {
            return Err(DistillError::Shape { tensor: name.to_owned(), message: format!("shape {shape:?}, expected [{width}]") });
        }
        Ok(RmsNorm { weight: self.param(name, [width], values, train), eps })
    }

    fn block(&mut self, l: usize, dims: Dims, eps: f64, activation: Activation) -> Result<Block> {
        let (e, hd) = (dims.n_embd, dims.head_dim);
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        let train = self.trainable.blocks;
        let attn_norm = self.norm(&name("attn_norm"), e, eps, train)?;
        let attn_q = self.matrix(&name("attn_q"), None, e, train)?;
        let attn_k = self.matrix(&name("attn_k"), None, e, train)?;
        let kv_rows = attn_k.weight.dims()[0];
        let attn_v = self.matrix(&name("attn_v"), Some(kv_rows), e, train)?;
        let q_rows = attn_q.weight.dims()[0];
        let attn_output = self.matrix(&name("attn_output"), Some(e), q_rows, train)?;
        let ffn_norm = self.norm(&name("ffn_norm"), e, eps, train)?;
        let ffn_gate = self.matrix(&name("ffn_gate"), None, e, train)?;
        let n_ff = ffn_gate.weight.dims()[0];
        let ffn_up = self.matrix(&name("ffn_up"), Some(n_ff), e, train)?;
        let ffn_down = self.matrix(&name("ffn_down"), Some(e), n_ff, train)?;
        let (n_heads, n_kv_heads) = (q_rows / hd, kv_rows / hd);
        if q_rows % hd != 0 || kv_rows % hd != 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(DistillError::Shape {
                tensor: name("attn_q"),
                message: format!("{q_rows} query rows and {kv_rows} key rows do not make whole heads of {hd} with a whole number of query heads per KV head"),
            });
        }
        let shape = BlockShape { n_heads, n_kv_heads, n_ff };
        Ok(Block { attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down, shape, activation })
    }
}

/// Build the burn model of `model` on `device` (parameters tracked for gradients where `trainable` says so,
/// when the device has autodiff).
pub fn llama_from_model(model: &Model, device: &Device, trainable: Trainable) -> Result<Llama> {
    let c = &model.config;
    let f = &c.features;
    if *f != (edgeforge_core::BlockFeatures { family: f.family, ..Default::default() }) || f.family != edgeforge_core::Family::Llama {
        return Err(DistillError::Family { family: f.family });
    }
    if c.head_dim == 0 || c.head_dim % 2 != 0 {
        return Err(DistillError::Shape { tensor: "(config)".into(), message: format!("head_dim {} must be positive and even", c.head_dim) });
    }
    let dims = Dims { vocab_size: c.vocab_size, n_embd: c.n_embd, head_dim: c.head_dim, rope_base: f64::from(c.rope_base) };
    let eps = f64::from(c.rms_eps);
    let mut ld = Loader { model, device, next_id: 0, trainable };
    let embd = ld.matrix("token_embd.weight", Some(c.vocab_size), c.n_embd, trainable.embeddings)?.weight;
    let blocks = (0..c.n_layers).map(|l| ld.block(l, dims, eps, c.activation)).collect::<Result<Vec<_>>>()?;
    let output_norm = ld.norm("output_norm.weight", c.n_embd, eps, trainable.blocks)?;
    // An untied head trains with the embeddings: both are vocabulary-sized.
    let output = if model.tensors.contains_key("output.weight") {
        Some(ld.matrix("output.weight", Some(c.vocab_size), c.n_embd, trainable.embeddings)?)
    } else if c.tied_embeddings {
        None
    } else {
        return Err(DistillError::Shape { tensor: "output.weight".into(), message: "missing, and the embeddings are not tied".into() });
    };
    Ok(Llama { token_embd: embd, embd_quant: None, blocks, output_norm, output, dims })
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| DistillError::Data(format!("{e:?}")))
}

/// Every parameter of `llama` with its GGUF name, in load order.
pub fn named_tensors(llama: &Llama) -> Vec<(String, Vec<usize>, Tensor<1>)> {
    let mut out = Vec::new();
    let mut push2 = |name: String, t: Tensor<2>| {
        let shape = t.dims().to_vec();
        let n = shape.iter().product::<usize>();
        out.push((name, shape, t.reshape([n])));
    };
    push2("token_embd.weight".into(), llama.token_embd.val());
    let mut norms = Vec::new();
    for (l, b) in llama.blocks.iter().enumerate() {
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        norms.push((name("attn_norm"), b.attn_norm.weight.val()));
        for (s, lin) in [("attn_q", &b.attn_q), ("attn_k", &b.attn_k), ("attn_v", &b.attn_v), ("attn_output", &b.attn_output)] {
            push2(name(s), lin.weight.val());
        }
        norms.push((name("ffn_norm"), b.ffn_norm.weight.val()));
        for (s, lin) in [("ffn_gate", &b.ffn_gate), ("ffn_up", &b.ffn_up), ("ffn_down", &b.ffn_down)] {
            push2(name(s), lin.weight.val());
        }
    }
    norms.push(("output_norm.weight".into(), llama.output_norm.weight.val()));
    if let Some(o) = &llama.output {
        push2("output.weight".into(), o.weight.val());
    }
    out.extend(norms.into_iter().map(|(n, t)| (n, t.dims().to_vec(), t)));
    out
}

/// Copy the student's weights into `model` as f32 tensors; returns (name, relative change) of each tensor
/// that trained.
pub fn write_back(llama: &Llama, model: &mut Model) -> Result<Vec<(String, String, f64)>> {
    let mut changed = Vec::new();
    for (name, shape, t) in named_tensors(llama) {
        let values = to_vec(t.detach())?;
        let entry = model.tensors.get_mut(&name).ok_or_else(|| DistillError::Shape { tensor: name.clone(), message: "missing from the model".into() })?;
        if entry.shape != shape {
            return Err(DistillError::Shape { tensor: name, message: format!("model has shape {:?}, student {shape:?}", entry.shape) });
        }
        let before = entry.to_f32(&name)?;
        let (mut diff, mut norm) = (0f64, 0f64);
        for (a, b) in before.iter().zip(&values) {
            diff += f64::from(a - b).powi(2);
            norm += f64::from(*a).powi(2);
        }
        // Frozen tensors keep their stored format (a quantized embedding stays quantized).
        if diff > 0.0 {
            let from = entry.format_name();
            let rel = if norm > 0.0 { (diff / norm).sqrt() } else { diff.sqrt() };
            changed.push((name.clone(), from, rel));
            entry.data = IrData::F32(values);
        }
    }
    Ok(changed)
}

/// Replace one parameter's values (checkpoint loading), keeping its id and grad flag.
pub fn set_values<const D: usize>(param: Param<Tensor<D>>, values: Vec<f32>) -> Result<Param<Tensor<D>>> {
    let shape = param.dims();
    if values.len() != shape.iter().product::<usize>() {
        return Err(DistillError::Data(format!("{} values for a parameter of shape {shape:?}", values.len())));
    }
    Ok(param.map(|t| {
        let device = t.device();
        let grad = t.is_require_grad();
        Tensor::<D>::from_data(TensorData::new(values, shape), &device).set_require_grad(grad)
    }))
}

pub fn values<const D: usize>(param: &Param<Tensor<D>>) -> Result<Vec<f32>> {
    to_vec(param.val().detach())
}

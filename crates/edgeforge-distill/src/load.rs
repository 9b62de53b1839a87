//! Model IR ↔ burn parameters. Block sizes are read from each block's tensor shapes (not the config), so a
//! student whose blocks were pruned unevenly loads as it is. What a family adds comes from the model
//! description (`BlockFeatures`, `ModelConfig::layer_attention`), read as the runtime's `from_model` reads
//! it: the extra tensors a feature implies are loaded under their GGUF names, the attention of each layer
//! (RoPE, window, scale, soft-cap) is recorded on its block. Parameter ids are numbered in load order, so a
//! resumed run's optimizer state finds its parameters again.

use std::sync::Arc;

use burn::module::{Param, ParamId};
use burn::tensor::{Device, Tensor, TensorData};
use edgeforge_core::family::{RopeScaling, ROPE_FREQS};
use edgeforge_core::model::{Model, ModelConfig, TensorData as IrData};
use edgeforge_core::BlockFeatures;
use edgeforge_runtime::RopeParams;

use crate::error::{DistillError, Result};
use crate::model::{AttentionSpec, Block, BlockExtras, BlockShape, Dims, HeadSpec, Linear, Llama, RmsNorm, LINEARS};

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
    eps: f64,
}

impl Loader<'_> {
    fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.model.tensor(name)?;
        Ok((t.shape.clone(), t.to_f32(name)?))
    }

    fn param<const D: usize>(&mut self, shape: [usize; D], values: Vec<f32>, train: bool) -> Param<Tensor<D>> {
        let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), self.device);
        let id = ParamId::from(self.next_id);
        self.next_id += 1;
        Param::initialized(id, tensor).set_require_grad(train)
    }

    fn matrix(&mut self, name: &str, rows: Option<usize>, cols: usize, train: bool) -> Result<Linear> {
        let (shape, values) = self.floats(name)?;
        match shape.as_slice() {
            &[r, c] if c == cols && rows.is_none_or(|want| want == r) && r > 0 => Ok(Linear::float(self.param([r, c], values, train))),
            _ => Err(DistillError::Shape {
                tensor: name.to_owned(),
                message: format!("shape {shape:?}, expected [{}, {cols}]", rows.map_or("rows".into(), |r| r.to_string())),
            }),
        }
    }

    /// A `[width]` vector (norm weight or bias).
    fn vector(&mut self, name: &str, width: usize, train: bool) -> Result<Param<Tensor<1>>> {
        let (shape, values) = self.floats(name)?;
        if shape != [width] {
            return Err(DistillError::Shape { tensor: name.to_owned(), message: format!("shape {shape:?}, expected [{width}]") });
        }
        Ok(self.param([width], values, train))
    }

    fn norm(&mut self, name: &str, width: usize, train: bool) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: self.vector(name, width, train)?, eps: self.eps })
    }

    /// The norm `name` when the description has it (`on`).
    fn opt_norm(&mut self, on: bool, name: &str, width: usize) -> Result<Option<RmsNorm>> {
        let train = self.trainable.blocks;
        on.then(|| self.norm(name, width, train)).transpose()
    }

    /// Linear `blk.{l}.{s}` (`[rows, cols]`) with its bias when `bias` says the description has one.
    fn linear(&mut self, l: usize, s: &str, rows: Option<usize>, cols: usize, bias: bool) -> Result<Linear> {
        let train = self.trainable.blocks;
        let mut lin = self.matrix(&format!("blk.{l}.{s}.weight"), rows, cols, train)?;
        if bias {
            let width = lin.weight.dims()[0];
            lin.bias = Some(self.vector(&format!("blk.{l}.{s}.bias"), width, train)?);
        }
        Ok(lin)
    }

    fn block(&mut self, l: usize, dims: Dims, c: &ModelConfig, attention: AttentionSpec) -> Result<Block> {
        let (e, hd, f) = (dims.n_embd, dims.head_dim, &c.features);
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        let train = self.trainable.blocks;
        let attn_norm = self.norm(&name("attn_norm"), e, train)?;
        let attn_q = self.linear(l, "attn_q", None, e, f.qkv_bias)?;
        let attn_k = self.linear(l, "attn_k", None, e, f.qkv_bias)?;
        let kv_rows = attn_k.weight.dims()[0];
        let attn_v = self.linear(l, "attn_v", Some(kv_rows), e, f.qkv_bias)?;
        let q_rows = attn_q.weight.dims()[0];
        let attn_output = self.linear(l, "attn_output", Some(e), q_rows, f.o_bias)?;
        let ffn_norm = self.norm(&name("ffn_norm"), e, train)?;
        let ffn_gate = self.linear(l, "ffn_gate", None, e, false)?;
        let n_ff = ffn_gate.weight.dims()[0];
        let ffn_up = self.linear(l, "ffn_up", Some(n_ff), e, false)?;
        let ffn_down = self.linear(l, "ffn_down", Some(e), n_ff, false)?;
        let extras = BlockExtras {
            attn_q_norm: self.opt_norm(f.qk_norm, &name("attn_q_norm"), hd)?,
            attn_k_norm: self.opt_norm(f.qk_norm, &name("attn_k_norm"), hd)?,
            post_attention_norm: self.opt_norm(f.post_norms, &name("post_attention_norm"), e)?,
            post_ffw_norm: self.opt_norm(f.post_norms, &name("post_ffw_norm"), e)?,
        };
        let (n_heads, n_kv_heads) = (q_rows / hd, kv_rows / hd);
        if q_rows % hd != 0 || kv_rows % hd != 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(DistillError::Shape {
                tensor: name("attn_q"),
                message: format!("{q_rows} query rows and {kv_rows} key rows do not make whole heads of {hd} with a whole number of query heads per KV head"),
            });
        }
        let shape = BlockShape { n_heads, n_kv_heads, n_ff };
        Ok(Block { attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down, extras, shape, activation: c.activation, attention })
    }
}

/// Layer `l`'s attention from the model description, as the runtime's `from_model` builds its
/// `LayerFeatures`: RoPE layout, the layer's base and linear scale, Llama 3 factors (`rope_freqs.weight`),
/// window, softmax scale and soft-cap.
fn attention_spec(model: &Model, l: usize) -> Result<AttentionSpec> {
    let c = &model.config;
    let a = c.layer_attention(l);
    let factors = if a.rope_freq_factors { Some(Arc::from(model.tensor_f32(ROPE_FREQS, &[c.head_dim / 2])?)) } else { None };
    Ok(AttentionSpec {
        rope: RopeParams { kind: c.features.rope_kind, base: a.rope_base, freq_scale: a.rope_freq_scale, factors },
        window: a.window,
        scale: c.attn_scale(),
        softcap: c.features.attn_softcap,
    })
}

/// Refuse what the burn model does not compute, naming the family, the feature and a fix. Every field of
/// the description is listed here, so a feature added to `BlockFeatures` does not compile until this
/// model decides about it. Today every feature is implemented; what is refused are values no forward
/// can compute (a soft-cap, scale, window or RoPE factor that is zero, negative or not finite).
fn check_covered(c: &ModelConfig) -> Result<()> {
    let BlockFeatures {
        family,
        rope_kind: _,
        rope_scaling,
        rope_base_swa,
        sliding_window,
        attn_scale,
        attn_softcap,
        final_softcap,
        scale_embeddings: _,
        qkv_bias: _,
        o_bias: _,
        qk_norm: _,
        post_norms: _,
    } = &c.features;
    let refuse = |feature: String, fix: &'static str| Err(DistillError::Unsupported { family: *family, feature, fix });
    let positive = |v: f32| v.is_finite() && v > 0.0;
    let linear = match rope_scaling {
        RopeScaling::None | RopeScaling::Llama3 { .. } => None,
        RopeScaling::Linear { factor } => Some(*factor),
    };
    let values = [("linear RoPE scaling factor", linear), ("sliding-window RoPE base", *rope_base_swa), ("attention scale", *attn_scale), ("attention soft-cap", *attn_softcap), ("final logit soft-cap", *final_softcap)];
    for (what, v) in values {
        if let Some(v) = v.filter(|&v| !positive(v)) {
            return refuse(format!("a {what} of {v}"), "correct the value in the model's metadata (it must be a positive number)");
        }
    }
    if sliding_window.is_some_and(|w| w.size == 0) {
        return refuse("a sliding window of 0 tokens".into(), "correct `sliding_window` in the model's metadata (0 hides every key)");
    }
    if c.head_dim == 0 || !c.head_dim.is_multiple_of(2) {
        return refuse(format!("RoPE on an odd head width ({})", c.head_dim), "only models with an even head_dim can be distilled");
    }
    Ok(())
}

/// Build the burn model of `model` on `device` (parameters tracked for gradients where `trainable` says so,
/// when the device has autodiff).
pub fn llama_from_model(model: &Model, device: &Device, trainable: Trainable) -> Result<Llama> {
    let c = &model.config;
    check_covered(c)?;
    let dims = Dims { vocab_size: c.vocab_size, n_embd: c.n_embd, head_dim: c.head_dim };
    let mut ld = Loader { model, device, next_id: 0, trainable, eps: f64::from(c.rms_eps) };
    let embd = ld.matrix("token_embd.weight", Some(c.vocab_size), c.n_embd, trainable.embeddings)?.weight;
    let blocks = (0..c.n_layers).map(|l| ld.block(l, dims, c, attention_spec(model, l)?)).collect::<Result<Vec<_>>>()?;
    let output_norm = ld.norm("output_norm.weight", c.n_embd, trainable.blocks)?;
    // An untied head trains with the embeddings: both are vocabulary-sized.
    let output = if model.tensors.contains_key("output.weight") {
        Some(ld.matrix("output.weight", Some(c.vocab_size), c.n_embd, trainable.embeddings)?)
    } else if c.tied_embeddings {
        None
    } else {
        return Err(DistillError::Shape { tensor: "output.weight".into(), message: "missing, and the embeddings are not tied".into() });
    };
    let head = HeadSpec { embd_scale: c.features.scale_embeddings.then(|| (c.n_embd as f32).sqrt()), final_softcap: c.features.final_softcap };
    Ok(Llama { token_embd: embd, embd_quant: None, blocks, output_norm, output, dims, head })
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| DistillError::Data(format!("{e:?}")))
}

/// Every parameter of `llama` with its GGUF name, in load order: the matrices (embedding, each block's
/// linears, the output head), then the vectors (norms and biases, block by block, then `output_norm`).
pub fn named_tensors(llama: &Llama) -> Vec<(String, Vec<usize>, Tensor<1>)> {
    let mut out = Vec::new();
    let mut push2 = |name: String, t: Tensor<2>| {
        let shape = t.dims().to_vec();
        let n = shape.iter().product::<usize>();
        out.push((name, shape, t.reshape([n])));
    };
    push2("token_embd.weight".into(), llama.token_embd.val());
    let mut vectors = Vec::new();
    for (l, b) in llama.blocks.iter().enumerate() {
        for (s, lin) in LINEARS.iter().filter_map(|s| b.linear(s).map(|lin| (s, lin))) {
            push2(format!("blk.{l}.{s}.weight"), lin.weight.val());
        }
        vectors.extend(block_vectors(l, b));
    }
    vectors.push(("output_norm.weight".into(), llama.output_norm.weight.val()));
    if let Some(o) = &llama.output {
        push2("output.weight".into(), o.weight.val());
    }
    out.extend(vectors.into_iter().map(|(n, t)| (n, t.dims().to_vec(), t)));
    out
}

/// Block `l`'s norms and biases with their GGUF names: the two llama norms first (the order of checkpoints
/// written before the extras existed), then the biases and the family's extra norms.
fn block_vectors(l: usize, b: &Block) -> Vec<(String, Tensor<1>)> {
    let mut out = vec![(format!("blk.{l}.attn_norm.weight"), b.attn_norm.weight.val()), (format!("blk.{l}.ffn_norm.weight"), b.ffn_norm.weight.val())];
    for s in LINEARS {
        if let Some(bias) = b.linear(s).and_then(|lin| lin.bias.as_ref()) {
            out.push((format!("blk.{l}.{s}.bias"), bias.val()));
        }
    }
    let x = &b.extras;
    let norms = [("attn_q_norm", &x.attn_q_norm), ("attn_k_norm", &x.attn_k_norm), ("post_attention_norm", &x.post_attention_norm), ("post_ffw_norm", &x.post_ffw_norm)];
    for (s, n) in norms {
        if let Some(n) = n {
            out.push((format!("blk.{l}.{s}.weight"), n.weight.val()));
        }
    }
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

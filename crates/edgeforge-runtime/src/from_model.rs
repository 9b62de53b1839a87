//! Model IR → runtime weights. Linear weights (the seven projections of each layer, the token embedding
//! and the output head) that a quantization pass left as `TensorData::Quantized` stay packed and run on the
//! packed kernels; GGUF tensors with a native kernel (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q6_K, F16,
//! BF16: `BlockFormat::of`) keep the file's bytes and run on the block kernels; every other tensor (F32, other
//! block types, norms) is dequantized to f32.

use std::collections::BTreeMap;

use edgeforge_core::{Error, Model, Result, TensorData};

use crate::kernels::blocks::{BlockFormat, BlockLinear};
use crate::kernels::qmatmul::PackedLinear;
use std::sync::Arc;

use crate::{HeadFeatures, LayerFeatures, LayerWeights, Linear, LlamaWeights, RopeParams};

/// Whether quantized linears keep their codes or are expanded to floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStorage {
    /// `TensorData::Quantized` linears stay packed and natively supported GGUF blocks stay blocks (the
    /// default: what evaluation runs on).
    Packed,
    /// Everything dequantized to f32 (the float path, for comparisons).
    F32,
}

/// Block bytes moved out of a model (`weights_from_model_owned`), by tensor name.
type Taken = BTreeMap<String, edgeforge_core::BlockBytes>;

/// The linear `name` of shape `[out_dim, in_dim]`; block bytes come from `taken` when moved there, else are
/// copied from the model.
fn linear(model: &Model, name: &str, out_dim: usize, in_dim: usize, storage: WeightStorage, taken: &mut Taken) -> Result<Linear> {
    let t = model.tensor(name)?;
    match (&t.data, storage) {
        // The packed kernels cover 4 and 8 bits; other widths (3-bit) run on their dequantized values.
        (TensorData::Quantized(q), WeightStorage::Packed) if matches!(q.format.bits, 4 | 8) => {
            if t.shape != [out_dim, in_dim] {
                return Err(shape_error(model, name, out_dim, in_dim, &t.shape));
            }
            let packed = PackedLinear::from_quant(name, q, out_dim, in_dim).map_err(|e| type_error(model, name, t, e, "inconsistent quantized data"))?;
            Ok(Linear::Packed(packed))
        }
        (TensorData::Blocks { dtype, bytes }, WeightStorage::Packed) if BlockFormat::of(*dtype).is_some() => {
            if t.shape != [out_dim, in_dim] {
                return Err(shape_error(model, name, out_dim, in_dim, &t.shape));
            }
            let bytes = taken.remove(name).unwrap_or_else(|| bytes.clone());
            let blocks = BlockLinear::new(name, *dtype, bytes, out_dim, in_dim).map_err(|e| type_error(model, name, t, e, "inconsistent block data"))?;
            Ok(Linear::Blocks(blocks))
        }
        _ => Ok(Linear::F32(model.tensor_f32(name, &[out_dim, in_dim])?)),
    }
}

/// A weight the runtime refused, as the core's error naming the file, tensor and format.
fn type_error(model: &Model, name: &str, t: &edgeforge_core::Tensor, e: crate::RuntimeError, otherwise: &'static str) -> Error {
    let why = match e {
        crate::RuntimeError::PackedWeight { why, .. } => why,
        _ => otherwise,
    };
    Error::TensorType { path: model.source.path.clone(), tensor: name.to_owned(), dtype: t.format_name(), why }
}

fn shape_error(model: &Model, name: &str, out_dim: usize, in_dim: usize, got: &[usize]) -> Error {
    Error::TensorShape { path: model.source.path.clone(), tensor: name.to_owned(), expected: vec![out_dim, in_dim], got: got.to_vec() }
}

/// One layer's weights: quantized linears packed, the rest as floats.
pub fn layer_from_model(model: &Model, l: usize) -> Result<LayerWeights> {
    layer_from_model_as(model, l, WeightStorage::Packed)
}

/// One layer's weights with the given storage for quantized linears.
pub fn layer_from_model_as(model: &Model, l: usize, storage: WeightStorage) -> Result<LayerWeights> {
    layer_with(model, l, storage, &mut Taken::new())
}

fn layer_with(model: &Model, l: usize, storage: WeightStorage, taken: &mut Taken) -> Result<LayerWeights> {
    let c = &model.config;
    // Pruned blocks may be narrower than the config's sizes: each block's own tensors say how wide it is.
    let shape = edgeforge_core::arch::block_shape(model, l)?;
    let (e, q, kv, ff) = (c.n_embd, shape.n_heads * c.head_dim, shape.n_kv_heads * c.head_dim, shape.n_ff);
    let name = |suffix: &str| format!("blk.{l}.{suffix}.weight");
    let mut w = |suffix: &str, out_dim: usize, in_dim: usize| linear(model, &name(suffix), out_dim, in_dim, storage, taken);
    Ok(LayerWeights {
        n_heads: shape.n_heads,
        n_kv_heads: shape.n_kv_heads,
        n_ff: ff,
        attn_norm: model.tensor_f32(&name("attn_norm"), &[e])?,
        wq: w("attn_q", q, e)?,
        wk: w("attn_k", kv, e)?,
        wv: w("attn_v", kv, e)?,
        wo: w("attn_output", e, q)?,
        ffn_norm: model.tensor_f32(&name("ffn_norm"), &[e])?,
        w_gate: w("ffn_gate", ff, e)?,
        w_up: w("ffn_up", ff, e)?,
        w_down: w("ffn_down", e, ff)?,
        activation: c.activation,
        features: layer_features(model, l, q, kv)?,
    })
}

/// Layer `l`'s features from the model description: RoPE parameters, window, softmax scale and cap, and
/// the family's extra tensors (`q`, `kv`: this block's query and key/value widths).
fn layer_features(model: &Model, l: usize, q: usize, kv: usize) -> Result<LayerFeatures> {
    let c = &model.config;
    let f = &c.features;
    let a = c.layer_attention(l);
    let factors = if a.rope_freq_factors {
        Some(Arc::from(model.tensor_f32(edgeforge_core::family::ROPE_FREQS, &[c.head_dim / 2])?))
    } else {
        None
    };
    let (e, hd) = (c.n_embd, c.head_dim);
    let opt = |on: bool, suffix: &str, len: usize| -> Result<Option<Vec<f32>>> {
        if on {
            model.tensor_f32(&format!("blk.{l}.{suffix}"), &[len]).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(LayerFeatures {
        rope: Some(RopeParams { kind: f.rope_kind, base: a.rope_base, freq_scale: a.rope_freq_scale, factors }),
        window: a.window,
        attn_scale: f.attn_scale,
        attn_softcap: f.attn_softcap,
        q_bias: opt(f.qkv_bias, "attn_q.bias", q)?,
        k_bias: opt(f.qkv_bias, "attn_k.bias", kv)?,
        v_bias: opt(f.qkv_bias, "attn_v.bias", kv)?,
        o_bias: opt(f.o_bias, "attn_output.bias", e)?,
        q_norm: opt(f.qk_norm, "attn_q_norm.weight", hd)?,
        k_norm: opt(f.qk_norm, "attn_k_norm.weight", hd)?,
        post_attn_norm: opt(f.post_norms, "post_attention_norm.weight", e)?,
        post_ffn_norm: opt(f.post_norms, "post_ffw_norm.weight", e)?,
    })
}

/// The whole model: quantized linears packed, the rest as floats.
pub fn weights_from_model(model: &Model) -> Result<LlamaWeights> {
    weights_from_model_as(model, WeightStorage::Packed)
}

/// The whole model with the given storage for quantized linears.
pub fn weights_from_model_as(model: &Model, storage: WeightStorage) -> Result<LlamaWeights> {
    weights_with(model, storage, &mut Taken::new())
}

/// The whole model (quantized linears packed, block formats kept), moving the block bytes out of `model`
/// instead of copying them: no second copy of the weights is ever resident. The model's block tensors are
/// left empty (its config, tokenizer and float tensors stay usable).
pub fn weights_from_model_owned(model: &mut Model) -> Result<LlamaWeights> {
    let mut taken = Taken::new();
    for (name, t) in &mut model.tensors {
        if let TensorData::Blocks { dtype, bytes } = &mut t.data {
            if BlockFormat::of(*dtype).is_some() && name.ends_with(".weight") {
                taken.insert(name.clone(), std::mem::take(bytes));
            }
        }
    }
    // Restore what was not used as a linear (nothing, for llama-family models) so the model stays whole.
    let w = weights_with(model, WeightStorage::Packed, &mut taken);
    for (name, bytes) in taken {
        if let Some(TensorData::Blocks { bytes: b, .. }) = model.tensors.get_mut(&name).map(|t| &mut t.data) {
            *b = bytes;
        }
    }
    w
}

/// The embedding, output norm and head only, no layers: with `layer_from_model` one block at a time, what a
/// streamed evaluation holds (see edgeforge-eval's `streamed`).
pub fn head_from_model(model: &Model) -> Result<LlamaWeights> {
    weights_of_layers(model, WeightStorage::Packed, &mut Taken::new(), 0)
}

fn weights_with(model: &Model, storage: WeightStorage, taken: &mut Taken) -> Result<LlamaWeights> {
    weights_of_layers(model, storage, taken, model.config.n_layers)
}

fn weights_of_layers(model: &Model, storage: WeightStorage, taken: &mut Taken, n_layers: usize) -> Result<LlamaWeights> {
    let c = &model.config;
    let e = c.n_embd;
    let layers = (0..n_layers).map(|l| layer_with(model, l, storage, taken)).collect::<Result<Vec<_>>>()?;
    let output = if c.tied_embeddings { None } else { Some(linear(model, "output.weight", c.vocab_size, e, storage, taken)?) };
    Ok(LlamaWeights {
        vocab_size: c.vocab_size,
        n_embd: e,
        head_dim: c.head_dim,
        rope_base: c.rope_base,
        rms_eps: c.rms_eps,
        token_embd: linear(model, "token_embd.weight", c.vocab_size, e, storage, taken)?,
        layers,
        output_norm: model.tensor_f32("output_norm.weight", &[e])?,
        output,
        head: HeadFeatures {
            embd_scale: c.features.scale_embeddings.then(|| (e as f32).sqrt()),
            final_softcap: c.features.final_softcap,
        },
    })
}

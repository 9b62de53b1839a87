//! edgeforge-runtime: the CPU forward pass for llama-family models. Batched prefill and single-token
//! decode share one path over a KV cache; float linears run through gemm, quantized linears stay packed
//! (INT4/INT8 codes, or GGUF's block formats as stored in the file) and run through our own kernels, on the
//! caller's rayon pool.

mod block;
mod error;
mod features;
mod forward;
mod from_model;
pub mod kernels;
mod kv_cache;
mod ops;
#[cfg(test)]
mod parity;
mod rope;
mod weights;

pub use block::{Block, BlockDims};
pub use error::RuntimeError;
pub use features::{HeadFeatures, LayerFeatures};
pub use forward::{CaptureSite, LlamaRuntime};
pub use rope::{RopeParams, RopeTable};
pub use from_model::{head_from_model, layer_from_model, layer_from_model_as, weights_from_model, weights_from_model_as, weights_from_model_owned, WeightStorage};
pub use kv_cache::KvCache;
pub use ops::rms_norm;
pub use kernels::blocks::{BlockFormat, BlockLinear, Rounding, Q8_DECODE_MAX_TOKENS};
pub use kernels::qmatmul::PackedLinear;
pub use weights::{LayerWeights, Linear, LlamaWeights};

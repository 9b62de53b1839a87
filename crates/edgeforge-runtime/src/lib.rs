//! edgeforge-runtime: the f32 CPU forward pass for llama-family models. Batched prefill and single-token
//! decode share one path over a KV cache; linears run through gemm on the caller's rayon pool.

mod block;
mod error;
mod forward;
mod from_model;
pub mod kernels;
mod kv_cache;
mod ops;
mod rope;
mod weights;

pub use block::{Block, BlockDims};
pub use error::RuntimeError;
pub use forward::{CaptureSite, LlamaRuntime};
pub use from_model::{layer_from_model, weights_from_model};
pub use kv_cache::KvCache;
pub use weights::{LayerWeights, LlamaWeights};

//! edgeforge-eval: scoring a model. Perplexity with llama.cpp's protocol and the lookup of evaluation texts.

pub mod datasets;
pub mod download;
pub mod error;
pub mod kld;
pub mod latency;
pub mod perplexity;
pub mod sensitivity;
pub mod streamed;

pub use error::{EvalError, Result};
pub use kld::{kl_divergence, KldResult};
pub use latency::{latency, LatencyOptions, LatencyResult, PeakRssScope};
pub use perplexity::{perplexity, ChunkProgress, PerplexityOptions, PerplexityResult};
pub use streamed::perplexity_streamed;

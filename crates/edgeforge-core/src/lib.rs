//! edgeforge-core: the model IR, the ggml block-format table, GGUF and Hugging Face readers, and the
//! HF↔GGUF layout conventions. Every other edgeforge crate builds on these types.

pub mod arch;
pub mod block_bytes;
pub mod blocks;
pub mod dtype;
pub mod error;
pub mod family;
pub mod gguf;
pub mod hash;
pub mod layout;
mod load;
mod load_gguf;
mod load_hf;
mod mmap;
pub mod model;
pub mod pass;
pub mod process;
pub mod quantized;
pub mod read_limit;
pub mod scheme;
mod scheme_fit;
pub mod summary;

pub use block_bytes::{BlockBytes, SpillFile};
pub use dtype::GgmlType;
pub use error::{Error, Result};
pub use load::load_model;
pub use family::{Family, FamilyTraits, Llama3Rope, RopeKind, RopeScaling, SlidingWindow};
pub use model::{Activation, BlockFeatures, LayerAttention, Model, ModelConfig, ModelSource, SourceFormat, Tensor, TensorData};
pub use edgeforge_tokenizer::Tokenizer;

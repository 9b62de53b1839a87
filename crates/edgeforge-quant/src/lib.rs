//! edgeforge-quant: weight quantization passes. Each pass is one module with its typed options.

pub mod awq;
pub mod options;
pub mod gptq;
pub mod rtn;
mod select;
pub mod budget;

pub use awq::{Awq, AwqOptions};
pub use gptq::{embed, Gptq, GptqOptions, Hessian};
pub use options::{FormatOverride, FormatPlan};
pub use rtn::{QuantizeRtn, RtnOptions};

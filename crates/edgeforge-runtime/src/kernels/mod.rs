//! Compute kernels. The only `unsafe` of the runtime lives here, behind safe wrappers that check every
//! dimension and length first, and each wrapper is tested against a scalar reference.

pub mod blocks;
pub mod exp;
pub(crate) mod ggml_arith;
pub mod matmul;
pub mod qmatmul;
#[cfg(test)]
mod test_rng;

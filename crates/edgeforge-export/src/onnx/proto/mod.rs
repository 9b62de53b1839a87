//! The ONNX protobuf types. `onnx.proto` is vendored unchanged from onnx/onnx v1.23.2 (`onnx/onnx.proto`, as
//! shipped in the `onnx==1.23.2` wheel; Apache-2.0, SPDX header kept in the file). `onnx.rs` is generated
//! from it by prost-build with protox (no system protoc) and committed, so the workspace build needs only
//! `prost`. Regenerate after replacing `onnx.proto`:
//!
//! `cargo run --release --manifest-path scripts/gen-onnx-proto/Cargo.toml`

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod onnx {
    include!("onnx.rs");
}

//! Benchmark (ignored; `cargo test --release -p edgeforge-runtime --test block_bench -- --ignored --nocapture`):
//! the block-format products on SmolLM2-135M's linear shapes, one decode token, per kernel, layout (the file's
//! rows or the 16-row interleaved layout) and rounding; and F16/BF16 weights on their row kernels against the
//! same matrices in f32 with gemm (`half_products_on_smollm2_shapes`).
//! Prints per-shape microseconds and the sum over one token's products (30 layers + the output head).
//! No timed assertions: the figures depend on the machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::time;

use edgeforge_core::GgmlType;
use edgeforge_runtime::kernels::blocks::{block_matmul, q8_matmul_with, BlockLinear, DotIsa, Layout, Rounding};

fn weight(ty: GgmlType, rows: usize, cols: usize) -> BlockLinear {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let bb = ty.block_bytes();
    let mut bytes: Vec<u8> = (0..rows * cols / 32 * bb)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect();
    for b in bytes.chunks_exact_mut(bb) {
        b[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            b[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
        }
    }
    BlockLinear::new("bench", ty, bytes, rows, cols).unwrap()
}

/// SmolLM2-135M's linear shapes: (name, rows, cols, times per token).
const SHAPES: [(&str, usize, usize, usize); 5] = [("attn_q/o", 576, 576, 60), ("attn_k/v", 192, 576, 60), ("ffn_gate/up", 1536, 576, 60), ("ffn_down", 576, 1536, 30), ("output", 49152, 576, 1)];

/// `seconds(name, rows, cols)` for every shape: per-shape microseconds and one token's milliseconds, as a line.
fn per_token(mut seconds: impl FnMut(&str, usize, usize) -> f64) -> String {
    let (mut total, mut line) = (0.0, String::new());
    for &(name, rows, cols, per_token) in &SHAPES {
        let s = seconds(name, rows, cols);
        total += s * per_token as f64;
        line += &format!(" {name} {:.1} µs;", s * 1e6);
    }
    format!("{line} one token's products {:.2} ms", total * 1e3)
}

#[test]
#[ignore = "benchmark"]
fn block_products_on_smollm2_shapes() {
    let threads = rayon::current_num_threads();
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        for (isa, layout) in DotIsa::ALL.into_iter().filter(|i| i.is_supported()).flat_map(|i| [(i, Layout::Rows), (i, Layout::Interleaved)]) {
            let line = per_token(|name, rows, cols| {
                let mut w = weight(if name == "output" { GgmlType::Q8_0 } else { ty }, rows, cols);
                assert!(w.set_layout(layout));
                let x: Vec<f32> = (0..cols).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
                let mut y = vec![0f32; rows];
                time(|| assert!(q8_matmul_with(isa, &w, &x, 1, &mut y)))
            });
            println!("{ty:?} {} {layout:?} ({threads} threads):{line}", isa.name());
        }
        let mut w = weight(ty, 1536, 576);
        w.set_rounding(Rounding::Exact);
        let x = vec![0.5f32; 576];
        let mut y = vec![0f32; 1536];
        println!("{ty:?} exact ffn_gate 1 token: {:.1} µs", time(|| assert!(block_matmul(&w, &x, 1, &mut y))) * 1e6);
    }
}

/// F16 and BF16 weights (2 bytes per weight) against the same matrices as f32 with gemm, one decode token, on
/// the current pool (`RAYON_NUM_THREADS` sets its size): the 16-bit float row kernels (`Rounding::Q8Decode`,
/// f32 activations; `Rounding::Q8`, activations rounded to the weight's type) and the f32 product.
#[test]
#[ignore = "benchmark"]
fn half_products_on_smollm2_shapes() {
    use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};
    let threads = rayon::current_num_threads();
    for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
        for rounding in [Rounding::Q8Decode, Rounding::Q8] {
            if ty == GgmlType::F32 && rounding == Rounding::Q8 {
                continue;
            }
            let line = per_token(|_, rows, cols| {
                let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 5000.0 - 0.1).collect();
                let x: Vec<f32> = (0..cols).map(|i| ((i * 104_729) % 1000) as f32 / 500.0 - 1.0).collect();
                let mut y = vec![0f32; rows];
                if ty == GgmlType::F32 {
                    let w = MatRef::transposed(&values, rows, cols);
                    return time(|| assert!(matmul(&mut y, 0, rows, MatRef::row_major(&x, 1, cols), w, false, Threads::Pool)));
                }
                let bytes: Vec<u8> = match ty {
                    GgmlType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
                    _ => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
                };
                let mut w = BlockLinear::new("bench", ty, bytes, rows, cols).unwrap();
                w.set_rounding(rounding);
                time(|| assert!(block_matmul(&w, &x, 1, &mut y)))
            });
            let what = if ty == GgmlType::F32 { "gemm".to_owned() } else { format!("{rounding:?}") };
            println!("{ty:?} {what} ({threads} threads):{line}");
        }
    }
}

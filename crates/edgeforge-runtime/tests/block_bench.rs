//! Benchmark (ignored; `cargo test --release -p edgeforge-runtime --test block_bench -- --ignored --nocapture`):
//! the block-format products on SmolLM2-135M's linear shapes, one decode token, per kernel, layout (the file's
//! rows or the 16-row interleaved layout) and rounding.
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

#[test]
#[ignore = "benchmark"]
fn block_products_on_smollm2_shapes() {
    // (name, rows, cols, times per token)
    let shapes = [("attn_q/o", 576, 576, 60), ("attn_k/v", 192, 576, 60), ("ffn_gate/up", 1536, 576, 60), ("ffn_down", 576, 1536, 30), ("output", 49152, 576, 1)];
    let threads = rayon::current_num_threads();
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        for (isa, layout) in DotIsa::ALL.into_iter().filter(|i| i.is_supported()).flat_map(|i| [(i, Layout::Rows), (i, Layout::Interleaved)]) {
            let mut total = 0.0;
            let mut line = String::new();
            for &(name, rows, cols, per_token) in &shapes {
                let mut w = weight(if name == "output" { GgmlType::Q8_0 } else { ty }, rows, cols);
                assert!(w.set_layout(layout));
                let x: Vec<f32> = (0..cols).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
                let mut y = vec![0f32; rows];
                let s = time(|| assert!(q8_matmul_with(isa, &w, &x, 1, &mut y)));
                total += s * per_token as f64;
                line += &format!(" {name} {:.1} µs;", s * 1e6);
            }
            println!("{ty:?} {} {layout:?} ({threads} threads):{line} one token's products {:.2} ms", isa.name(), total * 1e3);
        }
        let mut w = weight(ty, 1536, 576);
        w.set_rounding(Rounding::Exact);
        let x = vec![0.5f32; 576];
        let mut y = vec![0f32; 1536];
        println!("{ty:?} exact ffn_gate 1 token: {:.1} µs", time(|| assert!(block_matmul(&w, &x, 1, &mut y))) * 1e6);
    }
}

//! Benchmark (ignored; run by benches/packed-kernels.sh): packed INT4/INT8 products against the f32 gemm
//! on SmolLM2-135M's linear shapes, in the same process, for decode-sized and prefill-sized token counts,
//! per kernel and strategy. Prints a Markdown table (and writes it to `$EDGEFORGE_BENCH_OUT` if set).
//! No timed assertions: the figures depend on the machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

mod common;
use common::time;

use edgeforge_core::quantized::{QuantFormat, QuantTensor};
use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};
use edgeforge_runtime::kernels::blocks::DotIsa;
use edgeforge_runtime::kernels::qmatmul::{int_matmul_with, qmatmul_with, Isa, Strategy};
use edgeforge_runtime::{PackedLinear, Rounding};

fn random_quant(seed: u64, rows: usize, cols: usize, format: QuantFormat) -> QuantTensor {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 32) as u32
    };
    let n = rows * cols;
    let groups = rows * format.groups_per_row(cols);
    let codes: Vec<u8> = (0..n).map(|_| (next() % format.levels()) as u8).collect();
    let codes = if format.bits == 8 { codes } else { codes.chunks(2).map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4)).collect() };
    QuantTensor {
        format,
        row_len: cols,
        scales: (0..groups).map(|_| half::f16::from_f32(0.01 + (next() % 100) as f32 * 1e-4)).collect(),
        zeros: if format.symmetric { Vec::new() } else { (0..groups).map(|_| (next() % format.levels()) as u8).collect() },
        codes,
    }
}

#[test]
#[ignore = "benchmark: run with --ignored (benches/packed-kernels.sh)"]
fn packed_vs_f32_linear_speed() {
    let threads: usize = std::env::var("EDGEFORGE_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    // (name, out, in): one layer's projections and the tied output head of SmolLM2-135M.
    let shapes = [("attn_q/o 576x576", 576, 576), ("attn_k/v 192x576", 192, 576), ("ffn_gate/up 1536x576", 1536, 576), ("ffn_down 576x1536", 576, 1536), ("head 49152x576", 49152, 576)];
    let formats = [QuantFormat { bits: 4, group_size: 64, symmetric: true }, QuantFormat { bits: 8, group_size: 576, symmetric: true }];
    // Token counts: decode (1), the fused/tiled crossover (2..16), prefill (128) and a perplexity chunk (512).
    let token_counts: Vec<usize> = std::env::var("EDGEFORGE_BENCH_TOKENS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16, 128, 512]);
    let mut md = String::new();
    let _ = writeln!(md, "Per-call time of `y = x·Wᵀ` on {threads} threads; ratio = f32 time / packed time (> 1: packed is faster).\n");
    let _ = writeln!(md, "| shape | tokens | f32 gemm | format | kernel | strategy | packed | ratio |\n|---|---|---|---|---|---|---|---|");
    pool.install(|| {
        for &(name, rows, cols) in &shapes {
            let dense: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
            for &n in &token_counts {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 104729) % 997) as f32 * 1e-3 - 0.5).collect();
                let mut y = vec![0f32; n * rows];
                let f32_s = time(|| {
                    assert!(matmul(&mut y, 0, rows, MatRef::row_major(&x, n, cols), MatRef::transposed(&dense, rows, cols), false, Threads::Pool));
                });
                for format in formats {
                    let w = PackedLinear::from_quant("bench", &random_quant(1, rows, cols, format), rows, cols).unwrap();
                    let isas: Vec<Isa> = if n == 1 { Isa::supported() } else { vec![Isa::best()] };
                    for isa in isas {
                        for strategy in [Strategy::Fused, Strategy::Tiled] {
                            if isa == Isa::Scalar && strategy == Strategy::Tiled {
                                continue;
                            }
                            let s = time(|| assert!(qmatmul_with(isa, strategy, &w, &x, n, &mut y)));
                            let _ = writeln!(
                                md,
                                "| {name} | {n} | {:.1} µs | {} | {} | {strategy:?} | {:.1} µs | {:.2} |",
                                f32_s * 1e6,
                                format.label(cols),
                                isa.name(),
                                s * 1e6,
                                f32_s / s
                            );
                        }
                    }
                    // The integer path (8-bit activation blocks, `--rounding llamacpp`/`fast`), best kernel and AVX2.
                    let mut wi = w.clone();
                    wi.set_rounding(Rounding::Q8);
                    let mut dots = vec![DotIsa::best()];
                    if DotIsa::Avx2.is_supported() && DotIsa::best() != DotIsa::Avx2 {
                        dots.push(DotIsa::Avx2);
                    }
                    for dot in dots {
                        let s = time(|| assert!(int_matmul_with(dot, &wi, &x, n, &mut y)));
                        let _ = writeln!(md, "| {name} | {n} | {:.1} µs | {} | {} | integer | {:.1} µs | {:.2} |", f32_s * 1e6, format.label(cols), dot.name(), s * 1e6, f32_s / s);
                    }
                }
            }
        }
    });
    println!("{md}");
    if let Ok(path) = std::env::var("EDGEFORGE_BENCH_OUT") {
        std::fs::write(path, &md).unwrap();
    }
}

//! Every SIMD kernel against the scalar reference, and the packed product against gemm on the weights
//! dequantized by `edgeforge_core` (the float path), over awkward shapes: odd rows, partial last groups,
//! odd group sizes (4-bit groups starting mid-byte), per-channel, 4/8 bits, symmetric and asymmetric.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_core::quantized::{QuantFormat, QuantTensor};
use half::f16;

use super::*;
use crate::kernels::blocks::{DotIsa, Q8Rows, Rounding};
use crate::kernels::matmul::{matmul, Threads};

use crate::kernels::test_rng::Rng;

/// A random `[rows, cols]` quantized tensor in the core's layout.
fn random_quant(r: &mut Rng, rows: usize, cols: usize, format: QuantFormat) -> QuantTensor {
    let n = rows * cols;
    let groups = rows * format.groups_per_row(cols);
    let levels = format.levels();
    let codes_u8: Vec<u8> = (0..n).map(|_| r.below(levels) as u8).collect();
    let codes = if format.bits == 8 { codes_u8 } else { codes_u8.chunks(2).map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4)).collect() };
    QuantTensor {
        format,
        row_len: cols,
        scales: (0..groups).map(|_| f16::from_f32(0.001 + 0.05 * (r.unit() + 1.0))).collect(),
        zeros: if format.symmetric { Vec::new() } else { (0..groups).map(|_| r.below(levels) as u8).collect() },
        codes,
    }
}

fn formats(cols: usize) -> Vec<QuantFormat> {
    let mut out = Vec::new();
    for bits in [4u8, 8] {
        for symmetric in [true, false] {
            for group_size in [1, 3, 7, 16, 32, 64, 128, cols, cols + 5] {
                out.push(QuantFormat { bits, group_size: group_size.max(1), symmetric });
            }
        }
    }
    out
}

const COLS: [usize; 12] = [1, 2, 7, 15, 16, 31, 33, 64, 100, 129, 576, 577];

/// `|got − want| ≤ rel · Σ|x_i · w_i| + 1e-6`: the bound of any summation order in f32.
fn assert_close(got: f32, want: f32, magnitude: f32, rel: f32, what: &str) {
    let tol = rel * magnitude + 1e-6;
    assert!((got - want).abs() <= tol, "{what}: {got} vs {want} (tolerance {tol})");
}

#[test]
fn every_simd_kernel_matches_the_scalar_reference() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let isas = Isa::supported();
    eprintln!("kernels on this CPU: {:?}", isas.iter().map(|i| i.name()).collect::<Vec<_>>());
    let mut checked = 0usize;
    for cols in COLS {
        for format in formats(cols) {
            let rows = 3;
            let q = random_quant(&mut r, rows, cols, format);
            let w = PackedLinear::from_quant("t", &q, rows, cols).unwrap();
            let x: Vec<f32> = (0..4 * cols).map(|_| r.unit()).collect();
            let deq = q.dequantize(rows * cols);
            for row_i in 0..rows {
                let row = w.row(row_i);
                for nt in 1..=4 {
                    let mut want = vec![0f32; nt];
                    assert!(Kernel::new(Isa::Scalar).unwrap().row_dot(row, &x, cols, &mut want));
                    for &isa in &isas {
                        let mut got = vec![0f32; nt];
                        assert!(Kernel::new(isa).unwrap().row_dot(row, &x, cols, &mut got));
                        for t in 0..nt {
                            let xs = &x[t * cols..(t + 1) * cols];
                            let mag: f32 = xs.iter().zip(&deq[row_i * cols..]).map(|(a, b)| (a * b).abs()).sum();
                            let what = format!("{} {} cols {cols} row {row_i} token {t}/{nt}", isa.name(), format.label(cols));
                            assert_close(got[t], want[t], mag, 1e-5, &what);
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn packed_product_matches_gemm_on_dequantized_weights() {
    let mut r = Rng(0xfeed_beef_cafe_0042);
    for &(rows, cols) in &[(1usize, 1usize), (5, 7), (17, 33), (40, 64), (33, 129), (70, 576), (19, 577)] {
        for format in formats(cols) {
            let q = random_quant(&mut r, rows, cols, format);
            let w = PackedLinear::from_quant("t", &q, rows, cols).unwrap();
            let deq = q.dequantize(rows * cols);
            for n in [1usize, 2, 3, 4, 5, 9] {
                let x: Vec<f32> = (0..n * cols).map(|_| r.unit()).collect();
                let mut want = vec![0f32; n * rows];
                assert!(matmul(&mut want, 0, rows, MatRef::row_major(&x, n, cols), MatRef::transposed(&deq, rows, cols), false, Threads::Single));
                for isa in Isa::supported() {
                    for strategy in [Strategy::Fused, Strategy::Tiled, Strategy::Auto] {
                        let mut got = vec![f32::NAN; n * rows];
                        assert!(qmatmul_with(isa, strategy, &w, &x, n, &mut got));
                        for t in 0..n {
                            for o in 0..rows {
                                let mag: f32 = x[t * cols..(t + 1) * cols].iter().zip(&deq[o * cols..]).map(|(a, b)| (a * b).abs()).sum();
                                let what = format!("{} {strategy:?} {} {rows}x{cols} n {n} ({t}, {o})", isa.name(), format.label(cols));
                                assert_close(got[t * rows + o], want[t * rows + o], mag, 1e-5, &what);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_kernel_dequantizes_bit_identically_to_the_core_dequantizer() {
    let mut r = Rng(77);
    for cols in COLS {
        for format in formats(cols) {
            let rows = 4;
            let q = random_quant(&mut r, rows, cols, format);
            let w = PackedLinear::from_quant("t", &q, rows, cols).unwrap();
            let want = q.dequantize(rows * cols);
            for isa in Isa::supported() {
                let mut got = vec![0f32; rows * cols];
                assert!(w.dequantize_rows_with(Kernel::new(isa).unwrap(), 0, &mut got));
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{} {} cols {cols}", isa.name(), format.label(cols));
            }
            let mut one = vec![0f32; cols];
            assert!(w.dequantize_rows(rows - 1, &mut one));
            assert_eq!(one, want[(rows - 1) * cols..]);
            assert!(!w.dequantize_rows(rows, &mut one), "row past the end");
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut r = Rng(5);
    let (rows, cols) = (300, 576);
    let q = random_quant(&mut r, rows, cols, QuantFormat { bits: 4, group_size: 128, symmetric: false });
    let w = PackedLinear::from_quant("t", &q, rows, cols).unwrap();
    for n in [1usize, 3, 40] {
        let x: Vec<f32> = (0..n * cols).map(|_| r.unit()).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut y = vec![0f32; n * rows];
            assert!(pool.install(|| qmatmul(&w, &x, n, &mut y)));
            y
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(run(threads).iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "n {n}, {threads} threads");
        }
    }
}

#[test]
fn inconsistent_packed_data_is_an_error_not_a_panic() {
    let mut r = Rng(9);
    let f4 = QuantFormat { bits: 4, group_size: 32, symmetric: false };
    let good = random_quant(&mut r, 3, 64, f4);
    assert!(PackedLinear::from_quant("t", &good, 3, 64).is_ok());
    let cases: Vec<(&str, QuantTensor, usize, usize)> = vec![
        ("bits", QuantTensor { format: QuantFormat { bits: 3, ..f4 }, ..good.clone() }, 3, 64),
        ("group 0", QuantTensor { format: QuantFormat { group_size: 0, ..f4 }, ..good.clone() }, 3, 64),
        ("row_len", good.clone(), 3, 32),
        ("rows", good.clone(), 4, 64),
        ("empty", good.clone(), 0, 64),
        ("scales", QuantTensor { scales: good.scales[1..].to_vec(), ..good.clone() }, 3, 64),
        ("zeros", QuantTensor { zeros: good.zeros[1..].to_vec(), ..good.clone() }, 3, 64),
        ("zero > 15", QuantTensor { zeros: vec![16; good.zeros.len()], ..good.clone() }, 3, 64),
        ("codes", QuantTensor { codes: good.codes[1..].to_vec(), ..good.clone() }, 3, 64),
        ("sym with zeros", QuantTensor { format: QuantFormat { symmetric: true, ..f4 }, ..good.clone() }, 3, 64),
        ("overflow", good.clone(), usize::MAX, 64),
    ];
    for (what, q, rows, cols) in cases {
        assert!(
            matches!(PackedLinear::from_quant("t", &q, rows, cols), Err(crate::RuntimeError::PackedWeight { .. })),
            "{what} should be refused"
        );
    }
}

#[test]
fn wrong_lengths_are_refused() {
    let mut r = Rng(11);
    let q = random_quant(&mut r, 8, 16, QuantFormat { bits: 8, group_size: 16, symmetric: true });
    let w = PackedLinear::from_quant("t", &q, 8, 16).unwrap();
    let x = vec![0.5f32; 2 * 16];
    let mut y = vec![0f32; 2 * 8];
    assert!(qmatmul(&w, &x, 2, &mut y));
    assert!(!qmatmul(&w, &x[1..], 2, &mut y));
    assert!(!qmatmul(&w, &x, 2, &mut y[1..]));
    assert!(!qmatmul(&w, &x, 3, &mut y));
    assert!(qmatmul(&w, &[], 0, &mut []));
    // A row kernel never reads past short activations.
    let mut out = [0f32; 2];
    let k = Kernel::best();
    assert!(!k.row_dot(w.row(0), &x[..16 + 15], 16, &mut out));
    assert!(!k.row_dot(w.row(0), &x, 15, &mut out));
    assert!(!k.row_dot(w.row(0), &x, 16, &mut []));
    assert!(!k.dequant_row(w.row(0), &mut [0f32; 15]));
}

/// Shapes and formats of the integer path: rows of whole blocks, groups of whole blocks (a partial last
/// group at 576 / 128), per-channel.
fn int_formats(cols: usize) -> Vec<QuantFormat> {
    let mut out = Vec::new();
    for bits in [4u8, 8] {
        for symmetric in [true, false] {
            for group_size in [32, 64, 128, cols] {
                out.push(QuantFormat { bits, group_size, symmetric });
            }
        }
    }
    out
}

/// The integer path's value computed from the core's tensor directly (independent of the interleaved
/// layout): per block `dot = Σ (c − z) · x_q` in integers, `acc = fma(dot, s · d_x, acc)`.
fn int_reference(q: &QuantTensor, rows: usize, cols: usize, x: &[f32], n: usize) -> Vec<f32> {
    let mut acts = Q8Rows::default();
    acts.quantize(x, n, cols);
    let view = acts.view(0, n);
    let gpr = q.format.groups_per_row(cols);
    let code = |i: usize| if q.format.bits == 8 { i32::from(q.codes[i]) } else { i32::from((q.codes[i / 2] >> (4 * (i % 2))) & 0x0F) };
    let mut y = vec![0f32; n * rows];
    for t in 0..n {
        for r in 0..rows {
            let mut acc = 0f32;
            for b in 0..cols / 32 {
                let g = r * gpr + b * 32 / q.format.group_size;
                let z = if q.format.symmetric { 1 << (q.format.bits - 1) } else { i32::from(q.zeros[g]) };
                let k = t * view.nb + b;
                let dot: i32 = (0..32).map(|j| (code(r * cols + b * 32 + j) - z) * i32::from(view.qs[k * 32 + j])).sum();
                acc = (dot as f32).mul_add(q.scales[g].to_f32() * view.d[k], acc);
            }
            y[t * rows + r] = acc;
        }
    }
    y
}

#[test]
fn integer_path_is_bit_identical_to_its_reference_on_every_kernel() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ran = std::collections::BTreeSet::new();
    for &(rows, cols) in &[(1usize, 32usize), (16, 64), (17, 96), (40, 576), (33, 1536)] {
        for format in int_formats(cols) {
            let q = random_quant(&mut r, rows, cols, format);
            let mut w = PackedLinear::from_quant("t", &q, rows, cols).unwrap();
            w.set_rounding(Rounding::Q8);
            assert!(w.interleaved().is_some(), "{} {rows}x{cols} not interleaved", format.label(cols));
            for n in [1usize, 2, 3, 4, 5, 9] {
                let x: Vec<f32> = (0..n * cols).map(|_| r.unit() * 3.0).collect();
                let want = int_reference(&q, rows, cols, &x, n);
                for isa in DotIsa::ALL {
                    if !isa.is_supported() {
                        continue;
                    }
                    let mut got = vec![f32::NAN; n * rows];
                    assert!(int_matmul_with(isa, &w, &x, n, &mut got));
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} {} {rows}x{cols} n {n}: {:?} vs {:?}", isa.name(), format.label(cols), &got[..rows.min(4)], &want[..rows.min(4)]);
                    ran.insert(isa.name());
                }
                // The default entry point takes the integer path under `Rounding::Q8`.
                let mut got = vec![f32::NAN; n * rows];
                assert!(qmatmul(&w, &x, n, &mut got));
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
    for isa in DotIsa::ALL {
        if !isa.is_supported() {
            eprintln!("skipped: packed integer kernel on {} (not supported by this CPU)", isa.name());
        }
    }
    eprintln!("packed integer kernels run: {ran:?}");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert!(ran.contains("avx2"), "the AVX2 kernel did not run on an AVX2 CPU");
    }
}

#[test]
fn integer_path_stays_close_to_the_float_product() {
    let mut r = Rng(31);
    let (rows, cols) = (48, 576);
    for format in int_formats(cols) {
        let q = random_quant(&mut r, rows, cols, format);
        let deq = q.dequantize(rows * cols);
        let mut w = PackedLinear::from_quant("t", &q, rows, cols).unwrap();
        w.set_rounding(Rounding::Q8);
        let n = 3;
        let x: Vec<f32> = (0..n * cols).map(|_| r.unit()).collect();
        let mut want = vec![0f32; n * rows];
        assert!(matmul(&mut want, 0, rows, MatRef::row_major(&x, n, cols), MatRef::transposed(&deq, rows, cols), false, Threads::Single));
        let mut got = vec![0f32; n * rows];
        assert!(qmatmul(&w, &x, n, &mut got));
        for t in 0..n {
            for o in 0..rows {
                let mag: f32 = x[t * cols..(t + 1) * cols].iter().zip(&deq[o * cols..]).map(|(a, b)| (a * b).abs()).sum();
                // 8-bit activation blocks: each code is off by at most half a step of max|x| / 127 (plus the
                // f16 rounding of the block scale).
                assert_close(got[t * rows + o], want[t * rows + o], mag, 1.0 / 127.0, &format!("{} ({t}, {o})", format.label(cols)));
            }
        }
    }
}

#[test]
fn interleaving_keeps_the_weight_and_exact_restores_the_float_path() {
    let mut r = Rng(99);
    let (rows, cols) = (37, 576);
    for format in int_formats(cols) {
        let q = random_quant(&mut r, rows, cols, format);
        let mut w = PackedLinear::from_quant("t", &q, rows, cols).unwrap();
        let before = w.resident_bytes();
        let want = q.dequantize(rows * cols);
        let x: Vec<f32> = (0..9 * cols).map(|_| r.unit()).collect();
        let mut exact = vec![0f32; 9 * rows];
        assert!(qmatmul(&w, &x, 9, &mut exact));
        w.set_rounding(Rounding::Q8Decode);
        assert!(w.interleaved().is_some());
        // One copy of the codes (interleaved, padded to 48 rows), not two.
        assert!(w.resident_bytes() < 2 * before, "{} {} vs {before}", format.label(cols), w.resident_bytes());
        let mut got = vec![0f32; rows * cols];
        assert!(w.dequantize_rows(0, &mut got));
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: rows from the interleaved layout", format.label(cols));
        // Q8Decode: batches past 8 tokens keep the exact tiles, decode steps take the integer path.
        let mut y = vec![0f32; 9 * rows];
        assert!(qmatmul(&w, &x, 9, &mut y));
        assert_eq!(y, exact);
        let mut one = vec![0f32; rows];
        assert!(qmatmul(&w, &x[..cols], 1, &mut one));
        assert_eq!(one, int_reference(&q, rows, cols, &x[..cols], 1));
        w.set_rounding(Rounding::Exact);
        assert!(w.interleaved().is_none());
        assert_eq!(w.resident_bytes(), before);
        assert!(qmatmul(&w, &x, 9, &mut y));
        assert_eq!(y, exact);
    }
    // Rows that are not whole blocks keep the float kernels.
    let q = random_quant(&mut r, 4, 100, QuantFormat { bits: 4, group_size: 32, symmetric: true });
    let mut w = PackedLinear::from_quant("t", &q, 4, 100).unwrap();
    w.set_rounding(Rounding::Q8);
    assert!(w.interleaved().is_none());
}

#[test]
fn integer_group_equals_each_product_alone() {
    let mut r = Rng(4242);
    let cols = 576;
    let shapes = [(576usize, QuantFormat { bits: 4, group_size: 64, symmetric: true }), (192, QuantFormat { bits: 4, group_size: 128, symmetric: false }), (200, QuantFormat { bits: 8, group_size: cols, symmetric: true })];
    let ws: Vec<PackedLinear> = shapes
        .iter()
        .map(|&(rows, f)| {
            let mut w = PackedLinear::from_quant("t", &random_quant(&mut r, rows, cols, f), rows, cols).unwrap();
            w.set_rounding(Rounding::Q8Decode);
            w
        })
        .collect();
    for n in [1usize, 3, 8] {
        let x: Vec<f32> = (0..n * cols).map(|_| r.unit()).collect();
        let mut ys: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n * w.out_dim()]).collect();
        let mut refs: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
        let wrefs: Vec<&PackedLinear> = ws.iter().collect();
        assert!(int_matmul_group(DotIsa::best(), &wrefs, &x, n, &mut refs));
        for (w, y) in ws.iter().zip(&ys) {
            let mut alone = vec![0f32; n * w.out_dim()];
            assert!(qmatmul(w, &x, n, &mut alone));
            assert!(alone.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()), "n {n}, {} rows", w.out_dim());
        }
    }
    // More outputs than one loop takes, or a weight off the integer path, are refused.
    let mut plain = PackedLinear::from_quant("t", &random_quant(&mut r, 16, cols, shapes[0].1), 16, cols).unwrap();
    plain.set_rounding(Rounding::Exact);
    let x = vec![0.5f32; cols];
    let mut y = vec![0f32; 16];
    assert!(!int_matmul_group(DotIsa::best(), &[&plain], &x, 1, &mut [&mut y]));
}

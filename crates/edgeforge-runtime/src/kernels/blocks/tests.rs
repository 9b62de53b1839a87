//! Every integer kernel against the scalar kernel, the scalar kernel against dequantize-then-f64 references,
//! and both products against gemm on the dequantized matrix, for every format. Kernels this CPU cannot run
//! are reported as skipped by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

use super::*;
use crate::kernels::matmul::{matmul, Threads};

use crate::kernels::test_rng::Rng;

/// `rows × cols` random blocks of `format`: random codes, scales in [0.001, 0.05], minimums in ±0.1.
fn random_weight(r: &mut Rng, format: BlockFormat, rows: usize, cols: usize) -> BlockLinear {
    let bb = format.block_bytes();
    let n_blocks = rows * cols / format::BLOCK;
    let mut bytes: Vec<u8> = (0..n_blocks * bb).map(|_| r.next_u32() as u8).collect();
    for b in bytes.chunks_exact_mut(bb) {
        let d = half::f16::from_f32(0.001 + 0.049 * (r.unit() + 1.0) / 2.0);
        b[..2].copy_from_slice(&d.to_le_bytes());
        if format.offset() == format::Offset::Min {
            b[2..4].copy_from_slice(&half::f16::from_f32(0.1 * r.unit()).to_le_bytes());
        }
    }
    BlockLinear::new("t", format.ggml(), bytes, rows, cols).unwrap()
}

fn activations(r: &mut Rng, n: usize) -> Vec<f32> {
    // Some exact zeros and a spread of magnitudes, as hidden states have.
    (0..n).map(|i| if i % 17 == 5 { 0.0 } else { r.unit() * (1.0 + (i % 7) as f32) }).collect()
}

fn deq(w: &BlockLinear) -> Vec<f32> {
    let mut out = vec![0f32; w.out_dim() * w.in_dim()];
    assert!(w.dequantize_rows(0, &mut out));
    out
}

/// The quantized activations as floats: `d · q` per element.
fn q8_values(acts: &Q8Rows) -> Vec<f32> {
    let v = acts.view(0, acts.rows());
    (0..acts.rows() * acts.blocks_per_row() * format::BLOCK).map(|i| v.d[i / format::BLOCK] * f32::from(v.qs[i])).collect()
}

/// A bound of `Σ |d_w · code · d_x · q| + |offset terms|` for token `t` (scales <= 0.05, minimums <= 0.1).
fn magnitude(format: BlockFormat, acts: &Q8Rows, t: usize, cols: usize) -> f32 {
    let code_max = match format {
        BlockFormat::Q8_0 | BlockFormat::IQ4_NL => 128.0,
        BlockFormat::Q5_0 | BlockFormat::Q5_1 => 32.0,
        _ => 16.0,
    };
    let x = q8_values(acts);
    x[t * cols..(t + 1) * cols].iter().map(|v| v.abs()).sum::<f32>() * (0.05 * code_max * 2.0 + 0.1) + 1e-3
}

const COLS: [usize; 4] = [32, 64, 160, 576];
/// Rows of the test weights: one group of four and three left over for the decode kernel.
const ROWS: usize = 7;

/// Names of the kernels this CPU cannot run, printed so a run says what it did not check.
fn supported_or_report() -> Vec<DotIsa> {
    let (run, skipped): (Vec<DotIsa>, Vec<DotIsa>) = DotIsa::ALL.into_iter().partition(|i| i.is_supported());
    eprintln!("integer kernels run: {:?}; skipped (not on this CPU): {:?}", run.iter().map(|i| i.name()).collect::<Vec<_>>(), skipped.iter().map(|i| i.name()).collect::<Vec<_>>());
    run
}

#[test]
fn every_integer_kernel_matches_the_scalar_kernel() {
    let mut r = Rng(0x5eed_0001_2345_6789);
    let isas = supported_or_report();
    let mut checked = 0;
    for format in BlockFormat::ALL {
        for cols in COLS {
            let w = random_weight(&mut r, format, ROWS, cols);
            let x = activations(&mut r, 4 * cols);
            let mut acts = Q8Rows::default();
            acts.quantize(&x, 4, cols);
            for row in 0..ROWS {
                for nt in 1..=4 {
                    let mut want = vec![0f32; nt];
                    assert!(RowDot::new(DotIsa::Scalar, format).unwrap().run(w.row(row), acts.view(0, 4), &mut want));
                    for &isa in &isas {
                        let mut got = vec![f32::NAN; nt];
                        assert!(RowDot::new(isa, format).unwrap().run(w.row(row), acts.view(0, 4), &mut got));
                        for t in 0..nt {
                            // NEON takes the scalar kernel's f32 steps in its order: the same bits.
                            if isa == DotIsa::Neon {
                                assert_eq!(got[t].to_bits(), want[t].to_bits(), "neon {format:?} cols {cols} row {row} token {t}/{nt}: {} vs {}", got[t], want[t]);
                            }
                            // Same integers per block; only the order of the f32 additions differs, so the bound
                            // is a few ulps of the sum of the terms' magnitudes (offset terms cancel the codes').
                            let tol = 5e-7 * magnitude(format, &acts, t, cols);
                            assert!((got[t] - want[t]).abs() <= tol, "{} {format:?} cols {cols} row {row} token {t}/{nt}: {} vs {}", isa.name(), got[t], want[t]);
                        }
                        if nt == 1 {
                            // The decode kernel over consecutive rows (groups of four on AVX-512, then the
                            // rest one by one) gives each row exactly the single-row kernel's value.
                            let mut rows = vec![f32::NAN; ROWS];
                            assert!(RowDot::new(isa, format).unwrap().run_rows(&w.bytes, acts.view(0, 1), &mut rows));
                            assert_eq!(rows[row].to_bits(), got[0].to_bits(), "{} rows kernel {format:?} cols {cols} row {row}: {} vs {}", isa.name(), rows[row], got[0]);
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked >= BlockFormat::ALL.len() * COLS.len() * 12);
}

#[test]
fn the_scalar_kernel_is_the_dot_of_the_dequantized_blocks() {
    let mut r = Rng(42);
    for format in BlockFormat::ALL {
        for cols in COLS {
            let w = random_weight(&mut r, format, 5, cols);
            let x = activations(&mut r, 2 * cols);
            let mut acts = Q8Rows::default();
            acts.quantize(&x, 2, cols);
            let (wf, xq) = (deq(&w), q8_values(&acts));
            for row in 0..5 {
                let mut got = [0f32; 2];
                assert!(RowDot::new(DotIsa::Scalar, format).unwrap().run(w.row(row), acts.view(0, 2), &mut got));
                for t in 0..2 {
                    let terms = wf[row * cols..(row + 1) * cols].iter().zip(&xq[t * cols..(t + 1) * cols]);
                    let (want, mag) = terms.fold((0f64, 0f64), |(s, m), (&a, &b)| (s + f64::from(a) * f64::from(b), m + f64::from((a * b).abs())));
                    // Q4_1/Q5_1 take the block sums at f16 precision, as llama.cpp's q8_1 does.
                    let rel = if format.offset() == format::Offset::Min { 2e-3 } else { 1e-5 };
                    assert!((f64::from(got[t]) - want).abs() <= rel * mag + 1e-6, "{format:?} cols {cols} row {row}: {} vs {want}", got[t]);
                }
            }
        }
    }
}

#[test]
fn activation_blocks_round_as_llama_cpp_does() {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.5) * 0.37).collect();
    let mut acts = Q8Rows::default();
    acts.quantize(&x, 1, 64);
    let v = acts.view(0, acts.rows());
    for (b, xb) in x.chunks(32).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(v.d[b], half::f16::from_f32(amax / 127.0).to_f32());
        let codes = &v.qs[b * 32..(b + 1) * 32];
        assert_eq!(codes.iter().map(|&q| i32::from(q).abs()).max(), Some(127));
        for (&q, &xv) in codes.iter().zip(xb) {
            assert!((f32::from(q) - xv * 127.0 / amax).abs() <= 0.5);
        }
    }
    // An all-zero block has d = 0 and zero codes, not NaN.
    acts.quantize(&[0.0; 32], 1, 32);
    assert_eq!((acts.view(0, 1).d[0], acts.view(0, 1).qs.iter().all(|&q| q == 0)), (0.0, true));
}

#[test]
fn both_products_match_gemm_on_the_dequantized_matrix_for_any_thread_count() {
    let mut r = Rng(7);
    for format in BlockFormat::ALL {
        for &(rows, cols) in &[(1usize, 32usize), (19, 64), (70, 576), (300, 160)] {
            let mut w = random_weight(&mut r, format, rows, cols);
            let wf = deq(&w);
            for n in [1usize, 3, 4, 9, 12] {
                let x = activations(&mut r, n * cols);
                let mut want = vec![0f32; n * rows];
                assert!(matmul(&mut want, 0, rows, MatRef::row_major(&x, n, cols), MatRef::transposed(&wf, rows, cols), false, Threads::Single));
                for rounding in [Rounding::Exact, Rounding::Q8, Rounding::Q8Decode] {
                    w.set_rounding(rounding);
                    let run = |threads: usize| {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                        let mut y = vec![f32::NAN; n * rows];
                        assert!(pool.install(|| block_matmul(&w, &x, n, &mut y)));
                        y
                    };
                    let one = run(1);
                    assert!(run(2).iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "{format:?} {rounding:?} n {n}: threads change bits");
                    for t in 0..n {
                        for o in 0..rows {
                            let mag: f32 = x[t * cols..(t + 1) * cols].iter().zip(&wf[o * cols..]).map(|(a, b)| (a * b).abs()).sum();
                            // The Q8 path rounds the activations to 8 bits: about 1/254 of each term at worst.
                            let exact = rounding == Rounding::Exact || (rounding == Rounding::Q8Decode && n > Q8_DECODE_MAX_TOKENS && w.layout() == Layout::Rows);
                            let rel = if exact { 1e-5 } else { 8e-3 };
                            let (g, e) = (one[t * rows + o], want[t * rows + o]);
                            assert!((g - e).abs() <= rel * mag + 1e-5, "{format:?} {rounding:?} {rows}x{cols} n {n} ({t}, {o}): {g} vs {e}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn inconsistent_block_weights_and_lengths_are_refused() {
    let bb = BlockFormat::Q4_0.block_bytes();
    let refused = |ty, len, rows, cols| matches!(BlockLinear::new("t", ty, vec![0; len], rows, cols), Err(RuntimeError::PackedWeight { .. }));
    assert!(refused(GgmlType::Q5_K, 176, 1, 256), "no kernel");
    assert!(refused(GgmlType::Q4_0, bb, 1, 16), "partial block");
    assert!(refused(GgmlType::Q4_0, bb - 1, 1, 32), "short");
    assert!(refused(GgmlType::Q4_0, bb, 0, 32), "empty");
    assert!(refused(GgmlType::Q4_0, bb, usize::MAX, 32), "overflow");
    let w = BlockLinear::new("t", GgmlType::Q4_0, vec![0; 2 * bb], 2, 32).unwrap();
    let x = vec![1f32; 32];
    let mut y = vec![0f32; 2];
    assert!(block_matmul(&w, &x, 1, &mut y));
    assert!(!block_matmul(&w, &x[1..], 1, &mut y));
    assert!(!block_matmul(&w, &x, 1, &mut y[1..]));
    assert!(!q8_matmul_with(DotIsa::Scalar, &w, &x, 2, &mut y));
    assert!(!w.dequantize_rows(2, &mut [0f32; 32]), "row past the end");
    let mut acts = Q8Rows::default();
    acts.quantize(&x, 1, 32);
    let dot = RowDot::new(DotIsa::Scalar, BlockFormat::Q4_0).unwrap();
    assert!(dot.tokens(&acts, 1, 1).is_none(), "token past the end");
    assert!(!dot.run(w.row(0), acts.view(0, 1), &mut [0f32; 2]), "more outputs than tokens");
    assert!(!RowDot::new(DotIsa::Scalar, BlockFormat::Q8_0).unwrap().run(w.row(0), acts.view(0, 1), &mut [0f32; 1]), "wrong block size");
}

#[test]
fn the_format_table_agrees_with_the_core_type_table() {
    for f in BlockFormat::ALL.into_iter().chain(BlockFormat::K).chain(BlockFormat::HALVES) {
        assert_eq!((f.block_bytes(), f.block_elems(), BlockFormat::of(f.ggml())), (f.ggml().block_bytes(), f.ggml().block_elems(), Some(f)), "{f:?}");
        assert_eq!(f16::Half::of(f).is_some(), BlockFormat::HALVES.contains(&f), "{f:?}");
    }
    assert_eq!(BlockFormat::of(GgmlType::BF16), Some(BlockFormat::BF16));
    assert_eq!(BlockFormat::BF16.offset(), format::Offset::None);
}

/// `rows × cols` random weights of a 16-bit float format (F16 or BF16), in ±0.3.
fn random_half(r: &mut Rng, format: BlockFormat, rows: usize, cols: usize) -> BlockLinear {
    let half = f16::Half::of(format).unwrap();
    let bytes: Vec<u8> = (0..rows * cols)
        .flat_map(|_| {
            let v = r.unit() * 0.3;
            match half {
                f16::Half::F16 => half::f16::from_f32(v).to_le_bytes(),
                f16::Half::Bf16 => half::bf16::from_f32(v).to_le_bytes(),
            }
        })
        .collect();
    BlockLinear::new("t", format.ggml(), bytes, rows, cols).unwrap()
}

#[test]
fn half_rows_match_the_f64_dot_and_the_portable_kernel_on_every_kernel() {
    let mut r = Rng(99);
    let isas = supported_or_report();
    for format in BlockFormat::HALVES {
        let half = f16::Half::of(format).unwrap();
        for cols in [1usize, 15, 16, 31, 32, 33, 100, 576] {
            let w = random_half(&mut r, format, 2, cols);
            let wf = deq(&w);
            let x = activations(&mut r, cols);
            for row in 0..2 {
                let terms = wf[row * cols..(row + 1) * cols].iter().zip(&x);
                let (want, mag) = terms.fold((0f64, 0f64), |(s, m), (&a, &b)| (s + f64::from(a) * f64::from(b), m + f64::from((a * b).abs())));
                let portable = f16::dot(DotIsa::Scalar, half, w.row(row), &x).unwrap();
                for &isa in &isas {
                    let got = f16::dot(isa, half, w.row(row), &x).unwrap();
                    assert!((f64::from(got) - want).abs() <= 1e-6 * mag + 1e-7, "{format:?} {} cols {cols}: {got} vs {want}", isa.name());
                    // Only the order of the additions differs from the portable kernel (the same bits below
                    // one vector's worth of weights, where the wide kernels run the portable loop).
                    assert!((f64::from(got) - f64::from(portable)).abs() <= 1e-6 * mag + 1e-7, "{format:?} {} cols {cols}: {got} vs portable {portable}", isa.name());
                    if cols < 16 {
                        assert_eq!(got.to_bits(), portable.to_bits(), "{format:?} {} cols {cols}", isa.name());
                    }
                }
            }
            assert!(f16::dot(DotIsa::Scalar, half, w.row(0), &x[1..]).is_none());
        }
        // The decode path: consecutive rows in one call (four at a time, then the rest), each with `dot`'s bits.
        for (rows, cols) in [(1usize, 33usize), (3, 1), (4, 100), (5, 32), (9, 576)] {
            let w = random_half(&mut r, format, rows, cols);
            let x = activations(&mut r, cols);
            let all = &w.bytes[..];
            for &isa in &isas {
                let mut out = vec![f32::NAN; rows];
                assert!(f16::rows_dot(isa, half, all, &x, &mut out));
                for (row, got) in out.iter().enumerate() {
                    let want = f16::dot(isa, half, w.row(row), &x).unwrap();
                    assert_eq!(got.to_bits(), want.to_bits(), "{format:?} {} {rows}x{cols} row {row}", isa.name());
                }
                assert!(!f16::rows_dot(isa, half, all, &x, &mut out[1..]), "fewer outputs than rows");
                assert!(!f16::rows_dot(isa, half, all, &x[1..], &mut out), "rows not of x's length");
            }
        }
    }
}

/// Every kernel widens every weight exactly, special values included: a one-hot activation picks one weight.
#[test]
fn half_kernels_widen_every_weight_exactly() {
    let isas = supported_or_report();
    // Zeros, the smallest subnormals, the largest finite values, ones and an odd pattern of each type.
    let patterns: [(BlockFormat, [u16; 9]); 2] = [
        (BlockFormat::F16, [0x0000, 0x8000, 0x0001, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0x3c00, 0x3555]),
        (BlockFormat::BF16, [0x0000, 0x8000, 0x0001, 0x807f, 0x0080, 0x7f7f, 0xff7f, 0x3f80, 0x3eab]),
    ];
    for (format, bits) in patterns {
        let half = f16::Half::of(format).unwrap();
        // 67 weights: two AVX-512 steps, the AVX2 steps and a portable tail all see every pattern.
        let cols = 67;
        let row: Vec<u8> = (0..cols).flat_map(|j| bits[j % bits.len()].to_le_bytes()).collect();
        for j in 0..cols {
            let b = bits[j % bits.len()];
            let want = match half {
                f16::Half::F16 => half::f16::from_bits(b).to_f32(),
                f16::Half::Bf16 => f32::from_bits(u32::from(b) << 16),
            };
            let mut x = vec![0f32; cols];
            x[j] = 1.0;
            for &isa in &isas {
                let got = f16::dot(isa, half, &row, &x).unwrap();
                // Adding the other terms' +0 turns −0 into +0: compare values, and bits when non-zero.
                assert!(got == want && (want == 0.0 || got.to_bits() == want.to_bits()), "{format:?} {} {b:#06x} at {j}: {got:e} vs {want:e}", isa.name());
            }
        }
    }
}

/// ggml's `ggml_compute_fp32_to_bf16` (ggml/src/ggml-impl.h): round to nearest even, NaN made quiet.
fn ggml_fp32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[test]
fn bf16_activation_rounding_is_ggmls() {
    let mut r = Rng(0xbf16);
    let edges = [
        0x3f80_8000u32, // a tie, even below: stays
        0x3f81_8000,    // a tie, odd below: rounds up
        0x3f80_8001,    // just above a tie
        0x3f80_7fff,    // just below a tie
        0x7f7f_ffff,    // largest finite f32: rounds to infinity
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000, // quiet NaN
        0x7f80_0001, // signalling NaN with a low payload only: must stay a NaN
        0xff81_2345,
        0x0000_8000, // subnormals
        0x8001_ffff,
        0x0000_0000,
        0x8000_0000,
    ];
    for u in edges.into_iter().chain((0..100_000).map(|_| r.next_u32())) {
        let x = f32::from_bits(u);
        let want = ggml_fp32_to_bf16(x);
        assert_eq!(half::bf16::from_f32(x).to_bits(), want, "{u:#010x}");
        assert_eq!(f16::Half::Bf16.round(x).to_bits(), u32::from(want) << 16, "{u:#010x}");
    }
}

#[test]
fn half_products_match_gemm_in_every_rounding() {
    let mut r = Rng(5);
    let (rows, cols) = (37, 96);
    for format in BlockFormat::HALVES {
        let half = f16::Half::of(format).unwrap();
        let mut w = random_half(&mut r, format, rows, cols);
        let wf = deq(&w);
        let gemm = |x: &[f32], n: usize| {
            let mut y = vec![0f32; n * rows];
            assert!(matmul(&mut y, 0, rows, MatRef::row_major(x, n, cols), MatRef::transposed(&wf, rows, cols), false, Threads::Single));
            y
        };
        // Larger, smaller, then larger again than the previous product: the rounded activations' buffer is reused.
        for n in [9usize, 1, 2, 3] {
            let x = activations(&mut r, n * cols);
            let check = |y: &[f32], want: &[f32], rel: f32, what: &str| {
                for (i, (&g, &e)) in y.iter().zip(want).enumerate() {
                    let (t, o) = (i / rows, i % rows);
                    let mag: f32 = x[t * cols..(t + 1) * cols].iter().zip(&wf[o * cols..]).map(|(a, b)| (a * b).abs()).sum();
                    assert!((g - e).abs() <= rel * mag + 1e-6, "{format:?} {what} n {n} ({t}, {o}): {g} vs {e}");
                }
            };
            let exact = gemm(&x, n);
            // llama.cpp's arithmetic: the activations rounded to the weight's type, then f32 products.
            let rounded: Vec<f32> = x.iter().map(|&v| half.round(v)).collect();
            let exact_of_rounded = gemm(&rounded, n);
            for rounding in [Rounding::Exact, Rounding::Q8, Rounding::Q8Decode] {
                w.set_rounding(rounding);
                assert_eq!(w.layout(), Layout::Rows, "{format:?}: 16-bit float rows are never interleaved");
                let mut y = vec![f32::NAN; n * rows];
                assert!(block_matmul(&w, &x, n, &mut y));
                if n <= Q8_DECODE_MAX_TOKENS {
                    // Row kernels: a token alone (the decode kernel over many rows) gives its bits in the batch.
                    let mut alone = vec![f32::NAN; rows];
                    assert!(block_matmul(&w, &x[(n - 1) * cols..], 1, &mut alone));
                    assert_eq!(bits(&alone), bits(&y[(n - 1) * rows..]), "{format:?} {rounding:?} n {n}");
                }
                let what = format!("{rounding:?}");
                if rounding == Rounding::Q8 {
                    check(&y, &exact_of_rounded, 1e-5, &what);
                    // The rounding happened, and is the type's: F16 moves a term by up to 2^-11, BF16 by 2^-8.
                    assert!(y.iter().zip(&exact).any(|(a, b)| a != b), "{format:?} n {n}: Q8 did not round the activations");
                    check(&y, &exact, if half == f16::Half::F16 { 1e-3 } else { 8e-3 }, &what);
                } else {
                    check(&y, &exact, 1e-5, &what);
                }
            }
        }
        let mut y = vec![0f32; rows];
        assert!(!block_matmul(&w, &activations(&mut r, cols + 1), 1, &mut y), "{format:?}: wrong activation length");
    }
}

#[test]
fn exact_tiles_are_wider_than_gemms_small_matrix_path() {
    for out_dim in [1usize, 64, 65, 96, 192, 576, 1536, 49152, 1000, 4097] {
        for in_dim in [32usize, 576, 1536, 8192] {
            let w = exact_tile_rows(out_dim, in_dim);
            let last = out_dim % w;
            assert!(w > 64 || w == out_dim, "{out_dim}x{in_dim}: {w}");
            assert!(last == 0 || last > 64, "{out_dim}x{in_dim}: tiles of {w} leave {last}");
        }
    }
}

/// The kernels of the interleaved layout (x86 only).
const GROUP_KERNELS: &[DotIsa] = &[DotIsa::Avx2, DotIsa::AvxVnni, DotIsa::Avx512Vnni];
/// The K-quant kernels (x86 and NEON).
const K_KERNELS: &[DotIsa] = &[DotIsa::Avx2, DotIsa::AvxVnni, DotIsa::Avx512Vnni, DotIsa::Neon];

/// The `kernels` (of the interleaved layout or the K-quants) that this CPU runs; each one it cannot run is
/// printed as skipped, by name.
fn wide_kernels_or_report(what: &str, kernels: &[DotIsa]) -> Vec<DotIsa> {
    let (run, skipped): (Vec<DotIsa>, Vec<DotIsa>) = kernels.iter().partition(|i| i.is_supported());
    for isa in &skipped {
        eprintln!("skipped: {what} kernel {} (not supported on this CPU or target)", isa.name());
    }
    run
}

/// A product on `isa` in a pool of `threads`.
fn product_on(threads: usize, f: impl FnOnce() -> bool + Send) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    assert!(pool.install(f));
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn interleaved_weights_keep_their_values_and_every_kernel_gives_the_scalar_bits() {
    let mut r = Rng(0x1a7e_41ea_7e00_0016);
    let isas = wide_kernels_or_report("interleaved", GROUP_KERNELS);
    let mut checked = vec![0usize; isas.len()];
    for format in BlockFormat::ALL {
        for &(rows, cols) in &[(1usize, 32usize), (16, 64), (37, 576), (49, 160)] {
            let original = random_weight(&mut r, format, rows, cols);
            let mut w = original.clone();
            assert!(w.set_layout(Layout::Interleaved));
            assert_eq!(w.layout(), Layout::Interleaved);
            assert_eq!(w.resident_bytes(), rows.div_ceil(16) * 16 * original.row_bytes, "same bytes, padded to whole groups");
            // Every row dequantizes to the same values, one at a time and as a tile from a group boundary.
            assert_eq!(deq(&w).iter().map(|v| v.to_bits()).collect::<Vec<_>>(), deq(&original).iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            let mut one = vec![0f32; cols];
            assert!(w.dequantize_rows(rows - 1, &mut one) && !w.dequantize_rows(rows, &mut one));
            // Back to rows: the file's bytes again.
            let mut back = w.clone();
            assert!(back.set_layout(Layout::Rows));
            assert_eq!(&back.bytes[..], &original.bytes[..]);

            let nb = cols / format::BLOCK;
            let group_bytes = nb * interleave::column_bytes(format);
            for n in 1..=4 {
                let x = activations(&mut r, n * cols);
                let mut acts = Q8Rows::default();
                acts.quantize(&x, n, cols);
                for g in 0..rows.div_ceil(16) {
                    let group = &w.bytes[g * group_bytes..(g + 1) * group_bytes];
                    let mut want = [[0f32; 16]; 4];
                    group_dot(DotIsa::Scalar, format, group, acts.view(0, n), n, &mut want);
                    for rr in 0..16.min(rows - g * 16) {
                        // The interleaved reference against the row kernel: the same integers per block, f32
                        // steps in another order.
                        let mut by_row = [0f32; 4];
                        assert!(RowDot::new(DotIsa::Scalar, format).unwrap().run(original.row(g * 16 + rr), acts.view(0, n), &mut by_row[..n]));
                        for t in 0..n {
                            let tol = 5e-7 * magnitude(format, &acts, t, cols);
                            assert!((want[t][rr] - by_row[t]).abs() <= tol, "{format:?} {rows}x{cols} row {} token {t}: {} vs {}", g * 16 + rr, want[t][rr], by_row[t]);
                        }
                    }
                    for (i, &isa) in isas.iter().enumerate() {
                        let mut got = [[f32::NAN; 16]; 4];
                        // The dispatch names the kernel that ran: a wide ISA must not fall back to the reference.
                        assert_eq!(group_dot(isa, format, group, acts.view(0, n), n, &mut got), isa);
                        for t in 0..n {
                            assert_eq!(got[t].map(f32::to_bits), want[t].map(f32::to_bits), "{} {format:?} {rows}x{cols} group {g} token {t}", isa.name());
                        }
                        checked[i] += 1;
                    }
                }
                // The whole product on every kernel, on one and two threads: the portable kernel's bits.
                let mut scalar = vec![f32::NAN; n * rows];
                assert!(q8_matmul_with(DotIsa::Scalar, &w, &x, n, &mut scalar));
                for &isa in &isas {
                    for threads in [1, 2] {
                        let mut y = vec![f32::NAN; n * rows];
                        product_on(threads, || q8_matmul_with(isa, &w, &x, n, &mut y));
                        assert_eq!(bits(&y), bits(&scalar), "{} {format:?} {rows}x{cols} n {n} threads {threads}", isa.name());
                    }
                }
            }
        }
    }
    for (isa, checked) in isas.iter().zip(&checked) {
        assert!(*checked > 100, "{}: {checked}", isa.name());
    }
}

#[test]
fn wide_activation_rounding_gives_the_portable_loops_bits() {
    if !DotIsa::Avx512Vnni.is_supported() {
        eprintln!("wide activation rounding skipped (not on this CPU): avx512-vnni");
        return;
    }
    let mut r = Rng(0x000c_0de5);
    let mut blocks: Vec<[f32; 32]> = (0..2000).map(|i| std::array::from_fn(|j| r.unit() * (1 + i % 9) as f32 * if j % 11 == 3 { 0.0 } else { 1.0 })).collect();
    // Ties: with max|x| = 127 the scale is 1, so halves must round to even on both paths.
    blocks.push(std::array::from_fn(|j| if j == 0 { 127.0 } else { j as f32 - 15.5 }));
    blocks.push([0.0; 32]);
    blocks.push(std::array::from_fn(|j| if j % 2 == 0 { -0.0 } else { 1e-30 }));
    for x in &blocks {
        let (mut wide, mut narrow) = ([0i8; 32], [0i8; 32]);
        let got = q8::block_codes(DotIsa::Avx512Vnni, x, &mut wide);
        let want = q8::block_codes_scalar(x, &mut narrow);
        assert_eq!((got.0.to_bits(), got.1, wide), (want.0.to_bits(), want.1, narrow), "{x:?}");
    }
}

#[test]
fn grouped_products_give_each_products_bits() {
    let mut r = Rng(0x6e0u64);
    let cols = 160;
    use BlockFormat::{BF16, F16, Q4_0, Q5_1, Q8_0};
    // Integer formats, 16-bit floats of one type (grouped too) and of both types (each product alone).
    for (formats, rounding) in [[Q4_0, Q8_0, Q5_1], [BF16; 3], [F16; 3], [F16, BF16, F16]].into_iter().flat_map(|f| [Rounding::Exact, Rounding::Q8, Rounding::Q8Decode].map(|r| (f, r))) {
        let mut ws = [(formats[0], 48), (formats[1], 17), (formats[2], 33)].map(|(f, rows)| if f16::Half::of(f).is_some() { random_half(&mut r, f, rows, cols) } else { random_weight(&mut r, f, rows, cols) });
        ws.iter_mut().for_each(|w| w.set_rounding(rounding));
        for n in [1usize, 3, 9] {
            let x = activations(&mut r, n * cols);
            let want: Vec<Vec<f32>> = ws.iter().map(|w| {
                let mut y = vec![f32::NAN; n * w.out_dim()];
                assert!(block_matmul(w, &x, n, &mut y));
                y
            }).collect();
            let mut got: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n * w.out_dim()]).collect();
            let mut ys: Vec<&mut [f32]> = got.iter_mut().map(|y| &mut y[..]).collect();
            let refs: Vec<&BlockLinear> = ws.iter().collect();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                assert!(pool.install(|| block_matmul_group(&refs, &x, n, &mut ys)));
                for (g, w) in ys.iter().zip(&want) {
                    assert_eq!(bits(g), bits(w), "{formats:?} {rounding:?} n {n} threads {threads}");
                }
            }
            assert!(!block_matmul_group(&refs, &x[1..], n, &mut ys), "short input");
        }
    }
}

/// `rows × cols` random K-quant blocks: random codes and sub-block scales, d and dmin in [0.001, 0.01].
fn random_k_weight(r: &mut Rng, format: BlockFormat, rows: usize, cols: usize) -> BlockLinear {
    let bb = format.block_bytes();
    let mut bytes: Vec<u8> = (0..rows * cols / 256 * bb).map(|_| r.next_u32() as u8).collect();
    for b in bytes.chunks_exact_mut(bb) {
        let mut d = || half::f16::from_f32(0.001 + 0.009 * (r.unit() + 1.0) / 2.0).to_le_bytes();
        match format {
            BlockFormat::Q4_K => {
                let (dd, dm) = (d(), d());
                b[..2].copy_from_slice(&dd);
                b[2..4].copy_from_slice(&dm);
            }
            _ => {
                let dd = d();
                b[208..210].copy_from_slice(&dd);
            }
        }
    }
    BlockLinear::new("t", format.ggml(), bytes, rows, cols).unwrap()
}

#[test]
fn k_quant_kernels_follow_llama_cpp_and_every_kernel_gives_the_scalar_bits() {
    let mut r = Rng(0x4b_0a_4b);
    let isas = wide_kernels_or_report("K-quant", K_KERNELS);
    for format in BlockFormat::K {
        for &(rows, cols) in &[(3usize, 256usize), (37, 512), (20, 1536)] {
            let w = random_k_weight(&mut r, format, rows, cols);
            let wf = deq(&w);
            for n in [1usize, 2, 5] {
                let x = activations(&mut r, n * cols);
                let mut acts = kquant::Q8KRows::default();
                acts.quantize(&x, n, cols);
                for t in 0..n {
                    let token = acts.token(t).unwrap();
                    let xq: Vec<f64> = (0..cols).map(|k| f64::from(token.d[k / 256]) * f64::from(token.qs[k])).collect();
                    for row in 0..rows {
                        let want = kquant::row_dot(format, w.row(row), token);
                        let terms = wf[row * cols..(row + 1) * cols].iter().zip(&xq);
                        let (exact, mag) = terms.fold((0f64, 0f64), |(s, m), (&a, &b)| (s + f64::from(a) * b, m + (f64::from(a) * b).abs()));
                        assert!((f64::from(want) - exact).abs() <= 1e-5 * mag + 1e-6, "{format:?} {rows}x{cols} row {row}: {want} vs {exact}");
                        for &isa in &isas {
                            // AVX-VNNI CPUs run the AVX2 kernel; a wide ISA must not fall back to the portable one.
                            let (got, ran) = kquant_dot(isa, format, w.row(row), token);
                            assert_eq!(ran, if isa == DotIsa::AvxVnni { DotIsa::Avx2 } else { isa });
                            assert_eq!(got.to_bits(), want.to_bits(), "{} {format:?} {rows}x{cols} row {row} token {t}: {got} vs {want}", isa.name());
                        }
                    }
                }
                // The whole product on every kernel, on one and two threads: the portable kernel's bits.
                let mut scalar = vec![f32::NAN; n * rows];
                assert!(kquant_matmul(DotIsa::Scalar, &w, &x, n, &mut scalar));
                for &isa in &isas {
                    for threads in [1, 2] {
                        let mut y = vec![f32::NAN; n * rows];
                        product_on(threads, || kquant_matmul(isa, &w, &x, n, &mut y));
                        assert_eq!(bits(&y), bits(&scalar), "{} {format:?} {rows}x{cols} n {n} threads {threads}", isa.name());
                    }
                }
                // The default kernel, on one and on two threads, and the exact path against gemm.
                let mut ws = w.clone();
                for rounding in [Rounding::Q8, Rounding::Exact] {
                    ws.set_rounding(rounding);
                    let run = |threads: usize| {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                        let mut y = vec![f32::NAN; n * rows];
                        assert!(pool.install(|| block_matmul(&ws, &x, n, &mut y)));
                        y
                    };
                    let one = run(1);
                    assert_eq!(one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), run(2).iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                    if rounding == Rounding::Exact {
                        let mut want = vec![0f32; n * rows];
                        assert!(matmul(&mut want, 0, rows, MatRef::row_major(&x, n, cols), MatRef::transposed(&wf, rows, cols), false, Threads::Single));
                        for (g, e) in one.iter().zip(&want) {
                            assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "{format:?} exact: {g} vs {e}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn k_activation_blocks_round_as_llama_cpp_does() {
    // The first value of largest magnitude sets the scale with its sign: d = max / -127.
    let mut x: Vec<f32> = (0..256).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    x[7] = -3.0;
    x[200] = 3.0;
    x[9] = 0.5 * 3.0 / 127.0 * 5.0; // 2.5 steps: rounds to even
    let mut acts = kquant::Q8KRows::default();
    acts.quantize(&x, 1, 256);
    let t = acts.token(0).unwrap();
    assert_eq!(t.d[0], 1.0 / (-127.0 / -3.0f32));
    assert_eq!((t.qs[7], t.qs[200], t.qs[9]), (-127, 127, 2));
    for j in 0..16 {
        assert_eq!(t.bsums[j], t.qs[16 * j..16 * j + 16].iter().map(|&q| i32::from(q)).sum::<i32>());
    }
    acts.quantize(&[0.0; 256], 1, 256);
    let t = acts.token(0).unwrap();
    assert!(t.d[0] == 0.0 && t.qs.iter().all(|&q| q == 0) && t.bsums.iter().all(|&s| s == 0));
}

#[test]
fn the_isa_can_be_forced_by_name_and_bad_names_are_refused() {
    for v in [None, Some(""), Some("auto"), Some(" AUTO ")] {
        assert_eq!(DotIsa::from_env(v), Ok(None), "{v:?}");
    }
    for isa in DotIsa::ALL {
        let got = DotIsa::from_env(Some(isa.name()));
        if isa.is_supported() {
            assert_eq!(got, Ok(Some(isa)));
        } else {
            assert!(got.is_err_and(|e| e.contains("not supported")), "{}", isa.name());
        }
    }
    let err = DotIsa::from_env(Some("neon-ish")).unwrap_err();
    assert!(err.contains("neon-ish") && err.contains("avx2") && err.contains("neon"), "{err}");
    assert!(DotIsa::best().is_supported());
}

#[test]
fn neon_is_detected_where_it_runs_and_keeps_the_row_layout() {
    assert!(!has_group_kernel(DotIsa::Neon) && !has_group_kernel(DotIsa::Scalar));
    if cfg!(target_arch = "aarch64") {
        // Without the dot-product extension (e.g. QEMU's cortex-a72) the portable kernels run.
        let want = if DotIsa::Neon.is_supported() { DotIsa::Neon } else { DotIsa::Scalar };
        assert_eq!(DotIsa::detect(), want);
        eprintln!("aarch64: detected kernel {}", want.name());
        let mut w = random_weight(&mut Rng(3), BlockFormat::Q4_0, 16, 64);
        w.set_rounding(Rounding::Q8);
        assert_eq!(w.layout(), Layout::Rows, "no interleaved layout on aarch64");
    } else {
        assert!(!DotIsa::Neon.is_supported());
    }
}

/// The llamacpp rounding (`Rounding::Q8`) on every 32-element format: the product (on AVX-512 the
/// interleaved lane-order kernel `x86_group::group_kernel_lanes`, or `group_kernel` for the repacked formats'
/// block order; elsewhere the rows) gives, row by row, the bits of the portable `ggml_lanes::row_dot` in
/// llama.cpp's order for that weight (`sum_order`), for 1 to 5 tokens and both orders' row counts.
#[test]
fn llamacpp_rounding_products_give_the_portable_llama_order_bits() {
    let mut r = Rng(0x11a3_acc0_0000_0031);
    let lanes_kernel = DotIsa::best() == DotIsa::Avx512Vnni;
    if !lanes_kernel {
        eprintln!("skipped: llamacpp lane-order kernel avx512-vnni (not supported on this CPU); the rows path is checked");
    }
    for format in BlockFormat::ALL {
        for &(rows, cols) in &[(16usize, 64usize), (37, 576), (48, 160)] {
            let mut w = random_weight(&mut r, format, rows, cols);
            let original = w.clone();
            w.set_rounding(Rounding::Q8);
            assert_eq!(w.layout() == Layout::Interleaved, lanes_kernel && interleave::supports(format), "{format:?}");
            let order = ggml_lanes::sum_order(format, rows);
            for n in 1..=5 {
                let x = activations(&mut r, n * cols);
                let mut got = vec![f32::NAN; n * rows];
                product_on(2, || block_matmul(&w, &x, n, &mut got));
                let mut acts = Q8Rows::default();
                acts.quantize(&x, n, cols);
                // The portable kernel on the same weight (an interleaved one's rows unpacked).
                let mut portable = vec![f32::NAN; n * rows];
                assert!(q8_matmul_with(DotIsa::Scalar, &w, &x, n, &mut portable), "{format:?}");
                for t in 0..n {
                    for c in 0..rows {
                        let mut want = [0f32; 1];
                        ggml_lanes::row_dot::<1>(format, order, original.row(c), acts.view(t, 1), &mut want, false);
                        assert_eq!(got[t * rows + c].to_bits(), want[0].to_bits(), "{format:?} {order:?} {rows}x{cols} n {n} token {t} row {c}");
                        assert_eq!(portable[t * rows + c].to_bits(), want[0].to_bits(), "portable {format:?} {order:?} {rows}x{cols} n {n} token {t} row {c}");
                    }
                }
            }
        }
    }
}

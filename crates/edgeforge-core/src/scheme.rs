//! Quantization schemes: the ggml block formats a quantizer can target directly, in one table that the
//! passes (GPTQ, RTN, the byte-budget allocator), the GGUF writer and the fit check all consult.
//!
//! Every scheme is described the same way: a block of `block` elements holds `block / sub` sub-blocks;
//! sub-block j dequantizes code q to `scale[j] · level(q) + offset[j]`, where `scale`/`offset` are exactly
//! what ggml's dequantizer computes from the block's stored fields (f16 d/m, K-quants' 6-bit or 8-bit
//! sub-scales). A quantizer therefore fits a block once ([`Scheme::fit_block`]), rounds each element to a
//! code with [`Scheme::round`] (GPTQ does this column by column, spreading the error), and the bytes come
//! from [`Scheme::encode`]. `blocks.rs` decodes them; the tests hold the two to bit-identical values.
//!
//! Adding a scheme is one row in [`TABLE`], a `level` arm and an `encode`/`fit` arm.

use half::f16;
use serde::{Deserialize, Serialize};

use crate::blocks::IQ4_NL_GRID;
use crate::dtype::GgmlType;

/// A storage scheme a quantizer can produce (spelled as llama.cpp's type names in recipes: `q4_0`, `iq4_nl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum Scheme {
    #[serde(rename = "q4_0")]
    Q4_0,
    #[serde(rename = "q4_1")]
    Q4_1,
    #[serde(rename = "iq4_nl")]
    IQ4_NL,
    #[serde(rename = "q5_0")]
    Q5_0,
    #[serde(rename = "q5_1")]
    Q5_1,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q4_k")]
    Q4_K,
    #[serde(rename = "q5_k")]
    Q5_K,
    #[serde(rename = "q6_k")]
    Q6_K,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct SchemeInfo {
    pub scheme: Scheme,
    /// Recipe spelling.
    pub name: &'static str,
    /// The GGUF block type that holds it exactly.
    pub ggml: GgmlType,
    /// Elements sharing one scale (and offset).
    pub sub: usize,
    /// Number of codes.
    pub n_levels: u32,
    /// Level of code 0 for uniform grids (`level(q) = q + first`); unused for IQ4_NL's table.
    pub first: i32,
    /// Sub-blocks carry an offset (a min) besides the scale.
    pub offset: bool,
    /// What llama-quantize substitutes when a row is not a whole number of blocks (K-quants on 576-wide rows).
    pub fallback: Option<Scheme>,
}

/// The table. Block sizes, bytes and ids come from the ggml type table (`dtype.rs`).
pub const TABLE: [SchemeInfo; 9] = [
    SchemeInfo { scheme: Scheme::Q4_0, name: "q4_0", ggml: GgmlType::Q4_0, sub: 32, n_levels: 16, first: -8, offset: false, fallback: None },
    SchemeInfo { scheme: Scheme::Q4_1, name: "q4_1", ggml: GgmlType::Q4_1, sub: 32, n_levels: 16, first: 0, offset: true, fallback: None },
    SchemeInfo { scheme: Scheme::IQ4_NL, name: "iq4_nl", ggml: GgmlType::IQ4_NL, sub: 32, n_levels: 16, first: 0, offset: false, fallback: None },
    SchemeInfo { scheme: Scheme::Q5_0, name: "q5_0", ggml: GgmlType::Q5_0, sub: 32, n_levels: 32, first: -16, offset: false, fallback: None },
    SchemeInfo { scheme: Scheme::Q5_1, name: "q5_1", ggml: GgmlType::Q5_1, sub: 32, n_levels: 32, first: 0, offset: true, fallback: None },
    SchemeInfo { scheme: Scheme::Q8_0, name: "q8_0", ggml: GgmlType::Q8_0, sub: 32, n_levels: 256, first: -128, offset: false, fallback: None },
    SchemeInfo { scheme: Scheme::Q4_K, name: "q4_k", ggml: GgmlType::Q4_K, sub: 32, n_levels: 16, first: 0, offset: true, fallback: Some(Scheme::Q5_0) },
    SchemeInfo { scheme: Scheme::Q5_K, name: "q5_k", ggml: GgmlType::Q5_K, sub: 32, n_levels: 32, first: 0, offset: true, fallback: Some(Scheme::Q5_1) },
    SchemeInfo { scheme: Scheme::Q6_K, name: "q6_k", ggml: GgmlType::Q6_K, sub: 16, n_levels: 64, first: -32, offset: false, fallback: Some(Scheme::Q8_0) },
];

/// Most sub-blocks a block has (Q6_K: 16 of 16 elements).
pub const MAX_SUBS: usize = 16;

/// A fitted block: the stored fields, and the per-sub-block scale and offset they dequantize with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockFit {
    pub d: f16,
    /// Q4_1/Q5_1: the min `m`; K-quants: `dmin`.
    pub m: f16,
    /// K-quants: 6-bit sub-scales (Q6_K: signed 8-bit, stored as its two's-complement byte).
    pub sc: [u8; MAX_SUBS],
    /// Q4_K/Q5_K: 6-bit sub-mins.
    pub mins: [u8; MAX_SUBS],
    pub scale: [f32; MAX_SUBS],
    pub offset: [f32; MAX_SUBS],
}

impl BlockFit {
    /// The fit of a 32-element block stored with exactly these fields (`m` is ignored by the formats
    /// without an offset, which must then be zero to encode/decode symmetrically).
    pub fn plain(d: f16, m: f16) -> BlockFit {
        crate::scheme_fit::plain_f16(d, m)
    }
}

impl Scheme {
    pub const ALL: [Scheme; 9] = [
        Scheme::Q4_0,
        Scheme::Q4_1,
        Scheme::IQ4_NL,
        Scheme::Q5_0,
        Scheme::Q5_1,
        Scheme::Q8_0,
        Scheme::Q4_K,
        Scheme::Q5_K,
        Scheme::Q6_K,
    ];

    pub fn info(self) -> &'static SchemeInfo {
        // TABLE is in ALL's order (a test checks it).
        &TABLE[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn from_name(name: &str) -> Option<Scheme> {
        TABLE.iter().find(|i| i.name.eq_ignore_ascii_case(name)).map(|i| i.scheme)
    }

    pub fn ggml(self) -> GgmlType {
        self.info().ggml
    }

    /// Elements per block.
    pub fn block(self) -> usize {
        self.ggml().block_elems()
    }

    /// The scheme a row of `row_len` can actually hold: this one, or its fallback (llama-quantize's rule),
    /// or `None` if neither divides the row.
    pub fn for_row(self, row_len: usize) -> Option<Scheme> {
        if row_len > 0 && row_len.is_multiple_of(self.block()) {
            return Some(self);
        }
        self.info().fallback.and_then(|f| f.for_row(row_len))
    }

    /// Bytes of `n_elems` elements (a whole number of blocks).
    pub fn bytes_for(self, n_elems: usize) -> usize {
        n_elems / self.block() * self.ggml().block_bytes()
    }

    pub fn bits_per_weight(self) -> f64 {
        self.ggml().bits_per_weight()
    }

    /// The grid value of `code`, before the sub-block's scale and offset.
    pub fn level(self, code: u8) -> f32 {
        match self {
            Scheme::IQ4_NL => f32::from(IQ4_NL_GRID[usize::from(code & 15)]),
            _ => (i32::from(code) + self.info().first) as f32,
        }
    }

    /// Dequantized value of `code` in sub-block `j`, computed exactly as ggml does.
    pub fn value(self, fit: &BlockFit, j: usize, code: u8) -> f32 {
        if self.info().offset {
            fit.scale[j] * self.level(code) + fit.offset[j]
        } else {
            fit.scale[j] * self.level(code)
        }
    }

    /// The nearest code to `v` for element `i` of the block, and its value.
    pub fn round(self, fit: &BlockFit, i: usize, v: f32) -> (u8, f32) {
        let j = i / self.info().sub;
        let (s, o) = (fit.scale[j], if self.info().offset { fit.offset[j] } else { 0.0 });
        let info = self.info();
        let code = if s == 0.0 {
            // Every code is worth `o`; take the one nearest level 0.
            match self {
                Scheme::IQ4_NL => 8,
                _ => (-info.first).clamp(0, info.n_levels as i32 - 1) as u8,
            }
        } else if self == Scheme::IQ4_NL {
            nearest_grid((v - o) / s)
        } else {
            (((v - o) / s).round() as i32 - info.first).clamp(0, info.n_levels as i32 - 1) as u8
        };
        (code, self.value(fit, j, code))
    }

    /// Fit one block's stored fields to `x`, weighting each element's squared error by `w` (the importance
    /// of its input channel, e.g. the Hessian diagonal; all ones for plain least squares).
    pub fn fit_block(self, x: &[f32], w: &[f32]) -> BlockFit {
        crate::scheme_fit::fit_block(self, x, w, true)
    }

    /// Fit one block to its range alone (the extreme value on the grid's end, or [min, max]), without the
    /// error search: what GPTQ fixes before its column loop. GPTQ moves the not yet quantized weights to
    /// absorb earlier rounding errors, and a grid fitted tightly to the original values (as the search does)
    /// clips those moved weights: on SmolLM2 Q4_0 (32 × 512 calibration tokens, 10 chunks) range fits gave
    /// 30.03 against 30.69 with the search.
    pub fn fit_block_range(self, x: &[f32], w: &[f32]) -> BlockFit {
        crate::scheme_fit::fit_block(self, x, w, false)
    }

    /// The block's bytes in ggml's layout from its fit and its codes.
    pub fn encode(self, fit: &BlockFit, codes: &[u8], out: &mut Vec<u8>) {
        crate::scheme_fit::encode(self, fit, codes, out)
    }

    /// The stored fields and the codes of one block of bytes: the exact inverse of [`Scheme::encode`] for
    /// the 32-element formats (Q4_0, Q4_1, IQ4_NL, Q5_0, Q5_1, Q8_0); `None` for the K-quants or a slice
    /// that is not one block.
    pub fn decode_block(self, bytes: &[u8]) -> Option<(BlockFit, Vec<u8>)> {
        crate::scheme_fit::decode(self, bytes)
    }

    /// The scheme whose ggml type is `ty`, if it is one of the 32-element formats with plain f16 fields
    /// that [`Scheme::decode_block`] reads.
    pub fn plain_f16_of(ty: GgmlType) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.ggml() == ty && s.block() == 32)
    }

    /// Round-to-nearest of a row-major tensor with rows of `row_len` (a whole number of blocks), each
    /// block fitted with `importance` per column (or uniformly): the bytes of a ggml tensor.
    pub fn quantize_rows(self, values: &[f32], row_len: usize, importance: Option<&[f32]>) -> Vec<u8> {
        use rayon::prelude::*;
        let b = self.block();
        let ones = vec![1f32; row_len];
        let imp = importance.unwrap_or(&ones);
        values
            .par_chunks(row_len)
            .flat_map_iter(|row| {
                let mut out = Vec::with_capacity(self.bytes_for(row_len));
                for (k, x) in row.chunks(b).enumerate() {
                    let w = &imp[k * b..(k + 1) * b];
                    let fit = self.fit_block(x, w);
                    let codes: Vec<u8> = x.iter().enumerate().map(|(i, &v)| self.round(&fit, i, v).0).collect();
                    self.encode(&fit, &codes, &mut out);
                }
                out
            })
            .collect()
    }
}

/// Index of the IQ4_NL level nearest `t` (in grid units).
pub(crate) fn nearest_grid(t: f32) -> u8 {
    let idx = IQ4_NL_GRID.partition_point(|&g| f32::from(g) < t);
    if idx == 0 {
        return 0;
    }
    if idx >= 16 {
        return 15;
    }
    let (lo, hi) = (f32::from(IQ4_NL_GRID[idx - 1]), f32::from(IQ4_NL_GRID[idx]));
    if t - lo <= hi - t {
        (idx - 1) as u8
    } else {
        idx as u8
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng(seed);
        // Mostly small weights with a few outliers, as in real layers; one block all zero, one all positive.
        let mut v: Vec<f32> = (0..n).map(|i| 0.02 * r.next() * if i % 37 == 0 { 6.0 } else { 1.0 }).collect();
        v[256..288].fill(0.0);
        for x in &mut v[512..544] {
            *x = x.abs() + 0.01;
        }
        v
    }

    #[test]
    fn table_is_in_enum_order_and_names_round_trip() {
        for (i, s) in Scheme::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].scheme, *s);
            assert_eq!(Scheme::from_name(s.name()), Some(*s));
            assert_eq!(s.bytes_for(s.block()), s.ggml().block_bytes());
        }
        assert_eq!(Scheme::Q6_K.for_row(576), Some(Scheme::Q8_0));
        assert_eq!(Scheme::Q4_K.for_row(1536), Some(Scheme::Q4_K));
        assert_eq!(Scheme::Q4_K.for_row(576), Some(Scheme::Q5_0));
    }

    #[test]
    fn encoded_blocks_decode_to_exactly_the_values_the_fit_predicts() {
        let row = 1024;
        let x = data(2 * row, 3);
        for s in Scheme::ALL {
            let b = s.block();
            let w: Vec<f32> = (0..b).map(|i| 1.0 + (i % 5) as f32).collect();
            let mut bytes = Vec::new();
            let mut predicted = Vec::new();
            for blk in x.chunks(b) {
                let fit = s.fit_block(blk, &w);
                let (codes, vals): (Vec<u8>, Vec<f32>) = blk.iter().enumerate().map(|(i, &v)| s.round(&fit, i, v)).unzip();
                s.encode(&fit, &codes, &mut bytes);
                predicted.extend(vals);
            }
            assert_eq!(bytes.len(), s.bytes_for(x.len()), "{s}");
            let mut decoded = vec![0f32; x.len()];
            crate::blocks::dequantize(s.ggml(), &bytes, &mut decoded).unwrap();
            for (i, (a, b)) in decoded.iter().zip(&predicted).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{s} element {i}: decoded {a} vs predicted {b}");
            }
            // Quantization error is small relative to the data for every scheme.
            let err: f32 = x.iter().zip(&decoded).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
            let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
            let limit = match s.info().n_levels {
                16 => 0.16,
                32 => 0.08,
                64 => 0.04,
                _ => 0.01,
            };
            assert!(err / norm < limit, "{s}: relative error {}", err / norm);
        }
    }

    #[test]
    fn more_levels_mean_less_error_and_importance_is_honoured() {
        let x = data(4096, 11);
        let err = |s: Scheme, w: &[f32]| {
            let q = s.quantize_rows(&x, 1024, Some(w));
            let mut d = vec![0f32; x.len()];
            crate::blocks::dequantize(s.ggml(), &q, &mut d).unwrap();
            x.iter().zip(&d).enumerate().map(|(i, (a, b))| f64::from(w[i % 1024]) * f64::from(a - b).powi(2)).sum::<f64>()
        };
        let ones = vec![1f32; 1024];
        assert!(err(Scheme::Q5_0, &ones) < err(Scheme::Q4_0, &ones));
        assert!(err(Scheme::Q8_0, &ones) < err(Scheme::Q5_1, &ones));
        assert!(err(Scheme::Q6_K, &ones) < err(Scheme::Q5_K, &ones));
        assert!(err(Scheme::Q5_K, &ones) < err(Scheme::Q4_K, &ones));
        assert!(err(Scheme::IQ4_NL, &ones) < err(Scheme::Q4_0, &ones));
        // Channels weighted 100x are reproduced better when the fit knows it.
        let heavy: Vec<f32> = (0..1024).map(|i| if i % 8 == 0 { 100.0 } else { 1.0 }).collect();
        for s in [Scheme::Q4_0, Scheme::IQ4_NL, Scheme::Q4_1, Scheme::Q4_K] {
            let plain = {
                let q = s.quantize_rows(&x, 1024, None);
                let mut d = vec![0f32; x.len()];
                crate::blocks::dequantize(s.ggml(), &q, &mut d).unwrap();
                x.iter().zip(&d).enumerate().map(|(i, (a, b))| f64::from(heavy[i % 1024]) * f64::from(a - b).powi(2)).sum::<f64>()
            };
            assert!(err(s, &heavy) < plain, "{s}");
        }
    }

    #[test]
    fn decode_block_is_the_exact_inverse_of_encode() {
        let mut r = Rng(99);
        for s in Scheme::ALL {
            if s.block() != 32 {
                assert!(s.decode_block(&vec![0u8; s.ggml().block_bytes()]).is_none(), "{s}");
                continue;
            }
            assert_eq!(Scheme::plain_f16_of(s.ggml()), Some(s));
            for _ in 0..200 {
                let d = f16::from_f32(r.next() * 0.1);
                let m = if s.info().offset { f16::from_f32(r.next() * 0.5) } else { f16::ZERO };
                let fit = BlockFit::plain(d, m);
                let codes: Vec<u8> = (0..32).map(|_| (((r.next() + 1.0) * 0.5 * s.info().n_levels as f32) as u32).min(s.info().n_levels - 1) as u8).collect();
                let mut bytes = Vec::new();
                s.encode(&fit, &codes, &mut bytes);
                let (back, back_codes) = s.decode_block(&bytes).unwrap();
                assert_eq!(back_codes, codes, "{s}");
                assert_eq!((back.d.to_bits(), back.m.to_bits()), (d.to_bits(), m.to_bits()), "{s}");
                let mut again = Vec::new();
                s.encode(&back, &back_codes, &mut again);
                assert_eq!(again, bytes, "{s}");
                let mut decoded = vec![0f32; 32];
                crate::blocks::dequantize(s.ggml(), &bytes, &mut decoded).unwrap();
                for (i, &c) in codes.iter().enumerate() {
                    assert_eq!(decoded[i].to_bits(), s.value(&back, 0, c).to_bits(), "{s} element {i}");
                }
            }
        }
    }

    #[test]
    fn a_q4_1_block_is_refitted_exactly() {
        // Values that already sit on a Q4_1 grid (as in the reference model) come back bit for bit.
        let (d, m) = (f16::from_f32(0.0123), f16::from_f32(-0.0871));
        let codes: Vec<u8> = (0..32).map(|i| ((i * 7 + 3) % 16) as u8).collect();
        let x: Vec<f32> = codes.iter().map(|&q| d.to_f32() * f32::from(q) + m.to_f32()).collect();
        let fit = Scheme::Q4_1.fit_block(&x, &[1.0; 32]);
        let back: Vec<f32> = x.iter().enumerate().map(|(i, &v)| Scheme::Q4_1.round(&fit, i, v).1).collect();
        assert_eq!(back, x);
    }
}

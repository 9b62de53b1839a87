//! The integer path of packed INT4/INT8 weights (`Rounding::Q8`, and decode steps under `Rounding::Q8Decode`):
//! the activations are quantized once per product to llama.cpp-style `q8` blocks of 32 (`Q8Rows`), and the
//! weight codes are dotted with them in integers, sixteen rows at a time.
//!
//! Layout (made once by `PackedLinear::set_rounding`, replacing the row-major codes): rows are taken in groups
//! of `GROUP` (the last group padded with zero rows); group `g`, block `b` (32 elements) sits at
//! `(g · nb + b) · GROUP · block_bytes`, its code bytes in 64-byte chunks: chunk `c` holds the row-major packed
//! bytes `4c .. 4c + 4` of row `r` at `64c + 4r` (for 4 bits, byte `j` of a block is element `j` in its low
//! nibble and element `j + 16` in its high nibble, as in `packed`; for 8 bits, byte `j` is element `j`). Scales
//! and zero points are interleaved the same way per quantization group: `GROUP` consecutive values per group
//! of rows and quantization group.
//!
//! Arithmetic per row and token (this scalar kernel is the reference the SIMD kernels match bit for bit): for
//! each block, the exact integer `Σ (c_j − z) · x_j` with the activation codes `x_j`, then
//! `acc = fma(dot, s_w · d_x, acc)`, block after block. Eligible weights: rows and quantization groups made of
//! whole blocks of 32 (SmolLM2's rows of 576 and 1536, groups of 32, 64, 128 or whole rows); others keep the
//! float kernels.

use super::packed::{Bits, Row, BLOCK};
use crate::kernels::blocks::Q8View;

/// Rows per interleaved group (the lanes of a 512-bit i32 vector).
pub(crate) const GROUP: usize = 16;

/// Code bytes of one row's block of 32 elements.
pub(crate) fn block_bytes(bits: Bits) -> usize {
    match bits {
        Bits::Four => BLOCK / 2,
        Bits::Eight => BLOCK,
    }
}

/// Whether a weight of this shape can take the integer path.
pub(crate) fn eligible(in_dim: usize, group_size: usize) -> bool {
    in_dim > 0 && in_dim.is_multiple_of(BLOCK) && group_size.is_multiple_of(BLOCK) && group_size > 0
}

/// The interleaved codes, scales and zero points of a packed weight.
#[derive(Debug, Clone)]
pub(crate) struct Interleaved {
    /// `groups × nb × GROUP × block_bytes` code bytes.
    pub codes: Vec<u8>,
    /// `groups × groups_per_row × GROUP` scales (zero for padding rows).
    pub scales: Vec<f32>,
    /// `groups × groups_per_row × GROUP` zero points (the symmetric zero when the format has none).
    pub zeros: Vec<u8>,
    /// Blocks of 32 per row.
    pub nb: usize,
    /// Blocks of 32 per quantization group.
    pub blocks_per_group: usize,
}

impl Interleaved {
    /// Interleave `out_dim` rows given by `row(r)` (each a well-formed row of `nb · 32` elements with groups of
    /// `blocks_per_group · 32`; the caller checked `eligible`). `None` if a size overflows.
    pub(crate) fn new<'a>(bits: Bits, out_dim: usize, in_dim: usize, group_size: usize, row: impl Fn(usize) -> Row<'a>) -> Option<Self> {
        let (nb, bpg) = (in_dim / BLOCK, group_size / BLOCK);
        let gpr = in_dim.div_ceil(group_size);
        let groups = out_dim.div_ceil(GROUP);
        let bb = block_bytes(bits);
        let mut codes = vec![0u8; groups.checked_mul(nb)?.checked_mul(GROUP * bb)?];
        let mut scales = vec![0f32; groups.checked_mul(gpr)?.checked_mul(GROUP)?];
        let mut zeros = vec![0u8; scales.len()];
        for r in 0..out_dim {
            let (g, rr, src) = (r / GROUP, r % GROUP, row(r));
            for (b, bytes) in src.codes.chunks_exact(bb).enumerate().take(nb) {
                let dst = &mut codes[(g * nb + b) * GROUP * bb..][..GROUP * bb];
                for (c, quad) in bytes.chunks_exact(4).enumerate() {
                    dst[64 * c + 4 * rr..][..4].copy_from_slice(quad);
                }
            }
            for q in 0..gpr {
                scales[(g * gpr + q) * GROUP + rr] = src.scales[q];
                zeros[(g * gpr + q) * GROUP + rr] = src.zeros.get(q);
            }
        }
        Some(Self { codes, scales, zeros, nb, blocks_per_group: bpg })
    }

    /// Bytes held in memory.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 4 + self.zeros.len()
    }

    /// Row `r`'s code bytes in the row-major packed layout, into `out` (`nb · block_bytes` long).
    pub(crate) fn unpack_codes(&self, bits: Bits, r: usize, out: &mut [u8]) {
        let bb = block_bytes(bits);
        let (g, rr) = (r / GROUP, r % GROUP);
        for (b, dst) in out.chunks_exact_mut(bb).enumerate().take(self.nb) {
            let src = &self.codes[(g * self.nb + b) * GROUP * bb..][..GROUP * bb];
            for (c, quad) in dst.chunks_exact_mut(4).enumerate() {
                quad.copy_from_slice(&src[64 * c + 4 * rr..][..4]);
            }
        }
    }

    /// Bytes of one group of 16 rows' codes.
    pub(crate) fn group_code_bytes(&self, bits: Bits) -> usize {
        self.nb * GROUP * block_bytes(bits)
    }

    /// Scales (and zero points) of one group of 16 rows: `groups_per_row × GROUP` values.
    pub(crate) fn group_params(&self, g: usize) -> (&[f32], &[u8]) {
        let gpr_x16 = self.nb.div_ceil(self.blocks_per_group) * GROUP;
        (&self.scales[g * gpr_x16..(g + 1) * gpr_x16], &self.zeros[g * gpr_x16..(g + 1) * gpr_x16])
    }
}

/// The code of element `j` (0..32) of row `rr` in an interleaved block (`GROUP · block_bytes` bytes).
fn code(bits: Bits, block: &[u8], rr: usize, j: usize) -> i32 {
    match bits {
        Bits::Eight => i32::from(block[64 * (j / 4) + 4 * rr + j % 4]),
        Bits::Four => {
            let byte = block[64 * ((j % 16) / 4) + 4 * rr + j % 4];
            i32::from(if j < 16 { byte & 0x0F } else { byte >> 4 })
        }
    }
}

/// One group of 16 rows and the tokens it is dotted with.
#[derive(Clone, Copy)]
pub(crate) struct GroupArgs<'a> {
    pub bits: Bits,
    /// The group's `nb` blocks of codes.
    pub codes: &'a [u8],
    /// Its `groups_per_row × GROUP` scales and zero points.
    pub scales: &'a [f32],
    pub zeros: &'a [u8],
    /// Blocks of 32 per quantization group.
    pub bpg: usize,
    /// 1..=4 tokens of `nb` blocks.
    pub x: Q8View<'a>,
}

impl GroupArgs<'_> {
    /// Every length the kernels rely on (O(1)).
    pub(crate) fn is_consistent(&self) -> bool {
        let x = &self.x;
        let params = GROUP * x.nb.div_ceil(self.bpg.max(1));
        (1..=4).contains(&x.tokens)
            && self.bpg >= 1
            && self.codes.len() == x.nb * GROUP * block_bytes(self.bits)
            && self.scales.len() == params
            && self.zeros.len() == params
            && x.qs.len() >= x.tokens * x.nb * BLOCK
            && x.d.len() >= x.tokens * x.nb
            && x.sq.len() >= x.tokens * x.nb
    }
}

/// The portable kernel and the reference: `out[t][rr]` := row `rr` of the group dotted with token `t`, `t < NT`.
pub(crate) fn group_dot<const NT: usize>(a: GroupArgs<'_>, out: &mut [[f32; GROUP]; NT]) {
    let GroupArgs { bits, codes, scales, zeros, bpg, x } = a;
    let bb = GROUP * block_bytes(bits);
    *out = [[0.0; GROUP]; NT];
    for (b, block) in codes.chunks_exact(bb).enumerate().take(x.nb) {
        let q = b / bpg;
        for rr in 0..GROUP {
            let (sw, z) = (scales[q * GROUP + rr], i32::from(zeros[q * GROUP + rr]));
            for (t, o) in out.iter_mut().enumerate() {
                let k = t * x.nb + b;
                let xq = &x.qs[k * BLOCK..(k + 1) * BLOCK];
                let dot: i32 = (0..BLOCK).map(|j| (code(bits, block, rr, j) - z) * i32::from(xq[j])).sum();
                o[rr] = (dot as f32).mul_add(sw * x.d[k], o[rr]);
            }
        }
    }
}

//! The interleaved layout of the 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL), for the x86
//! integer kernels (AVX-512 VNNI in `x86_group`; AVX-VNNI and AVX2 in `x86_group_avx2`, 16 rows as two halves
//! of 8): sixteen rows are interleaved per column of blocks, so one `vpdpbusd` multiplies four codes of each of 16 rows by four activation codes broadcast to every lane, and
//! each i32 lane of the result is one row's partial sum. A block column of 16 rows then costs a handful of
//! full-width instructions and one vector of 16 scales, with no horizontal reduction per row, and the matrix is
//! read as one contiguous stream. (llama.cpp repacks Q4_0 for its x86 kernels for the same reason.)
//!
//! Layout: rows are taken in groups of `GROUP` (the last group padded with zero rows). Group `g`, block column
//! `b` sits at `(g · nb + b) · GROUP · block_bytes`: the block's fields for the 16 rows, field by field (the f16
//! scales, then the f16 minimums and the 32-bit high bits where the format has them), then the rows' code bytes
//! in chunks of 64: chunk `c` holds code bytes `4c .. 4c + 4` of row `r` at `64c + 4r`. The
//! same bytes as the file's 16 blocks, reordered once (`repack`); `unpack_row` gives a row back in the file's
//! layout, so the exact path and embedding lookups dequantize it with the core's dequantizer.
//!
//! Arithmetic per row and token (the scalar kernel here is the reference the SIMD kernel must match bit for
//! bit): for each block, the integer dot `Σ w_j · x_j` of the signed weight values (`q − 8` for Q4_0, the
//! byte for Q8_0, the grid value for IQ4_NL) with the activation codes, then `acc = fma(dot, d_w · d_x, acc)`,
//! block after block. llama.cpp computes the same integer per block.

use edgeforge_core::blocks::IQ4_NL_GRID;

use super::format::{half_at, BlockFormat, BLOCK};
use super::q8::Q8View;

/// Rows per interleaved group (the lanes of a 512-bit i32 vector).
pub(crate) const GROUP: usize = 16;

/// Formats with an interleaved kernel: the 32-element formats.
pub(crate) fn supports(format: BlockFormat) -> bool {
    BlockFormat::ALL.contains(&format)
}

/// Code bytes per block (16 nibble pairs or 32 signed bytes), after the block's fields.
fn code_bytes(format: BlockFormat) -> usize {
    format.block_bytes() - format.qs_at()
}

/// The fields before a block's codes, (byte offset, size): the scale `d`, then the minimum `m` (Q4_1, Q5_1)
/// and the 32 high bits `qh` (Q5_0, Q5_1), in the block's order. In a block column each field is stored for the
/// 16 rows in a row (field-major), at 16 times its offset in the block.
fn fields(format: BlockFormat) -> impl Iterator<Item = (usize, usize)> {
    let min = (format.offset() == super::format::Offset::Min).then_some((2, 2));
    std::iter::once((0, 2)).chain(min).chain(format.qh_at().map(|at| (at, 4)))
}

/// Bytes of one group's block column.
pub(crate) fn column_bytes(format: BlockFormat) -> usize {
    GROUP * format.block_bytes()
}

/// `out_dim` rows of `nb` blocks in the file's layout, interleaved (`None` if `bytes` is not that long).
pub(crate) fn repack(format: BlockFormat, bytes: &[u8], out_dim: usize, nb: usize) -> Option<Vec<u8>> {
    let (bb, cb) = (format.block_bytes(), column_bytes(format));
    if !supports(format) || bytes.len() != out_dim.checked_mul(nb)?.checked_mul(bb)? {
        return None;
    }
    let mut out = vec![0u8; out_dim.div_ceil(GROUP).checked_mul(nb)?.checked_mul(cb)?];
    for (r, row) in bytes.chunks_exact(nb * bb).enumerate() {
        let (g, rr) = (r / GROUP, r % GROUP);
        for (b, src) in row.chunks_exact(bb).enumerate() {
            let dst = &mut out[(g * nb + b) * cb..][..cb];
            for (at, size) in fields(format) {
                dst[GROUP * at + size * rr..][..size].copy_from_slice(&src[at..at + size]);
            }
            let qs = format.qs_at();
            for c in 0..code_bytes(format) / 4 {
                dst[GROUP * qs + 64 * c + 4 * rr..][..4].copy_from_slice(&src[qs + 4 * c..][..4]);
            }
        }
    }
    Some(out)
}

/// Row `r` of an interleaved matrix of `nb` blocks per row, in the file's layout, into `row` (`nb` blocks).
pub(crate) fn unpack_row(format: BlockFormat, packed: &[u8], nb: usize, r: usize, row: &mut [u8]) {
    let (bb, cb) = (format.block_bytes(), column_bytes(format));
    let (g, rr) = (r / GROUP, r % GROUP);
    for (b, dst) in row.chunks_exact_mut(bb).enumerate().take(nb) {
        let src = &packed[(g * nb + b) * cb..][..cb];
        for (at, size) in fields(format) {
            dst[at..at + size].copy_from_slice(&src[GROUP * at + size * rr..][..size]);
        }
        let qs = format.qs_at();
        for c in 0..code_bytes(format) / 4 {
            dst[qs + 4 * c..][..4].copy_from_slice(&src[GROUP * qs + 64 * c + 4 * rr..][..4]);
        }
    }
}

/// The integer of element `j` of row `rr` in a group's block column `col`: signed (`q − 8`, `q − 16`, the Q8_0
/// byte, the IQ4_NL grid value), or the raw code of the formats with a minimum (Q4_1, Q5_1).
fn value(format: BlockFormat, col: &[u8], rr: usize, j: usize) -> i32 {
    let codes = &col[GROUP * format.qs_at()..];
    if format == BlockFormat::Q8_0 {
        return i32::from(codes[64 * (j / 4) + 4 * rr + j % 4] as i8);
    }
    let byte = codes[64 * ((j % 16) / 4) + 4 * rr + j % 4];
    let mut q = i32::from(if j < 16 { byte & 0x0F } else { byte >> 4 });
    if let Some(at) = format.qh_at() {
        let p = GROUP * at + 4 * rr;
        let qh = u32::from_le_bytes([col[p], col[p + 1], col[p + 2], col[p + 3]]);
        q |= (((qh >> j) & 1) << 4) as i32;
    }
    match format.offset() {
        super::format::Offset::Const(k) => q - k as i32,
        _ if format == BlockFormat::IQ4_NL => i32::from(IQ4_NL_GRID[q as usize]),
        _ => q,
    }
}

/// The portable kernel and the reference: `out[t][rr]` := row `rr` of the group (`nb` block columns at
/// `group`) dotted with token `t` of `x`, for `t < NT`. Per block: `acc = fma(dot, d_w · d_x, acc)`, and for
/// the formats with a minimum `off = fma(m, s16, off)` (the activation block's f16-rounded `d · Σq`, as
/// llama.cpp's `q8_1`); the row's value is `acc + off`.
pub(crate) fn group_dot<const NT: usize>(format: BlockFormat, group: &[u8], x: Q8View<'_>, out: &mut [[f32; GROUP]; NT]) {
    let cb = column_bytes(format);
    let with_min = format.offset() == super::format::Offset::Min;
    let mut off = [[0f32; GROUP]; NT];
    *out = [[0.0; GROUP]; NT];
    for (b, col) in group.chunks_exact(cb).enumerate().take(x.nb) {
        for rr in 0..GROUP {
            let dw = half_at(col, 2 * rr);
            for (t, (o, f)) in out.iter_mut().zip(off.iter_mut()).enumerate() {
                let k = t * x.nb + b;
                let xq = &x.qs[k * BLOCK..(k + 1) * BLOCK];
                let dot: i32 = (0..BLOCK).map(|j| value(format, col, rr, j) * i32::from(xq[j])).sum();
                o[rr] = (dot as f32).mul_add(dw * x.d[k], o[rr]);
                if with_min {
                    f[rr] = half_at(col, GROUP * 2 + 2 * rr).mul_add(x.s16[k], f[rr]);
                }
            }
        }
    }
    if with_min {
        for (o, f) in out.iter_mut().zip(&off) {
            for (o, f) in o.iter_mut().zip(f) {
                *o += f;
            }
        }
    }
}

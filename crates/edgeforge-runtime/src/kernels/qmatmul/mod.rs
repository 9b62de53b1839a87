//! `y = x · Wᵀ` with `W` kept as packed INT4/INT8 codes (`PackedLinear`), never expanded to a float copy.
//!
//! These kernels are our own rather than a generic gemm on dequantized weights because decode speed is
//! bound by the bytes of weights streamed per token: reading 4- or 8-bit codes and unpacking them in
//! registers moves 4–8× fewer bytes than an f32 matrix. Two strategies, chosen by the number of tokens:
//! - fused (up to `FUSED_MAX_TOKENS`, i.e. decode): for each output row, walk its groups, unpack the codes and
//!   multiply-add them into the activations of up to four tokens at once (SIMD, `row_dot`);
//! - tiled (many tokens, i.e. prefill): dequantize a tile of rows into a small per-worker f32 buffer and
//!   run gemm on it; the codes are unpacked once per tile and reused by every token. The buffer is a
//!   transient of `tile_rows × in_dim` floats, never the whole matrix.
//!
//! Both parallelize over output rows (column blocks of `y`) on the current rayon pool; a row's value
//! depends only on the row, the activations and the CPU's kernel, never on scheduling, so results are
//! reproducible for a given thread count (and in fact independent of it).
#![allow(unsafe_code)]

mod interleave;
mod packed;
mod scalar;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_int;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::sync::OnceLock;

pub use packed::{Bits, PackedLinear};
use packed::Row;

use crate::kernels::blocks::{rows_per_task, DotIsa, Q8Rows, Rounding, Q8_DECODE_MAX_TOKENS};
use crate::kernels::matmul::{for_each_column_block, for_each_column_block_of, ColumnBlock, MatRef, Output, MAX_OUTPUTS};

/// Instruction sets a row kernel can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// x86_64 AVX2 + FMA, 8 lanes.
    Avx2,
    /// x86_64 AVX-512F, 16 lanes.
    Avx512,
    /// aarch64 NEON, 4 lanes.
    Neon,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512f",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run the kernel (checked at run time, not at compile time).
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Isa::Avx2.is_supported() && is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU can run, scalar first.
    pub fn supported() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon].into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The kernel used by default: the widest supported one (detected once per process).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Isa::Avx512, Isa::Avx2, Isa::Neon].into_iter().find(|i| i.is_supported()).unwrap_or(Isa::Scalar)
        })
    }
}

/// How `qmatmul` computes a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Fused when `n <= FUSED_MAX_TOKENS`, tiled otherwise.
    Auto,
    Fused,
    Tiled,
}

/// Largest token count computed by the fused kernel under `Strategy::Auto`. Measured on SmolLM2-135M's
/// shapes (AMD EPYC, 2 threads, AVX-512; reports/bench/packed-kernels-linear.md): fused wins on every shape
/// up to 4 tokens and on all but ffn_down at 8; from 16 tokens the tiles win on most shapes (the fused
/// kernel unpacks the codes again for every block of four tokens; a tile is unpacked once for all of them).
pub const FUSED_MAX_TOKENS: usize = 8;

/// Output rows per task of the fused kernel (enough work per task to amortize scheduling).
const FUSED_ROWS_PER_TASK: usize = 16;

/// Floats of the per-worker dequantized tile (about 128 KiB, to stay in L2 beside gemm's packing).
const TILE_FLOATS: usize = 32 * 1024;

/// Rows per tile for an input width: a multiple of 16, at least 16.
fn tile_rows(in_dim: usize) -> usize {
    ((TILE_FLOATS / in_dim.max(1)) / 16).max(1) * 16
}

/// An instruction set this CPU was checked to support: the proof the unsafe kernels need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernel(Isa);

impl Kernel {
    pub(crate) fn new(isa: Isa) -> Option<Kernel> {
        isa.is_supported().then_some(Kernel(isa))
    }

    pub(crate) fn best() -> Kernel {
        Kernel(Isa::best())
    }

    /// `out[..nt]` = the row's dot products with `nt` (1..=4) tokens of `x` (stride `x_stride`). Returns
    /// `false` on inconsistent inputs, after checking everything the unsafe kernels rely on (O(1)).
    #[inline]
    fn row_dot(self, row: Row<'_>, x: &[f32], x_stride: usize, out: &mut [f32]) -> bool {
        let nt = out.len();
        if !(1..=4).contains(&nt) || !row.is_well_formed() || x_stride < row.len || x.len() < (nt - 1) * x_stride + row.len {
            return false;
        }
        match nt {
            1 => self.row_dot_n::<1>(row, x, x_stride, out),
            2 => self.row_dot_n::<2>(row, x, x_stride, out),
            3 => self.row_dot_n::<3>(row, x, x_stride, out),
            _ => self.row_dot_n::<4>(row, x, x_stride, out),
        }
    }

    /// `row_dot` for a fixed token count, after `row_dot`'s checks (`out.len() == NT`).
    #[inline]
    fn row_dot_n<const NT: usize>(self, row: Row<'_>, x: &[f32], x_stride: usize, out: &mut [f32]) -> bool {
        let mut o = [0f32; NT];
        match self.0 {
            Isa::Scalar => scalar::row_dot::<NT>(row, x, x_stride, &mut o),
            // SAFETY (all SIMD arms): a `Kernel` exists only for supported instruction sets, and `row_dot`
            // checked that the row is well formed and `x` holds `(NT − 1) · x_stride + row.len` values.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::row_dot_avx2::<NT>(row, x, x_stride, &mut o) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::row_dot_avx512::<NT>(row, x, x_stride, &mut o) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::row_dot_neon::<NT>(row, x, x_stride, &mut o) },
            #[allow(unreachable_patterns)]
            _ => return false,
        }
        out.copy_from_slice(&o);
        true
    }

    /// The row's float values into `out` (exactly `row.len` long), bit-identical across kernels.
    pub(crate) fn dequant_row(self, row: Row<'_>, out: &mut [f32]) -> bool {
        if !row.is_well_formed() || out.len() != row.len {
            return false;
        }
        match self.0 {
            Isa::Scalar => row.dequantize_into(out),
            // SAFETY (all SIMD arms): supported instruction set (a `Kernel`), well-formed row and
            // `out.len() == row.len`, checked above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::dequant_row_avx2(row, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::dequant_row_avx512(row, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::dequant_row_neon(row, out) },
            #[allow(unreachable_patterns)]
            _ => return false,
        }
        true
    }
}

/// `y[n × out] = x[n × in] · Wᵀ` with the default kernel and strategy. Returns `false` (callers treat it
/// as an internal error) when lengths disagree.
#[must_use]
pub fn qmatmul(w: &PackedLinear, x: &[f32], n: usize, y: &mut [f32]) -> bool {
    if integer_path(w, n) {
        return int_matmul_with(DotIsa::best(), w, x, n, y);
    }
    qmatmul_with(Isa::best(), Strategy::Auto, w, x, n, y)
}

/// `qmatmul` with an explicit kernel and strategy (tests and benchmarks).
#[must_use]
pub fn qmatmul_with(isa: Isa, strategy: Strategy, w: &PackedLinear, x: &[f32], n: usize, y: &mut [f32]) -> bool {
    let (out_dim, in_dim) = (w.out_dim(), w.in_dim());
    let Some(kernel) = Kernel::new(isa) else { return false };
    if n.checked_mul(in_dim) != Some(x.len()) || n.checked_mul(out_dim) != Some(y.len()) {
        return false;
    }
    if n == 0 {
        return true;
    }
    let fused = match strategy {
        Strategy::Auto => n <= FUSED_MAX_TOKENS,
        Strategy::Fused => true,
        Strategy::Tiled => false,
    };
    if fused {
        for_each_column_block(y, n, out_dim, FUSED_ROWS_PER_TASK, Vec::new, |buf: &mut Vec<u8>, mut block| {
            let mut dots = [0f32; 4];
            for c in 0..block.width() {
                let row = w.row_in(block.col0() + c, buf);
                for t0 in (0..n).step_by(4) {
                    let nt = (n - t0).min(4);
                    if !kernel.row_dot(row, &x[t0 * in_dim..], in_dim, &mut dots[..nt]) {
                        return false;
                    }
                    for (t, &d) in dots[..nt].iter().enumerate() {
                        if !block.set(t0 + t, c, d) {
                            return false;
                        }
                    }
                }
            }
            true
        })
    } else {
        let xs = MatRef::row_major(x, n, in_dim);
        for_each_column_block(y, n, out_dim, tile_rows(in_dim), Vec::new, |tile: &mut Vec<f32>, mut block| {
            tile.resize(block.width() * in_dim, 0.0);
            w.dequantize_rows_with(kernel, block.col0(), tile) && block.matmul(xs, MatRef::transposed(tile, block.width(), in_dim))
        })
    }
}

thread_local! {
    /// The quantized activations of the current integer product, reused across calls (no allocation per token).
    static ACTS: RefCell<Q8Rows> = RefCell::new(Q8Rows::default());
}

/// Whether `w` multiplies `n` tokens on the integer path under its rounding.
pub(crate) fn integer_path(w: &PackedLinear, n: usize) -> bool {
    w.interleaved().is_some() && (w.rounding() == Rounding::Q8 || (w.rounding() == Rounding::Q8Decode && n <= Q8_DECODE_MAX_TOKENS))
}

/// The integer path (`interleave`) with an explicit kernel: `false` on inconsistent lengths, an unsupported
/// kernel or a weight that is not interleaved (`PackedLinear::set_rounding`).
#[must_use]
pub fn int_matmul_with(isa: DotIsa, w: &PackedLinear, x: &[f32], n: usize, y: &mut [f32]) -> bool {
    int_matmul_group(isa, &[w], x, n, &mut [y])
}

/// `ys[i] = x · ws[i]ᵀ` on the integer path for weights sharing one input (q, k and v; gate and up): the
/// activations are quantized once and every product runs in one parallel loop. The values are those of
/// `int_matmul_with` on each. At most `MAX_OUTPUTS` weights; `false` on inconsistent lengths.
#[must_use]
pub fn int_matmul_group(isa: DotIsa, ws: &[&PackedLinear], x: &[f32], n: usize, ys: &mut [&mut [f32]]) -> bool {
    let Some(in_dim) = ws.first().map(|w| w.in_dim()) else { return ys.is_empty() };
    let consistent = |w: &PackedLinear, y: &[f32]| w.in_dim() == in_dim && w.interleaved().is_some() && n.checked_mul(w.out_dim()) == Some(y.len());
    if ws.len() != ys.len() || ws.len() > MAX_OUTPUTS || !isa.is_supported() || n.checked_mul(in_dim) != Some(x.len()) || !ws.iter().zip(ys.iter()).all(|(w, y)| consistent(w, y)) {
        return false;
    }
    if n == 0 {
        return true;
    }
    ACTS.with_borrow_mut(|acts| {
        acts.quantize(x, n, in_dim);
        let acts = &*acts;
        let mut outs: [Output<'_>; MAX_OUTPUTS] = Default::default();
        for ((o, y), w) in outs.iter_mut().zip(ys.iter_mut()).zip(ws) {
            *o = Output { data: y, cols: w.out_dim(), width: rows_per_task(w.out_dim()) };
        }
        for_each_column_block_of(&mut outs[..ws.len()], n, || (), |_, i, mut block| {
            ws[i].interleaved().is_some_and(|il| int_block(isa, ws[i].bits(), il, acts, n, &mut block))
        })
    })
}

/// One task of the integer path: whole groups of 16 rows, up to four tokens per kernel call.
fn int_block(isa: DotIsa, bits: Bits, il: &interleave::Interleaved, acts: &Q8Rows, n: usize, block: &mut ColumnBlock<'_>) -> bool {
    let gcb = il.group_code_bytes(bits);
    let (col0, end) = (block.col0(), block.col0() + block.width());
    if acts.rows() != n || acts.blocks_per_row() != il.nb || !col0.is_multiple_of(interleave::GROUP) {
        return false;
    }
    for g in col0 / interleave::GROUP..end.div_ceil(interleave::GROUP) {
        let Some(codes) = il.codes.get(g * gcb..(g + 1) * gcb) else { return false };
        let (scales, zeros) = il.group_params(g);
        // The group's rows inside this block (the last group of the matrix may be padding past `end`).
        let (c0, c1) = (g * interleave::GROUP - col0, ((g + 1) * interleave::GROUP).min(end) - col0);
        for t0 in (0..n).step_by(4) {
            let nt = (n - t0).min(4);
            let mut out = [[0f32; interleave::GROUP]; 4];
            let args = interleave::GroupArgs { bits, codes, scales, zeros, bpg: il.blocks_per_group, x: acts.view(t0, nt) };
            if !group_dot(isa, args, &mut out) {
                return false;
            }
            for (t, o) in out[..nt].iter().enumerate() {
                let Some(row) = block.row_mut(t0 + t) else { return false };
                row[c0..c1].copy_from_slice(&o[..c1 - c0]);
            }
        }
    }
    true
}

/// `out[t]` := the group's 16 rows dotted with token `t` of `a.x`, for its 1..=4 tokens, on `isa` (the caller
/// checked it is supported). `false` on inconsistent lengths.
fn group_dot(isa: DotIsa, a: interleave::GroupArgs<'_>, out: &mut [[f32; interleave::GROUP]; 4]) -> bool {
    if !a.is_consistent() {
        return false;
    }
    macro_rules! run {
        ($b8:literal, $nt:literal) => {{
            let Some(o) = out.first_chunk_mut::<$nt>() else { return false };
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `isa` is supported (checked by `int_matmul_with`) and every length the kernel reads
                // was checked by `is_consistent` above.
                DotIsa::Avx512Vnni => unsafe { x86_int::group_dot_avx512::<$b8, $nt>(a, o) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above; AVX-VNNI CPUs run the AVX2 kernel (they have AVX2).
                DotIsa::Avx2 | DotIsa::AvxVnni => unsafe { x86_int::group_dot_avx2::<$b8, $nt>(a, o) },
                _ => interleave::group_dot::<$nt>(a, o),
            }
        }};
    }
    match (a.bits, a.x.tokens) {
        (Bits::Four, 1) => run!(false, 1),
        (Bits::Four, 2) => run!(false, 2),
        (Bits::Four, 3) => run!(false, 3),
        (Bits::Four, _) => run!(false, 4),
        (Bits::Eight, 1) => run!(true, 1),
        (Bits::Eight, 2) => run!(true, 2),
        (Bits::Eight, 3) => run!(true, 3),
        (Bits::Eight, _) => run!(true, 4),
    }
    true
}

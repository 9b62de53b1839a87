//! `y = x · Wᵀ` with `W` kept in its GGUF block format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q6_K, F16
//! and BF16): the file's bytes, row after row, never expanded to a float copy of the matrix. (F16 and BF16
//! rows are multiplied in f32 by `f16`; the rest of this comment is about the 8-bit formats.)
//!
//! Two arithmetics, chosen per weight (`Rounding`):
//! - `Rounding::Exact` (the default): activations stay f32. Rows are dequantized a tile at a time into a
//!   small per-worker buffer (by `edgeforge_core::blocks`, the same values the float path gets) and
//!   multiplied with gemm. This is what perplexity runs on, so its figures do not change.
//! - `Rounding::Q8Decode` (what `eval latency` times by default): `Q8` for decode steps, and for batches
//!   of weights in the interleaved layout (faster than gemm there, measured); `Exact` for other batches.
//! - `Rounding::Q8` (llama.cpp's arithmetic): the activations are quantized once per product to blocks of
//!   32 signed bytes with one scale (`Q8Rows`, llama.cpp's `q8_0`/`q8_1`), and each weight block is dotted
//!   with them in integers (`vpdpbusd` with AVX-512 VNNI or AVX-VNNI, `vpmaddubsw` with AVX2, `sdot` with
//!   aarch64 NEON and the dot-product extension, a scalar loop otherwise), then scaled in f32. This moves 4–8x fewer bytes than f32 and is what decode runs on when
//!   speed matters. On every x86 kernel the 32-element formats are first interleaved 16 rows per block
//!   column (`interleave`), K-quants keep the file's rows; NEON runs every format on the file's rows (`neon`,
//!   `neon_kquant`: the portable kernels' bits, tested under QEMU). `EDGEFORGE_ISA` forces a kernel (`DotIsa::best`).
//!
//! The integer kernels are our own rather than a library's because no maintained Rust crate multiplies
//! ggml's block formats; they are tested against dequantize-then-f32 references (`tests`).
//!
//! Both parallelize over output rows on the current rayon pool; a row's value depends only on the row, the
//! activations and the CPU's kernel, never on scheduling, so results are independent of the thread count.
#![allow(unsafe_code)]

mod f16;
mod format;
mod ggml_kquant;
mod ggml_lanes;
mod interleave;
mod kquant;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_kquant;
mod q8;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_group;
#[cfg(target_arch = "x86_64")]
mod x86_group_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_kquant;
#[cfg(target_arch = "x86_64")]
mod x86_kquant_avx2;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::sync::OnceLock;

use edgeforge_core::GgmlType;

pub use format::BlockFormat;
pub use q8::Q8Rows;
pub(crate) use q8::Q8View;

use crate::error::RuntimeError;
use crate::kernels::matmul::{for_each_column_block, for_each_column_block_of, ColumnBlock, MatRef, Output, MAX_OUTPUTS};

/// How a block weight multiplies its activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// f32 activations times the exactly dequantized weights (the float path's figures).
    #[default]
    Exact,
    /// Activations rounded to 8-bit blocks once per product, integer dot products (llama.cpp's arithmetic).
    Q8,
    /// `Q8` for products of up to `Q8_DECODE_MAX_TOKENS` tokens (decode steps, where it is fastest) and for
    /// batches of weights in the interleaved layout (the x86 group kernels, faster than gemm there too);
    /// `Exact` for other batches (K-quants, weights kept in rows: gemm on dequantized tiles is faster).
    Q8Decode,
}

/// Largest token count `Rounding::Q8Decode` computes in Q8.
pub const Q8_DECODE_MAX_TOKENS: usize = 8;

/// Instruction sets of the integer dot-product kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotIsa {
    Scalar,
    /// x86_64 AVX2 (`vpmaddubsw` + `vpmaddwd`).
    Avx2,
    /// x86_64 AVX-VNNI (`vpdpbusd`, VEX-encoded, 256-bit).
    AvxVnni,
    /// x86_64 AVX-512 VNNI (`vpdpbusd`, EVEX-encoded on 256-bit registers with AVX-512VL).
    Avx512Vnni,
    /// aarch64 NEON with the dot-product extension (`sdot`), row kernels only (no interleaved layout).
    Neon,
}

impl DotIsa {
    pub const ALL: [DotIsa; 5] = [DotIsa::Scalar, DotIsa::Avx2, DotIsa::AvxVnni, DotIsa::Avx512Vnni, DotIsa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            DotIsa::Scalar => "scalar",
            DotIsa::Avx2 => "avx2",
            DotIsa::AvxVnni => "avx-vnni",
            DotIsa::Avx512Vnni => "avx512-vnni",
            DotIsa::Neon => "neon",
        }
    }

    /// Whether this CPU can run the kernel (checked at run time).
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        let avx2 = || is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        match self {
            DotIsa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            DotIsa::Avx2 => avx2(),
            #[cfg(target_arch = "x86_64")]
            DotIsa::AvxVnni => avx2() && is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            DotIsa::Avx512Vnni => {
                avx2()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            DotIsa::Neon => std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("dotprod"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The kernel used by default, chosen once per process: the one named by `EDGEFORGE_ISA` (`scalar`,
    /// `avx2`, `avx-vnni`, `avx512-vnni`, `neon`; `auto` or unset: detect) if this CPU supports it, else the best
    /// supported one. A value that is unknown or not supported here is refused with a message on stderr and
    /// the detected kernel is used.
    pub fn best() -> DotIsa {
        static BEST: OnceLock<DotIsa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let detected = DotIsa::detect();
            match DotIsa::from_env(std::env::var("EDGEFORGE_ISA").ok().as_deref()) {
                Ok(forced) => forced.unwrap_or(detected),
                Err(why) => {
                    eprintln!("edgeforge: EDGEFORGE_ISA refused ({why}); using the detected kernel, {}", detected.name());
                    detected
                }
            }
        })
    }

    /// The best kernel this CPU supports (an aarch64 CPU without the dot-product extension gets `Scalar`).
    pub fn detect() -> DotIsa {
        [DotIsa::Avx512Vnni, DotIsa::AvxVnni, DotIsa::Avx2, DotIsa::Neon].into_iter().find(|i| i.is_supported()).unwrap_or(DotIsa::Scalar)
    }

    /// The kernel an `EDGEFORGE_ISA` value forces: `None` for unset, empty or `auto`; an error naming the
    /// value when it is unknown or this CPU cannot run it.
    pub fn from_env(value: Option<&str>) -> Result<Option<DotIsa>, String> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("auto")) else { return Ok(None) };
        let names = || DotIsa::ALL.map(DotIsa::name).join(", ");
        match DotIsa::ALL.into_iter().find(|i| i.name().eq_ignore_ascii_case(v)) {
            None => Err(format!("unknown value {v:?}; expected auto, {}", names())),
            Some(isa) if !isa.is_supported() => Err(format!("{v} is not supported on this CPU")),
            Some(isa) => Ok(Some(isa)),
        }
    }
}

/// A `[out_dim, in_dim]` weight in a GGUF block format: the tensor's bytes as stored in the file (a view
/// into the file's map when the model was loaded from GGUF: nothing copied).
#[derive(Debug, Clone)]
pub struct BlockLinear {
    format: BlockFormat,
    bytes: edgeforge_core::BlockBytes,
    out_dim: usize,
    in_dim: usize,
    row_bytes: usize,
    rounding: Rounding,
    layout: Layout,
}

/// How a weight's blocks are ordered in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The file's order: row after row (a view into the file's map when loaded from GGUF).
    Rows,
    /// Sixteen rows interleaved per block column (`interleave`), for the x86 group kernels (AVX-512 VNNI,
    /// AVX-VNNI, AVX2): made once, when a weight in a 32-element format is set to an integer rounding and the
    /// kernel in use (`DotIsa::best`) has a group kernel.
    Interleaved,
}

impl BlockLinear {
    /// Wrap `bytes` holding `out_dim` rows of `in_dim` elements of `ty`. Refused (with the reason) when the
    /// type has no native kernel, a row is not whole blocks, or the length disagrees.
    pub fn new(tensor: &str, ty: GgmlType, bytes: impl Into<edgeforge_core::BlockBytes>, out_dim: usize, in_dim: usize) -> Result<Self, RuntimeError> {
        let bytes = bytes.into();
        let bad = |why: &'static str| RuntimeError::PackedWeight { tensor: tensor.to_owned(), why };
        let format = BlockFormat::of(ty).ok_or_else(|| bad("no native kernel for this block type"))?;
        if in_dim == 0 || out_dim == 0 || !in_dim.is_multiple_of(format.block_elems()) {
            return Err(bad("rows must be a positive whole number of blocks"));
        }
        let row_bytes = (in_dim / format.block_elems()).checked_mul(format.block_bytes()).ok_or_else(|| bad("row too long"))?;
        if row_bytes.checked_mul(out_dim) != Some(bytes.len()) {
            return Err(bad("byte length disagrees with the shape"));
        }
        Ok(Self { format, bytes, out_dim, in_dim, row_bytes, rounding: Rounding::Exact, layout: Layout::Rows })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Reorder the blocks into `layout` (a copy of the same size; a mapped view's pages go back to the
    /// kernel). `false` (nothing changed) when the format has no such layout.
    pub fn set_layout(&mut self, layout: Layout) -> bool {
        let nb = self.in_dim / format::BLOCK;
        let bytes = match (self.layout, layout) {
            (a, b) if a == b => return true,
            (Layout::Rows, Layout::Interleaved) => interleave::repack(self.format, &self.bytes, self.out_dim, nb),
            (Layout::Interleaved, Layout::Rows) => {
                let mut rows = vec![0u8; self.out_dim * self.row_bytes];
                for (r, row) in rows.chunks_exact_mut(self.row_bytes).enumerate() {
                    interleave::unpack_row(self.format, &self.bytes, nb, r, row);
                }
                Some(rows)
            }
            _ => None,
        };
        match bytes {
            Some(b) => {
                (self.bytes, self.layout) = (b.into(), layout);
                true
            }
            None => false,
        }
    }

    pub fn format(&self) -> BlockFormat {
        self.format
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn resident_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Hand a mapped weight's pages back to the kernel (streamed evaluation, after its last use).
    pub fn release(&self) {
        self.bytes.release();
    }

    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// Choose the arithmetic; an integer rounding also interleaves the formats that have a group kernel on
    /// the kernel in use (`Layout::Interleaved`, `has_group_kernel`).
    pub fn set_rounding(&mut self, rounding: Rounding) {
        self.rounding = rounding;
        // The llamacpp rounding (`Q8`) sums in llama.cpp's order (`ggml_lanes`): interleaved for the AVX-512
        // kernels of that order, on the row layout elsewhere.
        let isa = DotIsa::best();
        let group = match rounding {
            Rounding::Q8Decode => has_group_kernel(isa),
            Rounding::Q8 => isa == DotIsa::Avx512Vnni,
            Rounding::Exact => false,
        };
        if group && interleave::supports(self.format) {
            self.set_layout(Layout::Interleaved);
        }
    }

    /// The bytes of row `r` in the file's layout (in bounds: `r < out_dim`; `Layout::Rows` only).
    fn row(&self, r: usize) -> &[u8] {
        debug_assert_eq!(self.layout, Layout::Rows);
        &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Rows `r0..` dequantized into `out` (a whole number of rows). `false` past the last row.
    pub fn dequantize_rows(&self, r0: usize, out: &mut [f32]) -> bool {
        let rows = out.len() / self.in_dim;
        if rows * self.in_dim != out.len() || r0 + rows > self.out_dim {
            return false;
        }
        if self.layout == Layout::Interleaved {
            let nb = self.in_dim / format::BLOCK;
            return ROW_BYTES.with_borrow_mut(|buf| {
                buf.resize(rows * self.row_bytes, 0);
                for (i, row) in buf.chunks_exact_mut(self.row_bytes).enumerate() {
                    interleave::unpack_row(self.format, &self.bytes, nb, r0 + i, row);
                }
                edgeforge_core::blocks::dequantize(self.format.ggml(), buf, out).is_ok()
            });
        }
        let src = &self.bytes[r0 * self.row_bytes..(r0 + rows) * self.row_bytes];
        edgeforge_core::blocks::dequantize(self.format.ggml(), src, out).is_ok()
    }
}

/// Floats of the per-worker dequantized tile of the exact path (as `qmatmul`'s tiles).
const TILE_FLOATS: usize = 32 * 1024;

/// `y[n × out] = x[n × in] · Wᵀ` in the weight's own arithmetic (`BlockLinear::rounding`). `false` on
/// inconsistent lengths.
#[must_use]
pub fn block_matmul(w: &BlockLinear, x: &[f32], n: usize, y: &mut [f32]) -> bool {
    if f16::Half::of(w.format).is_some() {
        return match half_path(w, n) {
            Some(path) => half_matmul_group(path, &[w], x, n, &mut [y]),
            None => exact_matmul(w, x, n, y),
        };
    }
    if w.format.is_k() {
        return if rounds_to_q8(w, n) { kquant_matmul(DotIsa::best(), w, x, n, y) } else { exact_matmul(w, x, n, y) };
    }
    if integer_path(w, n) {
        q8_matmul_with(DotIsa::best(), w, x, n, y)
    } else {
        exact_matmul(w, x, n, y)
    }
}

/// Rows per tile of the exact path. gemm (gemm-common 0.19) takes a small-matrix path, with another split of
/// the sum over `in_dim`, when both output dimensions are at most 64; the f32 path multiplies whole matrices,
/// so every tile (the last one too) is kept wider than 64 rows unless the matrix itself is not: then each
/// product is computed with the same split, and the exact path gives the f32 path's bits (tested on the
/// reference model). A multiple of 16, about `TILE_FLOATS` floats when the rows are short.
fn exact_tile_rows(out_dim: usize, in_dim: usize) -> usize {
    if out_dim <= 64 {
        return out_dim.max(1);
    }
    let target = ((TILE_FLOATS / in_dim.max(1)) / 16 * 16).max(80);
    (target..)
        .step_by(16)
        .find(|&w| w >= out_dim || out_dim.is_multiple_of(w) || out_dim % w > 64)
        .unwrap_or(out_dim)
}

/// The exact path: tiles of dequantized rows times f32 activations (gemm).
fn exact_matmul(w: &BlockLinear, x: &[f32], n: usize, y: &mut [f32]) -> bool {
    let (out_dim, in_dim) = (w.out_dim, w.in_dim);
    if n.checked_mul(in_dim) != Some(x.len()) || n.checked_mul(out_dim) != Some(y.len()) {
        return false;
    }
    if n == 0 {
        return true;
    }
    let rows = exact_tile_rows(out_dim, in_dim);
    let xs = MatRef::row_major(x, n, in_dim);
    for_each_column_block(y, n, out_dim, rows, Vec::new, |tile: &mut Vec<f32>, mut block| {
        tile.resize(block.width() * in_dim, 0.0);
        w.dequantize_rows(block.col0(), tile) && block.matmul(xs, MatRef::transposed(tile, block.width(), in_dim))
    })
}

/// How F16/BF16 weights multiply `n` tokens on the row kernels: the weight type, and whether the activations
/// are first rounded to it (`Rounding::Q8`, as llama.cpp does: `f16::Half::round`). `None`: not a 16-bit float
/// weight, or a batch that takes the exact tiles.
fn half_path(w: &BlockLinear, n: usize) -> Option<(f16::Half, bool)> {
    let half = f16::Half::of(w.format)?;
    match w.rounding {
        Rounding::Q8 => Some((half, true)),
        Rounding::Exact | Rounding::Q8Decode if n <= Q8_DECODE_MAX_TOKENS => Some((half, false)),
        Rounding::Exact | Rounding::Q8Decode => None,
    }
}

/// `ys[i] = x · ws[i]ᵀ` for 16-bit float weights sharing one input and one `half_path` (`path`), in one
/// parallel loop over all their output rows; the activations are rounded once, into a per-thread buffer
/// reused across calls. `false` on inconsistent lengths.
fn half_matmul_group(path: (f16::Half, bool), ws: &[&BlockLinear], x: &[f32], n: usize, ys: &mut [&mut [f32]]) -> bool {
    let Some(in_dim) = ws.first().map(|w| w.in_dim) else { return ys.is_empty() };
    let consistent = |w: &BlockLinear, y: &[f32]| w.in_dim == in_dim && f16::Half::of(w.format) == Some(path.0) && n.checked_mul(w.out_dim) == Some(y.len());
    if ws.len() != ys.len() || ws.len() > MAX_OUTPUTS || n.checked_mul(in_dim) != Some(x.len()) || !ws.iter().zip(ys.iter()).all(|(w, y)| consistent(w, y)) {
        return false;
    }
    if !path.1 {
        return half_rows(path.0, ws, x, n, ys);
    }
    ROUNDED.with_borrow_mut(|rounded| {
        rounded.clear();
        rounded.extend(x.iter().map(|&v| path.0.round(v)));
        half_rows(path.0, ws, rounded, n, ys)
    })
}

/// `half_matmul_group`'s products once the activations are final (lengths checked by the caller): one
/// token's rows in one kernel call (four rows at a time), several tokens row by row (each row read once); the
/// same bits either way.
fn half_rows(half: f16::Half, ws: &[&BlockLinear], x: &[f32], n: usize, ys: &mut [&mut [f32]]) -> bool {
    let in_dim = ws.first().map_or(0, |w| w.in_dim);
    let isa = DotIsa::best();
    let mut outs: [Output<'_>; MAX_OUTPUTS] = Default::default();
    for ((o, y), w) in outs.iter_mut().zip(ys.iter_mut()).zip(ws) {
        *o = Output { data: y, cols: w.out_dim, width: rows_per_task(w.out_dim) };
    }
    for_each_column_block_of(&mut outs[..ws.len()], n, || (), |_, i, mut block| {
        let w = ws[i];
        if n == 1 {
            let rows = &w.bytes[block.col0() * w.row_bytes..(block.col0() + block.width()) * w.row_bytes];
            return block.row_mut(0).is_some_and(|out| f16::rows_dot(isa, half, rows, x, out));
        }
        for c in 0..block.width() {
            let row = w.row(block.col0() + c);
            for t in 0..n {
                let Some(v) = f16::dot(isa, half, row, &x[t * in_dim..(t + 1) * in_dim]) else { return false };
                if !block.set(t, c, v) {
                    return false;
                }
            }
        }
        true
    })
}

thread_local! {
    /// The quantized activations of the current product, reused across calls (no allocation per token).
    static ACTS: RefCell<Q8Rows> = RefCell::new(Q8Rows::default());
    /// The same for the K-quant formats (`q8_K` blocks of 256).
    static ACTS_K: RefCell<kquant::Q8KRows> = RefCell::new(kquant::Q8KRows::default());
    /// Rows of an interleaved weight put back in the file's layout for dequantization (grows, is reused).
    static ROW_BYTES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The activations of the current F16/BF16 product rounded to the weight's type (`Rounding::Q8`).
    static ROUNDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Output rows per task of the integer path: enough tasks for every worker to get several, at least 16 rows.
pub(crate) fn rows_per_task(out_dim: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (out_dim.div_ceil(threads * 4)).div_ceil(16).max(1) * 16
}

/// The integer path of a K-quant weight on `isa` (tests and benchmarks name it): `false` on inconsistent
/// lengths, an unsupported kernel or a format that is not a K-quant.
#[must_use]
pub fn kquant_matmul(isa: DotIsa, w: &BlockLinear, x: &[f32], n: usize, y: &mut [f32]) -> bool {
    let (out_dim, in_dim) = (w.out_dim, w.in_dim);
    if !w.format.is_k() || !isa.is_supported() || w.layout != Layout::Rows || n.checked_mul(in_dim) != Some(x.len()) || n.checked_mul(out_dim) != Some(y.len()) {
        return false;
    }
    if n == 0 {
        return true;
    }
    ACTS_K.with_borrow_mut(|acts| {
        acts.quantize(x, n, in_dim);
        let acts = &*acts;
        for_each_column_block(y, n, out_dim, rows_per_task(out_dim), || (), |_, mut block| {
            for t in 0..n {
                let Some(token) = acts.token(t) else { return false };
                let col0 = block.col0();
                let Some(out) = block.row_mut(t) else { return false };
                for (c, o) in out.iter_mut().enumerate() {
                    let row = w.row(col0 + c);
                    // The llamacpp rounding sums in llama.cpp's order where `ggml_kquant` has it.
                    let ggml = if w.rounding == Rounding::Q8 { ggml_kquant::row_dot(w.format, row, token, w.out_dim, n, t, isa != DotIsa::Scalar) } else { None };
                    *o = ggml.unwrap_or_else(|| kquant_dot(isa, w.format, row, token).0);
                }
            }
            true
        })
    })
}

/// One K-quant row (`x.nb` whole blocks, checked by `kquant_matmul`'s shapes) dotted with one token on `isa`,
/// and the kernel that ran (AVX-VNNI CPUs run the AVX2 kernel; tests check the wide kernels ran).
#[inline]
fn kquant_dot(isa: DotIsa, format: BlockFormat, row: &[u8], x: kquant::Q8KView<'_>) -> (f32, DotIsa) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kquant_matmul` checked `isa` is supported; `row` is one whole row of `x.nb` blocks of `format`.
        DotIsa::Avx512Vnni => (unsafe { x86_kquant::row_dot(format, row, x) }, isa),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; every x86 kernel's features include AVX2, FMA and F16C.
        DotIsa::Avx2 | DotIsa::AvxVnni => (unsafe { x86_kquant_avx2::row_dot(format, row, x) }, DotIsa::Avx2),
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `kquant_matmul` checked `isa` is supported (NEON and dotprod); `row` is one whole row of
        // `x.nb` blocks of `format`.
        DotIsa::Neon => (unsafe { neon_kquant::row_dot(format, row, x) }, isa),
        _ => (kquant::row_dot(format, row, x), DotIsa::Scalar),
    }
}

/// Whether `w` (a 32-element format) multiplies `n` tokens on the integer path: always under `Rounding::Q8`;
/// under `Rounding::Q8Decode` for decode steps (up to `Q8_DECODE_MAX_TOKENS` tokens) and, when the weight is
/// in the interleaved layout (the x86 group kernels), for batches too. There the group kernels beat gemm on
/// dequantized tiles at prefill: `eval latency -p 512` on this repository's Xeon, 2026-12-06, 13–84% faster
/// on Q4_0, Q4_1 and Q8_0 files at 1 and 2 threads. Weights kept in rows (other CPUs) and the K-quants (whose
/// kernels ran pp512 at 0.4–0.6x of the exact tiles) keep the exact tiles for batches.
fn integer_path(w: &BlockLinear, n: usize) -> bool {
    w.format.block_elems() == format::BLOCK && rounds_to_q8(w, n)
}

/// Whether `w`'s rounding puts a product of `n` tokens on 8-bit activations (`integer_path`'s policy, which
/// the K-quants share: they are never interleaved, so their batches keep the exact tiles).
fn rounds_to_q8(w: &BlockLinear, n: usize) -> bool {
    match w.rounding {
        Rounding::Q8 => true,
        Rounding::Q8Decode => n <= Q8_DECODE_MAX_TOKENS || w.layout == Layout::Interleaved,
        Rounding::Exact => false,
    }
}

/// `ys[i] = x · ws[i]ᵀ` for weights sharing one input (q, k and v; gate and up): when all of them take the
/// integer path the activations are quantized once and every product runs in one parallel loop (one
/// fork-join instead of one per weight), and likewise when all are F16 (or all BF16) weights on the row
/// kernels; otherwise each goes through `block_matmul`. The values are those of
/// `block_matmul` either way. At most `MAX_OUTPUTS` weights; `false` on inconsistent lengths.
#[must_use]
pub fn block_matmul_group(ws: &[&BlockLinear], x: &[f32], n: usize, ys: &mut [&mut [f32]]) -> bool {
    if ws.len() != ys.len() {
        return false;
    }
    if ws.iter().all(|w| integer_path(w, n)) {
        return q8_matmul_group(DotIsa::best(), ws, x, n, ys);
    }
    if let Some(path) = ws.first().and_then(|w| half_path(w, n)) {
        if ws.iter().all(|w| half_path(w, n) == Some(path)) {
            return half_matmul_group(path, ws, x, n, ys);
        }
    }
    ws.iter().zip(ys.iter_mut()).all(|(w, y)| block_matmul(w, x, n, y))
}

/// The integer path with an explicit kernel (tests and benchmarks): `false` on inconsistent lengths or an
/// unsupported kernel.
#[must_use]
pub fn q8_matmul_with(isa: DotIsa, w: &BlockLinear, x: &[f32], n: usize, y: &mut [f32]) -> bool {
    q8_matmul_group(isa, &[w], x, n, &mut [y])
}

/// The integer path of weights sharing one input (`block_matmul_group`), on `isa`.
#[must_use]
fn q8_matmul_group(isa: DotIsa, ws: &[&BlockLinear], x: &[f32], n: usize, ys: &mut [&mut [f32]]) -> bool {
    let Some(in_dim) = ws.first().map(|w| w.in_dim) else { return ys.is_empty() };
    let consistent = |w: &BlockLinear, y: &[f32]| w.in_dim == in_dim && w.format.block_elems() == format::BLOCK && n.checked_mul(w.out_dim) == Some(y.len());
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
            *o = Output { data: y, cols: w.out_dim, width: rows_per_task(w.out_dim) };
        }
        for_each_column_block_of(&mut outs[..ws.len()], n, Vec::new, |buf: &mut Vec<f32>, i, mut block| {
            let w = ws[i];
            if w.rounding == Rounding::Q8 {
                return ggml_block(isa, w, acts, n, &mut block);
            }
            match w.layout {
                Layout::Interleaved => interleaved_block(isa, w, acts, n, &mut block),
                Layout::Rows => RowDot::new(isa, w.format).is_some_and(|dot| rows_block(dot, w, acts, n, &mut block, buf)),
            }
        })
    })
}

/// One task of the integer path under the llamacpp rounding: the block's rows against the `n` tokens, summed
/// as llama.cpp sums them (`ggml_lanes`): on interleaved weights the AVX-512 kernels (`group_kernel_lanes`,
/// or `group_kernel` for `SumOrder::Block`), on rows the portable code, four tokens per pass over a row
/// (`isa` other than `Scalar` takes its AVX2 + FMA build where the CPU has it).
fn ggml_block(isa: DotIsa, w: &BlockLinear, acts: &Q8Rows, n: usize, block: &mut ColumnBlock<'_>) -> bool {
    let order = ggml_lanes::sum_order(w.format, w.out_dim);
    if acts.rows() != n || acts.blocks_per_row() * format::BLOCK != w.in_dim {
        return false;
    }
    let interleaved = w.layout == Layout::Interleaved;
    match order {
        ggml_lanes::SumOrder::Block if interleaved => return interleaved_block(isa, w, acts, n, block),
        ggml_lanes::SumOrder::Lanes if interleaved && isa == DotIsa::Avx512Vnni => return interleaved_lanes_block(isa, w, acts, n, block),
        _ => {}
    }
    // Rows (an interleaved weight's put back in the file's layout, for kernels without a lane-order one).
    let wide = isa != DotIsa::Scalar;
    let mut unpacked = vec![0u8; if interleaved { w.row_bytes } else { 0 }];
    for t0 in (0..n).step_by(4) {
        let nt = (n - t0).min(4);
        let x = acts.view(t0, nt);
        for c in 0..block.width() {
            let row = if interleaved {
                interleave::unpack_row(w.format, &w.bytes, w.in_dim / format::BLOCK, block.col0() + c, &mut unpacked);
                &unpacked[..]
            } else {
                w.row(block.col0() + c)
            };
            let mut out = [0f32; 4];
            ggml_lanes::row_dot_tokens(w.format, order, row, x, &mut out, wide);
            for (t, &v) in out[..nt].iter().enumerate() {
                if !block.set(t0 + t, c, v) {
                    return false;
                }
            }
        }
    }
    true
}

/// One task of the integer path on the file's row layout: the block's rows against the `n` tokens.
fn rows_block(dot: RowDot, w: &BlockLinear, acts: &Q8Rows, n: usize, block: &mut ColumnBlock<'_>, buf: &mut Vec<f32>) -> bool {
    if n == 1 {
        // Decode: the block's rows in one kernel call.
        buf.resize(block.width(), 0.0);
        let Some(token) = dot.tokens(acts, 0, 1) else { return false };
        let rows = &w.bytes[block.col0() * w.row_bytes..(block.col0() + block.width()) * w.row_bytes];
        return dot.run_rows(rows, token, buf) && block.row_mut(0).is_some_and(|o| {
            o.copy_from_slice(buf);
            true
        });
    }
    let mut out = [0f32; 4];
    for t0 in (0..n).step_by(4) {
        let nt = (n - t0).min(4);
        let Some(tokens) = dot.tokens(acts, t0, nt) else { return false };
        for c in 0..block.width() {
            if !dot.run(w.row(block.col0() + c), tokens, &mut out[..nt]) {
                return false;
            }
            for (t, &v) in out[..nt].iter().enumerate() {
                if !block.set(t0 + t, c, v) {
                    return false;
                }
            }
        }
    }
    true
}

/// `interleaved_block` in llama.cpp's lane order (`x86_group::group_dot_lanes`, two tokens per call; only
/// AVX-512 interleaves weights for the llamacpp rounding, `set_rounding`).
fn interleaved_lanes_block(isa: DotIsa, w: &BlockLinear, acts: &Q8Rows, n: usize, block: &mut ColumnBlock<'_>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == DotIsa::Avx512Vnni && isa.is_supported() {
        return for_each_group(w, acts, n, block, 2, |group, x, nt, out| {
            // SAFETY: AVX-512 VNNI was checked above; `group` holds whole block columns of an interleaved format
            // and `x` holds `nt` (1 or 2) tokens of as many blocks (checked by `for_each_group`).
            if nt == 2 {
                if let Some(o) = out.first_chunk_mut::<2>() {
                    unsafe { x86_group::group_dot_lanes::<2>(w.format, group, x, o) };
                }
            } else if let Some(o) = out.first_chunk_mut::<1>() {
                unsafe { x86_group::group_dot_lanes::<1>(w.format, group, x, o) };
            }
        });
    }
    let _ = (isa, w, acts, n, block);
    false
}

/// One task of the integer path on an interleaved weight: whole groups (`rows_per_task` is a multiple of 16),
/// up to four tokens per kernel call.
fn interleaved_block(isa: DotIsa, w: &BlockLinear, acts: &Q8Rows, n: usize, block: &mut ColumnBlock<'_>) -> bool {
    for_each_group(w, acts, n, block, 4, |group, x, nt, out| {
        group_dot(isa, w.format, group, x, nt, out);
    })
}

/// The groups of an interleaved weight inside `block`, against the `n` tokens `step` (<= 4) at a time:
/// `kernel(group, tokens, nt, out)` fills `out[..nt]`, whose rows inside the block are copied to it. `false`
/// on inconsistent lengths.
fn for_each_group(
    w: &BlockLinear,
    acts: &Q8Rows,
    n: usize,
    block: &mut ColumnBlock<'_>,
    step: usize,
    mut kernel: impl FnMut(&[u8], Q8View<'_>, usize, &mut [[f32; interleave::GROUP]; 4]),
) -> bool {
    let (nb, cb) = (w.in_dim / format::BLOCK, interleave::column_bytes(w.format));
    let group_bytes = nb * cb;
    let (col0, end) = (block.col0(), block.col0() + block.width());
    if w.bytes.len() != w.out_dim.div_ceil(interleave::GROUP) * group_bytes || acts.rows() != n || acts.blocks_per_row() != nb || !col0.is_multiple_of(interleave::GROUP) {
        return false;
    }
    for g in col0 / interleave::GROUP..end.div_ceil(interleave::GROUP) {
        let group = &w.bytes[g * group_bytes..(g + 1) * group_bytes];
        // The group's rows inside this block (the last group of the matrix may be padding past `end`).
        let (c0, c1) = (g * interleave::GROUP - col0, ((g + 1) * interleave::GROUP).min(end) - col0);
        for t0 in (0..n).step_by(step) {
            let nt = (n - t0).min(step);
            let mut out = [[0f32; interleave::GROUP]; 4];
            kernel(group, acts.view(t0, nt), nt, &mut out);
            for (t, o) in out[..nt].iter().enumerate() {
                let Some(row) = block.row_mut(t0 + t) else { return false };
                row[c0..c1].copy_from_slice(&o[..c1 - c0]);
            }
        }
    }
    true
}

/// Whether `isa` has a kernel of the interleaved layout that beats the row kernels (every x86 one; the
/// portable group kernel is only the reference, and NEON has row kernels only).
fn has_group_kernel(isa: DotIsa) -> bool {
    matches!(isa, DotIsa::Avx2 | DotIsa::AvxVnni | DotIsa::Avx512Vnni)
}

/// `out[t]` := the group's rows dotted with token `t` of `x`, `t < nt` (1..=4; `x` holds `nt` tokens and the
/// group `x.nb` block columns, checked by the caller), on `isa`. Returns the kernel that ran (the portable
/// one for `DotIsa::Scalar` and `DotIsa::Neon`, which has no group kernel), so tests can tell a wide kernel
/// from the fallback.
fn group_dot(isa: DotIsa, format: BlockFormat, group: &[u8], x: Q8View<'_>, nt: usize, out: &mut [[f32; interleave::GROUP]; 4]) -> DotIsa {
    macro_rules! run {
        ($nt:literal) => {{
            let Some(o) = out.first_chunk_mut::<$nt>() else { return DotIsa::Scalar };
            match isa {
                #[cfg(target_arch = "x86_64")]
                DotIsa::Avx512Vnni => {
                    // SAFETY: `isa` was checked supported by the caller (`q8_matmul_with`); `group` holds `x.nb`
                    // whole block columns of an interleaved format and `x` holds `nt` tokens (checked by the caller).
                    unsafe { x86_group::group_dot::<$nt>(format, group, x, o) };
                    isa
                }
                #[cfg(target_arch = "x86_64")]
                DotIsa::Avx2 | DotIsa::AvxVnni => {
                    // SAFETY: as above (AVX2 is part of every x86 kernel's features; AVX-VNNI checked for it).
                    unsafe { x86_group_avx2::group_dot::<$nt>(isa, format, group, x, o) };
                    isa
                }
                _ => {
                    interleave::group_dot::<$nt>(format, group, x, o);
                    DotIsa::Scalar
                }
            }
        }};
    }
    match nt {
        1 => run!(1),
        2 => run!(2),
        3 => run!(3),
        _ => run!(4),
    }
}

/// One row's dot products with up to four quantized tokens, on a kernel this CPU was checked to support.
#[derive(Clone, Copy)]
struct RowDot {
    isa: DotIsa,
    format: BlockFormat,
}

impl RowDot {
    fn new(isa: DotIsa, format: BlockFormat) -> Option<Self> {
        (isa.is_supported() && format.block_elems() == format::BLOCK).then_some(Self { isa, format })
    }

    /// Tokens `t0..t0 + nt` of `acts`, if they exist.
    fn tokens(self, acts: &Q8Rows, t0: usize, nt: usize) -> Option<Q8View<'_>> {
        (t0 + nt <= acts.rows()).then(|| acts.view(t0, nt))
    }

    /// `out[t] = row · token t` of `x` for `t < out.len()` (1..=4). Returns `false` on inconsistent inputs,
    /// after checking everything the unsafe kernels rely on (O(1)).
    #[inline]
    fn run(self, row: &[u8], x: Q8View<'_>, out: &mut [f32]) -> bool {
        let nt = out.len();
        if !(1..=4).contains(&nt) || nt > x.tokens || row.len() != x.nb * self.format.block_bytes() {
            return false;
        }
        match nt {
            1 => self.run_n::<1>(row, x, out),
            2 => self.run_n::<2>(row, x, out),
            3 => self.run_n::<3>(row, x, out),
            _ => self.run_n::<4>(row, x, out),
        }
        true
    }

    /// `out[r] = row r · token 0` for the `out.len()` consecutive rows in `rows`. Returns `false` on
    /// inconsistent lengths, after checking what the unsafe kernels rely on.
    fn run_rows(self, rows: &[u8], x: Q8View<'_>, out: &mut [f32]) -> bool {
        let row_bytes = x.nb * self.format.block_bytes();
        if x.tokens < 1 || rows.len() != out.len() * row_bytes {
            return false;
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            DotIsa::Avx2 | DotIsa::AvxVnni | DotIsa::Avx512Vnni => {
                // SAFETY: a `RowDot` exists only for a supported kernel and a block format; `rows` holds
                // `out.len()` whole rows of `x.nb` blocks and `x` at least one token (checked above).
                unsafe { x86::rows_dot(self.isa, self.format, rows, x, out) }
            }
            #[cfg(target_arch = "aarch64")]
            DotIsa::Neon => {
                // SAFETY: a `RowDot` exists only for a supported kernel (NEON and dotprod) and a block format;
                // `rows` holds `out.len()` whole rows of `x.nb` blocks and `x` at least one token (checked above).
                unsafe { neon::rows_dot(self.format, rows, x, out) }
            }
            _ => {
                for (row, o) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
                    let mut v = [0f32; 1];
                    scalar::row_dot::<1>(self.format, row, x, &mut v);
                    *o = v[0];
                }
            }
        }
        true
    }

    #[inline]
    fn run_n<const NT: usize>(self, row: &[u8], x: Q8View<'_>, out: &mut [f32]) {
        let mut o = [0f32; NT];
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            DotIsa::Avx2 | DotIsa::AvxVnni | DotIsa::Avx512Vnni => {
                // SAFETY: a `RowDot` exists only for a kernel this CPU supports; `run` checked that `row` holds
                // `x.nb` whole blocks of the format and that `x` holds at least `NT` tokens of `x.nb` blocks.
                unsafe { x86::row_dot::<NT>(self.isa, self.format, row, x, &mut o) }
            }
            #[cfg(target_arch = "aarch64")]
            DotIsa::Neon => {
                // SAFETY: a `RowDot` exists only for a kernel this CPU supports (NEON and dotprod); `run`
                // checked that `row` holds `x.nb` whole blocks of the format and `x` at least `NT` tokens.
                unsafe { neon::row_dot::<NT>(self.format, row, x, &mut o) }
            }
            _ => scalar::row_dot::<NT>(self.format, row, x, &mut o),
        }
        out.copy_from_slice(&o);
    }
}

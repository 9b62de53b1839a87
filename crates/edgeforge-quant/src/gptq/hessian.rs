//! H = Σ xᵀx over calibration tokens, for one linear layer's input width.

use faer::traits::pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};

/// Tiles are about this wide: small enough that skipping the lower triangle saves ~40% of the GEMM work,
/// large enough that each tile product stays efficient.
const TILE_COLS: usize = 256;

/// Seconds the tasks of `Hessian::add_each` spent producing their inputs and multiplying them, summed
/// over tasks (so over threads: compare their ratio, not their sum, with wall time).
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkSeconds {
    pub input: f64,
    pub product: f64,
}

/// A running Hessian of a `width`-wide input.
pub struct Hessian {
    pub width: usize,
    /// Row-major `width × width`, summed in f64: activations with large outlier channels make the running
    /// totals too wide for f32. Only the tiles on or above the diagonal are summed (`tile` wide); the rest
    /// is mirrored by `matrix`.
    upper: Vec<f64>,
    tile: usize,
    pub tokens: usize,
    scratch: Vec<f32>,
}

impl Hessian {
    pub fn new(width: usize) -> Self {
        let tile = if width == 0 { 1 } else { width.div_ceil(width.div_ceil(TILE_COLS)) };
        Self { width, upper: vec![0.0; width * width], tile, tokens: 0, scratch: Vec::new() }
    }

    /// Adds xᵀx of `x` (`n × width`, row-major). H is symmetric, so only tiles on or above the diagonal are
    /// multiplied (f32 GEMMs, the bulk of GPTQ's arithmetic) and summed; `matrix` mirrors the rest.
    pub fn add(&mut self, x: &[f32]) {
        if self.width == 0 || x.is_empty() {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        self.tokens += self.product(x, &mut scratch, Threads::Pool);
        self.accumulate(std::slice::from_ref(&scratch));
        self.scratch = scratch;
    }

    /// Adds xᵀx of `input(i)` for every i in `0..count`, in order of i: exactly the sums of `add` on each in
    /// turn, but the inputs are produced and multiplied a few at a time in parallel (one per rayon thread,
    /// each on its own thread), then summed in order. Stops at the first error.
    pub fn add_each<E: Send>(&mut self, count: usize, input: impl Fn(usize) -> Result<Vec<f32>, E> + Sync) -> Result<WorkSeconds, E> {
        self.add_each_cow(count, |i| input(i).map(std::borrow::Cow::Owned))
    }

    /// `add_each` over inputs already at hand.
    pub fn add_all(&mut self, xs: &[Vec<f32>]) -> WorkSeconds {
        let r: Result<WorkSeconds, std::convert::Infallible> = self.add_each_cow(xs.len(), |i| Ok(std::borrow::Cow::Borrowed(&xs[i][..])));
        r.unwrap_or_else(|never| match never {})
    }

    fn add_each_cow<'a, E: Send>(&mut self, count: usize, input: impl Fn(usize) -> Result<std::borrow::Cow<'a, [f32]>, E> + Sync) -> Result<WorkSeconds, E> {
        if self.width == 0 {
            return Ok(WorkSeconds::default());
        }
        let lanes = rayon::current_num_threads().clamp(1, count.max(1));
        let mut scratches: Vec<Vec<f32>> = vec![Vec::new(); lanes];
        let mut seconds = WorkSeconds::default();
        for start in (0..count).step_by(lanes) {
            let batch = lanes.min(count - start);
            let this = &*self;
            let done: Vec<Result<(usize, WorkSeconds), E>> = scratches[..batch]
                .par_iter_mut()
                .enumerate()
                .map(|(k, scratch)| {
                    let t = std::time::Instant::now();
                    let x = input(start + k)?;
                    let produced = t.elapsed().as_secs_f64();
                    let n = this.product(&x, scratch, Threads::Single);
                    Ok((n, WorkSeconds { input: produced, product: t.elapsed().as_secs_f64() - produced }))
                })
                .collect();
            for r in done {
                let (n, s) = r?;
                self.tokens += n;
                seconds.input += s.input;
                seconds.product += s.product;
            }
            let t = std::time::Instant::now();
            self.accumulate(&scratches[..batch]);
            seconds.product += t.elapsed().as_secs_f64();
        }
        Ok(seconds)
    }

    /// xᵀx of `x` in f32 into `scratch` (tiles on or above the diagonal only); returns x's rows. An empty
    /// `x` gives zeros, which leave the sums as they are.
    fn product(&self, x: &[f32], scratch: &mut Vec<f32>, threads: Threads) -> usize {
        let d = self.width;
        let n = x.len() / d;
        let tile = self.tile;
        let tiles = d.div_ceil(tile);
        // Every element `accumulate` reads is written by a tile product first, so the scratch is never
        // cleared (a 9 MB memset per sequence for a 1536-wide input).
        scratch.resize(d * d, 0.0);
        for ti in 0..tiles {
            let i0 = ti * tile;
            let rows = tile.min(d - i0);
            for tj in ti..tiles {
                let j0 = tj * tile;
                let cols = tile.min(d - j0);
                let a = MatRef { data: x, offset: i0, rows, cols: n, row_stride: 1, col_stride: d };
                let b = MatRef { data: x, offset: j0, rows: n, cols, row_stride: d, col_stride: 1 };
                let ok = matmul(scratch, i0 * d + j0, d, a, b, false, threads);
                debug_assert!(ok, "tile views lie inside x and the scratch by construction");
            }
        }
        n
    }

    /// Adds each of `products` (from `product`), in order, to the f64 sums of the upper tiles.
    fn accumulate(&mut self, products: &[Vec<f32>]) {
        let (d, tile) = (self.width, self.tile);
        self.upper.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
            // Row i's tiles on or above the diagonal start at its tile's first column.
            let j0 = i / tile * tile;
            for s in products {
                add_widened(&mut row[j0..], &s[i * d + j0..(i + 1) * d]);
            }
        });
    }

    /// The whole symmetric `width × width` matrix, row-major.
    pub fn matrix(&self) -> Vec<f64> {
        let (d, tile) = (self.width, self.tile);
        let mut m = self.upper.clone();
        for i in 0..d {
            for j in 0..i / tile * tile {
                m[i * d + j] = self.upper[j * d + i];
            }
        }
        m
    }
}

/// `acc[j] += f64(x[j])`, compiled for the widest vector unit (pulp's dispatch; the build targets baseline
/// x86-64, where this would be 2-wide SSE2). A conversion and an addition per element, as in scalar code.
fn add_widened(acc: &mut [f64], x: &[f32]) {
    struct Add<'a>(&'a mut [f64], &'a [f32]);
    impl WithSimd for Add<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) {
            for (h, &v) in self.0.iter_mut().zip(self.1) {
                *h += f64::from(v);
            }
        }
    }
    Arch::new().dispatch(Add(acc, x));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_symmetric_product_equals_the_plain_sum() {
        for d in [5usize, 64, 300, 520] {
            let n = 7;
            let x: Vec<f32> = (0..n * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let mut h = Hessian::new(d);
            h.add(&x);
            h.add(&x[..d * 3]);
            let m = h.matrix();
            for i in 0..d {
                for j in 0..d {
                    let mut want = 0f64;
                    for t in 0..n {
                        want += f64::from(x[t * d + i]) * f64::from(x[t * d + j]);
                    }
                    for t in 0..3 {
                        want += f64::from(x[t * d + i]) * f64::from(x[t * d + j]);
                    }
                    let got = m[i * d + j];
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "d={d} ({i},{j}): {got} vs {want}");
                }
            }
            assert_eq!(h.tokens, n + 3);
        }
    }

    #[test]
    fn parallel_sums_in_sequence_order_equal_one_add_after_another_bit_for_bit() {
        let d = 300;
        let xs: Vec<Vec<f32>> = (0..5).map(|s| (0..(7 + s) * d).map(|i| (((i * 37 + s * 11) % 101) as f32 - 50.0) / 7.0).collect()).collect();
        let mut one_by_one = Hessian::new(d);
        xs.iter().for_each(|x| one_by_one.add(x));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let mut each = Hessian::new(d);
        pool.install(|| each.add_each(xs.len(), |i| Ok::<_, ()>(xs[i].clone()))).unwrap();
        let mut all = Hessian::new(d);
        pool.install(|| all.add_all(&xs));
        let bits = |h: &Hessian| h.matrix().iter().map(|v| v.to_bits()).collect::<Vec<u64>>();
        assert_eq!(bits(&each), bits(&one_by_one));
        assert_eq!(bits(&all), bits(&one_by_one));
        assert_eq!(each.tokens, one_by_one.tokens);
    }

    #[test]
    fn widened_sums_equal_the_scalar_loop_bit_for_bit() {
        crate::gptq::lazy::tests::assert_wide_path_runs("add_widened");
        for len in [1usize, 7, 16, 33, 1000] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.731).sin() * 1e3).collect();
            let mut fast: Vec<f64> = (0..len).map(|i| (i as f64).cos() * 1e7).collect();
            let mut slow = fast.clone();
            add_widened(&mut fast, &x);
            for (h, &v) in slow.iter_mut().zip(&x) {
                *h += f64::from(v);
            }
            assert_eq!(fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), slow.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "len {len}");
        }
    }
}

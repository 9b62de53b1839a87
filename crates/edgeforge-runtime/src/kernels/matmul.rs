//! Matrix multiply through the `gemm` crate (packed, SIMD with runtime CPU detection, rayon-parallel).
//! Matrices are strided views, so a row-major `[out, in]` weight is used transposed without a copy.
#![allow(unsafe_code)]

use gemm::Parallelism;

/// A read-only strided matrix view: element (r, c) is `data[offset + r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, offset: 0, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a dense row-major `rows × cols` matrix (so `cols × rows`).
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, offset: 0, rows: cols, cols: rows, row_stride: 1, col_stride: cols }
    }

    /// Every element this view can address lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return self.offset <= self.data.len();
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|a| (self.cols - 1).checked_mul(self.col_stride).and_then(|b| a.checked_add(b)))
            .and_then(|x| x.checked_add(self.offset));
        last.is_some_and(|l| l < self.data.len())
    }
}

/// How many threads a product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The current rayon pool.
    Pool,
    /// This thread only (the caller already parallelizes, e.g. over attention heads).
    Single,
}

/// `out[m × n] (row-major, row stride out_stride, col offset out_offset) = a[m × k] · b[k × n]`,
/// or `+=` when `accumulate`. Returns `false` (and does nothing) if any view is out of bounds or the
/// shapes disagree; callers treat that as an internal error.
#[must_use]
pub fn matmul(
    out: &mut [f32],
    out_offset: usize,
    out_stride: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    threads: Threads,
) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || !a.in_bounds() || !b.in_bounds() {
        return false;
    }
    let out_view = MatRef { data: out, offset: out_offset, rows: m, cols: n, row_stride: out_stride, col_stride: 1 };
    if !out_view.in_bounds() || (m > 1 && out_stride < n) {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                out[out_offset + r * out_stride..][..n].fill(0.0);
            }
        }
        return true;
    }
    let parallelism = match threads {
        Threads::Pool if rayon::current_num_threads() > 1 => Parallelism::Rayon(rayon::current_num_threads()),
        _ => Parallelism::None,
    };
    // SAFETY: `in_bounds` proved that every (row, col) of `a` (m × k), `b` (k × n) and the output (m × n with
    // row stride `out_stride >= n`, so rows do not overlap) maps to an index inside its slice, so gemm's
    // strided reads and writes stay inside live allocations. `out` is borrowed mutably and cannot alias
    // `a` or `b`, which are shared borrows.
    unsafe { gemm_raw(out.as_mut_ptr().add(out_offset), out_stride, a, b, accumulate, parallelism) };
    true
}

/// gemm on raw output memory: `dst[m × n] (row stride dst_stride) (+)= a · b`.
///
/// # Safety
/// `a` and `b` are in bounds with `a.cols == b.rows`, `m, n, k > 0`; every `dst + r·dst_stride + c`
/// (r < a.rows, c < b.cols) is valid for writes, not read or written by anyone else meanwhile, and
/// does not overlap `a` or `b`. Strides are converted to isize from values bounded by slice lengths,
/// which never exceed isize::MAX.
unsafe fn gemm_raw(dst: *mut f32, dst_stride: usize, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, parallelism: Parallelism) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            dst_stride as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The base pointer of an output matrix shared by tasks that write disjoint column blocks.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
impl SharedOut {
    /// (A method, so closures capture the whole `Sync` wrapper rather than its raw-pointer field.)
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the pointer is only dereferenced through `ColumnBlock`, whose writes are confined to its own
// columns; blocks of one `for_each_column_block` call are disjoint, so no element is shared.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

/// Columns `col0 .. col0 + width` of a row-major `rows × cols` output, handed to one task. It is neither
/// `Send` nor storable past the task (the lifetime ties it to the borrow of the output).
pub struct ColumnBlock<'a> {
    base: *mut f32,
    rows: usize,
    cols: usize,
    col0: usize,
    width: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

impl ColumnBlock<'_> {
    pub fn col0(&self) -> usize {
        self.col0
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Element (r, col0 + c) := v. Returns `false` (writing nothing) outside the block.
    #[must_use]
    pub fn set(&mut self, r: usize, c: usize, v: f32) -> bool {
        if r >= self.rows || c >= self.width {
            return false;
        }
        // SAFETY: r < rows and col0 + c < col0 + width <= cols, so the index is below rows·cols, the length
        // `for_each_column_block` checked; this column belongs to this block only, and the output stays
        // mutably borrowed (by that call) for as long as the block lives.
        unsafe { *self.base.add(r * self.cols + self.col0 + c) = v };
        true
    }

    /// Row `r` of the block (its `width` columns), `None` past the last row.
    pub fn row_mut(&mut self, r: usize) -> Option<&mut [f32]> {
        if r >= self.rows {
            return None;
        }
        // SAFETY: r < rows and col0 + width <= cols, so the `width` elements from r·cols + col0 lie inside the
        // output of rows·cols elements `for_each_column_block_of` checked; these columns belong to this block
        // only, and the returned borrow of `self` keeps any other access through the block out meanwhile.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.add(r * self.cols + self.col0), self.width) })
    }

    /// The block := `a[rows × k] · b[k × width]` on this thread (gemm, no nested parallelism).
    #[must_use]
    pub fn matmul(&mut self, a: MatRef<'_>, b: MatRef<'_>) -> bool {
        if a.rows != self.rows || b.cols != self.width || a.cols != b.rows || !a.in_bounds() || !b.in_bounds() {
            return false;
        }
        if a.cols == 0 {
            for r in 0..self.rows {
                for c in 0..self.width {
                    let _ = self.set(r, c, 0.0);
                }
            }
            return true;
        }
        // SAFETY: shapes and views were checked above (k > 0; rows, width > 0 by construction); the
        // written elements (r, col0 + c), r < rows, c < width, lie inside the output and in this block's
        // columns only, and `a`, `b` are shared borrows distinct from the mutably borrowed output.
        unsafe { gemm_raw(self.base.add(self.col0), self.cols, a, b, false, Parallelism::None) };
        true
    }
}

/// Split a row-major `rows × cols` output into column blocks of `width` (the last may be narrower) and
/// run `f` on each in the current rayon pool, with per-worker state from `init`. Each block's values
/// depend only on the block, never on scheduling. Returns `false` if the shape is inconsistent or any
/// call of `f` returns `false`.
#[must_use]
pub fn for_each_column_block<S>(
    out: &mut [f32],
    rows: usize,
    cols: usize,
    width: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, ColumnBlock<'_>) -> bool + Sync + Send,
) -> bool {
    for_each_column_block_of(&mut [Output { data: out, cols, width }], rows, init, |s, _, block| f(s, block))
}

/// Most outputs one `for_each_column_block_of` call takes.
pub const MAX_OUTPUTS: usize = 4;

/// One output of `for_each_column_block_of`: a row-major `rows × cols` matrix cut into blocks of `width`.
pub struct Output<'a> {
    pub data: &'a mut [f32],
    pub cols: usize,
    pub width: usize,
}

impl Default for Output<'_> {
    /// An empty output (a placeholder in fixed-size tables).
    fn default() -> Self {
        Self { data: &mut [], cols: 0, width: 1 }
    }
}

/// `for_each_column_block` over several outputs with the same number of rows (e.g. the q, k and v products
/// of one input) in one parallel loop: `f` gets the output's index and one of its blocks. One fork-join for
/// all of them instead of one each.
#[must_use]
pub fn for_each_column_block_of<S>(
    outs: &mut [Output<'_>],
    rows: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, ColumnBlock<'_>) -> bool + Sync + Send,
) -> bool {
    use rayon::prelude::*;
    if outs.len() > MAX_OUTPUTS || outs.iter().any(|o| o.width == 0 || rows.checked_mul(o.cols) != Some(o.data.len())) {
        return false;
    }
    if rows == 0 {
        return true;
    }
    // Fixed-size tables: no allocation per call (decode calls this hundreds of times per token).
    let mut bases = [(SharedOut(std::ptr::null_mut()), 0usize, 1usize); MAX_OUTPUTS];
    for (b, o) in bases.iter_mut().zip(outs.iter_mut()) {
        *b = (SharedOut(o.data.as_mut_ptr()), o.cols, o.width);
    }
    let bases = &bases[..outs.len()];
    let total: usize = bases.iter().map(|&(_, cols, width)| cols.div_ceil(width)).sum();
    // Task `t`: the output it falls in, and its first column there.
    let locate = |mut t: usize| {
        for (i, &(_, cols, width)) in bases.iter().enumerate() {
            let n = cols.div_ceil(width);
            if t < n {
                return (i, t * width);
            }
            t -= n;
        }
        (bases.len(), 0)
    };
    let run = |state: &mut S, t: usize| {
        let (i, col0) = locate(t);
        let Some(&(base, cols, width)) = bases.get(i) else { return false };
        let block = ColumnBlock { base: base.ptr(), rows, cols, col0, width: width.min(cols - col0), _out: std::marker::PhantomData };
        f(state, i, block)
    };
    if total == 1 || rayon::current_num_threads() == 1 {
        // No fork for a single task or a single thread.
        let mut state = init();
        return (0..total).all(|t| run(&mut state, t));
    }
    (0..total).into_par_iter().map_init(init, run).all(|ok| ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for r in 0..a.rows {
            for c in 0..b.cols {
                let mut s = 0f64;
                for i in 0..a.cols {
                    let x = a.data[a.offset + r * a.row_stride + i * a.col_stride];
                    let y = b.data[b.offset + i * b.row_stride + c * b.col_stride];
                    s += f64::from(x) * f64::from(y);
                }
                out[r * b.cols + c] = s as f32;
            }
        }
        out
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn matches_scalar_reference_for_dense_transposed_and_offset_views() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 64, 9), (1, 576, 192), (64, 33, 130)] {
            let a_data = data(m * k, 1);
            let w = data(n * k, 2); // a row-major [n, k] weight, used transposed
            let a = MatRef::row_major(&a_data, m, k);
            let b = MatRef::transposed(&w, n, k);
            for threads in [Threads::Pool, Threads::Single] {
                let mut out = vec![0f32; m * n];
                assert!(matmul(&mut out, 0, n, a, b, false, threads));
                close(&out, &scalar(a, b));
            }
        }
        // A column block of a wider matrix (as attention heads are), written into a column block of the output.
        let big = data(6 * 20, 3);
        let a = MatRef { data: &big, offset: 4, rows: 6, cols: 8, row_stride: 20, col_stride: 1 };
        let bd = data(8 * 5, 4);
        let b = MatRef::row_major(&bd, 8, 5);
        let mut out = vec![0f32; 6 * 12];
        assert!(matmul(&mut out, 3, 12, a, b, false, Threads::Single));
        let want = scalar(a, b);
        for r in 0..6 {
            close(&out[r * 12 + 3..r * 12 + 8], &want[r * 5..r * 5 + 5]);
            assert!(out[r * 12..r * 12 + 3].iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn accumulate_adds_to_existing_values() {
        let ad = data(4 * 3, 5);
        let bd = data(3 * 2, 6);
        let (a, b) = (MatRef::row_major(&ad, 4, 3), MatRef::row_major(&bd, 3, 2));
        let mut out = vec![1.0f32; 8];
        assert!(matmul(&mut out, 0, 2, a, b, true, Threads::Single));
        let want: Vec<f32> = scalar(a, b).iter().map(|x| x + 1.0).collect();
        close(&out, &want);
    }

    #[test]
    fn out_of_bounds_views_are_refused() {
        let ad = data(12, 1);
        let a = MatRef::row_major(&ad, 4, 4); // needs 16
        let bd = data(16, 2);
        let b = MatRef::row_major(&bd, 4, 4);
        let mut out = vec![0f32; 16];
        assert!(!matmul(&mut out, 0, 4, a, b, false, Threads::Single));
        let a = MatRef::row_major(&bd, 4, 4);
        let mut small = vec![0f32; 15];
        assert!(!matmul(&mut small, 0, 4, a, b, false, Threads::Single));
        let b3 = MatRef::row_major(&ad, 3, 4);
        assert!(!matmul(&mut out, 0, 4, a, b3, false, Threads::Single));
    }
}

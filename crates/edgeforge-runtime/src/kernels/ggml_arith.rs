//! llama.cpp's CPU arithmetic where it differs from the exact float ops, for the `llamacpp` rounding: its
//! vector `expf` (the AVX-512 build's `ggml_v_expf`: a degree-5 polynomial after a two-constant range
//! reduction, then `scalef`), the SiLU and softmax built on it, and the orders in which its SIMD code adds
//! lanes. Written in portable scalar code that gives the same bits on any CPU (every step is one IEEE
//! operation; `mul_add` is a fused multiply-add), checked against the pinned llama.cpp build's own tensors by
//! `parity.rs` (benches/llamacpp-bitexact.sh).

// The FMA builds of the kernels below (`target_feature`) are the only unsafe code here.
#![allow(unsafe_code)]

/// 1.5 · 2^23: adding and subtracting it rounds to an integer.
const ROUND: f32 = f32::from_bits(0x4b40_0000);
const LOG2_E: f32 = f32::from_bits(0x3fb8_aa3b);
/// ln 2 split in a high part (exact in a few bits) and the rest.
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
/// The polynomial's coefficients, highest degree first.
const C: [f32; 5] = [f32::from_bits(0x3c07_2010), f32::from_bits(0x3d2b_9f17), f32::from_bits(0x3e2a_af33), f32::from_bits(0x3eff_fedb), f32::from_bits(0x3f7f_fff6)];

/// `x` at f16 precision (round to nearest even, as F16C converts): llama.cpp's f16 KV cache and its one-row
/// flash-attention kernel's query and accumulator.
#[inline]
pub(crate) fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// `e^x` as llama.cpp's AVX-512 `ggml_v_expf` computes it (one lane).
#[inline(always)]
pub(crate) fn expf(x: f32) -> f32 {
    let z = x.mul_add(LOG2_E, ROUND);
    let n = z - ROUND;
    // x − n·ln2 in two fused steps.
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let u = b * b;
    let j = C[0].mul_add(b, C[1]).mul_add(u, C[2].mul_add(b, C[3])).mul_add(u, C[4].mul_add(b, 1.0));
    if n.abs() > 192.0 {
        // Past the range: 0 or infinity (and 0 for NaN, as the vector compare sends it there).
        return if n <= 0.0 { 0.0 } else if n > 0.0 { f32::INFINITY } else { 0.0 };
    }
    // scalef: j · 2^n, rounded once (the f64 product is exact; the conversion rounds, subnormals included).
    (f64::from(j) * 2f64.powi(n as i32)) as f32
}

/// `silu(gate) · up` for each element, as llama.cpp's `ggml_vec_swiglu_f32` computes it on rows of `row`
/// elements: vector lanes `x / (1 + expf(0 − x)) · g` for the first multiple of 16 of each row, libm's `expf` for
/// the rest.
pub(crate) fn swiglu_rows(gate: &mut [f32], up: &[f32], row: usize) {
    use rayon::prelude::*;
    let fma = has_fma();
    gate.par_chunks_mut(row).zip(up.par_chunks(row)).for_each(|(g, u)| {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: `has_fma` detected FMA.
            unsafe { swiglu_row_fma(g, u) };
            return;
        }
        let _ = fma;
        swiglu_row(g, u);
    });
}

/// One row of `swiglu_rows`.
#[inline(always)]
fn swiglu_row(g: &mut [f32], u: &[f32]) {
    let wide = g.len() / 16 * 16;
    for (i, (x, &y)) in g.iter_mut().zip(u).enumerate() {
        let e = if i < wide { expf(0.0 - *x) } else { (-*x).exp() };
        *x = *x / (1.0 + e) * y;
    }
}

/// `swiglu_row` compiled with FMA (each `mul_add` one instruction instead of a libm call).
///
/// # Safety
/// The CPU supports FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn swiglu_row_fma(g: &mut [f32], u: &[f32]) {
    swiglu_row(g, u);
}

/// Whether this CPU runs the FMA builds of these kernels (x86 only; elsewhere the portable code, whose
/// `mul_add` the target may or may not fuse in hardware: the bits are the same).
pub(crate) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The sum of 16 lanes as GCC's `_mm512_reduce_add_ps` adds them: halves, quarters, then pairs.
pub(crate) fn reduce16(v: &[f32; 16]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|i| v[i] + v[i + 8]);
    let q: [f32; 4] = std::array::from_fn(|i| h[i] + h[i + 4]);
    (q[0] + q[2]) + (q[1] + q[3])
}

/// The sum of 8 lanes as llama.cpp's `hsum_float_8` adds them (high half onto low, then `movehl`, `movehdup`).
pub(crate) fn hsum8(v: &[f32; 8]) -> f32 {
    let q: [f32; 4] = std::array::from_fn(|i| v[i] + v[i + 4]);
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Keys per tile of llama.cpp's tiled flash-attention kernel (`GGML_FA_TILE_KV`).
const FA_TILE_KV: usize = 64;
/// Query rows from which llama.cpp's CPU flash attention takes its tiled kernel (`GGML_FA_TILE_Q`).
const FA_TILE_Q: usize = 64;

/// One attention head as llama.cpp's CPU flash attention computes it on its f16 KV cache. Its tiled kernel
/// (`FA_TILE_Q` rows or more): per row, keys in tiles of `FA_TILE_KV` from key 0; each score a chain of fused
/// multiply-adds over the head's dimensions, times the scale (soft-capped as ggml does: `tanh(s · scale / c)
/// · c`); per tile the running maximum rescales the accumulator and the sum (libm `expf`), the tile's
/// probabilities come from `expf` above and add to the sum in f64, 16 lanes at a time; the values accumulate
/// key by key with fused multiply-adds; the row ends times 1 / sum. Its one-row kernel (fewer rows: decode
/// steps): the query rounded to f16, each score `ggml_vec_dot_f16` (`dot_f16`) times the scale, key by key
/// an online softmax on an f16 value accumulator rounded after every key (`fma(v, p, acc)`), the sum
/// `fma(sum, ms, p)`, libm `expf`; the row ends times 1 / sum. (Not reproduced: its split-KV path for one
/// query over 512 keys or more, whose partial sums depend on the thread count.)
pub(crate) struct GgmlHead<'a> {
    /// Row `r`'s query at `q[r · q_stride..][..head_dim]`.
    pub q: &'a [f32],
    pub q_stride: usize,
    /// Key (value) `j` at `k[j · kv_stride..][..head_dim]`, f16-rounded.
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub kv_stride: usize,
    pub head_dim: usize,
    /// Positions before row 0 (row `r` sees keys `..=past + r`).
    pub past: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    pub window: Option<usize>,
}

impl GgmlHead<'_> {
    /// The head's rows into `out` (`[rows, head_dim]`).
    pub(crate) fn attend(&self, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_fma() {
            // SAFETY: `has_fma` detected FMA.
            unsafe { self.attend_fma(out) };
            return;
        }
        self.attend_body(out);
    }

    /// `attend` compiled with FMA.
    ///
    /// # Safety
    /// The CPU supports FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    unsafe fn attend_fma(&self, out: &mut [f32]) {
        self.attend_body(out);
    }

    #[inline(always)]
    fn attend_body(&self, out: &mut [f32]) {
        if out.len() < FA_TILE_Q * self.head_dim {
            self.one_row_body(out);
        } else {
            self.tiled_body(out);
        }
    }

    #[inline(always)]
    fn one_row_body(&self, out: &mut [f32]) {
        let hd = self.head_dim;
        let (mut q, mut acc) = (vec![0f32; hd], vec![0f32; hd]);
        // ggml folds the soft-cap into the scale: tanh(s · scale / c) · c.
        let scale = self.softcap.map_or(self.scale, |c| self.scale / c);
        for (r, o) in out.chunks_exact_mut(hd).enumerate() {
            for (qv, &v) in q.iter_mut().zip(&self.q[r * self.q_stride..][..hd]) {
                *qv = f16_round(v);
            }
            acc.fill(0.0);
            let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
            let visible = self.past + r + 1;
            let first = self.window.map_or(0, |w| visible.saturating_sub(w));
            for key in first..visible {
                let mut s = dot_f16(&self.k[key * self.kv_stride..][..hd], &q) * scale;
                if let Some(c) = self.softcap {
                    s = c * s.tanh();
                }
                let (ms, vs) = if s > m {
                    let old = m;
                    m = s;
                    let ms = (old - m).exp();
                    acc.iter_mut().for_each(|a| *a = f16_round(*a * ms));
                    (ms, 1.0)
                } else {
                    (1.0, (s - m).exp())
                };
                for (a, &v) in acc.iter_mut().zip(&self.v[key * self.kv_stride..][..hd]) {
                    *a = f16_round(v.mul_add(vs, *a));
                }
                sum = sum.mul_add(ms, vs);
            }
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            o.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a * inv);
        }
    }

    #[inline(always)]
    fn tiled_body(&self, out: &mut [f32]) {
        let hd = self.head_dim;
        let scale = self.softcap.map_or(self.scale, |c| self.scale / c);
        let mut acc = vec![0f32; hd];
        let mut p = [0f32; FA_TILE_KV];
        for (r, o) in out.chunks_exact_mut(hd).enumerate() {
            let q = &self.q[r * self.q_stride..][..hd];
            let visible = self.past + r + 1;
            let first = self.window.map_or(0, |w| visible.saturating_sub(w));
            acc.fill(0.0);
            let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
            for t0 in (0..visible).step_by(FA_TILE_KV) {
                let keys = t0.max(first)..(t0 + FA_TILE_KV).min(visible);
                if keys.is_empty() {
                    continue;
                }
                p.fill(f32::NEG_INFINITY);
                self.scores(q, keys.clone(), &mut p[keys.start - t0..keys.end - t0]);
                for s in &mut p[keys.start - t0..keys.end - t0] {
                    *s *= scale;
                    if let Some(c) = self.softcap {
                        *s = s.tanh() * c;
                    }
                }
                let tile_max = p.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let m_new = m.max(tile_max);
                if m_new > m {
                    let ms = (m - m_new).exp();
                    acc.iter_mut().for_each(|a| *a *= ms);
                    sum *= ms;
                }
                m = m_new;
                let mut tile_sum = 0f64;
                for lanes in p.chunks_exact_mut(16) {
                    let mut l = [0f32; 16];
                    for (l, v) in l.iter_mut().zip(lanes.iter_mut()) {
                        *v = expf(*v - m_new);
                        *l = *v;
                    }
                    tile_sum += f64::from(reduce16(&l));
                }
                sum = (f64::from(sum) + tile_sum) as f32;
                // Masked keys have probability 0: skipping them adds nothing, as ggml's zero products do.
                for key in keys {
                    let (pk, v) = (p[key - t0], &self.v[key * self.kv_stride..][..hd]);
                    acc.iter_mut().zip(v).for_each(|(a, &vv)| *a = vv.mul_add(pk, *a));
                }
            }
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            o.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a * inv);
        }
    }

    /// `out[j] = Σ_d fma(k_{keys.start + j}[d], q[d], ·)` from 0, in dimension order: eight keys at a time
    /// (independent chains), the same bits as one key at a time.
    #[inline(always)]
    fn scores(&self, q: &[f32], keys: std::ops::Range<usize>, out: &mut [f32]) {
        let (hd, st) = (self.head_dim, self.kv_stride);
        let mut key = keys.start;
        let mut o = out.iter_mut();
        while key + 8 <= keys.end {
            let mut a = [0f32; 8];
            let rows: [&[f32]; 8] = std::array::from_fn(|j| &self.k[(key + j) * st..][..hd]);
            for (d, &qd) in q.iter().enumerate() {
                for j in 0..8 {
                    a[j] = rows[j][d].mul_add(qd, a[j]);
                }
            }
            for v in a {
                if let Some(o) = o.next() {
                    *o = v;
                }
            }
            key += 8;
        }
        for key in key..keys.end {
            let k = &self.k[key * st..][..hd];
            if let Some(o) = o.next() {
                *o = k.iter().zip(q).fold(0f32, |a, (&kv, &qv)| kv.mul_add(qv, a));
            }
        }
    }
}

/// `Σ x·y` of f16 values (given as f32) as llama.cpp's `ggml_vec_dot_f16` sums them on AVX-512 without
/// FP16 arithmetic: four accumulators of 16 lanes take fused products 64 elements at a time, are added
/// pairwise (0+2, 1+3, then 0+1), reduced as `_mm512_reduce_add_ps`, and the rest adds in f64.
#[inline(always)]
pub(crate) fn dot_f16(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n / 64 * 64;
    let mut sum = [[0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, s) in sum.iter_mut().enumerate() {
            for (l, s) in s.iter_mut().enumerate() {
                *s = x[i + 16 * j + l].mul_add(y[i + 16 * j + l], *s);
            }
        }
    }
    let v: [f32; 16] = std::array::from_fn(|l| (sum[0][l] + sum[2][l]) + (sum[1][l] + sum[3][l]));
    let mut total = f64::from(reduce16(&v));
    for i in np..n {
        total += f64::from(x[i] * y[i]);
    }
    total as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_close_to_libm_and_saturates_like_ggml() {
        for i in -2000..2000 {
            let x = i as f32 * 0.05;
            let (a, b) = (expf(x), x.exp());
            assert!(a == b || (a - b).abs() <= b * 4e-7 + f32::MIN_POSITIVE, "{x}: {a} vs {b}");
        }
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(-200.0), 0.0);
        assert_eq!(expf(200.0), f32::INFINITY);
        assert_eq!(expf(0.0), 1.0);
    }

    #[test]
    fn reductions_follow_the_simd_order() {
        // Values where the order shows: 1 + 2^-24 rounds away, 2^-24 + 2^-24 does not.
        let e = f32::EPSILON / 2.0;
        let mut v = [0f32; 16];
        v[0] = 1.0;
        v[8] = e;
        v[4] = e;
        // halves: v0 + v8 = 1 (e lost); v4 + v12 = e; quarters: (1) + (e) = 1 → 1.
        assert_eq!(reduce16(&v), 1.0);
        let w = [1.0, 0.0, 0.0, 0.0, e, 0.0, 0.0, 0.0];
        assert_eq!(hsum8(&w), 1.0);
    }
}

#[cfg(test)]
mod wide_tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                half::f16::from_f32((s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0).to_f32()
            })
            .collect()
    }

    #[test]
    fn the_fma_builds_give_the_portable_bits() {
        if !has_fma() {
            eprintln!("SKIPPED ggml_arith FMA builds: no FMA on this CPU");
            return;
        }
        let (hd, n, past) = (64, 70, 90);
        let (q, k, v) = (values(n * hd, 1), values((past + n) * hd, 2), values((past + n) * hd, 3));
        for window in [None, Some(50)] {
            let head = GgmlHead { q: &q, q_stride: hd, k: &k, v: &v, kv_stride: hd, head_dim: hd, past, scale: 0.125, softcap: None, window };
            let (mut a, mut b) = (vec![0f32; n * hd], vec![0f32; n * hd]);
            head.attend(&mut a);
            head.attend_body(&mut b);
            assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            // The one-row kernel (decode steps): 3 rows.
            let (mut a, mut b) = (vec![0f32; 3 * hd], vec![0f32; 3 * hd]);
            head.attend(&mut a);
            head.attend_body(&mut b);
            assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
        let (mut g, u) = (values(3 * 1544, 4), values(3 * 1544, 5));
        let mut h = g.clone();
        swiglu_rows(&mut g, &u, 1544);
        for (hr, ur) in h.chunks_exact_mut(1544).zip(u.chunks_exact(1544)) {
            swiglu_row(hr, ur);
        }
        assert_eq!(g.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), h.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }
}

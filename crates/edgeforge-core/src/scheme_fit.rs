//! Fitting and packing for [`Scheme`](crate::scheme::Scheme): the stored fields of one block chosen to
//! minimise the importance-weighted squared error, and the block's bytes in ggml's layout.
//!
//! Each fit tries a small set of candidate grids (the block's range stretched or shrunk a little), rounds
//! the block on each, refits the scale (and min) by weighted least squares given those codes, rounds the
//! fields to what the format stores (f16, 6-bit or 8-bit sub-scales), and keeps the candidate with the
//! least error as measured with the stored fields. The plain min/max grid is always among the candidates,
//! so values that already sit on a grid (a dequantized Q4_1 block) are refitted exactly.

use half::f16;

use crate::scheme::{BlockFit, Scheme, MAX_SUBS};

fn empty_fit() -> BlockFit {
    BlockFit { d: f16::ZERO, m: f16::ZERO, sc: [0; MAX_SUBS], mins: [0; MAX_SUBS], scale: [0.0; MAX_SUBS], offset: [0.0; MAX_SUBS] }
}

/// Weighted squared error of the elements of sub-block `j` (`x`, `w` are that sub-block's slices).
fn sub_error(s: Scheme, fit: &BlockFit, j: usize, x: &[f32], w: &[f32]) -> f32 {
    let sub = s.info().sub;
    x.iter().zip(w).enumerate().map(|(i, (&v, &wi))| {
        let (_, q) = s.round(fit, j * sub + i, v);
        wi * (q - v) * (q - v)
    }).sum()
}

/// A one-sub-block fit with scale `d` (stored as f16) and min `m` (f16) for the 32-element formats.
fn plain(d: f32, m: f32) -> BlockFit {
    plain_f16(f16::from_f32(d), f16::from_f32(m))
}

/// The fit of a 32-element block whose stored fields are exactly `d` and `m`.
pub(crate) fn plain_f16(d: f16, m: f16) -> BlockFit {
    let mut f = empty_fit();
    f.d = d;
    f.m = m;
    f.scale[0] = f.d.to_f32();
    f.offset[0] = f.m.to_f32();
    f
}

/// Value of largest magnitude (keeping its sign).
fn extreme(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

/// Scale candidates for a grid without offset: the extreme value mapped to each of `anchors` (grid
/// levels), stretched by 1.25% steps; each candidate's codes also give a weighted least-squares scale.
/// Every candidate is scored with its scale rounded to f16, as stored. Returns the best f16 scale.
fn fit_scale_only(s: Scheme, x: &[f32], w: &[f32], anchors: &[f32], steps: std::ops::RangeInclusive<i32>) -> f32 {
    let e = extreme(x);
    if e == 0.0 {
        return 0.0;
    }
    let info = s.info();
    let (lo, hi) = (info.first as f32, (info.first + info.n_levels as i32 - 1) as f32);
    // Codes as grid levels for scale d, with the weighted error and the least-squares sums.
    let score = |d: f32| -> (f32, f32, f32) {
        let (mut err, mut num, mut den) = (0f32, 0f32, 0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let l = if s == Scheme::IQ4_NL { s.level(nearest_level(v / d)) } else { (v / d).round().clamp(lo, hi) };
            let r = d * l - v;
            err += wi * r * r;
            num += wi * v * l;
            den += wi * l * l;
        }
        (err, num, den)
    };
    let mut best = (0f32, f32::INFINITY);
    for &anchor in anchors {
        for k in steps.clone() {
            let d0 = f16_round(e / (anchor * (1.0 + 0.0125 * k as f32)));
            if d0 == 0.0 {
                continue;
            }
            let (err, num, den) = score(d0);
            if err < best.1 {
                best = (d0, err);
            }
            if den > 0.0 {
                let d1 = f16_round(num / den);
                if d1 != 0.0 && d1 != d0 {
                    let (err, _, _) = score(d1);
                    if err < best.1 {
                        best = (d1, err);
                    }
                }
            }
        }
    }
    best.0
}

fn nearest_level(t: f32) -> u8 {
    crate::scheme::nearest_grid(t)
}

/// Scale and min for a grid `d·q + m` (q in 0..n): candidate ranges are the block's [min, max] shrunk
/// from either side, each followed by the weighted least-squares (d, m) for the codes it gives.
/// `round_field` is how the format stores a field (f16, or exact for a K-quant's first stage);
/// `max_min` caps m (K-quants store −m ≥ 0, so m ≤ 0).
fn fit_scale_min(x: &[f32], w: &[f32], n: u32, round_field: impl Fn(f32) -> f32, max_min: f32, search: bool) -> (f32, f32, f32) {
    let top = (n - 1) as f32;
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min).min(max_min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let range = hi - lo;
    if !(range > 0.0) {
        let m = round_field(lo.min(max_min));
        return (0.0, m, x.iter().zip(w).map(|(&v, &wi)| wi * (v - m) * (v - m)).sum());
    }
    let eval = |d: f32, m: f32| -> (f32, f32, f32) {
        let (d, m) = (round_field(d), round_field(m.min(max_min)));
        let err = x.iter().zip(w).map(|(&v, &wi)| {
            let q = if d > 0.0 { ((v - m) / d).round().clamp(0.0, top) } else { 0.0 };
            let e = d * q + m - v;
            wi * e * e
        }).sum();
        (d, m, err)
    };
    let mut best = eval(range / top, lo);
    if !search {
        return best;
    }
    const SHRINK: [f32; 3] = [0.0, 0.05, 0.1];
    for a in SHRINK {
        for b in SHRINK {
            let (l, h) = (lo + a * range, hi - b * range);
            let (d, m) = ((h - l) / top, l);
            let cand = eval(d, m);
            if cand.2 < best.2 {
                best = cand;
            }
            // Weighted least squares for (d, m) with the codes this grid gives.
            let (mut sqq, mut sq, mut sw, mut sqx, mut sx) = (0f64, 0f64, 0f64, 0f64, 0f64);
            for (&v, &wi) in x.iter().zip(w) {
                let q = f64::from(((v - m) / d).round().clamp(0.0, top));
                let (wi, v) = (f64::from(wi), f64::from(v));
                sqq += wi * q * q;
                sq += wi * q;
                sw += wi;
                sqx += wi * q * v;
                sx += wi * v;
            }
            let det = sqq * sw - sq * sq;
            if det.abs() > 1e-30 {
                let d2 = (sqx * sw - sq * sx) / det;
                let m2 = (sqq * sx - sq * sqx) / det;
                if d2 > 0.0 {
                    let cand = eval(d2 as f32, m2 as f32);
                    if cand.2 < best.2 {
                        best = cand;
                    }
                }
            }
        }
    }
    best
}

fn f16_round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

pub(crate) fn fit_block(s: Scheme, x: &[f32], w: &[f32], search: bool) -> BlockFit {
    let info = s.info();
    match s {
        Scheme::Q4_0 | Scheme::Q5_0 | Scheme::Q8_0 => {
            // Extreme on the side with the extra code (−n/2), or on the short side (n/2 − 1).
            let half = -info.first as f32;
            // Q8_0's 256 levels leave little to search.
            let steps = if s == Scheme::Q8_0 { -2..=1 } else { -8..=4 };
            if !search {
                return plain(extreme(x) / -half, 0.0);
            }
            plain(fit_scale_only(s, x, w, &[-half, half - 1.0], steps), 0.0)
        }
        Scheme::IQ4_NL => {
            let (lo, hi) = (f32::from(crate::blocks::IQ4_NL_GRID[0]), f32::from(crate::blocks::IQ4_NL_GRID[15]));
            if !search {
                return plain(extreme(x) / lo, 0.0);
            }
            plain(fit_scale_only(s, x, w, &[lo, hi], -8..=4), 0.0)
        }
        Scheme::Q4_1 | Scheme::Q5_1 => {
            let (d, m, _) = fit_scale_min(x, w, info.n_levels, f16_round, f32::INFINITY, search);
            plain(d, m)
        }
        Scheme::Q4_K | Scheme::Q5_K => fit_k_scale_min(s, x, w, search),
        Scheme::Q6_K => fit_q6_k(x, w),
    }
}

/// Q4_K/Q5_K: each 32-element sub-block fitted as `d_j·q − m_j` (m_j ≥ 0), then the super-block's f16
/// `d`/`dmin` and 6-bit multipliers chosen so d·sc_j and dmin·mn_j approximate them; each sub-block then
/// tries its neighbouring multipliers with the stored fields.
fn fit_k_scale_min(s: Scheme, x: &[f32], w: &[f32], search: bool) -> BlockFit {
    let sub = s.info().sub;
    let n_subs = x.len() / sub;
    let mut ds = [0f32; MAX_SUBS];
    let mut ms = [0f32; MAX_SUBS];
    for j in 0..n_subs {
        let r = j * sub..(j + 1) * sub;
        let (d, m, _) = fit_scale_min(&x[r.clone()], &w[r], s.info().n_levels, |v| v, 0.0, search);
        ds[j] = d;
        ms[j] = -m;
    }
    let mut fit = empty_fit();
    fit.d = f16::from_f32(ds.iter().copied().fold(0.0, f32::max) / 63.0);
    fit.m = f16::from_f32(ms.iter().copied().fold(0.0, f32::max) / 63.0);
    let (d, dmin) = (fit.d.to_f32(), fit.m.to_f32());
    for j in 0..n_subs {
        let r = j * sub..(j + 1) * sub;
        let sc0 = if d > 0.0 { (ds[j] / d).round().clamp(0.0, 63.0) as i32 } else { 0 };
        let m0 = if dmin > 0.0 { (ms[j] / dmin).round().clamp(0.0, 63.0) as i32 } else { 0 };
        let mut best = (f32::INFINITY, 0u8, 0u8);
        for sc in (sc0 - 1).max(0)..=(sc0 + 1).min(63) {
            for mn in (m0 - 1).max(0)..=(m0 + 1).min(63) {
                fit.scale[j] = d * sc as f32;
                fit.offset[j] = -(dmin * mn as f32);
                let err = sub_error(s, &fit, j, &x[r.clone()], &w[r.clone()]);
                if err < best.0 {
                    best = (err, sc as u8, mn as u8);
                }
            }
        }
        fit.sc[j] = best.1;
        fit.mins[j] = best.2;
        fit.scale[j] = d * f32::from(best.1);
        fit.offset[j] = -(dmin * f32::from(best.2));
    }
    fit
}

/// Q6_K: each 16-element sub-block fitted symmetrically (levels −32..31), then one f16 `d` with signed
/// 8-bit multipliers; neighbours of each multiplier are tried with the stored fields.
fn fit_q6_k(x: &[f32], w: &[f32]) -> BlockFit {
    let s = Scheme::Q6_K;
    let mut ds = [0f32; MAX_SUBS];
    for (j, dj) in ds.iter_mut().enumerate() {
        let r = j * 16..(j + 1) * 16;
        // A 16-element symmetric fit on a one-sub-block view: reuse the 32-block search with scale only.
        *dj = fit_sub_symmetric(&x[r.clone()], &w[r]);
    }
    let mut fit = empty_fit();
    fit.d = f16::from_f32(ds.iter().map(|v| v.abs()).fold(0.0, f32::max) / 127.0);
    let d = fit.d.to_f32();
    for j in 0..16 {
        let r = j * 16..(j + 1) * 16;
        let sc0 = if d > 0.0 { (ds[j] / d).round().clamp(-128.0, 127.0) as i32 } else { 0 };
        let mut best = (f32::INFINITY, 0i32);
        for sc in (sc0 - 1).max(-128)..=(sc0 + 1).min(127) {
            fit.scale[j] = d * sc as f32;
            let err = sub_error(s, &fit, j, &x[r.clone()], &w[r.clone()]);
            if err < best.0 {
                best = (err, sc);
            }
        }
        fit.sc[j] = best.1 as i8 as u8;
        fit.scale[j] = d * best.1 as f32;
    }
    fit
}

/// Best unrounded scale for 16 values on levels −32..31 (weighted), by the same candidate search.
fn fit_sub_symmetric(x: &[f32], w: &[f32]) -> f32 {
    let e = extreme(x);
    if e == 0.0 {
        return 0.0;
    }
    let err_of = |d: f32| -> f32 {
        x.iter().zip(w).map(|(&v, &wi)| {
            let q = (v / d).round().clamp(-32.0, 31.0);
            wi * (d * q - v).powi(2)
        }).sum()
    };
    let mut best = (e / -32.0, err_of(e / -32.0));
    for anchor in [-32.0f32, 31.0] {
        for k in -12..=6 {
            let d = e / (anchor * (1.0 + 0.0125 * k as f32));
            let (mut num, mut den) = (0f32, 0f32);
            for (&v, &wi) in x.iter().zip(w) {
                let q = (v / d).round().clamp(-32.0, 31.0);
                num += wi * v * q;
                den += wi * q * q;
            }
            for cand in [d, if den > 0.0 { num / den } else { d }] {
                let err = err_of(cand);
                if err < best.1 {
                    best = (cand, err);
                }
            }
        }
    }
    best.0
}

/// Low nibbles of codes `j` and high nibbles of codes `j + 16`, as Q4_0/Q4_1/Q5_x/IQ4_NL store them.
fn nibbles32(codes: &[u8], out: &mut Vec<u8>) {
    out.extend((0..16).map(|j| (codes[j] & 15) | ((codes[j + 16] & 15) << 4)));
}

fn fifth_bits(codes: &[u8]) -> [u8; 4] {
    let qh = codes.iter().enumerate().fold(0u32, |acc, (j, &c)| acc | (u32::from(c >> 4 & 1) << j));
    qh.to_le_bytes()
}

/// The 12 bytes holding eight 6-bit scales and mins (the inverse of llama.cpp's `get_scale_min_k4`).
fn pack_scale_min_k4(sc: &[u8], mins: &[u8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = (mins[j] & 63) | ((mins[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 15) | ((mins[j + 4] & 15) << 4);
    }
    s
}

pub(crate) fn encode(s: Scheme, fit: &BlockFit, codes: &[u8], out: &mut Vec<u8>) {
    match s {
        Scheme::Q4_0 | Scheme::IQ4_NL => {
            out.extend_from_slice(&fit.d.to_le_bytes());
            nibbles32(codes, out);
        }
        Scheme::Q4_1 => {
            out.extend_from_slice(&fit.d.to_le_bytes());
            out.extend_from_slice(&fit.m.to_le_bytes());
            nibbles32(codes, out);
        }
        Scheme::Q5_0 => {
            out.extend_from_slice(&fit.d.to_le_bytes());
            out.extend_from_slice(&fifth_bits(codes));
            nibbles32(codes, out);
        }
        Scheme::Q5_1 => {
            out.extend_from_slice(&fit.d.to_le_bytes());
            out.extend_from_slice(&fit.m.to_le_bytes());
            out.extend_from_slice(&fifth_bits(codes));
            nibbles32(codes, out);
        }
        Scheme::Q8_0 => {
            out.extend_from_slice(&fit.d.to_le_bytes());
            out.extend(codes.iter().map(|&c| c.wrapping_sub(128)));
        }
        Scheme::Q4_K | Scheme::Q5_K => {
            out.extend_from_slice(&fit.d.to_le_bytes());
            out.extend_from_slice(&fit.m.to_le_bytes());
            out.extend_from_slice(&pack_scale_min_k4(&fit.sc[..8], &fit.mins[..8]));
            if s == Scheme::Q5_K {
                out.extend((0..32).map(|l| (0..4).fold(0u8, |acc, c| {
                    acc | ((codes[64 * c + l] >> 4 & 1) << (2 * c)) | ((codes[64 * c + 32 + l] >> 4 & 1) << (2 * c + 1))
                })));
            }
            for c in 0..4 {
                out.extend((0..32).map(|l| (codes[64 * c + l] & 15) | ((codes[64 * c + 32 + l] & 15) << 4)));
            }
        }
        Scheme::Q6_K => {
            let mut ql = [0u8; 128];
            let mut qh = [0u8; 64];
            for n in 0..2 {
                let c = &codes[128 * n..128 * (n + 1)];
                for l in 0..32 {
                    let (q1, q2, q3, q4) = (c[l], c[l + 32], c[l + 64], c[l + 96]);
                    ql[64 * n + l] = (q1 & 15) | ((q3 & 15) << 4);
                    ql[64 * n + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
                    qh[32 * n + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
                }
            }
            out.extend_from_slice(&ql);
            out.extend_from_slice(&qh);
            out.extend_from_slice(&fit.sc);
            out.extend_from_slice(&fit.d.to_le_bytes());
        }
    }
}

/// The inverse of [`encode`] for the 32-element formats (one f16 `d`, Q4_1/Q5_1 also an f16 `m`): the
/// block's fit and its 32 codes. `None` for the K-quants (their sub-scales are not plain f16 fields) or
/// when `bytes` is not one block.
pub(crate) fn decode(s: Scheme, bytes: &[u8]) -> Option<(BlockFit, Vec<u8>)> {
    if bytes.len() != s.ggml().block_bytes() || s.block() != 32 {
        return None;
    }
    let f16_at = |at: usize| f16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let nibbles = |qs: &[u8]| -> Vec<u8> { (0..32).map(|j| if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 }).collect() };
    let fifth = |qh: &[u8], low: Vec<u8>| -> Vec<u8> {
        let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        low.into_iter().enumerate().map(|(j, c)| c | (((bits >> j) & 1) as u8) << 4).collect()
    };
    match s {
        Scheme::Q4_0 | Scheme::IQ4_NL => Some((plain_f16(f16_at(0), f16::ZERO), nibbles(&bytes[2..18]))),
        Scheme::Q4_1 => Some((plain_f16(f16_at(0), f16_at(2)), nibbles(&bytes[4..20]))),
        Scheme::Q5_0 => Some((plain_f16(f16_at(0), f16::ZERO), fifth(&bytes[2..6], nibbles(&bytes[6..22])))),
        Scheme::Q5_1 => Some((plain_f16(f16_at(0), f16_at(2)), fifth(&bytes[4..8], nibbles(&bytes[8..24])))),
        Scheme::Q8_0 => Some((plain_f16(f16_at(0), f16::ZERO), bytes[2..34].iter().map(|&b| b.wrapping_add(128)).collect())),
        Scheme::Q4_K | Scheme::Q5_K | Scheme::Q6_K => None,
    }
}

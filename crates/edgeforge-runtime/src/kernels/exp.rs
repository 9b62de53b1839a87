//! `exp` of many f32 at once, bit for bit what `f32::exp` returns on this machine.
//!
//! Our own kernel because the forward pass calls `exp` once per softmax score and once per SwiGLU unit
//! (7.5 billion calls for GPTQ's 128 × 512 calibration tokens on SmolLM2-135M), one libm call at a time, and
//! a faster approximation would change every result downstream. On x86-64 glibc (2.27 on), `expf` with AVX2
//! and FMA is `__expf_fma`: x·32/ln 2 split into k + r with a shift, 2^(k/32) from a 32-entry table, a cubic
//! in r, all in f64, rounded once to f32. The AVX-512 path below performs exactly those operations (the
//! same fused multiply-adds, read from the disassembly of glibc 2.36's libm, constants and table as libm
//! holds them) on 8 lanes at once; lanes outside its range (|x| >= 88, infinities, NaN) call `f32::exp`.
//! Because another libm (musl, a newer glibc with a different algorithm) would round differently, the wide
//! path is only used after it reproduced `f32::exp` bit for bit on a few thousand probes at first use;
//! otherwise every value goes through `f32::exp`.
#![allow(unsafe_code)]

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// glibc `__exp2f_data`: N/ln 2 with N = 32, the rounding shift, the cubic's coefficients (scaled by N),
/// and 2^(i/32) as bits minus i << 47.
const INV_LN2_N: u64 = 0x40471547652b82fe;
const SHIFT: u64 = 0x4338000000000000;
const C0: u64 = 0x3ebc6af84b912394;
const C1: u64 = 0x3f2ebfce50fac4f3;
const C2: u64 = 0x3f962e42ff0c52d6;
const TABLE: [u64; 32] = [
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b, 0x3fef54873168b9aa,
    0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74,
    0x3feea11473eb0187, 0x3feea589994cce13, 0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
];
/// Top 12 bits (sign cleared) of 88.0f: from here on glibc takes its overflow / underflow branches.
const SPECIAL_TOP12: u32 = 0x42b;

/// `x[i] = x[i].exp()` for every element, bit for bit.
pub fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide_path() {
        // SAFETY: `wide_path` is true only where avx512f, avx2 and fma were detected at run time.
        unsafe { exp_avx512(x) };
        return;
    }
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// Whether `exp_in_place` uses the AVX-512 kernel here: the CPU has it and it reproduced `f32::exp` on
/// every probe.
pub fn wide_path() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if wide_supported() {
            let probes = probes();
            let mut fast = probes.clone();
            // SAFETY: the features were just detected.
            unsafe { exp_avx512(&mut fast) };
            return fast.iter().zip(&probes).all(|(f, p)| f.to_bits() == p.exp().to_bits());
        }
        false
    })
}

/// The CPU features the wide kernel needs (glibc picks `__expf_fma` on AVX2 + FMA).
pub fn wide_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Values across the whole range the forward pass feeds `exp` (softmax arguments are <= 0, SiLU's any
/// sign), the special branches included.
fn probes() -> Vec<f32> {
    let mut v: Vec<f32> = (0..4000).map(|i| -110.0 + i as f32 * 0.05).collect();
    let mut s = 0x9e3779b9u32;
    for _ in 0..4000 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        v.push(f32::from_bits(s));
    }
    v.extend([0.0, -0.0, 1e-30, -1e-30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 88.0, 88.7, 89.0, -87.9, -103.5, -104.0]);
    v
}

/// # Safety
/// avx512f, avx2 and fma available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_avx512(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` is 8 f32 long, read and written unaligned; the features are this function's contract.
        unsafe {
            let v = _mm256_loadu_ps(c.as_ptr());
            let special = special_lanes(v);
            _mm256_storeu_ps(c.as_mut_ptr(), exp8(v));
            if special != 0 {
                for (lane, out) in c.iter_mut().enumerate() {
                    if special & (1 << lane) != 0 {
                        *out = f32::from_bits(_mm256_extract_lane(v, lane)).exp();
                    }
                }
            }
        }
    }
    chunks.into_remainder().iter_mut().for_each(|v| *v = v.exp());
}

/// Bits of lane `lane` of `v` (spilled through memory: only on the rare special lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn _mm256_extract_lane(v: __m256, lane: usize) -> u32 {
    let mut out = [0f32; 8];
    // SAFETY: `out` holds 8 f32; an unaligned store.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out[lane].to_bits()
}

/// Mask of the lanes glibc sends to its special branches (top 12 bits of |x| >= those of 88.0f).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn special_lanes(v: __m256) -> u32 {
    let top = _mm256_and_si256(_mm256_srli_epi32::<20>(_mm256_castps_si256(v)), _mm256_set1_epi32(0x7ff));
    let big = _mm256_cmpgt_epi32(top, _mm256_set1_epi32(SPECIAL_TOP12 as i32 - 1));
    _mm256_movemask_ps(_mm256_castsi256_ps(big)) as u32
}

/// glibc `__expf_fma`'s main path on 8 lanes, operation for operation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn exp8(v: __m256) -> __m256 {
    let c = |bits: u64| _mm512_set1_pd(f64::from_bits(bits));
    let xd = _mm512_cvtps_pd(v);
    let shifted = _mm512_fmadd_pd(c(INV_LN2_N), xd, c(SHIFT));
    let ki = _mm512_castpd_si512(shifted);
    let kd = _mm512_sub_pd(shifted, c(SHIFT));
    let r = _mm512_fmsub_pd(c(INV_LN2_N), xd, kd);
    let idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
    // SAFETY: every index is below 32 (masked), so the gather reads inside TABLE.
    let tab = unsafe { _mm512_i64gather_epi64::<8>(idx, TABLE.as_ptr().cast()) };
    let s = _mm512_castsi512_pd(_mm512_add_epi64(tab, _mm512_slli_epi64::<47>(ki)));
    let z = _mm512_fmadd_pd(r, c(C0), c(C1));
    let r2 = _mm512_mul_pd(r, r);
    let y = _mm512_fmadd_pd(r, c(C2), _mm512_set1_pd(1.0));
    let y = _mm512_fmadd_pd(z, r2, y);
    _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_exp_equals_libm_bit_for_bit() {
        if !wide_supported() {
            eprintln!("exp: this CPU lacks AVX-512F/AVX2/FMA; only the scalar path (f32::exp itself) is tested");
        } else {
            assert!(wide_path(), "the AVX-512 exp disagreed with this libm's expf on a probe, so it is not used");
        }
        // Dense sweeps of the ranges softmax and SiLU use, every exponent's edges, and the probes.
        let mut x: Vec<f32> = (0..400_000).map(|i| -105.0 + i as f32 * 0.000_5).collect();
        x.extend((0..100_000).map(|i| f32::from_bits(0x3000_0000 + i * 9973)));
        x.extend((0..100_000).map(|i| -f32::from_bits(0x3000_0000 + i * 9973)));
        x.extend(probes());
        let mut got = x.clone();
        exp_in_place(&mut got);
        for (g, v) in got.iter().zip(&x) {
            assert_eq!(g.to_bits(), v.exp().to_bits(), "exp({v:e}) = {g:e}, libm says {:e}", v.exp());
        }
    }
}

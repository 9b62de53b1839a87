//! The runtime against a slow, obviously correct reference written here in plain loops with f64
//! accumulation and RoPE from its formula, on tiny random models built by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_core::Activation;
use edgeforge_core::quantized::{QuantFormat, QuantTensor};
use edgeforge_runtime::{LayerWeights, Linear, LlamaRuntime, LlamaWeights, PackedLinear, RuntimeError};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
    fn norm(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| 1.0 + 0.2 * self.next()).collect()
    }
}

const E: usize = 64;
const HD: usize = 16;
const VOCAB: usize = 50;

/// Layer shapes (n_heads, n_kv_heads, n_ff): the second layer is narrower, as after pruning.
fn model(tied: bool, seed: u64) -> LlamaWeights {
    let mut r = Rng(seed);
    let shapes = [(4, 2, 96), (2, 1, 64), (4, 4, 96)];
    let layers = shapes
        .iter()
        .map(|&(h, kvh, ff)| LayerWeights {
            n_heads: h,
            n_kv_heads: kvh,
            n_ff: ff,
            attn_norm: r.norm(E),
            wq: r.vec(h * HD * E, 0.25).into(),
            wk: r.vec(kvh * HD * E, 0.25).into(),
            wv: r.vec(kvh * HD * E, 0.25).into(),
            wo: r.vec(E * h * HD, 0.25).into(),
            ffn_norm: r.norm(E),
            w_gate: r.vec(ff * E, 0.25).into(),
            w_up: r.vec(ff * E, 0.25).into(),
            w_down: r.vec(E * ff, 0.25).into(),
            activation: Activation::Silu,
            features: Default::default(),
        })
        .collect();
    LlamaWeights {
        vocab_size: VOCAB,
        n_embd: E,
        head_dim: HD,
        rope_base: 10_000.0,
        rms_eps: 1e-5,
        token_embd: r.vec(VOCAB * E, 1.0).into(),
        layers,
        output_norm: r.norm(E),
        head: Default::default(),
        output: if tied { None } else { Some(r.vec(VOCAB * E, 0.5).into()) },
    }
}

/// The float values of a weight the reference can read (tests build float models, or dequantize).
fn dense(w: &Linear) -> &[f32] {
    match w {
        Linear::F32(v) => v,
        Linear::Packed(_) | Linear::Blocks(_) => panic!("the reference reads float weights"),
    }
}

fn matvec(w: &[f32], x: &[f64], out_dim: usize) -> Vec<f64> {
    let in_dim = x.len();
    (0..out_dim).map(|o| (0..in_dim).map(|i| f64::from(w[o * in_dim + i]) * x[i]).sum()).collect()
}

fn rms(x: &[f64], w: &[f32], eps: f32) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + f64::from(eps)).sqrt();
    x.iter().zip(w).map(|(v, &g)| v * s * f64::from(g)).collect()
}

/// Rotate pairs (2i, 2i+1) of each head by pos · base^(−2i/hd).
fn rope(x: &mut [f64], pos: usize, base: f32) {
    for head in x.chunks_mut(HD) {
        for i in 0..HD / 2 {
            let theta = pos as f64 * f64::from(base).powf(-2.0 * i as f64 / HD as f64);
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * theta.cos() - b * theta.sin();
            head[2 * i + 1] = a * theta.sin() + b * theta.cos();
        }
    }
}

/// Logits of every position, computed one token at a time over the full history.
fn reference(w: &LlamaWeights, tokens: &[u32]) -> Vec<Vec<f64>> {
    let n = tokens.len();
    let mut xs: Vec<Vec<f64>> =
        tokens.iter().map(|&t| dense(&w.token_embd)[t as usize * E..(t as usize + 1) * E].iter().map(|&v| f64::from(v)).collect()).collect();
    for l in &w.layers {
        let (qd, kvd) = (l.n_heads * HD, l.n_kv_heads * HD);
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let xn = rms(x, &l.attn_norm, w.rms_eps);
            let mut q = matvec(dense(&l.wq), &xn, qd);
            let mut k = matvec(dense(&l.wk), &xn, kvd);
            rope(&mut q, p, w.rope_base);
            rope(&mut k, p, w.rope_base);
            qs.push(q);
            ks.push(k);
            vs.push(matvec(dense(&l.wv), &xn, kvd));
        }
        for p in 0..n {
            let mut att = vec![0f64; qd];
            for h in 0..l.n_heads {
                let kvh = h / (l.n_heads / l.n_kv_heads);
                let scores: Vec<f64> = (0..=p)
                    .map(|j| (0..HD).map(|d| qs[p][h * HD + d] * ks[j][kvh * HD + d]).sum::<f64>() / (HD as f64).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (j, s) in scores.iter().enumerate() {
                    let pj = (s - max).exp() / z;
                    for d in 0..HD {
                        att[h * HD + d] += pj * vs[j][kvh * HD + d];
                    }
                }
            }
            let o = matvec(dense(&l.wo), &att, E);
            for (x, o) in xs[p].iter_mut().zip(o) {
                *x += o;
            }
            let hn = rms(&xs[p], &l.ffn_norm, w.rms_eps);
            let g = matvec(dense(&l.w_gate), &hn, l.n_ff);
            let u = matvec(dense(&l.w_up), &hn, l.n_ff);
            let a: Vec<f64> = match l.activation {
                Activation::Silu => g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect(),
                Activation::Relu => g.iter().zip(&u).map(|(g, u)| g.max(0.0) * u).collect(),
                Activation::GeluTanh => g.iter().zip(&u).map(|(g, u)| 0.5 * g * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g)).tanh()) * u).collect(),
            };
            let d = matvec(dense(&l.w_down), &a, E);
            for (x, d) in xs[p].iter_mut().zip(d) {
                *x += d;
            }
        }
    }
    let head = dense(w.output.as_ref().unwrap_or(&w.token_embd));
    xs.iter().map(|x| matvec(head, &rms(x, &w.output_norm, w.rms_eps), VOCAB)).collect()
}

fn assert_close(got: &[f32], want: &[Vec<f64>], what: &str) {
    let want: Vec<f64> = want.iter().flatten().copied().collect();
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((f64::from(*g) - w).abs() <= 1e-4 * scale, "{what}[{i}]: {g} vs {w} (scale {scale})");
    }
}

const TOKENS: [u32; 11] = [3, 17, 42, 0, 49, 8, 8, 23, 5, 31, 12];

#[test]
fn prefill_matches_reference_tied_and_untied() {
    for tied in [true, false] {
        let w = model(tied, 99 + tied as u64);
        let want = reference(&w, &TOKENS);
        let rt = LlamaRuntime::new(w).unwrap();
        let mut cache = rt.new_cache(16);
        let got = rt.forward(&mut cache, &TOKENS, 0).unwrap();
        assert_close(&got, &want, if tied { "tied" } else { "untied" });
        assert_eq!(cache.len(), TOKENS.len());
    }
}

#[test]
fn relu_gate_matches_reference_and_differs_from_silu() {
    let mut w = model(false, 41);
    let silu_logits = {
        let rt = LlamaRuntime::new(model(false, 41)).unwrap();
        let mut cache = rt.new_cache(16);
        rt.forward(&mut cache, &TOKENS, 0).unwrap()
    };
    for l in &mut w.layers {
        l.activation = Activation::Relu;
    }
    let want = reference(&w, &TOKENS);
    let rt = LlamaRuntime::new(w).unwrap();
    let mut cache = rt.new_cache(16);
    let got = rt.forward(&mut cache, &TOKENS, 0).unwrap();
    assert_close(&got, &want, "relu");
    // Guards against the runtime ignoring the field: the two activations must give different logits.
    let max_diff = got.iter().zip(&silu_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff > 1e-3, "ReLU and SiLU logits agree to {max_diff}");
}

#[test]
fn decode_token_by_token_and_split_prefill_match_reference() {
    let w = model(true, 5);
    let want = reference(&w, &TOKENS);
    let rt = LlamaRuntime::new(w).unwrap();
    let mut cache = rt.new_cache(TOKENS.len());
    let mut got = Vec::new();
    for t in TOKENS {
        got.extend(rt.forward(&mut cache, &[t], 0).unwrap());
    }
    assert_close(&got, &want, "decode");
    cache.clear();
    let mut split = rt.forward(&mut cache, &TOKENS[..4], 0).unwrap();
    split.extend(rt.forward(&mut cache, &TOKENS[4..], 0).unwrap());
    assert_close(&split, &want, "split prefill");
}

#[test]
fn logits_from_returns_only_the_tail() {
    let w = model(true, 6);
    let want = reference(&w, &TOKENS);
    let rt = LlamaRuntime::new(w).unwrap();
    let mut cache = rt.new_cache(TOKENS.len());
    let got = rt.forward(&mut cache, &TOKENS, 7).unwrap();
    assert_close(&got, &want[7..], "tail");
}

#[test]
fn thread_count_does_not_change_results_beyond_rounding() {
    let rt = LlamaRuntime::new(model(false, 8)).unwrap();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut cache = rt.new_cache(TOKENS.len());
            rt.forward(&mut cache, &TOKENS, 0).unwrap()
        })
    };
    let (one, two) = (run(1), run(2));
    for (a, b) in one.iter().zip(&two) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let rt = LlamaRuntime::new(model(true, 9)).unwrap();
    let mut cache = rt.new_cache(4);
    assert!(matches!(rt.forward(&mut cache, &[1, 2, 99], 0), Err(RuntimeError::TokenOutOfRange { id: 99, .. })));
    assert!(matches!(rt.forward(&mut cache, &[1, 2, 3, 4, 5], 0), Err(RuntimeError::CacheFull { .. })));
    assert!(matches!(rt.forward(&mut cache, &[1, 2], 3), Err(RuntimeError::LogitsFrom { .. })));
    let mut w = model(true, 10);
    if let Linear::F32(v) = &mut w.layers[1].w_up {
        v.pop();
    }
    assert!(matches!(LlamaRuntime::new(w), Err(RuntimeError::WeightLength { .. })));
    let mut w = model(true, 11);
    w.layers[0].n_kv_heads = 3;
    assert!(LlamaRuntime::new(w).is_err());
}

/// A block run step by step (as calibration passes do) computes what the whole-model forward computes.
#[test]
fn block_steps_equal_the_model_layer() {
    use edgeforge_runtime::{Block, BlockDims};
    let w = model(true, 11);
    let dims = BlockDims::of(&w);
    let tokens = [3u32, 7, 1, 42, 9, 0, 13];
    let n = tokens.len();
    let runtime = LlamaRuntime::new(model(true, 11)).unwrap();
    let mut expected = runtime.embed(&tokens).unwrap();
    let mut got = expected.clone();
    for (li, layer) in w.layers.into_iter().enumerate() {
        runtime.run_layer(li, &mut expected, n, &mut |_, _| {}).unwrap();
        let block = Block::new(layer, dims).unwrap();
        let xn = block.attn_norm(&got, n).unwrap();
        let heads = block.attention_heads(&xn, n).unwrap();
        block.add_attention_output(&heads, n, &mut got).unwrap();
        let xn = block.ffn_norm(&got, n).unwrap();
        let hidden = block.ffn_hidden(&xn, n).unwrap();
        block.add_ffn_output(&hidden, n, &mut got).unwrap();
        assert_eq!(got, expected, "layer {li}");
        assert!(matches!(block.ffn_hidden(&xn[1..], n), Err(RuntimeError::WeightLength { .. })));
    }
}
/// Round-to-nearest quantization of a `[rows, cols]` float matrix (enough for tests: the runtime only
/// has to agree with the dequantized values, whatever they are).
fn quantize(v: &[f32], cols: usize, format: QuantFormat) -> QuantTensor {
    let levels = format.levels() as f32;
    let (mut scales, mut zeros, mut codes) = (Vec::new(), Vec::new(), Vec::new());
    for row in v.chunks(cols) {
        for g in row.chunks(format.group_size) {
            let (lo, hi) = g.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            let (scale, zero) = if format.symmetric {
                (lo.abs().max(hi.abs()) / (levels / 2.0 - 1.0), levels / 2.0)
            } else {
                let s = (hi - lo) / (levels - 1.0);
                (s, (-lo / s).round().clamp(0.0, levels - 1.0))
            };
            let scale = half::f16::from_f32(scale.max(1e-6));
            scales.push(scale);
            if !format.symmetric {
                zeros.push(zero as u8);
            }
            codes.extend(g.iter().map(|&x| ((x / scale.to_f32()).round() + zero).clamp(0.0, levels - 1.0) as u8));
        }
    }
    let codes = if format.bits == 8 { codes } else { codes.chunks(2).map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4)).collect() };
    QuantTensor { format, row_len: cols, scales, zeros, codes }
}

/// `w` with every linear (embedding included) quantized: the packed model, and the float model of the
/// same dequantized values.
fn quantized_pair(w: &LlamaWeights, format: QuantFormat) -> (LlamaWeights, LlamaWeights) {
    let pack = |m: &Linear, rows: usize, cols: usize| {
        let q = quantize(dense(m), cols, format);
        let deq = q.dequantize(rows * cols);
        (Linear::Packed(PackedLinear::from_quant("test", &q, rows, cols).unwrap()), Linear::F32(deq))
    };
    let mut packed_layers = Vec::new();
    let mut float_layers = Vec::new();
    for l in &w.layers {
        let (q, kv, ff) = (l.n_heads * HD, l.n_kv_heads * HD, l.n_ff);
        let [wq, wk, wv, wo, w_gate, w_up, w_down] =
            [(&l.wq, q, E), (&l.wk, kv, E), (&l.wv, kv, E), (&l.wo, E, q), (&l.w_gate, ff, E), (&l.w_up, ff, E), (&l.w_down, E, ff)]
                .map(|(m, rows, cols)| pack(m, rows, cols));
        let layer = |pick: fn(&(Linear, Linear)) -> &Linear| LayerWeights {
            n_heads: l.n_heads,
            n_kv_heads: l.n_kv_heads,
            n_ff: ff,
            attn_norm: l.attn_norm.clone(),
            wq: pick(&wq).clone(),
            wk: pick(&wk).clone(),
            wv: pick(&wv).clone(),
            wo: pick(&wo).clone(),
            ffn_norm: l.ffn_norm.clone(),
            w_gate: pick(&w_gate).clone(),
            w_up: pick(&w_up).clone(),
            w_down: pick(&w_down).clone(),
            activation: l.activation,
            features: l.features.clone(),
        };
        packed_layers.push(layer(|p| &p.0));
        float_layers.push(layer(|p| &p.1));
    }
    let embd = pack(&w.token_embd, VOCAB, E);
    let output = w.output.as_ref().map(|o| pack(o, VOCAB, E));
    let model = |layers, token_embd, output| LlamaWeights {
        vocab_size: VOCAB,
        n_embd: E,
        head_dim: HD,
        rope_base: w.rope_base,
        rms_eps: w.rms_eps,
        token_embd,
        layers,
        output_norm: w.output_norm.clone(),
        output,
        head: w.head.clone(),
    };
    (
        model(packed_layers, embd.0, output.as_ref().map(|o| o.0.clone())),
        model(float_layers, embd.1, output.map(|o| o.1)),
    )
}

#[test]
fn packed_model_matches_reference_on_its_dequantized_weights() {
    let formats = [
        QuantFormat { bits: 4, group_size: 32, symmetric: true },
        QuantFormat { bits: 4, group_size: 24, symmetric: false }, // partial last groups (64 = 24 + 24 + 16)
        QuantFormat { bits: 8, group_size: 1 << 20, symmetric: true }, // per-channel
        QuantFormat { bits: 8, group_size: 40, symmetric: false },
    ];
    for (i, format) in formats.into_iter().enumerate() {
        let (packed, float) = quantized_pair(&model(i % 2 == 0, 40 + i as u64), format);
        assert!(packed.layers.iter().all(|l| l.linears().iter().all(|w| w.is_packed())));
        assert!(packed.resident_bytes() < float.resident_bytes());
        let want = reference(&float, &TOKENS);
        let float_rt = LlamaRuntime::new(float).unwrap();
        let rt = LlamaRuntime::new(packed).unwrap();
        let what = format!("{format:?}");
        // Prefill (tiled kernel), then token by token (fused kernel), then a split of 3 + 8 tokens.
        let mut cache = rt.new_cache(TOKENS.len());
        let prefill = rt.forward(&mut cache, &TOKENS, 0).unwrap();
        assert_close(&prefill, &want, &format!("prefill {what}"));
        let mut float_cache = float_rt.new_cache(TOKENS.len());
        let float_prefill = float_rt.forward(&mut float_cache, &TOKENS, 0).unwrap();
        for (a, b) in prefill.iter().zip(&float_prefill) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "packed {a} vs float {b} ({what})");
        }
        cache.clear();
        let mut decode = Vec::new();
        for t in TOKENS {
            decode.extend(rt.forward(&mut cache, &[t], 0).unwrap());
        }
        assert_close(&decode, &want, &format!("decode {what}"));
        cache.clear();
        let mut split = rt.forward(&mut cache, &TOKENS[..3], 0).unwrap();
        split.extend(rt.forward(&mut cache, &TOKENS[3..], 0).unwrap());
        assert_close(&split, &want, &format!("split {what}"));
        assert_eq!(rt.embed(&TOKENS[..2]).unwrap(), float_rt.embed(&TOKENS[..2]).unwrap(), "embedding rows are bit-identical");
    }
}

#[test]
fn packed_model_is_deterministic_across_runs_and_thread_counts() {
    let (packed, _) = quantized_pair(&model(true, 60), QuantFormat { bits: 4, group_size: 32, symmetric: false });
    let rt = LlamaRuntime::new(packed).unwrap();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut cache = rt.new_cache(TOKENS.len());
            let mut out = rt.forward(&mut cache, &TOKENS[..6], 0).unwrap();
            for &t in &TOKENS[6..] {
                out.extend(rt.forward(&mut cache, &[t], 0).unwrap());
            }
            out
        })
    };
    let first = run(2);
    assert!(run(2).iter().zip(&first).all(|(a, b)| a.to_bits() == b.to_bits()), "same threads, same bits");
}

#[test]
fn packed_weight_of_the_wrong_shape_is_an_error() {
    let (mut packed, _) = quantized_pair(&model(true, 61), QuantFormat { bits: 8, group_size: 16, symmetric: true });
    let wrong = packed.layers[1].wq.clone();
    packed.layers[0].wk = wrong; // layer 1's q is 32 × 64, layer 0's k must be 32 × 64 too ...
    assert!(LlamaRuntime::new(packed).is_ok());
    let (mut packed, _) = quantized_pair(&model(true, 62), QuantFormat { bits: 8, group_size: 16, symmetric: true });
    packed.layers[0].wq = packed.layers[0].w_gate.clone(); // ... but 96 × 64 is not 64 × 64.
    assert!(matches!(LlamaRuntime::new(packed), Err(RuntimeError::LinearShape { .. })));
}

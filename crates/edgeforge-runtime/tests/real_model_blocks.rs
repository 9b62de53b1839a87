//! The reference model (SmolLM2-135M-Instruct, Q4_1 with a Q8_0 embedding) on the block kernels: its
//! weights stay at the file's size, the exact path gives the float path's bits (so perplexity is
//! unchanged), and llama.cpp's rounding stays close to it. Needs `$EDGEFORGE_TEST_MODEL` or
//! scripts/fetch-model.sh (as the workspace's real-model tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use edgeforge_core::load_model;
use edgeforge_runtime::{weights_from_model_as, weights_from_model_owned, LlamaRuntime, Rounding, WeightStorage};

fn reference_model() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEFORGE_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
    let out = std::process::Command::new("bash").arg(&script).output().expect("run scripts/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0
}

#[test]
fn block_weights_stay_at_file_size_and_the_exact_path_keeps_the_float_bits() {
    let mut model = load_model(&reference_model()).unwrap();
    let float = LlamaRuntime::new(weights_from_model_as(&model, WeightStorage::F32).unwrap()).unwrap();
    let file_bytes = model.source.file_bytes as usize;
    let mut blocks = LlamaRuntime::new(weights_from_model_owned(&mut model).unwrap()).unwrap();
    let resident = blocks.weights().resident_bytes();
    assert!(resident < file_bytes * 21 / 20, "block weights take {resident} B for a {file_bytes} B file");
    assert!(float.weights().resident_bytes() > 3 * file_bytes);

    let toks = tokens(256, blocks.vocab_size());
    let run = |rt: &LlamaRuntime| {
        let mut cache = rt.new_cache(toks.len());
        rt.forward(&mut cache, &toks, 192).unwrap()
    };
    let want = run(&float);
    assert!(run(&blocks).iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "exact block path changed the prefill's bits");

    // 16 decode steps after a 32-token prompt, fed the same tokens (the exact path's greedy choices): llama.cpp's
    // rounding moves the logits a little and mostly keeps the top token.
    let decode = |rt: &LlamaRuntime, forced: &[u32]| {
        let mut cache = rt.new_cache(64);
        let mut logits = rt.forward(&mut cache, &toks[..32], 31).unwrap();
        let mut out = Vec::new();
        for step in 0..16 {
            let next = forced.get(step).copied().unwrap_or(argmax(&logits) as u32);
            out.push((next, logits.clone()));
            logits = rt.forward(&mut cache, &[next], 0).unwrap();
        }
        out
    };
    let exact = decode(&blocks, &[]);
    let forced: Vec<u32> = exact.iter().map(|s| s.0).collect();
    blocks.set_rounding(Rounding::Q8);
    let q8 = decode(&blocks, &forced);
    let agree = exact.iter().zip(&q8).filter(|((_, a), (_, b))| argmax(a) == argmax(b)).count();
    assert!(agree >= 12, "llama.cpp rounding kept the top token at {agree} of 16 steps");
    for ((_, a), (_, b)) in exact.iter().zip(&q8) {
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff < 0.1 * scale, "logits moved by {diff} (largest {scale})");
    }
}

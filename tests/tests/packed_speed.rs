//! Benchmark (ignored; run by benches/packed-kernels.sh): decode and prefill speed of the reference model
//! on packed INT4/INT8 weights against the f32 path, measured in the same process with the rounds
//! interleaved (so a busy machine slows every configuration alike), plus the weights' resident bytes and
//! a two-chunk perplexity (value and time) of the same INT4 weights on both paths. Writes `$EDGEFORGE_BENCH_OUT` (JSON)
//! if set. No timed assertions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_core::quantized::QuantFormat;
use edgeforge_core::{load_model, Model, TensorData};
use edgeforge_eval::{latency, perplexity, LatencyOptions, PerplexityOptions};
use edgeforge_runtime::{weights_from_model_as, LlamaRuntime, Rounding, WeightStorage};
use edgeforge_tests::{reference_model, shared_data};

/// Round-to-nearest of every linear except the embedding / tied head, as `quantize-rtn` does by default.
fn rtn(mut m: Model, format: impl Fn(usize) -> QuantFormat) -> Model {
    for (name, t) in m.tensors.iter_mut() {
        if t.shape.len() != 2 || name == "token_embd.weight" || name == "output.weight" {
            continue;
        }
        let values = t.to_f32(name).unwrap();
        t.data = TensorData::Quantized(edgeforge_quant::rtn::quantize(&values, t.row_len(), format(t.row_len()), true));
    }
    m
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run with --ignored (benches/packed-kernels.sh)"]
fn packed_vs_f32_model_speed() {
    let threads: usize = std::env::var("EDGEFORGE_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let rounds: usize = std::env::var("EDGEFORGE_BENCH_ROUNDS").ok().and_then(|t| t.parse().ok()).unwrap_or(3);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let input = load_model(&reference_model()).unwrap();
    let int4 = pool.install(|| rtn(load_model(&reference_model()).unwrap(), |_| QuantFormat { bits: 4, group_size: 64, symmetric: true }));
    let int8 = pool.install(|| rtn(load_model(&reference_model()).unwrap(), |row| QuantFormat { bits: 8, group_size: row, symmetric: true }));
    // The packed weights on the integer path: 8-bit activation blocks and integer dot products for decode steps.
    let integer = |m: &Model| {
        let mut rt = LlamaRuntime::new(weights_from_model_as(m, WeightStorage::Packed).unwrap()).unwrap();
        rt.set_rounding(Rounding::Q8Decode);
        rt
    };
    let configs: Vec<(&str, LlamaRuntime)> = vec![
        ("input Q4_1 GGUF, f32 path", LlamaRuntime::new(weights_from_model_as(&input, WeightStorage::F32).unwrap()).unwrap()),
        ("int4-g64-sym RTN, f32 path (dequantized)", LlamaRuntime::new(weights_from_model_as(&int4, WeightStorage::F32).unwrap()).unwrap()),
        ("int4-g64-sym RTN, packed", LlamaRuntime::new(weights_from_model_as(&int4, WeightStorage::Packed).unwrap()).unwrap()),
        ("int8-per-channel-sym RTN, f32 path (dequantized)", LlamaRuntime::new(weights_from_model_as(&int8, WeightStorage::F32).unwrap()).unwrap()),
        ("int8-per-channel-sym RTN, packed", LlamaRuntime::new(weights_from_model_as(&int8, WeightStorage::Packed).unwrap()).unwrap()),
        ("int4-g64-sym RTN, packed integer (--rounding fast)", integer(&int4)),
        ("int8-per-channel-sym RTN, packed integer (--rounding fast)", integer(&int8)),
    ];
    let opts = LatencyOptions { prompt_tokens: 128, gen_tokens: 32, repeats: 3, seed: 0 };
    let mut decode = vec![Vec::new(); configs.len()];
    let mut prefill = vec![Vec::new(); configs.len()];
    pool.install(|| {
        for _ in 0..rounds {
            for (i, (_, rt)) in configs.iter().enumerate() {
                let r = latency(rt, &opts).unwrap();
                decode[i].push(r.decode_tok_s.expect("gen_tokens > 1 times decode steps"));
                prefill[i].push(r.prefill_tok_s);
            }
        }
    });
    // The same INT4 weights through both paths: perplexity must agree (summation order aside).
    let text = std::fs::read_to_string(shared_data().join("wiki.test.raw")).unwrap();
    let tokens = input.tokenizer.encode(&text, true).unwrap();
    let popts = PerplexityOptions { ctx: 512, batch: 512, max_chunks: Some(2) };
    let ppl = |rt: &LlamaRuntime| {
        let t = std::time::Instant::now();
        let p = pool.install(|| perplexity(rt, &tokens, None, &popts, |_| std::ops::ControlFlow::Continue(())).unwrap().perplexity);
        (p, t.elapsed().as_secs_f64())
    };
    let (mut secs_f32, mut secs_packed) = (Vec::new(), Vec::new());
    let (mut ppl_f32, mut ppl_packed) = (0.0, 0.0);
    for _ in 0..rounds {
        let (p, s) = ppl(&configs[1].1);
        ppl_f32 = p;
        secs_f32.push(s);
        let (p, s) = ppl(&configs[2].1);
        ppl_packed = p;
        secs_packed.push(s);
    }

    let rows: Vec<serde_json::Value> = configs
        .iter()
        .enumerate()
        .map(|(i, (name, rt))| {
            serde_json::json!({
                "config": name,
                "weights_resident_bytes": rt.weights().resident_bytes(),
                "decode_tok_s_median": median(decode[i].clone()),
                "prefill_tok_s_median": median(prefill[i].clone()),
                "decode_tok_s_rounds": decode[i],
                "prefill_tok_s_rounds": prefill[i],
            })
        })
        .collect();
    let ratio = |a: usize, b: usize, v: &Vec<Vec<f64>>| median(v[a].clone()) / median(v[b].clone());
    let report = serde_json::json!({
        "threads": threads,
        "rounds": rounds,
        "latency_options": { "prompt_tokens": opts.prompt_tokens, "gen_tokens": opts.gen_tokens, "repeats": opts.repeats },
        "configs": rows,
        "ratios_packed_over_f32_same_weights": {
            "int4_decode": ratio(2, 1, &decode), "int4_prefill": ratio(2, 1, &prefill),
            "int8_decode": ratio(4, 3, &decode), "int8_prefill": ratio(4, 3, &prefill),
        },
        "ratios_integer_over_packed_float": {
            "int4_decode": ratio(5, 2, &decode), "int8_decode": ratio(6, 4, &decode),
        },
        "ratios_packed_over_input_f32": {
            "int4_decode": ratio(2, 0, &decode), "int4_prefill": ratio(2, 0, &prefill),
            "int8_decode": ratio(4, 0, &decode), "int8_prefill": ratio(4, 0, &prefill),
        },
        "perplexity_2_chunks_int4": {
            "f32_path": ppl_f32, "packed": ppl_packed, "rel_diff": (ppl_packed - ppl_f32).abs() / ppl_f32,
            "seconds_median_f32_path": median(secs_f32), "seconds_median_packed": median(secs_packed),
        },
    });
    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("{text}");
    if let Ok(path) = std::env::var("EDGEFORGE_BENCH_OUT") {
        std::fs::write(path, text + "\n").unwrap();
    }
}

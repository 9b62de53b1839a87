//! The reference model (SmolLM2-135M-Instruct, Q4_1 GGUF) against llama.cpp's own figures.
//! The model is fetched (or found in the cache) by scripts/fetch-model.sh; texts come from ../shared/data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_core::load_model;
use edgeforge_eval::{perplexity, PerplexityOptions};
use edgeforge_export::hf::{write_hf_dir, FloatType};
use edgeforge_runtime::{weights_from_model, LlamaRuntime};
use edgeforge_tests::{reference_model, shared_data};

fn wiki_text() -> String {
    std::fs::read_to_string(shared_data().join("wiki.test.raw")).unwrap()
}

#[test]
fn tokenizer_matches_llama_cpp_ids_on_wikitext() {
    let model = load_model(&reference_model()).unwrap();
    let ids = model.tokenizer.encode(&wiki_text(), true).unwrap();
    let reference: Vec<u32> = std::fs::read_to_string(shared_data().join("ref/wiki.test.raw.smollm2-token-ids.txt"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(reference.len(), 303_415);
    if let Some(i) = ids.iter().zip(&reference).position(|(a, b)| a != b) {
        panic!("first mismatch at token {i}: ours {} vs llama.cpp {}", ids[i], reference[i]);
    }
    assert_eq!(ids.len(), reference.len());
}

#[test]
fn reference_model_shape_and_counts() {
    let model = load_model(&reference_model()).unwrap();
    let c = &model.config;
    assert_eq!((c.n_layers, c.n_embd, c.n_heads, c.n_kv_heads, c.head_dim, c.n_ff), (30, 576, 9, 3, 64, 1536));
    assert_eq!(c.vocab_size, 49_152);
    assert!(c.tied_embeddings);
    assert_eq!(c.rope_base, 100_000.0);
    assert!(!model.tokenizer.add_bos());
    let s = edgeforge_core::summary::summarize(&model);
    assert_eq!(s.total.params, 134_515_008);
    assert_eq!(s.file_bytes, 98_362_432);
}

/// llama-perplexity -c 512 -b 512 on wiki.test.raw prints 22.6003 after 3 chunks.
#[test]
fn three_chunk_perplexity_within_half_a_percent_of_llama_cpp() {
    let model = load_model(&reference_model()).unwrap();
    let rt = LlamaRuntime::new(weights_from_model(&model).unwrap()).unwrap();
    let tokens = model.tokenizer.encode(&wiki_text(), true).unwrap();
    let opts = PerplexityOptions { ctx: 512, batch: 512, max_chunks: Some(3) };
    let r = perplexity(&rt, &tokens, None, &opts, |_| std::ops::ControlFlow::Continue(())).unwrap();
    assert_eq!(r.tokens_scored, 3 * 255);
    let rel = (r.perplexity - 22.6003).abs() / 22.6003;
    assert!(rel < 0.005, "perplexity {} differs from llama.cpp's 22.6003 by {:.3}%", r.perplexity, rel * 100.0);
    // Same 3 chunks fed 128 tokens at a time through the KV cache: same figure.
    let opts = PerplexityOptions { batch: 128, ..opts };
    let r2 = perplexity(&rt, &tokens, None, &opts, |_| std::ops::ControlFlow::Continue(())).unwrap();
    assert!((r2.perplexity - r.perplexity).abs() / r.perplexity < 1e-4, "{} vs {}", r2.perplexity, r.perplexity);
}

/// `convert --to hf-safetensors` then the HF loader: the same logits as the GGUF load path.
#[test]
fn converted_hf_folder_gives_identical_logits() {
    let gguf = load_model(&reference_model()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2-hf");
    write_hf_dir(&gguf, &out, FloatType::F32, false).unwrap();
    let hf = load_model(&out).unwrap();
    assert_eq!(hf.config, gguf.config);
    let tokens = gguf.tokenizer.encode(&wiki_text()[..4000], true).unwrap();
    assert_eq!(hf.tokenizer.encode(&wiki_text()[..4000], true).unwrap(), tokens);
    let tokens = &tokens[..256];
    let run = |m: &edgeforge_core::Model| {
        let rt = LlamaRuntime::new(weights_from_model(m).unwrap()).unwrap();
        let mut cache = rt.new_cache(tokens.len());
        rt.forward(&mut cache, tokens, 192).unwrap()
    };
    assert_eq!(run(&hf), run(&gguf));
}

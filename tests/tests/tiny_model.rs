//! Tiny models built by the test: the GGUF and Hugging Face load paths agree exactly, and `convert` keeps
//! every weight and logit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_core::{load_model, SourceFormat};
use edgeforge_export::hf::{write_hf_dir, FloatType};
use edgeforge_runtime::{weights_from_model, LlamaRuntime};
use edgeforge_tests::{write_tiny_gguf, TinySpec};

fn logits(model: &edgeforge_core::Model, tokens: &[u32]) -> Vec<f32> {
    let rt = LlamaRuntime::new(weights_from_model(model).unwrap()).unwrap();
    let mut cache = rt.new_cache(tokens.len());
    rt.forward(&mut cache, tokens, 0).unwrap()
}

#[test]
fn tiny_gguf_loads_with_expected_config() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { tied: false, ..TinySpec::default() };
    let m = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &spec)).unwrap();
    assert_eq!(m.source.format, SourceFormat::Gguf);
    assert_eq!((m.config.n_layers, m.config.n_heads, m.config.n_kv_heads, m.config.head_dim), (2, 4, 2, 8));
    assert!(!m.config.tied_embeddings);
    assert_eq!(m.config.vocab_size, m.tokenizer.vocab_size());
    let s = edgeforge_core::summary::summarize(&m);
    let v = m.config.vocab_size as u64;
    let expected = 2 * v * 32 + 32 + 2 * (2 * 32 + 2 * 32 * 32 + 2 * 16 * 32 + 3 * 48 * 32);
    assert_eq!(s.total.params, expected);
    assert_eq!(s.by_type["F32"].params, expected);
}

#[test]
fn convert_to_hf_and_back_gives_identical_weights_and_logits() {
    for spec in [
        TinySpec::default(),
        TinySpec { tied: false, seed: 11, ..TinySpec::default() },
        TinySpec { f16: true, seed: 12, n_heads: 2, n_kv_heads: 1, ..TinySpec::default() },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let gguf = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &spec)).unwrap();
        let out = dir.path().join("hf");
        write_hf_dir(&gguf, &out, FloatType::F32, false).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(out.join(f).is_file(), "{f} missing");
        }
        let hf = load_model(&out).unwrap();
        assert_eq!(hf.source.format, SourceFormat::HfSafetensors);
        assert_eq!(hf.config, gguf.config);
        assert_eq!(hf.tensors.keys().collect::<Vec<_>>(), gguf.tensors.keys().collect::<Vec<_>>());
        for (name, t) in &gguf.tensors {
            assert_eq!(hf.tensors[name].to_f32(name).unwrap(), t.to_f32(name).unwrap(), "{name}");
        }
        let text = "the cat in the hat = 42";
        let ids = gguf.tokenizer.encode(text, true).unwrap();
        assert_eq!(hf.tokenizer.encode(text, true).unwrap(), ids);
        assert_eq!(logits(&hf, &ids), logits(&gguf, &ids), "logits differ for {spec:?}");
    }
}

#[test]
fn hf_folder_stores_q_and_k_in_rotate_half_order() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    let gguf = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &spec)).unwrap();
    let out = dir.path().join("hf");
    write_hf_dir(&gguf, &out, FloatType::F32, false).unwrap();
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors_view(&bytes, "model.layers.1.self_attn.k_proj.weight");
    let gg = gguf.tensors["blk.1.attn_k.weight"].to_f32("k").unwrap();
    let (head_dim, row) = (8, 32);
    // HF row i of a head is GGUF row 2i; HF row i + head_dim/2 is GGUF row 2i + 1.
    for head in 0..2 {
        for i in 0..head_dim / 2 {
            let hf_a = &st[(head * head_dim + i) * row..][..row];
            let hf_b = &st[(head * head_dim + i + head_dim / 2) * row..][..row];
            assert_eq!(hf_a, &gg[(head * head_dim + 2 * i) * row..][..row]);
            assert_eq!(hf_b, &gg[(head * head_dim + 2 * i + 1) * row..][..row]);
        }
    }
}

/// Read one F32 tensor from a safetensors file by hand (header: u64 length + JSON), independent of our loader.
fn safetensors_view(bytes: &[u8], name: &str) -> Vec<f32> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
    assert_eq!(header[name]["dtype"], "F32");
    bytes[8 + n + a..8 + n + b].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn f16_tensors_stay_raw_until_dequantized() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { f16: true, ..TinySpec::default() };
    let m = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &spec)).unwrap();
    assert_eq!(m.tensors["blk.0.ffn_up.weight"].format_name(), "F16");
    assert_eq!(m.tensors["blk.0.ffn_norm.weight"].format_name(), "F32");
}

/// The HF model hash (reports, the baseline cache key) covers the tokenizer files, not only the weights and
/// config.json: a changed special-tokens map or tokenizer_config.json is a different model.
#[test]
fn hf_model_hash_covers_the_tokenizer_files() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default())).unwrap();
    let out = dir.path().join("hf");
    write_hf_dir(&gguf, &out, FloatType::F32, false).unwrap();
    let base = load_model(&out).unwrap().source.sha256;
    assert_eq!(load_model(&out).unwrap().source.sha256, base, "the hash is deterministic");
    let mut seen = vec![base.clone()];
    let special = out.join("special_tokens_map.json");
    std::fs::write(&special, r#"{"bos_token": "<s>"}"#).unwrap();
    seen.push(load_model(&out).unwrap().source.sha256);
    let config = out.join("tokenizer_config.json");
    let mut tc: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    tc["chat_template"] = "{{ messages }}".into();
    std::fs::write(&config, tc.to_string()).unwrap();
    seen.push(load_model(&out).unwrap().source.sha256);
    let tok = out.join("tokenizer.json");
    std::fs::write(&tok, format!("{} ", std::fs::read_to_string(&tok).unwrap())).unwrap();
    seen.push(load_model(&out).unwrap().source.sha256);
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a tokenizer file changed but the model hash did not: {seen:?}");
}

/// A sharded folder (model.safetensors.index.json + two shard files) loads to the same model.
#[test]
fn sharded_hf_folder_loads_like_a_single_file() {
    use safetensors::tensor::TensorView;
    let dir = tempfile::tempdir().unwrap();
    let gguf = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec { tied: false, ..TinySpec::default() })).unwrap();
    let out = dir.path().join("hf");
    write_hf_dir(&gguf, &out, FloatType::F32, false).unwrap();
    let single = load_model(&out).unwrap();

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let views: Vec<(String, TensorView<'_>)> = part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &out.join(file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.into());
        }
    }
    std::fs::write(out.join("model.safetensors.index.json"), serde_json::json!({ "weight_map": weight_map }).to_string()).unwrap();
    std::fs::remove_file(out.join("model.safetensors")).unwrap();

    let sharded = load_model(&out).unwrap();
    assert_eq!(sharded.config, single.config);
    for (name, t) in &single.tensors {
        assert_eq!(sharded.tensors[name].to_f32(name).unwrap(), t.to_f32(name).unwrap(), "{name}");
    }
}

/// F16 and BF16 folders hold the GGUF weights rounded once to that type.
#[test]
fn half_precision_hf_folders_round_once() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = load_model(&write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec::default())).unwrap();
    for (dtype, name, round) in [
        (FloatType::F16, "f16", (|v: f32| half::f16::from_f32(v).to_f32()) as fn(f32) -> f32),
        (FloatType::BF16, "bf16", |v: f32| half::bf16::from_f32(v).to_f32()),
    ] {
        let out = dir.path().join(name);
        write_hf_dir(&gguf, &out, dtype, false).unwrap();
        let hf = load_model(&out).unwrap();
        let t = "blk.1.ffn_up.weight";
        let want: Vec<f32> = gguf.tensors[t].to_f32(t).unwrap().into_iter().map(round).collect();
        assert_eq!(hf.tensors[t].to_f32(t).unwrap(), want, "{name}");
    }
    // An existing folder is refused unless replacing is asked for, and nothing half-written is left behind.
    let out = dir.path().join("f16");
    assert!(write_hf_dir(&gguf, &out, FloatType::F16, false).is_err());
    write_hf_dir(&gguf, &out, FloatType::F32, true).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// F16 and BF16 GGUF matrices stay 2 bytes per weight in the runtime (`Linear::Blocks` of that format, not an
/// f32 copy) and give the float path's logits: a prompt's batch on the exact tiles gives the same bits, decode
/// steps on the 16-bit float row kernels the same values up to the order of additions.
#[test]
fn half_weights_run_as_blocks_with_the_float_paths_logits() {
    use edgeforge_core::{GgmlType, TensorData};
    use edgeforge_runtime::{weights_from_model_as, BlockFormat, Linear, WeightStorage};
    let dir = tempfile::tempdir().unwrap();
    let f32_file = write_tiny_gguf(dir.path(), "tiny.gguf", &TinySpec { tied: false, seed: 21, ..TinySpec::default() });
    for (dtype, format) in [(GgmlType::F16, BlockFormat::F16), (GgmlType::BF16, BlockFormat::BF16)] {
        // Matrices in `dtype` (norms stay F32), written and loaded back as a GGUF file.
        let mut m = load_model(&f32_file).unwrap();
        for (name, t) in &mut m.tensors {
            if t.shape.len() == 2 {
                let v = t.to_f32(name).unwrap();
                let bytes: Vec<u8> = match dtype {
                    GgmlType::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                    _ => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                };
                t.data = TensorData::Blocks { dtype, bytes: bytes.into() };
            }
        }
        let path = dir.path().join(format!("{}.gguf", dtype.name()));
        edgeforge_export::gguf_model::write_gguf(&m, &path, "tiny").unwrap();
        let m = load_model(&path).unwrap();
        assert_eq!(m.tensors["blk.0.ffn_up.weight"].format_name(), dtype.name());

        let blocks = weights_from_model(&m).unwrap();
        let float = weights_from_model_as(&m, WeightStorage::F32).unwrap();
        let mut linears: Vec<&Linear> = blocks.layers.iter().flat_map(|l| l.linears()).collect();
        linears.extend([&blocks.token_embd, blocks.output.as_ref().unwrap()]);
        for w in linears {
            assert!(matches!(w, Linear::Blocks(b) if b.format() == format), "{dtype:?}: a linear is not kept as {format:?} blocks");
        }
        let (half_bytes, float_bytes) = (blocks.resident_bytes(), float.resident_bytes());
        assert!(half_bytes * 100 < float_bytes * 55, "{dtype:?}: {half_bytes} B resident vs {float_bytes} B as f32");

        let (blocks, float) = (LlamaRuntime::new(blocks).unwrap(), LlamaRuntime::new(float).unwrap());
        let prompt: Vec<u32> = (0..24).map(|i| (i * 37 % 260) as u32).collect();
        let run = |rt: &LlamaRuntime| {
            let mut cache = rt.new_cache(prompt.len() + 4);
            let mut out = vec![rt.forward(&mut cache, &prompt, 0).unwrap()];
            for &t in &[5u32, 77, 140, 3] {
                out.push(rt.forward(&mut cache, &[t], 0).unwrap());
            }
            out
        };
        let (got, want) = (run(&blocks), run(&float));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got[0]), bits(&want[0]), "{dtype:?}: the prompt's logits differ from the float path's");
        for (step, (g, w)) in got.iter().zip(&want).enumerate().skip(1) {
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "{dtype:?} decode step {step}: logits moved by {diff} (largest {scale})");
        }
    }
}

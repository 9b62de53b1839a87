//! The NIR exporter on tiny models built here, read back with the NIR project's own Python reader
//! (tests/python/check_nir.py: `nir.read`, type-checked), plus the refusals and the simulation table;
//! and the reference model (SmolLM2-135M, 8-bit for Loihi 2) with its figures printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use edgeforge_core::{load_model, Activation, Model, TensorData};
use edgeforge_export::nir::{write_nir, NirLimits, NirOptions};
use edgeforge_export::ExportError;
use edgeforge_tests::{write_tiny_gguf, TinySpec};

fn quantize(model: &mut Model, options: serde_json::Value) {
    edgeforge_tests::quantize_rtn(model, options);
}

/// Loihi 2 as the shipped profile states it (1 chip).
fn loihi2() -> NirLimits {
    NirLimits {
        profile: "loihi2".into(),
        neurons: 1_048_576,
        synapses: 120_000_000,
        weight_bits_max: 8,
        max_fan_in: None,
        synop_energy_pj: Some(23.6),
        synop_energy_source: Some("Davies et al., IEEE Micro 2018 (Loihi 1 figure)".into()),
    }
}

fn akida() -> NirLimits {
    NirLimits { profile: "akida".into(), neurons: 1_200_000, synapses: 10_000_000_000, weight_bits_max: 4, max_fan_in: Some(2048), synop_energy_pj: None, synop_energy_source: None }
}

fn write_f32(path: &Path, values: &[f32]) {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

/// Runs the Python checker; returns its JSON line.
fn check_with_nir_read(dir: &Path, extra: &[String]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/check_nir.py");
    let out = Command::new("python3").arg(&script).arg(dir).args(extra).output().expect("python3 with the `nir` package (scripts/test.sh installs it)");
    assert!(out.status.success(), "check_nir.py failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn partition(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("partition.json")).unwrap()).unwrap()
}

#[test]
fn tiny_int8_model_exports_exact_codes_that_nir_read_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 5, f16: false };
    let mut model = load_model(&write_tiny_gguf(tmp.path(), "tiny.gguf", &spec)).unwrap();
    quantize(&mut model, serde_json::json!({ "bits": 8, "group_size": "per-channel" }));
    let dir = tmp.path().join("tiny-nir");
    let summary = write_nir(&model, &dir, &loihi2(), &NirOptions::default()).unwrap();

    // Per block: q 64×64, k/v 32×64, o 64×64, gate/up 96×64, down 64×96.
    let per_block_synapses = 64 * 64 * 2 + 32 * 64 * 2 + 96 * 64 * 3;
    assert_eq!(summary.synapses, 2 * per_block_synapses);
    assert_eq!(summary.neurons, 2 * (64 + 32 + 32 + 64 + 96 + 96 + 64));
    assert_eq!(summary.max_fan_in, 96);
    // Per block: 4 segments (4 Inputs), 7 Linear, 1 IF, 7 Outputs.
    assert_eq!(summary.nodes, 2 * (4 + 7 + 1 + 7));

    // The reference codes for block 0's gate, taken from the quantized tensor here: code − 128.
    let reference = tmp.path().join("gate.f32");
    let TensorData::Quantized(q) = &model.tensors["blk.0.ffn_gate.weight"].data else { panic!("not quantized") };
    write_f32(&reference, &(0..96 * 64).map(|i| f32::from(q.code(i)) - 128.0).collect::<Vec<_>>());
    let seen = check_with_nir_read(&dir, &["--exact".into(), "block0.mlp.gate_proj".into(), reference.display().to_string()]);
    eprintln!("nir.read: {seen}");
    assert_eq!(seen["version"], "1.0.8");
    assert_eq!(seen["types"]["Linear"], 14);
    assert_eq!(seen["types"]["IF"], 2);

    let p = partition(&dir);
    let block = &p["blocks"][1];
    assert_eq!(block["chip"].as_array().unwrap().len(), 7);
    assert!(block["host"].as_array().unwrap().iter().any(|h| h.as_str().unwrap().contains("softmax")));
    assert_eq!(block["chip"][4]["node"], "block1.mlp.gate_proj");
    assert_eq!(block["chip"][4]["exact_model_codes"], true);
    assert_eq!(p["lm_head"], "host");
    assert!(p["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true));
    // The energy estimate's spike rate is the one the simulated inputs have (both gate layers get the same
    // synthetic inputs here: no calibration text), not an assumed 0.1.
    let energy = &p["energy_estimate"];
    let rate = energy["input_spike_rate"].as_f64().unwrap();
    assert!((rate - p["simulation"]["mean_input_rate"].as_f64().unwrap()).abs() < 1e-4, "{energy}");
    assert!(rate > 0.4 && rate < 0.6, "uniform inputs in [-1, 1] spike at about 0.5 per step: {rate}");
    let synops = 2.0 * per_block_synapses as f64 * rate * 32.0;
    assert!((energy["synops_per_token"].as_f64().unwrap() - synops).abs() < 1e-6);
    assert!(energy["label"].as_str().unwrap().contains("estimate") && energy["label"].as_str().unwrap().contains("Davies") && energy["label"].as_str().unwrap().contains("measured"));

    // The simulation of block0.mlp.gate_proj uses the exported neuron (threshold, reset to zero), and says
    // its inputs were synthetic.
    let sim = &p["simulation"];
    assert_eq!(block_activation(&p, 0)["v_threshold"], sim["threshold"]);
    assert_eq!(block_activation(&p, 0)["v_reset"], 0.0);
    assert!(sim["inputs"].as_str().unwrap().starts_with("synthetic"));
    let rows = sim["rows"].as_array().unwrap();
    let errs: Vec<f64> = rows.iter().map(|r| r["rel_error"].as_f64().unwrap()).collect();
    let sub: Vec<f64> = rows.iter().map(|r| r["rel_error_reset_by_subtraction"].as_f64().unwrap()).collect();
    eprintln!("simulation (T = 8..256), as exported (reset to zero): {errs:?}; reset by subtraction: {sub:?}");
    assert_eq!(rows.iter().map(|r| r["timesteps"].as_u64().unwrap()).collect::<Vec<_>>(), [8, 16, 32, 64, 128, 256]);
    // Reset by subtraction converges; reset to zero loses the residual at every spike, so it cannot do better.
    assert!(sub[5] < 0.05, "{sub:?}");
    assert!(sub[5] < sub[0] / 4.0, "{sub:?}");
    for pair in sub.windows(2) {
        assert!(pair[1] <= pair[0] * 1.25, "error does not fall with T: {sub:?}");
    }
    assert!(errs.iter().zip(&sub).all(|(z, s)| z + 1e-9 >= *s && *z < 1.0), "{errs:?} vs {sub:?}");
    assert!(p["simulation"]["assumption"].as_str().unwrap().contains("SiLU"));
    for note in &summary.notes {
        eprintln!("note: {note}");
    }
    // Deterministic: the same model exports to the same bytes.
    let again = tmp.path().join("again");
    write_nir(&model, &again, &loihi2(), &NirOptions::default()).unwrap();
    for f in ["model.nir", "partition.json"] {
        assert!(std::fs::read(dir.join(f)).unwrap() == std::fs::read(again.join(f)).unwrap(), "{f} differs between two exports");
    }
}

#[test]
fn float_model_is_requantized_to_4_bits_for_akida_with_the_head_on_chip() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: false, seed: 9, f16: false };
    let model = load_model(&write_tiny_gguf(tmp.path(), "tiny.gguf", &spec)).unwrap();
    let dir = tmp.path().join("akida-nir");
    let options = NirOptions { weight_bits: 4, lm_head_on_chip: true, ..NirOptions::default() };
    let summary = write_nir(&model, &dir, &akida(), &options).unwrap();
    assert!(summary.energy.energy_per_token_uj.is_none(), "akida publishes no energy per synop");
    let floats = tmp.path().join("down.f32");
    write_f32(&floats, &model.tensors["blk.1.ffn_down.weight"].to_f32("down").unwrap());
    let seen = check_with_nir_read(&dir, &["--near".into(), "block1.mlp.down_proj".into(), floats.display().to_string()]);
    eprintln!("nir.read: {seen}");
    assert_eq!(seen["types"]["Linear"], 15, "14 block linears + the LM head");
    let p = partition(&dir);
    assert_eq!(p["lm_head"]["weight_shape"][0], model.config.vocab_size);
    assert_eq!(p["weight_bits"], 4);
}

#[test]
fn exports_that_do_not_fit_are_refused_with_the_fix_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 5, f16: false };
    let mut model = load_model(&write_tiny_gguf(tmp.path(), "tiny.gguf", &spec)).unwrap();
    let dir = tmp.path().join("out");
    let refuse = |model: &Model, limits: &NirLimits, options: &NirOptions| -> String {
        match write_nir(model, &dir, limits, options) {
            Err(e @ ExportError::DoesNotFit { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    // 8-bit weights on a 4-bit chip.
    let e = refuse(&model, &akida(), &NirOptions::default());
    assert!(e.contains("8-bit weights; akida holds at most 4 bits") && e.contains("quantize to 4 bits"), "{e}");
    // Too few synapses, with the head on chip: keeping the head on the host is the first fix.
    let small = NirLimits { synapses: 2 * (64 * 64 * 2 + 32 * 64 * 2 + 96 * 64 * 3), ..loihi2() };
    let e = refuse(&model, &small, &NirOptions { lm_head_on_chip: true, ..NirOptions::default() });
    assert!(e.contains("synapses") && e.contains("keep the LM head on the host"), "{e}");
    // A fan-in limit below the feed-forward width.
    let e = refuse(&model, &NirLimits { max_fan_in: Some(80), ..loihi2() }, &NirOptions::default());
    assert!(e.contains("block0.mlp.down_proj takes 96 inputs") && e.contains("feed-forward width is at most 80"), "{e}");
    // 8-bit codes cannot be squeezed onto a 4-bit grid by the exporter.
    quantize(&mut model, serde_json::json!({ "bits": 8, "group_size": "per-channel" }));
    let e = refuse(&model, &akida(), &NirOptions { weight_bits: 4, ..NirOptions::default() });
    assert!(e.contains("8-bit codes") && e.contains("bits: 4"), "{e}");
    assert!(!dir.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "only the tiny GGUF: no partial folder left");
}

/// SmolLM2-135M at 8 bits for Loihi 2, all 30 blocks, read back with nir.read.
#[test]
fn reference_model_exports_for_loihi2_and_nir_read_loads_it() {
    let model = load_model(&edgeforge_tests::reference_model()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smollm2-nir");
    let t = std::time::Instant::now();
    let summary = write_nir(&model, &dir, &loihi2(), &NirOptions::default()).unwrap();
    let export_s = t.elapsed().as_secs_f64();
    assert_eq!(summary.blocks_exported, 30);
    assert_eq!(summary.synapses, 30 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536));
    assert_eq!(summary.neurons, 30 * (576 + 192 + 192 + 576 + 1536 * 2 + 576));
    let seen = check_with_nir_read(&dir, &[]);
    let uj = summary.energy.energy_per_token_uj.unwrap();
    eprintln!(
        "SmolLM2 → NIR (loihi2, 8-bit): {} nodes, {} edges, {} neurons, {} synapses, max fan-in {}, model.nir {} bytes, export {export_s:.1} s; energy {:.0} µJ/token ({:.3e} synops); nir.read: {seen}",
        summary.nodes, summary.edges, summary.neurons, summary.synapses, summary.max_fan_in, summary.nir_bytes, uj, summary.energy.synops_per_token
    );
    if let Some(s) = &summary.simulation {
        for r in &s.rows {
            eprintln!("  {} T={:>3}: rel error {:.4} (reset by subtraction {:.4}), output rate {:.3}", s.layer, r.timesteps, r.rel_error, r.rel_error_reset_by_subtraction, r.mean_output_rate);
        }
        eprintln!("  quantization-only error {:.4}, θ {}", s.quantization_rel_error, s.threshold);
    }
    assert_eq!(seen["types"]["Linear"], 210);
    assert_eq!(seen["types"]["IF"], 30);
    // With the head on chip the model needs 134.5M synapses: refused, with the head as the fix.
    let e = write_nir(&model, &tmp.path().join("head"), &loihi2(), &NirOptions { lm_head_on_chip: true, ..NirOptions::default() }).unwrap_err().to_string();
    eprintln!("with the LM head on chip: {e}");
    assert!(e.contains("keep the LM head on the host"), "{e}");
}

#[test]
fn relu_model_needs_no_activation_assumption() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 96, tied: true, seed: 5, f16: false };
    let mut model = load_model(&write_tiny_gguf(tmp.path(), "tiny.gguf", &spec)).unwrap();
    quantize(&mut model, serde_json::json!({ "bits": 8, "group_size": "per-channel" }));
    model.config.activation = Activation::Relu;
    let dir = tmp.path().join("relu-nir");
    let summary = write_nir(&model, &dir, &loihi2(), &NirOptions::default()).unwrap();
    let p = partition(&dir);
    assert_eq!(p["model_activation"], "relu");
    let statement = p["activation_assumption"].as_str().unwrap();
    assert!(statement.contains("own activation") && !statement.contains("assumes"), "{statement}");
    assert!(!p["simulation"]["assumption"].as_str().unwrap().contains("SiLU"));
    assert!(summary.notes.iter().any(|n| n.contains("model's own activation")), "{:?}", summary.notes);
    assert!(summary.notes.iter().all(|n| !n.contains("SiLU→ReLU")), "{:?}", summary.notes);
    check_with_nir_read(&dir, &[]);
}

/// The IF activation entry of block `b`'s MLP gate in partition.json.
fn block_activation(p: &serde_json::Value, b: usize) -> serde_json::Value {
    p["blocks"][b]["chip"].as_array().unwrap().iter().find(|l| l["node"].as_str().unwrap().ends_with("mlp.gate_proj")).unwrap()["activation"].clone()
}

//! The burn model computes what the runtime computes for every family: on each tiny random model that
//! tests/python/make_tiny_family.py writes (llama.cpp's names, layout and keys), the logits of a 40-token
//! sequence agree within `TOLERANCE` of the logit scale; and the check has teeth: switching any one feature
//! the family uses off in the burn model alone (or changing its RoPE layout or activation) breaks the
//! agreement by far more than the tolerance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use burn::tensor::{Device, Int, Tensor, TensorData};
use edgeforge_core::family::RopeScaling;
use edgeforge_core::{load_model, Activation, Model, ModelConfig, RopeKind};
use edgeforge_distill::load::{llama_from_model, Trainable};
use edgeforge_distill::model::Positions;
use edgeforge_distill::DistillError;
use edgeforge_runtime::{weights_from_model, LlamaRuntime};
use edgeforge_tests::Rng;

/// Generated file stems (make_tiny_family.py).
const FAMILIES: [&str; 7] = ["llama", "llama3", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"];

/// max |burn − runtime| over every logit, relative to the largest |runtime logit|.
const TOLERANCE: f32 = 1e-5;

/// Longer than the tiny Gemma models' 16-token window, so the window matters.
const SEQ: usize = 40;

fn load(name: &str) -> Model {
    load_model(&edgeforge_tests::tiny_family_models().join(format!("{name}.gguf"))).unwrap()
}

fn tokens(vocab: usize) -> Vec<u32> {
    let mut rng = Rng::new(11);
    (0..SEQ).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
}

fn burn_logits(model: &Model, tokens: &[u32]) -> Result<Vec<f32>, DistillError> {
    let device = Device::flex();
    let llama = llama_from_model(model, &device, Trainable { embeddings: false, blocks: false })?;
    let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), &device);
    let pos = Positions::new(tokens.len(), &llama, &device);
    Ok(llama.forward(t, &pos, false).logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap())
}

fn runtime_logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let rt = LlamaRuntime::new(weights_from_model(model).unwrap()).unwrap();
    let mut cache = rt.new_cache(tokens.len());
    rt.forward(&mut cache, tokens, 0).unwrap()
}

/// max |a − b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let max_abs = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    max_abs / b.iter().fold(0f32, |m, v| m.max(v.abs()))
}

type Mutation = (&'static str, fn(&ModelConfig) -> bool, fn(&mut ModelConfig));

/// One change to the description per feature: (name, whether the model uses the feature, the change).
/// The layout and activation changes apply to every model; the others switch a used feature off.
fn mutations() -> Vec<Mutation> {
    vec![
        ("RoPE layout", |_| true, |c| c.features.rope_kind = if c.features.rope_kind == RopeKind::Norm { RopeKind::Neox } else { RopeKind::Norm }),
        ("gate activation", |_| true, |c| c.activation = if c.activation == Activation::Silu { Activation::GeluTanh } else { Activation::Silu }),
        ("RoPE scaling", |c| c.features.rope_scaling != RopeScaling::None, |c| c.features.rope_scaling = RopeScaling::None),
        ("local layers' RoPE base", |c| c.features.rope_base_swa.is_some(), |c| c.features.rope_base_swa = None),
        ("sliding window", |c| c.features.sliding_window.is_some(), |c| c.features.sliding_window = None),
        ("attention soft-cap", |c| c.features.attn_softcap.is_some(), |c| c.features.attn_softcap = None),
        ("final soft-cap", |c| c.features.final_softcap.is_some(), |c| c.features.final_softcap = None),
        ("embedding scale", |c| c.features.scale_embeddings, |c| c.features.scale_embeddings = false),
        ("q/k/v biases", |c| c.features.qkv_bias, |c| c.features.qkv_bias = false),
        ("q/k norms", |c| c.features.qk_norm, |c| c.features.qk_norm = false),
        ("post norms", |c| c.features.post_norms, |c| c.features.post_norms = false),
    ]
}

#[test]
fn burn_logits_match_the_runtime_for_every_family_and_each_feature_matters() {
    for name in FAMILIES {
        let mut model = load(name);
        let toks = tokens(model.config.vocab_size);
        let rt = runtime_logits(&model, &toks);
        let rel = rel_diff(&burn_logits(&model, &toks).unwrap(), &rt);
        eprintln!("{name}: burn vs runtime, max |Δlogit| / max |logit| = {rel:.2e}");
        assert!(rel <= TOLERANCE, "{name}: burn and runtime logits differ by {rel:.3e} of the logit scale (limit {TOLERANCE:e})");

        let original = model.config.clone();
        let mut flipped = 0;
        for (what, uses, change) in mutations() {
            if !uses(&original) {
                continue;
            }
            change(&mut model.config);
            let moved = rel_diff(&burn_logits(&model, &toks).unwrap(), &rt);
            model.config = original.clone();
            eprintln!("{name}: without its {what}, burn differs from the runtime by {moved:.2e}");
            assert!(moved > 100.0 * TOLERANCE, "{name}: changing the {what} in the burn model alone moved it only {moved:.3e} from the runtime");
            flipped += 1;
        }
        assert!(flipped >= 2, "{name}: only {flipped} features checked");
    }
}

/// Features no tiny family model has, switched on in both the description and the tensors: a softmax scale
/// override (Gemma 27B's) and an attention output bias.
#[test]
fn attention_scale_override_and_output_bias_match_the_runtime() {
    let mut model = load("qwen2");
    let toks = tokens(model.config.vocab_size);
    model.config.features.attn_scale = Some(0.4);
    model.config.features.o_bias = true;
    let mut rng = Rng::new(3);
    for l in 0..model.config.n_layers {
        let bias: Vec<f32> = (0..model.config.n_embd).map(|_| rng.uniform(0.5)).collect();
        let t = edgeforge_core::Tensor { shape: vec![bias.len()], data: edgeforge_core::TensorData::F32(bias) };
        model.tensors.insert(format!("blk.{l}.attn_output.bias"), t);
    }
    let rt = runtime_logits(&model, &toks);
    let rel = rel_diff(&burn_logits(&model, &toks).unwrap(), &rt);
    eprintln!("qwen2 with attn_scale 0.4 and attn_output.bias: {rel:.2e}");
    assert!(rel <= TOLERANCE, "{rel:.3e}");
    model.config.features.o_bias = false;
    let moved = rel_diff(&burn_logits(&model, &toks).unwrap(), &rt);
    assert!(moved > 100.0 * TOLERANCE, "dropping the output bias moved burn only {moved:.3e}");
}

/// What the burn model cannot compute is refused with a typed error naming the family, the feature and a fix.
#[test]
fn values_no_forward_can_compute_are_refused_by_name() {
    let mut model = load("gemma2");
    model.config.features.attn_softcap = Some(0.0);
    let err = burn_logits(&model, &[1, 2, 3]).unwrap_err();
    assert!(matches!(err, DistillError::Unsupported { family: edgeforge_core::Family::Gemma2, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("gemma2") && msg.contains("attention soft-cap") && msg.contains("fix:"), "{msg}");
}

//! burn's gradients of the distillation loss agree with central finite differences on a tiny model built
//! here: entries of every kind of parameter (attention and MLP projections, norms, the tied embedding); and
//! on the tiny Qwen 2 and Gemma 3 models, for the parameters their families add (q/k/v biases, q/k norms,
//! post norms).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use burn::tensor::{Device, Int, Tensor, TensorData};
use edgeforge_core::{load_model, Model, TensorData as IrData};
use edgeforge_distill::load::{llama_from_model, Trainable};
use edgeforge_distill::model::{Llama, Positions};
use edgeforge_distill::{hidden_mse, kl_loss, teacher_log_probs, TeacherTargets};
use edgeforge_tests::{write_tiny_gguf, TinySpec};

const T: f64 = 2.0;
const TOKENS: [i64; 10] = [3, 17, 4, 9, 22, 1, 30, 5, 8, 12];

fn tokens(device: &Device) -> Tensor<2, Int> {
    Tensor::<2, Int>::from_data(TensorData::new(TOKENS.to_vec(), [1, TOKENS.len()]), device)
}

/// KL(teacher ‖ student)·T² plus 0.5 × the hidden-state MSE, as the training loop computes it.
fn loss(student: &Llama, teacher: &Llama, device: &Device, ad: &Device) -> Tensor<1> {
    let pos_t = Positions::new(TOKENS.len(), teacher, device);
    let pos_s = Positions::new(TOKENS.len(), student, ad);
    let t = teacher.forward(tokens(device), &pos_t, true);
    let targets = TeacherTargets::Full(teacher_log_probs(t.logits, T).autodiff());
    let teacher_hidden: Vec<Tensor<2>> = t.hidden.into_iter().map(|h| h.autodiff()).collect();
    let s = student.forward(tokens(ad), &pos_s, true);
    let mse = hidden_mse(&s.hidden, &teacher_hidden).unwrap();
    kl_loss(s.logits, &targets, T) + mse.mul_scalar(0.5)
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0])
}

/// The three largest-gradient entries of `name` (small gradients drown in f32 rounding) against central
/// differences of the loss; returns how many were checked.
fn check_against_finite_differences(student_model: &mut Model, teacher: &Llama, name: &str, grad: Tensor<1>, device: &Device, ad: &Device) -> usize {
    let all = Trainable { embeddings: true, blocks: true };
    let eps = 1e-2f32;
    let g = grad.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let mut idx: Vec<usize> = (0..g.len()).collect();
    idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
    for &i in idx.iter().take(3) {
        let mut at = |delta: f32| {
            bump(student_model, name, i, delta);
            let s = llama_from_model(student_model, ad, all).unwrap();
            let l = scalar(loss(&s, teacher, device, ad).detach());
            bump(student_model, name, i, -delta);
            l
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
        let an = f64::from(g[i]);
        assert!((fd - an).abs() <= 2e-2 * an.abs().max(fd.abs()) + 2e-4, "{name}[{i}]: autodiff {an:.6e}, finite difference {fd:.6e}");
    }
    3
}

fn bump(model: &mut Model, name: &str, i: usize, delta: f32) {
    let t = model.tensors.get_mut(name).unwrap();
    let mut v = t.to_f32(name).unwrap();
    v[i] += delta;
    t.data = IrData::F32(v);
}

#[test]
fn loss_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { n_embd: 16, n_layers: 2, n_heads: 4, n_kv_heads: 2, n_ff: 24, tied: true, seed: 3, f16: false };
    let teacher_model = load_model(&write_tiny_gguf(dir.path(), "teacher.gguf", &spec)).unwrap();
    let mut student_model = load_model(&write_tiny_gguf(dir.path(), "student.gguf", &TinySpec { seed: 4, ..spec })).unwrap();
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let teacher = llama_from_model(&teacher_model, &device, Trainable { embeddings: false, blocks: false }).unwrap();
    let all = Trainable { embeddings: true, blocks: true };
    let student = llama_from_model(&student_model, &ad, all).unwrap();
    let grads = loss(&student, &teacher, &device, &ad).backward();
    let b = &student.blocks;
    let params: [(&str, Tensor<1>); 7] = [
        ("blk.0.attn_q.weight", b[0].attn_q.weight.val().grad(&grads).unwrap().reshape([-1])),
        ("blk.0.attn_v.weight", b[0].attn_v.weight.val().grad(&grads).unwrap().reshape([-1])),
        ("blk.1.attn_output.weight", b[1].attn_output.weight.val().grad(&grads).unwrap().reshape([-1])),
        ("blk.1.ffn_down.weight", b[1].ffn_down.weight.val().grad(&grads).unwrap().reshape([-1])),
        ("blk.0.ffn_gate.weight", b[0].ffn_gate.weight.val().grad(&grads).unwrap().reshape([-1])),
        ("blk.1.ffn_norm.weight", b[1].ffn_norm.weight.val().grad(&grads).unwrap()),
        ("token_embd.weight", student.token_embd.val().grad(&grads).unwrap().reshape([-1])),
    ];
    let mut checked = 0;
    for (name, grad) in params {
        checked += check_against_finite_differences(&mut student_model, &teacher, name, grad, &device, &ad);
    }
    assert_eq!(checked, 21);
}

#[test]
fn family_parameter_gradients_match_finite_differences() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let all = Trainable { embeddings: true, blocks: true };
    for name in ["qwen2", "gemma3"] {
        let path = edgeforge_tests::tiny_family_models().join(format!("{name}.gguf"));
        let teacher_model = load_model(&path).unwrap();
        let mut student_model = load_model(&path).unwrap();
        // A student near the teacher keeps the loss small, so its f32 rounding (summed over a 49k vocabulary)
        // stays below the differences of the small k-bias gradients.
        let mut rng = edgeforge_tests::Rng::new(5);
        for (n, t) in student_model.tensors.iter_mut() {
            let v = t.to_f32(n).unwrap().into_iter().map(|x| x + rng.uniform(0.02)).collect();
            t.data = IrData::F32(v);
        }
        let teacher = llama_from_model(&teacher_model, &device, Trainable { embeddings: false, blocks: false }).unwrap();
        let student = llama_from_model(&student_model, &ad, all).unwrap();
        let grads = loss(&student, &teacher, &device, &ad).backward();
        let b = &student.blocks;
        let g = |p: &burn::module::Param<Tensor<1>>| p.val().grad(&grads).unwrap();
        let params: Vec<(&str, Tensor<1>)> = if name == "qwen2" {
            let bias = |i: usize, s: &str| b[i].linear(s).and_then(|l| l.bias.as_ref()).unwrap();
            vec![("blk.0.attn_q.bias", g(bias(0, "attn_q"))), ("blk.1.attn_k.bias", g(bias(1, "attn_k"))), ("blk.0.attn_v.bias", g(bias(0, "attn_v")))]
        } else {
            let x = |i: usize| &b[i].extras;
            vec![
                ("blk.0.attn_q_norm.weight", g(&x(0).attn_q_norm.as_ref().unwrap().weight)),
                ("blk.5.attn_k_norm.weight", g(&x(5).attn_k_norm.as_ref().unwrap().weight)),
                ("blk.1.post_attention_norm.weight", g(&x(1).post_attention_norm.as_ref().unwrap().weight)),
                ("blk.4.post_ffw_norm.weight", g(&x(4).post_ffw_norm.as_ref().unwrap().weight)),
            ]
        };
        let mut checked = 0;
        for (tensor, grad) in params {
            checked += check_against_finite_differences(&mut student_model, &teacher, tensor, grad, &device, &ad);
        }
        assert!(checked >= 9, "{name}: {checked}");
    }
}

//! Op-by-op parity with llama.cpp under `--rounding llamacpp`: every op of one perplexity batch, fed the
//! inputs llama.cpp itself computed (dumped by benches/tools/llama-dump.cpp, run by
//! benches/llamacpp-bitexact.sh), must give llama.cpp's output bits. Chained comparisons cannot show this:
//! one ulp anywhere changes an 8-bit activation code somewhere downstream, and perplexity then moves by as
//! much as any other arithmetic would (measured: an f32 instead of f64 sum in RMS norm moves the per-chunk
//! mean log-likelihood by 5.7e-3 nats sd, as much as the whole difference from llama.cpp).
//!
//! Runs when `EDGEFORGE_LLAMA_DUMP` names a dump folder (and `EDGEFORGE_TEST_MODEL` the model it was made
//! from); otherwise prints that it was skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::block::{Attention, BlockDims};
use crate::weights::LlamaWeights;
use crate::Rounding;

/// One dumped tensor: its op, type, shape and sources (index.tsv).
struct Entry {
    seq: usize,
    op: String,
    ty: String,
    ne: [usize; 4],
}

struct Dump {
    dir: PathBuf,
    by_name_op: HashMap<(String, String), Entry>,
}

impl Dump {
    fn open(dir: &Path) -> Dump {
        let index = std::fs::read_to_string(dir.join("index.tsv")).expect("index.tsv");
        let mut by_name_op = HashMap::new();
        for line in index.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let ne = [f[4], f[5], f[6], f[7]].map(|v| v.parse().expect("ne"));
            let e = Entry { seq: f[0].parse().expect("seq"), op: f[2].to_string(), ty: f[3].to_string(), ne };
            by_name_op.entry((f[1].to_string(), e.op.clone())).or_insert(e);
        }
        Dump { dir: dir.to_path_buf(), by_name_op }
    }

    /// The elements of tensor `name` as computed by `op`, widened to f32.
    fn get(&self, name: &str, op: &str) -> Vec<f32> {
        let e = self.by_name_op.get(&(name.to_string(), op.to_string())).unwrap_or_else(|| panic!("{name} ({op}) not in the dump"));
        let bytes = std::fs::read(self.dir.join(format!("{:05}.bin", e.seq))).expect("tensor file");
        let count: usize = e.ne.iter().product();
        let v: Vec<f32> = match e.ty.as_str() {
            "f32" => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            "f16" => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            t => panic!("{name}: type {t} not handled"),
        };
        assert_eq!(v.len(), count, "{name} ({op}, {})", e.op);
        v
    }
}

/// Mismatching elements and the largest |difference| of `ours` against llama.cpp's `theirs`.
#[derive(Default, Clone, Copy)]
struct Tally {
    elems: usize,
    differ: usize,
    max_abs: f32,
}

impl Tally {
    fn add(&mut self, ours: &[f32], theirs: &[f32]) {
        assert_eq!(ours.len(), theirs.len());
        self.elems += ours.len();
        for (&a, &b) in ours.iter().zip(theirs) {
            if a.to_bits() != b.to_bits() {
                self.differ += 1;
                self.max_abs = self.max_abs.max((a - b).abs());
            }
        }
    }
}

fn model() -> Option<(PathBuf, PathBuf)> {
    let dump = std::env::var_os("EDGEFORGE_LLAMA_DUMP")?;
    let model = std::env::var_os("EDGEFORGE_TEST_MODEL")?;
    Some((PathBuf::from(dump), PathBuf::from(model)))
}

fn weights(path: &Path) -> LlamaWeights {
    let m = edgeforge_core::load_model(path).expect("load the model");
    let mut w = crate::weights_from_model(&m).expect("weights");
    w.token_embd.set_rounding(Rounding::Q8);
    if let Some(o) = &mut w.output {
        o.set_rounding(Rounding::Q8);
    }
    for l in &mut w.layers {
        l.set_rounding(Rounding::Q8);
    }
    w
}

#[test]
fn every_op_gives_llamacpps_bits_on_its_inputs() {
    let Some((dir, path)) = model() else {
        eprintln!("SKIPPED every_op_gives_llamacpps_bits_on_its_inputs: set EDGEFORGE_LLAMA_DUMP (benches/llamacpp-bitexact.sh) and EDGEFORGE_TEST_MODEL");
        return;
    };
    check(&dir, &dir, &path, false);
    // A decode step after the batch, when the dump has one (`llama-dump ... 1`).
    if dir.join("decode/index.tsv").is_file() {
        eprintln!("decode step:");
        check(&dir.join("decode"), &dir, &path, true);
    }
}

/// Every op of the dump in `dir` (tokens in `base`), fed llama.cpp's inputs: a batch at positions `0..n`, or
/// (`decode`) one token after the batch, attending over the cache llama.cpp held.
fn check(dir: &Path, base: &Path, path: &Path, decode: bool) {
    let dump = Dump::open(dir);
    let w = weights(path);
    let d = BlockDims::of(&w);
    let (e, hd) = (w.n_embd, w.head_dim);
    let n = dump.by_name_op[&("embd".to_string(), "GET_ROWS".to_string())].ne[1];
    let tokens: Vec<u32> = std::fs::read_to_string(base.join("tokens.txt")).expect("tokens").lines().map(|l| l.parse().expect("token")).collect();
    // A decode step's position is the batch's length: the token after it.
    let past = if decode { tokens.len() - n } else { 0 };
    let mut t: Vec<(&str, Tally)> = Vec::new();
    let mut tally = |what: &'static str, ours: &[f32], theirs: &[f32]| {
        match t.iter_mut().find(|(n, _)| *n == what) {
            Some((_, x)) => x.add(ours, theirs),
            None => {
                let mut x = Tally::default();
                x.add(ours, theirs);
                t.push((what, x));
            }
        }
    };
    let linear = |x: &[f32], lw: &crate::Linear, out: usize, inp: usize| {
        let mut y = vec![0f32; n * out];
        crate::block::linear(x, n, lw, out, inp, &mut y, "parity").expect("linear");
        y
    };
    let mut embd = vec![0f32; n * e];
    for (row, &tok) in embd.chunks_exact_mut(e).zip(&tokens[past..]) {
        w.token_embd.row_into(tok as usize, row, "token_embd").expect("row");
    }
    tally("get_rows", &embd, &dump.get("embd", "GET_ROWS"));
    for (li, l) in w.layers.iter().enumerate() {
        let input = if li == 0 { dump.get("embd", "GET_ROWS") } else { dump.get(&format!("l_out-{}", li - 1), "ADD") };
        let mut xn = vec![0f32; n * e];
        crate::ops::rms_norm(&input, &l.attn_norm, d.rms_eps, &mut xn);
        let xn_ref = dump.get(&format!("attn_norm-{li}"), "MUL");
        tally("rms_norm·w", &xn, &xn_ref);
        let (qd, kvd) = (l.n_heads * hd, l.n_kv_heads * hd);
        for (name, lw, out) in [("Qcur", &l.wq, qd), ("Kcur", &l.wk, kvd), ("Vcur", &l.wv, kvd)] {
            tally("mul_mat q/k/v", &linear(&xn_ref, lw, out, e), &dump.get(&format!("{name}-{li}"), "MUL_MAT"));
        }
        let rope = crate::rope::RopeTable::new_ggml(hd, &crate::block::rope_params(l, d), past, n);
        for (name, width) in [("Qcur", qd), ("Kcur", kvd)] {
            let mut x = dump.get(&format!("{name}-{li}"), "MUL_MAT");
            rope.apply(&mut x, width);
            tally("rope", &x, &dump.get(&format!("{name}-{li}"), "ROPE"));
        }
        let q = dump.get(&format!("Qcur-{li}"), "ROPE");
        let (k, v) = if decode {
            // The cache views flash attention read, `[kv head][key][dim]`, into rows of keys.
            let rows = |name: &str| {
                let c = dump.get(&format!("cache_{name}_l{li} (view) (permuted)"), "PERMUTE");
                let keys = c.len() / kvd;
                let mut out = vec![0f32; (past + n) * kvd];
                for key in 0..past + n {
                    for h in 0..l.n_kv_heads {
                        out[key * kvd + h * hd..][..hd].copy_from_slice(&c[(h * keys + key) * hd..][..hd]);
                    }
                }
                out
            };
            (rows("k"), rows("v"))
        } else {
            (dump.get(&format!("cache_k_l{li} (view)"), "SET_ROWS"), dump.get(&format!("cache_v_l{li} (view)"), "SET_ROWS"))
        };
        let heads = crate::block::attend_all_heads(&q, &k, &v, l, d, n, past, Attention::LlamaCpp);
        let heads_ref = dump.get(&format!("kqv_out-{li}"), "RESHAPE");
        tally("flash_attn_ext", &heads, &heads_ref);
        tally("mul_mat o", &linear(&heads_ref, &l.wo, e, qd), &dump.get(&format!("attn_out-{li}"), "MUL_MAT"));
        let ffn_inp = dump.get(&format!("ffn_inp-{li}"), "ADD");
        let mut xn = vec![0f32; n * e];
        crate::ops::rms_norm(&ffn_inp, &l.ffn_norm, d.rms_eps, &mut xn);
        let xn_ref = dump.get(&format!("ffn_norm-{li}"), "MUL");
        tally("rms_norm·w", &xn, &xn_ref);
        let (gate_ref, up_ref) = (dump.get(&format!("ffn_gate-{li}"), "MUL_MAT"), dump.get(&format!("ffn_up-{li}"), "MUL_MAT"));
        tally("mul_mat gate/up", &linear(&xn_ref, &l.w_gate, l.n_ff, e), &gate_ref);
        tally("mul_mat gate/up", &linear(&xn_ref, &l.w_up, l.n_ff, e), &up_ref);
        let mut g = gate_ref.clone();
        crate::kernels::ggml_arith::swiglu_rows(&mut g, &up_ref, l.n_ff);
        let sw_ref = dump.get(&format!("ffn_swiglu-{li}"), "SWIGLU");
        tally("swiglu", &g, &sw_ref);
        tally("mul_mat down", &linear(&sw_ref, &l.w_down, e, l.n_ff), &dump.get(&format!("ffn_out-{li}"), "MUL_MAT"));
    }
    let last = dump.get(&format!("l_out-{}", w.layers.len() - 1), "ADD");
    let mut xn = vec![0f32; n * e];
    crate::ops::rms_norm(&last, &w.output_norm, d.rms_eps, &mut xn);
    let xn_ref = dump.get("result_norm", "MUL");
    tally("rms_norm·w", &xn, &xn_ref);
    let head = w.output.as_ref().unwrap_or(&w.token_embd);
    tally("mul_mat output", &linear(&xn_ref, head, w.vocab_size, e), &dump.get("result_output", "MUL_MAT"));
    let mut all_exact = true;
    for (what, x) in &t {
        eprintln!("{what:>16}: {:>10} elements, {:>9} differ, max |diff| {:.3e}", x.elems, x.differ, x.max_abs);
        all_exact &= x.differ == 0;
    }
    assert!(all_exact, "some ops differ from llama.cpp's bits (table above)");
}

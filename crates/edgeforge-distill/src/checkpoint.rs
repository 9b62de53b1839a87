//! Resumable training state in the pass's work folder: the student's weights (`student.bin`), AdamW's
//! moments (`optimizer.bpk`, burn's own format), and `state.json` (step, data cursor, time spent, loss log,
//! and the options it was trained with). Each file is written to a temporary name and renamed, and
//! `state.json` last, so a crash mid-write leaves the previous checkpoint whole.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::optim::ModuleOptimizer;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{DistillError, Result};
use crate::load::{named_tensors, set_values};
use crate::model::{Block, BlockExtras, Linear, Llama, RmsNorm};

const MAGIC: &[u8; 8] = b"EFDIST01";

/// One optimizer step as logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    /// The objective's term: KL(teacher‖student)·T², or the next-token cross-entropy with
    /// `objective: next-token` (the report's `objective` says which).
    pub kl: f64,
    /// The next-token cross-entropy added to the KL with `ce_weight` > 0 (else 0).
    #[serde(default)]
    pub ce: f64,
    pub hidden_mse: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Sequences consumed from the data stream.
    pub cursor: u64,
    pub tokens: u64,
    pub elapsed_s: f64,
    /// The pass options and seed this state belongs to; a mismatch starts training afresh.
    pub fingerprint: String,
    pub log: Vec<StepLog>,
}

pub struct Paths {
    pub student: PathBuf,
    pub optimizer: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    pub fn in_dir(dir: &Path) -> Self {
        Self { student: dir.join("student.bin"), optimizer: dir.join("optimizer.bpk"), state: dir.join("state.json") }
    }
}

fn tmp(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| DistillError::io(to, e))
}

fn write_student(llama: &Llama, path: &Path) -> Result<()> {
    let t = tmp(path);
    let file = std::fs::File::create(&t).map_err(|e| DistillError::io(&t, e))?;
    let mut w = std::io::BufWriter::new(file);
    let io = |e| DistillError::io(&t, e);
    w.write_all(MAGIC).map_err(io)?;
    for (name, _, tensor) in named_tensors(llama) {
        let values = tensor.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| DistillError::Data(format!("{e:?}")))?;
        w.write_all(&(name.len() as u32).to_le_bytes()).map_err(io)?;
        w.write_all(name.as_bytes()).map_err(io)?;
        w.write_all(&(values.len() as u64).to_le_bytes()).map_err(io)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&bytes).map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    rename(&t, path)
}

fn read_student(path: &Path) -> Result<BTreeMap<String, Vec<f32>>> {
    let bad = |message: &str| DistillError::Checkpoint { path: path.to_owned(), message: message.to_owned() };
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| DistillError::io(path, e))?;
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| bad("not a student checkpoint"))?;
    let mut out = BTreeMap::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let end = at.checked_add(n).filter(|&e| e <= rest.len()).ok_or_else(|| bad("truncated"))?;
        let s = &rest[*at..end];
        *at = end;
        Ok(s)
    };
    while at < rest.len() {
        let len = u32::from_le_bytes(take(&mut at, 4)?.try_into().map_err(|_| bad("truncated"))?) as usize;
        let name = String::from_utf8(take(&mut at, len)?.to_vec()).map_err(|_| bad("bad tensor name"))?;
        let n = u64::from_le_bytes(take(&mut at, 8)?.try_into().map_err(|_| bad("truncated"))?);
        let n = usize::try_from(n).ok().and_then(|n| n.checked_mul(4)).ok_or_else(|| bad("tensor too large"))?;
        let values = take(&mut at, n)?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, values);
    }
    Ok(out)
}

/// The tensors of a student checkpoint, taken out one by one as the model's parameters are restored.
struct Saved<'a> {
    tensors: BTreeMap<String, Vec<f32>>,
    path: &'a Path,
}

impl Saved<'_> {
    fn param<const D: usize>(&mut self, p: Param<Tensor<D>>, name: &str) -> Result<Param<Tensor<D>>> {
        let values = self.tensors.remove(name).ok_or_else(|| DistillError::Checkpoint { path: self.path.to_owned(), message: format!("no tensor `{name}`") })?;
        set_values(p, values)
    }

    /// `{stem}.weight` and, when the linear has one, `{stem}.bias`.
    fn linear(&mut self, l: Linear, stem: &str) -> Result<Linear> {
        let weight = self.param(l.weight, &format!("{stem}.weight"))?;
        let bias = l.bias.map(|b| self.param(b, &format!("{stem}.bias"))).transpose()?;
        Ok(Linear { weight, bias, quant: l.quant })
    }

    fn norm(&mut self, n: RmsNorm, name: &str) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: self.param(n.weight, name)?, eps: n.eps })
    }

    fn opt_norm(&mut self, n: Option<RmsNorm>, name: &str) -> Result<Option<RmsNorm>> {
        n.map(|n| self.norm(n, name)).transpose()
    }

    fn block(&mut self, b: Block, l: usize) -> Result<Block> {
        let w = |x: &str| format!("blk.{l}.{x}.weight");
        let stem = |x: &str| format!("blk.{l}.{x}");
        let x = b.extras;
        Ok(Block {
            attn_norm: self.norm(b.attn_norm, &w("attn_norm"))?,
            attn_q: self.linear(b.attn_q, &stem("attn_q"))?,
            attn_k: self.linear(b.attn_k, &stem("attn_k"))?,
            attn_v: self.linear(b.attn_v, &stem("attn_v"))?,
            attn_output: self.linear(b.attn_output, &stem("attn_output"))?,
            ffn_norm: self.norm(b.ffn_norm, &w("ffn_norm"))?,
            ffn_gate: self.linear(b.ffn_gate, &stem("ffn_gate"))?,
            ffn_up: self.linear(b.ffn_up, &stem("ffn_up"))?,
            ffn_down: self.linear(b.ffn_down, &stem("ffn_down"))?,
            extras: BlockExtras {
                attn_q_norm: self.opt_norm(x.attn_q_norm, &w("attn_q_norm"))?,
                attn_k_norm: self.opt_norm(x.attn_k_norm, &w("attn_k_norm"))?,
                post_attention_norm: self.opt_norm(x.post_attention_norm, &w("post_attention_norm"))?,
                post_ffw_norm: self.opt_norm(x.post_ffw_norm, &w("post_ffw_norm"))?,
            },
            shape: b.shape,
            activation: b.activation,
            attention: b.attention,
        })
    }
}

/// Load saved weights into `llama` (same architecture), keeping parameter ids so optimizer state matches.
/// Every saved tensor must find its parameter and every parameter its tensor.
fn load_student(mut llama: Llama, path: &Path) -> Result<Llama> {
    let mut s = Saved { tensors: read_student(path)?, path };
    llama.token_embd = s.param(llama.token_embd, "token_embd.weight")?;
    let blocks = std::mem::take(&mut llama.blocks);
    llama.blocks = blocks.into_iter().enumerate().map(|(l, b)| s.block(b, l)).collect::<Result<Vec<_>>>()?;
    llama.output_norm = s.norm(llama.output_norm, "output_norm.weight")?;
    llama.output = llama.output.map(|o| s.linear(o, "output")).transpose()?;
    if let Some(name) = s.tensors.keys().next() {
        return Err(DistillError::Checkpoint { path: path.to_owned(), message: format!("tensor `{name}` has no parameter in the student (a checkpoint of another model?)") });
    }
    Ok(llama)
}

/// Save everything needed to continue training after `state.step` steps.
pub fn save(dir: &Path, llama: &Llama, optim: &ModuleOptimizer, state: &TrainState) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| DistillError::io(dir, e))?;
    let p = Paths::in_dir(dir);
    write_student(llama, &p.student)?;
    let t = tmp(&p.optimizer);
    optim.save(&t).map_err(|e| DistillError::Checkpoint { path: t.clone(), message: format!("{e:?}") })?;
    rename(&t, &p.optimizer)?;
    let t = tmp(&p.state);
    let json = serde_json::to_vec_pretty(state).map_err(|e| DistillError::Checkpoint { path: t.clone(), message: e.to_string() })?;
    std::fs::write(&t, json).map_err(|e| DistillError::io(&t, e))?;
    rename(&t, &p.state)
}

/// The saved state if `dir` holds a complete checkpoint with this `fingerprint`.
pub fn saved_state(dir: &Path, fingerprint: &str) -> Option<TrainState> {
    let p = Paths::in_dir(dir);
    let state: TrainState = serde_json::from_slice(&std::fs::read(&p.state).ok()?).ok()?;
    (state.fingerprint == fingerprint && p.student.is_file() && p.optimizer.is_file()).then_some(state)
}

/// Load the student's weights and the optimizer state of the checkpoint in `dir`.
pub fn resume(dir: &Path, llama: Llama, optim: ModuleOptimizer) -> Result<(Llama, ModuleOptimizer)> {
    let p = Paths::in_dir(dir);
    let llama = load_student(llama, &p.student)?;
    let optim = optim.load(&p.optimizer).map_err(|e| DistillError::Checkpoint { path: p.optimizer.clone(), message: format!("{e:?}") })?;
    Ok((llama, optim))
}

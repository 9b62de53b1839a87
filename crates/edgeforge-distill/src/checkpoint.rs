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
use crate::model::{Linear, Llama, RmsNorm};

const MAGIC: &[u8; 8] = b"EFDIST01";

/// One optimizer step as logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub kl: f64,
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

fn restore<const D: usize>(p: Param<Tensor<D>>, name: &str, saved: &mut BTreeMap<String, Vec<f32>>, path: &Path) -> Result<Param<Tensor<D>>> {
    let values = saved.remove(name).ok_or_else(|| DistillError::Checkpoint { path: path.to_owned(), message: format!("no tensor `{name}`") })?;
    set_values(p, values)
}

/// Load saved weights into `llama` (same architecture), keeping parameter ids so optimizer state matches.
fn load_student(mut llama: Llama, path: &Path) -> Result<Llama> {
    let mut saved = read_student(path)?;
    let s = &mut saved;
    llama.token_embd = restore(llama.token_embd, "token_embd.weight", s, path)?;
    let lin = |l: Linear, name: &str, s: &mut BTreeMap<String, Vec<f32>>| -> Result<Linear> { Ok(Linear { weight: restore(l.weight, name, s, path)?, quant: l.quant }) };
    let norm = |n: RmsNorm, name: &str, s: &mut BTreeMap<String, Vec<f32>>| -> Result<RmsNorm> { Ok(RmsNorm { weight: restore(n.weight, name, s, path)?, eps: n.eps }) };
    let mut blocks = Vec::with_capacity(llama.blocks.len());
    for (l, b) in std::mem::take(&mut llama.blocks).into_iter().enumerate() {
        let name = |x: &str| format!("blk.{l}.{x}.weight");
        blocks.push(crate::model::Block {
            attn_norm: norm(b.attn_norm, &name("attn_norm"), s)?,
            attn_q: lin(b.attn_q, &name("attn_q"), s)?,
            attn_k: lin(b.attn_k, &name("attn_k"), s)?,
            attn_v: lin(b.attn_v, &name("attn_v"), s)?,
            attn_output: lin(b.attn_output, &name("attn_output"), s)?,
            ffn_norm: norm(b.ffn_norm, &name("ffn_norm"), s)?,
            ffn_gate: lin(b.ffn_gate, &name("ffn_gate"), s)?,
            ffn_up: lin(b.ffn_up, &name("ffn_up"), s)?,
            ffn_down: lin(b.ffn_down, &name("ffn_down"), s)?,
            shape: b.shape,
            activation: b.activation,
        });
    }
    llama.blocks = blocks;
    llama.output_norm = norm(llama.output_norm, "output_norm.weight", s)?;
    llama.output = llama.output.map(|o| lin(o, "output.weight", s)).transpose()?;
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

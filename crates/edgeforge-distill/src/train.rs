//! The training loop: teacher and student forward passes on the same token batches, KL (+ hidden-state MSE)
//! loss, gradients summed over micro-batches, global-norm clipping, one AdamW step, checkpoints. Every
//! source of randomness is the seed (data order); the rest is deterministic for a given thread count.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use edgeforge_core::Model;
use serde::Serialize;

use crate::checkpoint::{self, StepLog, TrainState};
use crate::data::DataOrder;
use crate::error::{DistillError, Result};
use crate::load::{llama_from_model, Trainable};
use crate::loss::{hidden_mse, kl_loss, next_token_loss, teacher_log_probs, top_k, TeacherTargets};
use crate::model::{Llama, Positions};
use crate::options::{BackendChoice, DistillOptions, Objective};
use crate::schedule::Schedule;
use crate::teacher::{Prefetch, RuntimeTeacher};

/// The device of a backend choice, failing clearly when the backend was not compiled in.
pub fn device(choice: BackendChoice) -> Result<Device> {
    match choice {
        BackendChoice::Flex => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        BackendChoice::Ndarray => Ok(Device::ndarray()),
        #[cfg(not(feature = "ndarray"))]
        BackendChoice::Ndarray => Err(DistillError::Backend { backend: "ndarray", feature: "ndarray" }),
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::default())),
        #[cfg(not(feature = "wgpu"))]
        BackendChoice::Wgpu => Err(DistillError::Backend { backend: "wgpu", feature: "wgpu" }),
    }
}

/// Sum of squared gradient entries over the module's parameters.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += f64::from(g.square().sum().into_scalar::<f32>());
        }
    }
}

struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Clip the global L2 norm of `grads` to `max_norm` (0 = no clipping); returns the norm before clipping.
fn clip_global_norm(model: &Llama, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut sq = SquaredNorm { grads, sum: 0.0 };
    model.visit(&mut sq);
    let norm = sq.sum.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        model.visit(&mut ScaleGrads { grads, factor: max_norm / norm });
    }
    norm
}

/// What a training run did, for the pass notes and `distill-log.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub steps_done: u64,
    pub steps_planned: u64,
    pub resumed_at_step: Option<u64>,
    pub stopped_by_budget: bool,
    pub seq_len: usize,
    pub tokens_per_step: u64,
    pub tokens: u64,
    pub elapsed_s: f64,
    /// Training tokens per second over this run's steps (teacher forward included).
    pub tokens_per_s: f64,
    pub backend: String,
    pub threads: usize,
    pub objective: Objective,
    /// What ran the teacher (`None` without one) and the wall time its targets took in this run (inside
    /// `elapsed_s`, so inside `max_minutes`).
    pub teacher_engine: Option<&'static str>,
    pub teacher_s: f64,
    /// Seconds the teacher's own thread spent computing targets while the student trained (`None` when
    /// the targets were computed on the training thread only).
    pub teacher_thread_s: Option<f64>,
    pub log: Vec<StepLog>,
    /// (tensor, format before, relative change) of each tensor the student changed.
    #[serde(skip)]
    pub changed: Vec<(String, String, f64)>,
}

/// Everything `train` needs besides the two models.
pub struct TrainContext<'a> {
    pub sequences: &'a [Vec<u32>],
    pub seed: u64,
    pub work_dir: Option<&'a Path>,
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
    /// Loss and speed beside the progress bar.
    pub status: &'a (dyn Fn(String) + Sync),
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

fn fingerprint(o: &DistillOptions, seed: u64, sequences: &[Vec<u32>]) -> String {
    // FNV-1a over the training tokens: a different calibration set must not resume an old run.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in sequences {
        for &t in s.iter().chain(std::iter::once(&u32::MAX)) {
            for b in t.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut math = o.clone();
    // Options that do not change the trajectory.
    math.max_minutes = None;
    math.checkpoint_every = 1;
    let json = serde_json::to_string(&math).unwrap_or_default();
    format!("seed={seed} tokens={h:016x} options={json}")
}

pub(crate) fn token_tensor(rows: &[&[u32]], device: &Device) -> Tensor<2, Int> {
    let (b, t) = (rows.len(), rows.first().map_or(0, |r| r.len()));
    let ids: Vec<i64> = rows.iter().flat_map(|r| r.iter().map(|&x| i64::from(x))).collect();
    Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), device)
}

/// Teacher top-k per sequence, `[seq_len, k]` ids and log-probabilities, filled on first visit.
type TopKCache = HashMap<usize, (Vec<i64>, Vec<f32>)>;

/// What runs the teacher: a burn module (with its positions) or the native runtime. One per run: boxing the
/// larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Teacher {
    Burn(Llama, Positions),
    Runtime(Arc<RuntimeTeacher>),
}

struct Trainer<'a> {
    o: &'a DistillOptions,
    /// The teacher (`None` for the next-token objective).
    teacher: Option<Teacher>,
    base: Device,
    ad: Device,
    pos_ad: Positions,
    seq_len: usize,
    top_k_cache: TopKCache,
    /// The teacher block index of each student block.
    origins: Vec<usize>,
    /// Wall time the training thread spent computing (or waiting for) teacher targets in this run.
    teacher_s: f64,
    /// The runtime teacher's top-k targets computed ahead on a thread of its own.
    prefetch: Option<Prefetch>,
}

impl Trainer<'_> {
    /// Teacher targets for the sequences `ids` (`rows`), from the cache when possible; and the teacher's
    /// hidden states when the loss needs them.
    fn targets(&mut self, ids: &[usize], rows: &[&[u32]]) -> Result<(TeacherTargets, Vec<Tensor<2>>)> {
        if let Some(cached) = self.cached(ids) {
            return Ok((cached, Vec::new()));
        }
        let started = Instant::now();
        if let Some(cached) = self.wait_for_prefetch(ids)? {
            self.teacher_s += started.elapsed().as_secs_f64();
            return Ok((cached, Vec::new()));
        }
        let out = match &self.teacher {
            Some(Teacher::Runtime(rt)) => self.runtime_targets(rt, ids, rows),
            Some(Teacher::Burn(teacher, pos)) => self.burn_targets(teacher, pos, ids, rows),
            None => Err(DistillError::Missing { what: "a teacher (objective: distill)" }),
        };
        self.teacher_s += started.elapsed().as_secs_f64();
        let (targets, hidden, new_entries) = out?;
        self.top_k_cache.extend(new_entries);
        Ok((targets, hidden))
    }

    /// Take prefetched entries until `ids` are all cached; `None` when the prefetch thread is done first.
    fn wait_for_prefetch(&mut self, ids: &[usize]) -> Result<Option<TeacherTargets>> {
        while let Some(entry) = self.prefetch.as_ref().and_then(Prefetch::next) {
            let (i, e) = entry?;
            self.top_k_cache.insert(i, e);
            if let Some(cached) = self.cached(ids) {
                return Ok(Some(cached));
            }
        }
        Ok(None)
    }

    /// The cached top-k targets of `ids` when every one of them has been seen (and no hidden states needed).
    fn cached(&self, ids: &[usize]) -> Option<TeacherTargets> {
        let k = self.o.teacher_top_k?;
        if self.o.hidden_mse_weight > 0.0 || !ids.iter().all(|i| self.top_k_cache.contains_key(i)) {
            return None;
        }
        let (mut tok, mut lp) = (Vec::new(), Vec::new());
        for (a, b) in ids.iter().filter_map(|i| self.top_k_cache.get(i)) {
            tok.extend_from_slice(a);
            lp.extend_from_slice(b);
        }
        let n = ids.len() * self.seq_len;
        let k = k.min(tok.len() / n.max(1));
        let ids_t = Tensor::<2, Int>::from_data(TensorData::new(tok, [n, k]), &self.ad);
        let lp_t = Tensor::<2>::from_data(TensorData::new(lp, [n, k]), &self.ad);
        Some(TeacherTargets::TopK { ids: ids_t, log_probs: lp_t })
    }

    /// Targets from the runtime: one prefill per sequence, log-softmax and top-k on the CPU.
    fn runtime_targets(&self, rt: &RuntimeTeacher, ids: &[usize], rows: &[&[u32]]) -> Result<(TeacherTargets, Vec<Tensor<2>>, Vec<CacheEntry>)> {
        let (t, vocab, n) = (self.o.temperature, rt.vocab_size(), rows.len() * self.seq_len);
        let mut entries = Vec::new();
        let targets = match self.o.teacher_top_k {
            None => {
                let mut all = Vec::with_capacity(n * vocab);
                for r in rows {
                    all.extend(rt.log_probs(r, t)?);
                }
                TeacherTargets::Full(Tensor::<2>::from_data(TensorData::new(all, [n, vocab]), &self.ad))
            }
            Some(k) => {
                let (mut tok, mut lps) = (Vec::new(), Vec::new());
                for (&i, r) in ids.iter().zip(rows) {
                    let (a, b) = rt.top_k(r, t, k)?;
                    tok.extend_from_slice(&a);
                    lps.extend_from_slice(&b);
                    entries.push((i, (a, b)));
                }
                let k = tok.len() / n.max(1);
                let ids_t = Tensor::<2, Int>::from_data(TensorData::new(tok, [n, k]), &self.ad);
                TeacherTargets::TopK { ids: ids_t, log_probs: Tensor::<2>::from_data(TensorData::new(lps, [n, k]), &self.ad) }
            }
        };
        Ok((targets, Vec::new(), entries))
    }

    /// Targets from the burn teacher (full or top-k), and its hidden states when the loss needs them.
    fn burn_targets(&self, teacher: &Llama, pos: &Positions, ids: &[usize], rows: &[&[u32]]) -> Result<(TeacherTargets, Vec<Tensor<2>>, Vec<CacheEntry>)> {
        let want_hidden = self.o.hidden_mse_weight > 0.0;
        let out = teacher.forward(token_tensor(rows, &self.base), pos, want_hidden);
        let lp = teacher_log_probs(out.logits, self.o.temperature);
        // Each student block is compared with the teacher block it descends from (depth pruning skips some).
        let hidden = self.origins.iter().filter_map(|&j| out.hidden.get(j).cloned()).map(|h| h.autodiff()).collect();
        let mut entries = Vec::new();
        let targets = match self.o.teacher_top_k {
            None => TeacherTargets::Full(lp.autodiff()),
            Some(k) => {
                let (tok, lps) = top_k(lp, k);
                let k = tok.dims()[1];
                let tok_v = tok.clone().into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| DistillError::Data(format!("{e:?}")))?;
                let lp_v = lps.clone().into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| DistillError::Data(format!("{e:?}")))?;
                let per_seq = self.seq_len * k;
                for (j, &i) in ids.iter().enumerate() {
                    let range = j * per_seq..(j + 1) * per_seq;
                    entries.push((i, (tok_v[range.clone()].to_vec(), lp_v[range].to_vec())));
                }
                TeacherTargets::TopK { ids: tok.autodiff(), log_probs: lps.autodiff() }
            }
        };
        Ok((targets, hidden, entries))
    }
}

/// One sequence's cached top-k targets.
type CacheEntry = (usize, (Vec<i64>, Vec<f32>));

/// The teacher must share the student's vocabulary, and hidden-state matching needs its blocks and width.
fn check_teacher(teacher: &Llama, student: &Llama, origins: &[usize], o: &DistillOptions) -> Result<()> {
    if teacher.dims.vocab_size != student.dims.vocab_size {
        return Err(DistillError::Shape { tensor: "token_embd.weight".into(), message: "teacher and student vocabularies differ".into() });
    }
    if o.hidden_mse_weight > 0.0 && (origins.iter().any(|&j| j >= teacher.n_blocks()) || teacher.dims.n_embd != student.dims.n_embd) {
        return Err(DistillError::Option { field: "hidden_mse_weight", message: "needs each student block's teacher block and the same n_embd in teacher and student".into() });
    }
    Ok(())
}

/// With the runtime teacher and `teacher_top_k`, a thread computing the targets of every sequence in the
/// order training first visits them from `cursor` on (the whole planned run), so the teacher works while
/// the student trains.
fn start_prefetch(tr: &Trainer<'_>, sequences: &[&[u32]], seed: u64, cursor: u64) -> Option<Prefetch> {
    let (Some(Teacher::Runtime(rt)), Some(k)) = (&tr.teacher, tr.o.teacher_top_k) else { return None };
    let o = tr.o;
    let end = o.steps.saturating_mul((o.batch_size * o.grad_accum) as u64);
    let mut order = DataOrder::new(sequences.len(), seed);
    let mut seen = vec![false; sequences.len()];
    let mut work = Vec::new();
    let mut c = cursor;
    while c < end && work.len() < sequences.len() {
        let i = order.at(c);
        if !std::mem::replace(&mut seen[i], true) {
            work.push((i, sequences[i].to_vec()));
        }
        c += 1;
    }
    Some(Prefetch::start(rt.clone(), work, o.temperature, k, 2 * o.batch_size * o.grad_accum))
}

/// The teacher as `o` asks for it: the native runtime or a burn module.
fn load_teacher(teacher: &Model, student: &Llama, origins: &[usize], o: &DistillOptions, base: &Device, seq_len: usize) -> Result<Teacher> {
    if o.runtime_teacher() {
        let rt = RuntimeTeacher::new(teacher)?;
        if rt.vocab_size() != student.dims.vocab_size {
            return Err(DistillError::Shape { tensor: "token_embd.weight".into(), message: "teacher and student vocabularies differ".into() });
        }
        return Ok(Teacher::Runtime(Arc::new(rt)));
    }
    let t = llama_from_model(teacher, base, Trainable { embeddings: false, blocks: false })?;
    check_teacher(&t, student, origins, o)?;
    let pos = Positions::new(seq_len, &t, base);
    Ok(Teacher::Burn(t, pos))
}

/// One micro-batch's loss terms: the objective's term (KL or cross-entropy), the next-token cross-entropy
/// added to the KL (`ce_weight` > 0) and the hidden-state MSE.
struct Terms {
    main: Tensor<1>,
    ce: Option<Tensor<1>>,
    mse: Option<Tensor<1>>,
}

fn micro_batch_loss(tr: &mut Trainer<'_>, llama: &Llama, ids: &[usize], rows: &[&[u32]]) -> Result<Terms> {
    let o = tr.o;
    if o.objective == Objective::NextToken {
        let out = llama.forward(token_tensor(rows, &tr.ad), &tr.pos_ad, false);
        return Ok(Terms { main: next_token_loss(out.logits, rows), ce: None, mse: None });
    }
    let (targets, teacher_hidden) = tr.targets(ids, rows)?;
    let out = llama.forward(token_tensor(rows, &tr.ad), &tr.pos_ad, o.hidden_mse_weight > 0.0);
    let ce = (o.ce_weight > 0.0).then(|| next_token_loss(out.logits.clone(), rows));
    Ok(Terms { main: kl_loss(out.logits, &targets, o.temperature), ce, mse: hidden_mse(&out.hidden, &teacher_hidden) })
}

/// Distill `teacher` into `student` (in place); with the next-token objective `teacher` may be `None`.
/// Returns what happened; `Err(Cancelled)` leaves the last checkpoint in the work folder.
pub fn train(teacher: Option<&Model>, student: &mut Model, o: &DistillOptions, cx: &TrainContext<'_>) -> Result<TrainReport> {
    // The budget counts from here: loading the student and the teacher is part of the time spent.
    let started = Instant::now();
    let base = device(o.backend)?;
    let ad = base.clone().autodiff();
    let threads = rayon::current_num_threads();
    let seq_len = o.seq_len.unwrap_or(usize::MAX).min(cx.sequences.iter().map(Vec::len).max().unwrap_or(0));
    let sequences: Vec<&[u32]> = cx.sequences.iter().filter(|s| s.len() >= seq_len).map(|s| &s[..seq_len]).collect();
    if sequences.is_empty() || seq_len < 2 {
        return Err(DistillError::Missing { what: "calibration sequences of at least 2 tokens (add a `calibration` section)" });
    }
    let tokens_per_step = (o.batch_size * o.grad_accum * seq_len) as u64;
    let mut report = TrainReport {
        steps_done: 0,
        steps_planned: o.steps,
        resumed_at_step: None,
        stopped_by_budget: false,
        seq_len,
        tokens_per_step,
        tokens: 0,
        elapsed_s: 0.0,
        tokens_per_s: 0.0,
        backend: format!("{:?}", o.backend).to_lowercase(),
        threads,
        objective: o.objective,
        teacher_engine: None,
        teacher_s: 0.0,
        teacher_thread_s: None,
        log: Vec::new(),
        changed: Vec::new(),
    };
    if o.steps == 0 {
        return Ok(report);
    }

    let mut llama = llama_from_model(student, &ad, Trainable { embeddings: o.train_embeddings, blocks: true })?;
    let origins: Vec<usize> = (0..llama.n_blocks()).map(|l| student.origin_of(l)).collect();
    let teacher_llama = match (o.objective, teacher) {
        (Objective::NextToken, _) => None,
        (Objective::Distill, None) => return Err(DistillError::Missing { what: "the recipe's input model as teacher" }),
        (Objective::Distill, Some(t)) => Some(load_teacher(t, &llama, &origins, o, &base, seq_len)?),
    };
    let mut optim: ModuleOptimizer = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(o.weight_decay as f32).init();
    let print = fingerprint(o, cx.seed, cx.sequences);
    let mut state = TrainState { fingerprint: print.clone(), ..Default::default() };
    if let Some(dir) = cx.work_dir {
        if let Some(saved) = checkpoint::saved_state(dir, &print) {
            (llama, optim) = checkpoint::resume(dir, llama, optim)?;
            report.resumed_at_step = Some(saved.step);
            state = saved;
        }
    }

    let mut tr = Trainer {
        o,
        pos_ad: Positions::new(seq_len, &llama, &ad),
        teacher: teacher_llama,
        base,
        ad,
        seq_len,
        top_k_cache: HashMap::new(),
        origins,
        teacher_s: 0.0,
        prefetch: None,
    };
    let schedule = Schedule { peak_lr: o.lr, warmup_steps: o.warmup_steps, total_steps: o.steps, min_frac: o.min_lr_frac };
    let mut order = DataOrder::new(sequences.len(), cx.seed);
    tr.prefetch = start_prefetch(&tr, &sequences, cx.seed, state.cursor);
    let elapsed_before = state.elapsed_s;
    let steps_before = state.step;
    (cx.progress)(state.step.min(o.steps), o.steps);

    while state.step < o.steps {
        if (cx.cancelled)() {
            return Err(DistillError::Cancelled);
        }
        if o.max_minutes.is_some_and(|m| elapsed_before + started.elapsed().as_secs_f64() >= m * 60.0) {
            report.stopped_by_budget = true;
            break;
        }
        let step_started = Instant::now();
        let lr = schedule.lr(state.step);
        let mut accum = GradientsAccumulator::<Llama>::new();
        let (mut kl_sum, mut ce_sum, mut mse_sum) = (0f64, 0f64, 0f64);
        for _ in 0..o.grad_accum {
            let ids: Vec<usize> = (0..o.batch_size as u64).map(|i| order.at(state.cursor + i)).collect();
            state.cursor += o.batch_size as u64;
            let rows: Vec<&[u32]> = ids.iter().map(|&i| sequences[i]).collect();
            let terms = micro_batch_loss(&mut tr, &llama, &ids, &rows)?;
            let mut loss = terms.main.clone();
            if let Some(ce) = terms.ce {
                ce_sum += f64::from(ce.clone().detach().into_scalar::<f32>());
                loss = loss + ce.mul_scalar(o.ce_weight);
            }
            if let Some(mse) = terms.mse {
                mse_sum += f64::from(mse.clone().detach().into_scalar::<f32>());
                loss = loss + mse.mul_scalar(o.hidden_mse_weight);
            }
            let loss = loss.div_scalar(o.grad_accum as f64);
            let grads = loss.backward();
            kl_sum += f64::from(terms.main.detach().into_scalar::<f32>());
            accum.accumulate(&llama, GradientsParams::from_grads(grads, &llama));
        }
        let n = o.grad_accum as f64;
        let (kl, ce, mse) = (kl_sum / n, ce_sum / n, mse_sum / n);
        let loss = kl + o.ce_weight * ce + o.hidden_mse_weight * mse;
        if !loss.is_finite() {
            return Err(DistillError::Diverged { step: state.step, loss });
        }
        let mut grads = accum.grads();
        let grad_norm = clip_global_norm(&llama, &mut grads, o.max_grad_norm);
        llama = optim.step(lr, llama, grads);

        let dt = step_started.elapsed().as_secs_f64();
        state.step += 1;
        state.tokens += tokens_per_step;
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        state.log.push(StepLog { step: state.step, loss, kl, ce, hidden_mse: mse, lr, grad_norm, tokens_per_s: tokens_per_step as f64 / dt.max(1e-9) });
        (cx.progress)(state.step, o.steps);
        let term = if o.objective == Objective::NextToken { "cross-entropy" } else { "KL" };
        (cx.status)(format!("loss {loss:.4} ({term} {kl:.4}), lr {lr:.2e}, {:.1} tok/s", tokens_per_step as f64 / dt.max(1e-9)));
        if let Some(dir) = cx.work_dir {
            if state.step.is_multiple_of(o.checkpoint_every) || state.step == o.steps {
                checkpoint::save(dir, &llama, &optim, &state)?;
            }
        }
    }
    // Stop the teacher's thread (it may be computing targets the run will not reach).
    let teacher_thread_s = tr.prefetch.take().map(|p| p.busy_s());
    if let (Some(dir), true) = (cx.work_dir, report.stopped_by_budget) {
        checkpoint::save(dir, &llama, &optim, &state)?;
    }

    let run_s = started.elapsed().as_secs_f64();
    report.steps_done = state.step;
    report.tokens = state.tokens;
    report.elapsed_s = state.elapsed_s;
    report.tokens_per_s = (state.step - steps_before) as f64 * tokens_per_step as f64 / run_s.max(1e-9);
    report.log = state.log;
    report.teacher_s = tr.teacher_s;
    report.teacher_thread_s = teacher_thread_s;
    report.teacher_engine = tr.teacher.as_ref().map(|t| match t {
        Teacher::Runtime(_) => "runtime",
        Teacher::Burn(..) => "burn",
    });
    report.changed = crate::load::write_back(&llama, student)?;
    Ok(report)
}

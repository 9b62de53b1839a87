//! The model worker: one thread that takes jobs from the bounded queue in order and generates token by
//! token over one KV cache on the inference thread pool, sending text deltas back. A job whose client has
//! gone (its receiver dropped) is stopped at the next token; each job has a token budget and a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeforge_runtime::{KvCache, LlamaRuntime};
use edgeforge_tokenizer::Tokenizer;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::sampling::{Sampler, SamplingParams};
use crate::text_stream::{Step, TextStream};

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS, an end-of-turn token, or a stop sequence.
    Stop,
    /// max_tokens, or the context is full.
    Length,
    /// The per-request time limit.
    Timeout,
    /// The client went away.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's `finish_reason` (a timeout is reported as `length`: the output was cut short).
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            _ => "length",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Timeout => "timeout",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub ttft: Option<Duration>,
    /// Time the job waited in the queue.
    pub queued: Duration,
}

#[derive(Debug)]
pub enum Event {
    Text(String),
    Done(Finished),
    Failed(String),
}

pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub deadline: Instant,
    pub enqueued: Instant,
    pub events: mpsc::Sender<Event>,
}

pub struct Engine {
    pub runtime: LlamaRuntime,
    pub tokenizer: Arc<Tokenizer>,
    pub stop_ids: Vec<u32>,
    pub ctx: usize,
    pub pool: rayon::ThreadPool,
    pub metrics: Arc<Metrics>,
    /// Test hook (`EDGEFORGE_SERVE_TEST_HOOKS=1` with `EDGEFORGE_SERVE_TEST_TOKEN_DELAY_MS`): a pause after
    /// each token, so tests can hold the worker busy and fill the queue deterministically.
    pub token_delay: Option<Duration>,
}

impl Engine {
    /// Serve jobs until every sender is gone (the server drained).
    pub fn run(self, mut jobs: mpsc::Receiver<Job>) {
        let mut cache = self.runtime.new_cache(self.ctx);
        while let Some(job) = jobs.blocking_recv() {
            self.metrics.queue_depth.dec();
            let events = job.events.clone();
            let queued = job.enqueued.elapsed();
            let result = self.pool.install(|| self.generate(&mut cache, &job, queued));
            let event = match result {
                Ok(done) => {
                    if done.reason == FinishReason::Cancelled {
                        self.metrics.cancelled.inc();
                    }
                    Event::Done(done)
                }
                Err(e) => Event::Failed(e),
            };
            let _ = events.blocking_send(event);
        }
    }

    fn generate(&self, cache: &mut KvCache, job: &Job, queued: Duration) -> Result<Finished, String> {
        let mut done = Finished { reason: FinishReason::Cancelled, prompt_tokens: job.prompt.len(), completion_tokens: 0, ttft: None, queued };
        if job.events.is_closed() {
            return Ok(done);
        }
        cache.clear();
        let t0 = Instant::now();
        let mut logits = self.runtime.forward(cache, &job.prompt, job.prompt.len().saturating_sub(1)).map_err(|e| e.to_string())?;
        self.metrics.prompt_tokens.inc_by(job.prompt.len() as u64);
        let mut sampler = Sampler::new(job.sampling);
        let mut text = TextStream::new(&self.tokenizer, &job.stop);
        let mut last = Instant::now();
        let mut cut = false;
        done.reason = loop {
            let token = sampler.sample(&logits);
            if self.stop_ids.contains(&token) {
                break FinishReason::Stop;
            }
            done.completion_tokens += 1;
            self.metrics.completion_tokens.inc();
            let now = Instant::now();
            match done.ttft {
                None => {
                    done.ttft = Some(now - t0);
                    self.metrics.ttft.observe((now - t0).as_secs_f64());
                }
                Some(_) => self.metrics.per_token.observe((now - last).as_secs_f64()),
            }
            last = now;
            let (delta, stopped) = match text.push(token).map_err(|e| e.to_string())? {
                Step::Text(s) => (s, false),
                Step::Stop(s) => (s, true),
            };
            cut = stopped;
            if !delta.is_empty() && job.events.blocking_send(Event::Text(delta)).is_err() {
                break FinishReason::Cancelled;
            }
            if let Some(reason) = self.limit_reached(job, cache, done.completion_tokens, stopped) {
                break reason;
            }
            if let Some(d) = self.token_delay {
                std::thread::sleep(d);
            }
            // The same logits vector every step: no allocation per token.
            self.runtime.forward_into(cache, &[token], 0, &mut logits).map_err(|e| e.to_string())?;
        };
        // Text held back for a stop sequence that never came is sent; after a stop sequence nothing is.
        if done.reason != FinishReason::Cancelled && !cut {
            let rest = text.finish().map_err(|e| e.to_string())?;
            if !rest.is_empty() {
                let _ = job.events.blocking_send(Event::Text(rest));
            }
        }
        Ok(done)
    }

    /// Whether generation ends after this token: a stop sequence, the budget, the deadline, a full
    /// context, or a client gone.
    fn limit_reached(&self, job: &Job, cache: &KvCache, generated: usize, stopped: bool) -> Option<FinishReason> {
        if stopped {
            Some(FinishReason::Stop)
        } else if generated >= job.max_tokens || cache.len() >= cache.capacity() {
            Some(FinishReason::Length)
        } else if Instant::now() >= job.deadline {
            Some(FinishReason::Timeout)
        } else if job.events.is_closed() {
            Some(FinishReason::Cancelled)
        } else {
            None
        }
    }
}

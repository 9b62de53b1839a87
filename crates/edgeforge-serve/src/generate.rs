//! One generation request: checked against the limits, put on the bounded queue (429 when full), then
//! answered whole or streamed as server-sent events. Dropping the response (the client went away) drops
//! the event receiver, which the worker notices at the next token. The request's log line is written when
//! the generation ends, with its token counts and timings.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::api::{AppState, LoggedByGeneration, RequestId};
use crate::engine::{Event, Finished, Job};
use crate::openai::{ApiError, CommonParams, Kind, Meta};

/// Writes the request's log line when dropped: at the end of the generation, or when the client left.
struct GenLog {
    rid: String,
    path: &'static str,
    t0: Instant,
    stream: bool,
    finished: Option<Finished>,
    error: Option<String>,
}

impl Drop for GenLog {
    fn drop(&mut self) {
        let f = self.finished.as_ref();
        crate::log::event(
            "request",
            json!({
                "request_id": self.rid, "method": "POST", "path": self.path, "status": 200, "stream": self.stream,
                "duration_ms": self.t0.elapsed().as_secs_f64() * 1000.0,
                "queue_ms": f.map(|f| f.queued.as_secs_f64() * 1000.0),
                "ttft_ms": f.and_then(|f| f.ttft).map(|t| t.as_secs_f64() * 1000.0),
                "prompt_tokens": f.map(|f| f.prompt_tokens), "completion_tokens": f.map(|f| f.completion_tokens),
                "finish_reason": f.map_or(if self.error.is_some() { "error" } else { "cancelled" }, |f| f.reason.name()),
                "error": self.error,
            }),
        );
    }
}

fn request_seed(rid: &str) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    rid.bytes().fold(nanos, |h, b| h.rotate_left(5) ^ u64::from(b))
}

/// Check, enqueue and answer one generation.
pub async fn start(s: &Arc<AppState>, rid: RequestId, kind: Kind, prompt: Vec<u32>, p: &CommonParams, default_max: usize) -> Result<Response, ApiError> {
    if s.draining.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("draining: the server is shutting down"));
    }
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("n must be 1", Some("n")));
    }
    let ctx = s.limits.ctx;
    if prompt.is_empty() || prompt.len() >= ctx {
        let msg = format!("the prompt is {} tokens; this server's context is {ctx} tokens (at least one must be left to generate)", prompt.len());
        return Err(ApiError::bad_request(msg, Some("messages")).with_code("context_length_exceeded"));
    }
    let asked = p.max_tokens.or(p.max_completion_tokens).unwrap_or(default_max);
    if asked == 0 {
        return Err(ApiError::bad_request("max_tokens must be at least 1", Some("max_tokens")));
    }
    let max_tokens = asked.min(s.limits.max_tokens).min(ctx - prompt.len());
    let sampling = crate::api::sampling(p, request_seed(&rid.0))?;
    let stop = p.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > 4 {
        return Err(ApiError::bad_request("at most 4 stop sequences", Some("stop")));
    }
    let (tx, rx) = mpsc::channel(256);
    let now = Instant::now();
    let job = Job { prompt, sampling, max_tokens, stop, deadline: now + s.limits.timeout, enqueued: now, events: tx };
    s.metrics.queue_depth.inc();
    if let Err(e) = s.jobs.try_send(job) {
        s.metrics.queue_depth.dec();
        return Err(match e {
            TrySendError::Full(_) => {
                s.metrics.queue_rejections.inc();
                ApiError::queue_full(s.limits.max_queue)
            }
            TrySendError::Closed(_) => ApiError::unavailable("the model worker has stopped"),
        });
    }
    let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    let meta = Meta { kind, id: format!("{prefix}-{}", rid.0), created: crate::api::unix_now(), model: s.model.clone() };
    let path = if kind == Kind::Chat { "/v1/chat/completions" } else { "/v1/completions" };
    let log = GenLog { rid: rid.0, path, t0: now, stream: p.stream, finished: None, error: None };
    let mut resp = if p.stream { stream(meta, rx, log) } else { whole(meta, rx, log).await? };
    resp.extensions_mut().insert(LoggedByGeneration);
    Ok(resp)
}

/// Wait for the whole generation and answer with one JSON response.
async fn whole(meta: Meta, mut rx: mpsc::Receiver<Event>, mut log: GenLog) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(f) => {
                let body = meta.response(&text, f.reason.openai(), f.prompt_tokens, f.completion_tokens);
                log.finished = Some(f);
                return Ok(Json(body).into_response());
            }
            Event::Failed(e) => {
                log.error = Some(e.clone());
                return Err(ApiError::internal(format!("generation failed: {e}")));
            }
        }
    }
    Err(ApiError::internal("the model worker stopped before the generation ended"))
}

struct StreamState {
    meta: Meta,
    rx: mpsc::Receiver<Event>,
    log: GenLog,
    /// The finish chunk went out: `[DONE]` is next.
    finished: bool,
    done: bool,
}

/// Server-sent events: one chunk per text delta, a last chunk with the finish reason and usage, then
/// `[DONE]` (an error mid-stream is sent as an `{"error": …}` event).
fn stream(meta: Meta, rx: mpsc::Receiver<Event>, log: GenLog) -> Response {
    let st = StreamState { meta, rx, log, finished: false, done: false };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if st.finished {
            st.done = true;
            return Some((Ok(SseEvent::default().data("[DONE]")), st));
        }
        let ev = match st.rx.recv().await {
            Some(Event::Text(t)) => SseEvent::default().data(st.meta.chunk(&t, None).to_string()),
            Some(Event::Done(f)) => {
                let data = st.meta.chunk("", Some((f.reason.openai(), f.prompt_tokens, f.completion_tokens)));
                st.log.finished = Some(f);
                st.finished = true;
                SseEvent::default().data(data.to_string())
            }
            Some(Event::Failed(e)) => {
                st.log.error = Some(e.clone());
                st.done = true;
                SseEvent::default().data(ApiError::internal(format!("generation failed: {e}")).body().to_string())
            }
            None => return None,
        };
        Some((Ok::<_, Infallible>(ev), st))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

//! The HTTP API (axum): OpenAI's /v1/completions, /v1/chat/completions (streamed by server-sent events or
//! whole) and /v1/models; /healthz, /readyz, /metrics. Every request gets an id (`x-request-id`), is
//! counted by endpoint and status, and is logged as one JSON line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use edgeforge_tokenizer::Tokenizer;
use serde_json::json;
use tokio::sync::mpsc;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::engine::Job;
use crate::metrics::Metrics;
use crate::openai::{ApiError, ChatRequest, CommonParams, CompletionRequest, Kind};
use crate::sampling::SamplingParams;

/// Per-request limits set on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_tokens: usize,
    pub ctx: usize,
    pub timeout: Duration,
    pub max_queue: usize,
}

pub struct AppState {
    pub jobs: mpsc::Sender<Job>,
    pub metrics: Arc<Metrics>,
    pub model: String,
    pub tokenizer: Arc<Tokenizer>,
    pub chat: ChatTemplate,
    pub chat_source: &'static str,
    pub specials: Vec<(String, u32)>,
    pub limits: Limits,
    pub draining: AtomicBool,
    /// What the sandbox enforces, shown by /healthz.
    pub sandbox: Mutex<serde_json::Value>,
    pub next_id: AtomicU64,
    pub started: u64,
}

/// The request id the middleware gave a request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Marks a response whose request the generation path logs itself (when the generation ends).
#[derive(Debug, Clone, Copy)]
pub struct LoggedByGeneration;

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

const ENDPOINTS: [&str; 6] = ["/v1/completions", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics"];

pub fn router(state: Arc<AppState>, test_hooks: bool) -> Router {
    let mut r = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if test_hooks {
        r = r.route("/debug/sandbox-probe", post(crate::probe::probe));
    }
    r.fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Request id, metrics and the log line of every request.
async fn observe(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let rid = format!("req-{:x}-{n}", s.started);
    req.extensions_mut().insert(RequestId(rid.clone()));
    let path = req.uri().path().to_owned();
    let endpoint = ENDPOINTS.iter().find(|e| **e == path).copied().unwrap_or("other");
    let method = req.method().to_string();
    let t0 = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    s.metrics.count_request(endpoint, status);
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if resp.extensions().get::<LoggedByGeneration>().is_none() {
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        crate::log::event("request", json!({ "request_id": rid, "method": method, "path": path, "status": status, "duration_ms": ms }));
    }
    resp
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}"), None))
}

async fn completions(State(s): State<Arc<AppState>>, Extension(rid): Extension<RequestId>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&body)?;
    let mut prompts = req.prompt.into_vec();
    if prompts.len() != 1 {
        return Err(ApiError::bad_request(format!("{} prompts given; this server takes one per request", prompts.len()), Some("prompt")));
    }
    let prompt = prompts.remove(0);
    let ids = s.tokenizer.encode(&prompt, true).map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt")))?;
    crate::generate::start(&s, rid, Kind::Completion, ids, &req.params, 16).await
}

async fn chat_completions(State(s): State<Arc<AppState>>, Extension(rid): Extension<RequestId>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&body)?;
    let messages = req
        .messages
        .into_iter()
        .map(|m| Ok(ChatMessage { role: m.role, content: m.content.map(|c| c.text()).transpose()?.unwrap_or_default() }))
        .collect::<Result<Vec<_>, ApiError>>()?;
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages is empty", Some("messages")));
    }
    let text = s.chat.render(&messages).map_err(|e| ApiError::bad_request(format!("chat template: {e}"), Some("messages")))?;
    let mut ids = Vec::new();
    if s.tokenizer.add_bos() {
        ids.extend(s.tokenizer.bos_id());
    }
    let body = crate::chat::encode_with_specials(&s.tokenizer, &s.specials, &text).map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?;
    if ids.first().is_some_and(|b| body.first() == Some(b)) {
        ids.clear();
    }
    ids.extend(body);
    crate::generate::start(&s, rid, Kind::Chat, ids, &req.params, s.limits.max_tokens).await
}

async fn models(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({ "object": "list", "data": [{ "id": s.model, "object": "model", "created": s.started, "owned_by": "edgeforge" }] }))
}

async fn healthz(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let sandbox = s.sandbox.lock().map(|v| v.clone()).unwrap_or_default();
    Json(json!({ "status": "ok", "model": s.model, "sandbox": sandbox }))
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        return ApiError::unavailable("draining: the server is shutting down").into_response();
    }
    (StatusCode::OK, Json(json!({ "status": "ready", "queue_depth": s.metrics.queue_depth.get() }))).into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let body = s.metrics.encode();
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// The sampling parameters of a request, checked (OpenAI's ranges).
pub fn sampling(p: &CommonParams, fallback_seed: u64) -> Result<SamplingParams, ApiError> {
    let temperature = p.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_request(format!("temperature {temperature} is outside [0, 2]"), Some("temperature")));
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(format!("top_p {top_p} is outside (0, 1]"), Some("top_p")));
    }
    Ok(SamplingParams { temperature, top_p, top_k: p.top_k.unwrap_or(0), seed: p.seed.unwrap_or(fallback_seed) })
}

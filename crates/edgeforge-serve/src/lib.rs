//! edgeforge-serve: `edgeforge serve DIR`, an OpenAI-compatible HTTP server for an export folder.
//! 1. verify every file of the folder against manifest.json (and its ed25519 signature) before loading
//!    anything, refusing to start on any mismatch (`artifact`);
//! 2. load the GGUF artifact into the runtime, on a loading thread pool that ends before serving;
//! 3. sandbox the process (`sandbox`: landlock, rlimits, seccomp) unless told not to;
//! 4. serve /v1/completions, /v1/chat/completions, /v1/models (`api`, `generate`, `openai`) from one model
//!    worker fed by a bounded queue (`engine`), with /metrics, /healthz, /readyz and JSON request logs;
//! 5. on SIGTERM or Ctrl-C stop accepting, finish what is in flight, exit.

mod api;
mod artifact;
mod chat;
mod engine;
mod error;
mod generate;
mod log;
mod metrics;
mod openai;
mod probe;
mod sampling;
mod sandbox;
mod text_stream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

pub use artifact::{verify_dir, Verified};
pub use error::ServeError;
pub use sampling::{Sampler, SamplingParams};

/// The environment variable that routes the test-only /debug/sandbox-probe endpoint.
pub const TEST_HOOKS_ENV: &str = "EDGEFORGE_SERVE_TEST_HOOKS";

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub dir: PathBuf,
    /// Address to listen on, e.g. `127.0.0.1:8080` (port 0: any free port, logged at startup).
    pub listen: String,
    pub public_key: Option<PathBuf>,
    /// Inference threads (None: all cores).
    pub threads: Option<usize>,
    /// Requests that may wait for the model; more are refused with 429.
    pub max_queue: usize,
    /// Largest max_tokens a request gets.
    pub max_tokens: usize,
    /// Context (KV cache) length in tokens (None: the model's, at most 2048).
    pub ctx: Option<usize>,
    /// Time limit of one request, queueing included.
    pub timeout: Duration,
    /// How block-quantized weights round the activations they multiply.
    pub rounding: edgeforge_runtime::Rounding,
    /// Apply the sandbox after loading (off: `--no-sandbox`).
    pub sandbox: bool,
}

fn thread_pool(threads: usize, name: &'static str) -> Result<rayon::ThreadPool, ServeError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|e| ServeError::Io { what: "thread pool", source: std::io::Error::other(e) })
}

/// Verify, load, sandbox and serve until SIGTERM or Ctrl-C.
pub fn serve(o: &ServeOptions) -> Result<(), ServeError> {
    let verified = artifact::verify_dir(&o.dir, o.public_key.as_deref())?;
    let sig = verified.signature.map(|s| format!("{s:?}").to_lowercase());
    log::event("verified", json!({ "dir": o.dir, "files": verified.files_checked, "artifact": verified.gguf, "signature": sig }));
    let threads = o.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The loading pool's threads end with it, before the sandbox: every serving thread starts after.
    let mut loaded = thread_pool(threads, "edgeforge-load")?.install(|| artifact::load(&verified))?;
    loaded.runtime.set_rounding(o.rounding);
    let ctx = context_length(o.ctx, loaded.context_length)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let listener = std::net::TcpListener::bind(&o.listen).map_err(|source| ServeError::Listen { addr: o.listen.clone(), source })?;
    listener.set_nonblocking(true).map_err(|source| ServeError::Io { what: "listener", source })?;
    let mut report = json!({ "enabled": o.sandbox });
    if o.sandbox {
        let (landlock, all_threads) = sandbox::restrict_filesystem(&o.dir)?;
        report["landlock_all_threads"] = json!(all_threads);
        if landlock == "not-enforced" {
            log::event("warning", json!({ "message": "landlock is not supported by this kernel: the filesystem is not restricted (seccomp and rlimits still apply)" }));
        }
        report["landlock"] = json!(landlock);
    } else {
        log::event("warning", json!({ "message": "--no-sandbox: the server runs without landlock, seccomp or resource limits" }));
    }
    let pool = thread_pool(threads, "edgeforge-infer")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io { what: "async runtime", source })?;
    let engine = engine::Engine {
        stop_ids: chat::stop_ids(&loaded.tokenizer),
        tokenizer: Arc::new(loaded.tokenizer),
        runtime: loaded.runtime,
        ctx,
        pool,
        metrics: metrics.clone(),
        token_delay: test_hooks().then(|| std::env::var("EDGEFORGE_SERVE_TEST_TOKEN_DELAY_MS").ok()?.parse().ok().map(Duration::from_millis)).flatten(),
    };
    let chat = chat::ChatTemplate::new(loaded.chat_template, &engine.tokenizer).map_err(|e| ServeError::BadInput(format!("{}: tokenizer.chat_template: {e}", verified.gguf.display())))?;
    let limits = api::Limits { max_tokens: o.max_tokens, ctx, timeout: o.timeout, max_queue: o.max_queue };
    rt.block_on(run(o, listener, engine, chat, loaded.name, limits, report))
}

/// Whether the test hooks are on (`EDGEFORGE_SERVE_TEST_HOOKS=1`).
fn test_hooks() -> bool {
    std::env::var(TEST_HOOKS_ENV).is_ok_and(|v| v == "1")
}

fn context_length(asked: Option<usize>, model: usize) -> Result<usize, ServeError> {
    let model = if model == 0 { usize::MAX } else { model };
    match asked {
        Some(c) if c > model => Err(ServeError::BadInput(format!("--ctx {c} is longer than the model's context of {model} tokens (fix: use at most {model})"))),
        Some(0) => Err(ServeError::BadInput("--ctx must be positive".into())),
        Some(c) => Ok(c),
        None => Ok(model.min(2048)),
    }
}

async fn run(o: &ServeOptions, listener: std::net::TcpListener, engine: engine::Engine, chat: chat::ChatTemplate, model: String, limits: api::Limits, mut report: serde_json::Value) -> Result<(), ServeError> {
    let io = |what: &'static str| move |source| ServeError::Io { what, source };
    let (jobs, rx) = mpsc::channel(o.max_queue.max(1));
    let metrics = engine.metrics.clone();
    let tokenizer = engine.tokenizer.clone();
    let worker = std::thread::Builder::new().name("edgeforge-model".into()).spawn(move || engine.run(rx)).map_err(io("model worker"))?;
    // Signal handlers are registered before seccomp (they need a socket pair).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(io("listener"))?;
    let addr = listener.local_addr().map_err(io("listener"))?;
    if o.sandbox {
        let nofile = (o.max_queue as u64 + 64).max(256);
        let locked = sandbox::lock_down(metrics.status_bytes("VmSize:"), nofile)?;
        if let (Some(r), Some(l)) = (report.as_object_mut(), locked.as_object()) {
            r.extend(l.clone());
        }
    }
    let state = Arc::new(api::AppState {
        jobs,
        metrics,
        specials: chat::special_tokens(&tokenizer),
        tokenizer,
        chat_source: chat.source,
        chat,
        model: model.clone(),
        limits,
        draining: AtomicBool::new(false),
        sandbox: Mutex::new(report.clone()),
        next_id: AtomicU64::new(0),
        started: api::unix_now(),
    });
    log::event("listening", json!({ "addr": addr.to_string(), "model": model, "ctx": limits.ctx, "max_queue": limits.max_queue, "chat_template": state.chat_source, "sandbox": report }));
    let app = api::router(state.clone(), test_hooks());
    let drain_state = state.clone();
    let shutdown = async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        drain_state.draining.store(true, Ordering::Relaxed);
        log::event("draining", json!({ "queue_depth": drain_state.metrics.queue_depth.get() }));
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(io("serving"))?;
    drop(state);
    // The last sender is gone with the state: the worker finishes its queue and returns.
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    log::event("stopped", json!({}));
    Ok(())
}

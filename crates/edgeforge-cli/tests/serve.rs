//! `edgeforge serve` through the binary on 127.0.0.1 with an ephemeral port, on a tiny model the test
//! writes into an export folder with manifest.json (optionally signed): the API, tampering refused at
//! startup, the sandbox, the bounded queue, cancellation, graceful drain, and OpenAI's Python client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeforge_targets::manifest;
use edgeforge_tests::{write_tiny_gguf, TinySpec};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_edgeforge");

/// An export folder: the tiny model as model.gguf and manifest.json, signed with `key` when given.
fn export_dir(root: &Path, key: Option<&ed25519_dalek::SigningKey>) -> PathBuf {
    let dir = root.join("export");
    std::fs::create_dir_all(&dir).unwrap();
    let gguf = write_tiny_gguf(&dir, "model.gguf", &TinySpec::default());
    let m = manifest::build(&dir, &[gguf], None, vec![json!({"format": "gguf", "path": "model.gguf"})], json!({})).unwrap();
    manifest::write(&dir, &m, key).unwrap();
    dir
}

fn key_pair(root: &Path, seed: u8) -> (ed25519_dalek::SigningKey, PathBuf) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = root.join(format!("key{seed}.pub"));
    std::fs::write(&public, hex::encode(key.verifying_key().to_bytes())).unwrap();
    (key, public)
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Server {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg(dir).args(["--listen", "127.0.0.1:0", "--threads", "1"]).args(args);
        cmd.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut s = Server { child, addr: String::new(), lines, log: Vec::new() };
        let listening = s.wait_for("\"event\":\"listening\"");
        s.addr = serde_json::from_str::<Value>(&listening).unwrap()["addr"].as_str().unwrap().to_owned();
        s
    }

    /// The next log line containing `needle` (60 s at most: a generous bound on start-up, not a timing check).
    fn wait_for(&mut self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        while let Ok(line) = self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no log line with {needle}; log so far:\n{}", self.log.join("\n"));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut resp = agent().get(&self.url(path)).call().unwrap();
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut resp = agent().post(&self.url(path)).header("content-type", "application/json").send(body.to_string()).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{'])).and_then(|l| l.rsplit(' ').next()).map_or(0.0, |v| v.parse().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// The `data:` payloads of a server-sent-event body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect()
}

fn stream_text(server: &Server, path: &str, body: &Value) -> (Vec<Value>, String) {
    let mut resp = agent().post(&server.url(path)).header("content-type", "application/json").send(body.to_string()).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/event-stream"));
    let data = sse_data(&resp.body_mut().read_to_string().unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text = chunks.iter().map(|c| c["choices"][0]["text"].as_str().or(c["choices"][0]["delta"]["content"].as_str()).unwrap_or("")).collect();
    (chunks, text)
}

#[test]
fn serves_the_openai_api_metrics_and_health_on_a_tiny_model() {
    let root = tempfile::tempdir().unwrap();
    let dir = export_dir(root.path(), None);
    let s = Server::start(&dir, &[], &[]);
    let (status, models) = s.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&models).unwrap()["data"][0]["id"], "model.gguf");

    let req = json!({"prompt": "the cat", "max_tokens": 8, "temperature": 0});
    let (status, a) = s.post("/v1/completions", &req);
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["object"], "text_completion");
    let (p, c) = (a["usage"]["prompt_tokens"].as_u64().unwrap(), a["usage"]["completion_tokens"].as_u64().unwrap());
    assert!(p >= 2 && (1..=8).contains(&c), "{a}");
    assert_eq!(a["usage"]["total_tokens"].as_u64(), Some(p + c));
    // Greedy is deterministic, and the stream carries the same text.
    let (_, b) = s.post("/v1/completions", &req);
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    let (chunks, streamed) = stream_text(&s, "/v1/completions", &json!({"prompt": "the cat", "max_tokens": 8, "temperature": 0, "stream": true}));
    assert_eq!(streamed, a["choices"][0]["text"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], a["choices"][0]["finish_reason"]);

    // Seeded sampling: the same seed gives the same text; 24 tokens at temperature 1.5 from other seeds differ.
    let seeded = |seed: u64| s.post("/v1/completions", &json!({"prompt": "the", "max_tokens": 24, "temperature": 1.5, "seed": seed})).1["choices"][0]["text"].clone();
    assert_eq!(seeded(1), seeded(1));
    assert!((2..6).any(|k| seeded(k) != seeded(1)));

    let (status, chat) = s.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0}));
    assert_eq!(status, 200, "{chat}");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    let (chunks, streamed) = stream_text(&s, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0, "stream": true}));
    assert_eq!(streamed, chat["choices"][0]["message"]["content"].as_str().unwrap());
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));

    // Errors in OpenAI's shape.
    for (path, body, param) in [
        ("/v1/completions", json!({"prompt": "x", "temperature": 3}), "temperature"),
        ("/v1/completions", json!({"prompt": "x", "top_p": 0}), "top_p"),
        ("/v1/chat/completions", json!({"messages": []}), "messages"),
        ("/v1/completions", json!({"prompt": "x", "max_tokens": 0}), "max_tokens"),
    ] {
        let (status, e) = s.post(path, &body);
        assert_eq!(status, 400, "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(e["error"]["param"], param, "{e}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, e) = s.post("/v1/completions", &json!({"prompt": "x ".repeat(400), "max_tokens": 4}));
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("context_length_exceeded")), "{e}");
    let (status, body) = s.get("/v1/nothing");
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "not_found");

    assert_eq!(s.get("/healthz").0, 200);
    assert_eq!(s.get("/readyz").0, 200);
    let (_, metrics) = s.get("/metrics");
    for name in ["edgeforge_serve_requests_total{", "edgeforge_serve_time_to_first_token_seconds_bucket", "edgeforge_serve_time_per_output_token_seconds_count", "edgeforge_serve_queue_depth ", "edgeforge_serve_resident_memory_bytes "] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(s.metric("edgeforge_serve_completion_tokens_total") >= 8.0);
    assert!(s.metric("edgeforge_serve_resident_memory_bytes") > 1e6);
    assert!(metrics.contains("endpoint=\"/v1/completions\",status=\"400\""), "{metrics}");
}

#[test]
fn request_logs_are_json_lines_with_request_ids() {
    let root = tempfile::tempdir().unwrap();
    let dir = export_dir(root.path(), None);
    let mut s = Server::start(&dir, &["--no-sandbox"], &[]);
    let resp = agent().post(&s.url("/v1/completions")).header("content-type", "application/json").send(json!({"prompt": "the", "max_tokens": 3}).to_string()).unwrap();
    let rid = resp.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    let line = s.wait_for(&format!("\"request_id\":\"{rid}\""));
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((v["event"].as_str(), v["path"].as_str(), v["status"].as_u64()), (Some("request"), Some("/v1/completions"), Some(200)), "{v}");
    assert!(v["completion_tokens"].as_u64().is_some() && v["ttft_ms"].as_f64().is_some() && v["prompt_tokens"].as_u64() >= Some(1), "{v}");
    assert!(s.log.iter().any(|l| l.contains("--no-sandbox")), "no warning about --no-sandbox:\n{}", s.log.join("\n"));
}

/// Start the server on `dir` and expect exit 2 with one stderr line naming `file`.
fn refused(dir: &Path, args: &[&str], file: &str) {
    let out = Command::new(BIN).arg("serve").arg(dir).args(["--listen", "127.0.0.1:0"]).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("edgeforge: error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(file) && errors[0].contains("refusing to serve"), "{stderr}");
    assert!(!stderr.contains("\"listening\""), "{stderr}");
}

#[test]
fn tampered_exports_are_refused_at_startup_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(root.path(), 1);
    let (_, wrong) = key_pair(root.path(), 2);
    let dir = export_dir(root.path(), Some(&key));
    let pk = public.to_str().unwrap();
    // The untouched folder verifies (the server starts), with the right key only.
    drop(Server::start(&dir, &["--public-key", pk], &[]));
    refused(&dir, &["--public-key", wrong.to_str().unwrap()], "manifest.sig");
    refused(&dir, &[], "manifest.sig");

    // A flipped byte in the GGUF.
    let gguf = dir.join("model.gguf");
    let mut bytes = std::fs::read(&gguf).unwrap();
    let i = bytes.len() - 100;
    bytes[i] ^= 0x01;
    std::fs::write(&gguf, &bytes).unwrap();
    refused(&dir, &["--public-key", pk], "model.gguf");
    bytes[i] ^= 0x01;
    std::fs::write(&gguf, &bytes).unwrap();

    // An edited manifest: the signature no longer matches it.
    let mpath = dir.join("manifest.json");
    let original = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(&mpath, original.replace("\"schema_version\": 1", "\"schema_version\": 1 ")).unwrap();
    refused(&dir, &["--public-key", pk], "manifest.sig");
    std::fs::write(&mpath, &original).unwrap();

    // Unsigned: a manifest whose hash was edited names the file it no longer matches; an extra file is named.
    std::fs::remove_file(dir.join("manifest.sig")).unwrap();
    let mut m: Value = serde_json::from_str(&original).unwrap();
    m["files"][0]["sha256"] = json!("0".repeat(64));
    std::fs::write(&mpath, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    refused(&dir, &[], "model.gguf");
    std::fs::write(&mpath, &original).unwrap();
    std::fs::write(dir.join("extra.bin"), b"x").unwrap();
    refused(&dir, &[], "extra.bin");
}

fn probe(s: &Server, open: &Path, exec: &str) -> Value {
    let (status, v) = s.post("/debug/sandbox-probe", &json!({"open": open, "exec": exec}));
    assert_eq!(status, 200, "{v}");
    v
}

#[test]
fn once_sandboxed_the_server_cannot_open_files_outside_its_folder_nor_exec_but_still_serves() {
    let root = tempfile::tempdir().unwrap();
    let dir = export_dir(root.path(), None);
    let outside = root.path().join("outside.txt");
    std::fs::write(&outside, "secret").unwrap();
    let hooks = [("EDGEFORGE_SERVE_TEST_HOOKS", "1")];

    // Without the sandbox the probe succeeds at both: it can tell.
    let open = Server::start(&dir, &["--no-sandbox"], &hooks);
    let v = probe(&open, &outside, "/bin/true");
    assert_eq!((v["open"]["ok"].as_bool(), v["exec"]["ok"].as_bool()), (Some(true), Some(true)), "{v}");
    drop(open);

    let s = Server::start(&dir, &[], &hooks);
    let health: Value = serde_json::from_str(&s.get("/healthz").1).unwrap();
    let v = probe(&s, &outside, "/bin/true");
    // seccomp: no process can be started (fork without CLONE_THREAD is refused with EPERM).
    assert_eq!(v["exec"]["ok"], false, "{v}");
    assert!(matches!(v["exec"]["errno"].as_i64(), Some(1 | 13)), "exec: {v}");
    match health["sandbox"]["landlock"].as_str() {
        Some("fully-enforced" | "partially-enforced") => {
            assert_eq!(v["open"]["ok"], false, "{v}");
            assert_eq!(v["open"]["errno"].as_i64(), Some(13), "open outside the folder: {v}");
            let inside = probe(&s, &dir.join("model.gguf"), "/bin/true");
            assert_eq!(inside["open"]["ok"], true, "the folder itself stays readable: {inside}");
        }
        other => println!("SKIP landlock half of the sandbox test: this kernel ({}) does not enforce landlock (status {other:?})", kernel()),
    }
    assert_eq!(health["sandbox"]["seccomp"], "allow-list", "{health}");
    let (status, r) = s.post("/v1/completions", &json!({"prompt": "the cat", "max_tokens": 4, "temperature": 0}));
    assert_eq!(status, 200, "sandboxed server stopped answering: {r}");
    let (chunks, _) = stream_text(&s, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": true}));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().map(|n| n >= 1), Some(true));
}

fn kernel() -> String {
    Command::new("uname").arg("-r").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

/// A raw HTTP/1.1 request on its own connection, for a client that reads a little and then hangs up.
fn raw_post(addr: &str, path: &str, body: &Value) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    let b = body.to_string();
    write!(c, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()).unwrap();
    c
}

/// Read from `c` until `needle` has been seen.
fn read_until(c: &mut TcpStream, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before {needle}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

fn wait_metric(s: &Server, name: &str, at_least: f64) {
    let end = Instant::now() + Duration::from_secs(60);
    while s.metric(name) < at_least {
        assert!(Instant::now() < end, "{name} never reached {at_least}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_queue_answers_429_a_gone_client_is_cancelled_and_sigterm_drains() {
    let root = tempfile::tempdir().unwrap();
    let dir = export_dir(root.path(), None);
    // Each token takes at least 20 ms (test hook), so one request holds the worker while others queue.
    let hooks = [("EDGEFORGE_SERVE_TEST_HOOKS", "1"), ("EDGEFORGE_SERVE_TEST_TOKEN_DELAY_MS", "20")];
    let mut s = Server::start(&dir, &["--max-queue", "1", "--ctx", "128"], &hooks);
    let long = json!({"prompt": "the", "max_tokens": 60, "temperature": 0.8, "seed": 3, "stream": true});

    // A client that reads the first chunk and hangs up: its generation stops.
    let mut gone = raw_post(&s.addr, "/v1/completions", &long);
    read_until(&mut gone, "data: ");
    drop(gone);
    wait_metric(&s, "edgeforge_serve_cancelled_total", 1.0);

    // One running, one waiting: the third is refused.
    let mut running = raw_post(&s.addr, "/v1/completions", &long);
    read_until(&mut running, "data: ");
    let waiting = raw_post(&s.addr, "/v1/completions", &long);
    wait_metric(&s, "edgeforge_serve_queue_depth", 1.0);
    let (status, e) = s.post("/v1/completions", &json!({"prompt": "the", "max_tokens": 2}));
    assert_eq!(status, 429, "{e}");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert_eq!(s.metric("edgeforge_serve_queue_rejections_total"), 1.0);

    // SIGTERM: both accepted requests still finish, then the process exits 0.
    assert!(Command::new("kill").args(["-TERM", &s.child.id().to_string()]).status().unwrap().success());
    s.wait_for("\"event\":\"draining\"");
    for mut c in [running, waiting] {
        let body = read_until(&mut c, "data: [DONE]");
        assert!(body.contains("\"finish_reason\":\"length\""), "{body}");
    }
    s.wait_for("\"event\":\"stopped\"");
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_request_is_cut_at_its_time_limit() {
    let root = tempfile::tempdir().unwrap();
    let dir = export_dir(root.path(), None);
    // 100 ms per token (test hook) against a 1 s limit: far fewer than the 200 tokens asked for.
    let hooks = [("EDGEFORGE_SERVE_TEST_HOOKS", "1"), ("EDGEFORGE_SERVE_TEST_TOKEN_DELAY_MS", "100")];
    let mut s = Server::start(&dir, &["--timeout-s", "1"], &hooks);
    let (status, r) = s.post("/v1/completions", &json!({"prompt": "the", "max_tokens": 200, "temperature": 0.8, "seed": 3}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
    let n = r["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..200).contains(&n), "{r}");
    let line = s.wait_for("\"finish_reason\":\"timeout\"");
    assert!(line.contains(&format!("\"completion_tokens\":{n}")), "{line}");
}

#[test]
fn openai_python_client_talks_to_the_server() {
    let has_openai = Command::new("python3").args(["-c", "import openai"]).status().is_ok_and(|st| st.success());
    assert!(has_openai, "the `openai` Python package is missing: scripts/test.sh installs it (pip install openai==3.63.0)");
    let root = tempfile::tempdir().unwrap();
    let dir = export_dir(root.path(), None);
    let s = Server::start(&dir, &[], &[]);
    let script = edgeforge_tests::repo_root().join("tests/python/openai_client.py");
    let out = Command::new("python3").arg(script).arg(s.url("/v1")).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "model.gguf");
    assert_eq!(v["error"]["param"], "temperature", "{v}");
}

#[test]
fn the_reference_model_answers_a_chat_through_its_own_gguf_template() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("export");
    std::fs::create_dir_all(&dir).unwrap();
    let gguf = dir.join("model.gguf");
    std::fs::copy(edgeforge_tests::reference_model(), &gguf).unwrap();
    let m = manifest::build(&dir, &[gguf], None, vec![], json!({})).unwrap();
    manifest::write(&dir, &m, None).unwrap();
    let mut s = Server::start(&dir, &[], &[]);
    let listening: Value = serde_json::from_str(s.log.iter().find(|l| l.contains("\"listening\"")).unwrap()).unwrap();
    assert_eq!(listening["chat_template"], "gguf", "the SmolLM2 GGUF carries tokenizer.chat_template: {listening}");
    // The template adds SmolLM's default system prompt: rendered and tokenized with its special tokens that is
    // the 37 ids `llama-tokenize` gives for the same text (1, 9690, 198, 2683, ... 520, 9531, 198).
    let (status, r) = s.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 4, "temperature": 0}));
    assert_eq!((status, r["usage"]["prompt_tokens"].as_u64()), (200, Some(37)), "{r}");
    let messages = json!([{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}]);
    let (status, r) = s.post("/v1/chat/completions", &json!({"messages": messages, "max_tokens": 24, "temperature": 0}));
    assert_eq!(status, 200, "{r}");
    let answer = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    // The end-of-turn token ends the answer (not max_tokens), and is not part of the text.
    assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
    assert!(!answer.contains("<|im_end|>"), "{answer}");
    let _ = s.wait_for("\"finish_reason\":\"stop\"");
}

//! A test hook, routed only when the server starts with `EDGEFORGE_SERVE_TEST_HOOKS=1`: POST
//! /debug/sandbox-probe `{"open": PATH, "exec": PROGRAM}` tries to open a file and to run a program from
//! inside the serving process and answers with what happened (errno), so tests can show the sandbox holds.

use std::process::{Command, Stdio};

use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
pub struct ProbeRequest {
    pub open: Option<String>,
    pub exec: Option<String>,
}

fn outcome(r: std::io::Result<()>) -> Value {
    match r {
        Ok(()) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "errno": e.raw_os_error(), "error": e.to_string() }),
    }
}

pub async fn probe(Json(req): Json<ProbeRequest>) -> Json<Value> {
    let result = tokio::task::spawn_blocking(move || {
        let open = req.open.map(|p| outcome(std::fs::File::open(p).map(drop)));
        let exec = req.exec.map(|p| outcome(Command::new(p).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().map(drop)));
        json!({ "open": open, "exec": exec })
    })
    .await;
    Json(result.unwrap_or_else(|e| json!({ "error": e.to_string() })))
}

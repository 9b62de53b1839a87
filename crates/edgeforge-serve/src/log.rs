//! Structured logs: one JSON object per line on standard error (one line per request, plus startup and
//! shutdown events).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Write `fields` (a JSON object) with `ts` (Unix seconds) and `event` added, as one line.
pub fn event(event: &str, mut fields: serde_json::Value) {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    if let Some(map) = fields.as_object_mut() {
        map.insert("ts".into(), serde_json::json!((ts * 1000.0).round() / 1000.0));
        map.insert("event".into(), serde_json::json!(event));
    }
    let mut line = fields.to_string();
    line.push('\n');
    // A closed stderr must not take the server down.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

//! Dataset downloads against an HTTP server the test runs on 127.0.0.1 (CI has no internet): a full
//! download, a resume from a partial `.part` with a Range request, a sha256 mismatch refused and deleted, a
//! server error reported, and a local file taking precedence (no request at all).
//!
//! The server is a few lines over std's TcpListener rather than a server crate because the tests need to
//! misbehave on purpose (close the connection mid-body, answer with the wrong bytes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edgeforge_eval::datasets::{find_or_download, DatasetManifest};
use edgeforge_eval::download::{part_path, DownloadError};
use edgeforge_eval::EvalError;

#[derive(Clone, Copy)]
enum Behaviour {
    /// Serve the file, honouring `Range: bytes=N-` with 206.
    Serve,
    /// Announce the whole file but close the connection after this many bytes.
    CloseAfter(usize),
    /// Answer with this status and no body.
    Status(u16),
}

/// A server for one file: each connection takes the next behaviour (the last repeats); every request's
/// Range header (or None) is recorded.
struct Server {
    url: String,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

fn serve(body: Vec<u8>, behaviours: Vec<Behaviour>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/data/text.txt", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = ranges.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("range") {
                        range = Some(v.trim().to_owned());
                    }
                }
            }
            seen.lock().unwrap().push(range.clone());
            let from: usize = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.trim_end_matches('-').parse().ok()).unwrap_or(0);
            let _ = match behaviours[i.min(behaviours.len() - 1)] {
                Behaviour::Status(s) => write!(stream, "HTTP/1.1 {s} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                Behaviour::Serve if from > 0 => {
                    let rest = &body[from..];
                    let head = format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n", rest.len(), body.len() - 1, body.len());
                    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(rest))
                }
                Behaviour::Serve => {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body))
                }
                Behaviour::CloseAfter(n) => {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body[..n]))
                }
            };
            let _ = stream.flush();
        }
    });
    Server { url, ranges }
}

/// 200 kB of deterministic text.
fn text() -> Vec<u8> {
    (0..20_000).map(|i| format!("line {i:05}\n")).collect::<String>().into_bytes()
}

fn manifest(body: &[u8], url: &str) -> DatasetManifest {
    DatasetManifest {
        name: "test-text".into(),
        file: "test-text.txt".into(),
        sha256: edgeforge_core::hash::sha256_hex(&[body]),
        bytes: body.len() as u64,
        licence: "test".into(),
        intended_use: "test".into(),
        source_url: url.into(),
        how_to_get: "the test's server".into(),
        download_url: Some(url.into()),
    }
}

fn download_error(e: EvalError) -> DownloadError {
    match e {
        EvalError::Download { source, .. } => source,
        e => panic!("expected a download error, got {e}"),
    }
}

#[test]
fn a_missing_dataset_is_downloaded_checked_and_then_found_locally() {
    let body = text();
    let server = serve(body.clone(), vec![Behaviour::Serve]);
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(&body, &server.url);
    let got = find_or_download(&m, &[], Some(cache.path())).unwrap();
    assert_eq!(got.text.as_bytes(), &body[..]);
    assert_eq!(got.path, cache.path().join("test-text.txt"));
    assert_eq!(got.dataset.as_deref(), Some("test-text"));
    assert!(!part_path(&got.path).exists());
    // Second use: found in the download folder, no request.
    find_or_download(&m, &[cache.path().to_path_buf()], Some(cache.path())).unwrap();
    assert_eq!(server.ranges.lock().unwrap().len(), 1);
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let body = text();
    let server = serve(body.clone(), vec![Behaviour::CloseAfter(70_000), Behaviour::Serve]);
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(&body, &server.url);
    let e = download_error(find_or_download(&m, &[], Some(cache.path())).unwrap_err());
    assert!(matches!(e, DownloadError::Network { kept: 70_000, .. }), "{e}");
    assert!(e.to_string().contains("run again to resume"), "{e}");
    let part = part_path(&cache.path().join("test-text.txt"));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 70_000);
    let got = find_or_download(&m, &[], Some(cache.path())).unwrap();
    assert_eq!(got.text.as_bytes(), &body[..]);
    assert_eq!(*server.ranges.lock().unwrap(), vec![None, Some("bytes=70000-".to_owned())]);
    assert!(!part.exists());
}

#[test]
fn a_file_whose_sha256_does_not_match_is_refused_and_deleted() {
    let body = text();
    let mut other = body.clone();
    other[123] ^= 1;
    let server = serve(other, vec![Behaviour::Serve]);
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(&body, &server.url);
    let e = find_or_download(&m, &[], Some(cache.path())).unwrap_err();
    let line = e.to_string();
    assert!(line.contains("test-text") && line.contains(&server.url) && line.contains(&m.sha256) && line.contains("deleted"), "{line}");
    assert!(matches!(download_error(e), DownloadError::Sha256 { .. }));
    assert!(std::fs::read_dir(cache.path()).unwrap().next().is_none(), "nothing may be left behind");
}

#[test]
fn a_server_error_is_reported_with_its_status() {
    let body = text();
    let server = serve(body.clone(), vec![Behaviour::Status(503)]);
    let cache = tempfile::tempdir().unwrap();
    let e = find_or_download(&manifest(&body, &server.url), &[], Some(cache.path())).unwrap_err();
    assert!(e.to_string().contains("HTTP 503") && e.to_string().contains(&server.url), "{e}");
    assert!(matches!(download_error(e), DownloadError::Http { status: 503 }));
    assert!(!cache.path().join("test-text.txt").exists());
}

#[test]
fn a_local_copy_takes_precedence_and_no_download_without_a_folder() {
    let body = text();
    let server = serve(body.clone(), vec![Behaviour::Serve]);
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("test-text.txt"), &body).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(&body, &server.url);
    let got = find_or_download(&m, &[local.path().to_path_buf()], Some(cache.path())).unwrap();
    assert_eq!(got.path, local.path().join("test-text.txt"));
    // Offline (no download folder): missing is an error that says how to get it.
    let e = find_or_download(&m, &[PathBuf::from("/nonexistent")], None).unwrap_err();
    assert!(matches!(e, EvalError::MissingText { .. }), "{e}");
    assert!(server.ranges.lock().unwrap().is_empty(), "no request may be made");
}

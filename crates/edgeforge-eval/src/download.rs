//! Downloading a named dataset on first use, for users who are online: into a `.part` file that a later
//! run resumes with an HTTP Range request, then checked against the manifest's byte count and sha256
//! before it is renamed into place. A file that does not match is deleted, never used.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a download did not give the manifest's file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("the server answered HTTP {status}")]
    Http { status: u16 },
    #[error("{reason}{}", if *.kept > 0 { format!("; {} bytes kept in {}, run again to resume", .kept, .part.display()) } else { String::new() })]
    Network { reason: String, part: PathBuf, kept: u64 },
    #[error("the server sent {got} bytes where the manifest says the file has {expected}; the partial file was deleted")]
    Size { got: u64, expected: u64 },
    #[error("sha256 of the downloaded file is {got}, the manifest says {expected}; the file was deleted (the server holds another version, or the transfer was corrupted)")]
    Sha256 { got: String, expected: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a download has done so far, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum DownloadEvent<'a> {
    /// Starting (or resuming at `done` bytes) a transfer of `total` bytes.
    Start { name: &'a str, url: &'a str, done: u64, total: u64 },
    Advance { done: u64 },
    Done,
}

/// One file to fetch: where from, where to, and what it must be.
pub struct DownloadSpec<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub dest: &'a Path,
    pub bytes: u64,
    pub sha256: &'a str,
}

/// How long to wait for a connection or a stalled transfer before giving up (the `.part` is kept).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK: usize = 64 * 1024;

/// `spec.dest` with the manifest's bytes and sha256, downloaded into `{dest}.part` (resumed when one is
/// there) and renamed into place once checked.
pub fn download(spec: &DownloadSpec<'_>, progress: &dyn Fn(DownloadEvent<'_>)) -> Result<(), DownloadError> {
    let part = part_path(spec.dest);
    if let Some(dir) = spec.dest.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DownloadError::Io { path: dir.to_path_buf(), source })?;
    }
    let mut have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if have > spec.bytes {
        remove(&part)?;
        have = 0;
    }
    if have < spec.bytes {
        transfer(spec, &part, have, progress)?;
    }
    let got = std::fs::metadata(&part).map_err(|source| DownloadError::Io { path: part.clone(), source })?.len();
    if got != spec.bytes {
        remove(&part)?;
        return Err(DownloadError::Size { got, expected: spec.bytes });
    }
    let sha = edgeforge_core::hash::sha256_file_hex(&part).map_err(|source| DownloadError::Io { path: part.clone(), source })?;
    if sha != spec.sha256 {
        remove(&part)?;
        return Err(DownloadError::Sha256 { got: sha, expected: spec.sha256.to_owned() });
    }
    std::fs::rename(&part, spec.dest).map_err(|source| DownloadError::Io { path: spec.dest.to_path_buf(), source })
}

/// `{dest}.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn remove(path: &Path) -> Result<(), DownloadError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DownloadError::Io { path: path.to_path_buf(), source: e }),
        _ => Ok(()),
    }
}

/// Append the rest of the file (from byte `have`) to `part`. A server that ignores the Range request
/// (200 instead of 206) sends the whole file, which replaces the partial one.
fn transfer(spec: &DownloadSpec<'_>, part: &Path, have: u64, progress: &dyn Fn(DownloadEvent<'_>)) -> Result<(), DownloadError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(STALL_TIMEOUT))
        .timeout_recv_response(Some(STALL_TIMEOUT))
        .timeout_per_read(Some(STALL_TIMEOUT))
        .build()
        .into();
    let mut request = agent.get(spec.url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let network = |reason: String, kept: u64| DownloadError::Network { reason, part: part.to_path_buf(), kept };
    let response = request.call().map_err(|e| network(e.to_string(), have))?;
    let start = match response.status().as_u16() {
        206 if content_range_start(&response) == Some(have) => have,
        200 => 0,
        status => return Err(DownloadError::Http { status }),
    };
    let io = |source| DownloadError::Io { path: part.to_path_buf(), source };
    let mut file = OpenOptions::new().create(true).write(true).truncate(start == 0).append(start > 0).open(part).map_err(io)?;
    progress(DownloadEvent::Start { name: spec.name, url: spec.url, done: start, total: spec.bytes });
    // One byte over the expected size is enough to tell a server that sends too much.
    let limit = spec.bytes - start + 1;
    let mut body = response.into_body().into_with_config().limit(limit).reader();
    let mut done = start;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The reader refuses the byte past the expected size: what came before is checked below.
            Err(_) if done == spec.bytes => break,
            Err(e) => {
                file.sync_all().map_err(io)?;
                return Err(network(e.to_string(), done));
            }
        };
        file.write_all(&buf[..n]).map_err(io)?;
        done += n as u64;
        progress(DownloadEvent::Advance { done });
    }
    file.sync_all().map_err(io)?;
    progress(DownloadEvent::Done);
    if done < spec.bytes {
        return Err(network(format!("the connection closed after {done} of {} bytes", spec.bytes), done));
    }
    Ok(())
}

/// The first byte a 206 response holds (`Content-Range: bytes START-END/TOTAL`).
fn content_range_start(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = response.headers().get("content-range")?.to_str().ok()?;
    v.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

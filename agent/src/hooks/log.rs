//! The hook call log: for adapter authors (Powerstrip's "verbose logging" wish), every call
//! to an adapter whose chain entry says `debug: true` (or to every adapter, with the agent's
//! `--debug-hooks`), request and answer, as one JSON line:
//!
//! ```text
//! {"time":"2026-12-07T14:03:07.123456Z","request_id":"6f1c...","node":"node1",
//!  "adapter":"audit","url":"http://audit:8080/hook","protocol":2,"type":"pre-hook",
//!  "call_headers":{"x-request-id":["6f1c..."],...},"call":{...the JSON POSTed...},
//!  "status":200,"answer":{...the JSON answered...},"error":null,"duration_ms":1.84}
//! ```
//!
//! - `call` is the document POSTed, `answer` the reply as JSON (a string when it was not
//!   JSON, `null` when there was none), `error` why the call failed (unreachable, timeout,
//!   invalid reply), `duration_ms` from the first byte sent to the last byte read.
//! - Redacted always: the credential headers of [`busbar_protocol::redact`] (in `call`'s
//!   `Headers` even when the chain reveals them to the adapter, and the adapter URL's Basic
//!   authentication in `call_headers`); the values of `Env` lists in every `Body`
//!   (`"TOKEN=<redacted>"`) unless the adapter says `debug_env: true`.
//! - The file (`--hook-log`, default `/var/lib/busbar/hook-calls.jsonl`) is made mode 0600
//!   in a directory made 0700, when the first line is written; past [`MAX_FILE`] bytes it is
//!   renamed `*.1` (replacing the previous one) and a new one is started.
//! - Lines are written by a thread of their own, through a bounded queue: a hook call never
//!   waits on the disk. When the queue is full a line is dropped and a warning says so.
//!
//! [`read`] serves the file to `busbarctl adapter log` (see [`crate::proxy`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tracing::warn;

use busbar_chains::Adapter;
use busbar_protocol::redact::{self, REDACTED};

/// Past this size the file is rotated.
pub const MAX_FILE: u64 = 64 << 20;
/// Lines waiting for the writer thread.
const QUEUE: usize = 4096;
/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Where hook calls are logged, and for which adapters.
pub struct HookLog {
    path: PathBuf,
    all: bool,
    lines: SyncSender<String>,
}

impl std::fmt::Debug for HookLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HookLog({}, all: {})", self.path.display(), self.all)
    }
}

/// One call, as the hook engine saw it.
pub struct Entry<'a> {
    pub adapter: &'a Adapter,
    pub node: Option<&'a str>,
    pub request_id: &'a str,
    pub kind: &'a str,
    pub call_headers: &'a http::HeaderMap,
    pub call: &'a [u8],
    pub status: Option<u16>,
    pub answer: Option<&'a [u8]>,
    pub error: Option<String>,
    pub started: SystemTime,
    pub duration: Duration,
}

impl HookLog {
    /// A log at `path`, of the adapters that say `debug: true`, or of all of them if `all`.
    pub fn new(path: PathBuf, all: bool) -> Arc<HookLog> {
        let (lines, rx) = sync_channel::<String>(QUEUE);
        let file = path.clone();
        std::thread::Builder::new()
            .name("hook-log".into())
            .spawn(move || write_lines(&file, rx))
            .expect("a thread for the hook call log");
        Arc::new(HookLog { path, all, lines })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether calls to `adapter` are logged.
    pub fn wants(&self, adapter: &Adapter) -> bool {
        self.all || adapter.debug
    }

    /// Queues the line of one call.
    pub fn record(&self, entry: Entry<'_>) {
        let line = line(&entry).to_string();
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                warn!(adapter = %entry.adapter.name, "hook call log: queue full, a line was dropped")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The JSON line of a call, redacted.
pub fn line(e: &Entry<'_>) -> Value {
    let show_env = e.adapter.debug_env;
    let parse = |bytes: &[u8]| -> Value {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(mut v) => {
                hide(&mut v, show_env);
                v
            }
            Err(_) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        }
    };
    let mut call_headers = Map::new();
    for name in e.call_headers.keys() {
        let values: Vec<Value> = e
            .call_headers
            .get_all(name)
            .iter()
            .map(|v| {
                if redact::is_credential(name.as_str()) {
                    Value::from(REDACTED)
                } else {
                    Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned())
                }
            })
            .collect();
        call_headers.insert(name.as_str().to_owned(), Value::Array(values));
    }
    json!({
        "time": rfc3339(e.started),
        "request_id": e.request_id,
        "node": e.node,
        "adapter": e.adapter.name,
        "url": e.adapter.url.to_string(),
        "protocol": e.adapter.protocol,
        "type": e.kind,
        "call_headers": call_headers,
        "call": parse(e.call),
        "status": e.status,
        "answer": e.answer.map(parse),
        "error": e.error,
        "duration_ms": (e.duration.as_secs_f64() * 1e6).round() / 1e3,
    })
}

/// Hides credentials in every `Headers` object and, unless `show_env`, the `Env` values in
/// every `Body` string.
fn hide(doc: &mut Value, show_env: bool) {
    match doc {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), value) {
                    ("Headers", Value::Object(headers)) => {
                        for (name, values) in headers.iter_mut() {
                            if redact::is_credential(name) {
                                *values = json!([REDACTED]);
                            }
                        }
                    }
                    ("Body", Value::String(text)) if !show_env => {
                        if let Some(hidden) = redact::env_in_text(text) {
                            *text = hidden;
                        }
                    }
                    (_, other) => hide(other, show_env),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| hide(v, show_env)),
        _ => {}
    }
}

/// `2026-12-07T14:03:07.123456Z`.
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// The writer thread: appends each line, flushing when the queue is empty.
fn write_lines(path: &Path, rx: std::sync::mpsc::Receiver<String>) {
    let mut out: Option<(std::io::BufWriter<std::fs::File>, u64)> = None;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(line) = next {
            if out.is_none() {
                match open(path) {
                    Ok(file) => {
                        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                        out = Some((std::io::BufWriter::new(file), size));
                    }
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "hook call log: cannot open");
                    }
                }
            }
            if let Some((w, size)) = out.as_mut() {
                if w.write_all(line.as_bytes())
                    .and_then(|_| w.write_all(b"\n"))
                    .is_err()
                {
                    out = None;
                } else {
                    *size += line.len() as u64 + 1;
                    if *size > MAX_FILE {
                        let _ = w.flush();
                        let _ = std::fs::rename(path, path.with_extension("jsonl.1"));
                        out = None;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Some((w, _)) = out.as_mut() {
            let _ = w.flush();
        }
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The log's lines (those of `adapter` only, when given) as a stream of chunks: what the file
/// holds, then, if `follow`, the lines written after, until the reader goes away.
pub fn read(
    path: PathBuf,
    adapter: Option<String>,
    follow: bool,
) -> tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut offset = 0u64;
        let mut partial = Vec::new();
        loop {
            let mut chunk = Vec::new();
            match tokio::fs::File::open(&path).await {
                Ok(mut f) => {
                    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                    if len < offset {
                        // Rotated: the new file from its start.
                        offset = 0;
                        partial.clear();
                    }
                    if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                        if let Ok(n) = f.read_to_end(&mut chunk).await {
                            offset += n as u64;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            partial.extend_from_slice(&chunk);
            let complete = partial
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            let lines: Vec<u8> = partial.drain(..complete).collect();
            let kept = select(&lines, adapter.as_deref());
            if !kept.is_empty() && tx.send(Ok(Bytes::from(kept))).await.is_err() {
                return;
            }
            if !follow {
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    });
    rx
}

/// The lines of `adapter` (all when `None`).
fn select(lines: &[u8], adapter: Option<&str>) -> Vec<u8> {
    let Some(name) = adapter else {
        return lines.to_vec();
    };
    let mut out = Vec::new();
    for line in lines.split_inclusive(|b| *b == b'\n') {
        let doc: Option<Value> = serde_json::from_slice(line).ok();
        if doc.as_ref().and_then(|d| d["adapter"].as_str()) == Some(name) {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_116_187_123_456);
        assert_eq!(rfc3339(t), "2025-12-07T14:03:07.123456Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn a_line_hides_credentials_and_env_values() {
        let adapter = Adapter::new("audit", "http://audit/hook".parse().unwrap());
        let mut call_headers = http::HeaderMap::new();
        call_headers.insert("authorization", "Basic dTpw".parse().unwrap());
        call_headers.insert("x-request-id", "r1".parse().unwrap());
        let call = json!({"Type": "pre-hook", "ClientRequest": {
            "Body": "{\"Env\":[\"TOKEN=s3cret\"]}",
            "Headers": {"authorization": ["Bearer t0ken"], "user-agent": ["docker"]}}})
        .to_string();
        let entry = Entry {
            adapter: &adapter,
            node: None,
            request_id: "r1",
            kind: "pre-hook",
            call_headers: &call_headers,
            call: call.as_bytes(),
            status: Some(200),
            answer: Some(br#"{"ModifiedClientRequest":{"Body":"{\"Env\":[\"TOKEN=s3cret\"]}"}}"#),
            error: None,
            started: SystemTime::now(),
            duration: Duration::from_micros(1500),
        };
        let text = line(&entry).to_string();
        for secret in ["s3cret", "t0ken", "dTpw"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("TOKEN=<redacted>"), "{text}");
        assert!(text.contains("docker"), "{text}");
        assert_eq!(line(&entry)["duration_ms"], 1.5);
    }
}

//! Hijacked connections: `attach` and `exec start` turn an HTTP exchange into a raw, two-way
//! byte stream (stdin one way, stdout/stderr the other).
//!
//! Clients ask for it in one of two ways, and the engine answers in kind:
//! - with `Connection: Upgrade` + `Upgrade: tcp`: the engine answers `101 UPGRADED`;
//! - without: the engine answers `200 OK` with `Content-Type: application/vnd.docker.raw-stream`
//!   and then simply keeps the connection as a raw stream.
//!
//! Toward the engine we always take the first form (see [`ensure_upgrade_headers`]), because
//! that is the one an HTTP client library can hand back as a connection. Toward a client that
//! used the second form, the front writes the `200` itself (see `front::raw`).
//!
//! Half-close matters: `echo hello | docker run -i busybox cat` works only if the client's EOF
//! on stdin reaches the engine as a write shutdown while output still flows back. [`splice`]
//! does exactly that in both directions.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Response};
use tokio::io::{AsyncRead, AsyncWrite};

/// A raw two-way byte stream: a hijacked connection to the engine, or a gRPC exchange
/// carrying one.
pub trait RawStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> RawStream for T {}

type PendingStream = Pin<Box<dyn Future<Output = io::Result<Box<dyn RawStream>>> + Send>>;

/// The upstream side of a hijacked exchange, carried in the extensions of a `101` response
/// until the front that answers the client splices it. Whoever produced the 101 (the engine
/// client, or the gateway's agent client) puts it there; the stream becomes available once
/// the 101 has been read. (An `Arc<Mutex>` because response extensions must be `Clone + Sync`;
/// it is taken exactly once.)
#[derive(Clone)]
pub struct Hijacked(Arc<Mutex<Option<PendingStream>>>);

impl Hijacked {
    /// Attaches `stream` (resolving to the upstream connection) to `rsp`.
    pub fn attach<B>(
        rsp: &mut Response<B>,
        stream: impl Future<Output = io::Result<Box<dyn RawStream>>> + Send + 'static,
    ) {
        rsp.extensions_mut()
            .insert(Hijacked(Arc::new(Mutex::new(Some(Box::pin(stream))))));
    }

    /// Takes the upstream connection out of a `101` response; `None` if there is none.
    pub fn take<B>(rsp: &mut Response<B>) -> Option<PendingStream> {
        let h = rsp.extensions_mut().remove::<Hijacked>()?;
        // The lock is never held across an await, and only here.
        let pending =
            h.0.lock()
                .expect("the hijack lock is never poisoned")
                .take();
        pending
    }
}

/// Whether `method path` is a call the engine may hijack (attach, exec start), with or without
/// an API version prefix. The query string must already be stripped.
pub fn is_hijack_endpoint(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let segs = match segs.first() {
        Some(v) if is_version_segment(v) => &segs[1..],
        _ => &segs[..],
    };
    matches!(segs, ["containers", id, "attach"] | ["exec", id, "start"] if !id.is_empty())
}

/// `v1.41`, `v1`, ...: the optional API version prefix of Docker paths.
pub fn is_version_segment(seg: &str) -> bool {
    seg.strip_prefix('v').is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

/// Whether headers ask for an upgrade (`Connection: upgrade` token and an `Upgrade` header).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Makes a hijack request ask the engine for `101`, the form we can splice.
pub fn ensure_upgrade_headers(headers: &mut HeaderMap) {
    if !wants_upgrade(headers) {
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("tcp"));
    }
}

/// Bytes moved by one splice, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    pub to_engine: u64,
    pub to_client: u64,
}

/// Copies bytes both ways until both directions are finished. An EOF from one side becomes a
/// write shutdown on the other (half-close), and the other direction keeps flowing.
pub async fn splice<C, E>(mut client: C, mut engine: E) -> std::io::Result<Spliced>
where
    C: AsyncRead + AsyncWrite + Unpin,
    E: AsyncRead + AsyncWrite + Unpin,
{
    let (to_engine, to_client) = tokio::io::copy_bidirectional(&mut client, &mut engine).await?;
    Ok(Spliced {
        to_engine,
        to_client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_attach_and_exec_start_with_and_without_version() {
        for p in [
            "/v1.41/containers/abc/attach",
            "/containers/abc/attach",
            "/v1.24/exec/e1/start",
            "/exec/e1/start",
        ] {
            assert!(is_hijack_endpoint(&Method::POST, p), "{p}");
        }
        for p in [
            "/v1.41/containers/abc/start",
            "/containers/json",
            "/exec/e1/json",
            "/v1.41/containers//attach",
        ] {
            assert!(!is_hijack_endpoint(&Method::POST, p), "{p}");
        }
        assert!(!is_hijack_endpoint(&Method::GET, "/containers/abc/attach"));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("tcp"));
        assert!(!wants_upgrade(&h));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(wants_upgrade(&h));
        let mut h = HeaderMap::new();
        ensure_upgrade_headers(&mut h);
        assert!(wants_upgrade(&h));
    }

    #[tokio::test]
    async fn splice_keeps_half_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client_far, client_near) = tokio::io::duplex(64);
        let (engine_near, engine_far) = tokio::io::duplex(64);
        let task = tokio::spawn(splice(client_near, engine_near));
        let (mut cr, mut cw) = tokio::io::split(client_far);
        let (mut er, mut ew) = tokio::io::split(engine_far);
        cw.write_all(b"hello\n").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut stdin = String::new();
        er.read_to_string(&mut stdin).await.unwrap(); // ends only because the EOF was passed on
        assert_eq!(stdin, "hello\n");
        ew.write_all(b"HELLO\n").await.unwrap(); // the other direction still flows
        ew.shutdown().await.unwrap();
        let mut out = String::new();
        cr.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "HELLO\n");
        assert_eq!(
            task.await.unwrap().unwrap(),
            Spliced {
                to_engine: 6,
                to_client: 6
            }
        );
    }
}

//! Hijacked connections: `attach` and `exec start` turn an HTTP exchange into a raw, two-way
//! byte stream (stdin one way, stdout/stderr the other).
//!
//! Clients ask for it in one of two ways, and the engine answers in kind:
//! - with `Connection: Upgrade` + `Upgrade: tcp`: the engine answers `101 UPGRADED`;
//! - without: the engine answers `200 OK` with `Content-Type: application/vnd.docker.raw-stream`
//!   and then simply keeps the connection as a raw stream.
//!
//! Toward the engine we always take the first form (see
//! [`crate::headers::ensure_upgrade_headers`]), because
//! that is the one an HTTP client library can hand back as a connection. Toward a client that
//! used the second form, the server writes the `200` itself (see `server::raw`).
//!
//! Half-close matters: `echo hello | docker run -i busybox cat` works only if the client's EOF
//! on stdin reaches the engine as a write shutdown while output still flows back. [`splice`]
//! does exactly that in both directions.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http::Response;
use tokio::io::{AsyncRead, AsyncWrite};

/// A raw two-way byte stream: a hijacked connection to the engine, or a gRPC exchange
/// carrying one.
pub trait RawStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> RawStream for T {}

type PendingStream = Pin<Box<dyn Future<Output = io::Result<Box<dyn RawStream>>> + Send>>;

/// The upstream side of a hijacked exchange, carried in the extensions of a `101` response
/// until the server that answers the client splices it. Whoever produced the 101 (the engine
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

/// Bytes moved by one splice, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    pub to_engine: u64,
    pub to_client: u64,
}

/// Copies bytes both ways until both directions are finished. An EOF from one side becomes a
/// write shutdown on the other (half-close), and the other direction keeps flowing. Counted
/// in the metrics: sessions open, bytes each way.
pub async fn splice<C, E>(mut client: C, mut engine: E) -> std::io::Result<Spliced>
where
    C: AsyncRead + AsyncWrite + Unpin,
    E: AsyncRead + AsyncWrite + Unpin,
{
    let m = busbar_metrics::global();
    m.hijacked_open.inc();
    let copied = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
    m.hijacked_open.dec();
    let (to_engine, to_client) = copied?;
    let bytes = |direction| {
        m.hijacked_bytes
            .get_or_create(&busbar_metrics::DirectionLabels { direction })
    };
    bytes("to_engine").inc_by(to_engine);
    bytes("to_client").inc_by(to_client);
    Ok(Spliced {
        to_engine,
        to_client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! One client connection.
//!
//! Before hyper sees the connection we read its first request head (bounded in size and
//! time). If it is an attach or exec start that does not ask for an upgrade, the client will
//! hijack the connection with a plain `200`, which hyper cannot hand over: [`super::raw`]
//! serves it. Everything else (including the bytes already read) goes to hyper's HTTP/1.1
//! server, with upgrades on: a `101` from the engine is spliced to the client's upgraded
//! connection by a task tracked like the connection itself, so shutdown waits for it too.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use busbar_api::endpoint::is_hijack;
use busbar_api::ApiPath;

use super::{admit, canonicalize, Handler, Refused};
use crate::body::{client_body, BODY_IDLE_TIMEOUT};
use crate::headers::wants_upgrade;
use crate::hijack::{splice, Hijacked, RawStream};
use crate::io::{Prefixed, Stream};
use crate::{access, error, Body, ClientIdentity, RequestCtx};

/// Largest request head we read ahead (hyper's own default limit is larger; heads of Docker
/// calls are small, and a bigger one is simply passed on to hyper to judge).
const MAX_SNIFF: usize = 64 * 1024;
/// How long a new connection may take to send its first request head.
const FIRST_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one client connection to completion; `identity` is the client's, when a TLS
/// handshake verified its certificate.
pub async fn serve(
    mut io: Stream,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    identity: Option<Arc<ClientIdentity>>,
) {
    let head = match tokio::time::timeout(FIRST_HEAD_TIMEOUT, read_first_head(&mut io)).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return debug!(error = %e, "connection failed before a request"),
        Err(_) => return debug!("no request head within {FIRST_HEAD_TIMEOUT:?}; closing"),
    };
    match head {
        FirstHead::Closed => {}
        FirstHead::RawHijack(buf) => super::raw::serve(io, buf, handler, identity).await,
        FirstHead::Http(buf) => {
            serve_http(Prefixed::new(buf, io), handler, shutdown, tracker, identity).await
        }
    }
}

enum FirstHead {
    /// The client closed before sending anything.
    Closed,
    /// An attach/exec start without `Upgrade`: hijacked with a plain 200.
    RawHijack(Bytes),
    /// Anything else, for hyper (including heads too large or malformed: hyper answers those).
    Http(Bytes),
}

async fn read_first_head(io: &mut Stream) -> std::io::Result<FirstHead> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(if buf.is_empty() {
                FirstHead::Closed
            } else {
                FirstHead::Http(buf.freeze())
            });
        }
        match sniff(&buf) {
            Sniff::Complete { raw_hijack: true } => return Ok(FirstHead::RawHijack(buf.freeze())),
            Sniff::Partial if buf.len() < MAX_SNIFF => continue,
            _ => return Ok(FirstHead::Http(buf.freeze())),
        }
    }
}

enum Sniff {
    Complete { raw_hijack: bool },
    Partial,
    Invalid,
}

/// Looks at a (maybe partial) request head. Kept synchronous: httparse borrows the buffer.
fn sniff(buf: &[u8]) -> Sniff {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Sniff::Complete {
            raw_hijack: is_raw_hijack(&req),
        },
        Ok(httparse::Status::Partial) => Sniff::Partial,
        Err(_) => Sniff::Invalid,
    }
}

fn is_raw_hijack(req: &httparse::Request<'_, '_>) -> bool {
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return false;
    };
    let path = target.split('?').next().unwrap_or(target);
    let upgrade = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    method == "POST"
        && !upgrade
        && ApiPath::parse(path).is_ok_and(|p| is_hijack(&http::Method::POST, &p))
}

async fn serve_http(
    io: Prefixed<Stream>,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    identity: Option<Arc<ClientIdentity>>,
) {
    let svc = {
        let tracker = tracker.clone();
        service_fn(move |req| handle(req, handler.clone(), tracker.clone(), identity.clone()))
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // A client that closes its side while its answer is still coming has left, as dockerd
        // (Go's server) takes it: the response is dropped, which cancels the call upstream (a
        // `docker build` the client left stops and removes its container, as on the engine).
        // With half-close allowed, a silent stream (a build step running, `logs -f` of a quiet
        // container) kept going until its next write. Hijacked sessions half-close on their
        // own path (the upgrade splice and the raw server), not here.
        .half_close(false)
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection ended with an error");
    }
}

async fn handle(
    mut req: Request<Incoming>,
    handler: Arc<dyn Handler>,
    tracker: TaskTracker,
    identity: Option<Arc<ClientIdentity>>,
) -> Result<Response<Body>, Infallible> {
    let refused = canonicalize(&mut req).err();
    let mut ctx = RequestCtx::new(&req);
    admit(&mut req, &mut ctx, identity);
    let rsp = answer(req, refused, &ctx, handler, tracker).await;
    Ok(access::logged(rsp, &ctx))
}

/// The answer to one admitted request (or to one refused before a handler saw it).
async fn answer(
    mut req: Request<Incoming>,
    refused: Option<Refused>,
    ctx: &RequestCtx,
    handler: Arc<dyn Handler>,
    tracker: TaskTracker,
) -> Response<Body> {
    if let Some(e) = refused {
        let _enter = ctx.span.enter();
        debug!(error = %e.loggable(), "request refused");
        return error::error(&e);
    }
    let client_upgrade = wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let req = req.map(|body| client_body(body, BODY_IDLE_TIMEOUT));
    let mut rsp = handler.handle(req, ctx).instrument(ctx.span.clone()).await;
    if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            let _enter = ctx.span.enter();
            return error::message(
                StatusCode::BAD_GATEWAY,
                "the Docker engine switched protocols although the client did not ask to",
            );
        };
        let Some(upstream) = Hijacked::take(&mut rsp) else {
            return error::message(
                StatusCode::BAD_GATEWAY,
                "upstream switched protocols but gave no stream",
            );
        };
        tracker.spawn(splice_upgraded(client_upgrade, upstream).instrument(ctx.span.clone()));
    }
    rsp
}

/// Waits for both sides to finish upgrading (the client's side completes once hyper has sent
/// the 101), then splices them.
async fn splice_upgraded(
    client: OnUpgrade,
    upstream: impl std::future::Future<Output = std::io::Result<Box<dyn RawStream>>>,
) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(e)) => (c, e),
        (c, e) => {
            return debug!(client = ?c.err(), upstream = ?e.err(), "upgrade did not complete");
        }
    };
    match splice(TokioIo::new(client), upstream).await {
        Ok(n) => debug!(
            to_engine = n.to_engine,
            to_client = n.to_client,
            "hijacked stream closed"
        ),
        Err(e) => debug!(error = %e, "hijacked stream broke"),
    }
}

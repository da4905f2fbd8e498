//! The request path shared by every front: one downstream request in, the engine's response
//! out, with the hop-by-hop headers handled as HTTP/1.1 requires and bodies streamed both ways.
//!
//! ```text
//!   front (unix/tcp, later gRPC)
//!     └─ RequestCtx::new      request id, span req{req.id, method, path}
//!          └─ Proxy::handle   strip hop-by-hop ─> match the chain snapshot
//!               ├─ no hooks:  engine ─> strip hop-by-hop ─> response       (the plain path)
//!               └─ hooks:     hooks::engine::pre ─> engine ─> hooks::engine::post
//!                             (errors become Docker-style responses in `respond`)
//! ```
//!
//! The plain path buffers nothing: the request body is handed to the engine client as a
//! stream and the engine's body is handed back the same way, so `logs -f` and `events` reach
//! the client chunk by chunk, and build contexts never sit in memory. A `101` response keeps
//! hyper's upgrade handle in its extensions; the front splices the two connections. Requests
//! that match hooks buffer only what a hook must see (see `hooks::engine`).

use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt};
use tracing::{debug, field, info_span, warn, Span};

use std::sync::Arc;

use tokio::sync::watch;

use crate::chains::source::LiveChains;
use crate::docker::hijack::{wants_upgrade, Hijacked, RawStream};
use crate::docker::EngineClient;
use crate::hooks::engine::{self as hooks, PreOutcome};
use crate::respond;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response inside busbar.
pub type Body = BoxBody<Bytes, BoxError>;

/// The request id header: taken from the client when present, generated otherwise, and passed
/// on to the engine so both logs can be joined.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-request context: its id and the tracing span that every log line of it carries.
pub struct RequestCtx {
    pub id: String,
    pub span: Span,
    started: Instant,
}

impl RequestCtx {
    pub fn new<B>(req: &Request<B>) -> Self {
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(new_request_id);
        let span = info_span!(
            "req",
            req.id = %id,
            method = %req.method(),
            path = req.uri().path(),
            node = field::Empty,
        );
        RequestCtx {
            id,
            span,
            started: Instant::now(),
        }
    }

    /// A context for a call made on behalf of another request (same id, same span).
    pub fn with_id(id: String, span: Span) -> Self {
        RequestCtx {
            id,
            span,
            started: Instant::now(),
        }
    }
}

/// A new request id: 16 hex digits, a random half drawn once per process and a counter, so
/// that ids are unique within a process and unlikely to repeat across processes, without a
/// system call for randomness on every request.
fn new_request_id() -> String {
    static SALT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let salt = *SALT.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u32);
    format!(
        "{salt:08x}{:08x}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Forwards requests to one engine, through the adapter chains.
#[derive(Clone)]
pub struct Proxy {
    engine: EngineClient,
    /// The current chain set; each request takes a snapshot.
    chains: watch::Receiver<Arc<LiveChains>>,
}

impl Proxy {
    /// A proxy with no adapter chains.
    pub fn new(engine: EngineClient) -> Self {
        Proxy::with_chains(engine, watch::channel(LiveChains::none()).1)
    }

    /// A proxy running the chains published on `chains`.
    pub fn with_chains(engine: EngineClient, chains: watch::Receiver<Arc<LiveChains>>) -> Self {
        Proxy { engine, chains }
    }

    pub fn engine(&self) -> &EngineClient {
        &self.engine
    }

    /// Runs one exchange. Never fails: an error becomes a Docker-style error response.
    /// Call it inside `ctx.span`.
    pub async fn handle(&self, mut req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
        strip_hop_by_hop(req.headers_mut());
        if let Ok(id) = HeaderValue::from_str(&ctx.id) {
            req.headers_mut().insert(REQUEST_ID.clone(), id);
        }
        // Cloned out of the borrow at once: the borrow must not be held across an await.
        let chains = self.chains.borrow().clone();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let matched = chains.set.hooks_for(req.method(), path_and_query);
        let response = if matched.is_empty() {
            self.forward(req).await
        } else {
            self.run_chain(&chains, &matched, req, ctx).await
        };
        let elapsed = ctx.started.elapsed();
        debug!(
            status = response.status().as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            "response head"
        );
        response
    }
}

impl Proxy {
    /// The engine's response, or a Docker-style error if it could not be had.
    async fn forward(&self, req: Request<Body>) -> Response<Body> {
        match self.engine.send(req).await {
            Ok(mut rsp) => {
                if rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    let engine = hyper::upgrade::on(&mut rsp);
                    Hijacked::attach(&mut rsp, async move {
                        let io = engine.await.map_err(std::io::Error::other)?;
                        Ok(Box::new(hyper_util::rt::TokioIo::new(io)) as Box<dyn RawStream>)
                    });
                }
                let mut rsp = rsp.map(incoming);
                strip_hop_by_hop(rsp.headers_mut());
                rsp
            }
            Err(err) => {
                warn!(error = %err, "engine call failed");
                respond::error(&err)
            }
        }
    }

    async fn run_chain(
        &self,
        chains: &LiveChains,
        matched: &crate::hooks::MatchedChain,
        req: Request<Body>,
        ctx: &RequestCtx,
    ) -> Response<Body> {
        let method = req.method().clone();
        let (req, original) =
            match hooks::pre(&chains.set, &chains.clients, matched, req, ctx).await {
                Ok(PreOutcome::Forward { req, original }) => (req, original),
                Ok(PreOutcome::Respond(rsp)) => return rsp,
                Err(err) => {
                    warn!(error = %err, "pre-hooks failed");
                    return respond::error(&err);
                }
            };
        let rsp = self.forward(req).await;
        match hooks::post(
            &chains.set,
            &chains.clients,
            matched,
            original,
            &method,
            rsp,
            ctx,
        )
        .await
        {
            Ok(rsp) => rsp,
            Err(err) => {
                warn!(error = %err, "post-hooks failed");
                respond::error(&err)
            }
        }
    }
}

impl crate::front::Handler for Proxy {
    fn handle<'a>(
        &'a self,
        req: Request<Body>,
        ctx: &'a RequestCtx,
    ) -> futures_util::future::BoxFuture<'a, Response<Body>> {
        Box::pin(Proxy::handle(self, req, ctx))
    }

    fn upstream(&self) -> String {
        format!("engine {}", self.engine.addr())
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones the
/// `Connection` header names. The framing headers are recomputed by hyper on each side. An
/// upgrade request or `101` keeps `Connection: Upgrade` and `Upgrade`, which the hop needs.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let upgrade = wants_upgrade(headers)
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    if let Some(proto) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, proto);
    }
}

/// A body received by hyper, as a [`Body`].
pub fn incoming(body: hyper::body::Incoming) -> Body {
    fn boxed(e: hyper::Error) -> BoxError {
        Box::new(e)
    }
    body.map_err(boxed).boxed()
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Broken(BoxError),
}

/// Reads a whole body, refusing more than `limit` bytes.
///
/// A plain frame loop rather than `http_body_util::Limited`: with a boxed error type the latter
/// trips a rustc limitation (a higher-ranked `Send` bound) in spawned connection futures.
pub async fn collect_limited(mut body: Body, limit: usize) -> Result<Bytes, CollectError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CollectError::Broken)?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                return Err(CollectError::TooLarge { limit });
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(bytes))
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-registry-auth", HeaderValue::from_static("e30="));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-registry-auth"]);
    }

    #[test]
    fn upgrade_survives() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("tcp"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("upgrade").unwrap(), "tcp");
        assert_eq!(h.get("connection").unwrap(), "Upgrade");
    }
}

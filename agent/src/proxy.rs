//! The request path shared by every way in: one downstream request in, the engine's response
//! out, with the hop-by-hop headers handled as HTTP/1.1 requires and bodies streamed both ways.
//!
//! ```text
//!   busbar_http::server (unix/tcp) or cluster::grpc (a gateway)
//!     └─ canonical path, RequestCtx   request id, span req{req.id, method, path}
//!          └─ Proxy::handle   strip hop-by-hop ─> match the chain snapshot
//!               ├─ no hooks:  engine ─> strip hop-by-hop ─> response       (the plain path)
//!               └─ hooks:     hooks::phases::pre ─> engine ─> hooks::phases::post
//!                             (errors become Docker-style responses in busbar_http::error)
//! ```
//!
//! A call that carries credentials in its body (`docker login`, see
//! [`busbar_api::endpoint::carries_credentials`]) always takes the plain path: no adapter
//! sees it.
//!
//! The plain path buffers nothing: the request body is handed to the engine client as a
//! stream and the engine's body is handed back the same way, so `logs -f` and `events` reach
//! the client chunk by chunk, and build contexts never sit in memory. A `101` response keeps
//! hyper's upgrade handle in its extensions; the server splices the two connections. Requests
//! that match hooks buffer only what a hook must see (see `hooks::engine`).

use std::sync::Arc;

use busbar_engine::EngineClient;
use busbar_http::headers::strip_hop_by_hop;
use busbar_http::server::Handler;
use busbar_http::{error, Body, RequestCtx, REQUEST_ID};
use futures_util::StreamExt;
use http::{HeaderValue, Request, Response};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::chain_source::LiveChains;
use crate::hooks::adapter::{Caller, NodeInfo};
use crate::hooks::log::HookLog;
use crate::hooks::phases::{self as hooks, PreOutcome};

/// Forwards requests to one engine, through the adapter chains.
#[derive(Clone)]
pub struct Proxy {
    engine: EngineClient,
    /// The current chain set; each request takes a snapshot.
    chains: watch::Receiver<Arc<LiveChains>>,
    /// The node this proxy serves, once known (a cluster agent's name and labels): told to
    /// adapters on every hook call ([`NodeInfo`]).
    node: Arc<std::sync::OnceLock<Arc<NodeInfo>>>,
    /// The hook call log, when there is one.
    hook_log: Option<Arc<HookLog>>,
}

/// The path on which an agent serves its hook call log to gateways, for an adapter's call
/// (`GET /_busbar/v1/nodes/NODE/_busbar/hook-log?adapter=NAME&follow=1` on a gateway; see
/// `busbarctl adapter log`). No engine path starts with `/_busbar`.
pub const HOOK_LOG_PATH: &str = "/_busbar/hook-log";

impl Proxy {
    /// A proxy with no adapter chains.
    pub fn new(engine: EngineClient) -> Self {
        Proxy::with_chains(engine, watch::channel(LiveChains::none()).1)
    }

    /// A proxy running the chains published on `chains`.
    pub fn with_chains(engine: EngineClient, chains: watch::Receiver<Arc<LiveChains>>) -> Self {
        Proxy {
            engine,
            chains,
            node: Arc::default(),
            hook_log: None,
        }
    }

    /// The same proxy, logging hook calls to `log`.
    pub fn with_hook_log(mut self, log: Option<Arc<HookLog>>) -> Self {
        self.hook_log = log;
        self
    }

    /// Names the node this proxy serves, for the hook calls (once; later calls are ignored).
    pub fn set_node(&self, node: NodeInfo) {
        let _ = self.node.set(Arc::new(node));
    }

    pub fn engine(&self) -> &EngineClient {
        &self.engine
    }

    /// The chains it runs now (what the embedded gateway's status page lists).
    pub fn chains(&self) -> Arc<LiveChains> {
        self.chains.borrow().clone()
    }

    /// Who a hook call is made for: this request, on this node.
    fn caller<'a>(&'a self, ctx: &'a RequestCtx) -> Caller<'a> {
        Caller {
            ctx,
            node: self.node.get().map(|n| n.as_ref()),
            log: self.hook_log.as_deref(),
        }
    }

    /// Runs one exchange. Never fails: an error becomes a Docker-style error response.
    /// Call it inside `ctx.span`.
    pub async fn handle(&self, mut req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
        strip_hop_by_hop(req.headers_mut());
        if let Ok(id) = HeaderValue::from_str(&ctx.id) {
            req.headers_mut().insert(REQUEST_ID.clone(), id);
        }
        ctx.write_trace(req.headers_mut());
        // Cloned out of the borrow at once: the borrow must not be held across an await.
        let chains = self.chains.borrow().clone();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if ctx.skip_hooks && req.uri().path() == HOOK_LOG_PATH {
            return self.serve_hook_log(&req);
        }
        let mut matched = if ctx.skip_hooks {
            // An adapter's own call, through a gateway: no chain runs on it (no recursion).
            Default::default()
        } else {
            chains.set.hooks_for(req.method(), path_and_query)
        };
        if !matched.is_empty() {
            if let Some(why) = credentials(req.method(), req.uri().path()) {
                debug!(reason = why, "hooks skipped: the call carries credentials");
                matched = Default::default();
            }
        }
        let response = if matched.is_empty() {
            self.forward(req, ctx).await
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

/// Why a call must not be shown to adapters, if so (see
/// [`busbar_api::endpoint::carries_credentials`]).
fn credentials(method: &http::Method, path: &str) -> Option<&'static str> {
    busbar_api::ApiPath::parse(path)
        .ok()
        .and_then(|p| busbar_api::endpoint::carries_credentials(method, &p))
}

impl Proxy {
    /// The engine's response, or a Docker-style error if it could not be had; the time to its
    /// head is counted in the metrics by endpoint class.
    async fn forward(&self, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
        let sent = std::time::Instant::now();
        let answer = self.engine.forward(req).await;
        busbar_metrics::global()
            .engine_duration
            .get_or_create(&busbar_metrics::EndpointLabels {
                endpoint: ctx.endpoint,
            })
            .observe(sent.elapsed().as_secs_f64());
        match answer {
            Ok(rsp) => rsp,
            Err(err) => {
                warn!(error = %err, "engine call failed");
                error::error(&err)
            }
        }
    }

    async fn run_chain(
        &self,
        chains: &LiveChains,
        matched: &busbar_chains::MatchedChain,
        req: Request<Body>,
        ctx: &RequestCtx,
    ) -> Response<Body> {
        let (req, original, ran) =
            match hooks::pre(&chains.set, &chains.clients, matched, req, self.caller(ctx)).await {
                Ok(PreOutcome::Forward { req, original, ran }) => (req, original, ran),
                Ok(PreOutcome::Respond(rsp)) => return rsp,
                Err(err) => {
                    warn!(error = %err, "pre-hooks failed");
                    return error::error(&err);
                }
            };
        let rsp = self.forward(req, ctx).await;
        let rsp = hooks::engine_failed(&chains.clients, &ran, rsp, &self.caller(ctx)).await;
        match hooks::post(
            &chains.set,
            &chains.clients,
            matched,
            original,
            rsp,
            self.caller(ctx),
        )
        .await
        {
            Ok(rsp) => rsp,
            Err(err) => {
                warn!(error = %err, "post-hooks failed");
                error::error(&err)
            }
        }
    }
}

impl Proxy {
    /// The hook call log, for an adapter's call through a gateway (`?adapter=NAME` keeps
    /// that adapter's lines, `follow=1` goes on with new ones as they come).
    fn serve_hook_log(&self, req: &Request<Body>) -> Response<Body> {
        use http::StatusCode;
        if req.method() != http::Method::GET {
            return error::message(
                StatusCode::METHOD_NOT_ALLOWED,
                "the hook call log is read with GET",
            );
        }
        let Some(log) = &self.hook_log else {
            return error::message(
                StatusCode::NOT_FOUND,
                "this node keeps no hook call log (start its agent with --debug-hooks, or set debug: true on an adapter)",
            );
        };
        let query = req.uri().query();
        let adapter = busbar_api::query::value(query, "adapter").map(|v| v.into_owned());
        let follow = busbar_api::query::flag(query, "follow");
        let lines = crate::hooks::log::read(log.path().to_owned(), adapter, follow);
        let chunks = futures_util::stream::unfold(lines, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let body = http_body_util::StreamBody::new(
            chunks.map(|r| r.map(http_body::Frame::data).map_err(Into::into)),
        );
        Response::builder()
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .body(http_body_util::BodyExt::boxed(body))
            .expect("a fixed header makes a valid response")
    }
}

impl Handler for Proxy {
    fn handle<'a>(
        &'a self,
        req: Request<Body>,
        ctx: &'a RequestCtx,
    ) -> futures_util::future::BoxFuture<'a, Response<Body>> {
        Box::pin(async move { gather_stream(Proxy::handle(self, req, ctx).await) })
    }

    fn upstream(&self) -> String {
        format!("engine {}", self.engine.addr())
    }
}

/// A response streamed to an HTTP client (chunked: no `Content-Length`) with its small chunks
/// joined (see [`Gather`](busbar_http::body::Gather)): the engine writes some streams a line
/// at a time, and hyper writes each chunk as it comes, a system call per line. (Over the hop,
/// `busbar_hop::frames::body_frames` joins them instead.)
fn gather_stream(rsp: Response<Body>) -> Response<Body> {
    use busbar_http::body::{gathered, Gathering};
    let streamed = !rsp.headers().contains_key(http::header::CONTENT_LENGTH)
        && rsp.status() != http::StatusCode::SWITCHING_PROTOCOLS
        && !http_body::Body::is_end_stream(rsp.body());
    if !streamed {
        return rsp;
    }
    rsp.map(|body| gathered(body, Gathering::STREAMS, MAX_WRITE))
}

/// The largest chunk of a gathered stream handed to hyper at once.
const MAX_WRITE: usize = 256 * 1024;

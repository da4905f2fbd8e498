//! The agent's gRPC service, served to gateways over HTTP/2 with mutual TLS.
//!
//! A request arriving here takes exactly the path of a local one: it becomes an HTTP request
//! and goes through the same [`Proxy`] (adapter chains included); the response, and after a
//! `101` the hijacked stream, goes back as frames (see [`busbar_hop::frames`]). Only a peer whose
//! certificate chains to the cluster CA and carries the gateway role gets past the TLS
//! handshake ([`busbar_tls::server_config`]). gRPC `Status` values are made here and nowhere
//! else in the agent.
//!
//! The client's identity (`X-Busbar-User`, `X-Busbar-Auth-Method` in the exchange head) is
//! taken from the gateway, the only kind of peer that gets through the handshake, and given
//! to the proxy's hooks; it never reaches the engine ([`busbar_http::identity`]).
//!
//! `Describe` answers the gateways' health probes at once, from what the agent keeps
//! ([`super::engine_state`]): the node's identity, the engine's health from its own pings, the
//! engine's `/version` and `/info` and the containers' reservations (fetched in the background,
//! waited for only as long as the gateway says), and the adapter chains' status as the chain
//! source keeps it (what runs, from where, and why the latest change was refused if it was).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use busbar_api::{endpoint, ApiPath};
use busbar_chains::scoped::ChainStatus;
use busbar_hop::frames::{self as exchange, Inbound};
use busbar_hop::io::{buffered, Unvectored};
use busbar_hop::v1::agent_server::{Agent, AgentServer};
use busbar_hop::v1::{DescribeRequest, ExchangeFrame, Head, NodeDescription};
use busbar_http::body::empty;
use busbar_http::headers::wants_upgrade;
use busbar_http::hijack::{splice, Hijacked};
use busbar_http::identity::{self, ClientIdentity};
use busbar_http::server::canonicalize;
use busbar_http::server::Refused;
use busbar_http::{access, error, Body, RequestCtx};
use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn, Instrument};

use super::engine_state::{EngineState, Health, FETCH_TIMEOUT};
use crate::proxy::Proxy;

/// What this node says about itself.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub advertise: String,
}

/// The service: one per agent.
pub struct AgentService {
    /// The proxy and the node's name, for each request.
    served: Served,
    /// Whether `Lane` is served (off: the test double of an agent older than lanes).
    lanes: bool,
    node: NodeIdentity,
    /// The chains' status as the chain source keeps it (`Describe` carries it to gateways).
    chains: Option<watch::Receiver<ChainStatus>>,
    /// The engine's health and documents, kept for `Describe` (see [`super::engine_state`]).
    engine: Arc<EngineState>,
}

impl AgentService {
    /// Serves `proxy` as node `node`, which the proxy's hook calls name to adapters.
    pub fn new(proxy: Arc<Proxy>, node: NodeIdentity) -> Self {
        proxy.set_node(crate::hooks::adapter::NodeInfo {
            name: node.name.clone(),
            labels: node.labels.clone(),
        });
        AgentService {
            engine: EngineState::new(proxy.clone()),
            served: Served {
                proxy: proxy.clone(),
                node: node.name.clone(),
            },
            lanes: true,
            node,
            chains: None,
        }
    }

    /// Answers `Lane` with UNIMPLEMENTED, as an agent older than lanes does: a test double
    /// of such an agent (the hidden `--no-lanes` flag), for the tests of the negotiation.
    pub fn without_lanes(mut self) -> Self {
        self.lanes = false;
        self
    }

    /// Reports the chains' status from `status` in `Describe` (without it, nothing is reported).
    pub fn with_chain_status(mut self, status: watch::Receiver<ChainStatus>) -> Self {
        self.chains = Some(status);
        self
    }
}

pub type FrameStream = Pin<Box<dyn Stream<Item = Result<ExchangeFrame, Status>> + Send>>;

/// How long a gateway may take to send the head of an exchange it opened.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The request head of an `Exchange` call, and whether it came as metadata (a bodiless call:
/// no frame follows) rather than as the first frame (read within [`HEAD_TIMEOUT`]).
pub async fn read_head(
    metadata: &tonic::metadata::MetadataMap,
    frames: &mut Streaming<ExchangeFrame>,
) -> Result<(Head, bool), Status> {
    if let Some(head) = exchange::head_from_metadata(metadata)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
    {
        return Ok((head, true));
    }
    let first = tokio::time::timeout(HEAD_TIMEOUT, frames.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no request head within 30s"))??;
    let head = exchange::expect_head(first).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok((head, false))
}

/// What serving a request needs, owned, so that a lane's stream can keep it.
#[derive(Clone)]
pub struct Served {
    proxy: Arc<Proxy>,
    node: String,
}

impl Served {
    /// The request `head` and `body` make, read as the engine will read it (a path the
    /// engine would read otherwise is refused, see `canonicalize`), and whether it may be
    /// hijacked.
    pub fn prepare(
        &self,
        head: Head,
        body: Body,
    ) -> Result<(http::Request<Body>, Option<Refused>, bool), Status> {
        let mut req = exchange::to_request(head, body)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A gateway sends canonical paths; whatever arrives is read as the engine will read it.
        let refused = canonicalize(&mut req).err();
        let may_hijack = ApiPath::parse(req.uri().path())
            .is_ok_and(|p| endpoint::is_hijack(req.method(), &p))
            || wants_upgrade(req.headers());
        Ok((req, refused, may_hijack))
    }

    /// Serves `req` through the proxy (or answers why it was `refused`).
    pub async fn handle(
        &self,
        mut req: http::Request<Body>,
        refused: Option<Refused>,
    ) -> (RequestCtx, http::Response<Body>) {
        // Every peer here is a gateway (the handshake checked its role): the client identity
        // it wrote into the head is the one its listener verified. Taken out of the request,
        // so that the engine gets exactly what the client sent.
        let identity = ClientIdentity::from_headers(req.headers()).map(Arc::new);
        let skip_hooks = req
            .headers()
            .get(&identity::HOOKS)
            .is_some_and(|v| v == "off");
        identity::strip_reserved(req.headers_mut());
        let mut ctx = RequestCtx::new(&req);
        ctx.set_node(self.node.as_str());
        ctx.set_identity(identity);
        // An adapter's own call, through a gateway: no chain runs on it (no recursion).
        ctx.skip_hooks = skip_hooks;
        // Served in the RPC's own task, up to the response head: no hand-off to another task
        // on the way to the engine and back (each costs a wake-up).
        let rsp = match refused {
            Some(e) => error::error(&e),
            None => {
                self.proxy
                    .handle(req, &ctx)
                    .instrument(ctx.span.clone())
                    .await
            }
        };
        (ctx, rsp)
    }
}

/// The frames of a response that is not hijacked: a small answer already complete is sent
/// as it is; a stream is read from the engine as the gateway takes it, by whoever polls the
/// frames (the RPC's own task).
pub fn response_frames(ctx: RequestCtx, rsp: http::Response<Body>) -> FrameStream {
    let (parts, mut body) = rsp.into_parts();
    let status = parts.status.as_u16();
    let head = exchange::head_frame(exchange::response_head(&parts));
    if let Some(whole) = exchange::ready_body(&mut body) {
        access::log(&ctx, status, whole.len() as u64);
        let frames = exchange::whole_frames(head, whole).into_iter().map(Ok);
        return Box::pin(futures_util::stream::iter(frames));
    }
    let body = access::logged_body(body, &ctx, status);
    let span = ctx.span.clone();
    let body = exchange::body_frames(body).map(move |frame| {
        frame.map_err(|e| {
            let _entered = span.enter();
            warn!(error = %e, "engine stream broke");
            Status::unavailable(format!("the engine's stream broke: {e}"))
        })
    });
    Box::pin(futures_util::stream::iter([Ok(head)]).chain(body))
}

#[tonic::async_trait]
impl Agent for AgentService {
    type ExchangeStream = FrameStream;
    type LaneStream = FrameStream;

    async fn exchange(
        &self,
        request: tonic::Request<Streaming<ExchangeFrame>>,
    ) -> Result<tonic::Response<FrameStream>, Status> {
        let (metadata, _, mut frames) = request.into_parts();
        let (head, bodiless) = read_head(&metadata, &mut frames).await?;
        let (early, ended) = if bodiless {
            (vec![], true)
        } else {
            exchange::take_ready(&mut frames)
        };
        let (mut req, refused, may_hijack) = self.served.prepare(head, empty())?;
        let Inbound { body, raw } = exchange::route_inbound_after(early, ended, may_hijack, frames);
        *req.body_mut() = body;
        let (ctx, mut rsp) = self.served.handle(req, refused).await;
        let Some(pending) = Hijacked::take(&mut rsp) else {
            return Ok(tonic::Response::new(response_frames(ctx, rsp)));
        };
        let (parts, body) = rsp.into_parts();
        let status = parts.status.as_u16();
        let head = exchange::head_frame(exchange::response_head(&parts));
        access::log(&ctx, status, 0);
        let (out_tx, out_rx) = mpsc::channel(8);
        let span = ctx.span.clone();
        tokio::spawn(
            async move {
                if out_tx.send(Ok(head)).await.is_err() {
                    return debug!("gateway went away before the response head");
                }
                if let Err(e) = exchange::send_body(body, &out_tx, Ok).await {
                    warn!(error = %e, "engine stream broke");
                    let _ = out_tx
                        .send(Err(Status::unavailable(format!(
                            "the engine's stream broke: {e}"
                        ))))
                        .await;
                    return;
                }
                let engine = match pending.await {
                    Ok(io) => io,
                    Err(e) => return warn!(error = %e, "engine upgrade failed"),
                };
                let gateway = exchange::raw_stream(raw, out_tx, Ok);
                match splice(gateway, engine).await {
                    Ok(n) => debug!(
                        to_engine = n.to_engine,
                        to_client = n.to_client,
                        "hijacked stream closed"
                    ),
                    Err(e) => debug!(error = %e, "hijacked stream broke"),
                }
            }
            .instrument(span),
        );
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn lane(
        &self,
        request: tonic::Request<Streaming<ExchangeFrame>>,
    ) -> Result<tonic::Response<FrameStream>, Status> {
        if !self.lanes {
            // The test double of an agent older than lanes (`--no-lanes`): what tonic answers
            // for a method it does not serve.
            return Err(Status::unimplemented(
                "lanes are off on this agent (--no-lanes)",
            ));
        }
        let inbound = request.into_inner();
        Ok(tonic::Response::new(super::lane::serve_lane(
            self.served.clone(),
            inbound,
        )))
    }

    async fn describe(
        &self,
        request: tonic::Request<DescribeRequest>,
    ) -> Result<tonic::Response<NodeDescription>, Status> {
        let arrived = tokio::time::Instant::now();
        let asked = request.into_inner();
        // A gateway older than these fields wants documents fetched for its call.
        let (wait, max_age) = match asked.wait_ms {
            0 => (FETCH_TIMEOUT, Duration::ZERO),
            ms => (
                Duration::from_millis(ms.into()),
                Duration::from_millis(asked.max_age_ms.into()),
            ),
        };
        let mut d = NodeDescription {
            name: self.node.name.clone(),
            labels: self.node.labels.clone().into_iter().collect(),
            advertise: self.node.advertise.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            chain_status_json: self.chains.as_ref().map_or_else(Vec::new, |rx| {
                serde_json::to_vec(&*rx.borrow()).expect("a chain status serializes")
            }),
            adapter_stats_json: adapter_stats_json(),
            ..Default::default()
        };
        let docs_wait = match self.engine.health(wait).await {
            Health::Reachable => {
                d.engine_reachable = true;
                (arrived + wait).saturating_duration_since(tokio::time::Instant::now())
            }
            Health::Unreachable(e) => {
                d.engine_error = e;
                Duration::ZERO
            }
            Health::Unknown => {
                d.engine_error = format!("the engine has not answered /_ping within {wait:?}");
                Duration::ZERO
            }
        };
        let answer = self.engine.documents(arrived, max_age, docs_wait).await;
        if let Some(docs) = answer.docs {
            d.engine_version_json = docs.version.clone();
            d.engine_info_json = docs.info.clone();
            (d.reserved_memory, d.reserved_nano_cpus) = docs.reserved;
            d.docs_cached = answer.cached;
            d.docs_age_ms = u64::try_from(answer.age.as_millis()).unwrap_or(u64::MAX);
        }
        Ok(tonic::Response::new(d))
    }
}

/// The agent's adapter totals as `NodeDescription.adapter_stats_json` carries them.
fn adapter_stats_json() -> Vec<u8> {
    let list: Vec<_> = busbar_metrics::global()
        .recent
        .adapters()
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "adapter": t.adapter,
                "calls": t.calls,
                "errors": t.errors,
                "timeouts": t.timeouts,
                "refusals": t.refusals,
                "seconds": t.seconds,
            })
        })
        .collect();
    serde_json::to_vec(&list).expect("numbers and strings serialize")
}

/// Serves the agent service on `listener` with mutual TLS until `shutdown`, then gives open
/// calls `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: AgentService,
    shutdown: CancellationToken,
    grace: Duration,
) {
    service.engine.spawn(&shutdown);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = mpsc::channel(16);
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let accept_shutdown = shutdown.clone();
    tokio::spawn(async move {
        // Out of file descriptors and the like: back off instead of spinning.
        let mut backoff =
            busbar_runtime::Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
        loop {
            let accepted = tokio::select! {
                _ = accept_shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => {
                    backoff.reset();
                    c
                }
                Err(e) => {
                    warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                // The verifier logs why a peer was refused; this adds who.
                let handshake = acceptor.accept(buffered(tcp)).into_fallible();
                match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(Unvectored(tls))).await;
                    }
                    Ok(Err((e, mut io))) => {
                        warn!(peer = %peer, error = %e, "TLS handshake refused");
                        // rustls wrote its alert (why the peer is refused) into the buffer
                        // under TLS: sent, so the peer's error says why, not just "closed".
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                    }
                    Err(_) => warn!(peer = %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    info!(grpc_listen = %local, "serving gateways (gRPC, mutual TLS)");
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .max_frame_size(exchange::MAX_H2_FRAME)
        .add_service(AgentServer::new(service).max_decoding_message_size(4 * exchange::MAX_CHUNK))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown.cancelled());
    // On shutdown tonic stops accepting and waits for every open call; a gateway's endless
    // stream (`logs -f`, `events`, an attach) never ends by itself, so after the grace period
    // the server is dropped: its connections close and the gateway's clients get an error.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => if let Err(e) = result {
            warn!(error = %e, "gRPC server ended");
        },
        _ = deadline => warn!(?grace, "gateway streams still open after the grace period; closing them"),
    }
}

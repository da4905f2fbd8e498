//! The gateway's side of the gRPC hop: a link to one agent.
//!
//! One HTTP/2 connection per agent carries every exchange, multiplexed; the health probes
//! (`Describe`) have a second one of their own, so that a probe never waits behind real
//! traffic (a stream's flow-control window, a burst of calls). Each is dialed on first
//! use and again on demand after a failure, with backoff ([`DialGate`]); HTTP/2 keepalives
//! (every 10 s, 5 s to answer) notice an agent that vanished mid-stream, so a client's stream
//! then ends with an error instead of hanging. TLS is mutual: we present the gateway
//! certificate, and accept only an agent certificate, signed by the cluster CA, whose name is
//! the node we meant to reach (the TLS server name is the node name, not the address).
//!
//! Exchanges go on lanes (see [`crate::lanes`]) when the agent serves them and lanes are on
//! ([`set_lanes_default`], the gateway's `--hop-lanes`, on by default): an ordinary call is then a few DATA
//! frames on a long-lived stream. Attach and exec start, and every exchange to an agent older
//! than lanes or past the pool's bound, go by an `Exchange` call of their own.
//!
//! The gRPC client runs on hyper-util's pooled HTTP/2 client, called from the request's own
//! task: tonic's `Channel` would put a buffer worker task between every call and the
//! connection, a wake-up per call each way. gRPC statuses are read here and nowhere else in
//! the gateway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busbar_api::{endpoint, ApiPath};
use busbar_hop::frames::{self as exchange, Inbound};
use busbar_hop::io::{buffered, Buffered, Unvectored};
use busbar_hop::v1::agent_client::AgentClient;
use busbar_hop::v1::{DescribeRequest, ExchangeFrame, NodeDescription};
use busbar_http::body::{empty, full};
use busbar_http::error::error_chain;
use busbar_http::headers::wants_upgrade;
use busbar_http::hijack::Hijacked;
use busbar_http::{identity, Body, DockerError, RequestCtx, REQUEST_ID};
use http_body_util::BodyExt;
use tracing::info;

use crate::lanes::{self, Lane, Pool, Reading, RequestSide};
use busbar_hop::lane::LaneBody;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// How long dialing an agent (TCP and the TLS handshake) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keepalive: a ping this often, and the connection is dead if unanswered this long.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(5));

/// Why an exchange with an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node {node} ({addr}): agent unreachable: {reason}")]
    Unreachable {
        node: String,
        addr: String,
        reason: String,
    },
    #[error("node {node} ({addr}): {reason}")]
    Failed {
        node: String,
        addr: String,
        reason: String,
    },
    #[error("node {node}: invalid agent address {addr:?}: {reason}")]
    BadAddress {
        node: String,
        addr: String,
        reason: String,
    },
}

impl DockerError for AgentError {
    fn status(&self) -> StatusCode {
        match self {
            AgentError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::Failed { .. } | AgentError::BadAddress { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The HTTP/2 client the gRPC calls run on.
#[derive(Clone)]
struct Transport(Client<Dialer, tonic::body::Body>);

/// Marks a call whose request stream is known to be empty (see [`Transport`]).
#[derive(Clone, Copy)]
struct HeadOnly;

/// Sends a call marked [`HeadOnly`] with a body that says it is empty before it is polled:
/// hyper then sends `HEADERS` with `END_STREAM`, in the same write, rather than `HEADERS` first
/// and the (empty) body's end from a task of its own once flow control allows.
impl tower_service::Service<Request<tonic::body::Body>> for Transport {
    type Response = Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        if req.extensions().get::<HeadOnly>().is_some() {
            *req.body_mut() = tonic::body::Body::empty();
        }
        self.0.request(req)
    }
}

/// Whether new links use lanes (the gateway's `--hop-lanes`).
static LANES_DEFAULT: AtomicBool = AtomicBool::new(LANES_BY_DEFAULT);
/// Lanes are on unless `--hop-lanes off`.
pub const LANES_BY_DEFAULT: bool = true;

/// Whether links made from now on carry exchanges on lanes (`--hop-lanes`).
pub fn set_lanes_default(on: bool) {
    LANES_DEFAULT.store(on, Ordering::Relaxed);
}

/// A link to one agent: one connection for the exchanges, another for the probes.
#[derive(Clone)]
pub struct AgentLink {
    node: String,
    addr: String,
    client: AgentClient<Transport>,
    probes: AgentClient<Transport>,
    lanes: Arc<Pool>,
}

impl AgentLink {
    /// Prepares the link; nothing is dialed until the first call.
    pub fn new(
        node: &str,
        addr: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<AgentLink, AgentError> {
        let bad = |reason: String| AgentError::BadAddress {
            node: node.to_owned(),
            addr: addr.to_owned(),
            reason,
        };
        let server_name = ServerName::try_from(node.to_owned()).map_err(|e| bad(e.to_string()))?;
        let origin: Uri = format!("http://{addr}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        let dialer = Dialer {
            addr: addr.to_owned(),
            server_name,
            tls: tokio_rustls::TlsConnector::from(tls),
            backoff: Arc::new(Mutex::new(DialGate::default())),
        };
        let client = |dialer: Dialer| {
            let transport = Client::builder(TokioExecutor::new())
                .http2_only(true)
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                // One connection per agent, kept for good: keepalives watch it while idle.
                .pool_idle_timeout(None)
                .http2_keep_alive_interval(KEEPALIVE.0)
                .http2_keep_alive_timeout(KEEPALIVE.1)
                .http2_keep_alive_while_idle(true)
                .http2_max_frame_size(exchange::MAX_H2_FRAME)
                .build(dialer);
            AgentClient::with_origin(Transport(transport), origin.clone())
                .max_decoding_message_size(4 * exchange::MAX_CHUNK)
        };
        // The probes' own connection (its own dials and backoff): never queued behind the
        // exchanges' streams or their flow-control windows.
        let probes = client(Dialer {
            backoff: Arc::new(Mutex::new(DialGate::default())),
            ..dialer.clone()
        });
        Ok(AgentLink {
            node: node.to_owned(),
            addr: addr.to_owned(),
            client: client(dialer),
            probes,
            lanes: Pool::new(
                LANES_DEFAULT.load(Ordering::Relaxed),
                lanes::MAX_LANES,
                lanes::IDLE,
            ),
        })
    }

    /// The same link with lanes on or off, and at most `max` of them (for tests).
    pub fn with_lanes(mut self, on: bool, max: usize, idle: Duration) -> AgentLink {
        self.lanes = Pool::new(on, max, idle);
        self
    }

    /// Lanes open to this agent now (busy and idle), idle now, and whether the agent was
    /// found to lack them.
    pub fn lane_counts(&self) -> (usize, usize, bool) {
        let (open, idle) = self.lanes.counts();
        (open, idle, self.lanes.unsupported())
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Carries one Docker API call to the agent. The response streams back as it comes; a
    /// `101` carries the hijacked stream (see [`Hijacked`]).
    pub async fn exchange(
        &self,
        req: Request<Body>,
        ctx: &RequestCtx,
    ) -> Result<Response<Body>, AgentError> {
        let (mut parts, body) = req.into_parts();
        if let Ok(id) = http::HeaderValue::from_str(&ctx.id) {
            parts.headers.insert(REQUEST_ID.clone(), id);
        }
        // The agent's span is a child of this gateway's.
        ctx.write_trace(&mut parts.headers);
        // The client's identity travels in the head, written here from what our own listener
        // verified, never from what the client sent (removed already at our door; removed
        // again, so that no path can forward a copy). The agent trusts it from us alone.
        identity::strip_reserved(&mut parts.headers);
        if ctx.skip_hooks {
            parts.headers.insert(
                identity::HOOKS.clone(),
                http::HeaderValue::from_static("off"),
            );
        }
        if let Some(identity) = &ctx.identity {
            identity.write_headers(&mut parts.headers);
        }
        let head = exchange::request_head(&parts);
        // Only attach and exec start (or an explicit upgrade) can turn into a raw stream.
        let may_hijack = ApiPath::parse(parts.uri.path())
            .is_ok_and(|p| endpoint::is_hijack(&parts.method, &p))
            || wants_upgrade(&parts.headers);
        let body = if !may_hijack && self.lanes.usable() {
            match self.lane().await? {
                Some(lane) => {
                    let retry = lane.reused
                        && http_body::Body::is_end_stream(&body)
                        && matches!(parts.method, http::Method::GET | http::Method::HEAD);
                    let head_again = retry.then(|| head.clone());
                    match self.on_lane(lane, head, body).await {
                        Ok(rsp) => return Ok(rsp),
                        // A reused lane that failed before any answer: most likely the agent
                        // restarted while it sat idle. A bodiless GET or HEAD goes again, on
                        // a call of its own.
                        Err(LaneFailure::BeforeHead(_)) if retry => {
                            return self
                                .by_call(head_again.expect("kept"), empty(), false, &parts)
                                .await;
                        }
                        Err(LaneFailure::BeforeHead(e) | LaneFailure::After(e)) => return Err(e),
                    }
                }
                None => body,
            }
        } else {
            body
        };
        self.by_call(head, body, may_hijack, &parts).await
    }

    /// A lane for one exchange: an idle one, or a new one while the pool allows. `None`: the
    /// pool is full, or the agent has no lanes (learned here from its UNIMPLEMENTED).
    async fn lane(&self) -> Result<Option<Lane>, AgentError> {
        if let Some(lane) = self.lanes.take() {
            return Ok(Some(lane));
        }
        let Some(slot) = self.lanes.reserve() else {
            return Ok(None);
        };
        let (out, rx) = mpsc::channel(lanes::WINDOW);
        match self.client.clone().lane(ReceiverStream::new(rx)).await {
            Ok(rsp) => {
                self.lanes.learned(true);
                Ok(Some(Lane::new(out, rsp.into_inner(), slot)))
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                if self.lanes.learned(false) {
                    info!(node = %self.node, "the agent has no lanes (an older agent?): one call per exchange");
                }
                Ok(None)
            }
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Carries one exchange on `lane`: the request's head, body and `eof`, then the response,
    /// whose body reads the lane's frames up to its `eof` and then gives the lane back.
    async fn on_lane(
        &self,
        mut lane: Lane,
        head: busbar_hop::v1::Head,
        body: Body,
    ) -> Result<Response<Body>, LaneFailure> {
        let broken = |_| LaneFailure::BeforeHead(self.failed("the lane closed".into()));
        let out = lane
            .out
            .take()
            .expect("a lane out of the pool has its sender");
        out.send(exchange::head_frame(head)).await.map_err(broken)?;
        let side = if http_body::Body::is_end_stream(&body) {
            out.send(exchange::eof_frame()).await.map_err(broken)?;
            RequestSide::Sent(out)
        } else {
            let (back, sending) = oneshot::channel();
            tokio::spawn(async move {
                if exchange::send_body(body, &out, std::convert::identity)
                    .await
                    .is_ok()
                    && !out.is_closed()
                {
                    let _ = back.send(out);
                }
            });
            RequestSide::Sending(sending)
        };
        let first = lane
            .inbound
            .message()
            .await
            .map_err(|s| LaneFailure::BeforeHead(self.status_error(s)))?;
        if first.is_none() {
            return Err(LaneFailure::BeforeHead(
                self.failed("the agent ended the lane before answering".into()),
            ));
        }
        let failed = |e: String| LaneFailure::After(self.failed(e));
        let head = exchange::expect_head(first).map_err(|e| failed(e.to_string()))?;
        let (early, ended) = exchange::take_ready(&mut lane.inbound);
        let body = if ended {
            lanes::release(&self.lanes, lane, side);
            full(bytes::Bytes::from(early.concat()))
        } else {
            let reading = Reading::new(lane, self.lanes.clone(), side);
            BodyExt::boxed(LaneBody::new(early, reading, "response"))
        };
        let rsp = exchange::to_response(head, body).map_err(|e| failed(e.to_string()))?;
        if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(failed("the agent switched protocols on a lane".into()));
        }
        Ok(rsp)
    }

    /// Carries one exchange on an `Exchange` call of its own.
    async fn by_call(
        &self,
        head: busbar_hop::v1::Head,
        body: Body,
        may_hijack: bool,
        parts: &http::request::Parts,
    ) -> Result<Response<Body>, AgentError> {
        let mut out = None;
        let mut pump = None;
        let call = if http_body::Body::is_end_stream(&body) && !may_hijack {
            // Most calls: the head travels as metadata and the call goes out as one HEADERS
            // frame, instead of HEADERS, then DATA in a second write (and wake-up) of its own.
            let mut call = tonic::Request::new(futures_util::stream::empty());
            call.metadata_mut()
                .insert_bin(exchange::HEAD_METADATA, exchange::head_metadata(&head));
            call.extensions_mut().insert(HeadOnly);
            self.client.clone().exchange(call).await
        } else {
            let (out_tx, out_rx) = mpsc::channel::<ExchangeFrame>(8);
            out_tx
                .send(exchange::head_frame(head))
                .await
                .expect("the receiver is held right here");
            if http_body::Body::is_end_stream(&body) {
                let _ = out_tx.send(exchange::eof_frame()).await;
            } else {
                let out_tx = out_tx.clone();
                pump = Some(tokio::spawn(async move {
                    exchange::send_body(body, &out_tx, std::convert::identity).await
                }));
            }
            // Only a call that may be hijacked keeps its side of the stream open after the body.
            out = may_hijack.then_some(out_tx);
            self.client
                .clone()
                .exchange(ReceiverStream::new(out_rx))
                .await
        };
        let mut frames = call.map_err(|s| self.status_error(s))?.into_inner();
        let first = frames.message().await.map_err(|s| self.status_error(s))?;
        let head = exchange::expect_head(first).map_err(|e| self.failed(e.to_string()))?;
        let (early, ended) = exchange::take_ready(&mut frames);
        let Inbound { body, raw } = exchange::route_inbound_after(early, ended, may_hijack, frames);
        let mut rsp = exchange::to_response(head, body).map_err(|e| self.failed(e.to_string()))?;
        if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(out_tx) = out else {
                return Err(self.failed(format!(
                    "the agent switched protocols on {} {}",
                    parts.method,
                    parts.uri.path()
                )));
            };
            Hijacked::attach(&mut rsp, async move {
                // The request body (empty for attach/exec) is sent before any raw byte.
                if let Some(pump) = pump {
                    let _ = pump.await;
                }
                Ok(exchange::raw_stream(raw, out_tx, std::convert::identity))
            });
        }
        Ok(rsp)
    }

    /// The node's description as `asked`, within `timeout`, on the probes' connection.
    pub async fn describe(
        &self,
        asked: DescribeRequest,
        timeout: Duration,
    ) -> Result<NodeDescription, AgentError> {
        match tokio::time::timeout(timeout, self.probes.clone().describe(asked)).await {
            Ok(Ok(rsp)) => Ok(rsp.into_inner()),
            Ok(Err(s)) => Err(self.status_error(s)),
            Err(_) => Err(self.failed(format!("no answer within {timeout:?}"))),
        }
    }

    /// A failure of a call to this agent, for `reason`.
    pub fn failed(&self, reason: String) -> AgentError {
        AgentError::Failed {
            node: self.node.clone(),
            addr: self.addr.clone(),
            reason,
        }
    }

    fn status_error(&self, status: tonic::Status) -> AgentError {
        let source = std::error::Error::source(&status);
        let reason = match source {
            Some(src) => format!("{}: {}", status.message(), cause(src)),
            None => status.message().to_owned(),
        };
        let no_connection = source
            .and_then(|e| e.downcast_ref::<hyper_util::client::legacy::Error>())
            .is_some_and(|e| e.is_connect());
        if no_connection || status.code() == tonic::Code::Unavailable {
            AgentError::Unreachable {
                node: self.node.clone(),
                addr: self.addr.clone(),
                reason,
            }
        } else {
            self.failed(reason)
        }
    }
}

/// How an exchange on a lane failed: before its response head (nothing of the answer was
/// seen), or after.
enum LaneFailure {
    BeforeHead(AgentError),
    After(AgentError),
}

/// What went wrong under a failed call, in words for a Docker client: the source chain, except
/// that a connection the agent dropped mid-call (rustls' "peer closed connection without
/// sending TLS close_notify" and a link to its manual) is said plainly.
fn cause(src: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = Some(src);
    while let Some(e) = cur {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return "the agent's connection closed in the middle of the call (the agent stopped or crashed?)".into();
        }
        cur = e.source();
    }
    error_chain(src)
}

/// Dials the agent: TCP, then TLS with the node name as server name, within [`DIAL_TIMEOUT`],
/// and not before the backoff after a failed dial allows.
#[derive(Clone)]
struct Dialer {
    addr: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    backoff: Arc<Mutex<DialGate>>,
}

/// TLS to the agent, unvectored and buffered (see [`Unvectored`] and [`Buffered`]).
type Io = TokioIo<Unvectored<tokio_rustls::client::TlsStream<Buffered<TcpStream>>>>;

impl Dialer {
    async fn dial(self) -> std::io::Result<Io> {
        let connect = async {
            let tcp = TcpStream::connect(&self.addr).await?;
            tcp.set_nodelay(true)?;
            let handshake = self
                .tls
                .connect(self.server_name.clone(), buffered(tcp))
                .into_fallible();
            match handshake.await {
                Ok(tls) => Ok::<_, std::io::Error>(TokioIo::new(Unvectored(tls))),
                Err((e, mut io)) => {
                    // rustls' alert (why the agent is refused) waits in the buffer: send it.
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                    Err(e)
                }
            }
        };
        tokio::time::timeout(DIAL_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {DIAL_TIMEOUT:?}"),
                ))
            })
    }
}

impl tower_service::Service<Uri> for Dialer {
    type Response = Io;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<Io>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let dialer = self.clone();
        Box::pin(async move {
            let backoff = dialer.backoff.clone();
            if let Some(refused) = backoff.lock().expect("backoff lock").refuse(Instant::now()) {
                return Err(refused);
            }
            let result = dialer.dial().await;
            backoff
                .lock()
                .expect("backoff lock")
                .record(result.as_ref().err(), Instant::now());
            result
        })
    }
}

/// The reconnection gate: after a failed dial, calls fail at once with that failure until a
/// delay has passed, which doubles with each consecutive failure from 100 ms up to 2 s (the
/// runtime's [`busbar_runtime::Backoff`]); a successful dial resets it. A dead agent is then
/// dialed a few times a second at most, however many calls arrive, and found again within 2 s
/// of its return.
#[derive(Debug)]
struct DialGate {
    delays: busbar_runtime::Backoff,
    retry_at: Option<Instant>,
    last_error: String,
}

impl Default for DialGate {
    fn default() -> Self {
        DialGate {
            delays: busbar_runtime::Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(2),
            ),
            retry_at: None,
            last_error: String::new(),
        }
    }
}

impl DialGate {
    /// The error to fail with now, if the gate forbids a dial.
    fn refuse(&self, now: Instant) -> Option<std::io::Error> {
        let retry_at = self.retry_at.filter(|&at| now < at)?;
        Some(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "{} (next attempt in {} ms)",
                self.last_error,
                (retry_at - now).as_millis()
            ),
        ))
    }

    fn record(&mut self, error: Option<&std::io::Error>, now: Instant) {
        match error {
            None => *self = DialGate::default(),
            Some(e) => {
                self.retry_at = Some(now + self.delays.next_delay());
                self.last_error = e.to_string();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_on_success() {
        let mut b = DialGate::default();
        let t0 = Instant::now();
        assert!(b.refuse(t0).is_none(), "the first dial is never held back");
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let mut delays = vec![];
        for _ in 0..7 {
            b.record(Some(&refused), t0);
            delays.push(b.retry_at.unwrap() - t0);
        }
        let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
        let err = b
            .refuse(t0 + Duration::from_millis(500))
            .expect("still backing off");
        assert!(
            err.to_string()
                .starts_with("connection refused (next attempt in 1500 ms)"),
            "{err}"
        );
        assert!(
            b.refuse(t0 + Duration::from_secs(2)).is_none(),
            "a dial is allowed once the delay passed"
        );
        b.record(None, t0);
        assert!(b.refuse(t0).is_none());
        b.record(Some(&refused), t0);
        assert_eq!(
            b.retry_at.unwrap() - t0,
            Duration::from_millis(100),
            "a success starts over"
        );
    }
}

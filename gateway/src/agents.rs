//! The gateway's side of the gRPC hop: a link to one agent.
//!
//! One HTTP/2 connection per agent carries every exchange, multiplexed. The connection is
//! made lazily and remade on demand after a failure (tonic's reconnecting channel); HTTP/2
//! keepalives (every 10 s, 5 s to answer) notice an agent that vanished mid-stream, so a
//! client's stream then ends with an error instead of hanging. TLS is mutual: we present the
//! gateway certificate, and accept only an agent certificate, signed by the cluster CA, whose
//! name is the node we meant to reach (the TLS server name is the node name, not the address).
//! gRPC statuses are read here and nowhere else in the gateway.

use std::sync::Arc;
use std::time::Duration;

use busbar_agent::exchange::{self, Inbound};
use busbar_agent::docker::hijack::Hijacked;
use busbar_agent::proxy::{Body, RequestCtx, REQUEST_ID};
use busbar_agent::respond::DockerError;
use busbar_proto::v1::agent_client::AgentClient;
use busbar_proto::v1::{DescribeRequest, ExchangeFrame, NodeDescription};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Why an exchange with an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node {node} ({addr}): agent unreachable: {reason}")]
    Unreachable { node: String, addr: String, reason: String },
    #[error("node {node} ({addr}): {reason}")]
    Failed { node: String, addr: String, reason: String },
    #[error("node {node}: invalid agent address {addr:?}: {reason}")]
    BadAddress { node: String, addr: String, reason: String },
}

impl DockerError for AgentError {
    fn status(&self) -> StatusCode {
        match self {
            AgentError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::Failed { .. } | AgentError::BadAddress { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A link to one agent.
#[derive(Clone)]
pub struct AgentLink {
    node: String,
    addr: String,
    client: AgentClient<Channel>,
}

impl AgentLink {
    /// Prepares the link; nothing is dialed until the first call.
    pub fn new(node: &str, addr: &str, tls: Arc<rustls::ClientConfig>) -> Result<AgentLink, AgentError> {
        let bad = |reason: String| AgentError::BadAddress { node: node.to_owned(), addr: addr.to_owned(), reason };
        let server_name = ServerName::try_from(node.to_owned()).map_err(|e| bad(e.to_string()))?;
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let connector = tokio_rustls::TlsConnector::from(tls);
        let target = addr.to_owned();
        let channel = endpoint.connect_with_connector_lazy(tower_fn(move || {
            let (connector, server_name, target) = (connector.clone(), server_name.clone(), target.clone());
            async move {
                let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&target))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no TCP connection within 5s"))??;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }));
        let client = AgentClient::new(channel).max_decoding_message_size(4 * exchange::MAX_CHUNK);
        Ok(AgentLink { node: node.to_owned(), addr: addr.to_owned(), client })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Carries one Docker API call to the agent. The response streams back as it comes; a
    /// `101` carries the hijacked stream (see [`Hijacked`]).
    pub async fn exchange(&self, req: Request<Body>, ctx: &RequestCtx) -> Result<Response<Body>, AgentError> {
        let (mut parts, body) = req.into_parts();
        if let Ok(id) = http::HeaderValue::from_str(&ctx.id) {
            parts.headers.insert(REQUEST_ID.clone(), id);
        }
        let (out_tx, out_rx) = mpsc::channel::<ExchangeFrame>(8);
        out_tx
            .send(exchange::head_frame(exchange::request_head(&parts)))
            .await
            .expect("the receiver is held right here");
        // A bodiless request (most calls) goes out whole at once: head and end together.
        let pump = if http_body::Body::is_end_stream(&body) {
            let _ = out_tx.send(exchange::eof_frame()).await;
            tokio::spawn(async { Ok(()) })
        } else {
            let out_tx = out_tx.clone();
            tokio::spawn(async move { exchange::send_body(body, &out_tx, std::convert::identity).await })
        };
        let mut frames = self
            .client
            .clone()
            .exchange(ReceiverStream::new(out_rx))
            .await
            .map_err(|s| self.status_error(s))?
            .into_inner();
        let first = frames.message().await.map_err(|s| self.status_error(s))?;
        let head = exchange::expect_head(first).map_err(|e| self.failed(e.to_string()))?;
        let (early, ended) = exchange::take_ready(&mut frames);
        let Inbound { body, raw } = exchange::route_inbound_after(early, ended, frames);
        let mut rsp = exchange::to_response(head, body).map_err(|e| self.failed(e.to_string()))?;
        if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
            Hijacked::attach(&mut rsp, async move {
                // The request body (empty for attach/exec) is sent before any raw byte.
                let _ = pump.await;
                Ok(exchange::raw_stream(raw, out_tx, std::convert::identity))
            });
        }
        Ok(rsp)
    }

    /// The node's description, within `timeout`.
    pub async fn describe(&self, timeout: Duration) -> Result<NodeDescription, AgentError> {
        match tokio::time::timeout(timeout, self.client.clone().describe(DescribeRequest {})).await {
            Ok(Ok(rsp)) => Ok(rsp.into_inner()),
            Ok(Err(s)) => Err(self.status_error(s)),
            Err(_) => Err(self.failed(format!("no answer within {timeout:?}"))),
        }
    }

    fn failed(&self, reason: String) -> AgentError {
        AgentError::Failed { node: self.node.clone(), addr: self.addr.clone(), reason }
    }

    fn status_error(&self, status: tonic::Status) -> AgentError {
        let reason = match std::error::Error::source(&status) {
            Some(src) => format!("{}: {}", status.message(), busbar_agent::respond::error_chain(src)),
            None => status.message().to_owned(),
        };
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown if reason.contains("connect") || reason.contains("transport") => {
                AgentError::Unreachable { node: self.node.clone(), addr: self.addr.clone(), reason }
            }
            tonic::Code::Unavailable => AgentError::Unreachable { node: self.node.clone(), addr: self.addr.clone(), reason },
            _ => self.failed(reason),
        }
    }
}

/// A `tower::Service<Uri>` from a closure that ignores the URI (the address is fixed per agent).
fn tower_fn<F, Fut, T>(f: F) -> impl tower_service::Service<http::Uri, Response = T, Error = std::io::Error, Future = Fut> + Clone
where
    F: Fn() -> Fut + Clone,
    Fut: std::future::Future<Output = Result<T, std::io::Error>>,
{
    #[derive(Clone)]
    struct Svc<F>(F);
    impl<F, Fut, T> tower_service::Service<http::Uri> for Svc<F>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, std::io::Error>>,
    {
        type Response = T;
        type Error = std::io::Error;
        type Future = Fut;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), std::io::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Uri) -> Fut {
            (self.0)()
        }
    }
    Svc(f)
}

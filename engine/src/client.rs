//! The pooled HTTP/1.1 client to the engine.
//!
//! One [`EngineClient`] per engine, shared by every request: hyper-util's pool keeps idle
//! keep-alive connections (bounded), a connector dials the unix socket or TCP address with a
//! bounded connect time, and responses are returned as they arrive, never buffered. Once the
//! engine's response head has arrived there is deliberately no timeout: `logs -f`, `events` and
//! `wait` stay quiet for as long as they like.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpStream, UnixStream};

use busbar_http::body::{client_fault, incoming};
use busbar_http::error::error_chain;
use busbar_http::headers::strip_hop_by_hop;
use busbar_http::hijack::{Hijacked, RawStream};
use busbar_http::io::Stream;
use busbar_http::{Body, DockerError};
use http::StatusCode;

use super::EngineAddr;

/// Why a call to the engine failed. The engine's own error answers are not errors here: they
/// are responses, passed through as they are.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No connection could be made: the engine is down, or its socket is missing.
    #[error("cannot reach the Docker engine at {engine}: {reason}")]
    Unreachable { engine: EngineAddr, reason: String },
    /// The connection broke before the engine's response head arrived.
    #[error("the Docker engine at {engine} failed to answer: {reason}")]
    Failed { engine: EngineAddr, reason: String },
    /// The client's request body failed while it was sent on (bad framing, cut off, stalled):
    /// the client's fault, not the engine's.
    #[error("{0}")]
    ClientBody(String),
}

/// Settings of the engine client.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How long dialing the engine may take before the request fails.
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per engine.
    pub max_idle: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            connect_timeout: Duration::from_secs(5),
            max_idle: 32,
        }
    }
}

/// A cheap-to-clone handle on the pooled client of one engine.
#[derive(Clone)]
pub struct EngineClient {
    addr: EngineAddr,
    client: Client<EngineConnector, Body>,
}

impl EngineClient {
    pub fn new(addr: EngineAddr, opts: EngineOptions) -> Self {
        let connector = EngineConnector {
            addr: addr.clone(),
            timeout: opts.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(opts.max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .http1_preserve_header_case(true)
            .build(connector);
        EngineClient { addr, client }
    }

    pub fn addr(&self) -> &EngineAddr {
        &self.addr
    }

    /// Sends one request; `req`'s URI is origin-form (`/v1.41/info?x=1`), as clients send it.
    /// A `101` response keeps hyper's upgrade handle in its extensions, so the caller can take
    /// the hijacked connection with `hyper::upgrade::on`.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, EngineError> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // The pool keys connections by authority; the connector ignores it and dials `addr`.
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority("docker.engine")
            .path_and_query(path_and_query)
            .build()
            .expect("an origin-form path and a fixed authority make a valid URI");
        self.client.request(req).await.map_err(|e| {
            if let Some(fault) = client_fault(&e) {
                return EngineError::ClientBody(fault.to_string());
            }
            let reason = error_chain(&e);
            if e.is_connect() {
                EngineError::Unreachable {
                    engine: self.addr.clone(),
                    reason,
                }
            } else {
                EngineError::Failed {
                    engine: self.addr.clone(),
                    reason,
                }
            }
        })
    }

    /// Forwards one request and returns the engine's response as it arrives, with the hop-by-hop
    /// headers gone. A `101` carries the hijacked connection as a [`Hijacked`] extension, for
    /// the server that answers the client to splice.
    pub async fn forward(&self, req: Request<Body>) -> Result<Response<Body>, EngineError> {
        let mut rsp = self.send(req).await?;
        if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let engine = hyper::upgrade::on(&mut rsp);
            Hijacked::attach(&mut rsp, async move {
                let io = engine.await.map_err(io::Error::other)?;
                Ok(Box::new(TokioIo::new(io)) as Box<dyn RawStream>)
            });
        }
        let mut rsp = rsp.map(incoming);
        strip_hop_by_hop(rsp.headers_mut());
        Ok(rsp)
    }
}

impl DockerError for EngineError {
    fn status(&self) -> StatusCode {
        match self {
            // The engine is down: the service behind us is unavailable, retrying later may work.
            EngineError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Failed { .. } => StatusCode::BAD_GATEWAY,
            EngineError::ClientBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Dials the engine, whatever URI the pool asks for.
#[derive(Clone)]
pub struct EngineConnector {
    addr: EngineAddr,
    timeout: Duration,
}

impl tower_service::Service<Uri> for EngineConnector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (addr, timeout) = (self.addr.clone(), self.timeout);
        Box::pin(async move {
            let dial = async {
                Ok::<_, io::Error>(match &addr {
                    EngineAddr::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
                    EngineAddr::Tcp(hostport) => {
                        let s = TcpStream::connect(hostport.as_str()).await?;
                        s.set_nodelay(true)?;
                        Stream::Tcp(s)
                    }
                })
            };
            match tokio::time::timeout(timeout, dial).await {
                Ok(stream) => Ok(TokioIo::new(stream?)),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )),
            }
        })
    }
}

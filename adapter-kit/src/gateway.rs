//! A client of a gateway's adapter API (version 1):
//!
//! - `GET /_busbar/v1/nodes`: the cluster's nodes ([`Gateway::nodes`]);
//! - `ANY /_busbar/v1/nodes/NODE/ENGINE-PATH`: NODE's engine, with no chain run on the call
//!   ([`Gateway::engine`]), so an adapter may call it from inside its own hooks.
//!
//! Both need the certificate of an adapter (`busbarctl certs issue --role adapter`) and the
//! gateway's `--tls-listen` with `--tlsverify`. The gateway's certificate is checked as the
//! Docker CLI checks a daemon's: it must chain to the CA given and be valid for the host name
//! of the URL.
//!
//! Every call has a deadline for its response head ([`Gateway::with_timeout`], 30 s by
//! default); a body streams for as long as it streams (an archive, an event stream), and
//! [`Engine::json`] bounds what it reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::Value;

/// What request bodies are made of.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body: [`empty`], [`json`], or any stream (an engine's response body, for one).
pub type Body = BoxBody<Bytes, BoxError>;

/// No body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A JSON body.
pub fn json(doc: &Value) -> Body {
    Full::new(Bytes::from(doc.to_string()))
        .map_err(|never| match never {})
        .boxed()
}

/// Another response's body, streamed through (never held whole).
pub fn stream(body: Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

/// The type of the bodies [`Engine::send`] and [`Engine::json`] send.
const JSON: &str = "application/json";

/// The largest answer [`Engine::json`] reads.
const MAX_JSON: usize = 64 << 20;

/// Why a call to the gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{what} {path}: {reason}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("gateway URL {0:?}: expected https://HOST[:PORT]")]
    Url(String),
    #[error("gateway {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("gateway {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The gateway or the engine answered with an error (Docker's `{"message"}` when it had one).
    #[error("{status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("reading the answer: {0}")]
    Body(String),
}

impl GatewayError {
    /// The status of an error answer (`None`: no answer at all).
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            GatewayError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A node as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub addr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `Healthy`, `Unhealthy`, `Pending`...
    pub health: String,
}

/// A client of one gateway's adapter API.
#[derive(Clone)]
pub struct Gateway {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    timeout: Duration,
}

impl Gateway {
    /// A client of the gateway at `url` (`https://HOST[:PORT]`) with this CA, certificate and
    /// key (PEM files).
    pub fn new(url: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Gateway, GatewayError> {
        let uri: Uri = url.parse().map_err(|_| GatewayError::Url(url.to_owned()))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(GatewayError::Url(url.to_owned()));
        }
        let tls = client_tls(ca, cert, key)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(Gateway {
            base: url.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            timeout: Duration::from_secs(30),
        })
    }

    /// The same client with another deadline for response heads.
    pub fn with_timeout(mut self, timeout: Duration) -> Gateway {
        self.timeout = timeout;
        self
    }

    /// The cluster's nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, GatewayError> {
        let rsp = self
            .send(Method::GET, "/_busbar/v1/nodes", JSON, empty())
            .await?;
        let doc = read_json(rsp).await?;
        serde_json::from_value(doc).map_err(|e| GatewayError::Body(e.to_string()))
    }

    /// Node `node`'s engine, past the chains.
    pub fn engine(&self, node: &str) -> Engine {
        Engine {
            gateway: self.clone(),
            prefix: format!("/_busbar/v1/nodes/{}", encode_segment(node)),
        }
    }

    async fn send(
        &self,
        method: Method,
        target: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Response<Incoming>, GatewayError> {
        let url = format!("{}{target}", self.base);
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|_| GatewayError::Url(url.clone()))?;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(rsp)) => Ok(rsp),
            Ok(Err(e)) => Err(GatewayError::Unreachable {
                url: self.base.clone(),
                reason: error_chain(&e),
            }),
            Err(_) => Err(GatewayError::Timeout {
                url: self.base.clone(),
                timeout: self.timeout,
            }),
        }
    }
}

/// One node's engine through the gateway.
#[derive(Clone)]
pub struct Engine {
    gateway: Gateway,
    prefix: String,
}

impl Engine {
    /// `method` on the engine's `path` (`/v1.41/volumes/data1`, with its query; segments
    /// percent-encoded by the caller), whatever the status: the response head within the
    /// gateway's deadline, the body as it streams.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<Response<Incoming>, GatewayError> {
        self.send_typed(method, path, JSON, body).await
    }

    /// [`Engine::send`] with a body of another type than JSON: `application/x-tar` for
    /// `PUT /containers/{id}/archive`, which the engine refuses under any other type.
    pub async fn send_typed(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Response<Incoming>, GatewayError> {
        self.gateway
            .send(
                method,
                &format!("{}{path}", self.prefix),
                content_type,
                body,
            )
            .await
    }

    /// `method` on `path` with an optional JSON body; the answer as JSON (`null` when empty),
    /// or [`GatewayError::Status`] with the engine's message for any status but 2xx.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, GatewayError> {
        let body = body.map(json).unwrap_or_else(empty);
        read_json(self.send(method, path, body).await?).await
    }
}

/// The JSON of a 2xx answer, or its error.
pub async fn read_json(rsp: Response<Incoming>) -> Result<Value, GatewayError> {
    let status = rsp.status();
    let bytes = Limited::new(rsp.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|e| GatewayError::Body(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(GatewayError::Status {
            status,
            message: error_message(&bytes),
        });
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| GatewayError::Body(format!("not JSON: {e}")))
}

/// Docker's `{"message"}`, or the body's first line.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
}

/// Percent-encodes what may not appear as such in a path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn client_tls(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, GatewayError> {
    let bad = |what: &'static str, path: &Path, reason: String| GatewayError::Tls {
        what,
        path: path.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad("CA", ca, e.to_string()))? {
        let c = c.map_err(|e| bad("CA", ca, e.to_string()))?;
        roots.add(c).map_err(|e| bad("CA", ca, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("CA", ca, "no certificate in it".into()));
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("certificate", cert, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, e.to_string()))?;
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| bad("certificate", cert, e.to_string()))
}

/// An error with its causes, one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

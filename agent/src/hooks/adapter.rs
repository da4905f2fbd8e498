//! Calls to adapters: one blocking `POST` per hook, with Powerstrip v1 JSON both ways.
//!
//! Powerstrip opened a fresh connection per call, waited forever, and hung the client when
//! an adapter failed. Here every call:
//! - reuses pooled keep-alive connections (one pool per CA setting, shared by all adapters);
//! - is bounded by the adapter's `timeout` (connect, send and the whole reply);
//! - reads at most [`MAX_REPLY`] bytes of reply;
//! - fails with a [`HookError`] that names the adapter and what went wrong.
//!
//! `https://` adapters are verified against the system's roots, or against the adapter's
//! `ca_file` only when one is given.
//!
//! # What an adapter is told
//! A v2 adapter (`protocol: 2`) gets [`busbar_protocol::v2`]'s JSON, with the request's
//! headers (credentials redacted unless its entry reveals them) and `Caller`. A v1 adapter
//! gets the Powerstrip v1 JSON (method, target with its query, body; see
//! [`busbar_chains::powerstrip`]) and three headers of busbar's own: `X-Request-Id`, and when
//! the client proved who it is (a `--tlsverify` certificate), `X-Busbar-User` (its subject
//! CN, percent-encoded) and `X-Busbar-Auth-Method: TLS` ([`busbar_http::identity`]). None of
//! the client's headers is passed on: not `Authorization`, `X-Registry-Auth` (the registry
//! credentials of `docker pull`/`push`) or `Cookie`, nor any other; no chain setting changes
//! that.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{de::DeserializeOwned, Serialize};

use busbar_chains::Adapter;
use busbar_http::error::error_chain;
use busbar_protocol::{redact, v2};

use super::log::{Entry, HookLog};
use busbar_http::{DockerError, RequestCtx, REQUEST_ID};

/// The largest adapter reply we read (a modified create body or inspect document is a few
/// KiB; a post-hook may return a buffered pull log, bounded by `max_buffer`).
pub const MAX_REPLY: usize = 256 * 1024 * 1024;

/// Why a hook could not be run. Each names the adapter; `respond` picks the status.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("adapter {adapter:?} at {url}: cannot connect: {reason}")]
    Unreachable {
        adapter: String,
        url: String,
        reason: String,
    },
    #[error("adapter {adapter:?} at {url}: no reply within {after:?}")]
    Timeout {
        adapter: String,
        url: String,
        after: Duration,
    },
    #[error("adapter {adapter:?} at {url}: invalid reply: {reason}")]
    BadReply {
        adapter: String,
        url: String,
        reason: String,
    },
    #[error("adapter {adapter:?} at {url}: refused the request path rewrite from {from:?} to {to:?}: only the query may change, or a path matching the same endpoints")]
    PathRewrite {
        adapter: String,
        url: String,
        from: String,
        to: String,
    },
    #[error("adapter {adapter:?} at {url}: refused the method change from {from} to {to}: a pre-hook may not change the method")]
    MethodRewrite {
        adapter: String,
        url: String,
        from: String,
        to: String,
    },
    #[error("the {what} is over the {limit}-byte limit for bodies given to adapters (max_buffer){}", size.map(|s| format!(": {s} bytes")).unwrap_or_default())]
    TooLarge {
        what: Message,
        limit: u64,
        size: Option<u64>,
    },
    #[error("cannot read the {what}: {reason}")]
    Body { what: Message, reason: String },
    #[error("adapter {adapter:?}: cannot load ca_file {path}: {reason}")]
    CaFile {
        adapter: String,
        path: PathBuf,
        reason: String,
    },
}

/// Which message a hook needed whole and could not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// The client's request body.
    Request,
    /// The engine's response.
    Response,
    /// The request a pre-hook rewrote.
    Rewrite,
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Request => "request body",
            Message::Response => "engine response",
            Message::Rewrite => "rewritten request",
        })
    }
}

impl DockerError for HookError {
    fn status(&self) -> StatusCode {
        match self {
            HookError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            // The client's request: the client's fault.
            HookError::TooLarge {
                what: Message::Request,
                ..
            } => StatusCode::PAYLOAD_TOO_LARGE,
            HookError::Body {
                what: Message::Request,
                ..
            } => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The node whose agent runs a hook, as adapters are told (`X-Busbar-Node`,
/// `X-Busbar-Node-Labels`: see [`busbar_protocol::headers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Who a hook call is made for: the request (its id, its client's identity) and the node,
/// and where calls are logged (the hook call log, when there is one).
pub struct Caller<'a> {
    pub ctx: &'a RequestCtx,
    pub node: Option<&'a NodeInfo>,
    pub log: Option<&'a HookLog>,
}

impl Caller<'_> {
    /// The headers every hook call carries beside the request id and the client's identity.
    fn write_headers(&self, headers: &mut http::HeaderMap) {
        use busbar_protocol::headers::{self as h, encode, encode_labels};
        headers.insert(
            h::ADAPTER_API_HEADER,
            http::HeaderValue::from_static(h::ADAPTER_API),
        );
        let Some(node) = self.node else { return };
        for (name, value) in [
            (h::NODE, encode(&node.name)),
            (h::NODE_LABELS, encode_labels(&node.labels)),
        ] {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }

    /// `Caller` of a v2 call: the same facts as the headers, in the JSON.
    pub fn v2(&self) -> v2::Caller {
        v2::Caller {
            request_id: self.ctx.id.clone(),
            node: self.node.map(|n| v2::Node {
                name: n.name.clone(),
                labels: n.labels.clone(),
            }),
            client: self.ctx.identity.as_ref().map(|id| v2::Client {
                user: id.user.clone(),
                auth_method: id.auth_method.clone(),
                role: id.role.clone(),
            }),
        }
    }
}

/// `headers` as a v2 adapter is given them: lower-case names, values as text, the
/// credentials of [`busbar_protocol::redact`] as `<redacted>` unless `adapter` reveals them.
pub fn v2_headers(adapter: &Adapter, headers: &http::HeaderMap) -> v2::Headers {
    let mut out = v2::Headers::new();
    for (name, value) in headers {
        let name = name.as_str();
        let shown =
            if redact::is_credential(name) && !adapter.reveal_headers.iter().any(|r| r == name) {
                redact::REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
        out.entry(name.to_owned()).or_default().push(shown);
    }
    out
}

/// The kind of call, as the call log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pre,
    Post,
    Unwind,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Pre => "pre-hook",
            Kind::Post => "post-hook",
            Kind::Unwind => "unwind",
        }
    }

    /// The phase, as the metrics label it.
    fn phase(self) -> &'static str {
        match self {
            Kind::Pre => "pre",
            Kind::Post => "post",
            Kind::Unwind => "unwind",
        }
    }
}

/// Counts one call to an adapter in the metrics: its time, and how it failed (the kind of
/// error, or a refusal: an HTTP error the adapter answered).
fn count<R>(
    adapter: &Adapter,
    kind: Kind,
    duration: Duration,
    exchanged: &Result<(http::response::Parts, Bytes), HookError>,
    parsed: &Option<Result<R, HookError>>,
) {
    let m = busbar_metrics::global();
    let phase = kind.phase();
    m.hook_call(&adapter.name, phase, duration);
    let error = match (exchanged, parsed) {
        (Err(e), _) | (_, Some(Err(e))) => Some(e),
        _ => None,
    };
    match (error, exchanged) {
        (Some(e), _) => m.hook_error(&adapter.name, phase, e.kind()),
        (None, Ok((parts, _))) if !parts.status.is_success() => {
            m.hook_refusal(&adapter.name, phase);
        }
        _ => {}
    }
}

impl HookError {
    /// The kind of failure, as the metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            HookError::Unreachable { .. } => "unreachable",
            HookError::Timeout { .. } => "timeout",
            HookError::BadReply { .. } => "invalid",
            HookError::PathRewrite { .. } | HookError::MethodRewrite { .. } => "rewrite",
            HookError::TooLarge { .. } => "too_large",
            HookError::Body { .. } => "body",
            HookError::CaFile { .. } => "ca_file",
        }
    }
}

/// An adapter's reply that is an HTTP error: the chain stops and this goes to the client.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub content_type: Option<header::HeaderValue>,
    pub body: Bytes,
}

/// What calling an adapter gave.
pub enum Reply<T> {
    Ok(T),
    Refused(Refusal),
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Pooled HTTP clients for adapters: one for the system roots, one per `ca_file`.
/// Built when a chain set is loaded, so a bad `ca_file` is a config error, not a request error.
#[derive(Clone)]
pub struct AdapterClients {
    system: HttpsClient,
    by_ca: HashMap<PathBuf, HttpsClient>,
}

impl AdapterClients {
    pub fn new<'a>(adapters: impl IntoIterator<Item = &'a Adapter>) -> Result<Self, HookError> {
        let mut by_ca = HashMap::new();
        for a in adapters {
            if let Some(path) = &a.ca_file {
                if !by_ca.contains_key(path) {
                    let client = client_with_ca(path).map_err(|reason| HookError::CaFile {
                        adapter: a.name.clone(),
                        path: path.clone(),
                        reason,
                    })?;
                    by_ca.insert(path.clone(), client);
                }
            }
        }
        Ok(AdapterClients {
            system: system_client(),
            by_ca,
        })
    }

    /// POSTs `payload` to the adapter and parses its reply with `parse`, within its timeout.
    /// The call carries the request's id and, when the client proved who it is, its identity
    /// (see the module docs); nothing else of the client's request but the payload. Logged
    /// in the hook call log when the adapter (or the agent) asks for it.
    pub async fn call<P: Serialize, R>(
        &self,
        adapter: &Adapter,
        payload: &P,
        caller: &Caller<'_>,
        kind: Kind,
        parse: impl FnOnce(&[u8]) -> Result<R, String>,
    ) -> Result<Reply<R>, HookError> {
        let body =
            Bytes::from(serde_json::to_vec(payload).expect("hook payloads always serialize"));
        let logged = caller.log.filter(|l| l.wants(adapter));
        let started = std::time::SystemTime::now();
        let clock = std::time::Instant::now();
        let mut headers = http::HeaderMap::new();
        let sent = logged.is_some().then_some(&mut headers);
        let exchanged = self.exchange(adapter, body.clone(), caller, sent).await;
        let duration = clock.elapsed();
        let url = adapter.url.to_string();
        let result = match &exchanged {
            Err(_) => None,
            Ok((parts, _)) if !parts.status.is_success() => None,
            Ok((_, bytes)) => Some(parse(bytes).map_err(|reason| HookError::BadReply {
                adapter: adapter.name.clone(),
                url: url.clone(),
                reason,
            })),
        };
        count(adapter, kind, duration, &exchanged, &result);
        if let Some(log) = logged {
            let (status, answer) = match &exchanged {
                Ok((parts, bytes)) => (Some(parts.status.as_u16()), Some(&bytes[..])),
                Err(_) => (None, None),
            };
            let error = match (&exchanged, &result) {
                (Err(e), _) | (_, Some(Err(e))) => Some(e.to_string()),
                _ => None,
            };
            log.record(Entry {
                adapter,
                node: caller.node.map(|n| n.name.as_str()),
                request_id: &caller.ctx.id,
                kind: kind.as_str(),
                call_headers: &headers,
                call: &body,
                status,
                answer,
                error,
                started,
                duration,
            });
        }
        let (parts, bytes) = exchanged?;
        match result {
            None => Ok(Reply::Refused(Refusal {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body: bytes,
            })),
            Some(parsed) => parsed.map(Reply::Ok),
        }
    }

    /// One POST and its whole reply, within the adapter's timeout. `sent`, when given, gets
    /// the call's headers (for the call log).
    async fn exchange(
        &self,
        adapter: &Adapter,
        body: Bytes,
        caller: &Caller<'_>,
        sent: Option<&mut http::HeaderMap>,
    ) -> Result<(http::response::Parts, Bytes), HookError> {
        let ctx = caller.ctx;
        let url = adapter.url.to_string();
        let mut req = Request::post(adapter.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(&REQUEST_ID, ctx.id.as_str())
            .body(Full::new(body))
            .expect("a valid adapter URL and fixed headers make a valid request");
        if let Some(identity) = &ctx.identity {
            identity.write_headers(req.headers_mut());
        }
        // The adapter's part of the trace is a child of this agent's span.
        ctx.write_trace(req.headers_mut());
        caller.write_headers(req.headers_mut());
        if let Some(auth) = &adapter.basic_auth {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", auth.user, auth.password));
            if let Ok(mut value) = http::HeaderValue::from_str(&format!("Basic {token}")) {
                value.set_sensitive(true);
                req.headers_mut().insert(header::AUTHORIZATION, value);
            }
        }
        if let Some(sent) = sent {
            *sent = req.headers().clone();
        }
        let client = adapter
            .ca_file
            .as_ref()
            .and_then(|p| self.by_ca.get(p))
            .unwrap_or(&self.system);
        let exchange =
            async {
                let rsp = client
                    .request(req)
                    .await
                    .map_err(|e| HookError::Unreachable {
                        adapter: adapter.name.clone(),
                        url: url.clone(),
                        reason: error_chain(&e),
                    })?;
                let (parts, body) = rsp.into_parts();
                let bytes = Limited::new(body, MAX_REPLY).collect().await.map_err(|e| {
                    HookError::BadReply {
                        adapter: adapter.name.clone(),
                        url: url.clone(),
                        reason: format!("reading the reply failed: {e}"),
                    }
                })?;
                Ok::<_, HookError>((parts, bytes.to_bytes()))
            };
        tokio::time::timeout(adapter.timeout, exchange)
            .await
            .map_err(|_| HookError::Timeout {
                adapter: adapter.name.clone(),
                url: url.clone(),
                after: adapter.timeout,
            })?
    }
}

/// A parser of replies of type `R` for [`AdapterClients::call`], through serde.
pub fn json<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn system_client() -> HttpsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(system_tls().clone())
        .https_or_http()
        .enable_http1()
        .build();
    pooled(https)
}

/// The TLS settings for `https://` adapters without a `ca_file`: the system's roots, read once
/// per process. Reading them costs milliseconds of CPU (hundreds of files, base64, parsing),
/// and a new set of clients is made on every chain change: paid on each, it was most of the
/// time an agent took to apply a new chain.
fn system_tls() -> &'static rustls::ClientConfig {
    static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        use hyper_rustls::ConfigBuilderExt;
        let builder = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
        match builder.clone().with_native_roots() {
            Ok(with_roots) => with_roots.with_no_client_auth(),
            // No system roots here (a minimal container): plain http adapters still work, and
            // https ones fail with a clear "invalid peer certificate" naming the adapter.
            Err(_) => builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        }
    })
}

fn client_with_ca(path: &Path) -> Result<HttpsClient, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem)? {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate found".into());
    }
    let tls = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(pooled(https))
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn pooled(https: HttpsConnector<HttpConnector>) -> HttpsClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(16)
        .build(https)
}

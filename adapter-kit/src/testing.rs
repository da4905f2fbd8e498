//! Testing an adapter: run it on a free port ([`TestAdapter`]) and send it hook calls as busbar
//! sends them ([`HookClient`]), from an ordinary `#[tokio::test]`, with no agent and no engine.
//!
//! ```no_run
//! use busbar_adapter::testing::{pre_call, TestAdapter};
//! # struct Hello;
//! # impl busbar_adapter::Adapter for Hello {}
//! # async fn test() {
//! let adapter = TestAdapter::start(Hello).await.unwrap();
//! let call = pre_call("POST", "/v1.41/containers/create", Some(r#"{"Image":"busybox"}"#));
//! let reply = adapter.client().pre(&call).await.unwrap();
//! assert_eq!(reply.modified_client_request.body.as_deref(), Some(r#"{"Image":"busybox"}"#));
//! adapter.stop().await;
//! # }
//! ```
//!
//! [`HookClient`] talks to any adapter, in any language, at any URL: `busbarctl adapter test`
//! is built on it. [`HookClient::send`] gives the raw answer (status, content type, bytes,
//! time taken) for checks of the answer itself; [`HookClient::pre`] and [`HookClient::post`]
//! read it as busbar's agent does (a 2xx with Powerstrip JSON, else an error saying what).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use busbar_protocol::v1::{
    ClientRequest, PostHookReply, PostHookRequest, PreHookReply, PreHookRequest, ReplyError,
    ServerResponse,
};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server::{serve, Options};
use crate::Adapter;

/// The largest answer read (busbar's agent reads at most as much of a reply).
const MAX_ANSWER: usize = 64 << 20;

/// An adapter served on `127.0.0.1` on a free port, stopped by [`TestAdapter::stop`] or when
/// dropped.
pub struct TestAdapter {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestAdapter {
    /// Serves `adapter` with the kit's server ([`crate::server::serve`]) and default options.
    pub async fn start<A: Adapter>(adapter: A) -> std::io::Result<TestAdapter> {
        TestAdapter::start_with(adapter, Options::default()).await
    }

    /// [`TestAdapter::start`] with these server options (`options.shutdown` is replaced).
    pub async fn start_with<A: Adapter>(
        adapter: A,
        mut options: Options,
    ) -> std::io::Result<TestAdapter> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        options.shutdown = shutdown.clone();
        let task = tokio::spawn(serve(listener, adapter, options));
        Ok(TestAdapter {
            addr,
            shutdown,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to put in a chain or to give [`HookClient::new`]: `http://127.0.0.1:PORT/adapter`.
    pub fn url(&self) -> String {
        format!("http://{}/adapter", self.addr)
    }

    /// A client of this adapter.
    pub fn client(&self) -> HookClient {
        HookClient::new(&self.url()).expect("a TestAdapter URL is a valid http:// URL")
    }

    /// Stops accepting, lets calls in flight finish, and waits for the server to end.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestAdapter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A pre-hook call for `method target` (`/v1.41/containers/create?name=web`), with the client's
/// body (`None`: a bodiless request, `Body: null`).
pub fn pre_call(method: &str, target: &str, body: Option<&str>) -> PreHookRequest {
    PreHookRequest::new(client_request(method, target, body))
}

/// A post-hook call: the client's request and the engine's answer (`content_type: None` as
/// for a 204).
pub fn post_call(
    method: &str,
    target: &str,
    body: Option<&str>,
    code: u16,
    content_type: Option<&str>,
    response: &str,
) -> PostHookRequest {
    PostHookRequest::new(
        client_request(method, target, body),
        ServerResponse {
            content_type: content_type.map(str::to_owned),
            body: response.to_owned(),
            code,
        },
    )
}

fn client_request(method: &str, target: &str, body: Option<&str>) -> ClientRequest {
    ClientRequest {
        method: method.to_owned(),
        request: target.to_owned(),
        body: body.map(str::to_owned),
    }
}

/// Why a hook call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HookClientError {
    #[error("adapter URL {0:?}: expected http://HOST[:PORT]/PATH or https://...")]
    Url(String),
    #[error("cannot reach the adapter at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the adapter at {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    /// A non-2xx answer: busbar stops the chain and gives the client this status and body.
    #[error("the adapter refused the call with {status}: {body}")]
    Refused { status: StatusCode, body: String },
    #[error("the adapter's answer is not a valid hook reply: {0}")]
    BadReply(#[from] ReplyError),
}

/// An adapter's answer as it came.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// The `Content-Type` header, if any (and if it is text).
    pub content_type: Option<String>,
    pub body: Bytes,
    /// From sending the call to the last byte of the answer.
    pub elapsed: Duration,
}

/// Sends hook calls to one adapter URL as busbar's agent does: `POST` of the JSON document with
/// `Content-Type: application/json` (plus any [`HookClient::header`]), one deadline for the
/// whole exchange.
#[derive(Clone)]
pub struct HookClient {
    url: Uri,
    shown: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    headers: HeaderMap,
}

impl HookClient {
    /// A client of the adapter at `url` (`http://` or `https://`, the system's roots), with
    /// busbar's default timeout of 10 s. A `user:password@` in the URL is sent as HTTP Basic
    /// authentication, as busbar's agent sends it, and never shown.
    pub fn new(url: &str) -> Result<HookClient, HookClientError> {
        let bad = || HookClientError::Url(shown_url(url));
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad());
        }
        let mut headers = HeaderMap::new();
        let uri = match uri.authority().and_then(|a| a.as_str().rsplit_once('@')) {
            Some((userinfo, host)) => {
                use base64::Engine as _;
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let token = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    busbar_protocol::headers::decode(user),
                    busbar_protocol::headers::decode(password)
                ));
                let mut value =
                    HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| bad())?;
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
                let mut parts = uri.clone().into_parts();
                parts.authority = Some(host.parse().map_err(|_| bad())?);
                Uri::from_parts(parts).map_err(|_| bad())?
            }
            None => uri,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(HookClient {
            url: uri,
            shown: shown_url(url),
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(10),
            headers,
        })
    }

    /// The same client with another deadline for each call (busbar's `timeout:` of the
    /// adapter).
    pub fn with_timeout(mut self, timeout: Duration) -> HookClient {
        self.timeout = timeout;
        self
    }

    /// The same client, sending this header with every call too (`X-Busbar-Node`, ...).
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> HookClient {
        self.headers.insert(name, value);
        self
    }

    /// The adapter's URL, with any `user:password` shown as `***`.
    pub fn url(&self) -> &str {
        &self.shown
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs `document` (any bytes, so that broken calls can be sent too) and returns the
    /// answer as it came, or why there was none within the timeout.
    pub async fn send(&self, document: &[u8]) -> Result<Answer, HookClientError> {
        let mut req = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(document)))
            .expect("a checked URL and fixed headers make a valid request");
        req.headers_mut()
            .extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        let started = Instant::now();
        let exchange = async {
            let rsp = self
                .client
                .request(req)
                .await
                .map_err(|e| HookClientError::Unreachable {
                    url: self.shown.clone(),
                    reason: error_chain(&e),
                })?;
            let (parts, body) = rsp.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| HookClientError::Unreachable {
                    url: self.shown.clone(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok::<_, HookClientError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HookClientError::Timeout {
                url: self.shown.clone(),
                after: self.timeout,
            })??;
        Ok(Answer {
            status: parts.status,
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            elapsed: started.elapsed(),
        })
    }

    /// Sends a pre-hook call and reads the answer as busbar's agent does.
    pub async fn pre(&self, call: &PreHookRequest) -> Result<PreHookReply, HookClientError> {
        let answer = self.accepted(&call.to_json()).await?;
        Ok(PreHookReply::from_json(&answer.body)?)
    }

    /// Sends a post-hook call and reads the answer as busbar's agent does.
    pub async fn post(&self, call: &PostHookRequest) -> Result<PostHookReply, HookClientError> {
        let answer = self.accepted(&call.to_json()).await?;
        Ok(PostHookReply::from_json(&answer.body)?)
    }

    async fn accepted(&self, document: &[u8]) -> Result<Answer, HookClientError> {
        let answer = self.send(document).await?;
        if !answer.status.is_success() {
            return Err(HookClientError::Refused {
                status: answer.status,
                body: String::from_utf8_lossy(&answer.body).into_owned(),
            });
        }
        Ok(answer)
    }
}

/// `url` with the `user:password` of its authority replaced by `***`.
fn shown_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// TLS for `https://` adapters: the system's roots, or none where the system has none.
fn tls() -> rustls::ClientConfig {
    use hyper_rustls::ConfigBuilderExt;
    let builder = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions");
    match builder.clone().with_native_roots() {
        Ok(roots) => roots.with_no_client_auth(),
        Err(_) => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}

/// An error and its causes, `: `-separated (hyper's own message alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_basic_authentication_and_never_shown() {
        let client = HookClient::new("http://hook%20user:p%40ss@127.0.0.1:9/adapter").unwrap();
        assert_eq!(client.url(), "http://***@127.0.0.1:9/adapter");
        assert_eq!(client.url.to_string(), "http://127.0.0.1:9/adapter");
        // base64("hook user:p@ss")
        assert_eq!(
            client.headers[header::AUTHORIZATION],
            "Basic aG9vayB1c2VyOnBAc3M="
        );
        let err = HookClient::new("ftp://u:secret@host/")
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(HookClient::new("http://127.0.0.1:9/")
            .unwrap()
            .headers
            .is_empty());
    }
}

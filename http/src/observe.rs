//! The metrics listener (`--metrics-listen`): `GET /metrics` (every series of
//! [`busbar_metrics`], Prometheus's text format), `GET /healthz` (the process answers) and
//! `GET /readyz` (whether it can serve: the checks a [`Readiness`] makes, as JSON, `200` or
//! `503`). Nothing else is served there but the [`Pages`] its server adds (the gateway's
//! status page), and no Docker API call.
//!
//! It is opt-in. On loopback it is plain HTTP; beyond loopback it speaks the TLS of the
//! Docker API's `--tls-listen` (so `--tlsverify` admits only clients with a certificate), and
//! without TLS it is refused unless `--allow-remote-plaintext` (see the agent's config).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::io::Stream;
use crate::listen::Listener;

/// How long the readiness checks may take in all before `/readyz` answers not ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// One check of readiness: what was checked, and why it fails, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found: why not ready, or what is fine.
    pub detail: String,
}

impl Check {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: true,
            detail: detail.into(),
        }
    }

    pub fn failed(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: false,
            detail: detail.into(),
        }
    }
}

/// What `/readyz` asks: the agent (its engine answers, its chains are loaded) or the gateway
/// (its nodes are known, one is healthy).
pub trait Readiness: Send + Sync + 'static {
    fn checks(&self) -> BoxFuture<'_, Vec<Check>>;
}

/// The `/readyz` answer for `checks`: `200` when every one passed, else `503`; the body says
/// which failed and why: `{"ready": false, "checks": [{"name", "ok", "detail"}...]}`.
pub fn ready_answer(checks: &[Check]) -> (StatusCode, serde_json::Value) {
    let ready = checks.iter().all(|c| c.ok);
    let list: Vec<_> = checks
        .iter()
        .map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
        .collect();
    let reasons: Vec<_> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({"ready": ready, "checks": list});
    if !ready {
        body["reason"] = reasons.join("; ").into();
    }
    (status, body)
}

/// More read-only pages on the listener (the gateway's status page): answered for the paths
/// it knows, under the listener's protection (loopback, or the API's client TLS).
pub trait Pages: Send + Sync + 'static {
    /// The answer to `GET path`, or `None` when `path` is not one of its pages.
    fn get(&self, path: &str) -> Option<Response<Full<Bytes>>>;
    /// The paths served, for the listener's 404 (e.g. `/status`).
    fn paths(&self) -> &'static str;
}

/// Serves the metrics listener until `shutdown`.
pub async fn serve(listener: Listener, readiness: Arc<dyn Readiness>, shutdown: CancellationToken) {
    serve_with(listener, readiness, None, shutdown).await
}

/// Serves the metrics listener, with `pages` too, until `shutdown`.
pub async fn serve_with(
    listener: Listener,
    readiness: Arc<dyn Readiness>,
    pages: Option<Arc<dyn Pages>>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    info!(listen = %listener, "serving metrics (/metrics, /healthz, /readyz)");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (io, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = listener.tls().cloned();
        let readiness = readiness.clone();
        let pages = pages.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let io = match (io, tls) {
                (Stream::Tcp(tcp), Some(tls)) => match tls.accept(tcp).await {
                    Ok((io, _)) => io,
                    Err(e) => return warn!(error = %e, client.addr = %peer, "metrics listener: TLS handshake refused"),
                },
                (io, _) => io,
            };
            let svc = service_fn(move |req| answer(req, readiness.clone(), pages.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
}

async fn answer(
    req: Request<Incoming>,
    readiness: Arc<dyn Readiness>,
    pages: Option<Arc<dyn Pages>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            busbar_metrics::CONTENT_TYPE,
            busbar_metrics::global().render(),
        ),
        "/healthz" => json_answer(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => {
            let checks = match tokio::time::timeout(READY_TIMEOUT, readiness.checks()).await {
                Ok(checks) => checks,
                Err(_) => vec![Check::failed(
                    "checks",
                    format!("the readiness checks took more than {READY_TIMEOUT:?}"),
                )],
            };
            let (status, body) = ready_answer(&checks);
            json_answer(status, &body)
        }
        path => match pages.as_ref().map(|p| (p.get(path), p.paths())) {
            Some((Some(rsp), _)) => rsp,
            Some((None, more)) => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("not found: /metrics, /healthz, /readyz and {more} are served here\n"),
            ),
            None => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: /metrics, /healthz and /readyz are served here\n".into(),
            ),
        },
    })
}

fn json_answer(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", format!("{body}\n"))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a fixed status and header make a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_says_why() {
        let (status, body) = ready_answer(&[
            Check::failed(
                "engine",
                "cannot reach the Docker engine at unix:///x: refused",
            ),
            Check::ok("chains", "loaded"),
        ]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert_eq!(
            body["reason"],
            "engine: cannot reach the Docker engine at unix:///x: refused"
        );
        assert_eq!(body["checks"][1]["ok"], true);
        let (status, body) = ready_answer(&[Check::ok("engine", "answers")]);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["ready"], true);
        assert!(body.get("reason").is_none());
    }
}

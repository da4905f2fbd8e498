//! The Docker API server: accepts clients on a bound listener and serves each connection.
//!
//! - [`conn`]: one client connection: HTTP/1.1 with upgrades, or a raw hijack (see [`raw`]).
//! - [`raw`]: clients that hijack attach/exec without asking for an upgrade.
//!
//! [`serve`] takes an already bound [`Listener`] and a shutdown token, so tests can bind
//! port 0 and stop it when they like (mini-redis's shape). A TLS listener's handshake runs in
//! the connection's task ([`crate::tls`]), and the client's verified identity goes with every
//! request of the connection ([`RequestCtx::identity`]). Before a [`Handler`] sees a request,
//! its path is replaced by the canonical one ([`busbar_api::path`]; a path with no single
//! reading is answered `400` here) and the client's own `X-Busbar-*` headers are removed
//! ([`crate::identity`]: a client cannot name itself).

pub mod conn;
pub mod raw;

use std::sync::Arc;
use std::time::Duration;

use busbar_runtime::Backoff;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use busbar_api::path::{canonical_target, PathError};
use busbar_api::query::QueryError;
use http::{Method, Request, Response, StatusCode};

use crate::identity::{strip_reserved, ClientIdentity};
use crate::io::Stream;
use crate::listen::Listener;
use crate::{Body, DockerError, RequestCtx};

/// What a server serves: the agent's proxy, or the gateway. A `101` response carries its
/// upstream stream as a [`Hijacked`](crate::hijack::Hijacked) extension, which the server
/// splices to the client.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request; errors are already Docker-style responses. Runs inside `ctx.span`.
    fn handle<'a>(
        &'a self,
        req: Request<Body>,
        ctx: &'a RequestCtx,
    ) -> futures_util::future::BoxFuture<'a, Response<Body>>;

    /// Where requests go, for the startup log line.
    fn upstream(&self) -> String;
}

/// Serves `listener` until `shutdown` fires, then waits up to `grace` for open connections
/// (hijacked streams included) to finish.
pub async fn serve(
    listener: Listener,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = TaskTracker::new();
    let local = listener.to_string();
    info!(listen = %local, upstream = %handler.upstream(), "serving the Docker API");
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((io, peer)) => {
                backoff.reset();
                let span = tracing::debug_span!("conn", client.addr = %peer);
                let (handler, shutdown, t) = (handler.clone(), shutdown.clone(), tracker.clone());
                let tls = listener.tls().cloned();
                tracker.spawn(
                    async move {
                        let (io, identity) = match (io, tls) {
                            (Stream::Tcp(tcp), Some(tls)) => match tls.accept(tcp).await {
                                Ok((io, identity)) => (io, identity.map(Arc::new)),
                                // The verifier said why, when it was the certificate.
                                Err(e) => return warn!(error = %e, "TLS handshake refused"),
                            },
                            (io, _) => (io, None),
                        };
                        conn::serve(io, handler, shutdown, t, identity).await
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(listen = %local, ?grace, "connections still open after the grace period; closing them");
    }
}

/// Why a request is refused before any handler sees it (a `400` for the client): it has no
/// single reading, or the engine would read its parameters differently from a hook.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("invalid request target: send the path alone (origin-form), as Docker clients do")]
    NotOriginForm,
    #[error("a {0} body is refused: the engine would take parameters from it over the query; Docker clients send JSON")]
    FormBody(&'static str),
}

impl Refused {
    /// The reason for the log: the client's answer says the same, but a refused query is not
    /// repeated (it may hold a secret; logs never carry queries, header values or bodies).
    pub fn loggable(&self) -> String {
        match self {
            Refused::Query(_) => {
                "invalid query: ';' separators or malformed %-escapes (query not logged)".into()
            }
            other => other.to_string(),
        }
    }
}

impl DockerError for Refused {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

/// Gets a client's request ready for a handler: removes the `X-Busbar-*` headers it sent
/// (see [`crate::identity`]; the count is logged at debug, never the values), and gives its
/// context the connection's verified identity.
pub fn admit<B>(req: &mut Request<B>, ctx: &mut RequestCtx, identity: Option<Arc<ClientIdentity>>) {
    let stripped = strip_reserved(req.headers_mut());
    ctx.set_identity(identity);
    if stripped > 0 {
        let _enter = ctx.span.enter();
        tracing::debug!(
            headers = stripped,
            "removed the client's X-Busbar-* headers"
        );
    }
}

/// Reads a request as the engine will, and replaces its target by the canonical form:
/// origin-form, the path as the engine routes it ([`busbar_api::path`]), the query as sent.
/// Refused ([`Refused`]): a path with no single reading, a query the engine refuses, a target
/// with a scheme or authority, and a form body on `POST`/`PUT`/`PATCH` (the engine reads form
/// parameters before the query's).
pub fn canonicalize<B>(req: &mut Request<B>) -> Result<(), Refused> {
    let uri = req.uri();
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(Refused::NotOriginForm);
    }
    if let Some(query) = uri.query() {
        busbar_api::query::check(query)?;
    }
    if [Method::POST, Method::PUT, Method::PATCH].contains(req.method()) {
        if let Some(kind) = form_body(req.headers()) {
            return Err(Refused::FormBody(kind));
        }
    }
    if let Some(target) = canonical_target(uri.path(), uri.query())? {
        *req.uri_mut() = target.parse().expect(
            "an encoded canonical path and a query taken from a valid URI make a valid URI",
        );
    }
    Ok(())
}

/// The form media type of any of the request's `Content-Type` headers, if one is a form.
fn form_body(headers: &http::HeaderMap) -> Option<&'static str> {
    headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            ["application/x-www-form-urlencoded", "multipart/form-data"]
                .into_iter()
                .find(|form| essence.eq_ignore_ascii_case(form))
        })
}

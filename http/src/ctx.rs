//! The context of one request: its id, who sent it, and the tracing span every log line of it
//! carries.
//!
//! The span records the method and the path's template (`/containers/{id}/json`: see
//! [`busbar_api::endpoint::template`]; the path itself is logged once, at `debug`), never the
//! query (it may hold a secret: a registry token in a `?...` parameter, a filter value) nor
//! any header value or body; the node that served it, when a gateway chose one; and the
//! client's name (`user`, a certificate's CN) when a TLS listener verified one; and the
//! request's W3C trace id (`trace_id`, [`busbar_protocol::trace`]): the client's when it sent
//! a valid `traceparent`, else a new one. [`RequestCtx::write_trace`] passes the trace on.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use busbar_protocol::trace::{self, Trace};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Request;
use tracing::{field, info_span, Span};

use crate::identity::ClientIdentity;

/// The request id header: taken from the client when present, generated otherwise, and passed
/// on to the engine and to adapters so that every log can be joined.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// W3C Trace Context's headers ([`busbar_protocol::trace`]).
pub static TRACEPARENT: HeaderName = HeaderName::from_static(trace::TRACEPARENT);
pub static TRACESTATE: HeaderName = HeaderName::from_static(trace::TRACESTATE);

/// Per-request context: its id, its client's identity, and the tracing span that every log
/// line of it carries.
pub struct RequestCtx {
    pub id: String,
    pub span: Span,
    pub started: Instant,
    /// The request's trace and this process's span in it.
    pub trace: Trace,
    /// Who the client is, when a TLS listener verified its certificate (or a gateway said so
    /// over the hop); `None` otherwise. Set with [`RequestCtx::set_identity`].
    pub identity: Option<Arc<ClientIdentity>>,
    /// Run no chain on this request: a gateway forwarding an adapter's own call to an engine
    /// (`X-Busbar-Hooks: off` over the authenticated hop; see [`crate::identity::HOOKS`]).
    pub skip_hooks: bool,
    /// The endpoint's class for metrics ([`busbar_api::endpoint::class`]): a bounded name.
    pub endpoint: &'static str,
    /// The method as a metrics label ([`busbar_metrics::method`]).
    pub method: &'static str,
    /// The node that served the request, when one did alone: set with [`RequestCtx::set_node`].
    node: OnceLock<String>,
    /// The path's template, kept for the request's exported span when a span exporter is
    /// installed ([`crate::spans`]); `None` otherwise.
    pub(crate) route: Option<Arc<str>>,
}

impl RequestCtx {
    pub fn new<B>(req: &Request<B>) -> Self {
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(new_request_id);
        let raw = req.uri().path();
        let (template, endpoint) = busbar_api::ApiPath::parse(raw).map_or_else(
            |_| ("(other)".to_owned(), "other"),
            |p| {
                (
                    busbar_api::endpoint::template(&p),
                    busbar_api::endpoint::class(req.method(), &p),
                )
            },
        );
        let headers = req.headers();
        let trace = Trace::from_headers(
            headers
                .get_all(&TRACEPARENT)
                .iter()
                .map(HeaderValue::as_bytes),
            headers
                .get_all(&TRACESTATE)
                .iter()
                .map(HeaderValue::as_bytes),
        );
        let span = info_span!(
            "req",
            req.id = %id,
            trace_id = %trace.trace_id,
            method = %req.method(),
            path = %template,
            node = field::Empty,
            user = field::Empty,
        );
        span.in_scope(|| tracing::debug!(path = raw, "request"));
        let route = crate::spans::enabled().then(|| Arc::from(template));
        RequestCtx {
            id,
            span,
            started: Instant::now(),
            trace,
            identity: None,
            skip_hooks: false,
            endpoint,
            method: busbar_metrics::method(req.method().as_str()),
            node: OnceLock::new(),
            route,
        }
    }

    /// A context for a call made on the process's own account, logged in `span` under `id`:
    /// no client, no identity, a trace of its own.
    pub fn with_id(id: String, span: Span) -> Self {
        RequestCtx {
            id,
            span,
            started: Instant::now(),
            trace: Trace::start(),
            identity: None,
            skip_hooks: false,
            endpoint: "other",
            method: "other",
            node: OnceLock::new(),
            route: None,
        }
    }

    /// A context for a call made on behalf of this request (same id, span and identity), for
    /// a task of its own.
    pub fn for_call(&self) -> Self {
        RequestCtx {
            id: self.id.clone(),
            span: self.span.clone(),
            started: Instant::now(),
            trace: self.trace.clone(),
            identity: self.identity.clone(),
            skip_hooks: self.skip_hooks,
            endpoint: self.endpoint,
            method: self.method,
            node: self.node.clone(),
            route: self.route.clone(),
        }
    }

    /// Passes the request's trace on in `headers` (to the engine, over the hop, to an
    /// adapter): `traceparent` with this process's span as the parent, and the `tracestate`
    /// kept from the client (any other is removed).
    pub fn write_trace(&self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_bytes(&self.trace.traceparent()) {
            headers.insert(TRACEPARENT.clone(), value);
        }
        match self
            .trace
            .state
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            Some(state) => {
                headers.insert(TRACESTATE.clone(), state);
            }
            None => {
                headers.remove(&TRACESTATE);
            }
        }
    }

    /// Says which node serves the request: the span's `node`, and the `node` label of its
    /// metrics. The first node named stays (and is written in the span once: a field recorded
    /// again would appear twice in every line of the request).
    pub fn set_node(&self, node: &str) {
        if self.node.set(node.to_owned()).is_ok() {
            self.span.record("node", node);
        }
    }

    /// The node that serves the request, if one was named.
    pub fn node(&self) -> Option<&str> {
        self.node.get().map(String::as_str)
    }

    /// Says who the client is; its name goes into the span as `user`.
    pub fn set_identity(&mut self, identity: Option<Arc<ClientIdentity>>) {
        if let Some(id) = &identity {
            self.span.record("user", id.user.as_str());
        }
        self.identity = identity;
    }
}

/// A new request id: 16 hex digits, a random half drawn once per process and a counter, so
/// that ids are unique within a process and unlikely to repeat across processes, without a
/// system call for randomness on every request.
fn new_request_id() -> String {
    static SALT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let salt = *SALT.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u32);
    format!(
        "{salt:08x}{:08x}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

//! The span of each request this process served, handed to a span exporter when one is
//! installed (`busbar-otlp`, with `--otlp-endpoint`): the request's W3C trace id, this
//! process's span id and the parent it came from ([`busbar_protocol::trace`]), so that the
//! spans an exporter sends are the ones busbar logs and passes on in `traceparent`.
//!
//! A request's span ends where its access line is written ([`crate::access`]): when its
//! answer ends, fails or the client goes away. With no exporter installed, this costs one
//! atomic load per request and nothing is kept.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use busbar_protocol::trace::{SpanId, Trace, TraceId};

/// One request's span, as it ended.
#[derive(Debug, Clone)]
pub struct RequestSpan {
    pub trace_id: TraceId,
    /// This process's span: the parent id it passed on downstream.
    pub span_id: SpanId,
    /// The client's or the upstream busbar process's span; `None` when the trace started here.
    pub parent_id: Option<SpanId>,
    /// The trace flags received (bit 0: sampled).
    pub flags: u8,
    /// The request's method, as a bounded label ([`busbar_metrics::method`]).
    pub method: &'static str,
    /// The path's template (`/containers/{id}/json`), never the path itself.
    pub route: Arc<str>,
    /// The endpoint's class ([`busbar_api::endpoint::class`]).
    pub endpoint: &'static str,
    /// The node that served it, when one did alone.
    pub node: Option<String>,
    pub request_id: String,
    pub status: u16,
    /// Bytes of the answer's body sent.
    pub bytes: u64,
    /// Why the answer ended early (`client gone`, `body failed`), else empty.
    pub outcome: &'static str,
    /// Wall-clock start and end.
    pub start: SystemTime,
    pub end: SystemTime,
}

/// Where ended request spans go.
pub trait SpanSink: Send + Sync {
    /// Takes one ended span. Called on the request's task: must not block or wait.
    fn request_ended(&self, span: RequestSpan);
}

static SINK: OnceLock<Arc<dyn SpanSink>> = OnceLock::new();

/// Installs the process's span sink; `false` if one already was (the first stays).
pub fn install(sink: Arc<dyn SpanSink>) -> bool {
    SINK.set(sink).is_ok()
}

/// Whether a sink is installed: request contexts keep what a span needs only then.
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// What a request's span needs from its context, kept from its start when a sink is installed.
#[derive(Debug)]
pub(crate) struct SpanStart {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    pub flags: u8,
    pub route: Arc<str>,
    pub request_id: String,
}

impl SpanStart {
    pub(crate) fn new(trace: &Trace, route: Arc<str>, request_id: &str) -> Box<Self> {
        Box::new(SpanStart {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent_id: trace.parent_id,
            flags: trace.flags,
            route,
            request_id: request_id.to_owned(),
        })
    }
}

/// Hands the span of a request that took `elapsed` to the sink.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ended(
    start: SpanStart,
    elapsed: Duration,
    method: &'static str,
    endpoint: &'static str,
    node: Option<String>,
    status: u16,
    bytes: u64,
    outcome: &'static str,
) {
    let Some(sink) = SINK.get() else { return };
    let end = SystemTime::now();
    let SpanStart {
        trace_id,
        span_id,
        parent_id,
        flags,
        route,
        request_id,
    } = start;
    sink.request_ended(RequestSpan {
        trace_id,
        span_id,
        parent_id,
        flags,
        method,
        route,
        endpoint,
        node,
        request_id,
        status,
        bytes,
        outcome,
        start: end.checked_sub(elapsed).unwrap_or(end),
        end,
    });
}

//! The access log: one line per request at `info`, when its answer ends (or the client goes
//! away), with target `busbar::access`: the status, the time from the request's head to the
//! end of its answer, and the bytes of the answer's body. The line is written inside the
//! request's span, which carries the request id, method, path template and node (see
//! [`crate::ctx`]): nothing the client sent beyond those.
//!
//! The same moment counts the request in the metrics ([`busbar_metrics`]: requests, duration,
//! bytes, answers open), with the endpoint class and node its context holds: one
//! classification for the log and the metrics; and ends the request's span, handed to the
//! span exporter when one is installed ([`crate::spans`]).
//!
//! An error answer (status 400 or more) is also kept in the process's ring of recent errors
//! (`busbar_metrics::recent`, the gateway's status page), with its request id, node and the
//! `message` of its body (the first [`ERROR_BODY_KEPT`] bytes are read as they pass).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tracing::Span;

use crate::spans::{self, SpanStart};
use crate::{Body, BoxError, RequestCtx};

/// How much of an error answer's body is kept to read its `message` from.
pub const ERROR_BODY_KEPT: usize = 2048;

/// `rsp` with its access line written when its body ends, fails or is dropped.
pub fn logged(rsp: Response<Body>, ctx: &RequestCtx) -> Response<Body> {
    let status = rsp.status().as_u16();
    rsp.map(|inner| logged_body(inner, ctx, status))
}

/// The body of an answer with status `status`, its access line written when it ends, fails
/// or is dropped (for a server that sends the head on its own: the agent's gRPC service).
pub fn logged_body(inner: Body, ctx: &RequestCtx, status: u16) -> Body {
    busbar_metrics::global().open_responses.inc();
    Logged {
        inner,
        bytes: 0,
        line: Some(Line::new(ctx, status)),
        error_body: (status >= 400).then(Vec::new),
    }
    .boxed()
}

/// Writes the access line of a request whose answer went out without a [`Body`] (a hijacked
/// connection written by hand): `bytes` is what the client was sent.
pub fn log(ctx: &RequestCtx, status: u16, bytes: u64) {
    Line::new(ctx, status).write(bytes, "", &[])
}

struct Line {
    /// The request id (`X-Request-Id`) of an error answer (empty for the others).
    id: String,
    span: Span,
    started: Instant,
    status: u16,
    endpoint: &'static str,
    method: &'static str,
    node: Option<String>,
    /// The request's span, for the span exporter when one is installed ([`crate::spans`]).
    span_start: Option<Box<SpanStart>>,
}

impl Line {
    fn new(ctx: &RequestCtx, status: u16) -> Self {
        Line {
            // Kept for error answers only: no copy on the way of the others.
            id: if status >= 400 {
                ctx.id.clone()
            } else {
                String::new()
            },
            span: ctx.span.clone(),
            started: ctx.started,
            status,
            endpoint: ctx.endpoint,
            method: ctx.method,
            node: ctx.node().map(str::to_owned),
            span_start: ctx
                .route
                .as_ref()
                .map(|route| SpanStart::new(&ctx.trace, route.clone(), &ctx.id)),
        }
    }

    fn write(mut self, bytes: u64, outcome: &'static str, error_body: &[u8]) {
        let elapsed = self.started.elapsed();
        if self.status >= 400 {
            self.keep_error(error_body);
        }
        busbar_metrics::global().request_done(
            busbar_metrics::RequestLabels {
                endpoint: self.endpoint,
                method: self.method,
                status: busbar_metrics::status_class(self.status),
                // Copied only when the span needs it too.
                node: if self.span_start.is_some() {
                    self.node.clone()
                } else {
                    self.node.take()
                }
                .unwrap_or_default(),
            },
            elapsed,
            bytes,
        );
        if let Some(start) = self.span_start {
            spans::ended(
                *start,
                elapsed,
                self.method,
                self.endpoint,
                self.node,
                self.status,
                bytes,
                outcome,
            );
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        let ms = (ms * 10.0).round() / 10.0;
        self.span.in_scope(|| {
            if outcome.is_empty() {
                tracing::info!(target: "busbar::access", status = self.status, ms, bytes, "done");
            } else {
                tracing::info!(target: "busbar::access", status = self.status, ms, bytes, outcome, "done");
            }
        });
    }
}

impl Line {
    /// Keeps this error answer in the ring of recent errors.
    fn keep_error(&self, body: &[u8]) {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_default();
        busbar_metrics::global()
            .recent
            .error_answer(busbar_metrics::recent::ErrorAnswer {
                at_ms: 0,
                request_id: self.id.clone(),
                status: self.status,
                method: self.method,
                endpoint: self.endpoint,
                node: self.node.clone().unwrap_or_default(),
                message,
            });
    }
}

struct Logged {
    inner: Body,
    bytes: u64,
    line: Option<Line>,
    /// The start of an error answer's body (`None` for other answers).
    error_body: Option<Vec<u8>>,
}

impl Logged {
    fn finish(&mut self, outcome: &'static str) {
        if let Some(line) = self.line.take() {
            busbar_metrics::global().open_responses.dec();
            let body = self.error_body.take().unwrap_or_default();
            line.write(self.bytes, outcome, &body);
        }
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                    let len = data.len();
                    if let Some(kept) = self.error_body.as_mut() {
                        let room = ERROR_BODY_KEPT.saturating_sub(kept.len()).min(len);
                        kept.extend_from_slice(&data[..room]);
                    }
                }
                if self.inner.is_end_stream() {
                    self.finish("");
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("body failed"),
            Poll::Ready(None) => self.finish(""),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let outcome = if self.inner.is_end_stream() {
            ""
        } else {
            "client gone"
        };
        self.finish(outcome);
    }
}

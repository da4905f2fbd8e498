//! The access log: one line per request at `info`, when its answer ends (or the client goes
//! away), with target `busbar::access`: the status, the time from the request's head to the
//! end of its answer, and the bytes of the answer's body. The line is written inside the
//! request's span, which carries the request id, method, path template and node (see
//! [`crate::ctx`]): nothing the client sent beyond those.
//!
//! The same moment counts the request in the metrics ([`busbar_metrics`]: requests, duration,
//! bytes, answers open), with the endpoint class and node its context holds: one
//! classification for the log and the metrics.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tracing::Span;

use crate::{Body, BoxError, RequestCtx};

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
    }
    .boxed()
}

/// Writes the access line of a request whose answer went out without a [`Body`] (a hijacked
/// connection written by hand): `bytes` is what the client was sent.
pub fn log(ctx: &RequestCtx, status: u16, bytes: u64) {
    Line::new(ctx, status).write(bytes, "")
}

struct Line {
    span: Span,
    started: Instant,
    status: u16,
    endpoint: &'static str,
    method: &'static str,
    node: Option<String>,
}

impl Line {
    fn new(ctx: &RequestCtx, status: u16) -> Self {
        Line {
            span: ctx.span.clone(),
            started: ctx.started,
            status,
            endpoint: ctx.endpoint,
            method: ctx.method,
            node: ctx.node().map(str::to_owned),
        }
    }

    fn write(self, bytes: u64, outcome: &str) {
        let elapsed = self.started.elapsed();
        busbar_metrics::global().request_done(
            busbar_metrics::RequestLabels {
                endpoint: self.endpoint,
                method: self.method,
                status: busbar_metrics::status_class(self.status),
                node: self.node.unwrap_or_default(),
            },
            elapsed,
            bytes,
        );
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

struct Logged {
    inner: Body,
    bytes: u64,
    line: Option<Line>,
}

impl Logged {
    fn finish(&mut self, outcome: &str) {
        if let Some(line) = self.line.take() {
            busbar_metrics::global().open_responses.dec();
            line.write(self.bytes, outcome);
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

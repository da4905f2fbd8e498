//! Calls the gateway makes to nodes on its own account: a request forwarded as is, a JSON
//! document fetched, the same call fanned out to many nodes at once.
//!
//! Every call that is not a client's stream is bounded by [`CALL_TIMEOUT`] (a busy node is
//! waited for), and a node whose agent cannot be reached, or is silent (see
//! [`Node::await_answer`]), is marked unhealthy on the spot (health from real traffic): it
//! costs the calls waiting on it one probe timeout, and later calls nothing until a probe
//! finds it back.
//!
//! Every call to a node goes through [`forward`], which also marks the node's documents stale
//! for a state-changing call (any method but `GET` and `HEAD`), when it is sent and again when
//! its response ends: that is how `docker info` stays exact for changes made through the
//! gateway (see [`crate::cluster`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use busbar_http::body::{collect_limited, empty, full};
use busbar_http::{Body, BoxError, RequestCtx};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::cluster::{ChangeGuard, Node};
use crate::hop::AgentError;
use crate::model::{CallError, NodeAnswer};

/// Longest wait for a node's answer to a call of the gateway's own (not a client's stream).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest body the gateway reads from a node to merge or inspect.
pub const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

/// Sends `req` to `node`; an unreachable agent marks the node unhealthy, and so does one that
/// is silent while the call waits for its answer ([`Node::await_answer`]: it costs one probe
/// timeout, once). A state-changing call marks the node's documents stale now and once its
/// response body has ended (or was dropped).
pub async fn forward(
    node: &Node,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Result<Response<Body>, AgentError> {
    let change = changes_state(req.method()).then(|| node.note_change());
    let result = node.await_answer(node.link.exchange(req, ctx)).await;
    if let Err(e @ AgentError::Unreachable { .. }) = &result {
        node.mark_unhealthy(&e.to_string());
    }
    match change {
        Some(guard) => result.map(|rsp| {
            rsp.map(|body| {
                ChangeOnEnd {
                    inner: body,
                    guard: Some(guard),
                }
                .boxed()
            })
        }),
        None => result,
    }
}

/// A state-changing call's response body: the change counts ([`ChangeGuard`] dropped) as soon
/// as the body has ended, before its last frame is handed on (so before the client can have
/// read it and asked for `info`), or when it is dropped unfinished (the client left).
struct ChangeOnEnd {
    inner: Body,
    guard: Option<ChangeGuard>,
}

impl http_body::Body for ChangeOnEnd {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            this.guard = None;
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

/// Whether a call with `method` may change an engine's state (and so its `/info`).
fn changes_state(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD
}

/// A request for `path_and_query` with `body`, carrying the client's headers that matter.
pub fn request(method: Method, path_and_query: &str, body: Option<Bytes>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path_and_query);
    if body.is_some() {
        b = b.header(http::header::CONTENT_TYPE, "application/json");
    }
    b.body(body.map(full).unwrap_or_else(empty))
        .expect("a valid path makes a valid request")
}

/// The whole body of a response, bounded in size and time.
pub async fn read_body(
    rsp: Response<Body>,
) -> Result<(StatusCode, http::HeaderMap, Bytes), CallError> {
    let (parts, body) = rsp.into_parts();
    let collected = tokio::time::timeout(CALL_TIMEOUT, collect_limited(body, MAX_DOCUMENT))
        .await
        .map_err(|_| CallError::Timeout(CALL_TIMEOUT))?
        .map_err(|e| CallError::Bad(format!("reading the answer failed: {e}")))?;
    Ok((parts.status, parts.headers, collected))
}

/// Calls `node` and reads the whole answer, whatever its status.
pub async fn call(
    node: &Node,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Result<(StatusCode, Bytes), CallError> {
    let rsp = match tokio::time::timeout(CALL_TIMEOUT, forward(node, req, ctx)).await {
        Err(_) => return Err(CallError::Timeout(CALL_TIMEOUT)),
        Ok(Err(e)) => return Err(agent_failed(e)),
        Ok(Ok(rsp)) => rsp,
    };
    let (status, _, body) = read_body(rsp).await?;
    Ok((status, body))
}

/// `GET path` on `node`, parsed as JSON; an error status is a [`CallError::Engine`] with the
/// engine's message.
pub async fn get_json(
    node: &Node,
    path: &str,
    ctx: &RequestCtx,
) -> Result<serde_json::Value, CallError> {
    let (status, body) = call(node, request(Method::GET, path, None), ctx).await?;
    if !status.is_success() {
        return Err(engine_error(status, &body));
    }
    serde_json::from_slice(&body)
        .map_err(|e| CallError::Bad(format!("invalid JSON from {path}: {e}")))
}

/// A failed exchange with a node's agent, as a [`CallError`].
pub fn agent_failed(e: AgentError) -> CallError {
    match e {
        AgentError::Unreachable { .. } => CallError::Down(e.to_string()),
        _ => CallError::Bad(e.to_string()),
    }
}

/// The status a failed call to a node gives the client: 503 when the node is down or did not
/// answer in time, the engine's status when it answered one, 502 otherwise.
pub fn status_of(e: &CallError) -> StatusCode {
    match e {
        CallError::Down(_) | CallError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        CallError::Engine { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        CallError::Bad(_) => StatusCode::BAD_GATEWAY,
    }
}

/// The Docker-style error for a call to `node` that failed (status: [`status_of`]).
pub fn failed(node: &str, e: &CallError) -> Response<Body> {
    busbar_http::error::message(status_of(e), &format!("node {node}: {e}"))
}

/// An engine's error answer: its status and the `message` of its Docker-style body (or the
/// body's first line).
pub fn engine_error(status: StatusCode, body: &[u8]) -> CallError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|doc| doc["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect()
        });
    CallError::Engine {
        status: status.as_u16(),
        message,
    }
}

/// `GET path` on every node in `nodes` at once; one answer per node, in the same order.
pub async fn fan_out_json(
    nodes: &[Arc<Node>],
    path: &str,
    ctx: &RequestCtx,
) -> Vec<NodeAnswer<serde_json::Value>> {
    let calls = nodes.iter().map(|node| async move {
        NodeAnswer {
            node: node.name().to_owned(),
            result: get_json(node, path, ctx).await,
        }
    });
    futures_util::future::join_all(calls).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::node;

    /// A body of `n` data frames that says it has ended after the last one (as a body with a
    /// known length does): hyper then never polls it again.
    struct Frames(usize);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }

        fn is_end_stream(&self) -> bool {
            self.0 == 0
        }
    }

    #[tokio::test]
    async fn a_change_counts_at_its_last_frame_or_when_dropped() {
        let n = node("node1");
        let body = |frames| ChangeOnEnd {
            inner: Frames(frames).boxed(),
            guard: Some(n.note_change()),
        };
        let mut b = body(2);
        n.mark_probed_for_tests();
        assert!(!n.is_stale(), "refreshed while the response streams");
        assert!(b.frame().await.is_some());
        assert!(!n.is_stale());
        assert!(b.frame().await.is_some());
        assert!(
            n.is_stale(),
            "the last frame counts, before anyone polls for the end"
        );

        let b = body(2);
        n.mark_probed_for_tests();
        drop(b);
        assert!(n.is_stale(), "a client that left counts too");
    }
}

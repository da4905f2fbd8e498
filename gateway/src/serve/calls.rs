//! Calls the gateway makes to nodes on its own account: a request forwarded as is, a JSON
//! document fetched, the same call fanned out to many nodes at once.
//!
//! Every call that is not a client's stream is bounded by [`CALL_TIMEOUT`], and a node whose
//! agent cannot be reached is marked unhealthy on the spot (health from real traffic).

use std::sync::Arc;
use std::time::Duration;

use busbar_agent::proxy::{collect_limited, empty, full, Body, RequestCtx};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use crate::agents::AgentError;
use crate::cluster::Node;
use crate::model::NodeAnswer;

/// Longest wait for a node's answer to a call of the gateway's own (not a client's stream).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest body the gateway reads from a node to merge or inspect.
pub const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

/// Sends `req` to `node`; an unreachable agent marks the node unhealthy.
pub async fn forward(node: &Node, req: Request<Body>, ctx: &RequestCtx) -> Result<Response<Body>, AgentError> {
    let result = node.link.exchange(req, ctx).await;
    if let Err(e @ AgentError::Unreachable { .. }) = &result {
        node.mark_unhealthy(&e.to_string());
    }
    result
}

/// A request for `path_and_query` with `body`, carrying the client's headers that matter.
pub fn request(method: Method, path_and_query: &str, body: Option<Bytes>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path_and_query);
    if body.is_some() {
        b = b.header(http::header::CONTENT_TYPE, "application/json");
    }
    b.body(body.map(full).unwrap_or_else(empty)).expect("a valid path makes a valid request")
}

/// The whole body of a response, bounded in size and time.
pub async fn read_body(rsp: Response<Body>) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let (parts, body) = rsp.into_parts();
    let collected = tokio::time::timeout(CALL_TIMEOUT, collect_limited(body, MAX_DOCUMENT))
        .await
        .map_err(|_| format!("no complete answer within {CALL_TIMEOUT:?}"))?
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    Ok((parts.status, parts.headers, collected))
}

/// Calls `node` and reads the whole answer.
pub async fn call(node: &Node, req: Request<Body>, ctx: &RequestCtx) -> Result<(StatusCode, Bytes), String> {
    let rsp = tokio::time::timeout(CALL_TIMEOUT, forward(node, req, ctx))
        .await
        .map_err(|_| format!("node {}: no answer within {CALL_TIMEOUT:?}", node.name()))?
        .map_err(|e| e.to_string())?;
    let (status, _, body) = read_body(rsp).await.map_err(|e| format!("node {}: {e}", node.name()))?;
    Ok((status, body))
}

/// `GET path` on `node`, parsed as JSON when the status is a success.
pub async fn get_json(node: &Node, path: &str, ctx: &RequestCtx) -> Result<(StatusCode, serde_json::Value), String> {
    let (status, body) = call(node, request(Method::GET, path, None), ctx).await?;
    if !status.is_success() {
        return Ok((status, serde_json::from_slice(&body).unwrap_or_default()));
    }
    let doc = serde_json::from_slice(&body).map_err(|e| format!("node {}: invalid JSON from {path}: {e}", node.name()))?;
    Ok((status, doc))
}

/// `GET path` on every node in `nodes` at once; one answer per node, in the same order.
/// A non-success status is an error answer carrying the engine's message.
pub async fn fan_out_json(nodes: &[Arc<Node>], path: &str, ctx: &RequestCtx) -> Vec<NodeAnswer<serde_json::Value>> {
    let calls = nodes.iter().map(|node| async move {
        let result = match get_json(node, path, ctx).await {
            Ok((status, doc)) if status.is_success() => Ok(doc),
            Ok((status, doc)) => Err(format!("{status}: {}", doc["message"].as_str().unwrap_or(""))),
            Err(e) => Err(e),
        };
        NodeAnswer { node: node.name().to_owned(), result }
    });
    futures_util::future::join_all(calls).await
}

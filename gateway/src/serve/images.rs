//! Images, networks and volumes across the cluster.
//!
//! - Pull, import and load are **broadcast**: every healthy node gets the call (the request
//!   body, a tar for import and load, is copied to each as it streams in), so any node can run
//!   the image. The answer streams the nodes' progress messages as they come (see
//!   [`broadcast`]); a node that refuses makes the call fail with a message naming it.
//! - `rmi` and `tag` go to **every holder** of the image; inspect, history, save and push to
//!   the first holder.
//! - Networks and volumes are node-local objects, listed as `node/name`. A `node/name`
//!   reference goes to that node; a plain one to the only node that has it (several: 404,
//!   ambiguous, except `volume rm`, which removes it everywhere, and `volume inspect`, which
//!   answers from the first holder). `network create` and `volume create` are scheduled
//!   like a container (`node/name` puts it on that node): a volume is one node's, as its data
//!   is, and creates that mount it go there (see [`crate::schedule`]'s volume filter).

use std::sync::Arc;

use busbar_api::path::encode_segment;
use busbar_http::body::{collect_limited, full};
use busbar_http::error as respond;
use busbar_http::{Body, RequestCtx};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::calls;
use super::containers::{encode_segments, json, retarget};
use super::ClusterHandler;
use crate::cluster::{Cluster, Node};

type Frame = Result<http_body::Frame<Bytes>, busbar_http::BoxError>;

/// Pull, import, load: the same call on every healthy node, the body copied to each.
///
/// Once every node has answered its head, a node that refused (an error status, an agent
/// that cannot be reached) makes the call a 500 naming each such node and why. Otherwise the
/// answer is a `200` stream of the nodes' JSON messages, as an engine streams them (chunked,
/// each message whole: lines from different nodes are interleaved, never mixed), as they
/// come, a message several nodes sent only once (`Loaded image: app:latest` is one image):
/// a client that parses the stream (docker-py's `load`, the CLI's progress) reads it as it
/// reads one engine's. A node whose stream breaks off adds an in-band error message naming
/// it, as an engine reports a failure that happens after its head.
pub async fn broadcast(cluster: &Cluster, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
    let nodes = cluster.healthy();
    if nodes.is_empty() {
        return respond::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No healthy node available in the cluster",
        );
    }
    let (parts, mut body) = req.into_parts();
    let mut senders = vec![];
    let mut calls_ = vec![];
    for node in &nodes {
        let (tx, rx) = mpsc::channel::<Frame>(4);
        senders.push(tx);
        let mut copy = Request::from_parts(
            parts.clone(),
            BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))),
        );
        copy.headers_mut().remove(http::header::CONTENT_LENGTH);
        if let Some(len) = parts.headers.get(http::header::CONTENT_LENGTH) {
            copy.headers_mut()
                .insert(http::header::CONTENT_LENGTH, len.clone());
        }
        calls_.push(async move {
            let result = calls::forward(node, copy, ctx).await;
            (node.name().to_owned(), result)
        });
    }
    // Tee the client's body: each chunk to every node, at the pace of the slowest.
    let tee = async move {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for tx in &senders {
                let _ = tx.send(Ok(http_body::Frame::data(data.clone()))).await;
            }
        }
    };
    let (_, answers) = tokio::join!(tee, futures_util::future::join_all(calls_));
    let mut streams = vec![];
    let mut failures = vec![];
    for (node, result) in answers {
        match result {
            Ok(rsp) if rsp.status().is_success() => streams.push((node, rsp.into_body())),
            Ok(rsp) => match calls::read_body(rsp).await {
                Ok((s, _, b)) => failures.push(format!("node {node}: {s}: {}", message_of(&b))),
                Err(e) => failures.push(format!("node {node}: {e}")),
            },
            Err(e) => failures.push(format!("node {node}: {}", calls::agent_failed(e))),
        }
    }
    if !failures.is_empty() {
        return respond::message(StatusCode::INTERNAL_SERVER_ERROR, &failures.join("; "));
    }
    let (tx, rx) = mpsc::channel::<Frame>(16);
    let sent = Sent::default();
    for (node, body) in streams {
        tokio::spawn(relay_messages(node, body, tx.clone(), sent.clone()));
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))))
        .expect("valid headers")
}

/// The most distinct messages a broadcast remembers to send each once (beyond, repeats pass).
const MAX_REMEMBERED_MESSAGES: usize = 4096;

/// The messages a broadcast has sent: the same message from several nodes (`Loaded image:
/// app:latest`, `Status: Image is up to date`) reaches the client once, as from one engine.
type Sent = Arc<std::sync::Mutex<std::collections::HashSet<Bytes>>>;

/// Sends `body`'s messages (an engine's JSON messages each end with a newline) to `out`, as
/// they arrive, each whole and only if no other node sent the same one; what is left at the
/// end goes too. A body that fails adds an error message naming the node.
async fn relay_messages(node: String, mut body: Body, out: mpsc::Sender<Frame>, sent: Sent) {
    let mut partial: Vec<u8> = Vec::new();
    let send = |line: Bytes| {
        let out = out.clone();
        let first = {
            let mut sent = sent.lock().expect("sent messages lock");
            if sent.len() < MAX_REMEMBERED_MESSAGES {
                sent.insert(line.clone())
            } else {
                !sent.contains(&line)
            }
        };
        async move { !first || out.send(Ok(http_body::Frame::data(line))).await.is_ok() }
    };
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                partial.extend_from_slice(&data);
                while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                    let rest = partial.split_off(end + 1);
                    let line = std::mem::replace(&mut partial, rest);
                    if !send(Bytes::from(line)).await {
                        return; // the client left
                    }
                }
            }
            Some(Err(e)) => {
                if !partial.is_empty() {
                    partial.push(b'\n');
                    send(Bytes::from(std::mem::take(&mut partial))).await;
                }
                let message = format!("node {node}: {e}");
                let line =
                    serde_json::json!({"errorDetail": {"message": message}, "error": message});
                send(Bytes::from(format!("{line}\r\n"))).await;
                return;
            }
        }
    }
    if !partial.is_empty() {
        send(Bytes::from(partial)).await;
    }
}

/// The healthy nodes holding `GET path` (a 200), in name order.
async fn holders(cluster: &Cluster, path: &str, ctx: &RequestCtx) -> Vec<Arc<Node>> {
    let nodes = cluster.healthy();
    let answers = calls::fan_out_json(&nodes, path, ctx).await;
    nodes
        .into_iter()
        .zip(answers)
        .filter(|(_, a)| a.result.is_ok())
        .map(|(n, _)| n)
        .collect()
}

/// Any call on one image.
pub async fn image(
    cluster: &Cluster,
    req: Request<Body>,
    name: &str,
    rest: &str,
    ctx: &RequestCtx,
) -> Response<Body> {
    let holders = holders(
        cluster,
        &format!("/v1.41/images/{}/json", encode_segments(name)),
        ctx,
    )
    .await;
    if holders.is_empty() {
        return respond::message(StatusCode::NOT_FOUND, &format!("No such image: {name}"));
    }
    let every_holder = req.method() == Method::DELETE || rest == "tag";
    if !every_holder {
        return forward_to(&holders[0], req, ctx).await;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().clone();
    let answers = futures_util::future::join_all(holders.iter().map(|n| {
        let (target, method) = (target.clone(), method.clone());
        async move {
            (
                n.name().to_owned(),
                calls::call(n, calls::request(method, &target, None), ctx).await,
            )
        }
    }))
    .await;
    let mut merged = vec![];
    let mut status = StatusCode::OK;
    for (node, answer) in answers {
        match answer {
            Ok((s, body)) if s.is_success() => {
                status = s;
                if let Ok(Value::Array(items)) = serde_json::from_slice(&body) {
                    merged.extend(items);
                }
            }
            Ok((s, body)) => {
                return respond::message(s, &format!("node {node}: {}", message_of(&body)))
            }
            Err(e) => return calls::failed(&node, &e),
        }
    }
    if method == Method::DELETE {
        json(status, &Value::Array(merged))
    } else {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_LENGTH, 0)
            .body(full(Bytes::new()))
            .expect("valid")
    }
}

fn message_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|d| d["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

async fn forward_to(node: &Node, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
    ctx.set_node(node.name());
    match calls::forward(node, req, ctx).await {
        Ok(r) => r,
        Err(e) => respond::error(&e),
    }
}

/// A call on one network or volume.
#[allow(clippy::too_many_arguments)]
pub async fn object(
    cluster: &Cluster,
    mut req: Request<Body>,
    prefix: &str,
    kind: &str,
    node_hint: Option<&str>,
    reference: &str,
    rest: &str,
    ctx: &RequestCtx,
) -> Response<Body> {
    let singular = &kind[..kind.len() - 1];
    retarget(&mut req, prefix, kind, reference, rest);
    if let Some(name) = node_hint {
        return match cluster.node(name) {
            Some(node) => forward_to(&node, req, ctx).await,
            None => respond::message(StatusCode::NOT_FOUND, &format!("No such node: {name}")),
        };
    }
    let path = format!("/v1.41/{kind}/{}", encode_segment(reference));
    let holders = holders(cluster, &path, ctx).await;
    match holders.as_slice() {
        [] => respond::message(
            StatusCode::NOT_FOUND,
            &format!("No such {singular}: {reference}"),
        ),
        [one] => forward_to(one, req, ctx).await,
        [first, ..] if kind == "volumes" && req.method() == Method::GET => {
            forward_to(first, req, ctx).await
        }
        many if kind == "volumes" && req.method() == Method::DELETE => {
            let target = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            for n in many {
                if let Ok((s, body)) =
                    calls::call(n, calls::request(Method::DELETE, &target, None), ctx).await
                {
                    if !s.is_success() {
                        return respond::message(
                            s,
                            &format!("node {}: {}", n.name(), message_of(&body)),
                        );
                    }
                }
            }
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(full(Bytes::new()))
                .expect("valid")
        }
        many => respond::message(
            StatusCode::NOT_FOUND,
            &format!(
                "{singular} {reference:?} is ambiguous: it exists on {}; use node/name",
                many.iter()
                    .map(|n| n.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// `networks/create` and `volumes/create`: on the node the name names (`node/name`), else on
/// one node the scheduler chooses (Swarm's constraint and affinity labels count, and a compose
/// project's networks and volumes go together). A volume that exists already is "created"
/// where it is, as an engine answers a create of an existing volume with it.
pub async fn create_object(
    handler: &ClusterHandler,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    let is_volume = req.uri().path().contains("/volumes/");
    let (parts, body) = req.into_parts();
    let bytes = match collect_limited(body, 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return respond::message(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request: {e}"),
            )
        }
    };
    let mut doc: Value = if bytes.is_empty() {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return respond::message(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}"))
            }
        }
    };
    let named_node = doc["Name"]
        .as_str()
        .and_then(|n| n.split_once('/'))
        .map(|(node, name)| (node.to_owned(), name.to_owned()));
    let targets: Vec<Arc<Node>> = match &named_node {
        Some((node, name)) => match handler.cluster.node(node) {
            Some(n) => {
                doc["Name"] = Value::String(name.clone());
                vec![n]
            }
            None => {
                return respond::message(StatusCode::NOT_FOUND, &format!("No such node: {node}"))
            }
        },
        None => {
            let existing = match doc["Name"].as_str() {
                Some(name) if is_volume && !name.is_empty() => {
                    let path = format!("/v1.41/volumes/{}", encode_segment(name));
                    holders(&handler.cluster, &path, ctx).await
                }
                _ => Vec::new(),
            };
            match existing.into_iter().next() {
                // Creating a volume that exists answers it, as an engine does: where it is.
                Some(holder) => vec![holder],
                None => match handler.place_object(&doc["Labels"], ctx).await {
                    Ok(n) => vec![n],
                    Err(rsp) => return rsp,
                },
            }
        }
    };
    if targets.is_empty() {
        return respond::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No healthy node available in the cluster",
        );
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let body = Bytes::from(doc.to_string());
    let mut last = None;
    for node in &targets {
        match calls::call(
            node,
            calls::request(Method::POST, &target, Some(body.clone())),
            ctx,
        )
        .await
        {
            Ok((s, b)) if s.is_success() => last = Some((s, b)),
            Ok((s, b)) => {
                return respond::message(s, &format!("node {}: {}", node.name(), message_of(&b)))
            }
            Err(e) => return calls::failed(node.name(), &e),
        }
    }
    let (status, body) = last.expect("at least one target answered");
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .expect("valid headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's answer body: `chunks` as they came, then `error` if any.
    fn body(chunks: &[&'static str], error: Option<&str>) -> Body {
        let mut frames: Vec<Frame> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if let Some(e) = error {
            frames.push(Err(e.to_owned().into()));
        }
        BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
    }

    async fn relayed(bodies: Vec<(&str, Body)>) -> String {
        let (tx, mut rx) = mpsc::channel::<Frame>(64);
        let sent = Sent::default();
        for (node, b) in bodies {
            // One after the other: the order of the test's lines is fixed.
            relay_messages(node.to_owned(), b, tx.clone(), sent.clone()).await;
        }
        drop(tx);
        let mut out = String::new();
        while let Some(Ok(frame)) = rx.recv().await {
            let data = frame.into_data().expect("data frames");
            // Each frame is whole messages.
            assert!(data.ends_with(b"\n"), "{data:?}");
            out.push_str(std::str::from_utf8(&data).expect("UTF-8"));
        }
        out
    }

    #[tokio::test]
    async fn messages_go_whole_and_once_and_a_broken_stream_names_its_node() {
        let out = relayed(vec![
            (
                "node1",
                body(
                    &[
                        "{\"stream\":\"Loaded image: app\"}\r\n{\"sta",
                        "tus\":\"1\"}\r\n",
                    ],
                    None,
                ),
            ),
            (
                "node2",
                body(
                    &[
                        "{\"stream\":\"Loaded image: app\"}\r\n",
                        "{\"status\":\"2\"}\r\n",
                    ],
                    None,
                ),
            ),
            ("node3", body(&["{\"status\":\"half"], Some("reset"))),
        ])
        .await;
        let lines: Vec<&str> = out.split_inclusive('\n').collect();
        assert_eq!(
            lines,
            [
                "{\"stream\":\"Loaded image: app\"}\r\n",
                "{\"status\":\"1\"}\r\n",
                "{\"status\":\"2\"}\r\n",
                "{\"status\":\"half\n",
                "{\"error\":\"node node3: reset\",\"errorDetail\":{\"message\":\"node node3: reset\"}}\r\n",
            ]
        );
    }
}

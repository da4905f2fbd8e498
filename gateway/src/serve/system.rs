//! What the gateway answers for the whole cluster: ping, version, info, events, and the
//! aggregated lists.

use busbar_agent::proxy::{full, Body, RequestCtx};
use busbar_agent::respond;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use super::calls;
use super::containers::json;
use crate::aggregate;
use crate::cluster::Cluster;
use crate::model::{NodeAnswer, NodeSnapshot};
use crate::schedule::Strategy;


/// `/_ping`: the gateway is up; the API version it speaks is the cluster's.
pub fn ping(cluster: &Cluster) -> Response<Body> {
    let api = aggregate::api_version_range(&cluster.snapshots()).0.unwrap_or_else(|| aggregate::FALLBACK_API_VERSION.to_owned());
    Response::builder()
        .status(StatusCode::OK)
        .header("api-version", api)
        .header("content-type", "text/plain; charset=utf-8")
        .header("content-length", 2)
        .body(full("OK"))
        .expect("valid headers")
}

/// `/version`: the gateway's identity, with the lowest API version of the healthy nodes.
pub async fn version(cluster: &Cluster, ctx: &RequestCtx) -> Response<Body> {
    let nodes = cluster.healthy();
    let answers = calls::fan_out_json(&nodes, "/v1.41/version", ctx).await;
    json(StatusCode::OK, &aggregate::version(&cluster.snapshots(), &answers, env!("CARGO_PKG_VERSION")))
}

/// `/info`: cluster totals and a block per node (failed nodes included, with their error).
pub async fn info(cluster: &Cluster, strategy: Strategy, ctx: &RequestCtx) -> Response<Body> {
    let nodes = cluster.healthy();
    let answers = calls::fan_out_json(&nodes, "/v1.41/info", ctx).await;
    let facts = aggregate::GatewayFacts::of_this_host(env!("CARGO_PKG_VERSION"), &strategy.to_string());
    json(StatusCode::OK, &aggregate::info(&cluster.snapshots(), &answers, &facts))
}

/// The client's request sent to every healthy node (node filter removed), answers collected.
async fn fan_out_request(cluster: &Cluster, req: &Request<Body>, ctx: &RequestCtx) -> (Vec<NodeAnswer<Value>>, Option<Vec<String>>) {
    let query = req.uri().query().unwrap_or("");
    let only = aggregate::node_filter(query);
    let query = aggregate::strip_node_filter(query);
    let path = if query.is_empty() { req.uri().path().to_owned() } else { format!("{}?{query}", req.uri().path()) };
    let nodes: Vec<_> = cluster
        .nodes()
        .into_iter()
        .filter(|n| only.as_ref().is_none_or(|names| names.iter().any(|x| x == n.name())))
        .collect();
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = nodes.into_iter().partition(|n| n.is_healthy());
    let mut answers = calls::fan_out_json(&healthy, &path, ctx).await;
    answers.extend(unhealthy.iter().map(|n| NodeAnswer {
        node: n.name().to_owned(),
        result: Err(format!("unhealthy: {}", n.snapshot().last_error.unwrap_or_default())),
    }));
    (answers, only)
}

fn with_failures(mut rsp: Response<Body>, answers: &[NodeAnswer<Value>]) -> Response<Body> {
    if let Some(failed) = aggregate::failed_nodes_header(answers) {
        if let Ok(v) = http::HeaderValue::from_str(&failed) {
            rsp.headers_mut().insert(aggregate::FAILED_NODES_HEADER, v);
        }
    }
    rsp
}

/// `GET /containers/json`: every node's list, merged.
pub async fn container_list(cluster: &Cluster, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
    let (answers, _) = fan_out_request(cluster, &req, ctx).await;
    let merged = aggregate::containers(&answers, &cluster.snapshots(), req.uri().query().unwrap_or(""));
    with_failures(json(StatusCode::OK, &merged), &answers)
}

/// A list merged by `merge`.
pub async fn merged(cluster: &Cluster, req: Request<Body>, ctx: &RequestCtx, merge: fn(&[NodeAnswer<Value>]) -> Value) -> Response<Body> {
    let (answers, _) = fan_out_request(cluster, &req, ctx).await;
    with_failures(json(StatusCode::OK, &merge(&answers)), &answers)
}

/// A list merged by `merge`, which also needs the nodes (for node-qualified names).
pub async fn merged_with_nodes(
    cluster: &Cluster,
    req: Request<Body>,
    ctx: &RequestCtx,
    merge: fn(&[NodeAnswer<Value>], &[NodeSnapshot]) -> Value,
) -> Response<Body> {
    let (answers, _) = fan_out_request(cluster, &req, ctx).await;
    with_failures(json(StatusCode::OK, &merge(&answers, &cluster.snapshots())), &answers)
}

/// A POST (prune) on every healthy node, answers merged.
pub async fn broadcast_merged(cluster: &Cluster, req: Request<Body>, ctx: &RequestCtx, merge: fn(&[NodeAnswer<Value>]) -> Value) -> Response<Body> {
    let target = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let nodes = cluster.healthy();
    let calls = nodes.iter().map(|n| {
        let target = target.clone();
        async move {
            let result = match calls::call(n, calls::request(Method::POST, &target, None), ctx).await {
                Ok((s, body)) if s.is_success() => serde_json::from_slice(&body).map_err(|e| e.to_string()),
                Ok((s, body)) => Err(format!("{s}: {}", String::from_utf8_lossy(&body))),
                Err(e) => Err(e),
            };
            NodeAnswer { node: n.name().to_owned(), result }
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    with_failures(json(StatusCode::OK, &merge(&answers)), &answers)
}

/// `GET /events`: one live stream merged from every healthy node, each event tagged with its
/// node. `since`, `until` and `filters` go to every engine; the stream ends when every node's
/// does (with `until`), or when the client leaves.
pub async fn events(cluster: &Cluster, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
    let target = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let nodes = cluster.healthy();
    if nodes.is_empty() {
        return respond::message(StatusCode::SERVICE_UNAVAILABLE, "No healthy node available in the cluster");
    }
    let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, busbar_agent::proxy::BoxError>>(64);
    for node in nodes {
        let (tx, target, snapshot) = (tx.clone(), target.clone(), node.snapshot());
        let ctx_id = ctx.id.clone();
        let span = ctx.span.clone();
        tokio::spawn(async move {
            let ctx = busbar_agent::proxy::RequestCtx::with_id(ctx_id, span);
            let rsp = match calls::forward(&node, calls::request(Method::GET, &target, None), &ctx).await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => return debug!(node = %node.name(), status = r.status().as_u16(), "events refused"),
                Err(e) => return debug!(node = %node.name(), error = %e, "events failed"),
            };
            let mut body = rsp.into_body();
            let mut line = Vec::new();
            loop {
                // An idle node stream must not outlive its client: stop when the client leaves.
                let frame = tokio::select! {
                    f = body.frame() => f,
                    _ = tx.closed() => return,
                };
                let Some(Ok(frame)) = frame else { break };
                let Some(data) = frame.data_ref() else { continue };
                for &b in data.iter() {
                    if b != b'\n' {
                        line.push(b);
                        continue;
                    }
                    if let Ok(mut event) = serde_json::from_slice::<Value>(&line) {
                        aggregate::tag_event(&mut event, &snapshot);
                        let mut out = event.to_string().into_bytes();
                        out.push(b'\n');
                        if tx.send(Ok(http_body::Frame::data(Bytes::from(out)))).await.is_err() {
                            return; // the client left
                        }
                    }
                    line.clear();
                }
            }
        });
    }
    drop(tx);
    let body = BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx)));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("valid headers")
}


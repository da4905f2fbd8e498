//! What the gateway answers for the whole cluster: ping, version, info, events, and the
//! aggregated lists.

use std::sync::Arc;
use std::time::Duration;

use busbar_http::body::full;
use busbar_http::error as respond;
use busbar_http::{Body, RequestCtx};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use super::calls;
use super::containers::json;
use super::last_seen::{self, LastSeen};
use crate::aggregate;
use crate::cluster::{Cluster, Node, NodeParts};
use crate::model::{CallError, NodeAnswer, NodeSnapshot};
use crate::schedule::Strategy;

/// `/_ping`: the gateway is up; the API version it speaks is the cluster's. The headers are
/// an engine's: `Api-Version`, `Ostype` (the healthy nodes' common `OSType`, else the
/// gateway's), `Docker-Experimental` (true when every healthy node's engine is experimental),
/// `Server` (`busbar/<version> (<os>)`, as an engine's `Docker/<version> (<os>)`),
/// `Cache-Control` and `Pragma`. No `Builder-Version`: builds through the cluster use the
/// classic builder, which every engine has.
pub fn ping(cluster: &Cluster) -> Response<Body> {
    let snapshots = cluster.snapshots();
    let api = aggregate::api_version_range(&snapshots)
        .0
        .unwrap_or_else(|| aggregate::FALLBACK_API_VERSION.to_owned());
    let healthy: Vec<&NodeSnapshot> = snapshots
        .iter()
        .filter(|n| n.health == crate::model::Health::Healthy)
        .collect();
    let os_types: std::collections::BTreeSet<&str> = healthy
        .iter()
        .filter_map(|n| n.info.get("OSType").and_then(Value::as_str))
        .collect();
    let os_type = match os_types.into_iter().collect::<Vec<_>>().as_slice() {
        [one] => (*one).to_owned(),
        _ => std::env::consts::OS.to_owned(),
    };
    let experimental = !healthy.is_empty()
        && healthy
            .iter()
            .all(|n| n.info.get("ExperimentalBuild") == Some(&Value::Bool(true)));
    let server = format!(
        "busbar/{} ({})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("api-version", api)
        .header("cache-control", "no-cache, no-store, must-revalidate")
        .header("docker-experimental", experimental.to_string())
        .header("ostype", os_type)
        .header("pragma", "no-cache")
        .header("server", server)
        .header("content-type", "text/plain; charset=utf-8")
        .header("content-length", 2)
        .body(full("OK"))
        .expect("valid headers")
}

/// `/version`: the gateway's identity, with the lowest API version of the healthy nodes, from
/// the probes' documents (engine versions do not change through Docker API calls).
pub async fn version(cluster: &Cluster, made: &Made) -> Response<Body> {
    let body = made
        .version
        .get_or_make(cluster, |parts| {
            let parts: Vec<&aggregate::VersionPart> = parts.iter().map(|p| &p.version).collect();
            aggregate::version_from_parts(
                &parts,
                &aggregate::GatewayFacts::new("", env!("CARGO_PKG_VERSION")),
            )
        })
        .await;
    json_body(body)
}

/// `/info`: cluster totals and a block per node (failed nodes included, with their error), from
/// the probes' documents, after refreshing the nodes that calls through this gateway changed
/// (the freshness rule is in [`crate::cluster`]).
pub async fn info(cluster: &Cluster, strategy: Strategy, made: &Made) -> Response<Body> {
    cluster.refresh_stale().await;
    // `Images` as `/images/json` counts them, by ID: asked of the nodes only when the answer
    // is made again (a node changed).
    let images = match made.info.kept(cluster.generation()) {
        Some(_) => None,
        None => distinct_images(cluster).await,
    };
    let body = made
        .info
        .get_or_make(cluster, |parts| {
            let parts: Vec<&aggregate::InfoPart> = parts.iter().map(|p| &p.info).collect();
            let facts = aggregate::GatewayFacts::of_this_host(
                env!("CARGO_PKG_VERSION"),
                &strategy.to_string(),
            );
            aggregate::info_from_parts_with(&parts, &facts, images)
        })
        .await;
    json_body(body)
}

/// The number of distinct image IDs over the healthy nodes (`GET /images/json?all=1`, all
/// images as an engine's `Images` counts them), or `None` if a node could not list them
/// within a probe timeout: `Images` is then the sum of the nodes' counts.
async fn distinct_images(cluster: &Cluster) -> Option<i64> {
    let nodes = cluster.healthy();
    let ctx = RequestCtx::with_id("info-images".into(), tracing::Span::none());
    let listed = tokio::time::timeout(
        cluster.health.probe_timeout,
        calls::fan_out_json(&nodes, "/v1.41/images/json?all=1", &ctx),
    )
    .await
    .ok()?;
    let mut ids = std::collections::HashSet::new();
    for answer in &listed {
        for image in answer.result.as_ref().ok()?.as_array()? {
            ids.insert(image.get("Id")?.as_str()?.to_owned());
        }
    }
    i64::try_from(ids.len()).ok()
}

/// The `/info` and `/version` bodies as last made, each with the [`Cluster::generation`] it was
/// made at: while no node has changed since, the same bytes are the answer. When some have,
/// the body is put together again from every node's parts ([`Node::parts`]), which the nodes
/// keep between changes: a thousand nodes cost a thousand string copies, not a thousand
/// engine documents looked through.
#[derive(Default)]
pub struct Made {
    info: MadeDoc,
    version: MadeDoc,
}

/// One document as last made.
#[derive(Default)]
struct MadeDoc {
    /// The body and the cluster generation it was made at. Held only to copy a `Bytes` handle
    /// in or out: a std mutex.
    body: std::sync::Mutex<Option<(u64, Bytes)>>,
    /// One maker at a time: the others wait (without blocking a thread), then find it made.
    making: tokio::sync::Mutex<()>,
}

impl MadeDoc {
    /// The body for the cluster as it is now: the one kept if no node changed since it was
    /// made, else made by `whole` from every node's parts, in name order.
    async fn get_or_make(
        &self,
        cluster: &Cluster,
        whole: impl FnOnce(&[Arc<NodeParts>]) -> String,
    ) -> Bytes {
        // Read before anything is looked at: a change from now on makes the next call remake.
        let generation = cluster.generation();
        if let Some(body) = self.kept(generation) {
            return body;
        }
        let _making = self.making.lock().await;
        if let Some(body) = self.kept(generation) {
            return body; // made while this call waited
        }
        let parts: Vec<Arc<NodeParts>> = cluster.nodes().iter().map(|n| n.parts()).collect();
        let body = Bytes::from(whole(&parts));
        let mut kept = self.body.lock().expect("made lock");
        if kept.as_ref().is_none_or(|(at, _)| *at <= generation) {
            *kept = Some((generation, body.clone()));
        }
        body
    }

    fn kept(&self, generation: u64) -> Option<Bytes> {
        let kept = self.body.lock().expect("made lock");
        kept.as_ref()
            .filter(|(at, _)| *at == generation)
            .map(|(_, body)| body.clone())
    }
}

fn json_body(body: Bytes) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .expect("a status and valid headers make a response")
}

/// The nodes a list request asks (all, or those its `node` filter names), and the path and
/// query the engines get (the `node` filter removed: engines refuse it).
fn asked(cluster: &Cluster, req: &Request<Body>) -> (Vec<Arc<Node>>, String, String) {
    let query = req.uri().query().unwrap_or("");
    let only = aggregate::node_filter(query);
    let query = aggregate::strip_node_filter(query);
    let path = if query.is_empty() {
        req.uri().path().to_owned()
    } else {
        format!("{}?{query}", req.uri().path())
    };
    let nodes: Vec<_> = cluster
        .nodes()
        .into_iter()
        .filter(|n| {
            only.as_ref()
                .is_none_or(|names| names.iter().any(|x| x == n.name()))
        })
        .collect();
    (nodes, path, query)
}

/// Why an unhealthy node is not in a list answer.
fn unhealthy_error(node: &Node) -> String {
    format!(
        "unhealthy: {}",
        node.snapshot().last_error.unwrap_or_default()
    )
}

/// The client's request sent to every healthy node (node filter removed), answers collected.
async fn fan_out_request(
    cluster: &Cluster,
    req: &Request<Body>,
    ctx: &RequestCtx,
) -> Vec<NodeAnswer<Value>> {
    let (nodes, path, _) = asked(cluster, req);
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = nodes.into_iter().partition(|n| n.is_healthy());
    let mut answers = calls::fan_out_json(&healthy, &path, ctx).await;
    answers.extend(unhealthy.iter().map(|n| NodeAnswer {
        node: n.name().to_owned(),
        result: Err(CallError::Down(unhealthy_error(n))),
    }));
    answers
}

fn with_failures<T>(mut rsp: Response<Body>, answers: &[NodeAnswer<T>]) -> Response<Body> {
    if let Some(failed) = aggregate::failed_nodes_header(answers) {
        if let Ok(v) = http::HeaderValue::from_str(&failed) {
            rsp.headers_mut().insert(aggregate::FAILED_NODES_HEADER, v);
        }
    }
    rsp
}

/// `GET /containers/json`: every node's list, merged ([`aggregate::merge_lists`]). A node that
/// is unhealthy or does not answer is named in the failed-nodes header and, if its last list
/// is known ([`LastSeen`]), shown from it as "Host Down" rows where the request admits them.
/// Complete lists (`ps -a`) that nodes answer are remembered. If every node asked failed and
/// there is nothing to show, the answer is an error: the engines' own 4xx if they all refused
/// the request with one, else 503 naming each node's failure.
///
/// The lists stay the agents' raw bytes up to the merge, never JSON trees (see
/// [`aggregate::merge_lists`] for what that saves at 1,000 nodes).
pub async fn container_list(
    cluster: &Cluster,
    last_seen: &LastSeen,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    let (nodes, path, engine_query) = asked(cluster, &req);
    let calls = nodes.iter().map(|node| {
        let path = &path;
        async move {
            if !node.is_healthy() {
                return Err(CallError::Down(unhealthy_error(node)));
            }
            match calls::call(node, calls::request(Method::GET, path, None), ctx).await {
                Ok((status, body)) if status.is_success() => Ok(body),
                Ok((status, body)) => Err(calls::engine_error(status, &body)),
                Err(e) => Err(e),
            }
        }
    });
    let answers: Vec<Result<Bytes, CallError>> = futures_util::future::join_all(calls).await;
    // What to merge: the answers, and the last-known lists of the nodes that are down (or
    // silent: a node that answered an error status is up, and has no Host Down rows).
    let bodies: Vec<Option<(Bytes, bool)>> = nodes
        .iter()
        .zip(&answers)
        .map(|(node, answer)| match answer {
            Ok(body) => Some((body.clone(), false)),
            Err(e) if !e.is_answer() => last_seen.get(node.name()).map(|seen| (seen.body, true)),
            Err(_) => None,
        })
        .collect();
    let complete = last_seen::is_complete_list(&engine_query);
    let mut missing: Vec<NodeAnswer<()>> = vec![];
    let mut lists: Vec<(&Node, aggregate::ContainerList, bool)> = Vec::with_capacity(nodes.len());
    for ((node, answer), body) in nodes.iter().zip(&answers).zip(&bodies) {
        let parsed = body
            .as_ref()
            .map(|(bytes, down)| (bytes, aggregate::parse_list(bytes), *down));
        let failure = match (answer, parsed) {
            (Ok(_), Some((bytes, Ok(list), _))) => {
                if complete {
                    last_seen.remember(node.name(), bytes.clone());
                }
                lists.push((node, list, false));
                None
            }
            (Ok(_), Some((_, Err(e), _))) => Some(CallError::Bad(e)),
            (Err(m), Some((_, Ok(list), true))) => {
                lists.push((node, list, true));
                Some(m.clone())
            }
            (Err(m), _) => Some(m.clone()),
            (Ok(_), None) => None,
        };
        if let Some(reason) = failure {
            missing.push(NodeAnswer {
                node: node.name().to_owned(),
                result: Err(reason),
            });
        }
    }
    let parts: Vec<aggregate::NodePart> = lists
        .iter()
        .map(|(node, list, down)| aggregate::NodePart {
            node: node.name(),
            host: Some(aggregate::host_of(node.link.addr())),
            list,
            host_down: *down,
        })
        .collect();
    let merged = aggregate::merge_lists(&parts, req.uri().query().unwrap_or(""));
    if !nodes.is_empty() && missing.len() == nodes.len() && merged.host_down_rows == 0 {
        return with_failures(every_node_failed(&answers, &missing), &missing);
    }
    let rsp = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, merged.body.len())
        .body(full(merged.body))
        .expect("a status and valid headers make a response");
    with_failures(rsp, &missing)
}

/// The answer when every node asked failed: the engines' status and message if they all
/// answered the request with the same error (dockerd 20.10 answers a malformed `filters` with
/// a 500: the cluster answers what one engine would), else 503 naming each failure.
fn every_node_failed(
    answers: &[Result<Bytes, CallError>],
    missing: &[NodeAnswer<()>],
) -> Response<Body> {
    let refusals: Vec<(StatusCode, &str)> = answers
        .iter()
        .filter_map(|a| match a {
            Err(CallError::Engine { status, message }) => StatusCode::from_u16(*status)
                .ok()
                .map(|s| (s, message.as_str())),
            _ => None,
        })
        .collect();
    if let Some(&(status, message)) = refusals.first() {
        if refusals.len() == answers.len() && refusals.iter().all(|(s, _)| *s == status) {
            return respond::message(status, message);
        }
    }
    let why = aggregate::failed_nodes_header(missing).unwrap_or_default();
    respond::message(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("no node could list its containers: {why}"),
    )
}

/// A list merged by `merge`.
pub async fn merged(
    cluster: &Cluster,
    req: Request<Body>,
    ctx: &RequestCtx,
    merge: fn(&[NodeAnswer<Value>]) -> Value,
) -> Response<Body> {
    let answers = fan_out_request(cluster, &req, ctx).await;
    merged_or_failed(&answers, || merge(&answers))
}

/// The merged answer with the failed nodes named, or, when every node asked failed, a 503
/// saying why: an empty list would be a lie.
fn merged_or_failed(
    answers: &[NodeAnswer<Value>],
    merge: impl FnOnce() -> Value,
) -> Response<Body> {
    if aggregate::all_failed(answers) {
        let why = aggregate::failed_nodes_header(answers).unwrap_or_default();
        return respond::message(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no node answered: {why}"),
        );
    }
    with_failures(json(StatusCode::OK, &merge()), answers)
}

/// A list merged by `merge`, which also needs the nodes (for node-qualified names).
pub async fn merged_with_nodes(
    cluster: &Cluster,
    req: Request<Body>,
    ctx: &RequestCtx,
    merge: fn(&[NodeAnswer<Value>], &[NodeSnapshot]) -> Value,
) -> Response<Body> {
    let answers = fan_out_request(cluster, &req, ctx).await;
    merged_or_failed(&answers, || merge(&answers, &cluster.snapshots()))
}

/// The longest event line read from a node (an engine's are a few hundred bytes).
const MAX_EVENT: usize = 1024 * 1024;

/// A POST (prune) on every healthy node, answers merged.
pub async fn broadcast_merged(
    cluster: &Cluster,
    req: Request<Body>,
    ctx: &RequestCtx,
    merge: fn(&[NodeAnswer<Value>]) -> Value,
) -> Response<Body> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let nodes = cluster.healthy();
    let calls = nodes.iter().map(|n| {
        let target = target.clone();
        async move {
            let result =
                match calls::call(n, calls::request(Method::POST, &target, None), ctx).await {
                    Ok((s, body)) if s.is_success() => serde_json::from_slice(&body)
                        .map_err(|e| CallError::Bad(format!("invalid JSON: {e}"))),
                    Ok((s, body)) => Err(calls::engine_error(s, &body)),
                    Err(e) => Err(e),
                };
            NodeAnswer {
                node: n.name().to_owned(),
                result,
            }
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    merged_or_failed(&answers, || merge(&answers))
}

/// `GET /events`: one live stream merged from every node, each event tagged with its node.
/// `filters` go to every engine. With `until`, each healthy node's stream is read once and the
/// answer ends when every node's does. Without it (`docker events`), the stream lasts until
/// the client leaves and no node's events are lost on the way: a node whose stream ends (its
/// agent restarted, the hop broke) or that was not healthy, or not a member, when the client
/// came is followed as soon as it is healthy, from its last event (`since`: the engine
/// replays what it buffered, up to its last 256 events; what was already sent is not sent
/// twice).
pub async fn events(
    cluster: &Arc<Cluster>,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let nodes = cluster.healthy();
    if nodes.is_empty() {
        return respond::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No healthy node available in the cluster",
        );
    }
    let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, busbar_http::BoxError>>(64);
    if aggregate::query::param(&query, "until").is_some() {
        let target = format!("{path}?{query}");
        for node in nodes {
            let (tx, target, ctx) = (tx.clone(), target.clone(), ctx.for_call());
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let _ = relay_events(&node, &target, &mut seen, &tx, &ctx).await;
            });
        }
    } else {
        let since = aggregate::query::param(&query, "since");
        let follow = Follow {
            cluster: cluster.clone(),
            path,
            query: without_since(&query),
            since,
            tx: tx.clone(),
            ctx: ctx.for_call(),
        };
        tokio::spawn(follow.run());
    }
    drop(tx);
    let body = BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx)));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("valid headers")
}

type EventSender = mpsc::Sender<Result<http_body::Frame<Bytes>, busbar_http::BoxError>>;

/// How often a followed stream looks for new members and for nodes healthy again.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// One client's `docker events` across the cluster: a follower per member, started as members
/// appear, until the client leaves.
struct Follow {
    cluster: Arc<Cluster>,
    path: String,
    /// The client's query without `since`.
    query: String,
    /// Where a node's stream starts when it has sent nothing yet: the client's `since`, if any
    /// (else live: a gateway's clock is not the engines').
    since: Option<String>,
    tx: EventSender,
    ctx: RequestCtx,
}

impl Follow {
    async fn run(self) {
        let this = Arc::new(self);
        let mut followed = std::collections::HashSet::new();
        loop {
            for node in this.cluster.nodes() {
                if followed.insert(node.name().to_owned()) {
                    tokio::spawn(this.clone().node(node.name().to_owned()));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = this.tx.closed() => return,
            }
        }
    }

    /// Follows one node: relays its stream while it lasts, then waits for the node to be
    /// healthy again and asks for what happened since its last event.
    async fn node(self: Arc<Self>, name: String) {
        let mut seen = Seen::default();
        loop {
            if let Some(node) = self.cluster.node(&name).filter(|n| n.is_healthy()) {
                let since = seen.since().or_else(|| self.since.clone());
                let mut query = self.query.clone();
                if let Some(since) = since {
                    let sep = if query.is_empty() { "" } else { "&" };
                    query = format!("{query}{sep}since={}", aggregate::query::encode(&since));
                }
                let target = format!("{}?{query}", self.path);
                match relay_events(&node, &target, &mut seen, &self.tx, &self.ctx).await {
                    Relayed::ClientGone => return,
                    Relayed::Ended(why) => {
                        warn!(node = %name, why, "events: the node's stream ended; following it again from its last event once it answers")
                    }
                }
            } else if self.cluster.node(&name).is_none() {
                return debug!(node = %name, "events: the node left the cluster");
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = self.tx.closed() => return,
            }
        }
    }
}

/// `query` without its `since` parameters (the follower sets its own).
fn without_since(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            busbar_api::query::pairs(p)
                .next()
                .is_none_or(|(k, _)| k != "since")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The events of one node already relayed to the client: the time of the last one and every
/// event at that time (an engine asked `since` that time sends them again).
#[derive(Default)]
struct Seen {
    last: Option<i64>,
    at_last: Vec<Vec<u8>>,
}

impl Seen {
    /// Whether `line` (an event at `time`) is new, noting it if so.
    fn is_new(&mut self, time: Option<i64>, line: &[u8]) -> bool {
        let Some(time) = time else { return true };
        match self.last {
            Some(last) if time < last => false,
            Some(last) if time == last => {
                if self.at_last.iter().any(|l| l == line) {
                    return false;
                }
                self.at_last.push(line.to_vec());
                true
            }
            _ => {
                self.last = Some(time);
                self.at_last = vec![line.to_vec()];
                true
            }
        }
    }

    fn since(&self) -> Option<String> {
        self.last.map(|t| {
            let (secs, nanos) = (t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000));
            format!("{secs}.{nanos:09}")
        })
    }
}

enum Relayed {
    ClientGone,
    Ended(String),
}

/// Relays one node's event stream for `target` to the client, tagged, skipping what `seen`
/// says was sent; until the stream ends or the client leaves.
async fn relay_events(
    node: &Arc<Node>,
    target: &str,
    seen: &mut Seen,
    tx: &EventSender,
    ctx: &RequestCtx,
) -> Relayed {
    let snapshot = node.snapshot();
    let rsp = tokio::select! {
        r = calls::forward(node, calls::request(Method::GET, target, None), ctx) => r,
        _ = tx.closed() => return Relayed::ClientGone,
    };
    let rsp = match rsp {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return Relayed::Ended(format!("refused: {}", r.status())),
        Err(e) => return Relayed::Ended(e.to_string()),
    };
    let mut body = rsp.into_body();
    let mut line = Vec::new();
    loop {
        // An idle node stream must not outlive its client: stop when the client leaves.
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = tx.closed() => return Relayed::ClientGone,
        };
        let data = match frame {
            None => return Relayed::Ended("the stream ended".into()),
            Some(Err(e)) => return Relayed::Ended(e.to_string()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        for &b in data.iter() {
            if b != b'\n' {
                if line.len() >= MAX_EVENT {
                    // Not an engine's event stream: a node must not grow our memory.
                    return Relayed::Ended(format!("a line over {MAX_EVENT} bytes"));
                }
                line.push(b);
                continue;
            }
            if let Ok(mut event) = serde_json::from_slice::<Value>(&line) {
                if seen.is_new(event["timeNano"].as_i64(), &line) {
                    aggregate::tag_event(&mut event, &snapshot);
                    let mut out = event.to_string().into_bytes();
                    out.push(b'\n');
                    let frame = http_body::Frame::data(Bytes::from(out));
                    if tx.send(Ok(frame)).await.is_err() {
                        return Relayed::ClientGone;
                    }
                }
            }
            line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::{HealthOptions, Member};

    fn cluster(names: &[&str]) -> Arc<Cluster> {
        let cluster = Cluster::new(crate::cluster::tests::tls(), HealthOptions::default());
        let member = |i: usize| Member {
            addr: format!("127.0.0.{}:9", i + 1),
            labels: BTreeMap::new(),
        };
        cluster.set_members(
            &names
                .iter()
                .enumerate()
                .map(|(i, n)| ((*n).to_owned(), member(i)))
                .collect(),
        );
        cluster
    }

    #[tokio::test]
    async fn made_again_only_after_a_change_and_only_the_changed_nodes_parts() {
        let c = cluster(&["node1", "node2", "node3"]);
        let made = MadeDoc::default();
        let wholes = Cell::new(0);
        let errors = |parts: &[Arc<NodeParts>]| -> String {
            wholes.set(wholes.get() + 1);
            let docs: Vec<&aggregate::VersionPart> = parts.iter().map(|p| &p.version).collect();
            let doc: Value = serde_json::from_str(&aggregate::version_from_parts(
                &docs,
                &aggregate::GatewayFacts::new("", "0"),
            ))
            .unwrap();
            let components = doc["Components"].as_array().unwrap().iter().skip(1);
            components
                .map(|c| c["Details"]["Error"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let first = made.get_or_make(&c, errors).await;
        assert_eq!(
            first,
            "not contacted yet,not contacted yet,not contacted yet"
        );
        let node1_parts = c.node("node1").unwrap().parts();
        // Nothing changed: the same bytes, nothing made.
        assert_eq!(made.get_or_make(&c, errors).await, first);
        assert_eq!(wholes.get(), 1);
        // One node changed: the body is made again, with that node's new part; the others' are kept.
        c.node("node2").unwrap().mark_unhealthy("boom");
        assert_eq!(
            made.get_or_make(&c, errors).await,
            "not contacted yet,boom,not contacted yet"
        );
        assert_eq!(wholes.get(), 2);
        assert!(Arc::ptr_eq(&node1_parts, &c.node("node1").unwrap().parts()));
    }

    fn answer(node: &str, result: Result<Value, &str>) -> NodeAnswer<Value> {
        NodeAnswer {
            node: node.into(),
            result: result.map_err(|e| CallError::Bad(e.to_owned())),
        }
    }

    #[test]
    fn a_list_no_node_answered_is_an_error_not_an_empty_list() {
        let all_down = [
            answer("node1", Err("connection refused")),
            answer("node2", Err("timeout")),
        ];
        let rsp = merged_or_failed(&all_down, || Value::Array(vec![]));
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);

        let one_up = [
            answer("node1", Err("connection refused")),
            answer("node2", Ok(Value::Array(vec![]))),
        ];
        let rsp = merged_or_failed(&one_up, || Value::Array(vec![]));
        assert_eq!(rsp.status(), StatusCode::OK);
        let failed = rsp.headers()[aggregate::FAILED_NODES_HEADER]
            .to_str()
            .unwrap();
        assert!(failed.contains("node1: connection refused"), "{failed}");
    }
}

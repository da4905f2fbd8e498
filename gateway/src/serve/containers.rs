//! Containers across the cluster: finding the node that owns a reference, routing calls to
//! it, and creating containers where the scheduler says.
//!
//! References: a full ID, a unique ID prefix, a name, `/name`, or `node/name`. Each healthy
//! node's engine resolves the reference itself (`GET /containers/{ref}/json`); exactly one
//! match wins, several are an error that says so (404, as the engine answers for an
//! ambiguous prefix), none is Docker's own "No such container". The node found is remembered
//! (a cache, checked on use, that any gateway can rebuild), so most calls cost one inspect.
//! The path then goes to the owner with the full ID in place of the reference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use busbar_api::path::encode_segment;
use busbar_http::body::full;
use busbar_http::error as respond;
use busbar_http::{Body, RequestCtx};
use http::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::calls;
use crate::cluster::{Cluster, Node};
use crate::model::CallError;

/// Why a reference did not lead to one container.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("container reference {reference:?} is ambiguous: it matches containers on {nodes}; use node/name or a longer ID")]
    Ambiguous { reference: String, nodes: String },
    #[error("No such node: {0}")]
    NoSuchNode(String),
    #[error("container {reference} is on node {node}, which is unhealthy: {error}")]
    Unhealthy {
        reference: String,
        node: String,
        error: String,
    },
    #[error("node {node}: {error}")]
    Node { node: String, error: CallError },
}

impl respond::DockerError for ResolveError {
    fn status(&self) -> StatusCode {
        match self {
            ResolveError::NotFound(_)
            | ResolveError::Ambiguous { .. }
            | ResolveError::NoSuchNode(_) => StatusCode::NOT_FOUND,
            ResolveError::Unhealthy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ResolveError::Node {
                error: CallError::Down(_) | CallError::Timeout(_),
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            ResolveError::Node { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A container found: where it lives, and its inspect document.
pub struct Found {
    pub node: Arc<Node>,
    pub id: String,
    pub inspect: Value,
}

/// Remembered reference -> node, and exec ID -> node. Soft state: a miss or a stale entry costs
/// a fan-out, never a wrong answer.
#[derive(Default)]
pub struct Locations {
    containers: Mutex<HashMap<String, String>>,
    execs: Mutex<HashMap<String, String>>,
}

/// Entries kept before the maps are simply cleared (bounded memory).
const MAX_REMEMBERED: usize = 50_000;

fn remember(map: &Mutex<HashMap<String, String>>, key: &str, node: &str) {
    let mut m = map.lock().expect("locations lock");
    if m.len() >= MAX_REMEMBERED {
        m.clear();
    }
    m.insert(key.to_owned(), node.to_owned());
}

impl Locations {
    /// Finds the container `reference` (optionally on `node_hint`).
    pub async fn resolve(
        &self,
        cluster: &Cluster,
        node_hint: Option<&str>,
        reference: &str,
        ctx: &RequestCtx,
    ) -> Result<Found, ResolveError> {
        let path = format!("/v1.41/containers/{}/json", encode_segment(reference));
        if let Some(name) = node_hint {
            let node = cluster
                .node(name)
                .ok_or_else(|| ResolveError::NoSuchNode(name.to_owned()))?;
            return self
                .inspect_on(&node, &path, reference, ctx)
                .await?
                .ok_or_else(|| ResolveError::NotFound(format!("{name}/{reference}")));
        }
        let remembered = self
            .containers
            .lock()
            .expect("locations lock")
            .get(reference)
            .cloned();
        if let Some(node) = remembered.and_then(|n| cluster.node(&n)) {
            if !node.is_healthy() {
                let error = node.snapshot().last_error.unwrap_or_default();
                return Err(ResolveError::Unhealthy {
                    reference: reference.to_owned(),
                    node: node.name().to_owned(),
                    error,
                });
            }
            // Where it was last seen (or just created): an error there is the answer, since
            // that is where it is; only a node that no longer has it sends us looking.
            if let Some(found) = self.inspect_on(&node, &path, reference, ctx).await? {
                return Ok(found);
            }
        }
        let nodes = cluster.healthy();
        let answers = futures_util::future::join_all(
            nodes
                .iter()
                .map(|n| self.inspect_on(n, &path, reference, ctx)),
        )
        .await;
        let mut found: Vec<Found> = vec![];
        for answer in answers {
            match answer {
                Ok(Some(f)) => found.push(f),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        if found.len() > 1 {
            // An exact ID or name beats prefixes elsewhere.
            let exact: Vec<usize> = (0..found.len())
                .filter(|&i| {
                    found[i].id == reference
                        || found[i].inspect["Name"].as_str()
                            == Some(&format!("/{}", reference.trim_start_matches('/')))
                })
                .collect();
            if exact.len() == 1 {
                found = vec![found.swap_remove(exact[0])];
            }
        }
        match found.len() {
            0 => Err(ResolveError::NotFound(reference.to_owned())),
            1 => {
                let f = found.pop().expect("one element");
                remember(&self.containers, reference, f.node.name());
                Ok(f)
            }
            _ => Err(ResolveError::Ambiguous {
                reference: reference.to_owned(),
                nodes: found
                    .iter()
                    .map(|f| f.node.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    async fn inspect_on(
        &self,
        node: &Arc<Node>,
        path: &str,
        reference: &str,
        ctx: &RequestCtx,
    ) -> Result<Option<Found>, ResolveError> {
        if !node.is_healthy() {
            let error = node.snapshot().last_error.unwrap_or_default();
            return Err(ResolveError::Unhealthy {
                reference: reference.to_owned(),
                node: node.name().to_owned(),
                error,
            });
        }
        match calls::get_json(node, path, ctx).await {
            Ok(doc) => {
                let id = doc["Id"].as_str().unwrap_or_default().to_owned();
                Ok(Some(Found {
                    node: node.clone(),
                    id,
                    inspect: doc,
                }))
            }
            Err(CallError::Engine { status: 404, .. }) => Ok(None),
            Err(error) => Err(ResolveError::Node {
                node: node.name().to_owned(),
                error,
            }),
        }
    }

    /// Remembers that the container `reference` (an ID or a name) is on `node`.
    pub fn remember_container(&self, reference: &str, node: &str) {
        remember(&self.containers, reference, node);
    }

    pub fn remember_exec(&self, exec_id: &str, node: &str) {
        remember(&self.execs, exec_id, node);
    }

    /// The node running exec `id`: remembered at exec create, or asked of every node.
    pub async fn exec_node(
        &self,
        cluster: &Cluster,
        id: &str,
        ctx: &RequestCtx,
    ) -> Option<Arc<Node>> {
        let remembered = self.execs.lock().expect("locations lock").get(id).cloned();
        if let Some(node) = remembered.and_then(|n| cluster.node(&n)) {
            return Some(node);
        }
        let path = format!("/v1.41/exec/{}/json", encode_segment(id));
        let nodes = cluster.healthy();
        let answers =
            futures_util::future::join_all(nodes.iter().map(|n| calls::get_json(n, &path, ctx)))
                .await;
        let node = nodes
            .into_iter()
            .zip(answers)
            .find(|(_, a)| a.is_ok())
            .map(|(n, _)| n)?;
        remember(&self.execs, id, node.name());
        Some(node)
    }
}

/// `req` with its path rewritten to `{prefix}/{kind}/{id}[/{rest}]`, query kept. `id` (a
/// client's reference, or an ID an engine gave) and `rest` (decoded segments) are escaped.
pub fn retarget<B>(req: &mut Request<B>, prefix: &str, kind: &str, id: &str, rest: &str) {
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let id = encode_segment(id);
    let path = if rest.is_empty() {
        format!("{prefix}/{kind}/{id}{query}")
    } else {
        format!("{prefix}/{kind}/{id}/{}{query}", encode_segments(rest))
    };
    *req.uri_mut() = path
        .parse()
        .expect("a version prefix, escaped segments and the query of a valid URI make a valid URI");
}

/// Decoded segments joined by `/` (an image name, the rest of a path), each escaped for a
/// path the gateway builds.
pub fn encode_segments(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// The inspect document with Swarm's `Node` object added (to an object: an engine that
/// answered anything else is passed on as it answered).
pub fn with_node(mut inspect: Value, node: &Node) -> Value {
    let Some(doc) = inspect.as_object_mut() else {
        return inspect;
    };
    let snap = node.snapshot();
    doc.insert(
        "Node".into(),
        serde_json::json!({
            "ID": snap.name,
            "IP": snap.host(),
            "Addr": snap.addr,
            "Name": snap.name,
            "Cpus": snap.info["NCPU"],
            "Memory": snap.info["MemTotal"],
            "Labels": snap.labels,
        }),
    );
    inspect
}

/// A JSON response.
pub fn json(status: StatusCode, doc: &Value) -> Response<Body> {
    let body = doc.to_string();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .expect("a status and valid headers make a response")
}

/// Whether `method rest` is an inspect (`GET .../json`).
pub fn is_inspect(method: &Method, rest: &str) -> bool {
    method == Method::GET && rest == "json"
}

#[cfg(test)]
mod tests {
    use busbar_api::ApiPath;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_inspect_that_is_not_an_object_passes_unchanged() {
        // Indexing into it as an object (serde_json's IndexMut) panicked.
        let node = crate::cluster::tests::node("node1");
        for doc in [serde_json::json!([1]), Value::Null, serde_json::json!("x")] {
            assert_eq!(with_node(doc.clone(), &node), doc);
        }
        let doc = with_node(serde_json::json!({"Id": "abc"}), &node);
        assert_eq!(doc["Node"]["Name"], "node1");
    }

    proptest! {
        #![proptest_config(crate::strategies::config(500))]

        /// Any reference or ID, and any decoded rest, make a valid target that the engine
        /// reads back as those segments.
        #[test]
        fn retargeted_paths_are_valid_and_read_back(
            id in prop_oneof!["[a-f0-9]{1,12}", any::<String>()],
            rest in prop::collection::vec(prop_oneof!["[a-z]{1,6}", any::<String>()], 0..3),
            query in prop::option::of("[a-z]=[0-9%]{0,4}"),
        ) {
            let target = match &query {
                Some(q) => format!("/v1.41/containers/x/json?{q}"),
                None => "/v1.41/containers/x/json".to_owned(),
            };
            let mut req = Request::get(target).body(()).unwrap();
            let rest = rest.join("/");
            retarget(&mut req, "/v1.41", "containers", &id, &rest);
            prop_assert_eq!(req.uri().query(), query.as_deref());
            if let Ok(p) = ApiPath::parse(req.uri().path()) {
                let mut want = vec!["containers", id.as_str()];
                if !rest.is_empty() {
                    want.extend(rest.split('/'));
                }
                prop_assert_eq!(p.segments(), want);
            }
        }
    }
}

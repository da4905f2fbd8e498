//! What the gateway gives adapters beyond Powerstrip's protocol (busbar's adapter API,
//! version 1, as `busbar_protocol::headers::ADAPTER_API` says): the cluster's nodes, and any
//! node's engine without the chains.
//!
//! - `GET /_busbar/v1/nodes`: every node as the gateway sees it, as JSON
//!   (`[{"name", "addr", "labels", "health"}]`).
//! - `ANY /_busbar/v1/nodes/<node>/<engine path>`: the call goes to that node's engine as is
//!   (`/_busbar/v1/nodes/node2/v1.41/containers/json` is node2's `/v1.41/containers/json`),
//!   streams and hijacked sessions included, and **no chain runs on it**: an adapter that
//!   calls an engine while one of its hooks is in flight never re-enters the chains (no
//!   recursion, no deadlock). The agent learns it from the exchange head
//!   (`X-Busbar-Hooks: off`), which only a gateway can write.
//!
//! Both need a client that proved it is an adapter: a certificate from the cluster CA with the
//! `adapter` role (`busbarctl certs issue --role adapter`), on the gateway's `--tls-listen`
//! listener with `--tlsverify`. Anyone else gets a 403: calling an engine past the chains is
//! exactly what the chains exist to prevent for ordinary clients.

use busbar_api::ApiPath;
use busbar_http::error as respond;
use busbar_http::{Body, RequestCtx};
use http::{Request, Response, StatusCode};
use serde_json::json;

use super::containers::json as json_response;
use super::ClusterHandler;

/// The prefix of the adapter API's routes (unversioned paths only, like the engine's own
/// `/_ping`).
pub const PREFIX: &str = "/_busbar/v1/";

/// Whether `path` (canonical) is one of the adapter API's.
pub fn is_adapter_api(path: &ApiPath<'_>) -> bool {
    path.version().is_none() && path.as_str().starts_with(PREFIX)
}

impl ClusterHandler {
    /// Serves the adapter API (see the module docs).
    pub(super) async fn adapter_api(
        &self,
        mut req: Request<Body>,
        path: &ApiPath<'_>,
        ctx: &RequestCtx,
    ) -> Response<Body> {
        if !ctx.identity.as_ref().is_some_and(|id| id.is_adapter()) {
            return respond::message(
                StatusCode::FORBIDDEN,
                "the adapter API needs a client certificate with the adapter role (busbarctl certs issue --role adapter), on the gateway's --tls-listen",
            );
        }
        let rest = &path.as_str()[PREFIX.len()..];
        if rest == "nodes" {
            let nodes: Vec<serde_json::Value> = self
                .cluster
                .snapshots()
                .iter()
                .map(|n| {
                    json!({"name": n.name, "addr": n.addr, "labels": n.labels, "health": n.health.to_string()})
                })
                .collect();
            return json_response(StatusCode::OK, &serde_json::Value::Array(nodes));
        }
        let Some((node, _)) = rest.strip_prefix("nodes/").and_then(|r| r.split_once('/')) else {
            return respond::message(StatusCode::NOT_FOUND, "page not found");
        };
        let Some(node) = self.cluster.node(node) else {
            return respond::message(StatusCode::NOT_FOUND, &format!("No such node: {node}"));
        };
        // The tail goes upstream in the canonical path's own encoding (never decoded twice:
        // `a%2541` named the container `a%41`, not `aA`).
        let encoded = path.encoded();
        let tail = &encoded[PREFIX.len() + "nodes/".len() + node.name().len()..];
        let target = match req.uri().query() {
            Some(q) => format!("{tail}?{q}"),
            None => tail.to_owned(),
        };
        match target.parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return respond::message(StatusCode::BAD_REQUEST, "invalid request target"),
        }
        let mut call = ctx.for_call();
        call.skip_hooks = true;
        self.forward(&node, req, &call).await
    }
}

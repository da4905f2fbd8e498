//! Merging per-node answers into one cluster answer: pure functions, no IO (the one exception,
//! [`GatewayFacts::of_this_host`], reads three host files and is meant to run once at start).
//!
//! The gateway does the fan-out: it sends every node the client's own request (query string and
//! all, minus the `node` filter, see [`strip_node_filter`]), so each engine applies its own
//! filters, and then hands the answers here as [`NodeAnswer`]s together with its
//! [`NodeSnapshot`]s. What comes back is the document the docker CLI gets, shaped the way Docker
//! Swarm "classic" shaped it:
//!
//! - containers are named `/<node>/<name>` (the CLI shows `node1/web`), and a published port bound
//!   to `0.0.0.0`/`::` shows the node's address instead ([`containers`]);
//! - images are grouped by ID ([`images`]); node-local networks and volumes are named
//!   `<node>/<name>`, cluster-wide ones appear once ([`networks`], [`volumes`]);
//! - `/info` is the cluster's totals plus one block per node in `SystemStatus`, which the docker
//!   CLI (checked with 28.2) prints verbatim right under `Server Version` ([`info`]);
//! - `/version` is the gateway's, with the API range every healthy node accepts ([`version`]);
//! - both are made from the nodes' snapshots in practice (the gateway does not fan them out):
//!   each node's share is an [`InfoPart`] / [`VersionPart`], made from that node alone and
//!   kept until it changes, and [`info_from_parts`] / [`version_from_parts`] put the cluster's
//!   document together from them, so a thousand nodes are a thousand string copies per request;
//! - events carry the node they come from ([`tag_event`]); `system df` and the `*/prune` answers
//!   are added up ([`system_df`], [`prune`]).
//!
//! # When nodes fail
//!
//! A node's answer is `Ok` only if its engine answered 2xx with a JSON body; anything else (no
//! connection, timeout, agent error, engine error status) is an `Err` with a one-line reason.
//!
//! - **List endpoints** (`containers/json`, `images/json`, `networks`, `volumes`, `system/df`,
//!   `*/prune`) answer **200 with what the nodes that answered said**. The nodes that failed are
//!   named in the [`FAILED_NODES_HEADER`] response header, whose value
//!   [`failed_nodes_header`] builds: `node2: connection refused; node3: timeout`. The merge
//!   functions here skip failed answers: they never invent entries for them. The one exception
//!   is `containers/json`: for a node that is down, the gateway passes the node's last-known
//!   list, which [`merge_lists`] shows as "Host Down" rows, as Swarm did (see `containers`).
//! - If **every** asked node failed ([`all_failed`]), an empty list would be a lie: the gateway
//!   answers an error instead: 503 with the header's text as the message (for
//!   `containers/json`, when the engines all refused the request itself with the same 4xx,
//!   that status). A prune on no healthy node at all answers 200 with nothing pruned.
//! - **`/info`** never drops a node: a node that failed is listed in its `SystemStatus` block with
//!   `Status: Unhealthy` and the failure in `└ Error`, and only healthy nodes count in the totals.
//!   `/version` likewise lists it among its `Components` with its status and error.
//!
//! # Layout
//! - [`query`]: the `node` filter engines don't know, and `limit`.
//! - `containers`, `images`, `networks`, `volumes`, `disk` (`system df`, prune): the list merges.
//! - `info`, `version`: the gateway's own `/info` and `/version` documents; `facts`: what they
//!   say about the gateway itself ([`GatewayFacts`], the one place that reads host files).
//! - `events`: tagging one node's events.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::model::{CallError, Health, NodeAnswer, NodeSnapshot};

mod containers;
mod disk;
mod events;
mod facts;
mod images;
mod info;
mod networks;
pub mod query;
mod version;
mod volumes;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod properties;

pub use containers::{
    containers, docker_bool, filter_keys, host_of, merge_lists, parse_list, pin_ports,
    qualify_container, qualify_names, render_rows, ContainerList, HostDown, Merged, NodePart,
    RenderedRow, HOST_DOWN,
};
pub use disk::{prune, system_df};
pub use events::tag_event;
pub use facts::{GatewayFacts, DEFAULT_FILTERS};
pub use images::images;
pub use info::{
    bytes_size, info, info_from_parts, info_from_parts_with, info_with_reserved, labels_of,
    node_labels, rfc3339, InfoPart,
};
pub use networks::{is_cluster_scope, networks};
pub use query::{limit, node_filter, strip_node_filter};
pub use version::{
    api_version_range, compare_api_versions, go_arch, version, version_from_parts,
    version_with_facts, VersionPart,
};
pub use volumes::volumes;

/// The response header naming the nodes whose part is missing from a list answer.
pub const FAILED_NODES_HEADER: &str = "X-Busbar-Failed-Nodes";

/// The API version `/version` advertises when no node has told us its own (dockerd 20.10's).
pub const FALLBACK_API_VERSION: &str = "1.41";
/// The oldest API version `/version` advertises when no node has told us its own.
pub const FALLBACK_MIN_API_VERSION: &str = "1.12";

/// The value of [`FAILED_NODES_HEADER`] for a fanned-out call: `node2: connection refused;
/// node3: timeout`, nodes in name order, or `None` if every node answered. Characters a header
/// value cannot carry become `?` (line breaks become spaces); each reason is cut at 200 characters.
pub fn failed_nodes_header<T>(answers: &[NodeAnswer<T>]) -> Option<String> {
    let mut failed: Vec<(&str, String)> = answers
        .iter()
        .filter_map(|a| {
            a.result
                .as_ref()
                .err()
                .map(|e| (a.node.as_str(), e.to_string()))
        })
        .collect();
    if failed.is_empty() {
        return None;
    }
    failed.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = failed
        .iter()
        .map(|(node, error)| format!("{}: {}", header_safe(node, 100), header_safe(error, 200)))
        .collect();
    Some(parts.join("; "))
}

/// True if nodes were asked and none answered: the gateway then answers an error, not an empty list.
pub fn all_failed<T>(answers: &[NodeAnswer<T>]) -> bool {
    !answers.is_empty() && answers.iter().all(|a| a.result.is_err())
}

/// Parses raw answer bodies as JSON; a body that is not JSON becomes that node's `Err`.
pub fn parse_answers<T: AsRef<[u8]>>(answers: &[NodeAnswer<T>]) -> Vec<NodeAnswer<Value>> {
    answers
        .iter()
        .map(|a| NodeAnswer {
            node: a.node.clone(),
            result: match &a.result {
                Ok(body) => serde_json::from_slice(body.as_ref())
                    .map_err(|e| CallError::Bad(format!("engine answer is not JSON: {e}"))),
                Err(e) => Err(e.clone()),
            },
        })
        .collect()
}

/// `node/name`: how node-local objects are named across the cluster.
pub fn qualify(node: &str, name: &str) -> String {
    format!("{node}/{name}")
}

fn header_safe(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| match c {
            ' ' | '\t' | '\r' | '\n' => ' ',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect();
    if text.chars().count() > max_chars {
        out.push_str("...");
    }
    out
}

/// The answers that succeeded, in node-name order (answers arrive in completion order; sorting
/// makes merged lists the same from one call to the next).
fn answered(answers: &[NodeAnswer<Value>]) -> Vec<(&str, &Value)> {
    let mut ok: Vec<(&str, &Value)> = answers
        .iter()
        .filter_map(|a| a.result.as_ref().ok().map(|v| (a.node.as_str(), v)))
        .collect();
    ok.sort_by(|a, b| a.0.cmp(b.0));
    ok
}

/// One node as a cluster document (`/info`, `/version`) sees it: its fresh answer if it gave one,
/// else what its snapshot last saw.
struct NodeView<'a> {
    name: &'a str,
    snapshot: Option<&'a NodeSnapshot>,
    /// The node's document (fresh or last seen); `None` if never seen.
    doc: Option<&'a Value>,
    health: Health,
    error: Option<std::borrow::Cow<'a, str>>,
}

impl NodeView<'_> {
    /// The document, but only if the node is healthy: what totals are made of.
    fn healthy_doc(&self) -> Option<&Value> {
        if self.health == Health::Healthy {
            self.doc
        } else {
            None
        }
    }
}

/// Every node known from the snapshots or the answers, in name order. A fresh `Ok` answer makes
/// the node healthy; a failed one makes it unhealthy with that error (its last-seen document is
/// still shown); a node not asked keeps its snapshot's health and error.
fn node_views<'a>(
    nodes: &'a [NodeSnapshot],
    answers: &'a [NodeAnswer<Value>],
    last_seen: fn(&NodeSnapshot) -> &Value,
) -> Vec<NodeView<'a>> {
    // Indexed by name: a thousand nodes must not cost a million comparisons.
    let by_name: BTreeMap<&str, &NodeSnapshot> =
        nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let answer_of: BTreeMap<&str, &Result<Value, CallError>> = answers
        .iter()
        .map(|a| (a.node.as_str(), &a.result))
        .collect();
    let names: BTreeSet<&str> = by_name.keys().chain(answer_of.keys()).copied().collect();
    names
        .into_iter()
        .map(|name| {
            let snapshot = by_name.get(name).copied();
            let cached = snapshot.map(last_seen).filter(|v| !v.is_null());
            let (doc, health, error) = match answer_of.get(name).copied() {
                Some(Ok(doc)) => (Some(doc), Health::Healthy, None),
                Some(Err(e)) => (cached, Health::Unhealthy, Some(e.to_string().into())),
                None => (
                    cached,
                    snapshot.map_or(Health::Unhealthy, |s| s.health),
                    snapshot.and_then(|s| s.last_error.as_deref().map(Into::into)),
                ),
            };
            NodeView {
                name,
                snapshot,
                doc,
                health,
                error,
            }
        })
        .collect()
}

/// `doc` (an object) as JSON text, with `key` added: an array of `items`, each already JSON
/// text. How a document of a thousand parts made earlier is put together without parsing
/// them again.
fn with_raw_array<'a>(doc: &Value, key: &str, items: impl Iterator<Item = &'a str>) -> String {
    let mut out = doc.to_string();
    let closing = out.pop();
    debug_assert_eq!(closing, Some('}'), "an object");
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&Value::from(key).to_string());
    out.push_str(":[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push_str("]}");
    out
}

/// A document written here as text ([`info_from_parts`], [`version_from_parts`],
/// [`merge_lists`]), read back as a `Value` for the callers that want one. Its depth is that of
/// the nodes' documents plus a few levels (a node's `/version` field ends up inside
/// `Components[].Details`), which serde_json's default limit of 128 refuses for a document
/// that was near it: so no limit here. The text is ours, and no deeper than documents that
/// were themselves parsed (or serialized) already.
fn reread(text: &[u8]) -> Value {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(text);
    de.disable_recursion_limit();
    Value::deserialize(&mut de).expect("the documents written here are valid JSON")
}

/// A JSON integer field, 0 if absent or not a number.
fn int(doc: &Value, key: &str) -> i64 {
    match &doc[key] {
        Value::Number(n) => n
            .as_i64()
            .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64),
        _ => 0,
    }
}

/// A JSON string field, "" if absent.
fn text<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc[key].as_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::fixtures::{err, ok};

    #[test]
    fn failed_nodes_header_names_failures_in_node_order() {
        let answers = vec![
            err("node3", "timeout"),
            ok("node1", serde_json::json!([])),
            err("node2", "connection refused"),
        ];
        assert_eq!(
            failed_nodes_header(&answers).as_deref(),
            Some("node2: connection refused; node3: timeout")
        );
        assert_eq!(
            failed_nodes_header(&[ok("node1", serde_json::json!([]))]),
            None
        );
    }

    #[test]
    fn failed_nodes_header_is_a_valid_header_value() {
        let long = "x".repeat(300);
        let answers = vec![err("node1", "agent said:\r\n└ boom"), err("node2", &long)];
        let value = failed_nodes_header(&answers).expect("two failures");
        assert!(
            value.starts_with("node1: agent said:  ? boom; node2: xxx"),
            "{value}"
        );
        assert!(value.ends_with("x..."));
        assert!(http::HeaderValue::from_str(&value).is_ok());
    }

    #[test]
    fn all_failed_needs_at_least_one_node() {
        assert!(!all_failed::<Value>(&[]));
        assert!(all_failed(&[err("node1", "timeout")]));
        assert!(!all_failed(&[
            err("node1", "timeout"),
            ok("node2", Value::Null)
        ]));
    }

    #[test]
    fn parse_answers_turns_bad_json_into_that_nodes_error() {
        let answers = vec![
            NodeAnswer {
                node: "node1".into(),
                result: Ok(b"[1]".to_vec()),
            },
            NodeAnswer {
                node: "node2".into(),
                result: Ok(b"<html>".to_vec()),
            },
            NodeAnswer {
                node: "node3".into(),
                result: Err(CallError::Bad("timeout".into())),
            },
        ];
        let parsed = parse_answers(&answers);
        assert_eq!(parsed[0].result, Ok(serde_json::json!([1])));
        assert!(parsed[1]
            .result
            .as_ref()
            .is_err_and(|e| e.to_string().starts_with("engine answer is not JSON")));
        assert_eq!(parsed[2].result, Err(CallError::Bad("timeout".to_owned())));
    }
}

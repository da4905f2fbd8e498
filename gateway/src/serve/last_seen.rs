//! Each node's last complete container list, so that `docker ps -a` can still show the
//! containers of a node that is down, as "Host Down" rows (Swarm's behaviour;
//! the merge is [`crate::aggregate::merge_lists`]).
//!
//! # What is remembered, and when
//!
//! Per node, the raw body of the engine's answer to `GET /containers/json?all=1` (every
//! container, no filter, no limit), and when it came. It is taken:
//! - from every such answer to a client (`docker ps -a`, docker-py's `containers.list(all=True)`,
//!   `ps -a --filter node=...`: [`is_complete_list`] says which queries qualify);
//! - by [`LastSeen::run`], which every [`CHECK_EVERY`] asks each healthy node whose list is
//!   older than [`MAX_AGE`] (or missing) for it: Swarm refreshed its container cache every
//!   30-60 s too. So a node that goes down is shown as it was at most about `MAX_AGE +
//!   CHECK_EVERY` earlier, or as the last `ps -a` saw it, whichever is newer.
//!
//! With the list cache (the default: see `serve::listcache`), its full lists of each node are
//! remembered instead of [`LastSeen::run`]'s, which is then not started.
//!
//! A remembered list is only ever shown for a node that is down (unhealthy, disconnected, or
//! not answering the call); a node that answers is shown from its answer. Nothing else
//! changes an entry: a container created or removed through the gateway after the last refresh
//! is missing from (or still in) the Host Down rows.
//!
//! # Soft state
//!
//! This is a cache the gateway can always rebuild from the agents: a restarted gateway starts
//! with none (the nodes that are down then show no Host Down rows until they come back), and
//! two gateways side by side may remember different moments. Memory: about the size of the
//! lists (22 KiB for 30 containers; 22 MiB at 1,000 such nodes), held as the answers' own
//! buffers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_http::RequestCtx;
use bytes::Bytes;
use http::Method;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span};

use super::calls;
use crate::aggregate::{self, query};
use crate::cluster::Cluster;

/// A remembered list older than this is fetched again by [`LastSeen::run`].
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// How often [`LastSeen::run`] looks for lists to fetch.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// What the refresh asks each node.
const LIST_PATH: &str = "/v1.41/containers/json?all=1";

/// One node's remembered list.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The engine's JSON array, as it answered.
    pub body: Bytes,
    pub at: Instant,
}

/// Node name -> its last complete container list.
#[derive(Debug, Default)]
pub struct LastSeen {
    /// Short critical sections (a map lookup or insert, no await): a std mutex is right here.
    lists: Mutex<HashMap<String, Seen>>,
}

impl LastSeen {
    /// Remembers `body` as `node`'s complete list (the caller has checked it parses).
    pub fn remember(&self, node: &str, body: Bytes) {
        let seen = Seen {
            body,
            at: Instant::now(),
        };
        self.lists
            .lock()
            .expect("last-seen lock")
            .insert(node.to_owned(), seen);
    }

    /// `node`'s last complete list, if one was seen.
    pub fn get(&self, node: &str) -> Option<Seen> {
        self.lists
            .lock()
            .expect("last-seen lock")
            .get(node)
            .cloned()
    }

    /// The one node among `nodes` whose last list holds a container that `reference` names
    /// (its ID, a prefix of it, or its name), if exactly one does.
    pub fn holder_of<'n>(&self, reference: &str, nodes: &[&'n str]) -> Option<&'n str> {
        let name = format!("/{}", reference.trim_start_matches('/'));
        let names_it = |c: &serde_json::Value| {
            let id = c["Id"].as_str().unwrap_or_default();
            (!reference.is_empty() && id.starts_with(reference))
                || c["Names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n.as_str() == Some(&name)))
        };
        let mut holders = nodes.iter().copied().filter(|node| {
            self.get(node).is_some_and(|seen| {
                serde_json::from_slice::<Vec<serde_json::Value>>(&seen.body)
                    .is_ok_and(|list| list.iter().any(names_it))
            })
        });
        let holder = holders.next()?;
        holders.next().is_none().then_some(holder)
    }

    /// Forgets nodes that are no longer members of the cluster at all.
    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lists
            .lock()
            .expect("last-seen lock")
            .retain(|node, _| keep(node));
    }

    fn is_fresh(&self, node: &str, now: Instant) -> bool {
        self.lists
            .lock()
            .expect("last-seen lock")
            .get(node)
            .is_some_and(|s| now.duration_since(s.at) < MAX_AGE)
    }

    /// Keeps the lists fresh until `shutdown` (see the module docs). Nodes are asked
    /// concurrently; a node that fails keeps its last list.
    pub async fn run(self: Arc<Self>, cluster: Arc<Cluster>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            self.retain(|node| cluster.node(node).is_some());
            self.refresh(&cluster).await;
        }
    }

    /// One pass: fetches the list of every healthy node whose list is stale or missing.
    pub async fn refresh(&self, cluster: &Cluster) {
        let now = Instant::now();
        let stale: Vec<_> = cluster
            .healthy()
            .into_iter()
            .filter(|n| !self.is_fresh(n.name(), now))
            .collect();
        if stale.is_empty() {
            return;
        }
        let ctx = RequestCtx::with_id(
            "last-seen".into(),
            info_span!("last_seen", nodes = stale.len()),
        );
        let fetches = stale.iter().map(|node| {
            let ctx = &ctx;
            async move {
                match calls::call(node, calls::request(Method::GET, LIST_PATH, None), ctx).await {
                    Ok((status, body)) if status.is_success() => match aggregate::parse_list(&body) {
                        Ok(_) => self.remember(node.name(), body),
                        Err(e) => debug!(node = %node.name(), error = %e, "container list refresh"),
                    },
                    Ok((status, _)) => debug!(node = %node.name(), status = status.as_u16(), "container list refresh refused"),
                    Err(e) => debug!(node = %node.name(), error = %e, "container list refresh failed"),
                }
            }
        });
        futures_util::future::join_all(fetches).await;
    }
}

/// Whether an engine's answer to `query` (as sent to the engine, `node` filter removed) is
/// its complete list: `all` set, no positive `limit`, no `since`/`before`, no filter (`size`
/// and the like only add fields).
pub fn is_complete_list(query: &str) -> bool {
    let all = query::param(query, "all").is_some_and(|a| aggregate::docker_bool(&a));
    let unfiltered = aggregate::filter_keys(query).is_some_and(|keys| keys.is_empty());
    let bounded = query::limit(query).is_some()
        || query::param(query, "since").is_some()
        || query::param(query, "before").is_some();
    all && unfiltered && !bounded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference names a container of a down node by ID, ID prefix or name; a reference two
    /// nodes' lists hold, or none does, names no node.
    #[test]
    fn the_holder_of_a_reference_is_the_one_node_that_listed_it() {
        let seen = LastSeen::default();
        let list =
            |id: &str, name: &str| Bytes::from(format!(r#"[{{"Id":"{id}","Names":["/{name}"]}}]"#));
        seen.remember("n1", list("abc123", "web"));
        seen.remember("n2", list("def456", "db"));
        seen.remember("n3", list("abc999", "db"));
        let all = ["n1", "n2", "n3"];
        assert_eq!(seen.holder_of("web", &all), Some("n1"));
        assert_eq!(seen.holder_of("/web", &all), Some("n1"));
        assert_eq!(seen.holder_of("abc123", &all), Some("n1"));
        assert_eq!(seen.holder_of("def", &all), Some("n2"));
        assert_eq!(
            seen.holder_of("abc", &all),
            None,
            "two nodes hold an abc... ID"
        );
        assert_eq!(seen.holder_of("db", &all), None, "two nodes hold a db");
        assert_eq!(seen.holder_of("db", &["n1", "n3"]), Some("n3"));
        assert_eq!(seen.holder_of("we", &all), None, "names match whole");
        assert_eq!(seen.holder_of("nothing", &all), None);
        assert_eq!(seen.holder_of("web", &["n2", "n4"]), None);
    }

    #[test]
    fn complete_lists_are_all_containers_unfiltered() {
        let empty_filters = [
            "all=1&filters=%7B%7D",
            "all=1&filters=%7B%22name%22%3A%5B%5D%7D",
        ];
        for q in [
            "all=1",
            "?all=1",
            "all=true&size=1",
            "all=1&limit=-1&size=0&trunc_cmd=0",
        ]
        .into_iter()
        .chain(empty_filters)
        {
            assert!(is_complete_list(q), "{q}");
        }
        for q in [
            "",
            "all=0",
            "size=1",
            "all=1&limit=3",
            "all=1&since=abc",
            "all=1&before=abc",
            "all=1&filters=%7B%22name%22%3A%5B%22web%22%5D%7D",
            "all=1&filters=%7B%22status%22%3A%7B%22exited%22%3Atrue%7D%7D",
            "all=1&filters=garbage",
        ] {
            assert!(!is_complete_list(q), "{q}");
        }
    }

    #[test]
    fn remembers_the_latest_list_per_node() {
        let seen = LastSeen::default();
        assert!(seen.get("node1").is_none());
        seen.remember("node1", Bytes::from_static(b"[]"));
        seen.remember("node1", Bytes::from_static(b"[{\"Id\":\"a\"}]"));
        seen.remember("node2", Bytes::from_static(b"[]"));
        assert_eq!(
            seen.get("node1").unwrap().body,
            Bytes::from_static(b"[{\"Id\":\"a\"}]")
        );
        assert!(seen.is_fresh("node1", Instant::now()));
        assert!(!seen.is_fresh("node1", Instant::now() + MAX_AGE));
        seen.retain(|n| n == "node2");
        assert!(seen.get("node1").is_none() && seen.get("node2").is_some());
    }
}

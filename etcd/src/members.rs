//! Which nodes exist, as a gateway follows them: `<prefix>/nodes/` in etcd, followed live.
//!
//! [`spawn_watch`] lists the prefix, publishes the map, then watches from the revision after
//! the list's and publishes each change, so that no event between the list and the watch is
//! lost.
//! When the watch breaks (etcd restarted, connection lost, the revision compacted away), it
//! lists and watches again, with backoff. While etcd cannot be reached the last map stays
//! published: a node is dropped when its entry is deleted (its lease expired or was revoked),
//! not when the gateway loses sight of etcd; whether a listed node answers is the health
//! checks' business.

use std::collections::BTreeMap;
use std::sync::Arc;

use busbar_runtime::Backoff;

use crate::client::{Client, EventType, GetOptions, WatchOptions};
use crate::conn::{connect, EtcdConnection};
use crate::error::{call, describe, EtcdError};
use crate::keys::nodes_prefix;
use crate::registry::NodeEntry;
use crate::watching::{restarted, Ended, Progress};
use tokio::sync::watch;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// The registered nodes by name.
pub type NodeMap = Arc<BTreeMap<String, NodeEntry>>;

/// Follows `<prefix>/nodes/` on `etcd` until `shutdown` (or until every receiver is
/// gone). The receiver starts with an empty map; the first successful list is always
/// published (even if empty, so `changed()` also says "etcd has answered"), later ones only
/// when something changed. Node arrivals, departures and changes are logged at `info`.
pub fn spawn_watch(
    etcd: EtcdConnection,
    prefix: String,
    shutdown: CancellationToken,
) -> watch::Receiver<NodeMap> {
    let (tx, rx) = watch::channel(NodeMap::default());
    tokio::spawn(run_watch(etcd, prefix, tx, shutdown));
    rx
}

async fn run_watch(
    etcd: EtcdConnection,
    prefix: String,
    tx: watch::Sender<NodeMap>,
    shutdown: CancellationToken,
) {
    let prefix = nodes_prefix(&prefix);
    let shown = etcd.shown();
    let mut backoff = Backoff::retry();
    let mut client: Option<Client> = None;
    let mut failures = 0u32;
    let mut first = true;
    loop {
        let outcome = tokio::select! {
            r = follow(&etcd, &mut client, &prefix, &tx, &mut first, &mut backoff) => r,
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
        };
        match outcome {
            Ok(end) => {
                failures = 0;
                restarted(WATCH, end.reason());
                warn!(etcd = %shown, prefix = %prefix, "node watch ended: {end}; listing again");
            }
            Err(e) => {
                failures += 1;
                restarted(WATCH, "unreachable");
                if e.refusal().is_some() {
                    error!(etcd = %shown, prefix = %prefix, "node watch: {e}; retrying (keeping the last known nodes)");
                } else {
                    warn!(etcd = %shown, prefix = %prefix, "node watch: {e}; retrying (keeping the last known nodes)");
                }
                // The client reconnects by itself; after repeated failures, start afresh.
                if failures >= 3 {
                    client = None;
                }
            }
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// The watch's name in the metrics.
const WATCH: &str = "nodes";

/// One list + watch. Returns why the watch ended, or the error that stopped it.
async fn follow(
    etcd: &EtcdConnection,
    client: &mut Option<Client>,
    prefix: &str,
    tx: &watch::Sender<NodeMap>,
    first: &mut bool,
    backoff: &mut Backoff,
) -> Result<Ended, EtcdError> {
    let c = match client {
        Some(c) => c.clone(),
        None => client.insert(connect(etcd).await?).clone(),
    };
    let listed = call(
        "list",
        prefix,
        c.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = listed.header().map_or(0, |h| h.revision());
    let mut map = BTreeMap::new();
    for kv in listed.kvs() {
        apply(&mut map, prefix, kv.key(), Some(kv.value()));
    }
    publish(tx, map.clone(), std::mem::take(first));
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let (watcher, mut stream) = call("watch", prefix, c.watch(prefix, Some(options))).await?;
    backoff.reset();
    debug!(prefix, revision, nodes = map.len(), "watching nodes");
    let mut progress = Progress::new(WATCH);
    loop {
        let rsp = tokio::select! {
            m = stream.message() => match m {
                Ok(Some(rsp)) => rsp,
                Ok(None) => return Ok(Ended::Closed),
                Err(e) => return Ok(Ended::Broken(describe(&e))),
            },
            _ = sleep_until(progress.next()) => {
                progress.ask(&watcher).await;
                continue;
            }
        };
        progress.saw(&rsp);
        if let Some(end) = Ended::of(&rsp) {
            return Ok(end);
        }
        if rsp.events().is_empty() {
            continue;
        }
        for ev in rsp.events() {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Put => apply(&mut map, prefix, kv.key(), Some(kv.value())),
                EventType::Delete => apply(&mut map, prefix, kv.key(), None),
            }
        }
        publish(tx, map.clone(), false);
    }
}

/// Applies one key's new value (`None`: deleted) to `map`. An entry that does not parse, or
/// whose name is not its key's, is dropped with a warning: routing to it would be a guess.
pub fn apply(
    map: &mut BTreeMap<String, NodeEntry>,
    prefix: &str,
    key: &[u8],
    value: Option<&[u8]>,
) {
    let key = String::from_utf8_lossy(key);
    let Some(name) = key
        .strip_prefix(prefix)
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        debug!(key = %key, "not a node key; ignored");
        return;
    };
    let Some(value) = value else {
        map.remove(name);
        return;
    };
    match serde_json::from_slice::<NodeEntry>(value) {
        Ok(entry) if entry.name == name => {
            map.insert(name.to_owned(), entry);
        }
        Ok(entry) => {
            warn!(key = %key, "node entry names another node ({:?}); ignored", entry.name);
            map.remove(name);
        }
        Err(e) => {
            warn!(key = %key, "not a node entry: {e}; ignored");
            map.remove(name);
        }
    }
}

/// Publishes `map` if it differs from the current one (or if `always`), logging the changes.
fn publish(tx: &watch::Sender<NodeMap>, map: BTreeMap<String, NodeEntry>, always: bool) {
    tx.send_if_modified(|current| {
        for (name, entry) in &map {
            match current.get(name) {
                None => info!(node = %name, advertise = %entry.advertise, "node joined"),
                Some(old) if old != entry => {
                    info!(node = %name, advertise = %entry.advertise, "node changed")
                }
                Some(_) => {}
            }
        }
        for name in current.keys().filter(|n| !map.contains_key(*n)) {
            info!(node = %name, "node left");
        }
        let changed = **current != map;
        if changed || always {
            *current = Arc::new(map);
        }
        changed || always
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/busbar/nodes/";

    fn json(name: &str, zone: &str) -> Vec<u8> {
        serde_json::to_vec(&NodeEntry::new(
            name,
            "10.0.0.1:7443",
            [("zone".to_owned(), zone.to_owned())].into(),
        ))
        .unwrap()
    }

    #[test]
    fn puts_and_deletes() {
        let mut map = BTreeMap::new();
        apply(&mut map, P, b"/busbar/nodes/n1", Some(&json("n1", "a")));
        apply(&mut map, P, b"/busbar/nodes/n2", Some(&json("n2", "a")));
        apply(&mut map, P, b"/busbar/nodes/n1", Some(&json("n1", "b")));
        assert_eq!(map.keys().collect::<Vec<_>>(), ["n1", "n2"]);
        assert_eq!(map["n1"].labels["zone"], "b");
        apply(&mut map, P, b"/busbar/nodes/n2", None);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["n1"]);
    }

    #[test]
    fn bad_entries_are_dropped() {
        let mut map = BTreeMap::new();
        apply(&mut map, P, b"/busbar/nodes/n1", Some(&json("n1", "a")));
        apply(&mut map, P, b"/busbar/nodes/n1", Some(b"not json"));
        apply(&mut map, P, b"/busbar/nodes/n2", Some(&json("n3", "a")));
        apply(&mut map, P, b"/busbar/nodes/a/b", Some(&json("a/b", "a")));
        assert!(map.is_empty(), "{map:?}");
    }

    #[test]
    fn publishing_notifies_only_on_change_after_the_first_list() {
        let (tx, mut rx) = watch::channel(NodeMap::default());
        publish(&tx, BTreeMap::new(), true);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        publish(&tx, BTreeMap::new(), false);
        assert!(!rx.has_changed().unwrap());
        let mut map = BTreeMap::new();
        apply(&mut map, P, b"/busbar/nodes/n1", Some(&json("n1", "a")));
        publish(&tx, map, false);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().len(), 1);
    }
}

//! The etcd node registry, agent side: this node's entry under `<prefix>/nodes/<name>`, kept
//! alive by a lease, so that gateways see the node while its agent lives and lose it within
//! one lease TTL of the agent's death (or at once when the agent stops cleanly).
//!
//! # Keys
//! - `<prefix>/nodes/<name>`: a [`NodeEntry`] as JSON, attached to a lease this agent keeps
//!   alive (`--registration-ttl`, default 10 s, refreshed every TTL/3).
//! - `<prefix>/names/<container-name>`: cluster-wide container name reservations, written by
//!   gateways (see `busbar_gateway::registry::names`).
//!
//! # The registration loop ([`run_registration`])
//! grant a lease -> put the entry with it -> keep the lease alive and watch the key. The
//! registration is made again, with a new lease, when:
//! - etcd says the lease is gone (`etcdctl lease revoke`, or it expired during a partition);
//! - no keep-alive answer came for a whole TTL (the lease has expired on etcd's side by then);
//! - the keep-alive or watch stream breaks (etcd restarted, connection lost);
//! - the key was deleted behind the agent's back.
//!
//! A put of the key by someone else is only logged: fighting over it (two agents started with
//! the same name) would loop forever. Failures are retried with a jittered exponential
//! backoff (100 ms .. 5 s), so an etcd outage never stops the agent from serving, and a
//! restarted etcd is not hit by every agent in the same instant. On shutdown the lease is
//! revoked, which deletes the entry at once. Every unary etcd call has a timeout; the streams
//! are watched by HTTP/2 keep-alives and by the TTL deadline above.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::{Client, EventType, PutOptions, WatchOptions};
use busbar_runtime::{unix_now, Backoff};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::conn::{connect, EtcdConnection};
use crate::error::{call, call_within, describe, EtcdError};
use crate::keys::node_key;
use crate::watching::{restarted, Ended, Progress};

/// The watch's name in the metrics.
const WATCH: &str = "registration";

/// The node lease's TTL (`--registration-ttl`): how long a node that vanished without a word
/// stays in the registry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// What a node publishes about itself at `<prefix>/nodes/<name>` (JSON). Unknown fields are
/// ignored and the optional ones default, so entries written by other agent versions parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node name: the CN of the agent's certificate, also the last part of the key.
    pub name: String,
    /// `host:port` of the agent's gRPC service, as gateways reach it.
    pub advertise: String,
    /// The agent's `--label k=v`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The agent's version (`busbar-agent --version`).
    #[serde(default)]
    pub agent_version: String,
    /// When the agent started, in seconds since the Unix epoch.
    #[serde(default)]
    pub started_at: u64,
}

impl NodeEntry {
    /// An entry for this agent, started now.
    pub fn new(name: &str, advertise: &str, labels: BTreeMap<String, String>) -> NodeEntry {
        NodeEntry {
            name: name.to_owned(),
            advertise: advertise.to_owned(),
            labels,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: unix_now(),
        }
    }
}

/// Starts [`run_registration`] in the background. The agent serves whatever etcd does: this
/// task retries on its own until `shutdown`, then revokes the lease and ends.
pub fn spawn_registration(
    etcd: EtcdConnection,
    prefix: String,
    entry: NodeEntry,
    ttl: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run_registration(etcd, prefix, entry, ttl, shutdown))
}

/// Keeps `entry` registered at `<prefix>/nodes/<name>` under a lease of `ttl` (whole seconds,
/// at least 1; etcd may raise very short TTLs to its minimum) until `shutdown`; then revokes
/// the lease so the entry disappears at once. Never returns an error: failures are logged at
/// `warn` (at `error` for a [`Refusal`]: a wrong password, an untrusted certificate) and
/// retried with backoff (see the module docs).
pub async fn run_registration(
    etcd: EtcdConnection,
    prefix: String,
    entry: NodeEntry,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let key = node_key(&prefix, &entry.name);
    let value = serde_json::to_string(&entry).expect("a NodeEntry always serializes");
    let ttl_secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
    let shown = etcd.shown();
    let mut backoff = Backoff::retry();
    let mut client: Option<Client> = None;
    // Failed attempts since the last success; after a few, the client is made anew.
    let mut failures = 0u32;
    loop {
        let c = match &client {
            Some(c) => c.clone(),
            None => {
                let connected = tokio::select! {
                    r = connect(&etcd) => r,
                    _ = shutdown.cancelled() => return,
                };
                match connected {
                    Ok(c) => client.insert(c).clone(),
                    Err(e) => {
                        // A wrong password or CA is retried all the same (it may be fixed on
                        // etcd's side), but said as an error: an operator must act.
                        if e.refusal().is_some() {
                            error!(etcd = %shown, key = %key, "node registration: {e}; retrying");
                        } else {
                            warn!(etcd = %shown, key = %key, "node registration: {e}; retrying");
                        }
                        if !backoff.wait(&shutdown).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let mut lease = None;
        let established = tokio::select! {
            r = establish(&c, &key, &value, ttl_secs, &mut lease) => r,
            _ = shutdown.cancelled() => {
                if let Some(id) = lease {
                    revoke(&c, &key, id).await;
                }
                return;
            }
        };
        match established {
            Ok(mut session) => {
                failures = 0;
                let since = Instant::now();
                info!(etcd = %shown, key = %key, lease = %format_args!("{:x}", session.lease), ttl = session.ttl.as_secs(), "registered in etcd");
                let lost = session.run(&key, &shutdown).await;
                match lost {
                    None => {
                        revoke(&c, &key, session.lease).await;
                        return;
                    }
                    Some(why) => {
                        warn!(etcd = %shown, key = %key, "node registration lost: {why}; registering again");
                        // A registration that held for a TTL is retried at once; one lost
                        // right after it was made keeps backing off, so that a flapping etcd
                        // (or a fight over the key) is not hammered.
                        if since.elapsed() >= session.ttl {
                            backoff.reset();
                        }
                        // The old lease, if still alive, holds no key any more: let it go now
                        // rather than at its expiry. Best effort, in the background.
                        let (c, key, id) = (c.clone(), key.clone(), session.lease);
                        tokio::spawn(async move { revoke_quietly(&c, &key, id).await });
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if e.refusal().is_some() {
                    error!(etcd = %shown, key = %key, "node registration failed: {e}; retrying");
                } else {
                    warn!(etcd = %shown, key = %key, "node registration failed: {e}; retrying");
                }
                if let Some(id) = lease {
                    let (c, key) = (c.clone(), key.clone());
                    tokio::spawn(async move { revoke_quietly(&c, &key, id).await });
                }
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

/// A live registration: its lease, kept alive, and a watch on its key.
struct Session {
    lease: i64,
    ttl: Duration,
    keeper: crate::client::LeaseKeeper,
    keepalives: crate::client::LeaseKeepAliveStream,
    watcher: crate::client::Watcher,
    watch: crate::client::WatchStream,
    progress: Progress,
}

/// Grants a lease, puts the entry with it, and opens the keep-alive and watch streams.
/// `lease` is set as soon as one is granted, so that the caller can revoke it if this fails
/// or is cancelled halfway.
async fn establish(
    client: &Client,
    key: &str,
    value: &str,
    ttl_secs: i64,
    lease: &mut Option<i64>,
) -> Result<Session, EtcdError> {
    let c = client.clone();
    let granted = call("lease grant for", key, c.lease_grant(ttl_secs, None)).await?;
    *lease = Some(granted.id());
    let ttl = Duration::from_secs(granted.ttl().max(1) as u64);
    let put = call(
        "put",
        key,
        c.put(key, value, Some(PutOptions::new().with_lease(granted.id()))),
    )
    .await?;
    let revision = put.header().map_or(0, |h| h.revision());
    let (keeper, keepalives) = call(
        "lease keep-alive for",
        key,
        c.lease_keep_alive(granted.id()),
    )
    .await?;
    let (watcher, watch) = call(
        "watch",
        key,
        c.watch(
            key,
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        ),
    )
    .await?;
    Ok(Session {
        lease: granted.id(),
        ttl,
        keeper,
        keepalives,
        watcher,
        watch,
        progress: Progress::new(WATCH),
    })
}

impl Session {
    /// Keeps the lease alive until `shutdown` (returns `None`) or until the registration is
    /// lost (returns why).
    async fn run(&mut self, key: &str, shutdown: &CancellationToken) -> Option<String> {
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Without an answer by then, the lease has expired on etcd's side.
        let mut expires = Instant::now() + self.ttl;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tick.tick() => {
                    if let Err(e) = self.keeper.keep_alive().await {
                        return Some(format!("keep-alive stream closed: {}", describe(&e)));
                    }
                }
                _ = sleep_until(expires) => {
                    return Some(format!("no keep-alive answer within the lease TTL ({:?}): the lease has expired", self.ttl));
                }
                answer = self.keepalives.message() => match answer {
                    Ok(Some(a)) if a.ttl() > 0 => {
                        expires = Instant::now() + Duration::from_secs(a.ttl() as u64);
                        debug!(key, ttl = a.ttl(), "lease kept alive");
                    }
                    Ok(Some(_)) => return Some(format!("lease {:x} is gone (revoked or expired)", self.lease)),
                    Ok(None) => return Some("etcd ended the keep-alive stream".into()),
                    Err(e) => return Some(format!("keep-alive stream: {}", describe(&e))),
                },
                _ = sleep_until(self.progress.next()) => self.progress.ask(&self.watcher).await,
                change = self.watch.message() => {
                    let end = match change {
                        Ok(Some(w)) => {
                            self.progress.saw(&w);
                            match Ended::of(&w) {
                                Some(end) => end,
                                None => match self.changed(&w, key) {
                                    Some(why) => return Some(why),
                                    None => continue,
                                },
                            }
                        }
                        Ok(None) => Ended::Closed,
                        Err(e) => Ended::Broken(describe(&e)),
                    };
                    restarted(WATCH, end.reason());
                    return Some(format!("watch on the key: {end}"));
                },
            }
        }
    }

    /// What a change to this node's key means: `Some(why)` when the registration is lost.
    fn changed(&self, w: &crate::client::WatchResponse, key: &str) -> Option<String> {
        for ev in w.events() {
            match ev.event_type() {
                EventType::Delete => return Some("the key was deleted".into()),
                EventType::Put if ev.kv().map(|kv| kv.lease()) != Some(self.lease) => {
                    warn!(key, "another writer replaced this node's entry (two agents with one name?); leaving it");
                }
                EventType::Put => {}
            }
        }
        None
    }
}

/// Revokes the lease (which deletes the entry), logging the outcome.
async fn revoke(client: &Client, key: &str, lease: i64) {
    let c = client.clone();
    match call_within(
        Duration::from_secs(2),
        "lease revoke for",
        key,
        c.lease_revoke(lease),
    )
    .await
    {
        Ok(_) => info!(key, "left the registry (lease revoked)"),
        Err(e) => warn!("{e}; the entry goes when its lease expires"),
    }
}

async fn revoke_quietly(client: &Client, key: &str, lease: i64) {
    let c = client.clone();
    if let Err(e) = call_within(
        Duration::from_secs(2),
        "lease revoke for",
        key,
        c.lease_revoke(lease),
    )
    .await
    {
        debug!("revoking an old lease: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_tolerate_other_versions() {
        let e = NodeEntry::new(
            "n1",
            "10.0.0.1:7443",
            [("zone".to_owned(), "a".to_owned())].into(),
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<NodeEntry>(&json).unwrap(), e);
        let old: NodeEntry =
            serde_json::from_str(r#"{"name":"n2","advertise":"h:1","future":true}"#).unwrap();
        assert_eq!(
            (old.name.as_str(), old.labels.len(), old.started_at),
            ("n2", 0, 0)
        );
    }
}

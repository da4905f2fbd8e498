//! The etcd node registry, agent side: this node's entry under `<prefix>/nodes/<name>`, kept
//! alive by a lease, so that gateways see the node while its agent lives and lose it within
//! one lease TTL of the agent's death (or at once when the agent stops cleanly).
//!
//! The shared parts live here too, because the gateway depends on this library: the entry's
//! shape ([`NodeEntry`]), the key layout ([`node_key`], [`nodes_prefix`], [`names_prefix`]),
//! [`connect`], the error type, call timeouts and the retry [`Backoff`].
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
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, ConnectOptions, EventType, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::etcd_conn::{explain, EtcdConnection, Refusal};
use crate::grpc::NodeIdentity;

/// The prefix of every busbar key in etcd (`--etcd-prefix`).
pub const DEFAULT_PREFIX: &str = "/busbar";
/// The node lease's TTL (`--registration-ttl`): how long a node that vanished without a word
/// stays in the registry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The longest any single unary etcd call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to etcd may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on the etcd connection: a peer that stops answering breaks the watch and
/// keep-alive streams within about `interval + timeout`, instead of leaving them silent.
const H2_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3));

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

impl From<&NodeIdentity> for NodeEntry {
    fn from(node: &NodeIdentity) -> NodeEntry {
        NodeEntry::new(&node.name, &node.advertise, node.labels.clone())
    }
}

/// Errors talking to etcd. Each names the endpoints or the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("--etcd: no endpoint given")]
    NoEndpoints,
    #[error("--etcd {endpoint:?}: {reason}")]
    BadEndpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error(
        "--etcd-prefix {prefix:?}: must start with '/', not end with '/', and contain no '//'"
    )]
    BadPrefix { prefix: String },
    #[error("etcd at {endpoints}: {}", explain(source, Some(*tls)))]
    Connect {
        endpoints: String,
        /// Whether the connection was TLS: the same symptom means different things.
        tls: bool,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: no answer within {after:?}")]
    Unreachable { endpoints: String, after: Duration },
    #[error("etcd: {op} {key}: {}", explain(source, None))]
    Call {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd: {op} {key}: no answer within {after:?}")]
    Timeout {
        op: &'static str,
        key: String,
        after: Duration,
    },
    #[error("etcd: {key}: not a valid entry: {reason}")]
    BadEntry { key: String, reason: String },
}

impl RegistryError {
    /// Which of the usual refusals (a wrong password, an untrusted certificate, ...) this
    /// is, if one: a problem an operator must fix, which retrying will not.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            RegistryError::Connect { tls, source, .. } => Refusal::of(source, Some(*tls)),
            RegistryError::Call { source, .. } => Refusal::of(source, None),
            _ => None,
        }
    }
}

/// An etcd client error in one line: for a gRPC status, its code, message and root cause
/// ("unavailable: tcp connect error: Connection refused (os error 111)") rather than the
/// client's debug dump of the whole chain.
pub fn describe(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut text = format!("{:?}", status.code()).to_lowercase();
    if !status.message().is_empty() {
        text = format!("{text}: {}", status.message());
    }
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut root = None;
    while let Some(c) = cause {
        root = Some(c);
        cause = c.source();
    }
    match root.map(|r| r.to_string()) {
        Some(r) if !text.contains(&r) => format!("{text}: {r}"),
        _ => text,
    }
}

/// Checks `--etcd` endpoints: `https://host:port`, `http://host:port` or `host:port` (which
/// scheme goes with which TLS flags is [`crate::etcd_conn`]'s business). Pure: for config
/// validation.
pub fn check_endpoints(endpoints: &[String]) -> Result<(), RegistryError> {
    if endpoints.is_empty() {
        return Err(RegistryError::NoEndpoints);
    }
    const EXPECTED: &str = "expected https://HOST:PORT, http://HOST:PORT or HOST:PORT";
    for e in endpoints {
        let bad = |reason| {
            Err(RegistryError::BadEndpoint {
                endpoint: e.clone(),
                reason,
            })
        };
        let rest = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"))
            .unwrap_or(e);
        if rest.contains("://") {
            return bad(EXPECTED);
        }
        let hostport = rest.trim_end_matches('/');
        match hostport.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok() => {}
            _ => return bad(EXPECTED),
        }
    }
    Ok(())
}

/// Checks `--etcd-prefix` (`/busbar`, `/team/busbar`, ...). Pure: for config validation.
pub fn check_prefix(prefix: &str) -> Result<(), RegistryError> {
    if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return Err(RegistryError::BadPrefix {
            prefix: prefix.to_owned(),
        });
    }
    Ok(())
}

/// `<prefix>/nodes/`: where node entries live.
pub fn nodes_prefix(prefix: &str) -> String {
    format!("{prefix}/nodes/")
}

/// `<prefix>/nodes/<name>`.
pub fn node_key(prefix: &str, name: &str) -> String {
    format!("{prefix}/nodes/{name}")
}

/// `<prefix>/names/`: where container name reservations live.
pub fn names_prefix(prefix: &str) -> String {
    format!("{prefix}/names/")
}

fn options(etcd: &EtcdConnection) -> ConnectOptions {
    etcd.apply(
        ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(H2_KEEPALIVE.0, H2_KEEPALIVE.1)
            .with_keep_alive_while_idle(true),
    )
}

/// A client for `etcd` that connects on first use and reconnects after failures: for a
/// process that must start whether or not etcd is up (calls fail, with [`call`]'s timeout,
/// until it is). Fails only on malformed endpoints; except that with a user, the client
/// authenticates at once (etcd-client does), so it fails like [`connect`] when etcd is down.
pub async fn connect_lazy(etcd: &EtcdConnection) -> Result<Client, RegistryError> {
    check_endpoints(etcd.endpoints())?;
    Client::connect(etcd.endpoints(), Some(options(etcd)))
        .await
        .map_err(|source| RegistryError::Connect {
            endpoints: etcd.shown(),
            tls: etcd.is_tls(),
            source,
        })
}

/// A client for `etcd`, checked by asking etcd for its status (after authenticating, with a
/// user): an unreachable etcd, a refused password or an untrusted certificate is an error
/// naming the endpoints and the cause (within [`CONNECT_TIMEOUT`] + [`CALL_TIMEOUT`]), not a
/// hang. The client reconnects by itself after a later failure; calls on it still need
/// timeouts.
pub async fn connect(etcd: &EtcdConnection) -> Result<Client, RegistryError> {
    check_endpoints(etcd.endpoints())?;
    let shown = etcd.shown();
    let options = options(etcd);
    let after = CONNECT_TIMEOUT + CALL_TIMEOUT;
    let probe = async {
        let mut client = Client::connect(etcd.endpoints(), Some(options)).await?;
        client.status().await?;
        Ok::<_, etcd_client::Error>(client)
    };
    match tokio::time::timeout(after, probe).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(RegistryError::Connect {
            endpoints: shown,
            tls: etcd.is_tls(),
            source,
        }),
        Err(_) => Err(RegistryError::Unreachable {
            endpoints: shown,
            after,
        }),
    }
}

/// Runs one etcd call with [`CALL_TIMEOUT`]; errors name the operation and the key.
pub async fn call<T>(
    op: &'static str,
    key: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RegistryError> {
    call_within(CALL_TIMEOUT, op, key, fut).await
}

async fn call_within<T>(
    after: Duration,
    op: &'static str,
    key: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(RegistryError::Call {
            op,
            key: key.to_owned(),
            source,
        }),
        Err(_) => Err(RegistryError::Timeout {
            op,
            key: key.to_owned(),
            after,
        }),
    }
}

/// Exponential backoff with jitter for the background etcd loops: 100 ms doubling up to 5 s,
/// each delay drawn from [d/2, d] so that many agents retrying at once spread out.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff { next: Self::MIN }
    }

    /// After a success: the next failure retries quickly again.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jitter = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            % 1000;
        d / 2 + d / 2 * jitter as u32 / 1000
    }

    /// Sleeps for the next delay; false if `shutdown` fired first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = sleep(d) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
    let mut backoff = Backoff::new();
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
    keeper: etcd_client::LeaseKeeper,
    keepalives: etcd_client::LeaseKeepAliveStream,
    watch: etcd_client::WatchStream,
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
) -> Result<Session, RegistryError> {
    let mut c = client.clone();
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
    let watch = call(
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
        watch,
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
                change = self.watch.message() => match change {
                    Ok(Some(w)) => {
                        if w.canceled() {
                            return Some(format!("etcd cancelled the watch on the key: {}", w.cancel_reason()));
                        }
                        for ev in w.events() {
                            match ev.event_type() {
                                EventType::Delete => return Some("the key was deleted".into()),
                                EventType::Put if ev.kv().map(|kv| kv.lease()) != Some(self.lease) => {
                                    warn!(key, "another writer replaced this node's entry (two agents with one name?); leaving it");
                                }
                                EventType::Put => {}
                            }
                        }
                    }
                    Ok(None) => return Some("etcd ended the watch stream".into()),
                    Err(e) => return Some(format!("watch stream: {}", describe(&e))),
                },
            }
        }
    }
}

/// Revokes the lease (which deletes the entry), logging the outcome.
async fn revoke(client: &Client, key: &str, lease: i64) {
    let mut c = client.clone();
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
    let mut c = client.clone();
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
    fn endpoints() {
        for good in [
            "http://127.0.0.1:2379",
            "10.0.0.1:2379",
            "http://etcd.example:2379/",
            "[::1]:2379",
            "https://h:2379",
        ] {
            check_endpoints(&[good.to_owned()]).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert!(matches!(
            check_endpoints(&[]),
            Err(RegistryError::NoEndpoints)
        ));
        for bad in [
            "unix:///x",
            "h",
            "http://h:port",
            ":2379",
            "http://h/x:1",
            "https://h",
        ] {
            let err = check_endpoints(&[bad.to_owned()]).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn prefixes() {
        for good in ["/busbar", "/a/b"] {
            check_prefix(good).unwrap();
        }
        for bad in ["busbar", "/busbar/", "/", "/a//b", ""] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert_eq!(node_key("/busbar", "n1"), "/busbar/nodes/n1");
        assert!(node_key("/busbar", "n1").starts_with(&nodes_prefix("/busbar")));
    }

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

    #[test]
    fn backoff_grows_to_its_bound() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        assert!(b.next_delay() >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

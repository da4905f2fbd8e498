//! The nodes behind the gateway and their health.
//!
//! Membership comes from a source (the static `--agent` list, or the etcd registry) as a map
//! of name -> address and labels; [`Cluster::set_members`] reconciles it. The source says which
//! nodes exist; whether a node works is decided by reaching it (a node the gateway reaches is
//! served), as the README documents:
//! - probes: every `probe_interval` each node is asked to describe itself, on a connection of
//!   its own, and its agent answers at once from what it keeps (its engine's health from its
//!   own pings, the documents as last fetched; see `busbar_agent::cluster::engine_state`). An
//!   agent that cannot be reached, or reports its engine unreachable, makes the node
//!   `Unhealthy` at once; a probe left unanswered within `probe_timeout` counts as missed only
//!   when nothing else was heard from the agent since it was sent, and [`MISSED_PROBES_LIMIT`]
//!   misses in a row make it `Unhealthy`: a busy node is not a dead node;
//! - real traffic: a call that cannot reach a node's agent marks it `Unhealthy` at once, and so
//!   does a call that waits a whole probe timeout with nothing heard from the agent
//!   ([`Node::await_answer`]);
//! - the registration: a node whose etcd key is gone is still served while it answers, and
//!   `Disconnected` once it does not.
//!
//! A node is `Healthy` again after its next successful probe. So a dead agent is detected
//! within `probe_interval + probe_timeout` (defaults 3 s + 3 s; tests use far less), a host that
//! stops answering within twice that. Until the gateway knows its nodes (every node it knows
//! was probed once, and the registry has answered or there are static nodes), requests wait
//! for it ([`Cluster::ready`]).
//!
//! # Freshness of the nodes' documents
//!
//! `docker info` and `docker version` are answered from what the probes fetched (the engine's
//! `/info` and `/version`, and the agent's chain status), as Swarm classic answered from its
//! cache: no call to every node per request. The rule:
//! - a change made **behind the gateway's back** (straight on an engine, another gateway, a
//!   container exiting on its own) shows within one probe interval;
//! - a change made **through this gateway** shows at once: every state-changing call it sends
//!   a node (any method but `GET` and `HEAD`: create, start, stop, kill, rm, pull, load,
//!   prune, ...) marks that node's documents stale, when it is sent and again when its
//!   response ends ([`Node::note_change`]); `info` first refreshes the stale healthy nodes
//!   (one `Describe` each asking for documents fetched after it, concurrently, waited for at
//!   most half the probe timeout; a slower engine leaves the node stale, never unhealthy) and
//!   then answers.
//!
//! Staleness is a counter, not a flag: a refresh records the count it started at, so a change
//! that lands while a probe is in flight leaves the node stale, and an older answer never
//! replaces a newer one.
//!
//! # At a thousand nodes
//!
//! Snapshots share their documents (`Arc`), so taking every node's costs no copies. Each node
//! keeps its part of `/info` and `/version` ready ([`Node::parts`], made when a probe answers),
//! and the cluster counts every change to any node ([`Cluster::generation`]), so `docker info`
//! is a cached body or a thousand parts put together, never a thousand documents read. Probe
//! rounds start their probes in batches spread over the interval, not all at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use busbar_chains::scoped::ChainStatus;
use busbar_hop::v1::{DescribeRequest, NodeDescription};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::aggregate::{InfoPart, VersionPart};
use crate::hop::{AgentError, AgentLink};
use crate::model::{Health, NodeSnapshot, Reserved};

/// A member as its source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub addr: String,
    pub labels: BTreeMap<String, String>,
}

/// How health is watched.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
}

/// How far apart the batches of a probe round start (see [`Cluster::run_probes`]).
const PROBE_BATCH_EVERY: Duration = Duration::from_millis(100);

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            probe_interval: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(3),
        }
    }
}

impl HealthOptions {
    /// A periodic probe: the agent answers within a third of the probe timeout, with documents
    /// fetched at most half an interval before (so each probe starts a fetch, and a change made
    /// behind the gateway's back shows within about one interval), or the newest it has.
    fn periodic(&self) -> DescribeRequest {
        DescribeRequest {
            wait_ms: millis(self.probe_timeout / 3),
            max_age_ms: millis(self.probe_interval / 2),
        }
    }

    /// A refresh for `info`: documents fetched after the call arrived, waited for at most half
    /// the probe timeout.
    fn fresh(&self) -> DescribeRequest {
        DescribeRequest {
            wait_ms: millis(self.probe_timeout / 2),
            max_age_ms: 0,
        }
    }

    /// Is the agent there at all: any documents, at once.
    fn alive(&self) -> DescribeRequest {
        DescribeRequest {
            wait_ms: 1,
            max_age_ms: u32::MAX,
        }
    }
}

/// Whole milliseconds, at least 1 (0 means "an old gateway" to the agent).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// An instant as microseconds since a second before the first one asked for (so 0 means
/// "never"): what fits an atomic.
fn stamp(at: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| Instant::now() - Duration::from_secs(1));
    u64::try_from(at.saturating_duration_since(origin).as_micros()).unwrap_or(u64::MAX)
}

/// One node: its link and its last known state.
pub struct Node {
    pub link: AgentLink,
    /// Short critical sections, never held across an await: a std mutex is right here.
    state: Mutex<NodeState>,
    /// State-changing calls sent to the node through this gateway, counted when sent and again
    /// when their response ends (shared with the response bodies, which outlive the call).
    changes: Arc<AtomicU64>,
    /// One on-demand refresh at a time: concurrent `info` calls wait for it, not repeat it.
    refreshing: tokio::sync::Mutex<()>,
    /// The cluster's [`Cluster::generation`], moved on by every change to `state`.
    generation: Arc<AtomicU64>,
    /// Probes in a row that got no answer in time while nothing else was heard from the agent
    /// (see [`MISSED_PROBES_LIMIT`]).
    missed_probes: AtomicU32,
    health_options: HealthOptions,
    /// When the agent was last heard from (any answer: a probe's, or a call's response head),
    /// as a [`stamp`]; 0: never.
    heard: Arc<AtomicU64>,
    /// Whether a probe of this node has had an outcome (answer, failure or miss).
    probed: AtomicBool,
    /// One liveness check at a time ([`Node::await_answer`]).
    checking: AtomicBool,
    /// Moves on each time the node stops being healthy: calls waiting on it stop waiting.
    downs: watch::Sender<u64>,
    /// What the status page shows beside the snapshot (see [`Node::figures`]).
    figures: Mutex<Figures>,
}

/// A node's figures for the status page: the time of its last probe, and its agent's last
/// report of its adapter calls (`NodeDescription.adapter_stats_json`, as it came).
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub probe: Option<Duration>,
    pub adapter_stats_json: Vec<u8>,
}

/// Probes in a row a node may leave unanswered (timed out) before it is `Unhealthy`, when
/// nothing else was heard from its agent meanwhile: one slow answer from a busy host is not a
/// dead node (Swarm classic waited for three failures), and a node that answers real traffic
/// is not dead at all. An agent that refuses the connection, or reports its engine
/// unreachable, is `Unhealthy` at the first probe.
pub const MISSED_PROBES_LIMIT: u32 = 2;

/// A call to a node not heard from for this long checks at once that its agent is there
/// ([`Node::await_answer`]); under traffic, answers come far more often.
pub const CHECK_IF_QUIET: Duration = Duration::from_millis(200);

/// A node's snapshot, and how fresh its documents are.
struct NodeState {
    snapshot: NodeSnapshot,
    /// Whether the membership source lists the node (static nodes always are). A node whose
    /// registration is gone is still served while it answers; it is `Disconnected` once it
    /// does not.
    registered: bool,
    /// `changes` when the documents in `snapshot` were asked for: they are stale when
    /// `changes` has moved since.
    docs_at: u64,
    /// When the fetch of the documents in `snapshot` began, as well as the gateway can tell
    /// (`None`: no documents yet): older documents never replace newer ones.
    docs_fetched: Option<Instant>,
    /// How many times `snapshot` was changed: what was made from it is current while this is.
    edits: u64,
    /// The bytes `snapshot.version` and `snapshot.chains` were parsed from.
    version_raw: Vec<u8>,
    chains_raw: Vec<u8>,
    /// What `docker info` and `docker version` show of `snapshot`, once made (cleared by
    /// every edit).
    parts: Option<Arc<NodeParts>>,
}

/// A node's parts of the cluster's `/info` and `/version`: made from its snapshot alone, when
/// a probe answers (so a thousand nodes' parts are made a few at a time, over each probe
/// interval, not all at once by the next `docker info`), or when first asked for after another
/// change.
#[derive(Debug)]
pub struct NodeParts {
    pub info: InfoPart,
    pub version: VersionPart,
}

/// Marks a node's documents stale when made and again when dropped: held by a state-changing
/// call's response body, so the change counts once its response has ended.
pub struct ChangeGuard(Arc<AtomicU64>);

impl Drop for ChangeGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a probe asked, and when.
#[derive(Debug, Clone, Copy)]
struct Asked {
    /// The node's change count when the probe was sent.
    changes: u64,
    sent: Instant,
}

impl Node {
    fn new(
        link: AgentLink,
        snapshot: NodeSnapshot,
        generation: Arc<AtomicU64>,
        health_options: HealthOptions,
    ) -> Node {
        Node {
            link,
            state: Mutex::new(NodeState {
                snapshot,
                registered: true,
                docs_at: 0,
                docs_fetched: None,
                edits: 0,
                version_raw: vec![],
                chains_raw: vec![],
                parts: None,
            }),
            changes: Arc::new(AtomicU64::new(0)),
            missed_probes: AtomicU32::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            generation,
            health_options,
            heard: Arc::default(),
            probed: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            downs: watch::channel(0).0,
            figures: Mutex::default(),
        }
    }

    /// The node's figures for the status page.
    pub fn figures(&self) -> Figures {
        self.figures.lock().expect("figures lock").clone()
    }

    /// Changes the node's state under its lock; every change goes through here, so that the
    /// cluster's generation moves on with it.
    fn edit<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> R {
        let mut state = self.state.lock().expect("node state lock");
        let was_healthy = state.snapshot.health == Health::Healthy;
        let r = f(&mut state);
        state.edits += 1;
        state.parts = None;
        let down = was_healthy && state.snapshot.health != Health::Healthy;
        drop(state);
        self.generation.fetch_add(1, Ordering::SeqCst);
        if down {
            self.downs.send_modify(|n| *n += 1);
        }
        r
    }

    /// The node's parts of `/info` and `/version` for its current snapshot, made now if they
    /// were not yet (outside the lock: making them takes tens of microseconds).
    pub fn parts(&self) -> Arc<NodeParts> {
        let (edits, snapshot) = {
            let state = self.state.lock().expect("node state lock");
            if let Some(parts) = &state.parts {
                return parts.clone();
            }
            (state.edits, state.snapshot.clone())
        };
        let parts = Arc::new(NodeParts {
            info: InfoPart::of(&snapshot, snapshot.reserved),
            version: VersionPart::of(&snapshot),
        });
        let mut state = self.state.lock().expect("node state lock");
        if state.edits == edits {
            state.parts = Some(parts.clone());
        }
        parts
    }

    pub fn name(&self) -> &str {
        self.link.node()
    }

    pub fn snapshot(&self) -> NodeSnapshot {
        self.state.lock().expect("node state lock").snapshot.clone()
    }

    pub fn health(&self) -> Health {
        self.state.lock().expect("node state lock").snapshot.health
    }

    /// A state-changing call is being sent to this node: its documents are stale now, and again
    /// when the returned guard is dropped (keep it until the call's response has ended).
    pub fn note_change(&self) -> ChangeGuard {
        self.changes.fetch_add(1, Ordering::SeqCst);
        ChangeGuard(self.changes.clone())
    }

    /// Whether a change was sent through this gateway since the documents were asked for.
    pub fn is_stale(&self) -> bool {
        let changes = self.changes.load(Ordering::SeqCst);
        self.state.lock().expect("node state lock").docs_at != changes
    }

    /// The agent answered something (a call's response head, a probe): it is alive.
    pub fn heard_now(&self) {
        self.heard
            .fetch_max(stamp(Instant::now()), Ordering::SeqCst);
    }

    /// Whether the agent was heard from after `since`.
    fn heard_since(&self, since: Instant) -> bool {
        self.heard.load(Ordering::SeqCst) > stamp(since)
    }

    /// Whether a probe of this node has had an outcome yet.
    pub fn was_probed(&self) -> bool {
        self.probed.load(Ordering::SeqCst)
    }

    /// A periodic probe: asks the agent to describe the node (within the probe timeout) and
    /// records the answer.
    pub async fn probe(&self) {
        let asked = self.health_options.periodic();
        self.probe_with(asked, true).await;
    }

    /// Probes with `asked`. A probe left unanswered counts as missed only when nothing else
    /// was heard from the agent since it was sent; `may_miss: false` (a refresh of the
    /// documents) never counts one.
    async fn probe_with(&self, request: DescribeRequest, may_miss: bool) {
        let timeout = self.health_options.probe_timeout;
        let asked = Asked {
            changes: self.changes.load(Ordering::SeqCst),
            sent: Instant::now(),
        };
        let mut described = self.link.describe(request, timeout).await;
        let took = asked.sent.elapsed();
        busbar_metrics::global()
            .node_probe_duration
            .get_or_create(&self.metric_labels())
            .observe(took.as_secs_f64());
        {
            let mut figures = self.figures.lock().expect("figures lock");
            figures.probe = Some(took);
            if let Ok(d) = described.as_mut() {
                figures.adapter_stats_json = std::mem::take(&mut d.adapter_stats_json);
            }
        }
        let missed = match described {
            Ok(d) if d.engine_reachable => {
                self.heard_now();
                self.mark_probed(d, asked);
                0
            }
            Ok(d) => {
                self.heard_now();
                self.mark_unhealthy(&format!("engine unreachable: {}", d.engine_error));
                0
            }
            Err(e @ AgentError::Unreachable { .. }) => {
                self.mark_unhealthy(&e.to_string());
                0
            }
            Err(e) if self.heard_since(asked.sent) => {
                debug!(node = %self.name(), error = %e, "probe unanswered, but the agent answers other calls: busy, not dead");
                0
            }
            Err(e) if !may_miss => {
                debug!(node = %self.name(), error = %e, "refresh unanswered");
                self.missed_probes.load(Ordering::SeqCst)
            }
            Err(e) => {
                let missed = self.missed_probes.load(Ordering::SeqCst) + 1;
                if missed >= MISSED_PROBES_LIMIT || !self.is_healthy() {
                    self.mark_unhealthy(&e.to_string());
                } else {
                    warn!(node = %self.name(), error = %e, missed, "probe missed");
                }
                missed
            }
        };
        self.missed_probes.store(missed, Ordering::SeqCst);
        self.probed.store(true, Ordering::SeqCst);
        self.export_metrics();
    }

    fn metric_labels(&self) -> busbar_metrics::NodeLabels {
        busbar_metrics::NodeLabels {
            node: self.name().to_owned(),
        }
    }

    /// Sets the node's gauges: whether it is healthy, the chain revision it runs and whether
    /// it refused the latest chains.
    fn export_metrics(&self) {
        let m = busbar_metrics::global();
        let labels = self.metric_labels();
        m.node_up
            .get_or_create(&labels)
            .set(i64::from(self.is_healthy()));
        if let Some(chains) = self.snapshot().chains {
            m.node_chain_revision
                .get_or_create(&labels)
                .set(chains.revision);
            m.node_chain_refused
                .get_or_create(&labels)
                .set(i64::from(chains.error.is_some()));
        }
    }

    /// Asks for documents fetched now if the node is stale; concurrent callers share one
    /// refresh. A refresh that is slow leaves the documents as they were (and the node stale),
    /// never the node unhealthy.
    pub async fn refresh_if_stale(&self) {
        if !self.is_stale() {
            return;
        }
        let _one = self.refreshing.lock().await;
        if self.is_stale() {
            self.probe_with(self.health_options.fresh(), false).await;
        }
    }

    /// Awaits `call`, an exchange with this node's agent, until its answer (its response head)
    /// comes or the node stops being healthy. While it waits, the gateway checks that the agent
    /// is there at all: a liveness probe (answered from the agent's cache, on the probes'
    /// connection) is sent at once if nothing was heard from the agent for [`CHECK_IF_QUIET`],
    /// and again after every half probe timeout without news. A probe left unanswered for a
    /// whole probe timeout, with nothing else heard meanwhile, finds the agent silent: the node
    /// is marked unhealthy (so that no later call waits for it until a probe finds it back) and
    /// every call waiting on it ends. A call that is merely slow, on an agent that answers
    /// other things, is waited for.
    pub async fn await_answer<T>(
        &self,
        call: impl Future<Output = Result<T, AgentError>>,
    ) -> Result<T, AgentError> {
        let tick = (self.health_options.probe_timeout / 2).max(Duration::from_millis(1));
        let started = Instant::now();
        let mut downs = self.downs.subscribe();
        tokio::pin!(call);
        let mut check: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
        let quiet_since = |now: Instant, quiet: Duration| {
            now.checked_sub(quiet)
                .is_none_or(|since| !self.heard_since(since))
        };
        let mut next = if quiet_since(started, CHECK_IF_QUIET) {
            started
        } else {
            started + tick
        };
        loop {
            tokio::select! {
                r = &mut call => {
                    if r.is_ok() {
                        self.heard_now();
                    }
                    return r;
                }
                changed = downs.changed() => {
                    if changed.is_ok() {
                        let error = self.snapshot().last_error.unwrap_or_default();
                        return Err(self.link.failed(format!("the node stopped being healthy while the call waited: {error}")));
                    }
                }
                _ = async { check.as_mut().expect("a check under way").await }, if check.is_some() => {
                    check = None;
                }
                _ = tokio::time::sleep_until(next), if check.is_none() => {
                    let now = Instant::now();
                    if (now == started || quiet_since(now, tick))
                        && !self.checking.swap(true, Ordering::SeqCst)
                    {
                        check = Some(Box::pin(self.liveness_check()));
                    }
                    next = now + tick;
                }
            }
        }
    }

    /// A liveness probe (the caller holds `checking`, released here even if dropped).
    async fn liveness_check(&self) {
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _release = Release(&self.checking);
        let timeout = self.health_options.probe_timeout;
        let sent = Instant::now();
        match self.link.describe(self.health_options.alive(), timeout).await {
            Ok(_) => self.heard_now(),
            Err(e @ AgentError::Unreachable { .. }) => self.mark_unhealthy(&e.to_string()),
            Err(e) if !self.heard_since(sent) => self.mark_unhealthy(&format!(
                "agent silent: a call waits, and nothing was heard from the agent within {timeout:?} ({e})"
            )),
            Err(_) => {}
        }
    }

    /// Records a failure seen on real traffic or a probe: `Unhealthy`, or `Disconnected` for a
    /// node whose registration is gone.
    pub fn mark_unhealthy(&self, error: &str) {
        self.edit(|state| {
            let registered = state.registered;
            let s = &mut state.snapshot;
            let health = if registered {
                Health::Unhealthy
            } else {
                Health::Disconnected
            };
            if s.health != health {
                warn!(node = %s.name, error, "node {}", health.to_string().to_lowercase());
            }
            s.health = health;
            s.last_error = Some(error.to_owned());
            s.updated_at = Some(SystemTime::now());
        });
    }

    /// Records a successful probe.
    fn mark_probed(&self, d: NodeDescription, asked: Asked) {
        let received = Instant::now();
        let has_docs = !d.engine_info_json.is_empty();
        // When the documents' fetch began: after the probe was sent when they were fetched for
        // it, else as old as the agent says.
        let age = Duration::from_millis(d.docs_age_ms);
        let fetched = received.checked_sub(age).unwrap_or(received);
        let fetched = if d.docs_cached {
            fetched
        } else {
            fetched.max(asked.sent)
        };
        // An engine's `/version` and an agent's chain status rarely change: when the bytes are
        // those seen last, the documents made from them are kept (not parsed again).
        let (same_version, same_chains) = {
            let state = self.state.lock().expect("node state lock");
            (
                state.version_raw == d.engine_version_json,
                state.chains_raw == d.chain_status_json,
            )
        };
        // Parsed before taking the lock.
        let info = has_docs
            .then(|| Arc::new(serde_json::from_slice(&d.engine_info_json).unwrap_or_default()));
        let version = (has_docs && !same_version)
            .then(|| Arc::new(serde_json::from_slice(&d.engine_version_json).unwrap_or_default()));
        let chains = (!same_chains).then(|| {
            (!d.chain_status_json.is_empty())
                .then(|| serde_json::from_slice::<ChainStatus>(&d.chain_status_json).ok())
                .flatten()
                .map(Arc::new)
        });
        let replaced = self.edit(|state| {
            let newer = match state.docs_fetched {
                None => true,
                Some(at) if d.docs_cached => fetched > at,
                Some(at) => fetched >= at && asked.changes >= state.docs_at,
            };
            // Documents fetched for this probe answer every change sent before it.
            if has_docs && !d.docs_cached && asked.changes >= state.docs_at {
                state.docs_at = asked.changes;
            }
            let s = &mut state.snapshot;
            // The agent's own labels (`--label`) win over what its registration said.
            s.labels.extend(d.labels);
            if s.health != Health::Healthy {
                info!(node = %s.name, "node healthy");
            }
            s.health = Health::Healthy;
            s.last_error = None;
            s.updated_at = Some(SystemTime::now());
            if let Some(chains) = chains {
                s.chains = chains;
                state.chains_raw = d.chain_status_json;
            }
            // An answer to an older question (a probe that overlapped a refresh), or older
            // documents from the agent's cache, never replace documents fetched later.
            let (Some(info), true) = (info, newer) else {
                return None;
            };
            state.docs_fetched = Some(fetched);
            let s = &mut state.snapshot;
            s.reserved = Reserved {
                cpus: d.reserved_nano_cpus as f64 / 1e9,
                memory: u64::try_from(d.reserved_memory).unwrap_or(0),
            };
            let old_info = std::mem::replace(&mut s.info, info);
            let old_version = version.map(|v| std::mem::replace(&mut s.version, v));
            if old_version.is_some() {
                state.version_raw = d.engine_version_json;
            }
            Some((old_info, old_version))
        });
        // The documents replaced are freed here, outside the lock.
        drop(replaced);
        // Made now, in the probe's task, rather than by the next `docker info`.
        self.parts();
    }

    pub fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }
}
/// The cluster as the gateway sees it.
pub struct Cluster {
    nodes: RwLock<BTreeMap<String, Arc<Node>>>,
    tls: Arc<rustls::ClientConfig>,
    pub health: HealthOptions,
    /// Moves on with every change to any node's state (see [`Cluster::generation`]).
    generation: Arc<AtomicU64>,
    /// Where members come from, as `docker info` and the starting gateway's errors name it
    /// (e.g. `the node registry (etcd at ...)`), and whether it has answered yet.
    registry: Mutex<Option<String>>,
    registry_known: AtomicBool,
    /// Set once the gateway knows its nodes (see [`Cluster::ready`]); never unset.
    ready: AtomicBool,
}

impl Cluster {
    pub fn new(tls: Arc<rustls::ClientConfig>, health: HealthOptions) -> Arc<Cluster> {
        Arc::new(Cluster {
            nodes: RwLock::new(BTreeMap::new()),
            tls,
            health,
            generation: Arc::new(AtomicU64::new(0)),
            registry: Mutex::new(None),
            registry_known: AtomicBool::new(true),
            ready: AtomicBool::new(false),
        })
    }

    /// Members also come from `registry` (shown as is in errors), which has not answered yet:
    /// until [`Cluster::registry_answered`], the gateway does not know all its nodes.
    pub fn expect_registry(&self, registry: &str) {
        *self.registry.lock().expect("registry lock") = Some(registry.to_owned());
        self.registry_known.store(false, Ordering::SeqCst);
    }

    /// The registry has answered (its members were given to [`Cluster::set_members`]).
    pub fn registry_answered(&self) {
        self.registry_known.store(true, Ordering::SeqCst);
    }

    /// Whether the gateway knows its nodes: every node it knows has been probed once, and the
    /// registry (if any) has answered, or there are static nodes (served while etcd does not
    /// answer). Once true, always true.
    pub fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::SeqCst) {
            return true;
        }
        let nodes = self.nodes();
        let ready = nodes.iter().all(|n| n.was_probed())
            && (self.registry_known.load(Ordering::SeqCst) || !nodes.is_empty());
        if ready {
            self.ready.store(true, Ordering::SeqCst);
        }
        ready
    }

    /// Waits (at most `bound`) until the gateway knows its nodes; if it still does not, the
    /// reason, worded for a Docker client.
    pub async fn ready(&self, bound: Duration) -> Result<(), String> {
        let deadline = Instant::now() + bound;
        while !self.is_ready() {
            if Instant::now() >= deadline {
                let registry = self.registry.lock().expect("registry lock").clone();
                let why = match registry {
                    Some(r)
                        if !self.registry_known.load(Ordering::SeqCst)
                            && self.nodes().is_empty() =>
                    {
                        format!("the gateway is starting: {r} has not answered yet")
                    }
                    _ => "the gateway is starting: no node answered yet".to_owned(),
                };
                return Err(why);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// A number that changes whenever any node's snapshot does (a probe answered, a node
    /// failed, joined or left): a document made from [`Cluster::snapshots`] when it read `g`
    /// is still exact while it reads `g`. Read it before taking the snapshots.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Reconciles membership: new members are added and probed at once (in tasks of their
    /// own, when called on a runtime), changed addresses get a new link. A member no longer
    /// listed (its registration expired) is still served while it answers its probes, and is
    /// `Disconnected` once it does not: the registry says which nodes exist, the probes whether
    /// they work. Nodes are kept so `info` shows them.
    pub fn set_members(&self, members: &BTreeMap<String, Member>) {
        let mut joined = vec![];
        let mut nodes = self.nodes.write().expect("cluster lock");
        for (name, m) in members {
            let current = nodes.get(name).map(|n| n.link.addr().to_owned());
            match current {
                Some(addr) if addr == m.addr => {
                    let node = &nodes[name];
                    // Most calls change nothing (a registry event about another node): then
                    // nothing made from this node's snapshot needs making again.
                    let (registered, same_labels) = {
                        let state = node.state.lock().expect("node state lock");
                        (state.registered, state.snapshot.labels == m.labels)
                    };
                    if !registered || !same_labels {
                        node.edit(|state| {
                            state.registered = true;
                            let s = &mut state.snapshot;
                            s.labels = m.labels.clone();
                            if s.health == Health::Disconnected {
                                s.health = Health::Unhealthy;
                                s.last_error = Some("registered again; not probed yet".into());
                            }
                        });
                        if !registered {
                            info!(node = %name, "node registered again");
                            joined.push(node.clone());
                        }
                    }
                }
                _ => match AgentLink::new(name, &m.addr, self.tls.clone()) {
                    Ok(link) => {
                        info!(node = %name, addr = %m.addr, "node joined");
                        let snapshot = NodeSnapshot::new(name, &m.addr, m.labels.clone());
                        let node = Arc::new(Node::new(
                            link,
                            snapshot,
                            self.generation.clone(),
                            self.health.clone(),
                        ));
                        nodes.insert(name.clone(), node.clone());
                        self.generation.fetch_add(1, Ordering::SeqCst);
                        joined.push(node);
                    }
                    Err(e) => warn!(node = %name, error = %e, "ignoring node"),
                },
            }
        }
        for (name, node) in nodes.iter() {
            if members.contains_key(name) {
                continue;
            }
            let registered = node.state.lock().expect("node state lock").registered;
            if !registered {
                continue;
            }
            node.edit(|state| {
                state.registered = false;
                let s = &mut state.snapshot;
                if s.health == Health::Healthy {
                    warn!(node = %name, "node registration gone; served while it answers");
                } else {
                    warn!(node = %name, "node disconnected (registration gone, not answering)");
                    s.health = Health::Disconnected;
                    s.updated_at = Some(SystemTime::now());
                }
            });
        }
        drop(nodes);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for node in joined {
                rt.spawn(async move { node.probe().await });
            }
        }
    }

    /// Every node, sorted by name.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes
            .read()
            .expect("cluster lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn healthy(&self) -> Vec<Arc<Node>> {
        self.nodes()
            .into_iter()
            .filter(|n| n.is_healthy())
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.read().expect("cluster lock").get(name).cloned()
    }

    /// Every node's snapshot, sorted by name (cheap: the documents are shared, not copied).
    pub fn snapshots(&self) -> Vec<NodeSnapshot> {
        self.nodes().iter().map(|n| n.snapshot()).collect()
    }

    /// Probes every node once, all at once.
    pub async fn probe_all(&self) {
        self.probe_round(Duration::ZERO).await;
    }

    /// Probes every node once (disconnected ones too: one that answers again is served),
    /// concurrently, in batches started [`PROBE_BATCH_EVERY`] apart over `spread` (nodes in
    /// name order): a thousand answers then arrive (and are parsed, and change what `docker
    /// info` is made of) a few dozen at a time, not in one burst that every request made
    /// meanwhile would queue behind. Batches, not one node at a time: each wake-up of the
    /// gateway (and of the agents' hosts) then serves many probes; one probe per wake-up cost
    /// 2.4 times the CPU at 1,000 nodes.
    async fn probe_round(&self, spread: Duration) {
        let nodes = self.nodes();
        let n = u32::try_from(nodes.len()).unwrap_or(u32::MAX).max(1);
        let batches = u32::try_from(spread.as_millis() / PROBE_BATCH_EVERY.as_millis())
            .unwrap_or(u32::MAX)
            .clamp(1, n);
        let probes = nodes.iter().zip(0u32..).map(|(node, i)| async move {
            let batch = u64::from(i) * u64::from(batches) / u64::from(n);
            if batch > 0 {
                tokio::time::sleep(PROBE_BATCH_EVERY * u32::try_from(batch).unwrap_or(u32::MAX))
                    .await;
            }
            node.probe().await;
        });
        futures_util::future::join_all(probes).await;
    }

    /// Refreshes, concurrently, every healthy node that a call through this gateway changed
    /// since its documents were fetched (see the module docs): after this the snapshots show
    /// every change made through the gateway that has completed, unless a node's engine was
    /// too slow to answer within half the probe timeout (then its documents stay as they were).
    pub async fn refresh_stale(&self) {
        let stale: Vec<_> = self
            .nodes()
            .into_iter()
            .filter(|n| n.is_healthy() && n.is_stale())
            .collect();
        futures_util::future::join_all(stale.iter().map(|node| node.refresh_if_stale())).await;
    }

    /// Probes until `shutdown`: every node at once first (the cluster is known as soon as
    /// possible), then each round spread over one probe interval, a round starting one interval
    /// after the previous one started, or when it ended if it took longer (a node that does not
    /// answer holds its round for up to the probe timeout). So each node is probed about once
    /// per interval, and a dead one is seen within `probe_interval + probe_timeout`.
    pub async fn run_probes(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = self.health.probe_interval;
        let mut spread = Duration::ZERO;
        loop {
            let started = tokio::time::Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.probe_round(spread) => {}
            }
            let next = if spread.is_zero() {
                tokio::time::Instant::now() + interval
            } else {
                started + interval
            };
            spread = interval;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A TLS client configuration for links that are never dialed.
    pub(crate) fn tls() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(tls)
    }

    /// A node whose link is never dialed (the tests record answers by hand).
    pub(crate) fn node(name: &str) -> Node {
        let link = AgentLink::new(name, "127.0.0.1:9", tls()).expect("a valid address");
        Node::new(
            link,
            NodeSnapshot::new(name, "127.0.0.1:9", BTreeMap::new()),
            Arc::new(AtomicU64::new(0)),
            HealthOptions::default(),
        )
    }

    fn described(containers: i64) -> NodeDescription {
        NodeDescription {
            engine_reachable: true,
            engine_info_json: serde_json::to_vec(&serde_json::json!({"Containers": containers}))
                .unwrap(),
            engine_version_json: b"{}".to_vec(),
            chain_status_json:
                br#"{"node":"n","revision":7,"scopes":{"global":7},"source":"etcd"}"#.to_vec(),
            ..NodeDescription::default()
        }
    }

    impl Node {
        /// Records an answer asked for now (a refresh that just completed).
        pub(crate) fn mark_probed_for_tests(&self) {
            self.mark_probed(described(0), self.asked_now());
        }

        /// What a probe sent now asks.
        fn asked_now(&self) -> Asked {
            Asked {
                changes: self.changes.load(Ordering::SeqCst),
                sent: Instant::now(),
            }
        }
    }

    fn containers(node: &Node) -> i64 {
        node.snapshot().info["Containers"].as_i64().unwrap_or(-1)
    }

    #[test]
    fn a_change_makes_the_node_stale_when_sent_and_again_when_it_ends() {
        let n = node("node1");
        n.mark_probed(described(1), n.asked_now());
        assert!(!n.is_stale());
        assert_eq!(n.snapshot().chains.map(|c| c.revision), Some(7));

        let call = n.note_change();
        assert!(n.is_stale(), "stale as soon as the call is sent");
        // A refresh while the call is in flight: fresh for now...
        n.mark_probed(described(1), n.asked_now());
        assert!(!n.is_stale());
        // ...until the call's response ends.
        drop(call);
        assert!(n.is_stale());
        n.mark_probed(described(2), n.asked_now());
        assert!(!n.is_stale());
        assert_eq!(containers(&n), 2);
    }

    #[test]
    fn an_answer_to_an_older_question_never_replaces_newer_documents() {
        let n = node("node1");
        let early = n.asked_now();
        drop(n.note_change());
        let late = n.asked_now();
        n.mark_probed(described(5), late);
        // The periodic probe asked before the change, and answers after the refresh.
        n.mark_probed(described(4), early);
        assert_eq!(containers(&n), 5);
        assert!(!n.is_stale());
        assert_eq!(n.health(), Health::Healthy);
        // A probe that asked before a change leaves the node stale.
        let before = n.asked_now();
        drop(n.note_change());
        n.mark_probed(described(6), before);
        assert!(n.is_stale());
    }

    #[test]
    fn snapshots_share_the_documents() {
        let n = node("node1");
        n.mark_probed(described(3), n.asked_now());
        let (a, b) = (n.snapshot(), n.snapshot());
        assert!(Arc::ptr_eq(&a.info, &b.info) && Arc::ptr_eq(&a.version, &b.version));
        // The next probe: `/info` anew; `/version` and the chain status, the same bytes, kept.
        n.mark_probed(described(3), n.asked_now());
        let c = n.snapshot();
        assert!(!Arc::ptr_eq(&a.info, &c.info));
        assert!(Arc::ptr_eq(&a.version, &c.version));
        assert!(Arc::ptr_eq(
            a.chains.as_ref().unwrap(),
            c.chains.as_ref().unwrap()
        ));
        let mut changed = described(3);
        changed.engine_version_json = br#"{"ApiVersion":"1.43"}"#.to_vec();
        n.mark_probed(changed, n.asked_now());
        assert_eq!(n.snapshot().version["ApiVersion"], "1.43");
    }
}

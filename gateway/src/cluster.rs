//! The nodes behind the gateway and their health.
//!
//! Membership comes from a source (the static `--agent` list, or the etcd registry) as a map
//! of name -> address and labels; [`Cluster::set_members`] reconciles it. Health comes from
//! three places, as the README documents:
//! - the registration: a node whose etcd key is gone (lease expired) is `Disconnected`;
//! - probes: every `probe_interval` each node is asked to describe itself (agent version,
//!   engine `/info` and `/version`) within `probe_timeout`; a failed probe, or an engine the
//!   agent cannot reach, makes it `Unhealthy` with the error;
//! - real traffic: a call that cannot reach a node's agent marks it `Unhealthy` at once.
//!
//! A node is `Healthy` again after its next successful probe. So a dead node is detected within
//! `probe_interval + probe_timeout` (defaults 3 s + 3 s; tests use far less).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agents::AgentLink;
use crate::model::{Health, NodeSnapshot};

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

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions { probe_interval: Duration::from_secs(3), probe_timeout: Duration::from_secs(3) }
    }
}

/// One node: its link and its last known state.
pub struct Node {
    pub link: AgentLink,
    /// Short critical sections, never held across an await: a std mutex is right here.
    state: Mutex<NodeSnapshot>,
}

impl Node {
    pub fn name(&self) -> &str {
        self.link.node()
    }

    pub fn snapshot(&self) -> NodeSnapshot {
        self.state.lock().expect("node state lock").clone()
    }

    /// Records a failure seen on real traffic or a probe.
    pub fn mark_unhealthy(&self, error: &str) {
        let mut s = self.state.lock().expect("node state lock");
        if s.health == Health::Healthy {
            warn!(node = %s.name, error, "node unhealthy");
        }
        if s.health != Health::Disconnected {
            s.health = Health::Unhealthy;
        }
        s.last_error = Some(error.to_owned());
        s.updated_at = Some(SystemTime::now());
    }

    fn mark_probed(&self, labels: BTreeMap<String, String>, info: serde_json::Value, version: serde_json::Value) {
        let mut s = self.state.lock().expect("node state lock");
        // The agent's own labels (`--label`) win over what its registration said.
        s.labels.extend(labels);
        if s.health != Health::Healthy {
            info!(node = %s.name, "node healthy");
        }
        s.health = Health::Healthy;
        s.last_error = None;
        s.info = info;
        s.version = version;
        s.updated_at = Some(SystemTime::now());
    }

    pub fn is_healthy(&self) -> bool {
        self.state.lock().expect("node state lock").health == Health::Healthy
    }
}

/// The cluster as the gateway sees it.
pub struct Cluster {
    nodes: RwLock<BTreeMap<String, Arc<Node>>>,
    tls: Arc<rustls::ClientConfig>,
    pub health: HealthOptions,
}

impl Cluster {
    pub fn new(tls: Arc<rustls::ClientConfig>, health: HealthOptions) -> Arc<Cluster> {
        Arc::new(Cluster { nodes: RwLock::new(BTreeMap::new()), tls, health })
    }

    /// Reconciles membership: new members are added (and probed soon), changed addresses get a
    /// new link, members no longer listed become `Disconnected` (kept so `info` shows them).
    pub fn set_members(&self, members: &BTreeMap<String, Member>) {
        let mut nodes = self.nodes.write().expect("cluster lock");
        for (name, m) in members {
            let current = nodes.get(name).map(|n| (n.link.addr().to_owned(), n.snapshot()));
            match current {
                Some((addr, snap)) if addr == m.addr => {
                    let node = &nodes[name];
                    let mut s = node.state.lock().expect("node state lock");
                    s.labels = m.labels.clone();
                    if snap.health == Health::Disconnected {
                        s.health = Health::Unhealthy;
                        s.last_error = Some("registered again; not probed yet".into());
                    }
                }
                _ => match AgentLink::new(name, &m.addr, self.tls.clone()) {
                    Ok(link) => {
                        info!(node = %name, addr = %m.addr, "node joined");
                        let state = Mutex::new(NodeSnapshot::new(name, &m.addr, m.labels.clone()));
                        nodes.insert(name.clone(), Arc::new(Node { link, state }));
                    }
                    Err(e) => warn!(node = %name, error = %e, "ignoring node"),
                },
            }
        }
        for (name, node) in nodes.iter() {
            if !members.contains_key(name) {
                let mut s = node.state.lock().expect("node state lock");
                if s.health != Health::Disconnected {
                    warn!(node = %name, "node disconnected (registration gone)");
                    s.health = Health::Disconnected;
                    s.last_error = Some("registration expired".into());
                    s.updated_at = Some(SystemTime::now());
                }
            }
        }
    }

    /// Every node, sorted by name.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.read().expect("cluster lock").values().cloned().collect()
    }

    pub fn healthy(&self) -> Vec<Arc<Node>> {
        self.nodes().into_iter().filter(|n| n.is_healthy()).collect()
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.read().expect("cluster lock").get(name).cloned()
    }

    pub fn snapshots(&self) -> Vec<NodeSnapshot> {
        self.nodes().iter().map(|n| n.snapshot()).collect()
    }

    /// Probes every registered node once, concurrently.
    pub async fn probe_all(&self) {
        let nodes: Vec<_> = self.nodes().into_iter().filter(|n| n.snapshot().health != Health::Disconnected).collect();
        let probes = nodes.iter().map(|node| async move {
            match node.link.describe(self.health.probe_timeout).await {
                Ok(d) if d.engine_reachable => {
                    let info = serde_json::from_slice(&d.engine_info_json).unwrap_or_default();
                    let version = serde_json::from_slice(&d.engine_version_json).unwrap_or_default();
                    node.mark_probed(d.labels.into_iter().collect(), info, version);
                }
                Ok(d) => node.mark_unhealthy(&format!("engine unreachable: {}", d.engine_error)),
                Err(e) => node.mark_unhealthy(&e.to_string()),
            }
        });
        futures_util::future::join_all(probes).await;
    }

    /// Probes until `shutdown`.
    pub async fn run_probes(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.probe_all().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.health.probe_interval) => {}
            }
        }
    }
}

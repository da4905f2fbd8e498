//! What the gateway knows about the cluster at one moment: plain data, rebuilt at any time from
//! etcd (or the static `--agent` list) and the agents' own answers. The gateway keeps nothing
//! that cannot be rebuilt this way, so a restarted gateway, or a second one beside it, serves
//! the same view.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use busbar_chains::scoped::ChainStatus;

/// What a node's containers have reserved, as the scheduler counts it (shown as `Reserved CPUs`
/// and `Reserved Memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reserved {
    /// CPUs reserved, in cores (`--cpus`; fractions allowed).
    pub cpus: f64,
    /// Memory reserved, in bytes (`--memory`).
    pub memory: u64,
}

/// A node's health, as `docker info` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// The agent answers and its engine is reachable.
    Healthy,
    /// The agent or its engine fails: probes or real traffic error out.
    Unhealthy,
    /// The node's registration is gone (its etcd lease expired): it left or lost contact.
    Disconnected,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "Healthy",
            Health::Unhealthy => "Unhealthy",
            Health::Disconnected => "Disconnected",
        })
    }
}

/// One node as last seen.
///
/// Cheap to clone: the documents are shared (`Arc`), never copied, so taking a snapshot of
/// every node for a request costs no more than the names and labels.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// The node name (its agent certificate's CN).
    pub name: String,
    /// host:port of its agent's gRPC service.
    pub addr: String,
    /// Labels given to the agent (`--label k=v`).
    pub labels: BTreeMap<String, String>,
    pub health: Health,
    /// The last error seen on this node, if any (shown in `docker info`).
    pub last_error: Option<String>,
    /// When the node's state was last refreshed.
    pub updated_at: Option<SystemTime>,
    /// The engine's `GET /info` document as last seen (`Null` if never seen).
    pub info: Arc<serde_json::Value>,
    /// The engine's `GET /version` document as last seen (`Null` if never seen).
    pub version: Arc<serde_json::Value>,
    /// The agent's adapter chains as it last reported them (`None`: it did not say).
    pub chains: Option<Arc<ChainStatus>>,
    /// What the node's containers have reserved, as its agent last reported it.
    pub reserved: Reserved,
}

impl NodeSnapshot {
    /// A node known by name and address only (before its first probe).
    pub fn new(name: &str, addr: &str, labels: BTreeMap<String, String>) -> NodeSnapshot {
        NodeSnapshot {
            name: name.to_owned(),
            addr: addr.to_owned(),
            labels,
            health: Health::Unhealthy,
            last_error: Some("not contacted yet".into()),
            updated_at: None,
            info: Arc::new(serde_json::Value::Null),
            version: Arc::new(serde_json::Value::Null),
            chains: None,
            reserved: Reserved::default(),
        }
    }

    /// The host part of the agent address (what Swarm showed as the node's IP).
    pub fn host(&self) -> &str {
        self.addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
    }
}

/// One node's answer to a call fanned out to several nodes.
#[derive(Debug, Clone)]
pub struct NodeAnswer<T> {
    pub node: String,
    pub result: Result<T, CallError>,
}

/// Why a node gave no usable answer to a call the gateway made on its own account (a list,
/// an inspect, a name check, ...). The kinds stay apart because callers decide on them: an
/// engine's error status is an answer ("no such container"); a node that is down, or did not
/// answer in time, says nothing about what it holds (a name check must not take it for
/// "the name is free").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The engine answered with an error status, with its message.
    #[error("{status}: {message}")]
    Engine { status: u16, message: String },
    /// The node is down: its agent cannot be reached, or it is known unhealthy.
    #[error("{0}")]
    Down(String),
    /// No complete answer within the time limit: a busy node, or a dead one not yet seen.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// An answer that cannot be used: broken off, too large, or not what was asked for.
    #[error("{0}")]
    Bad(String),
}

impl CallError {
    /// Whether the node answered (with an error status): then it knows; otherwise its state
    /// is unknown.
    pub fn is_answer(&self) -> bool {
        matches!(self, CallError::Engine { .. })
    }
}

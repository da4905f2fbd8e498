//! The one-line JSON description of a running test bed, printed by the `busbar-testbed`
//! supervisor once everything is ready and parsed by [`crate::Testbed`].
//!
//! On a failed start the supervisor prints `{"error":"..."}` instead (see [`StartReply`]).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A whole test bed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BedInfo {
    /// The bed's private directory (`/tmp/bbt-XXXXXXXX`); removed on teardown.
    pub dir: PathBuf,
    /// The supervisor's process id.
    pub supervisor_pid: u32,
    pub hosts: Vec<HostInfo>,
    /// etcd's client URL as seen from the root network namespace
    /// (`http://127.0.0.1:PORT`), if the bed has an etcd.
    pub etcd: Option<String>,
}

/// One "host": a private dockerd, optionally in its own network namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    /// `h1`, `h2`, ...
    pub name: String,
    /// The host's slot (1..=254): its subnets are numbered after it.
    pub slot: u8,
    /// The host's directory (data root, exec root, socket, logs).
    pub dir: PathBuf,
    /// The network namespace (`bbtS`), or `None` when the engine runs in the root namespace.
    pub netns: Option<String>,
    /// The host's address (`10.77.S.2`) in its namespace.
    pub addr: Option<IpAddr>,
    /// The root namespace's end of the host's link (`10.77.S.1`): how the host reaches the
    /// root namespace (and etcd).
    pub gateway_addr: Option<IpAddr>,
    /// The engine's Unix socket.
    pub docker_sock: PathBuf,
    /// The dockerd process id when the bed started (it changes on `start-engine`).
    pub pid: u32,
    /// The engine's default bridge subnet (`172.20.S.1/24`).
    pub bip: String,
    /// The pool `docker network create` allocates from (a /18 in 100.64.0.0/10).
    pub address_pool: String,
    /// etcd's client URL as seen from inside this host, if the bed has an etcd.
    pub etcd: Option<String>,
}

/// What the supervisor prints first: the bed, or why it could not start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StartReply {
    Ready(BedInfo),
    Failed { error: String },
}

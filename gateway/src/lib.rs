//! busbar gateway: serves the Docker Engine API and carries each call to an agent over gRPC
//! with mutual TLS, or, with no agent given, to an agent embedded in the process.
//!
//! # Layout
//! - [`config`]: flags and `BUSBAR_*` environment -> [`config::Config`] (pure).
//! - [`agents`]: the client side of the gRPC hop: one multiplexed HTTP/2 connection per agent,
//!   mTLS with the agent's identity checked, and one exchange per Docker API call.
//! - [`model`]: what the gateway knows of the cluster (nodes, health): plain data.
//! - [`route`]: what kind of call a request is for the cluster (pure).
//! - [`aggregate`]: per-node answers merged into one cluster answer, Swarm-style (pure).
//! - [`schedule`]: where a new container goes: Swarm's filters and strategies (pure).
//! - [`serve`]: the cluster-mode handler: answer, aggregate, route, schedule, broadcast.
//! - [`registry`]: the cluster's registry in etcd: nodes, followed live, and cluster-wide
//!   container name reservations.
//! - [`remote`]: the [`Handler`](busbar_agent::front::Handler) that sends requests to an agent.
//! - [`cluster`]: the nodes behind the gateway, their links and health.
//! - [`certs`]: `busbarctl certs`: create the cluster CA and issue role-carrying certificates
//!   (the work itself is in `busbar_agent::tls::pki`, shared with the agent's tests).
//!
//! The listeners, the hijack splice and the embedded agent are the agent library's own
//! (`busbar_agent::front`, `busbar_agent::proxy`): the gateway adds the hop, not a second proxy.

pub mod agents;
pub mod aggregate;
pub mod certs;
pub mod chainctl;
pub mod cluster;
pub mod config;
pub mod model;
pub mod registry;
pub mod remote;
pub mod route;
pub mod schedule;
pub mod serve;

//! busbar gateway: serves the Docker Engine API and carries each call to an agent over gRPC
//! with mutual TLS, or, with no agent given, to an agent embedded in the process.
//!
//! Where a `docker run` goes: the client's request arrives on a listener
//! ([`busbar_http::server`], which makes its path canonical); in cluster mode
//! [`serve::ClusterHandler`] classifies it ([`route`]), the scheduler picks a node
//! ([`schedule`]), and [`hop`] carries it to that node's agent, whose proxy runs the chains and
//! calls the engine. With one agent ([`remote`]) every call goes straight across the hop;
//! embedded, the agent library's proxy serves it in this process.
//!
//! # Layout
//! - [`config`]: flags and `BUSBAR_*` environment -> [`config::Config`] (pure).
//! - [`lanes`]: the pool of lanes (long-lived streams, one exchange after another) per agent.
//! - [`hop`]: the client side of the gRPC hop: one multiplexed HTTP/2 connection per agent,
//!   mTLS with the agent's identity checked, and one exchange per Docker API call.
//! - [`remote`]: the handler that sends every request to one agent.
//! - [`cluster`]: the nodes behind the gateway, their links, probes and health.
//! - [`model`]: what the gateway knows of the cluster at one moment (plain data).
//! - [`route`]: what kind of call a request is for the cluster (pure).
//! - [`aggregate`]: per-node answers merged into one cluster answer, Swarm-style (pure).
//! - [`schedule`]: where a new container goes: Swarm's filters and strategies (pure).
//! - [`names`]: cluster-wide container names, reserved in etcd or in memory.
//! - [`serve`]: the cluster-mode handler: answer, aggregate, route, schedule, broadcast.
//! - [`run`]: starting the cluster mode, and the identity check of every mode with agents.
//! - [`status`]: the status page and `/status.json` on the metrics listener (every
//!   mode).
//!
//! The listeners, the hijack splice and the embedded agent are shared crates'
//! (`busbar_http`, `busbar_agent`): the gateway adds the hop, not a second proxy.

pub mod aggregate;
pub mod cluster;
pub mod config;
pub mod hop;
pub mod lanes;
pub mod model;
pub mod names;
pub mod remote;
pub mod route;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod status;

/// Settings and generators shared by the property tests.
#[cfg(test)]
pub(crate) mod strategies;

//! busbar agent: proxies one host's Docker Engine API and runs adapter chains on it.
//!
//! Where a `docker run` goes: a client's request arrives on a listener
//! ([`busbar_http::server`]), or from a gateway over gRPC ([`cluster::grpc`]); either way it
//! reaches [`proxy::Proxy::handle`], which matches it against the current adapter chains
//! ([`busbar_chains`]), runs the pre-hooks ([`hooks`]), forwards it to the engine
//! ([`busbar_engine`]), runs the post-hooks, and answers.
//!
//! # Layout
//! - [`config`]: command-line flags and environment -> [`config::Config`] (pure, no IO).
//! - [`proxy`]: the request path: one [`proxy::Proxy`] turns a request into the engine's
//!   response, through the chains.
//! - [`hooks`]: the hook phases (gate, pre-hooks, post gate, post-hooks) and the HTTP calls
//!   to adapters.
//! - [`chain_source`]: where the running chains come from (none, a `--config` file watched
//!   for changes), published whole to the request path.
//! - [`run`]: process plumbing shared with the gateway's embedded mode: bind, serve, drain.
//! - [`cluster`] (cargo feature `cluster`, on by default): serving gateways over gRPC with
//!   mutual TLS, registering in etcd, and taking the chains from etcd. Without it the agent is
//!   a standalone Powerstrip-style proxy and links neither etcd nor gRPC.

pub mod chain_source;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod hooks;
pub mod proxy;
pub mod run;

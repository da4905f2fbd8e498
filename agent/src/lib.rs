//! busbar agent: proxies one host's Docker Engine API and runs adapter chains on it.
//!
//! # Layout
//! - [`config`]: command-line flags and environment -> [`config::Config`] (pure, no IO).
//! - [`docker`]: the upstream engine: address parsing, the pooled client, hijack support.
//! - [`proxy`]: the request path: one [`proxy::Proxy`] turns a downstream request into the
//!   engine's response, whatever front it arrived on.
//! - [`exchange`]: one HTTP exchange as a stream of frames (the gateway <-> agent hop).
//! - [`grpc`]: the agent's gRPC service for gateways, with mutual TLS.
//! - [`front`]: the local listeners (unix and tcp) that serve the Docker API to clients.
//! - [`chains`]: adapter chains (Powerstrip `adapters.yml`): parsing and validation.
//! - [`hooks`]: Powerstrip protocol v1 wire types and endpoint matching.
//! - [`registry`]: this node's entry in the etcd node registry, under a lease kept alive;
//!   the registry's key layout, entry shape and etcd helpers, shared with the gateway.
//! - [`etcd_conn`]: how every busbar process reaches etcd (endpoints, TLS, user and password):
//!   the shared `--etcd*` flags, validated, then the files read.
//! - [`io`]: byte streams over unix or TCP, and replaying bytes read ahead.
//! - [`run`], [`logging`], [`signal`]: process plumbing shared with the gateway.
//! - [`respond`]: the one place that turns an error into a Docker-style error response.
//! - [`tls`]: mutual TLS with roles in certificates: rustls configs, the cluster CA, issuing.

pub mod chains;
pub mod config;
pub mod docker;
pub mod etcd_conn;
pub mod exchange;
pub mod front;
pub mod grpc;
pub mod hooks;
pub mod io;
pub mod logging;
pub mod proxy;
pub mod registry;
pub mod respond;
pub mod run;
pub mod signal;
pub mod tls;

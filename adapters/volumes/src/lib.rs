//! busbar-volumes: a Flocker-style adapter for busbar. A volume created through a gateway with
//! the label `busbar.portable=true` exists once in the cluster, on one node, its location in
//! etcd; a container created on another node that mounts it gets the data moved there first.
//!
//! It is an ordinary Powerstrip (v1) adapter: it knows of busbar only what busbar gives every
//! adapter, the node headers on hook calls (which node runs the hook) and a gateway's adapter
//! API (any node's engine, past the chains). See the README's "Portable volumes" and
//! `deploy/cross-host.md`.
//!
//! # Layout
//! - [`request`]: which Docker call a hook call is, the volumes a create mounts (pure).
//! - [`store`]: the records and locks in etcd ([`store::EtcdStore`]), or in memory for tests.
//! - [`engines`]: the cluster's engines through the gateway's adapter API.
//! - [`mover`]: moving a volume's data between nodes, in an order that never loses it.
//! - [`adapter`]: the hooks ([`adapter::Volumes`]).
//! - [`error`]: what goes wrong, and what the client is told.

pub mod adapter;
pub mod engines;
pub mod error;
pub mod mover;
pub mod request;
pub mod store;

pub use adapter::{Settings, Volumes};

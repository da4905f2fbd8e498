//! busbar and etcd: how every busbar process reaches it, the errors it gives, where busbar's
//! keys live, and the node registry built on them.
//!
//! # Layout
//! - [`conn`]: the shared `--etcd*` flags, validated, the files read, and [`conn::connect`];
//!   the usual refusals (wrong password, untrusted certificate) recognised ([`conn::Refusal`]).
//! - [`error`]: [`EtcdError`], and [`error::call`], the timeout every unary call runs under.
//! - [`keys`]: the key layout, in one place.
//! - [`registry`]: a node's entry ([`registry::NodeEntry`]) and the agent's registration loop
//!   (a lease kept alive, registered again when lost).
//! - [`members`]: the gateway's view of the registry: every node's entry, followed live.
//! - [`watching`]: how each watch fares (its lag behind etcd, its revision, why it ended),
//!   as metrics.

/// The etcd v3 client busbar talks through (busbar's own, [`busbar_etcd_client`]).
pub use busbar_etcd_client as client;

pub mod conn;
pub mod error;
pub mod keys;
pub mod members;
pub mod registry;
pub mod watching;

pub use conn::EtcdConnection;
pub use error::{EtcdError, Refusal};

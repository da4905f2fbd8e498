//! The cluster's registry in etcd, gateway side: which nodes exist ([`nodes`]) and which
//! container names are taken cluster-wide ([`names`]).
//!
//! Agents write their own entries (`busbar_agent::registry`, under a lease they keep alive);
//! gateways only read them, and own the name reservations. The key layout, the entry shape,
//! [`connect`] and the error type are the agent library's, re-exported here:
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `<prefix>/nodes/<node>` | [`NodeEntry`] JSON, under the agent's lease | the agent |
//! | `<prefix>/names/<container-name>` | [`names::NameEntry`] JSON, no lease | gateways |
//!
//! `<prefix>` is `--etcd-prefix` (default `/busbar`).

pub mod names;
pub mod nodes;

pub use busbar_agent::registry::{
    check_endpoints, check_prefix, connect, connect_lazy, names_prefix, node_key, nodes_prefix,
    unix_now, NodeEntry, RegistryError, CALL_TIMEOUT, DEFAULT_PREFIX,
};
pub use names::{
    list_names, release_name, release_reservation, reserve_name, set_name_owner, NameError,
    Reservation,
};
pub use nodes::{spawn_watch, NodeMap};

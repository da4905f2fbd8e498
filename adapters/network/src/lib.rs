//! busbar-network: a Weave-style cluster network, as an ordinary Powerstrip v1 adapter that
//! runs on every node of a busbar cluster.
//!
//! A container created with the label `busbar.net=cluster` gets an address from one pool for
//! the whole cluster (kept in etcd), joins the Docker network `busbar` of its node with it,
//! and reaches every other such container, on any node, at its address and by its name:
//!
//! - [`pool`]: the address plan of the pool (gateways, container range), pure;
//! - [`store`]: the state in etcd: who holds which address, the names, the live nodes, the
//!   node adapter's lease;
//! - [`create`]: the pre-hook's rewrite of a create, pure;
//! - [`hooks`]: the adapter itself (what each hook call does);
//! - [`node`]: what runs beside the hooks on the node: the overlay's flood list, the DNS
//!   mirror, the engine's events, the reconciliation after a restart;
//! - [`overlay`]: the VXLAN overlay and the Docker network, on the node;
//! - [`dns`]: the DNS server on the node's gateway address;
//! - [`docker`]: the node's own engine.
//!
//! The adapter knows nothing of busbar beyond what busbar tells every adapter: the hook
//! calls (Powerstrip v1) and their `X-Busbar-Node` header.

pub mod create;
pub mod dns;
pub mod docker;
pub mod hooks;
pub mod node;
pub mod overlay;
pub mod pool;
pub mod run;
pub mod store;

/// The label that asks for the cluster network, and its value.
pub const LABEL: &str = "busbar.net";
pub const LABEL_VALUE: &str = "cluster";
/// The label the pre-hook adds: the container's cluster address.
pub const ADDRESS_LABEL: &str = "busbar.net.address";
/// The label the pre-hook adds: the id of the address's claim in etcd.
pub const CLAIM_LABEL: &str = "busbar.net.claim";
/// The Docker network cluster containers join on every node.
pub const NETWORK: &str = "busbar";

//! busbar gateway: serves the Docker Engine API for a whole cluster and carries each call to
//! the agent of the node that owns it.
//!
//! # Layout
//! Nothing yet: the gateway arrives with the gRPC hop (see the README's roadmap).

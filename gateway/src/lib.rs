//! busbar gateway: serves the Docker Engine API for a whole cluster and carries each call to
//! the agent of the node that owns it.
//!
//! # Layout
//! - [`certs`]: `busbarctl certs`: create the cluster CA and issue role-carrying certificates
//!   (the work itself is in `busbar_agent::tls::pki`, shared with the agent's tests).
//!
//! The gateway proper arrives with the gRPC hop (see the README's roadmap).

pub mod certs;

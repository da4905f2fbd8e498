//! The HTTP layer of every Docker API server in busbar: what a request and a response are made
//! of, how an error becomes an answer a Docker client understands, how a hijacked connection
//! is spliced, and the servers that accept clients on unix sockets and TCP.
//!
//! A request enters through [`server::serve`], which reads it with hyper (or, for an attach
//! that hijacks without asking for an upgrade, by hand), replaces its path by the canonical
//! form the engine will route on ([`busbar_api::path`]; a path with no single reading is a
//! 400 here), gives it a [`RequestCtx`] (request id, `req` span), and hands it to a
//! [`server::Handler`]: the agent's proxy, or the gateway.
//!
//! # Layout
//! - [`access`]: the access log, one line per request.
//! - [`body`]: the [`Body`] type every request and response carries, and helpers.
//! - [`ctx`]: [`RequestCtx`], the request id, trace and span of one request.
//! - [`error`]: the one place an error becomes `{"message": "..."}` with its status.
//! - [`headers`]: hop-by-hop headers and upgrade requests.
//! - [`identity`]: who a client is (a verified TLS certificate's CN), the `X-Busbar-User` and
//!   `X-Busbar-Auth-Method` headers that carry it to adapters and across the hop, and the
//!   stripping of clients' own `X-Busbar-*` headers.
//! - [`hijack`]: a `101`'s upstream stream, and the half-closing byte splice.
//! - [`io`]: byte streams over unix or TCP, and replaying bytes read ahead.
//! - [`listen`]: listen addresses, the loopback rule, unix sockets' group and mode, bound
//!   listeners (plain, unix, TLS).
//! - [`observe`]: the metrics listener: `/metrics`, `/healthz`, `/readyz`.
//! - [`server`]: the Docker API server: accept, one connection, raw hijacks.
//! - [`spans`]: each request's span (its trace, span and parent ids), handed to a span
//!   exporter when one is installed (`busbar-otlp`).
//! - [`tls`]: TLS listeners for Docker clients: the handshake in the connection's task, the
//!   client's identity, and the server configuration.

pub mod access;
pub mod body;
pub mod ctx;
pub mod error;
pub mod headers;
pub mod hijack;
pub mod identity;
pub mod io;
pub mod listen;
pub mod observe;
pub mod server;
pub mod spans;
pub mod tls;

pub use body::{Body, BoxError};
pub use ctx::{RequestCtx, REQUEST_ID, TRACEPARENT, TRACESTATE};
pub use error::DockerError;
pub use identity::ClientIdentity;

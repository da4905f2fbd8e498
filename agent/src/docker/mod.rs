//! The upstream Docker engine: where it is, how we talk to it, and which calls hijack the
//! connection.
//!
//! - [`addr`]: `unix://` and `tcp://` engine addresses.
//! - [`client`]: the pooled HTTP/1.1 client to the engine, with a bounded connect time.
//! - [`hijack`]: attach/exec detection and the byte splice used once a connection is hijacked.

pub mod addr;
pub mod client;
pub mod hijack;

pub use addr::EngineAddr;
pub use client::EngineClient;

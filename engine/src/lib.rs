//! The upstream Docker engine: where it is and how busbar talks to it.
//!
//! # Layout
//! - [`addr`]: `unix://` and `tcp://` engine addresses.
//! - [`client`]: the pooled HTTP/1.1 client to the engine, with a bounded connect time; a
//!   `101` answer (attach, exec start) comes back with its hijacked connection attached.

pub mod addr;
pub mod client;

pub use addr::EngineAddr;
pub use client::{EngineClient, EngineError, EngineOptions};

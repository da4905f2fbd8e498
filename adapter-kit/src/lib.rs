//! busbar's adapter kit: what an adapter written in Rust needs, and nothing of busbar's
//! internals. The protocol is HTTP and JSON, so any language works; this crate saves a Rust
//! adapter the plumbing.
//!
//! - [`hook`]: one hook call, typed: Powerstrip's v1 request and busbar's headers (the node
//!   that runs it, the request id, the client), and what the adapter answers. An adapter
//!   whose chain entry says `protocol: 2` gets [`v2`] calls (headers, `Caller`, its own
//!   response, `unwind`): [`Adapter::pre_hook_v2`], [`Adapter::post_hook_v2`],
//!   [`Adapter::unwind`], which default to the v1 methods and to doing nothing.
//! - [`server`]: serves an [`Adapter`] over HTTP, with the limits and timeouts an adapter
//!   exposed to a cluster needs.
//! - [`gateway`]: a client of a gateway's adapter API (`/_busbar/v1/...`), to list the nodes
//!   and call any node's engine without re-entering the chains.
//! - [`testing`]: run an adapter on a free port and send it hook calls as busbar does, from an
//!   ordinary test ([`testing::TestAdapter`], [`testing::HookClient`]).
//!
//! `examples/hello.rs` is a whole adapter (busbar's powerstrip-slowreq), and
//! `examples/hello.py` the same in Python with the standard library only.
//!
//! ```no_run
//! use busbar_adapter::hook::{Call, PreAnswer};
//! use busbar_adapter::v1::PreHookRequest;
//! use busbar_adapter::Adapter;
//!
//! struct Hello;
//!
//! impl Adapter for Hello {
//!     async fn pre_hook(&self, call: Call<PreHookRequest>) -> PreAnswer {
//!         println!("{} on {:?}", call.request.client_request.request, call.node());
//!         Ok(call.unchanged())
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! busbar_adapter::server::serve(listener, Hello, Default::default()).await;
//! # Ok(())
//! # }
//! ```

pub mod gateway;
pub mod hook;
pub mod server;
pub mod testing;

pub use busbar_protocol::{headers, redact, v1, v2};
pub use hook::Adapter;

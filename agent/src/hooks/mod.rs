//! Running a request through its adapter chain (Powerstrip protocol v1).
//!
//! - [`phases`]: the phases a request goes through (gate, pre-hooks, engine, post gate,
//!   post-hooks), drawn in that module's docs.
//! - [`log`]: the hook call log (`debug: true`, `--debug-hooks`), for adapter authors.
//! - [`adapter`]: the HTTP calls to adapters: pooled, bounded in time and size, each failure a
//!   [`HookError`](adapter::HookError) naming the adapter.
//!
//! Which adapters a request runs is [`busbar_chains::matcher`]'s business; the JSON they
//! exchange is [`busbar_chains::powerstrip`]'s.

pub mod adapter;
pub mod log;
pub mod phases;

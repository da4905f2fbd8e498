//! What busbar and its adapters say to each other, as data: shared by the agent (which calls
//! adapters) and the adapter kit (which adapters are built with), so that both read and write
//! exactly the same wire format.
//!
//! - [`v1`]: Powerstrip protocol version 1, the JSON documents POSTed to adapters and their
//!   replies, kept byte for byte as Powerstrip wrote them.
//! - [`headers`]: what busbar adds beside the JSON, as HTTP headers of the hook call (the node
//!   that runs the hook, the client's identity, the version of these additions). A v1 adapter
//!   that ignores them sees exactly Powerstrip's messages.
//! - [`v2`]: busbar protocol version 2, for adapters whose chain entry says `protocol: 2`:
//!   headers, who calls, a pre-hook's own response, unwinding (`docs/protocol.md`).
//! - [`redact`]: the credential headers and `Env` values that are hidden, and how.
//! - [`trace`]: W3C Trace Context: the `traceparent` and `tracestate` busbar reads from
//!   clients and passes on to the hop, the engine and adapters.

pub mod headers;
pub mod redact;
pub mod trace;
pub mod v1;
pub mod v2;

#[cfg(test)]
mod properties;

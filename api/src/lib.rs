//! What busbar knows of the Docker Engine API's requests, in one place, as the engine reads
//! them: the path it routes on, the version prefix, which endpoints hijack the connection or
//! stream without end, the query flags it looks at, and the field names of the JSON bodies
//! it decodes. Pure: no IO, no HTTP stack.
//!
//! Everything that decides something from a request path uses this crate: the hooks' matcher,
//! the HTTP servers (which replace the client's path by its canonical form before anything
//! else sees it), the gateway's routing, aggregation and the hop. So what a hook matches is
//! what the engine executes, however the client spelled the path.
//!
//! # Layout
//! - [`path`]: a request path read as the engine reads it ([`ApiPath`]): percent-decoded,
//!   cleaned, split into an optional version and segments; the canonical target forwarded
//!   upstream; and the inputs refused because no single reading is safe.
//! - [`query`]: query parameters and Docker's boolean flags, with the engine's semantics.
//! - [`endpoint`]: which calls hijack the connection (attach, exec start), which stream
//!   without end (events, `logs -f`, stats, attach, wait), for hooks and the hop.
//! - [`body`]: a create's (exec's, update's, ...) JSON body as the engine decodes it, so that
//!   adapters see the fields the engine will use, however the client spelled them.

pub mod body;
pub mod endpoint;
pub mod path;
pub mod query;

pub use path::{ApiPath, PathError};

/// The property tests' settings: `cases` by default, `PROPTEST_CASES` when set; no
/// regression files written (a failure found becomes a plain test).
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let default = proptest::test_runner::Config::default();
    proptest::test_runner::Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}

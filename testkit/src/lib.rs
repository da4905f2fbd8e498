//! busbar's in-process test kit: the layer between unit tests and the end-to-end suite.
//!
//! Unit tests check pure functions; the end-to-end tests (`tests/tests/*.rs`) need root, real
//! `dockerd` engines in network namespaces and etcd. The tests built on this crate need
//! neither: they run busbar's real code (the HTTP front, the agent's proxy and hooks, the gRPC
//! hop with mutual TLS, the gateway's cluster handler) over real sockets, against **test
//! doubles** that stand where no real engine or adapter can run here. A plain `cargo test`
//! runs them as any user, in seconds.
//!
//! The shape is mini-redis's and linkerd2-proxy's: every server binds first (`127.0.0.1:0`, or
//! a unix socket in a temporary directory), so there is never a sleep to wait for readiness;
//! the test talks to it, checks what came back and what the fakes received, then stops it and
//! joins its tasks (`stop().await`). Where a timeout is the thing tested, tokio's paused time
//! makes it instant when the code allows it.
//!
//! # What is here
//! - [`engine::FakeEngine`]: a Docker Engine API server (a fake) on a unix socket or TCP, with
//!   scripted routes, Docker's `{"message": ...}` 404 for anything else, a record of every
//!   request exactly as received, hijacks (`101 UPGRADED`, echo, half-close both ways),
//!   streamed, endless and large bodies, and answers that are slow or never come.
//!   [`engine::FakeEngine::start_docker`] adds a small stateful engine (create, list, inspect,
//!   info, version) for gateway tests.
//! - [`adapter::FakeAdapter`]: a Powerstrip adapter (a fake) whose reply a closure decides
//!   (rewrite, refuse, garbage, slow, hang up; in protocol 2, pass or answer the client),
//!   recording every call, its exact bytes included.
//! - [`server`]: busbar's own HTTP front (`busbar_http::server::serve`) on `127.0.0.1:0` in
//!   front of any handler ([`server::TestServer`]), and an agent with chains from YAML text
//!   ([`server::TestAgent`]).
//! - [`pki::TestPki`]: a cluster CA made in a temporary directory, its certificates, and the
//!   TLS settings built from them (the gateway's, a `--tls-listen` listener's, a Docker
//!   client's).
//! - `grpc` (cargo feature `cluster`): the agent's gRPC service over mutual TLS on
//!   `127.0.0.1:0` (`grpc::GrpcAgent`).
//! - [`raw::RawClient`]: a client that writes raw HTTP/1.1 bytes (in plain TCP or TLS) and
//!   reads raw answers, for exact framing, odd request targets and hijacked streams.
//! - [`seq`]: one sequence shared by every recording here, to check what happened before what.
//!
//! # Where the tests are
//! - `agent/tests/inproc_hooks.rs`: hook phases and path canonicalisation, through an agent.
//! - `http/tests/inproc_hijack.rs`: the raw hijack front and the first-head timeout.
//! - `http/tests/inproc_metrics.rs`: requests counted by endpoint class, naming no object; the
//!   metrics listener (`/metrics`, `/healthz`, `/readyz`).
//! - `gateway/tests/inproc_hop.rs`: the agent's gRPC service over mutual TLS, driven by the
//!   gateway's hop client (it lives with the gateway, whose client it needs).
//! - `gateway/tests/inproc_create.rs`: the gateway's create path over three in-process agents.
//! - `agent/tests/inproc_security.rs`: TLS for Docker clients, the client's identity to
//!   adapters, what adapters and logs never get (credentials).
//! - `gateway/tests/inproc_identity.rs`: the client's identity across the hop to the agent's
//!   adapters, and that a client cannot forge it.
//! - `agent/tests/inproc_protocol_v2.rs`: protocol version 2 (headers, `Caller`, a pre-hook's
//!   own response, unwind calls, v1 adapters in the same chain) and the hook call log.
//! - `gateway/tests/inproc_protocol_v2.rs`: a v2 answer across the hop, and a node's call log
//!   read (and followed) through the gateway's adapter API.
//! - `adapter-kit/tests/inproc_v2.rs`: a v2 adapter built with the kit, behind the agent.
//! - `adapters/network/tests/inproc_network.rs`: the cluster network adapter against a real
//!   etcd (started by the test; skipped without `etcd` on the PATH), through an agent too.
//! - `adapters/volumes/tests/inproc.rs`: the portable-volume adapter's hooks on test doubles
//!   of the engines and of etcd, and over HTTP through the adapter kit's server.
//!
//! Run them all with `cargo test --workspace` (as any user; the end-to-end tests skip with a
//! message when they cannot run), or one crate's with e.g. `cargo test -p busbar-agent --test
//! inproc_hooks`. `RUST_LOG=debug` shows busbar's logs of a test (see [`logs`]).
//! - `testkit/tests/fakes.rs`: the fakes themselves (so a broken fake is not mistaken for a
//!   broken busbar).

pub mod adapter;
pub mod engine;
#[cfg(feature = "cluster")]
pub mod grpc;
mod pattern;
pub mod pki;
pub mod raw;
pub mod seq;
pub mod server;

pub use adapter::{AdapterCall, AdapterReply, FakeAdapter};
pub use engine::{json, text, FakeEngine, Hijack, Recorded, Reply};
#[cfg(feature = "cluster")]
pub use grpc::GrpcAgent;
pub use pki::TestPki;
pub use raw::{RawClient, RawResponse};
pub use server::{TestAgent, TestServer};

use std::time::Duration;

/// How long a test waits for something that should happen at once before it fails (instead
/// of hanging): a reply, a request reaching a fake, a server stopping.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=debug cargo test`).
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Everything busbar (and hyper, rustls, ...) logs on this thread while it is held, at the
/// `filter`'s levels (e.g. `"debug"`), as text: for tests of what logs must never hold. Use it
/// in a current-thread runtime (`#[tokio::test]`'s default), where every task logs on the
/// test's thread.
pub struct CapturedLogs {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    pub fn start(filter: &str) -> CapturedLogs {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = CaptureWriter(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        CapturedLogs {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("log buffer")).into_owned()
    }
}

#[derive(Clone)]
struct CaptureWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Awaits `fut` within [`LIMIT`], or fails the test naming `what`.
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {LIMIT:?}"),
    }
}

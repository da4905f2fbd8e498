//! The local fronts: listeners that serve the Docker Engine API to clients on this host.
//!
//! - [`listen`]: `tcp://` and `unix://` listen addresses, and the loopback-only rule.
//! - [`conn`]: one client connection: HTTP/1.1 with upgrades, or a raw hijack (see [`raw`]).
//! - [`raw`]: clients that hijack attach/exec without asking for an upgrade.
//!
//! [`serve`] takes an already bound [`listen::Listener`] and a shutdown token, so tests can bind
//! port 0 and stop it when they like (mini-redis's shape).

pub mod conn;
pub mod listen;
pub mod raw;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use http::{Request, Response};

use crate::proxy::{Body, RequestCtx};
pub use listen::{ListenAddr, ListenError, Listener};

/// What a front serves: the agent's [`Proxy`](crate::proxy::Proxy), or the gateway's route to
/// agents. A `101` response carries its upstream stream as a
/// [`Hijacked`](crate::docker::hijack::Hijacked) extension, which the front splices to the
/// client.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request; errors are already Docker-style responses. Runs inside `ctx.span`.
    fn handle<'a>(
        &'a self,
        req: Request<Body>,
        ctx: &'a RequestCtx,
    ) -> futures_util::future::BoxFuture<'a, Response<Body>>;

    /// Where requests go, for the startup log line.
    fn upstream(&self) -> String;
}

/// Serves `listener` until `shutdown` fires, then waits up to `grace` for open connections
/// (hijacked streams included) to finish.
pub async fn serve(
    listener: Listener,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = TaskTracker::new();
    let local = listener.to_string();
    info!(listen = %local, upstream = %handler.upstream(), "serving the Docker API");
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((io, peer)) => {
                backoff = Duration::from_millis(5);
                let span = tracing::debug_span!("conn", client.addr = %peer);
                let (handler, shutdown, t) = (handler.clone(), shutdown.clone(), tracker.clone());
                tracker.spawn(conn::serve(io, handler, shutdown, t).instrument(span));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(listen = %local, ?grace, "connections still open after the grace period; closing them");
    }
}

//! Where the running chain set comes from, and how it changes while requests flow.
//!
//! The request path reads the current [`LiveChains`] from a `watch` channel
//! (`rx.borrow().clone()`, an `Arc`): a request keeps the snapshot it started with until it
//! ends, and a new snapshot is swapped in whole, so no request ever sees half a chain.
//!
//! [`watch_file`] polls the `--config` file (every [`POLL`]): polling sees every way a file
//! gets replaced (in-place edits, editors that write a new file and rename it, symlink swaps)
//! and costs one small read per tick. A change is parsed and validated first; an invalid file
//! is logged at `warn` and the last good chain set keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ChainSet, ConfigError};
use crate::hooks::adapter::{AdapterClients, HookError};

/// How often the config file is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// A validated chain set with the adapter clients it needs: what a request runs with.
pub struct LiveChains {
    pub set: ChainSet,
    pub clients: AdapterClients,
    /// Where it came from (`file /etc/busbar/adapters.yml`, `none`), for logs and status.
    pub origin: String,
}

impl LiveChains {
    /// No adapters at all: every request takes the plain proxy path.
    pub fn none() -> Arc<LiveChains> {
        let set = ChainSet::empty();
        let clients = AdapterClients::new(set.adapters().values().map(|a| a.as_ref()))
            .expect("no adapters means no CA file to load");
        Arc::new(LiveChains { set, clients, origin: "none".into() })
    }

    pub fn new(set: ChainSet, origin: String) -> Result<Arc<LiveChains>, HookError> {
        let clients = AdapterClients::new(set.adapters().values().map(|a| a.as_ref()))?;
        Ok(Arc::new(LiveChains { set, clients, origin }))
    }
}

/// Why a chain source could not give a chain set.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Clients(#[from] HookError),
}

/// Loads and validates a config file (at start: an error here stops the agent).
pub fn load_file(path: &Path) -> Result<Arc<LiveChains>, SourceError> {
    let set = ChainSet::load(path)?;
    Ok(LiveChains::new(set, format!("file {}", path.display()))?)
}

/// Watches `path` until `shutdown`, publishing each valid new version on `tx`.
pub async fn watch_file(path: PathBuf, tx: watch::Sender<Arc<LiveChains>>, shutdown: CancellationToken) {
    let mut last = std::fs::read(&path).ok();
    let mut missing_reported = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                if !missing_reported {
                    warn!(config = %path.display(), error = %e, "cannot read the adapter config; keeping the last good chains");
                    missing_reported = true;
                }
                continue;
            }
        };
        missing_reported = false;
        if last.as_deref() == Some(&bytes[..]) {
            continue;
        }
        last = Some(bytes);
        match load_file(&path) {
            Ok(live) => {
                info!(config = %path.display(), endpoints = live.set.endpoints().len(), "adapter chains reloaded");
                tx.send_replace(live);
            }
            Err(e) => warn!(config = %path.display(), "invalid adapter config, keeping the last good chains:\n{e}"),
        }
    }
}

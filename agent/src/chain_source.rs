//! Where the running chain set comes from, and how it changes while requests flow.
//!
//! The request path reads the current [`LiveChains`] from a `watch` channel
//! (`rx.borrow().clone()`, an `Arc`): a request keeps the snapshot it started with until it
//! ends, and a new snapshot is swapped in whole, so no request ever sees half a chain.
//!
//! [`watch_file`] polls the `--config` file (every [`POLL`]): polling sees every way a file
//! gets replaced (in-place edits, editors that write a new file and rename it, symlink swaps)
//! and costs one small read per tick. A change is parsed and validated first; an invalid file
//! is logged at `warn` and the last good chain set keeps serving. SIGHUP ([`reread_files`])
//! makes every watcher look at once and log what it found, even when nothing changed: the
//! operator who sends it reads in the log whether the chains were reloaded, unchanged, or
//! refused (and why).
//!
//! Whatever the source, it also keeps a [`ChainStatus`] current in a `watch` channel: what the
//! agent runs and why it refused the latest change, if it did. The agent's `Describe` answer
//! carries it to gateways, which show it in `docker info`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use busbar_chains::scoped::ChainStatus;
use busbar_chains::{ChainSet, ConfigError};
use busbar_runtime::unix_now;

use crate::hooks::adapter::{AdapterClients, HookError};

/// How often the config file is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// Bumped by [`reread_files`]; every [`watch_file`] follows it.
static REREAD: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

/// Makes every running [`watch_file`] read its file now and log the outcome (SIGHUP). Returns
/// how many watchers there are.
pub fn reread_files() -> usize {
    REREAD.send_modify(|n| *n = n.wrapping_add(1));
    REREAD.receiver_count()
}

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
        Arc::new(LiveChains {
            set,
            clients,
            origin: "none".into(),
        })
    }

    /// The chains of `set`, with their adapter clients. Logs what loads but is probably a
    /// mistake ([`ChainSet::warnings`]: a key that can never match), once per load.
    pub fn new(set: ChainSet, origin: String) -> Result<Arc<LiveChains>, HookError> {
        let clients = AdapterClients::new(set.adapters().values().map(|a| a.as_ref()))?;
        for warning in set.warnings() {
            warn!(chains = %origin, "adapter chains: {warning}");
        }
        Ok(Arc::new(LiveChains {
            set,
            clients,
            origin,
        }))
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

/// Chains loaded from a config file, with the text they were loaded from: what a watcher
/// compares the file with, so that an edit made right after the load is not missed.
pub struct Loaded {
    pub live: Arc<LiveChains>,
    pub text: String,
}

/// Loads and validates a config file (at start: an error here stops the agent).
pub fn load_file(path: &Path) -> Result<Loaded, SourceError> {
    let text = ChainSet::read(path)?;
    let live = from_text(path, &text)?;
    Ok(Loaded { live, text })
}

/// Validates the text of the config file at `path` (errors name the file).
fn from_text(path: &Path, text: &str) -> Result<Arc<LiveChains>, SourceError> {
    let set = ChainSet::from_yaml(text).map_err(|e| e.in_file(path))?;
    Ok(LiveChains::new(set, format!("file {}", path.display()))?)
}

/// The status of an agent that runs no chains and follows no source.
pub fn none_status() -> ChainStatus {
    ChainStatus {
        source: "none".into(),
        ..ChainStatus::default()
    }
}

/// The status of an agent that runs the chains of the file `path` (loaded and valid).
pub fn file_status(path: &Path) -> ChainStatus {
    ChainStatus {
        source: "file".into(),
        file: Some(path.display().to_string()),
        updated_at: unix_now(),
        ..ChainStatus::default()
    }
}

/// Watches `path` until `shutdown`, publishing each valid new version on `tx`, and on `status`
/// whether the last change was refused (and why). `loaded` is the text the running chains
/// were loaded from ([`Loaded::text`]): a file that differs from it at the first look is
/// loaded then.
pub async fn watch_file(
    path: PathBuf,
    loaded: String,
    tx: watch::Sender<Arc<LiveChains>>,
    status: watch::Sender<ChainStatus>,
    shutdown: CancellationToken,
) {
    let report = |error: Option<String>| {
        status.send_modify(|s| {
            s.error = error;
            s.updated_at = unix_now();
        });
    };
    let mut last = Some(loaded.into_bytes());
    let mut missing_reported = false;
    // Why the content in `last` was refused, if it was.
    let mut refused: Option<String> = None;
    let mut reread = REREAD.subscribe();
    reread.mark_unchanged();
    loop {
        // Asked for by SIGHUP: log the outcome even when nothing changed.
        let asked = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => false,
            _ = reread.changed() => true,
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                if asked {
                    warn!(config = %path.display(), error = %e, "SIGHUP: cannot read the adapter config; keeping the last good chains");
                } else if !missing_reported {
                    warn!(config = %path.display(), error = %e, "cannot read the adapter config; keeping the last good chains");
                }
                if !missing_reported {
                    report(Some(format!("cannot read {}: {e}", path.display())));
                    missing_reported = true;
                }
                continue;
            }
        };
        if std::mem::take(&mut missing_reported) && last.as_deref() == Some(&bytes[..]) {
            report(refused.clone()); // back as it was
        }
        if last.as_deref() == Some(&bytes[..]) {
            if asked {
                match &refused {
                    None => info!(config = %path.display(), "SIGHUP: adapter chains unchanged"),
                    Some(e) => {
                        warn!(config = %path.display(), "SIGHUP: adapter config still invalid, keeping the last good chains:\n{e}")
                    }
                }
            }
            continue;
        }
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(text) => from_text(&path, text),
            Err(e) => Err(SourceError::Config(ConfigError::Read {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })),
        };
        last = Some(bytes);
        let why = if asked { "SIGHUP: " } else { "" };
        match parsed {
            Ok(live) => {
                info!(config = %path.display(), endpoints = live.set.endpoints().len(), "{why}adapter chains reloaded");
                tx.send_replace(live);
                refused = None;
                report(None);
            }
            Err(e) => {
                warn!(config = %path.display(), "{why}invalid adapter config, keeping the last good chains:\n{e}");
                refused = Some(e.to_string());
                report(refused.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const VALID: &str = "endpoints: {}\nadapters: {}\n";
    const INVALID: &str = "endpoints:\n  \"POST /x\":\n    pre: [nope]\nadapters: {}\n";

    /// A watcher of a file, started from what was loaded from it.
    struct Watching {
        chains: watch::Receiver<Arc<LiveChains>>,
        status: watch::Receiver<ChainStatus>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Watching {
        fn start(path: &Path, loaded: Loaded) -> Watching {
            let (chains_tx, chains) = watch::channel(loaded.live);
            let (status_tx, status) = watch::channel(file_status(path));
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(watch_file(
                path.to_path_buf(),
                loaded.text,
                chains_tx,
                status_tx,
                shutdown.clone(),
            ));
            Watching {
                chains,
                status,
                shutdown,
                task,
            }
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.unwrap();
        }
    }

    /// Waits (real time: the watcher polls every 500 ms) until `ok` holds for the status.
    async fn until(
        rx: &mut watch::Receiver<ChainStatus>,
        ok: impl Fn(&ChainStatus) -> bool,
    ) -> ChainStatus {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok(&rx.borrow()) {
            assert!(
                Instant::now() < deadline,
                "status never became as expected: {:?}",
                *rx.borrow()
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
        rx.borrow().clone()
    }

    #[tokio::test]
    async fn the_file_status_says_why_the_last_change_was_refused_until_it_is_fixed() {
        let path =
            std::env::temp_dir().join(format!("busbar-source-test-{}.yml", std::process::id()));
        std::fs::write(&path, VALID).unwrap();
        let mut w = Watching::start(&path, load_file(&path).unwrap());
        assert_eq!(w.status.borrow().source, "file");
        assert_eq!(
            w.status.borrow().file.as_deref(),
            Some(path.display().to_string().as_str())
        );

        std::fs::write(&path, INVALID).unwrap();
        let refused = until(&mut w.status, |s| s.error.is_some()).await;
        assert!(
            refused.error.as_deref().is_some_and(|e| e.contains("nope")),
            "{refused:?}"
        );
        std::fs::write(&path, VALID.replace("{}\nadapters", "{} # fixed\nadapters")).unwrap();
        until(&mut w.status, |s| s.error.is_none()).await;

        w.stop().await;
        let _ = std::fs::remove_file(&path);
    }

    /// An edit made between the load and the watcher's start is not missed: the watcher
    /// compares the file with what was loaded, not with what it first reads.
    #[tokio::test]
    async fn an_edit_right_after_the_load_is_applied() {
        let path =
            std::env::temp_dir().join(format!("busbar-source-race-{}.yml", std::process::id()));
        std::fs::write(&path, VALID).unwrap();
        let loaded = load_file(&path).unwrap();
        assert_eq!(loaded.live.set.endpoints().len(), 0);
        let edited =
            "endpoints:\n  \"POST /x\":\n    pre: [a]\nadapters:\n  a: http://127.0.0.1:9/\n";
        std::fs::write(&path, edited).unwrap();
        let mut w = Watching::start(&path, loaded);
        tokio::time::timeout(Duration::from_secs(5), w.chains.changed())
            .await
            .expect("the edit was not applied within 5 s")
            .unwrap();
        assert_eq!(w.chains.borrow().set.endpoints().len(), 1);
        w.stop().await;
        let _ = std::fs::remove_file(&path);
    }
}

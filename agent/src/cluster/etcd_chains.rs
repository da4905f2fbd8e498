//! The agent's chains from etcd: the documents of its scopes (see [`busbar_chains::scoped`]) merged,
//! validated and swapped in whole through the same `watch` channel as the file source, so
//! a request in flight keeps the snapshot it started with.
//!
//! [`EtcdChains::start`] reads etcd once at start (with the usual timeouts); when etcd cannot
//! be reached it falls back to the last-known-good cache in `--state-dir` (and says so), or
//! to no chains. [`EtcdChains::run`] then lists `<prefix>/chains/` and watches it from the
//! revision after the list, applying every change to a matching scope as soon as etcd
//! delivers it. An invalid view is refused: the last good chain keeps serving, the reason is
//! logged and written to `<prefix>/status/<node>`. After a broken watch it lists and watches
//! again, with backoff. Each apply publishes the new chain first (and the status `Describe`
//! reports); then, in the background and a little later (see [`record_delay`]), it rewrites
//! the cache (`<state-dir>/chains-cache.json`) and the status in etcd: neither the disk nor
//! the status write is on the way to serving the chain, and a change that reaches 1,000
//! agents at once does not come back to etcd as 1,000 writes at once (`busbar-chainbench`
//! measures both, see BENCHMARKS.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use busbar_etcd::client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use busbar_chains::scoped::{merge, CachedChains, ChainStatus, Scope, ScopeDoc};
use busbar_chains::ChainSet;
use busbar_etcd::conn::{connect, EtcdConnection};
use busbar_etcd::error::{call, describe};
use busbar_etcd::keys::{chains_prefix, status_key};
use busbar_etcd::watching::{restarted, Ended, Progress};
use busbar_etcd::EtcdError;
use busbar_runtime::{unix_now, Backoff};

use crate::chain_source::LiveChains;

/// How long the agent waits for etcd at start before running its cached chain.
pub const START_TIMEOUT: Duration = Duration::from_secs(3);
/// The cache's file name in `--state-dir`.
pub const CACHE_FILE: &str = "chains-cache.json";

/// Where this node's chains come from in etcd.
#[derive(Debug, Clone)]
pub struct EtcdChainsConfig {
    pub etcd: EtcdConnection,
    pub prefix: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub state_dir: PathBuf,
}

/// The etcd chain source of one agent, and what it has applied.
pub struct EtcdChains {
    cfg: EtcdChainsConfig,
    /// The merged text now serving (none before the first apply).
    applied: Option<String>,
    status: ChainStatus,
    /// `status`, as the agent reports it to gateways (`Describe`).
    published: watch::Sender<ChainStatus>,
    /// What to record after an apply (see [`Recorder`]).
    recorder: Recorder,
}

/// What an apply leaves to record: the chain to cache (none if refused) and the status.
#[derive(Clone)]
struct Record {
    cache: Option<CachedChains>,
    status: ChainStatus,
}

type Docs = BTreeMap<Scope, ScopeDoc>;

impl EtcdChains {
    /// The chains to start with: etcd's, else the cache's, else none. Never fails: a problem
    /// is logged and recorded in the status.
    pub async fn start(cfg: EtcdChainsConfig) -> (Arc<LiveChains>, EtcdChains) {
        let status = ChainStatus {
            node: cfg.node.clone(),
            source: "etcd".into(),
            ..ChainStatus::default()
        };
        let published = watch::Sender::new(status.clone());
        let recorder = Recorder::spawn(
            cfg.state_dir.clone(),
            status_key(&cfg.prefix, &cfg.node),
            record_delay(&cfg.node),
        );
        let mut me = EtcdChains {
            cfg,
            applied: None,
            status,
            published,
            recorder,
        };
        let shown = me.cfg.etcd.shown();
        let first = async {
            let client = connect(&me.cfg.etcd).await?;
            let (docs, rev) = me.list(&client).await?;
            Ok::<_, EtcdError>((client, docs, rev))
        };
        let first = async {
            tokio::time::timeout(START_TIMEOUT, first)
                .await
                .unwrap_or(Err(EtcdError::Unreachable {
                    endpoints: shown.clone(),
                    after: START_TIMEOUT,
                }))
        };
        // Why the cache is used, for its log line.
        let why = match first.await {
            Ok((client, docs, rev)) => match me.compose(&docs, rev) {
                Ok(live) => {
                    me.recorder.client.send_replace(Some(client));
                    me.record(me.cached());
                    return (live, me);
                }
                Err(e) => {
                    warn!(etcd = %shown, "adapter chains in etcd are invalid at start: {e}");
                    "the adapter chains in etcd are invalid"
                }
            },
            Err(e) if e.refusal().is_some() => {
                error!(etcd = %shown, "cannot read the adapter chains from etcd at start: {e}");
                "etcd refused this agent"
            }
            Err(e) => {
                warn!(etcd = %shown, "cannot read the adapter chains from etcd at start: {e}");
                "etcd unreachable"
            }
        };
        let live = me.load_cache(why).unwrap_or_else(|| {
            warn!("no cached adapter chains either: starting with none until etcd answers");
            LiveChains::none()
        });
        me.published.send_replace(me.status.clone());
        (live, me)
    }

    /// The chain status as it changes (what `<prefix>/status/<node>` says), for `Describe`.
    pub fn status(&self) -> watch::Receiver<ChainStatus> {
        self.published.subscribe()
    }

    fn cache_path(&self) -> PathBuf {
        self.cfg.state_dir.join(CACHE_FILE)
    }

    fn load_cache(&mut self, why: &str) -> Option<Arc<LiveChains>> {
        let path = self.cache_path();
        let text = std::fs::read_to_string(&path).ok()?;
        let cached: CachedChains = match serde_json::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                warn!(cache = %path.display(), "ignoring an unreadable chain cache: {e}");
                return None;
            }
        };
        let live = ChainSet::from_yaml(&cached.yaml)
            .map_err(|e| e.to_string())
            .and_then(|set| {
                LiveChains::new(
                    set,
                    format!(
                        "cache {} (etcd revision {})",
                        path.display(),
                        cached.revision
                    ),
                )
                .map_err(|e| e.to_string())
            });
        match live {
            Ok(live) => {
                warn!(cache = %path.display(), revision = cached.revision, "{why}: using the last-known-good adapter chains from the cache");
                self.applied = Some(cached.yaml);
                self.status.revision = cached.revision;
                self.status.scopes = cached.scopes;
                self.status.source = "cache".into();
                Some(live)
            }
            Err(e) => {
                warn!(cache = %path.display(), "ignoring an invalid chain cache: {e}");
                None
            }
        }
    }

    /// This node's scope documents and the revision of the read.
    async fn list(&self, client: &Client) -> Result<(Docs, i64), EtcdError> {
        let prefix = chains_prefix(&self.cfg.prefix);
        let rsp = call(
            "get",
            &prefix,
            client
                .clone()
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let rev = rsp.header().map_or(0, |h| h.revision());
        let mut docs = Docs::new();
        for kv in rsp.kvs() {
            if let Some(scope) = self.scope_of(kv.key()) {
                docs.insert(
                    scope,
                    ScopeDoc {
                        text: String::from_utf8_lossy(kv.value()).into_owned(),
                        mod_revision: kv.mod_revision(),
                    },
                );
            }
        }
        Ok((docs, rev))
    }

    /// The scope of a chain key, if it applies to this node.
    fn scope_of(&self, key: &[u8]) -> Option<Scope> {
        let key = std::str::from_utf8(key).ok()?;
        let scope: Scope = key
            .strip_prefix(&chains_prefix(&self.cfg.prefix))?
            .parse()
            .ok()?;
        scope
            .matches(&self.cfg.node, &self.cfg.labels)
            .then_some(scope)
    }

    /// Merges and validates `docs` (etcd's view at `rev`); on success records the apply and
    /// returns the new chains, on failure records the error and keeps the old ones.
    fn compose(&mut self, docs: &Docs, rev: i64) -> Result<Arc<LiveChains>, String> {
        let scopes: BTreeMap<String, i64> = docs
            .iter()
            .map(|(s, d)| (s.to_string(), d.mod_revision))
            .collect();
        let result = merge(docs).and_then(|(set, text)| {
            let live =
                LiveChains::new(set, format!("etcd revision {rev}")).map_err(|e| e.to_string())?;
            Ok((live, text))
        });
        self.status.updated_at = unix_now();
        match result {
            Ok((live, text)) => {
                self.status.revision = rev;
                self.status.scopes = scopes.clone();
                self.status.error = None;
                self.status.rejected_revision = None;
                self.status.source = "etcd".into();
                self.applied = Some(text);
                Ok(live)
            }
            Err(e) => {
                self.status.error = Some(e.clone());
                self.status.rejected_revision = Some(rev);
                Err(e)
            }
        }
    }

    /// The chain now running, as cached for a start without etcd.
    fn cached(&self) -> Option<CachedChains> {
        Some(CachedChains {
            node: self.cfg.node.clone(),
            revision: self.status.revision,
            scopes: self.status.scopes.clone(),
            yaml: self.applied.clone()?,
            written_at: unix_now(),
        })
    }

    /// Publishes the status at once, and leaves `cache` and the status in etcd to the recorder.
    fn record(&self, cache: Option<CachedChains>) {
        self.published.send_replace(self.status.clone());
        let status = self.status.clone();
        self.recorder
            .records
            .send_replace(Some(Record { cache, status }));
    }

    /// Applies `docs` if they differ from what runs: publishes on `tx` and the status at once,
    /// and leaves the cache and the status in etcd to the recorder.
    fn apply(&mut self, docs: &Docs, rev: i64, tx: &watch::Sender<Arc<LiveChains>>) {
        let before = self.applied.clone();
        let cache = match self.compose(docs, rev) {
            Ok(live) => {
                if before != self.applied {
                    tx.send_replace(live.clone());
                    info!(revision = rev, scopes = ?self.status.scopes, endpoints = live.set.endpoints().len(), "adapter chains applied from etcd");
                } else {
                    debug!(revision = rev, "adapter chains from etcd unchanged");
                }
                self.cached()
            }
            Err(e) => {
                warn!(
                    revision = rev,
                    "refusing the adapter chains in etcd, keeping the last good ones:\n{e}"
                );
                None
            }
        };
        self.record(cache);
    }

    /// Follows this node's scopes until `shutdown`, publishing each valid new merge on `tx`.
    pub async fn run(mut self, tx: watch::Sender<Arc<LiveChains>>, shutdown: CancellationToken) {
        let shown = self.cfg.etcd.shown();
        let mut backoff = Backoff::retry();
        loop {
            let outcome = tokio::select! {
                r = self.follow(&tx, &mut backoff) => r,
                _ = shutdown.cancelled() => return,
            };
            match outcome {
                Ok(end) => {
                    restarted(WATCH, end.reason());
                    warn!(etcd = %shown, "chain watch ended: {end}; listing again")
                }
                Err(e) => {
                    restarted(WATCH, "unreachable");
                    warn!(etcd = %shown, "chain watch: {e}; retrying (keeping the running chains)")
                }
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }

    /// One list + watch; returns why the watch ended.
    async fn follow(
        &mut self,
        tx: &watch::Sender<Arc<LiveChains>>,
        backoff: &mut Backoff,
    ) -> Result<Ended, EtcdError> {
        let client = connect(&self.cfg.etcd).await?;
        let (mut docs, rev) = self.list(&client).await?;
        self.recorder.client.send_replace(Some(client.clone()));
        self.apply(&docs, rev, tx);
        backoff.reset();
        let prefix = chains_prefix(&self.cfg.prefix);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        let (watcher, mut stream) = call(
            "watch",
            &prefix,
            client.clone().watch(prefix.as_str(), Some(options)),
        )
        .await?;
        let mut progress = Progress::new(WATCH);
        loop {
            let msg = tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(m)) => m,
                    Ok(None) => return Ok(Ended::Closed),
                    Err(e) => return Ok(Ended::Broken(describe(&e))),
                },
                _ = tokio::time::sleep_until(progress.next()) => {
                    progress.ask(&watcher).await;
                    continue;
                }
            };
            progress.saw(&msg);
            if let Some(end) = Ended::of(&msg) {
                return Ok(end);
            }
            let mut relevant = false;
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let Some(scope) = self.scope_of(kv.key()) else {
                    continue;
                };
                relevant = true;
                match ev.event_type() {
                    EventType::Put => {
                        let text = String::from_utf8_lossy(kv.value()).into_owned();
                        docs.insert(
                            scope,
                            ScopeDoc {
                                text,
                                mod_revision: kv.mod_revision(),
                            },
                        );
                    }
                    EventType::Delete => {
                        docs.remove(&scope);
                    }
                }
            }
            if relevant {
                let rev = msg.header().map_or(0, |h| h.revision());
                self.apply(&docs, rev, tx);
            }
        }
    }
}

/// The watch's name in the metrics.
const WATCH: &str = "chains";

/// How long after an apply an agent records it: [`RECORD_SETTLE`] (quick successive changes
/// are recorded once, the newest) plus a share of [`RECORD_SPREAD`] fixed by the node's name,
/// so that the agents of a cluster that all applied one change write their statuses over a
/// window instead of at once. `busbarctl chain status` shows an apply within about half a
/// second; gateways (`Describe`, `docker info`) see it at once.
fn record_delay(node: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    let spread = RECORD_SPREAD.as_millis() as u64;
    RECORD_SETTLE + Duration::from_millis(h.finish() % spread.max(1))
}

/// The least time between an apply and its record (see [`record_delay`]).
pub const RECORD_SETTLE: Duration = Duration::from_millis(100);
/// The window over which the agents' records of one change are spread.
pub const RECORD_SPREAD: Duration = Duration::from_millis(400);

/// The task that records applies, and its inputs.
struct Recorder {
    /// The newest apply to record.
    records: watch::Sender<Option<Record>>,
    /// The etcd client to write statuses through (that of the current connection).
    client: watch::Sender<Option<Client>>,
}

impl Recorder {
    /// Starts the task. `delay` after a new apply arrives, it records the newest: the cache
    /// file on a blocking thread (a runtime worker of the agent also serves Docker requests,
    /// and must never wait for a disk; written aside, then renamed over the old one, so always
    /// whole), then the status to etcd at `status_key`. The task ends once the senders are
    /// gone and the last apply sent is recorded.
    fn spawn(state_dir: PathBuf, status_key: String, delay: Duration) -> Recorder {
        let (records, mut rx) = watch::channel(None::<Record>);
        let (client, clients) = watch::channel(None::<Client>);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                tokio::time::sleep(delay).await;
                let Some(record) = rx.borrow_and_update().clone() else {
                    continue;
                };
                if let Some(cached) = record.cache {
                    let dir = state_dir.clone();
                    if tokio::task::spawn_blocking(move || write_cache_file(&dir, &cached))
                        .await
                        .is_err()
                    {
                        return; // the runtime is shutting down
                    }
                }
                // No client yet: no connection to etcd has been made (only in tests).
                let client = clients.borrow().clone();
                if let Some(client) = client {
                    let value = serde_json::to_string(&record.status).expect("a status serializes");
                    let put = client.put(status_key.as_str(), value, None);
                    if let Err(e) = call("put", &status_key, put).await {
                        warn!("recording the chain status: {e}");
                    }
                }
            }
        });
        Recorder { records, client }
    }
}

/// Writes the cache for root's eyes only: the file mode 0600 from its first byte (adapter URLs
/// and the chains' shape are nobody else's business), the state directory 0700 when it is
/// made here (an existing one is left as the operator set it).
fn write_cache_file(state_dir: &std::path::Path, cached: &CachedChains) {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = state_dir.join(CACHE_FILE);
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_string_pretty(cached).expect("the cache serializes");
    let written = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .and_then(|_| match std::fs::remove_file(&tmp) {
            // A leftover of an interrupted write, maybe with another mode: made anew.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?
                .write_all(json.as_bytes())
        })
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        warn!(cache = %path.display(), "cannot write the chain cache: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(revision: i64) -> CachedChains {
        CachedChains {
            node: "n1".into(),
            revision,
            scopes: [("global".to_owned(), revision)].into(),
            yaml: "endpoints: {}\nadapters: {}\n".into(),
            written_at: 0,
        }
    }

    fn read(dir: &std::path::Path) -> Option<CachedChains> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(CACHE_FILE)).ok()?).ok()
    }

    fn record(revision: i64) -> Option<Record> {
        Some(Record {
            cache: Some(cached(revision)),
            status: ChainStatus::default(),
        })
    }

    /// The cache is written in the background, whole, only the newest of quick changes, into
    /// a directory it makes, and not before the delay.
    #[tokio::test]
    async fn the_recorder_writes_the_newest_chain_after_its_delay() {
        let root = std::env::temp_dir().join(format!("busbar-cache-writer-{}", std::process::id()));
        let dir = root.join("state");
        let delay = Duration::from_millis(300);
        let tx = Recorder::spawn(dir.clone(), "status".into(), delay).records;
        let sent = tokio::time::Instant::now();
        for revision in 1..=5 {
            tx.send_replace(record(revision));
        }
        tokio::time::sleep(delay / 2).await;
        assert_eq!(read(&dir), None, "written before the delay");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while read(&dir).map(|c| c.revision) != Some(5) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cache was not written: {:?}",
                read(&dir)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sent.elapsed() >= delay);
        assert_eq!(read(&dir), Some(cached(5)));
        assert!(!dir.join("chains-cache.json.tmp").exists());
        let mode = |p: &std::path::Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(
            mode(&dir.join(CACHE_FILE)),
            0o600,
            "the cache is root's only"
        );
        assert_eq!(mode(&dir), 0o700, "the directory made for it too");
        // Sent just before the sender goes: still written.
        tx.send_replace(record(6));
        drop(tx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while read(&dir).map(|c| c.revision) != Some(6) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the last chain was not written: {:?}",
                read(&dir)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

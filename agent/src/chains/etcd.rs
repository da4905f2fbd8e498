//! The agent's chains from etcd: the documents of its scopes (see [`super::scoped`]) merged,
//! validated and swapped in whole through the same `watch` channel as the file source, so
//! a request in flight keeps the snapshot it started with.
//!
//! [`EtcdChains::start`] reads etcd once at start (with the usual timeouts); when etcd cannot
//! be reached it falls back to the last-known-good cache in `--state-dir` (and says so), or
//! to no chains. [`EtcdChains::run`] then lists `<prefix>/chains/` and watches it from the
//! revision after the list, applying every change to a matching scope as soon as etcd
//! delivers it. An invalid view is refused: the last good chain keeps serving, the reason is
//! logged and written to `<prefix>/status/<node>`. After a broken watch it lists and watches
//! again, with backoff. Each apply rewrites the cache (`<state-dir>/chains-cache.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::scoped::{chains_prefix, merge, status_key, CachedChains, ChainStatus, Scope, ScopeDoc};
use super::source::LiveChains;
use super::ChainSet;
use crate::registry::{call, connect, describe, unix_now, Backoff, RegistryError};

/// The default `--state-dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/busbar";
/// How long the agent waits for etcd at start before running its cached chain.
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// The cache's file name in `--state-dir`.
pub const CACHE_FILE: &str = "chains-cache.json";

/// Where this node's chains come from in etcd.
#[derive(Debug, Clone)]
pub struct EtcdChainsConfig {
    pub endpoints: Vec<String>,
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
}

type Docs = BTreeMap<Scope, ScopeDoc>;

impl EtcdChains {
    /// The chains to start with: etcd's, else the cache's, else none. Never fails: a problem
    /// is logged and recorded in the status.
    pub async fn start(cfg: EtcdChainsConfig) -> (Arc<LiveChains>, EtcdChains) {
        let status = ChainStatus { node: cfg.node.clone(), source: "etcd".into(), ..ChainStatus::default() };
        let mut me = EtcdChains { cfg, applied: None, status };
        let shown = me.cfg.endpoints.join(",");
        let first = async {
            let client = connect(&me.cfg.endpoints).await?;
            let (docs, rev) = me.list(&client).await?;
            Ok::<_, RegistryError>((client, docs, rev))
        };
        let first = async {
            tokio::time::timeout(START_TIMEOUT, first)
                .await
                .unwrap_or(Err(RegistryError::Unreachable { endpoints: shown.clone(), after: START_TIMEOUT }))
        };
        match first.await {
            Ok((client, docs, rev)) => match me.compose(&docs, rev) {
                Ok(live) => {
                    me.put_status(&client).await;
                    return (live, me);
                }
                Err(e) => warn!(etcd = %shown, "adapter chains in etcd are invalid at start: {e}"),
            },
            Err(e) => warn!(etcd = %shown, "cannot read the adapter chains from etcd at start: {e}"),
        }
        match me.load_cache() {
            Some(live) => (live, me),
            None => {
                warn!("no cached adapter chains either: starting with none until etcd answers");
                (LiveChains::none(), me)
            }
        }
    }

    fn cache_path(&self) -> PathBuf {
        self.cfg.state_dir.join(CACHE_FILE)
    }

    fn load_cache(&mut self) -> Option<Arc<LiveChains>> {
        let path = self.cache_path();
        let text = std::fs::read_to_string(&path).ok()?;
        let cached: CachedChains = match serde_json::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                warn!(cache = %path.display(), "ignoring an unreadable chain cache: {e}");
                return None;
            }
        };
        let live = ChainSet::from_yaml(&cached.yaml).map_err(|e| e.to_string()).and_then(|set| {
            LiveChains::new(set, format!("cache {} (etcd revision {})", path.display(), cached.revision))
                .map_err(|e| e.to_string())
        });
        match live {
            Ok(live) => {
                warn!(cache = %path.display(), revision = cached.revision, "etcd unreachable: using the last-known-good adapter chains from the cache");
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
    async fn list(&self, client: &Client) -> Result<(Docs, i64), RegistryError> {
        let prefix = chains_prefix(&self.cfg.prefix);
        let rsp =
            call("get", &prefix, client.clone().get(prefix.as_str(), Some(GetOptions::new().with_prefix()))).await?;
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
        let scope: Scope = key.strip_prefix(&chains_prefix(&self.cfg.prefix))?.parse().ok()?;
        scope.matches(&self.cfg.node, &self.cfg.labels).then_some(scope)
    }

    /// Merges and validates `docs` (etcd's view at `rev`); on success records the apply and
    /// returns the new chains, on failure records the error and keeps the old ones.
    fn compose(&mut self, docs: &Docs, rev: i64) -> Result<Arc<LiveChains>, String> {
        let scopes: BTreeMap<String, i64> = docs.iter().map(|(s, d)| (s.to_string(), d.mod_revision)).collect();
        let result = merge(docs).and_then(|(set, text)| {
            let live = LiveChains::new(set, format!("etcd revision {rev}")).map_err(|e| e.to_string())?;
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
                let cached = CachedChains {
                    node: self.cfg.node.clone(),
                    revision: rev,
                    scopes,
                    yaml: text.clone(),
                    written_at: unix_now(),
                };
                self.write_cache(&cached);
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

    fn write_cache(&self, cached: &CachedChains) {
        let path = self.cache_path();
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_string_pretty(cached).expect("the cache serializes");
        let written = std::fs::create_dir_all(&self.cfg.state_dir)
            .and_then(|_| std::fs::write(&tmp, json))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            warn!(cache = %path.display(), "cannot write the chain cache: {e}");
        }
    }

    async fn put_status(&self, client: &Client) {
        let key = status_key(&self.cfg.prefix, &self.cfg.node);
        let value = serde_json::to_string(&self.status).expect("a status serializes");
        if let Err(e) = call("put", &key, client.clone().put(key.as_str(), value, None)).await {
            warn!("recording the chain status: {e}");
        }
    }

    /// Applies `docs` if they differ from what runs; publishes on `tx` and records the status.
    async fn apply(&mut self, client: &Client, docs: &Docs, rev: i64, tx: &watch::Sender<Arc<LiveChains>>) {
        let before = self.applied.clone();
        match self.compose(docs, rev) {
            Ok(live) => {
                if before != self.applied {
                    info!(revision = rev, scopes = ?self.status.scopes, endpoints = live.set.endpoints().len(), "adapter chains applied from etcd");
                    tx.send_replace(live);
                } else {
                    debug!(revision = rev, "adapter chains from etcd unchanged");
                }
            }
            Err(e) => warn!(revision = rev, "refusing the adapter chains in etcd, keeping the last good ones:\n{e}"),
        }
        self.put_status(client).await;
    }

    /// Follows this node's scopes until `shutdown`, publishing each valid new merge on `tx`.
    pub async fn run(mut self, tx: watch::Sender<Arc<LiveChains>>, shutdown: CancellationToken) {
        let shown = self.cfg.endpoints.join(",");
        let mut backoff = Backoff::new();
        loop {
            let outcome = tokio::select! {
                r = self.follow(&tx, &mut backoff) => r,
                _ = shutdown.cancelled() => return,
            };
            match outcome {
                Ok(why) => warn!(etcd = %shown, "chain watch ended: {why}; listing again"),
                Err(e) => warn!(etcd = %shown, "chain watch: {e}; retrying (keeping the running chains)"),
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
    ) -> Result<String, RegistryError> {
        let client = connect(&self.cfg.endpoints).await?;
        let (mut docs, rev) = self.list(&client).await?;
        self.apply(&client, &docs, rev, tx).await;
        backoff.reset();
        let prefix = chains_prefix(&self.cfg.prefix);
        let options = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
        let mut stream = call("watch", &prefix, client.clone().watch(prefix.as_str(), Some(options))).await?;
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok("etcd ended the watch stream".into()),
                Err(e) => return Ok(format!("watch stream: {}", describe(&e))),
            };
            if msg.canceled() {
                return Ok(format!("etcd cancelled the watch: {}", msg.cancel_reason()));
            }
            let mut relevant = false;
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let Some(scope) = self.scope_of(kv.key()) else { continue };
                relevant = true;
                match ev.event_type() {
                    EventType::Put => {
                        let text = String::from_utf8_lossy(kv.value()).into_owned();
                        docs.insert(scope, ScopeDoc { text, mod_revision: kv.mod_revision() });
                    }
                    EventType::Delete => {
                        docs.remove(&scope);
                    }
                }
            }
            if relevant {
                let rev = msg.header().map_or(0, |h| h.revision());
                self.apply(&client, &docs, rev, tx).await;
            }
        }
    }
}

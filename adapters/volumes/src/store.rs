//! Where portable volumes live, and who may move one: the records and locks, in etcd
//! ([`EtcdStore`]) or in memory ([`MemStore`], a test double for the in-process tests, where
//! no etcd runs).
//!
//! Keys, under `--etcd-prefix` (default `/busbar`):
//!
//! | key | value | lifetime |
//! | --- | --- | --- |
//! | `<prefix>/volumes/<name>` | a [`Record`]: `{"name", "node", "driver", "options", "labels", "created_at", "moved_at", "moves", "stale"}` | from the volume's create to its `volume rm` |
//! | `<prefix>/volume-locks/<name>` | a [`Holder`]: `{"token", "node", "request_id", "since"}` | under a lease (`--lock-ttl`), while a container create that mounts the volume is in flight |
//!
//! Every change of a record is a compare-and-swap on its mod revision, and a lock is taken by
//! creating its key only if it does not exist, in one etcd transaction each: of two adapters
//! (or two hooks of one) racing for a volume, exactly one wins.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_etcd::client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use busbar_etcd::error::call;
use busbar_etcd::EtcdError;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Where one portable volume is: the one node that holds its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// The node that holds the data.
    pub node: String,
    #[serde(default)]
    pub driver: String,
    /// The driver's options, given again when the volume is made on another node.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: u64,
    /// Unix seconds of the last move, 0 before the first.
    #[serde(default)]
    pub moved_at: u64,
    /// How many times the data moved.
    #[serde(default)]
    pub moves: u64,
    /// Nodes that may still hold an old copy (its removal failed after a move): removed at
    /// the next move there, or at `volume rm`. Never served: only `node` is.
    #[serde(default)]
    pub stale: Vec<String>,
}

/// A record as read, with the etcd revision a compare-and-swap needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub record: Record,
    pub revision: i64,
}

/// Who holds a volume's lock: a container create in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Unique to this holding.
    pub token: String,
    /// The node the create runs on.
    pub node: String,
    /// The create's request id (`X-Request-Id`): its post-hook releases the lock.
    #[serde(default)]
    pub request_id: String,
    /// Unix seconds.
    #[serde(default)]
    pub since: u64,
}

/// A lock held: what renewing and releasing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub name: String,
    pub token: String,
    /// The etcd lease the lock key lives under (0 in memory).
    pub lease: i64,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("etcd: {key}: not a record of busbar-volumes: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The records and locks (see the module docs). Every method is one etcd call or
/// transaction, under busbar's etcd call timeout.
pub trait Store: Send + Sync + 'static {
    fn get(&self, name: &str)
        -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;

    fn list(&self) -> impl Future<Output = Result<Vec<Record>, StoreError>> + Send;

    /// Writes `record` if its volume has none; else the record there is (`Some`).
    fn create(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;

    /// Replaces the record if it is still at `revision`; false if it changed.
    fn update(
        &self,
        record: &Record,
        revision: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes the record if it is still at `revision`; false if it changed.
    fn delete(
        &self,
        name: &str,
        revision: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes the volume's lock for `ttl` (renewed by [`Store::renew`]) if no one holds it;
    /// else who does.
    fn lock(
        &self,
        name: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> impl Future<Output = Result<Result<Held, Holder>, StoreError>> + Send;

    /// Extends a held lock by its ttl again.
    fn renew(&self, held: &Held) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Releases the lock if `is_ours` says its holder is: a held lock's token, or a
    /// post-hook's request id and node.
    fn unlock(
        &self,
        name: &str,
        is_ours: impl Fn(&Holder) -> bool + Send,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The store in etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl EtcdStore {
    /// Records under `<prefix>/volumes/`, locks under `<prefix>/volume-locks/`.
    pub fn new(client: Client, prefix: &str) -> EtcdStore {
        EtcdStore {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    fn record_key(&self, name: &str) -> String {
        format!("{}/volumes/{name}", self.prefix)
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}/volume-locks/{name}", self.prefix)
    }
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

impl Store for EtcdStore {
    async fn get(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        let key = self.record_key(name);
        let found = call("get", &key, self.client.get(key.as_str(), None)).await?;
        match found.kvs().first() {
            Some(kv) => Ok(Some(Versioned {
                record: parse(&key, kv.value())?,
                revision: kv.mod_revision(),
            })),
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<Record>, StoreError> {
        let key = format!("{}/volumes/", self.prefix);
        let found = call(
            "list",
            &key,
            self.client
                .get(key.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut records = vec![];
        for kv in found.kvs() {
            match parse(&key, kv.value()) {
                Ok(r) => records.push(r),
                Err(e) => tracing::warn!(error = %e, "skipping a record"),
            }
        }
        Ok(records)
    }

    async fn create(&self, record: &Record) -> Result<Option<Versioned>, StoreError> {
        let key = self.record_key(&record.name);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), json(record), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let done = call("create", &key, self.client.txn(txn)).await?;
        if done.succeeded() {
            return Ok(None);
        }
        for op in done.op_responses() {
            if let busbar_etcd::client::TxnOpResponse::Get(found) = op {
                if let Some(kv) = found.kvs().first() {
                    return Ok(Some(Versioned {
                        record: parse(&key, kv.value())?,
                        revision: kv.mod_revision(),
                    }));
                }
            }
        }
        // Deleted between the compare and the get of the same transaction cannot happen;
        // answer as if it had been created by someone else an instant before.
        Ok(None)
    }

    async fn update(&self, record: &Record, revision: i64) -> Result<bool, StoreError> {
        let key = self.record_key(&record.name);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(key.as_str(), json(record), None)]);
        Ok(call("update", &key, self.client.txn(txn))
            .await?
            .succeeded())
    }

    async fn delete(&self, name: &str, revision: i64) -> Result<bool, StoreError> {
        let key = self.record_key(name);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        Ok(call("delete", &key, self.client.txn(txn))
            .await?
            .succeeded())
    }

    async fn lock(
        &self,
        name: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Result<Held, Holder>, StoreError> {
        let key = self.lock_key(name);
        // Held: say by whom without granting a lease (a waiter asks ten times a second).
        let found = call("get", &key, self.client.get(key.as_str(), None)).await?;
        if let Some(kv) = found.kvs().first() {
            return Ok(Err(parse(&key, kv.value())?));
        }
        let lease = call(
            "lease",
            &key,
            self.client.lease_grant(ttl.as_secs().max(1) as i64, None),
        )
        .await?
        .id();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                json(holder),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let done = call("lock", &key, self.client.txn(txn)).await?;
        if done.succeeded() {
            return Ok(Ok(Held {
                name: name.to_owned(),
                token: holder.token.clone(),
                lease,
            }));
        }
        // Not ours: the lease is of no use.
        let _ = call("revoke", &key, self.client.lease_revoke(lease)).await;
        for op in done.op_responses() {
            if let busbar_etcd::client::TxnOpResponse::Get(found) = op {
                if let Some(kv) = found.kvs().first() {
                    return Ok(Err(parse(&key, kv.value())?));
                }
            }
        }
        Ok(Err(Holder {
            token: String::new(),
            node: String::new(),
            request_id: String::new(),
            since: 0,
        }))
    }

    async fn renew(&self, held: &Held) -> Result<(), StoreError> {
        let key = self.lock_key(&held.name);
        // Opening the keep-alive stream renews the lease once (and reads etcd's answer);
        // renewals are a few seconds apart, so a stream per renewal is cheap enough.
        call("renew", &key, self.client.lease_keep_alive(held.lease)).await?;
        Ok(())
    }

    async fn unlock(
        &self,
        name: &str,
        is_ours: impl Fn(&Holder) -> bool + Send,
    ) -> Result<(), StoreError> {
        let key = self.lock_key(name);
        let found = call("get", &key, self.client.get(key.as_str(), None)).await?;
        let Some(kv) = found.kvs().first() else {
            return Ok(());
        };
        let holder: Holder = parse(&key, kv.value())?;
        if !is_ours(&holder) {
            return Ok(());
        }
        let (revision, lease) = (kv.mod_revision(), kv.lease());
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        call("unlock", &key, self.client.txn(txn)).await?;
        if lease != 0 {
            let _ = call("revoke", &key, self.client.lease_revoke(lease)).await;
        }
        Ok(())
    }
}

/// The store in memory: a **test double** of [`EtcdStore`] for the in-process tests (no etcd
/// runs there), with the same compare-and-swap and lock semantics; lock expiry follows
/// tokio's clock. Clones share one store, as adapters share one etcd.
#[derive(Clone, Default)]
pub struct MemStore {
    // A std mutex: every section is a few map operations, never held across an await.
    inner: Arc<Mutex<Mem>>,
}

#[derive(Default)]
struct Mem {
    revision: i64,
    records: BTreeMap<String, Versioned>,
    locks: BTreeMap<String, (Holder, Instant, Duration)>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Mem) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Who holds `name`'s lock now (an expired lock is no one's).
    pub fn holder(&self, name: &str) -> Option<Holder> {
        self.with(|m| {
            m.locks
                .get(name)
                .filter(|(_, until, _)| *until > Instant::now())
                .map(|(h, _, _)| h.clone())
        })
    }
}

impl Store for MemStore {
    async fn get(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.with(|m| m.records.get(name).cloned()))
    }

    async fn list(&self) -> Result<Vec<Record>, StoreError> {
        Ok(self.with(|m| m.records.values().map(|v| v.record.clone()).collect()))
    }

    async fn create(&self, record: &Record) -> Result<Option<Versioned>, StoreError> {
        Ok(self.with(|m| {
            if let Some(v) = m.records.get(&record.name) {
                return Some(v.clone());
            }
            m.revision += 1;
            let v = Versioned {
                record: record.clone(),
                revision: m.revision,
            };
            m.records.insert(record.name.clone(), v);
            None
        }))
    }

    async fn update(&self, record: &Record, revision: i64) -> Result<bool, StoreError> {
        Ok(self.with(|m| match m.records.get(&record.name) {
            Some(v) if v.revision == revision => {
                m.revision += 1;
                let v = Versioned {
                    record: record.clone(),
                    revision: m.revision,
                };
                m.records.insert(record.name.clone(), v);
                true
            }
            _ => false,
        }))
    }

    async fn delete(&self, name: &str, revision: i64) -> Result<bool, StoreError> {
        Ok(self.with(|m| match m.records.get(name) {
            Some(v) if v.revision == revision => {
                m.records.remove(name);
                true
            }
            _ => false,
        }))
    }

    async fn lock(
        &self,
        name: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Result<Held, Holder>, StoreError> {
        Ok(self.with(|m| {
            let now = Instant::now();
            if let Some((h, until, _)) = m.locks.get(name) {
                if *until > now {
                    return Err(h.clone());
                }
            }
            m.locks
                .insert(name.to_owned(), (holder.clone(), now + ttl, ttl));
            Ok(Held {
                name: name.to_owned(),
                token: holder.token.clone(),
                lease: 0,
            })
        }))
    }

    async fn renew(&self, held: &Held) -> Result<(), StoreError> {
        self.with(|m| {
            if let Some((h, until, ttl)) = m.locks.get_mut(&held.name) {
                if h.token == held.token {
                    *until = Instant::now() + *ttl;
                }
            }
        });
        Ok(())
    }

    async fn unlock(
        &self,
        name: &str,
        is_ours: impl Fn(&Holder) -> bool + Send,
    ) -> Result<(), StoreError> {
        self.with(|m| {
            if m.locks.get(name).is_some_and(|(h, _, _)| is_ours(h)) {
                m.locks.remove(name);
            }
        });
        Ok(())
    }
}

//! The network's state in etcd, under its own prefix (`--etcd-prefix`, default `/busbar-net`):
//!
//! | key | value | lifetime |
//! | --- | --- | --- |
//! | `P/pool` | the pool, `10.232.0.0/16` | kept; every adapter must be started with the same `--pool` |
//! | `P/hosts/index/NODE` | the node's index (its gateway is `pool + index`) | kept, so a node keeps its gateway |
//! | `P/hosts/live/NODE` | `{"underlay", "index"}`: where the node's VXLAN port listens | the node adapter's lease |
//! | `P/addrs/IP` | `{"name", "node", "claim", "since"}`: who holds the address | the holding node adapter's lease |
//! | `P/names/NAME` | the address the container name had last | kept: re-created, the name gets it again |
//! | `P/dns/NAME` | `{"ip", "node"}`: a running container's name, for DNS | the node adapter's lease |
//! | `P/cursor` | where the next allocation starts looking | kept (a hint) |
//!
//! Every key that says a node has something lives under that node adapter's lease
//! ([`Lease`]): when the adapter dies and stays dead past the TTL, its addresses, names and
//! overlay membership go. A restarted adapter takes its lease back (its id is kept in
//! `--state-dir`) when the lease is still alive, and otherwise claims its containers'
//! addresses again ([`Store::reattach`]).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_etcd::client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use busbar_etcd::error::{call, EtcdError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::pool::{Pool, MAX_NODES};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/busbar-net";

/// How many times an allocation retries when another node took the address it chose.
const CLAIM_ATTEMPTS: usize = 64;

/// How long a create waits for the address its name had to be released by a container of the
/// same name on another node (being removed as it is re-created here).
const PREVIOUS_HOLDER_WAIT: Duration = Duration::from_secs(3);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("the address pool {pool} is full")]
    Full { pool: Pool },
    #[error("the cluster's pool is {stored} (in etcd at {key}), not --pool {given}")]
    PoolMismatch {
        stored: String,
        given: Pool,
        key: String,
    },
    #[error("no node index is free: a pool serves at most {MAX_NODES} nodes")]
    NoIndex,
    #[error("too many nodes raced for addresses; gave up after {CLAIM_ATTEMPTS} attempts")]
    Contention,
    #[error("etcd holds {key} = {value:?}, which is not what busbar-network writes there")]
    Garbage { key: String, value: String },
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The container's name (without `/`), empty for an unnamed create.
    pub name: String,
    pub node: String,
    /// The id of the claim, also in the container's `busbar.net.claim` label.
    pub claim: String,
    /// Unix seconds when it was claimed.
    pub since: u64,
}

/// A node's overlay endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub underlay: Ipv4Addr,
    pub index: u8,
}

/// A name in DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsEntry {
    pub ip: Ipv4Addr,
    pub node: String,
}

/// The network's keys in etcd, for one node.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
    pub pool: Pool,
    pub node: String,
    lease: Arc<AtomicI64>,
}

impl Store {
    pub fn new(client: Client, prefix: &str, pool: Pool, node: &str) -> Store {
        Store {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
            pool,
            node: node.to_owned(),
            lease: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// The lease the node's keys live under (0 before [`Lease::start`]).
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }

    fn put_opts(&self) -> Option<PutOptions> {
        Some(PutOptions::new().with_lease(self.lease_id()))
    }

    /// Writes the pool when etcd has none; refuses a different one.
    pub async fn check_pool(&self) -> Result<(), StoreError> {
        let key = self.key("pool");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), self.pool.to_string(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let rsp = call("txn", &key, self.client.txn(txn)).await?;
        if rsp.succeeded() {
            info!(pool = %self.pool, "the cluster's address pool is now set in etcd");
            return Ok(());
        }
        let stored = self.get_text(&key).await?.unwrap_or_default();
        if stored != self.pool.to_string() {
            return Err(StoreError::PoolMismatch {
                stored,
                given: self.pool,
                key,
            });
        }
        Ok(())
    }

    async fn get_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        let rsp = call("get", key, self.client.get(key, None)).await?;
        Ok(rsp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>, StoreError> {
        let rsp = call("get", key, self.client.get(key, None)).await?;
        let Some(kv) = rsp.kvs().first() else {
            return Ok(None);
        };
        let value = serde_json::from_slice(kv.value()).map_err(|_| StoreError::Garbage {
            key: key.to_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
        })?;
        Ok(Some((value, kv.mod_revision())))
    }

    /// Every key under `P/rest` with its value.
    async fn list(&self, rest: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self.list_at(rest).await?.0)
    }

    /// Every key under `P/rest` with its value, and the revision they were read at.
    async fn list_at(&self, rest: &str) -> Result<(Vec<(String, Vec<u8>)>, i64), StoreError> {
        let key = self.key(rest);
        let rsp = call(
            "get",
            &key,
            self.client
                .get(key.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = rsp.header().map_or(0, |h| h.revision());
        let kvs = rsp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key()[key.len()..]).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok((kvs, revision))
    }

    /// The JSON values under `P/rest` by the rest of their key (values that do not parse are
    /// left out), and the revision they were read at.
    async fn entries<T: serde::de::DeserializeOwned>(
        &self,
        rest: &str,
    ) -> Result<(HashMap<String, T>, i64), StoreError> {
        let (kvs, revision) = self.list_at(rest).await?;
        let parsed = kvs
            .into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::from_slice(&v).ok()?)))
            .collect();
        Ok((parsed, revision))
    }

    /// This node's index: the one it had, or the smallest free one.
    pub async fn node_index(&self) -> Result<u8, StoreError> {
        let key = self.key(&format!("hosts/index/{}", self.node));
        for _ in 0..CLAIM_ATTEMPTS {
            if let Some(text) = self.get_text(&key).await? {
                return text.parse().map_err(|_| StoreError::Garbage {
                    key: key.clone(),
                    value: text,
                });
            }
            let taken: HashSet<u8> = self
                .list("hosts/index/")
                .await?
                .iter()
                .filter_map(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                .collect();
            let free = (1..=MAX_NODES)
                .find(|i| !taken.contains(i))
                .ok_or(StoreError::NoIndex)?;
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), free.to_string(), None)]);
            if call("txn", &key, self.client.txn(txn)).await?.succeeded() {
                // Two nodes may have picked the same free index: the later one moves on.
                let same: Vec<String> = self
                    .list("hosts/index/")
                    .await?
                    .into_iter()
                    .filter(|(n, v)| n != &self.node && v == free.to_string().as_bytes())
                    .map(|(n, _)| n)
                    .collect();
                if same.is_empty() {
                    return Ok(free);
                }
                let _ = call("delete", &key, self.client.delete(key.clone(), None)).await;
                tokio::time::sleep(Duration::from_millis(50 * (1 + free as u64 % 7))).await;
            }
        }
        Err(StoreError::Contention)
    }

    /// Says where this node's VXLAN port is (under the lease).
    pub async fn announce_host(&self, entry: &HostEntry) -> Result<(), StoreError> {
        let key = self.key(&format!("hosts/live/{}", self.node));
        let value = serde_json::to_string(entry).expect("a host entry serializes");
        call(
            "put",
            &key,
            self.client.put(key.clone(), value, self.put_opts()),
        )
        .await?;
        Ok(())
    }

    /// The live nodes' overlay endpoints, with the revision they were read at.
    pub async fn hosts(&self) -> Result<(HashMap<String, HostEntry>, i64), StoreError> {
        self.entries("hosts/live/").await
    }

    /// An address for a new container: the one its name had when that is free (waiting a
    /// little when a container of the same name on another node still holds it), else the
    /// next free one from the cursor. Written atomically: two nodes never get one address.
    pub async fn claim(&self, name: Option<&str>, claim: &str) -> Result<Ipv4Addr, StoreError> {
        let holder = Holder {
            name: name.unwrap_or("").to_owned(),
            node: self.node.clone(),
            claim: claim.to_owned(),
            since: busbar_runtime::unix_now(),
        };
        if let Some(name) = name {
            if let Some(ip) = self.remembered(name).await? {
                if self.take(ip, &holder, false).await? {
                    return Ok(ip);
                }
                if self.wait_for_previous(ip, name).await? && self.take(ip, &holder, false).await? {
                    return Ok(ip);
                }
            }
        }
        let spread = u32::from(claim.as_bytes().first().copied().unwrap_or(0) % 16);
        for _ in 0..CLAIM_ATTEMPTS {
            let used: HashSet<Ipv4Addr> = self
                .list("addrs/")
                .await?
                .iter()
                .filter_map(|(ip, _)| ip.parse().ok())
                .collect();
            let remembered: HashSet<Ipv4Addr> = self
                .list("names/")
                .await?
                .iter()
                .filter(|(n, _)| Some(n.as_str()) != name)
                .filter_map(|(_, ip)| std::str::from_utf8(ip).ok()?.parse().ok())
                .collect();
            let cursor = self
                .get_text(&self.key("cursor"))
                .await?
                .and_then(|c| c.parse::<u32>().ok())
                .unwrap_or(0);
            let ip = self
                .pool
                .next_free(cursor + spread, &used, &remembered)
                .ok_or(StoreError::Full { pool: self.pool })?;
            if self.take(ip, &holder, true).await? {
                return Ok(ip);
            }
        }
        Err(StoreError::Contention)
    }

    /// The address `name` had last.
    pub async fn remembered(&self, name: &str) -> Result<Option<Ipv4Addr>, StoreError> {
        let ip = self.get_text(&self.key(&format!("names/{name}"))).await?;
        Ok(ip
            .and_then(|ip| ip.parse().ok())
            .filter(|ip| self.pool.allocatable(*ip)))
    }

    /// Waits (at most [`PREVIOUS_HOLDER_WAIT`]) while `ip` is held by a container called
    /// `name` on another node; true when it became free.
    async fn wait_for_previous(&self, ip: Ipv4Addr, name: &str) -> Result<bool, StoreError> {
        let key = self.key(&format!("addrs/{ip}"));
        let deadline = tokio::time::Instant::now() + PREVIOUS_HOLDER_WAIT;
        loop {
            match self.get_json::<Holder>(&key).await? {
                None => return Ok(true),
                Some((h, _)) if h.name != name || h.node == self.node => return Ok(false),
                Some(_) if tokio::time::Instant::now() >= deadline => return Ok(false),
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Takes `ip` for `holder` if no one holds it; remembers it for the name.
    async fn take(
        &self,
        ip: Ipv4Addr,
        holder: &Holder,
        move_cursor: bool,
    ) -> Result<bool, StoreError> {
        let key = self.key(&format!("addrs/{ip}"));
        let value = serde_json::to_string(holder).expect("a holder serializes");
        let mut ops = vec![TxnOp::put(key.clone(), value, self.put_opts())];
        if !holder.name.is_empty() {
            ops.push(TxnOp::put(
                self.key(&format!("names/{}", holder.name)),
                ip.to_string(),
                None,
            ));
        }
        if move_cursor {
            let next = self.pool.offset(ip).unwrap_or(0) + 1;
            ops.push(TxnOp::put(self.key("cursor"), next.to_string(), None));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then(ops);
        Ok(call("txn", &key, self.client.txn(txn)).await?.succeeded())
    }

    /// Who holds `ip`.
    pub async fn holder(&self, ip: Ipv4Addr) -> Result<Option<Holder>, StoreError> {
        Ok(self
            .get_json(&self.key(&format!("addrs/{ip}")))
            .await?
            .map(|(h, _)| h))
    }

    /// Frees `ip` if `claim` still holds it. True when it did.
    pub async fn release(&self, ip: Ipv4Addr, claim: &str) -> Result<bool, StoreError> {
        let key = self.key(&format!("addrs/{ip}"));
        let Some((h, rev)) = self.get_json::<Holder>(&key).await? else {
            return Ok(false);
        };
        if h.claim != claim {
            return Ok(false);
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key.clone(), None)]);
        Ok(call("txn", &key, self.client.txn(txn)).await?.succeeded())
    }

    /// Holds `ip` for `holder` under this node's current lease: after a restart or a lost
    /// lease. `Ok(false)`: someone else holds it now (an address conflict, logged by the caller).
    pub async fn reattach(&self, ip: Ipv4Addr, holder: &Holder) -> Result<bool, StoreError> {
        let key = self.key(&format!("addrs/{ip}"));
        match self.get_json::<Holder>(&key).await? {
            None => self.take(ip, holder, false).await,
            Some((h, rev)) if h.claim == holder.claim => {
                let value = serde_json::to_string(&h).expect("a holder serializes");
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(key.clone(), value, self.put_opts())]);
                Ok(call("txn", &key, self.client.txn(txn)).await?.succeeded())
            }
            Some(_) => Ok(false),
        }
    }

    /// The addresses this node holds.
    pub async fn held_here(&self) -> Result<Vec<(Ipv4Addr, Holder)>, StoreError> {
        Ok(self
            .list("addrs/")
            .await?
            .into_iter()
            .filter_map(|(ip, v)| Some((ip.parse().ok()?, serde_json::from_slice(&v).ok()?)))
            .filter(|(_, h): &(Ipv4Addr, Holder)| h.node == self.node)
            .collect())
    }

    /// Puts `name` -> `ip` in DNS (under the lease).
    pub async fn register_name(&self, name: &str, ip: Ipv4Addr) -> Result<(), StoreError> {
        let key = self.key(&format!("dns/{name}"));
        let entry = DnsEntry {
            ip,
            node: self.node.clone(),
        };
        let value = serde_json::to_string(&entry).expect("a DNS entry serializes");
        call(
            "put",
            &key,
            self.client.put(key.clone(), value, self.put_opts()),
        )
        .await?;
        Ok(())
    }

    /// Takes `name` out of DNS if it still says `ip` on this node.
    pub async fn unregister_name(&self, name: &str, ip: Ipv4Addr) -> Result<(), StoreError> {
        let key = self.key(&format!("dns/{name}"));
        let Some((entry, rev)) = self.get_json::<DnsEntry>(&key).await? else {
            return Ok(());
        };
        if entry.ip != ip || entry.node != self.node {
            return Ok(());
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key.clone(), None)]);
        call("txn", &key, self.client.txn(txn)).await?;
        Ok(())
    }

    /// The names in DNS, with the revision they were read at.
    pub async fn names(&self) -> Result<(HashMap<String, DnsEntry>, i64), StoreError> {
        self.entries("dns/").await
    }

    /// Removes every key of the prefix (tests and `busbar-network reset`).
    pub async fn wipe(&self) -> Result<(), StoreError> {
        let key = self.key("");
        call(
            "delete",
            &key,
            self.client
                .delete(key.clone(), Some(DeleteOptions::new().with_prefix())),
        )
        .await?;
        Ok(())
    }
}

/// The node adapter's lease: granted (or taken back from `--state-dir`), kept alive every
/// third of its TTL, and granted anew when etcd lost it; `renewed` then says so, for the
/// owner to claim its keys again.
pub struct Lease {
    pub renewed: watch::Receiver<u64>,
}

impl Lease {
    /// Starts keeping `store`'s lease alive until `shutdown`; returns once it holds one.
    pub async fn start(
        store: &Store,
        ttl: Duration,
        state_file: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> Result<Lease, StoreError> {
        let client = store.client.clone();
        let ttl_s = ttl.as_secs().max(2) as i64;
        let mut id = 0;
        if let Some(old) = state_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse::<i64>().ok())
        {
            let alive = call("lease", "keepalive", client.lease_keep_alive(old)).await;
            if alive.is_ok() {
                info!(lease = old, "took back the lease of the previous run");
                id = old;
            }
        }
        if id == 0 {
            id = grant(&client, ttl_s, state_file.as_ref()).await?;
        }
        store.lease.store(id, Ordering::SeqCst);
        let (tx, renewed) = watch::channel(0u64);
        let lease = store.lease.clone();
        tokio::spawn(async move {
            let mut backoff = busbar_runtime::backoff::Backoff::retry();
            loop {
                let id = lease.load(Ordering::SeqCst);
                let kept = keep(&client, id, ttl, &shutdown).await;
                if shutdown.is_cancelled() {
                    return;
                }
                match kept {
                    Keep::Lost => {
                        warn!(lease = id, "the lease is gone (expired in etcd); granting a new one and claiming this node's keys again");
                        match grant(&client, ttl_s, state_file.as_ref()).await {
                            Ok(new) => {
                                lease.store(new, Ordering::SeqCst);
                                tx.send_modify(|n| *n += 1);
                                backoff.reset();
                            }
                            Err(e) => {
                                warn!(error = %e, "granting a lease failed; retrying");
                                if !backoff.wait(&shutdown).await {
                                    return;
                                }
                            }
                        }
                    }
                    Keep::Broken(e) => {
                        warn!(error = %e, "keeping the lease alive failed; retrying");
                        if !backoff.wait(&shutdown).await {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Lease { renewed })
    }
}

async fn grant(client: &Client, ttl: i64, state_file: Option<&PathBuf>) -> Result<i64, StoreError> {
    let id = call("lease", "grant", client.lease_grant(ttl, None))
        .await?
        .id();
    if let Some(f) = state_file {
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(f, id.to_string()) {
            warn!(file = %f.display(), error = %e, "cannot keep the lease id; a restart will claim its addresses again");
        }
    }
    Ok(id)
}

enum Keep {
    Lost,
    Broken(String),
}

async fn keep(client: &Client, id: i64, ttl: Duration, shutdown: &CancellationToken) -> Keep {
    let (keeper, mut stream) = match call("lease", "keepalive", client.lease_keep_alive(id)).await {
        Ok(pair) => pair,
        Err(e) if is_not_found(&e) => return Keep::Lost,
        Err(e) => return Keep::Broken(e.to_string()),
    };
    let every = ttl / 3;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Keep::Broken("shutting down".into()),
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = keeper.keep_alive().await {
            return Keep::Broken(e.to_string());
        }
        match tokio::time::timeout(ttl, stream.message()).await {
            Ok(Ok(Some(rsp))) if rsp.ttl() > 0 => {}
            Ok(Ok(Some(_))) => return Keep::Lost,
            Ok(Ok(None)) => return Keep::Broken("etcd ended the keep-alive stream".into()),
            Ok(Err(e)) => return Keep::Broken(e.to_string()),
            Err(_) => return Keep::Broken(format!("no keep-alive answer within {ttl:?}")),
        }
    }
}

fn is_not_found(e: &EtcdError) -> bool {
    matches!(
        e,
        EtcdError::Call {
            source: busbar_etcd::client::Error::LeaseNotFound(_),
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values are documented (deploy/cross-host.md) and read by operators with etcdctl.
    #[test]
    fn the_values_in_etcd_keep_their_documented_shape() {
        let h = Holder {
            name: "web".into(),
            node: "node1".into(),
            claim: "c1".into(),
            since: 7,
        };
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            serde_json::json!({"name": "web", "node": "node1", "claim": "c1", "since": 7})
        );
        let host = HostEntry {
            underlay: Ipv4Addr::new(10, 0, 0, 5),
            index: 2,
        };
        assert_eq!(
            serde_json::to_string(&host).unwrap(),
            r#"{"underlay":"10.0.0.5","index":2}"#
        );
        let dns = DnsEntry {
            ip: Ipv4Addr::new(10, 232, 1, 1),
            node: "node1".into(),
        };
        assert_eq!(
            serde_json::to_string(&dns).unwrap(),
            r#"{"ip":"10.232.1.1","node":"node1"}"#
        );
    }
}

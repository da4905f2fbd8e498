//! What runs on the node beside the hooks:
//!
//! - the **event loop**: the engine's container events (for labelled containers) put a started
//!   container's name into DNS and announce it, take a stopped one's out, and free a removed
//!   one's address, whoever started, stopped or removed it (`docker rm`, `run --rm`, a
//!   restart policy, a crash). Each (re)connection to the engine starts with a
//!   **reconciliation**: every labelled container of the node holds its address under this
//!   adapter's lease (after a restart or a lost lease), running ones are in DNS, and
//!   addresses held for this node by no container (a create that never reached the engine)
//!   are freed after a minute.
//! - the **mirrors** of etcd: the live nodes (the overlay's flood list follows them) and the
//!   names (what the DNS server answers).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use busbar_etcd::client::{EventType, GetOptions, WatchOptions};
use busbar_runtime::backoff::Backoff;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dns::Names;
use crate::docker::{Container, Docker, Event};
use crate::overlay::Overlay;
use crate::store::{DnsEntry, Holder, HostEntry, Store};

/// An address held for this node by no container is freed after this long.
const ORPHAN_AGE: u64 = 60;
/// How often the reconciliation runs besides after each reconnection.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// The node: its store, engine, gateway and overlay.
pub struct Node {
    pub store: Store,
    /// `None` in tests that run the hooks without an engine.
    pub docker: Option<Docker>,
    gateway: Ipv4Addr,
    /// `None`: no overlay on this node (tests without root).
    pub overlay: Option<Overlay>,
    /// The `arping` command line, for announcements.
    pub arping: Vec<String>,
    pub names: Names,
    /// This node's overlay endpoint, said in etcd under the lease.
    pub host: Option<HostEntry>,
}

impl Node {
    pub fn new(
        store: Store,
        docker: Option<Docker>,
        gateway: Ipv4Addr,
        overlay: Option<Overlay>,
        arping: Vec<String>,
    ) -> Node {
        Node {
            store,
            docker,
            gateway,
            overlay,
            arping,
            names: Names::default(),
            host: None,
        }
    }

    /// Says in etcd where this node's overlay port is (again after a new lease).
    pub async fn announce_host(&self) {
        if let Some(host) = &self.host {
            if let Err(e) = self.store.announce_host(host).await {
                warn!(error = %e, "announcing this node to the overlay failed");
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.store.node
    }

    /// The node's gateway on `busbar`, where its DNS server listens.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// A container started (by id or name): its name into DNS, its address announced.
    pub async fn started(&self, id: &str) {
        let Some(docker) = &self.docker else { return };
        match docker.labelled(id).await {
            Ok(Some(c)) => self.up(&c, true).await,
            Ok(None) => {}
            Err(e) => warn!(container = id, error = %e, "inspecting a started container failed"),
        }
    }

    /// A running container: its name in DNS; announced on the overlay when it has just
    /// started (`announce`), not on every reconciliation.
    async fn up(&self, c: &Container, announce: bool) {
        let Some(ip) = c.address else { return };
        if !c.running {
            return;
        }
        if announce && self.overlay.is_some() && c.pid > 0 {
            {
                if let Err(e) = crate::overlay::announce(c.pid, ip, &self.arping).await {
                    warn!(container = %c.name, %ip, error = %e, "announcing the address failed; peers find it within ~30 s");
                }
            }
        }
        let known = {
            let names = self.names.read().unwrap_or_else(|e| e.into_inner());
            names.get(&c.name.to_ascii_lowercase()) == Some(&ip)
        };
        if !c.name.is_empty() && (announce || !known) {
            match self.store.register_name(&c.name, ip).await {
                Ok(()) => debug!(name = %c.name, %ip, "name registered"),
                Err(e) => warn!(name = %c.name, error = %e, "registering the name failed"),
            }
        }
    }

    async fn on_event(&self, e: Event) {
        debug!(action = %e.action, name = %e.name, "container event");
        match e.action.as_str() {
            "start" | "restart" | "unpause" => self.started(&e.id).await,
            "die" | "stop" => {
                if let Some(ip) = e.address {
                    if let Err(err) = self.store.unregister_name(&e.name, ip).await {
                        warn!(name = %e.name, error = %err, "removing the name failed");
                    }
                }
            }
            "destroy" => {
                let (Some(ip), Some(claim)) = (e.address, e.claim.as_deref()) else {
                    return;
                };
                if let Err(err) = self.store.unregister_name(&e.name, ip).await {
                    warn!(name = %e.name, error = %err, "removing the name failed");
                }
                match self.store.release(ip, claim).await {
                    Ok(true) => info!(name = %e.name, %ip, "container removed; address released"),
                    Ok(false) => {}
                    Err(err) => {
                        warn!(%ip, error = %err, "releasing the address failed; the reconciliation will")
                    }
                }
            }
            _ => {}
        }
    }

    /// Puts etcd in step with the node's containers (see the module docs).
    pub async fn reconcile(&self) {
        let Some(docker) = &self.docker else { return };
        let containers = match docker.all_labelled().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "listing the containers failed; reconciling later");
                return;
            }
        };
        let mut claims = HashSet::new();
        let mut running = HashSet::new();
        for c in &containers {
            let (Some(ip), Some(claim)) = (c.address, c.claim.clone()) else {
                continue;
            };
            claims.insert(claim.clone());
            let holder = Holder {
                name: c.name.clone(),
                node: self.name().to_owned(),
                claim,
                since: busbar_runtime::unix_now(),
            };
            match self.store.reattach(ip, &holder).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(container = %c.name, %ip, "another container holds this container's address in etcd: an address conflict; re-create the container")
                }
                Err(e) => warn!(error = %e, "reconciling failed; retrying later"),
            }
            if c.running {
                running.insert(c.name.clone());
                self.up(c, false).await;
            } else if let Err(e) = self.store.unregister_name(&c.name, ip).await {
                warn!(error = %e, "removing a name failed");
            }
        }
        let now = busbar_runtime::unix_now();
        match self.store.held_here().await {
            Ok(held) => {
                for (ip, h) in held {
                    if !claims.contains(&h.claim) && now.saturating_sub(h.since) > ORPHAN_AGE {
                        if let Ok(true) = self.store.release(ip, &h.claim).await {
                            info!(%ip, name = %h.name, "freed an address no container of this node holds");
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "reconciling failed; retrying later"),
        }
        if let Ok((names, _)) = self.store.names().await {
            for (name, entry) in names {
                if entry.node == self.name() && !running.contains(&name) {
                    let _ = self.store.unregister_name(&name, entry.ip).await;
                }
            }
        }
    }

    /// The engine's events, reconnecting with backoff; a reconciliation at each connection,
    /// every [`RECONCILE_EVERY`] and whenever `renewed` says the lease was granted anew.
    pub async fn run_events(
        self: Arc<Self>,
        mut renewed: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) {
        let Some(docker) = self.docker.clone() else {
            return;
        };
        let mut backoff = Backoff::retry();
        loop {
            let (tx, mut rx) = mpsc::channel::<Event>(256);
            let d = docker.clone();
            let stream = tokio::spawn(async move { d.events(&tx).await });
            self.reconcile().await;
            let mut tick = tokio::time::interval(RECONCILE_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => { stream.abort(); return; }
                    e = rx.recv() => match e {
                        Some(e) => { backoff.reset(); self.on_event(e).await }
                        None => break,
                    },
                    _ = tick.tick() => self.reconcile().await,
                    r = renewed.changed() => {
                        if r.is_ok() {
                            self.announce_host().await;
                            self.reconcile().await;
                        }
                    }
                }
            }
            match stream.await {
                Ok(Err(e)) => warn!(error = %e, "the engine's event stream broke; reconnecting"),
                _ => debug!("the engine's event stream ended; reconnecting"),
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }
}

/// Mirrors every key under `prefix` (key without the prefix -> value) into `tx`: a full
/// read, then a watch from the next revision; read again after any failure.
pub async fn mirror(
    store: Store,
    rest: &str,
    tx: watch::Sender<HashMap<String, Vec<u8>>>,
    shutdown: CancellationToken,
) {
    let prefix = store.key(rest);
    let client = store.client().clone();
    let mut backoff = Backoff::retry();
    loop {
        let listed = tokio::time::timeout(
            busbar_etcd::error::CALL_TIMEOUT,
            client.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await;
        let rsp = match listed {
            Ok(Ok(rsp)) => rsp,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                warn!(prefix, error = %why, "reading etcd failed; retrying");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        let revision = rsp.header().map_or(0, |h| h.revision());
        let mut map: HashMap<String, Vec<u8>> = rsp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        tx.send_replace(map.clone());
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let (_watcher, mut stream) = match client.watch(prefix.clone(), Some(opts)).await {
            Ok(pair) => pair,
            Err(e) => {
                warn!(prefix, error = %e, "watching etcd failed; retrying");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = stream.message() => m,
            };
            let rsp = match msg {
                Ok(Some(rsp)) if !rsp.canceled() => rsp,
                Ok(_) => break,
                Err(e) => {
                    warn!(prefix, error = %e, "the etcd watch broke; reading again");
                    break;
                }
            };
            for ev in rsp.events() {
                let Some(kv) = ev.kv() else { continue };
                if kv.key().len() < prefix.len() {
                    continue;
                }
                let key = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
                match ev.event_type() {
                    EventType::Put => {
                        map.insert(key, kv.value().to_vec());
                    }
                    EventType::Delete => {
                        map.remove(&key);
                    }
                }
            }
            if !rsp.events().is_empty() {
                tx.send_replace(map.clone());
            }
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// Keeps the DNS names in step with `P/dns/`.
pub async fn follow_names(store: Store, names: Names, shutdown: CancellationToken) {
    let (tx, mut rx) = watch::channel(HashMap::new());
    tokio::spawn(mirror(store, "dns/", tx, shutdown.clone()));
    while rx.changed().await.is_ok() {
        let map: HashMap<String, Ipv4Addr> = rx
            .borrow_and_update()
            .iter()
            .filter_map(|(k, v)| {
                let e: DnsEntry = serde_json::from_slice(v).ok()?;
                Some((k.to_ascii_lowercase(), e.ip))
            })
            .collect();
        *names.write().unwrap_or_else(|e| e.into_inner()) = map;
    }
}

/// Keeps the overlay's flood list in step with `P/hosts/live/` (every node but this one).
pub async fn follow_hosts(store: Store, overlay: Overlay, shutdown: CancellationToken) {
    let (tx, mut rx) = watch::channel(HashMap::new());
    tokio::spawn(mirror(store.clone(), "hosts/live/", tx, shutdown.clone()));
    let mut backoff = Backoff::retry();
    while rx.changed().await.is_ok() {
        loop {
            let peers: BTreeSet<Ipv4Addr> = rx
                .borrow_and_update()
                .iter()
                .filter(|(node, _)| **node != store.node)
                .filter_map(|(_, v)| serde_json::from_slice::<HostEntry>(v).ok())
                .map(|h| h.underlay)
                .filter(|ip| *ip != overlay.underlay)
                .collect();
            match overlay.set_peers(&peers).await {
                Ok(()) => {
                    info!(peers = ?peers, "overlay peers set");
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "setting the overlay's peers failed; retrying");
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                }
            }
        }
    }
}

//! The etcd node registry and cluster-wide container names, against a real etcd: the agent's
//! registration (`busbar_etcd::registry`) and the gateway's node watch and name reservations
//! (`busbar_gateway::names`, `busbar_etcd::members`), driven as libraries from the test. Each test works under its
//! own key prefix, so they share the bed's etcd and run in parallel.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use busbar_etcd::client::{Client, KeyValue, LeaseTimeToLiveOptions, PutOptions};
use busbar_etcd::conn::{connect, connect_lazy};
use busbar_etcd::keys::node_key;
use busbar_etcd::members::{spawn_watch, NodeMap};
use busbar_etcd::registry::{spawn_registration, NodeEntry};
use busbar_etcd::EtcdConnection;
use busbar_gateway::names::etcd::{
    list_names, release_name, release_reservation, reserve_name, set_name_owner,
    ReservationError as NameError,
};
use support::{Process, TempDir};
use testbed::{free_port, output_with_timeout, unique_name, Testbed, TestbedSpec};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(2);

fn etcd_url() -> String {
    let bed = Testbed::shared_with(TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: true,
    });
    bed.etcd().expect("the bed runs an etcd").to_owned()
}

/// A key prefix of this test's own.
fn prefix() -> String {
    format!("/{}", unique_name("bbtest"))
}

fn entry(name: &str, zone: &str) -> NodeEntry {
    NodeEntry::new(
        name,
        "10.77.0.9:7443",
        BTreeMap::from([("zone".to_owned(), zone.to_owned())]),
    )
}

/// The bed's plaintext etcd at `url`, no user.
fn plain(url: String) -> EtcdConnection {
    EtcdConnection::plaintext(vec![url])
}

async fn client(url: &str) -> Client {
    connect(&plain(url.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn get(client: &Client, key: &str) -> Option<KeyValue> {
    let rsp = client.clone().get(key, None).await.expect("etcd get");
    rsp.kvs().first().cloned()
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `timeout`. Returns how
/// long it took.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if cond().await {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the published node map satisfies `cond`; panics naming `what` after `within`.
async fn seen(
    rx: &mut watch::Receiver<NodeMap>,
    within: Duration,
    what: &str,
    cond: impl FnMut(&NodeMap) -> bool,
) {
    let t0 = Instant::now();
    // Only whether it held: the borrow it returns must not outlive this line.
    let outcome = tokio::time::timeout(within, rx.wait_for(cond))
        .await
        .map(|r| r.map(drop));
    match outcome {
        Ok(Ok(())) => eprintln!("gateway saw {what} after {:?}", t0.elapsed()),
        Ok(Err(_)) => panic!("the node watch ended before {what}"),
        Err(_) => panic!(
            "the gateway did not see {what} within {within:?}; it has {:?}",
            *rx.borrow()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_lives_under_its_lease_and_goes_at_once_on_shutdown() {
    testbed::e2e!();
    let url = etcd_url();
    let (p, c) = (prefix(), client(&url).await);
    let key = node_key(&p, "node-a");
    let shutdown = CancellationToken::new();
    let task = spawn_registration(
        plain(url),
        p.clone(),
        entry("node-a", "a"),
        TTL,
        shutdown.clone(),
    );
    eventually(Duration::from_secs(5), "the node is registered", || async {
        get(&c, &key).await.is_some()
    })
    .await;

    let kv = get(&c, &key).await.unwrap();
    let stored: NodeEntry = serde_json::from_slice(kv.value()).expect("the value is a node entry");
    assert_eq!(
        stored,
        NodeEntry {
            started_at: stored.started_at,
            ..entry("node-a", "a")
        }
    );
    assert!(
        stored.started_at > 0 && !stored.agent_version.is_empty(),
        "{stored:?}"
    );
    assert_ne!(kv.lease(), 0, "the entry is attached to a lease");
    let lease = c
        .clone()
        .lease_time_to_live(kv.lease(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert!(
        (1..=2).contains(&lease.granted_ttl()),
        "granted TTL {}",
        lease.granted_ttl()
    );
    assert_eq!(lease.keys(), [key.as_bytes().to_vec()]);

    // Kept alive: still there, on the same lease, well past one TTL.
    let t0 = Instant::now();
    while t0.elapsed() < TTL * 2 {
        let now = get(&c, &key)
            .await
            .expect("the entry stays while the agent lives");
        assert_eq!(now.lease(), kv.lease());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the registration ends on shutdown")
        .unwrap();
    assert!(
        get(&c, &key).await.is_none(),
        "a clean shutdown revokes the lease: the entry is gone at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_whose_keepalives_stop_expires_within_its_ttl() {
    testbed::e2e!();
    let url = etcd_url();
    let (p, c) = (prefix(), client(&url).await);
    let key = node_key(&p, "node-b");
    let task = spawn_registration(
        plain(url),
        p.clone(),
        entry("node-b", "a"),
        TTL,
        CancellationToken::new(),
    );
    eventually(Duration::from_secs(5), "the node is registered", || async {
        get(&c, &key).await.is_some()
    })
    .await;
    // A crash: the task stops without revoking anything.
    task.abort();
    let _ = task.await;
    let took = eventually(
        TTL + Duration::from_secs(3),
        "the entry expires",
        || async { get(&c, &key).await.is_none() },
    )
    .await;
    eprintln!("the entry expired {took:?} after the keep-alives stopped");
    assert!(
        took > Duration::from_millis(300),
        "gone after {took:?}: it should have lived until its lease expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_registers_again_after_its_lease_is_revoked_or_its_key_deleted() {
    testbed::e2e!();
    let url = etcd_url();
    let (p, c) = (prefix(), client(&url).await);
    let key = node_key(&p, "node-c");
    let shutdown = CancellationToken::new();
    let task = spawn_registration(
        plain(url.clone()),
        p.clone(),
        entry("node-c", "a"),
        TTL,
        shutdown.clone(),
    );
    eventually(Duration::from_secs(5), "the node is registered", || async {
        get(&c, &key).await.is_some()
    })
    .await;
    let first = get(&c, &key).await.unwrap().lease();

    // What an operator (or an expired lease) does: the lease goes, and the entry with it.
    let mut revoke = Command::new("etcdctl");
    revoke.env("ETCDCTL_API", "3").args([
        "--endpoints",
        &url,
        "lease",
        "revoke",
        &format!("{first:x}"),
    ]);
    let out = output_with_timeout(&mut revoke, None, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "etcdctl lease revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = eventually(
        Duration::from_secs(3),
        "the node registers again with a new lease",
        || async { get(&c, &key).await.is_some_and(|kv| kv.lease() != first) },
    )
    .await;
    eprintln!("registered again {took:?} after the lease was revoked");

    // The key deleted behind the agent's back, its lease still alive.
    let second = get(&c, &key).await.unwrap().lease();
    c.clone().delete(key.as_str(), None).await.unwrap();
    let took = eventually(
        Duration::from_secs(3),
        "the node registers again",
        || async { get(&c, &key).await.is_some() },
    )
    .await;
    eprintln!("registered again {took:?} after the key was deleted");
    let kv = get(&c, &key).await.unwrap();
    assert_ne!(kv.lease(), 0);
    // The lease that outlived its key was revoked rather than left to expire.
    if kv.lease() != second {
        eventually(
            Duration::from_secs(3),
            "the old lease is revoked",
            || async {
                c.clone()
                    .lease_time_to_live(second, None)
                    .await
                    .map_or(true, |r| r.ttl() <= 0)
            },
        )
        .await;
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(get(&c, &key).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sees_nodes_appear_change_and_disappear_within_a_second() {
    testbed::e2e!();
    let url = etcd_url();
    let (p, c) = (prefix(), client(&url).await);
    let stop = CancellationToken::new();
    // One node is there before the gateway starts: the initial list must carry it.
    c.clone()
        .put(
            node_key(&p, "early"),
            serde_json::to_string(&entry("early", "x")).unwrap(),
            None,
        )
        .await
        .unwrap();
    let mut rx = spawn_watch(plain(url.clone()), p.clone(), stop.clone());
    seen(&mut rx, Duration::from_secs(5), "the initial list", |m| {
        m.contains_key("early")
    })
    .await;

    // An agent registers.
    let agent_stop = CancellationToken::new();
    let agent = spawn_registration(
        plain(url),
        p.clone(),
        entry("n1", "a"),
        TTL,
        agent_stop.clone(),
    );
    seen(&mut rx, Duration::from_secs(1), "n1 appear", |m| {
        m.get("n1").is_some_and(|e| e.labels["zone"] == "a")
    })
    .await;

    // Its entry changes (labels), on the same lease.
    let key = node_key(&p, "n1");
    let lease = get(&c, &key).await.unwrap().lease();
    let changed = serde_json::to_string(&entry("n1", "b")).unwrap();
    c.clone()
        .put(
            key.as_str(),
            changed,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    seen(&mut rx, Duration::from_secs(1), "n1's new labels", |m| {
        m.get("n1").is_some_and(|e| e.labels["zone"] == "b")
    })
    .await;

    // An entry that is not a node entry is not a node.
    c.clone()
        .put(node_key(&p, "junk"), "{not json", None)
        .await
        .unwrap();
    c.clone()
        .put(
            node_key(&p, "n2"),
            serde_json::to_string(&entry("n2", "a")).unwrap(),
            None,
        )
        .await
        .unwrap();
    seen(&mut rx, Duration::from_secs(1), "n2 appear", |m| {
        m.contains_key("n2")
    })
    .await;
    assert!(!rx.borrow().contains_key("junk"));

    // The agent stops: its entry goes with its lease, and the gateway sees it go.
    agent_stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .unwrap()
        .unwrap();
    seen(&mut rx, Duration::from_secs(1), "n1 disappear", |m| {
        !m.contains_key("n1")
    })
    .await;
    c.clone().delete(node_key(&p, "n2"), None).await.unwrap();
    seen(&mut rx, Duration::from_secs(1), "n2 disappear", |m| {
        !m.contains_key("n2")
    })
    .await;
    assert_eq!(rx.borrow().keys().collect::<Vec<_>>(), ["early"]);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_of_a_name_have_exactly_one_winner() {
    testbed::e2e!();
    let url = etcd_url();
    let p = prefix();
    // Two clients, two connections: the reservations really race in etcd.
    let (c1, c2) = (client(&url).await, client(&url).await);
    let mut wins = [0, 0];
    for _ in 0..20 {
        let name = unique_name("web");
        let (a, b) = tokio::join!(
            reserve_name(&c1, &p, &name, "n1"),
            reserve_name(&c2, &p, &name, "n2")
        );
        match (a, b) {
            (Ok(r), Err(NameError::Taken { node, name: n, .. }))
            | (Err(NameError::Taken { node, name: n, .. }), Ok(r)) => {
                assert_eq!(node, r.node, "the loser is told the winner's node");
                assert_eq!(n, name);
                wins[usize::from(r.node == "n2")] += 1;
            }
            (a, b) => panic!("exactly one reservation of {name} must win: {a:?} / {b:?}"),
        }
    }
    eprintln!("wins n1/n2: {wins:?}");

    // Docker's `/name` form is the same name; invalid names are refused before etcd.
    let r = reserve_name(&c1, &p, "/api", "n1").await.unwrap();
    assert_eq!(
        (r.name.as_str(), r.node.as_str(), r.id.as_deref()),
        ("api", "n1", None)
    );
    let taken = reserve_name(&c2, &p, "api", "n2").await.unwrap_err();
    assert_eq!(
        taken.to_string(),
        "Conflict. The container name \"/api\" is already in use (on node n1)"
    );
    assert_eq!(taken.status(), 409);
    assert!(matches!(
        reserve_name(&c1, &p, "a/b", "n1").await,
        Err(NameError::Invalid { .. })
    ));

    // The create succeeded: the id is recorded and named in later conflicts.
    let owned = set_name_owner(&c1, &p, &r, "c0ffee").await.unwrap();
    let taken = reserve_name(&c2, &p, "api", "n2")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        taken.contains("\"c0ffee\"") && taken.contains("node n1"),
        "{taken}"
    );
    let listed = list_names(&c1, &p).await.unwrap();
    assert!(listed.contains(&owned), "{listed:?}");
    assert_eq!(listed.len(), 21);

    // `rm` on the wrong node does not free it; on the holder it does, and the name is free.
    assert!(!release_name(&c2, &p, "api", "n2").await.unwrap());
    assert!(reserve_name(&c2, &p, "api", "n2").await.is_err());
    assert!(release_name(&c1, &p, "/api", "n1").await.unwrap());
    assert!(
        !release_name(&c1, &p, "api", "n1").await.unwrap(),
        "already free"
    );
    let again = reserve_name(&c2, &p, "api", "n2").await.unwrap();

    // A failed create frees exactly its own reservation, never a newer one of the same name.
    assert!(
        !release_reservation(&c1, &p, &r).await.unwrap(),
        "the old reservation is gone already"
    );
    assert!(matches!(
        set_name_owner(&c1, &p, &r, "dead").await,
        Err(NameError::Lost { .. })
    ));
    assert!(list_names(&c1, &p)
        .await
        .unwrap()
        .iter()
        .any(|x| x.name == "api" && x.node == "n2"));
    assert!(release_reservation(&c2, &p, &again).await.unwrap());
    assert!(!list_names(&c1, &p)
        .await
        .unwrap()
        .iter()
        .any(|x| x.name == "api"));
}

/// A private etcd this test may kill and restart (the bed's is shared by the other tests).
struct OwnEtcd {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
}

impl OwnEtcd {
    fn new() -> OwnEtcd {
        OwnEtcd {
            dir: TempDir::new(),
            client_port: free_port(),
            peer_port: free_port(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts etcd on the same ports and data as any previous run, killed when the guard drops.
    fn start(&self) -> Process {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.args([
            "--name",
            "own",
            "--data-dir",
            &self.dir.join("data").to_string_lossy(),
        ])
        .args([
            "--listen-client-urls",
            &self.url(),
            "--advertise-client-urls",
            &self.url(),
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("own={peer}")]);
        Process::start_cmd(cmd)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_watch_wait_for_etcd_and_ride_out_its_restart() {
    testbed::e2e!();
    let etcd = OwnEtcd::new();
    let p = prefix();
    let key = node_key(&p, "n1");
    // Both start while etcd is down: they must retry in the background, not give up.
    let (stop, agent_stop) = (CancellationToken::new(), CancellationToken::new());
    let mut rx = spawn_watch(plain(etcd.url()), p.clone(), stop.clone());
    let agent = spawn_registration(
        plain(etcd.url()),
        p.clone(),
        entry("n1", "a"),
        TTL,
        agent_stop.clone(),
    );
    // A gateway's client for names, made while etcd is down: calls fail (503), then work.
    let lazy = connect_lazy(&plain(etcd.url())).await.unwrap();
    let down = reserve_name(&lazy, &p, "early", "n1").await.unwrap_err();
    assert!(
        matches!(down, NameError::Etcd(_)) && down.status() == 503,
        "{down}"
    );
    assert!(
        down.to_string().contains("/names/early"),
        "the error names the key: {down}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // a few failed attempts first
    let mut server = etcd.start();
    seen(
        &mut rx,
        Duration::from_secs(20),
        "n1 once etcd is up",
        |m| m.contains_key("n1"),
    )
    .await;
    reserve_name(&lazy, &p, "early", "n1")
        .await
        .expect("the lazy client works once etcd is up");
    let c = client(&etcd.url()).await;
    let first = get(&c, &key).await.expect("registered").lease();

    // etcd crashes and comes back on the same data: the keep-alive stream broke, so the agent
    // registers again; the gateway lists and watches again, and keeps following changes.
    server.kill();
    let _server = etcd.start();
    eventually(
        Duration::from_secs(20),
        "the restarted etcd answers",
        || async { connect(&plain(etcd.url())).await.is_ok() },
    )
    .await;
    let c = client(&etcd.url()).await;
    let took = eventually(
        Duration::from_secs(20),
        "the agent registers again after the restart",
        || async {
            c.clone()
                .get(key.as_str(), None)
                .await
                .is_ok_and(|r| r.kvs().first().is_some_and(|kv| kv.lease() != first))
        },
    )
    .await;
    eprintln!("registered again {took:?} after etcd restarted");
    c.clone()
        .put(
            node_key(&p, "n2"),
            serde_json::to_string(&entry("n2", "a")).unwrap(),
            None,
        )
        .await
        .unwrap();
    seen(
        &mut rx,
        Duration::from_secs(10),
        "n2 after the restart",
        |m| m.contains_key("n2"),
    )
    .await;
    agent_stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .unwrap()
        .unwrap();
    seen(
        &mut rx,
        Duration::from_secs(1),
        "n1 leave after the restart",
        |m| !m.contains_key("n1"),
    )
    .await;
    stop.cancel();
}

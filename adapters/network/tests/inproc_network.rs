//! In-process tests of busbar-network: the real adapter (its hooks served by the adapter kit's
//! server, its DNS server, its lease) on 127.0.0.1 against a real etcd started here, called as
//! agents call it, and once through busbar's real agent proxy in front of a fake engine
//! (`busbar_testkit`). No root, no Docker engine, no overlay: those are the end-to-end test's
//! (`tests/tests/network.rs`). etcd must be on the PATH (`tests/run.sh` installs it); without
//! it these tests skip with a message, unless `BUSBAR_E2E=require`.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_adapter::server::{serve, Options};
use busbar_etcd::client::Client;
use busbar_network::hooks::NetworkAdapter;
use busbar_network::node::{follow_names, Node};
use busbar_network::pool::Pool;
use busbar_network::store::{Lease, Store};
use busbar_testkit::raw::{self, request};
use busbar_testkit::{json, FakeEngine, TestAgent};
use serde_json::{json, Value};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// A private etcd on free loopback ports, killed when dropped.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts etcd, or says why these tests cannot run (a failure with `BUSBAR_E2E=require`).
async fn etcd() -> Option<Etcd> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()))
        .unwrap_or(false);
    if !found {
        let msg = "busbar-network's in-process tests need `etcd` on the PATH (tests/run.sh installs etcd-server)";
        if std::env::var("BUSBAR_E2E").as_deref() == Ok("require") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let child = Command::new("etcd")
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts");
    let etcd = Etcd {
        child,
        url,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(c) = Client::connect([etcd.url.as_str()], None).await {
            if tokio::time::timeout(Duration::from_secs(1), c.status())
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return Some(etcd);
            }
        }
        assert!(Instant::now() < deadline, "etcd did not answer within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const POOL: &str = "10.232.0.0/16";

/// One node's adapter: its store (with a lease), its hooks on 127.0.0.1.
struct TestNode {
    node: Arc<Node>,
    addr: SocketAddr,
    stop: CancellationToken,
}

async fn start_node(etcd: &Etcd, name: &str, ttl: Duration, state: Option<&Path>) -> TestNode {
    let client = Client::connect([etcd.url.as_str()], None).await.unwrap();
    let pool: Pool = POOL.parse().unwrap();
    let store = Store::new(client, "/net-test", pool, name);
    store.check_pool().await.unwrap();
    let stop = CancellationToken::new();
    let file = state.map(|d| d.join(format!("lease-{name}")));
    let _lease = Lease::start(&store, ttl, file, stop.clone()).await.unwrap();
    let index = store.node_index().await.unwrap();
    let node = Arc::new(Node::new(store, None, pool.gateway(index), None, vec![]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = Options {
        shutdown: stop.clone(),
        ..Default::default()
    };
    tokio::spawn(serve(listener, NetworkAdapter::new(node.clone()), options));
    TestNode { node, addr, stop }
}

/// A pre-hook call for `docker run --name NAME [--label busbar.net=cluster] busybox`, as
/// NODE's agent makes it.
async fn pre_create(
    n: &TestNode,
    node: &str,
    name: &str,
    labelled: bool,
    rid: &str,
) -> raw::RawResponse {
    let labels = if labelled {
        json!({"busbar.net": "cluster", "app": "x"})
    } else {
        json!({"app": "x"})
    };
    let body = json!({
        "Image": "busybox",
        "Labels": labels,
        "HostConfig": {"NetworkMode": "default", "Binds": ["data1:/data"]},
        "NetworkingConfig": {"EndpointsConfig": {}},
    });
    let call = json!({
        "PowerstripProtocolVersion": 1,
        "Type": "pre-hook",
        "ClientRequest": {
            "Method": "POST",
            "Request": format!("/v1.41/containers/create?name={name}"),
            "Body": body.to_string(),
        },
    });
    let bytes = request(
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("X-Busbar-Adapter-Api", "1"),
            ("X-Busbar-Node", node),
            ("X-Request-Id", rid),
        ],
        call.to_string().as_bytes(),
    );
    raw::exchange(n.addr, &bytes).await
}

/// The create body the adapter answered with.
fn rewritten(rsp: &raw::RawResponse) -> Value {
    assert_eq!(rsp.status(), 200, "{}", rsp.text());
    let body = rsp.json()["ModifiedClientRequest"]["Body"]
        .as_str()
        .expect("a body")
        .to_owned();
    serde_json::from_str(&body).unwrap()
}

fn address(body: &Value) -> Ipv4Addr {
    body["NetworkingConfig"]["EndpointsConfig"]["busbar"]["IPAMConfig"]["IPv4Address"]
        .as_str()
        .expect("an address")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_creates_on_three_nodes_at_once_get_thirty_distinct_addresses() {
    let Some(etcd) = etcd().await else { return };
    let mut nodes = vec![];
    for name in ["node1", "node2", "node3"] {
        nodes.push(Arc::new(
            start_node(&etcd, name, Duration::from_secs(10), None).await,
        ));
    }
    let gateways: HashSet<Ipv4Addr> = nodes.iter().map(|n| n.node.gateway()).collect();
    assert_eq!(
        gateways.len(),
        3,
        "each node has its own gateway: {gateways:?}"
    );

    let t0 = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let n = nodes[i % 3].clone();
        let node = format!("node{}", i % 3 + 1);
        calls.spawn(async move {
            rewritten(&pre_create(&n, &node, &format!("c{i}"), true, &format!("r{i}")).await)
        });
    }
    let mut seen = HashSet::new();
    while let Some(body) = calls.join_next().await {
        let body = body.unwrap();
        let ip = address(&body);
        let pool: Pool = POOL.parse().unwrap();
        assert!(
            pool.allocatable(ip),
            "{ip} is a container address of {POOL}"
        );
        assert!(seen.insert(ip), "{ip} given twice");
        assert_eq!(body["HostConfig"]["NetworkMode"], "busbar");
        assert_eq!(
            body["HostConfig"]["Binds"],
            json!(["data1:/data"]),
            "not the network's"
        );
        assert_eq!(body["Labels"]["app"], "x");
        let dns = body["HostConfig"]["Dns"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            gateways.contains(&dns),
            "the DNS server is a node's gateway: {dns}"
        );
    }
    assert_eq!(seen.len(), 30);
    eprintln!(
        "FIGURE: 30 concurrent labelled creates over 3 adapters allocated in {:?}",
        t0.elapsed()
    );

    // An unlabelled create is passed on exactly as it came.
    let rsp = pre_create(&nodes[0], "node1", "plain", false, "p1").await;
    let call = rsp.json();
    let body: Value =
        serde_json::from_str(call["ModifiedClientRequest"]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(body["HostConfig"]["NetworkMode"], "default");
    assert!(body["Labels"].get("busbar.net.address").is_none());

    // A call from another node's agent is refused with a reason.
    let rsp = pre_create(&nodes[0], "node2", "wrong", true, "w1").await;
    assert_eq!(rsp.status(), 500, "{}", rsp.text());
    assert!(rsp.text().contains("loopback URL"), "{}", rsp.text());
    for n in &nodes {
        n.stop.cancel();
    }
}

/// A create's post-hook, with the engine's status.
async fn post_create(
    n: &TestNode,
    node: &str,
    name: &str,
    code: u16,
    rid: &str,
) -> raw::RawResponse {
    let call = json!({
        "PowerstripProtocolVersion": 1,
        "Type": "post-hook",
        "ClientRequest": {
            "Method": "POST",
            "Request": format!("/v1.41/containers/create?name={name}"),
            "Body": json!({"Labels": {"busbar.net": "cluster"}}).to_string(),
        },
        "ServerResponse": {"ContentType": "application/json", "Body": "{\"message\":\"no\"}", "Code": code},
    });
    let bytes = request(
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("X-Busbar-Node", node),
            ("X-Request-Id", rid),
        ],
        call.to_string().as_bytes(),
    );
    raw::exchange(n.addr, &bytes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_keeps_its_address_on_another_node_and_a_removal_or_refusal_frees_it() {
    let Some(etcd) = etcd().await else { return };
    let n1 = start_node(&etcd, "node1", Duration::from_secs(10), None).await;
    let n3 = start_node(&etcd, "node3", Duration::from_secs(10), None).await;

    let first = rewritten(&pre_create(&n1, "node1", "web", true, "a1").await);
    let ip = address(&first);
    let claim = first["Labels"]["busbar.net.claim"]
        .as_str()
        .unwrap()
        .to_owned();
    let holder = n1.node.store.holder(ip).await.unwrap().unwrap();
    assert_eq!(
        (holder.name.as_str(), holder.node.as_str()),
        ("web", "node1")
    );

    // Removed on node1 (what its event loop does on `destroy`), re-created on node3.
    assert!(n1.node.store.release(ip, &claim).await.unwrap());
    assert_eq!(
        n1.node.store.holder(ip).await.unwrap(),
        None,
        "removal frees"
    );
    let again = rewritten(&pre_create(&n3, "node3", "web", true, "a2").await);
    assert_eq!(
        address(&again),
        ip,
        "the name keeps its address on another node"
    );

    // Another name never gets it while web holds it; nor after, while others are free.
    let other = rewritten(&pre_create(&n1, "node1", "db", true, "a3").await);
    assert_ne!(address(&other), ip);

    // The engine refused the create: the post-hook gives the address back.
    let refused = rewritten(&pre_create(&n1, "node1", "dup", true, "a4").await);
    let dup_ip = address(&refused);
    assert!(n1.node.store.holder(dup_ip).await.unwrap().is_some());
    let rsp = post_create(&n1, "node1", "dup", 409, "a4").await;
    assert_eq!(rsp.status(), 200, "{}", rsp.text());
    assert_eq!(
        rsp.json()["ModifiedServerResponse"]["Code"],
        409,
        "the engine's answer passes"
    );
    assert_eq!(n1.node.store.holder(dup_ip).await.unwrap(), None, "freed");
    n1.stop.cancel();
    n3.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_adapters_addresses_go_after_the_lease_ttl_and_a_restart_keeps_them() {
    let Some(etcd) = etcd().await else { return };
    let state = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(2);

    // A restart within the TTL takes the lease back: nothing is lost.
    let a = start_node(&etcd, "node1", ttl, Some(state.path())).await;
    let kept = address(&rewritten(
        &pre_create(&a, "node1", "kept", true, "k1").await,
    ));
    a.stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = start_node(&etcd, "node1", ttl, Some(state.path())).await;
    assert_eq!(
        b.node.store.lease_id(),
        a.node.store.lease_id(),
        "the lease is taken back"
    );
    tokio::time::sleep(ttl * 2).await;
    assert!(
        b.node.store.holder(kept).await.unwrap().is_some(),
        "the restart lost nothing"
    );

    // Dead for good: the addresses go one TTL after the last renewal.
    b.stop.cancel();
    let t0 = Instant::now();
    let mut gone = false;
    while t0.elapsed() < ttl * 4 {
        if b.node.store.holder(kept).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the dead adapter's address is still held after {:?}",
        t0.elapsed()
    );
    eprintln!(
        "FIGURE: a dead adapter's address freed {:?} after it stopped (lease TTL {ttl:?})",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_server_answers_names_registered_on_any_node() {
    let Some(etcd) = etcd().await else { return };
    let n1 = start_node(&etcd, "node1", Duration::from_secs(10), None).await;
    let n2 = start_node(&etcd, "node2", Duration::from_secs(10), None).await;
    tokio::spawn(follow_names(
        n2.node.store.clone(),
        n2.node.names.clone(),
        n2.stop.clone(),
    ));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns_addr = socket.local_addr().unwrap();
    tokio::spawn(busbar_network::dns::serve(
        socket,
        n2.node.names.clone(),
        "busbar.local".into(),
        vec![],
        n2.stop.clone(),
    ));

    // Registered by node1 (a container started there), answered by node2's server.
    let ip = Ipv4Addr::new(10, 232, 3, 3);
    n1.node.store.register_name("web", ip).await.unwrap();
    let answer = wait_for(|| lookup(dns_addr, "web.busbar.local"), |a| *a == Some(ip)).await;
    assert_eq!(answer, Some(ip));
    assert_eq!(lookup(dns_addr, "web").await, Some(ip));

    // Stopped: the name goes.
    n1.node.store.unregister_name("web", ip).await.unwrap();
    let answer = wait_for(|| lookup(dns_addr, "web.busbar.local"), |a| a.is_none()).await;
    assert_eq!(answer, None);
    n1.stop.cancel();
    n2.stop.cancel();
}

async fn wait_for<T, F, Fut>(mut f: F, ok: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = f().await;
        if ok(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An A query to `server`; the address answered, if any.
async fn lookup(server: SocketAddr, name: &str) -> Option<Ipv4Addr> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("the DNS server answers")
        .unwrap();
    let rsp = Message::from_vec(&buf[..len]).unwrap();
    rsp.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_busbars_agent_the_engine_gets_the_rewrite_and_unlabelled_creates_pass_untouched() {
    let Some(etcd) = etcd().await else { return };
    let n = start_node(&etcd, "solo", Duration::from_secs(10), None).await;
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let yaml = format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [network]\n    post: [network]\nadapters:\n  network: http://{}/\n",
        n.addr
    );
    let agent = TestAgent::start(&engine, &yaml).await;
    let create = |labels: Value| {
        raw::post_json(
            "/v1.41/containers/create?name=app",
            &json!({"Image": "busybox", "Labels": labels, "HostConfig": {"NetworkMode": "default"}}),
        )
    };
    let rsp = raw::exchange(agent.addr(), &create(json!({"busbar.net": "cluster"}))).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    let plain = raw::exchange(agent.addr(), &create(json!({"x": "y"}))).await;
    assert_eq!(plain.status(), 201, "{}", plain.text());
    let sent = engine.requests_to("POST /*/containers/create");
    let labelled: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(labelled["HostConfig"]["NetworkMode"], "busbar");
    assert_eq!(
        labelled["HostConfig"]["Dns"][0],
        n.node.gateway().to_string()
    );
    let ip = address(&labelled);
    let unlabelled: Value = serde_json::from_slice(&sent[1].body).unwrap();
    assert_eq!(
        unlabelled,
        json!({"Image": "busybox", "Labels": {"x": "y"}, "HostConfig": {"NetworkMode": "default"}}),
        "untouched"
    );
    let holders: HashMap<_, _> = n
        .node
        .store
        .held_here()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(holders[&ip].name, "app");
    n.stop.cancel();
}

/// Composition: busbar-network and another adapter that rewrites the same create (a test
/// double standing for the portable-volume adapter: it rewrites `Binds` and adds a label of
/// its own) in one chain, in both orders. Each sees the other's rewrite and the engine gets
/// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_composes_with_another_adapter_rewriting_the_same_create_in_either_order() {
    use busbar_testkit::adapter::{rewrite_body, FakeAdapter};
    let Some(etcd) = etcd().await else { return };
    let n = start_node(&etcd, "solo", Duration::from_secs(10), None).await;
    let volumes = FakeAdapter::start(rewrite_body(|doc| {
        doc["HostConfig"]["Binds"] = json!(["/srv/portable/data1:/data"]);
        doc["Labels"]["busbar.portable.node"] = json!("solo");
    }))
    .await;
    for (order, first, second) in [(0, "network", "volumes"), (1, "volumes", "network")] {
        let engine = FakeEngine::start().await;
        engine.route(
            "POST /*/containers/create",
            json(201, r#"{"Id":"c1","Warnings":[]}"#),
        );
        let yaml = format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [{first}, {second}]\n    post: [network]\nadapters:\n  network: http://{}/\n  volumes: {}\n",
            n.addr,
            volumes.url()
        );
        let agent = TestAgent::start(&engine, &yaml).await;
        let create = raw::post_json(
            &format!("/v1.41/containers/create?name=both{order}"),
            &json!({
                "Image": "busybox",
                "Labels": {"busbar.net": "cluster"},
                "HostConfig": {"NetworkMode": "default", "Binds": ["data1:/data"]},
            }),
        );
        let rsp = raw::exchange(agent.addr(), &create).await;
        assert_eq!(rsp.status(), 201, "{first} then {second}: {}", rsp.text());
        let sent: Value =
            serde_json::from_slice(&engine.requests_to("POST /*/containers/create")[0].body)
                .unwrap();
        assert_eq!(
            sent["HostConfig"]["NetworkMode"], "busbar",
            "{first} then {second}"
        );
        assert!(address(&sent).to_string().starts_with("10.232."));
        assert_eq!(
            sent["HostConfig"]["Binds"],
            json!(["/srv/portable/data1:/data"]),
            "{first} then {second}"
        );
        assert_eq!(sent["Labels"]["busbar.portable.node"], "solo");
        assert_eq!(sent["Labels"]["busbar.net"], "cluster");
        if first == "network" {
            let seen = volumes.calls().last().unwrap().client_body().unwrap();
            assert_eq!(
                seen["HostConfig"]["NetworkMode"], "busbar",
                "the volume adapter sees the network's rewrite"
            );
        }
    }
    n.stop.cancel();
}

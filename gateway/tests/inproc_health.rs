//! In-process tests of node health as the gateway judges it: the cluster handler behind
//! busbar's HTTP front on `127.0.0.1:0`, three in-process agents (`busbar_agent::cluster::grpc`,
//! each on its own fake engine) over the real gRPC hop with mutual TLS, each agent behind a
//! relay the test can freeze (bytes stop flowing both ways while the connections stay open:
//! what a SIGSTOPped agent looks like from the gateway). See `busbar_testkit`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_gateway::cluster::{Cluster, HealthOptions, Member};
use busbar_gateway::model::Health;
use busbar_gateway::names::LocalNames;
use busbar_gateway::schedule::Strategy;
use busbar_gateway::serve::ClusterHandler;
use busbar_testkit::raw::{self, RawResponse};
use busbar_testkit::{FakeEngine, GrpcAgent, TestPki, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay in front of an agent that can be frozen: while frozen, nothing is read from
/// either side, so nothing arrives anywhere, and connections stay open.
struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, f.clone()));
                tokio::spawn(pump(ro, wi, f.clone()));
            }
        });
        Relay { addr, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Three nodes, each an agent (behind a relay) on its own fake engine with one container.
struct Nodes {
    engines: BTreeMap<String, FakeEngine>,
    agents: Vec<GrpcAgent>,
    relays: BTreeMap<String, Relay>,
    members: BTreeMap<String, Member>,
    pki: TestPki,
}

impl Nodes {
    async fn start() -> Nodes {
        busbar_testkit::logs();
        let pki = TestPki::new();
        let (mut engines, mut agents, mut relays, mut members) =
            (BTreeMap::new(), vec![], BTreeMap::new(), BTreeMap::new());
        for i in 1..=3 {
            let node = format!("node{i}");
            let engine = FakeEngine::start_docker(&node).await;
            engine.add_container(&format!("{node}-c"), "busybox");
            let agent = GrpcAgent::start(&pki, &node, &engine, "", &[]).await;
            let relay = Relay::start(agent.addr()).await;
            members.insert(
                node.clone(),
                Member {
                    addr: relay.addr.to_string(),
                    labels: BTreeMap::new(),
                },
            );
            engines.insert(node.clone(), engine);
            relays.insert(node, relay);
            agents.push(agent);
        }
        Nodes {
            engines,
            agents,
            relays,
            members,
            pki,
        }
    }

    /// A cluster of these nodes (not yet given its members) and a gateway serving it.
    async fn gateway(&self, health: HealthOptions) -> (Arc<Cluster>, TestServer) {
        let cluster = Cluster::new(self.pki.gateway_tls(), health);
        let handler = ClusterHandler::new(
            cluster.clone(),
            Strategy::Spread,
            Some(Arc::new(LocalNames::default())),
        );
        (cluster, TestServer::start(Arc::new(handler)).await)
    }

    async fn stop(self) {
        for agent in self.agents {
            agent.stop().await;
        }
        for (_, engine) in self.engines {
            engine.stop().await;
        }
    }
}

async fn get(gateway: &TestServer, target: &str) -> RawResponse {
    raw::exchange(gateway.addr(), &raw::request("GET", target, &[], b"")).await
}

fn ids(rsp: &RawResponse) -> usize {
    rsp.json().as_array().map_or(0, Vec::len)
}

fn health(cluster: &Cluster, node: &str) -> Health {
    cluster.node(node).unwrap().health()
}

/// A node whose engine answers `/info` and its list slowly (dockerd 20.10 behind a stuck pull,
/// or any engine under load) is busy, not dead: its agent answers every probe at once from what
/// it keeps, and the node stays healthy round after round.
#[tokio::test]
async fn a_node_whose_engine_is_slow_stays_healthy() {
    let nodes = Nodes::start().await;
    let (cluster, gateway) = nodes
        .gateway(HealthOptions {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(600),
        })
        .await;
    cluster.set_members(&nodes.members);
    cluster.probe_all().await;
    assert_eq!(health(&cluster, "node2"), Health::Healthy);
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(cluster.clone().run_probes(shutdown.clone()));

    let slow = &nodes.engines["node2"];
    slow.slow("GET /*/info", Duration::from_secs(4));
    slow.slow("GET /*/version", Duration::from_secs(4));
    slow.slow("GET /*/containers/json", Duration::from_millis(1500));
    let until = Instant::now() + Duration::from_secs(3);
    let mut samples = 0;
    while Instant::now() < until {
        let node = cluster.node("node2").unwrap().snapshot();
        assert_eq!(node.health, Health::Healthy, "{:?}", node.last_error);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A list that takes longer than the probe timeout is waited for: node2 is busy, not dead.
    let rsp = get(&gateway, "/v1.41/containers/json?all=1").await;
    assert_eq!(rsp.status(), 200, "{}", rsp.text());
    assert_eq!(ids(&rsp), 3, "{}", rsp.text());
    assert_eq!(rsp.header("x-busbar-failed-nodes"), None);
    assert_eq!(health(&cluster, "node2"), Health::Healthy);
    assert!(samples > 30);
    shutdown.cancel();
    gateway.stop().await;
    nodes.stop().await;
}

/// An agent that stops answering (its connections open, nothing coming back) costs the calls
/// waiting on it one probe timeout, once: it is then named in the failed-nodes header and not
/// waited for again until a probe finds it back.
#[tokio::test]
async fn a_silent_agent_costs_one_probe_timeout_once() {
    let nodes = Nodes::start().await;
    let timeout = Duration::from_secs(1);
    let (cluster, gateway) = nodes
        .gateway(HealthOptions {
            // No periodic probe here: the calls themselves find the node silent.
            probe_interval: Duration::from_secs(3600),
            probe_timeout: timeout,
        })
        .await;
    cluster.set_members(&nodes.members);
    cluster.probe_all().await;
    assert_eq!(ids(&get(&gateway, "/v1.41/containers/json").await), 3);

    nodes.relays["node2"].freeze(true);
    let asked = Instant::now();
    let rsp = get(&gateway, "/v1.41/containers/json").await;
    let first = asked.elapsed();
    assert_eq!(rsp.status(), 200, "{}", rsp.text());
    assert_eq!(ids(&rsp), 2);
    assert!(
        rsp.header("x-busbar-failed-nodes")
            .is_some_and(|h| h.contains("node2")),
        "{:?}",
        rsp.header("x-busbar-failed-nodes")
    );
    // The liveness probe goes at once (nothing heard from node2 for a moment) or after half a
    // probe timeout (heard just before): one probe timeout, plus at most that half.
    assert!(
        first >= timeout && first < timeout * 3 / 2 + Duration::from_millis(300),
        "the first list took {first:?}"
    );
    assert_eq!(health(&cluster, "node2"), Health::Unhealthy);

    let asked = Instant::now();
    let rsp = get(&gateway, "/v1.41/containers/json").await;
    let second = asked.elapsed();
    assert_eq!(ids(&rsp), 2);
    assert!(rsp.header("x-busbar-failed-nodes").is_some());
    assert!(
        second < Duration::from_millis(300),
        "the second list took {second:?}"
    );

    nodes.relays["node2"].freeze(false);
    cluster.probe_all().await;
    assert_eq!(health(&cluster, "node2"), Health::Healthy);
    assert_eq!(ids(&get(&gateway, "/v1.41/containers/json").await), 3);
    gateway.stop().await;
    nodes.stop().await;
}

/// Until the gateway knows its nodes it says so: a request waits (a little longer than a probe
/// timeout) and gets a 503 naming why, never an empty list; one that arrives as the nodes
/// become known waits for their first probes and gets every node's containers.
#[tokio::test]
async fn until_it_knows_its_nodes_the_gateway_says_it_is_starting() {
    let nodes = Nodes::start().await;
    let health = HealthOptions {
        probe_interval: Duration::from_secs(3600),
        probe_timeout: Duration::from_millis(500),
    };
    let (cluster, gateway) = nodes.gateway(health.clone()).await;
    cluster.expect_registry("the node registry (etcd at 127.0.0.1:9)");
    let asked = Instant::now();
    let rsp = get(&gateway, "/v1.41/containers/json").await;
    assert_eq!(rsp.status(), 503, "{}", rsp.text());
    assert_eq!(
        rsp.message(),
        "the gateway is starting: the node registry (etcd at 127.0.0.1:9) has not answered yet"
    );
    assert!(asked.elapsed() >= Duration::from_millis(500));
    // A ping is answered all the same.
    assert_eq!(get(&gateway, "/_ping").await.status(), 200);

    // The registry answers: the nodes are probed at once, and a request made right then waits
    // for them.
    cluster.set_members(&nodes.members);
    cluster.registry_answered();
    let rsp = get(&gateway, "/v1.41/containers/json").await;
    assert_eq!(rsp.status(), 200, "{}", rsp.text());
    assert_eq!(ids(&rsp), 3, "{}", rsp.text());
    gateway.stop().await;

    // Nodes known, none answering: once their first probes have missed, the gateway knows
    // them, and says what each failed with.
    for relay in nodes.relays.values() {
        relay.freeze(true);
    }
    let (cluster, gateway) = nodes.gateway(health).await;
    cluster.set_members(&nodes.members);
    let rsp = get(&gateway, "/v1.41/containers/json").await;
    assert_eq!(rsp.status(), 503, "{}", rsp.text());
    for node in ["node1", "node2", "node3"] {
        assert!(
            rsp.message().contains(&format!("{node}: unhealthy")),
            "{}",
            rsp.message()
        );
    }
    for relay in nodes.relays.values() {
        relay.freeze(false);
    }
    gateway.stop().await;
    nodes.stop().await;
}

/// The registry says which nodes exist, the probes whether they work: a node whose
/// registration is gone is still served while it answers, and `Disconnected` once it does not.
#[tokio::test]
async fn a_node_whose_registration_is_gone_is_served_while_it_answers() {
    let nodes = Nodes::start().await;
    let (cluster, gateway) = nodes
        .gateway(HealthOptions {
            probe_interval: Duration::from_secs(3600),
            probe_timeout: Duration::from_millis(500),
        })
        .await;
    cluster.set_members(&nodes.members);
    cluster.probe_all().await;
    let mut without_node2 = nodes.members.clone();
    without_node2.remove("node2");
    cluster.set_members(&without_node2);
    assert_eq!(health(&cluster, "node2"), Health::Healthy);
    cluster.probe_all().await;
    assert_eq!(health(&cluster, "node2"), Health::Healthy);
    assert_eq!(ids(&get(&gateway, "/v1.41/containers/json").await), 3);

    // It stops answering: disconnected.
    nodes.relays["node2"].freeze(true);
    cluster.probe_all().await;
    cluster.probe_all().await;
    assert_eq!(health(&cluster, "node2"), Health::Disconnected);
    // It answers again: served again, registered or not.
    nodes.relays["node2"].freeze(false);
    cluster.probe_all().await;
    assert_eq!(health(&cluster, "node2"), Health::Healthy);
    gateway.stop().await;
    nodes.stop().await;
}

/// The gateway remembers where it just created a container (by ID and name): the start that
/// follows goes there, without asking the other nodes.
#[tokio::test]
async fn a_call_right_after_a_create_goes_where_the_create_went() {
    let nodes = Nodes::start().await;
    let (cluster, gateway) = nodes
        .gateway(HealthOptions {
            probe_interval: Duration::from_secs(3600),
            probe_timeout: Duration::from_secs(2),
        })
        .await;
    cluster.set_members(&nodes.members);
    cluster.probe_all().await;
    let body = serde_json::json!({"Image": "busybox", "Cmd": ["true"]});
    let rsp = raw::exchange(
        gateway.addr(),
        &raw::post_json("/v1.41/containers/create?name=fresh", &body),
    )
    .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    let id = rsp.json()["Id"].as_str().unwrap().to_owned();
    let home = nodes
        .engines
        .iter()
        .find(|(_, e)| e.container_names().contains_key("fresh"))
        .map(|(n, _)| n.clone())
        .unwrap();
    for reference in [id.as_str(), "fresh"] {
        let rsp = get(&gateway, &format!("/v1.41/containers/{reference}/json")).await;
        assert_eq!(rsp.status(), 200, "{}", rsp.text());
        assert_eq!(rsp.json()["Node"]["Name"], home.as_str());
    }
    for (node, engine) in &nodes.engines {
        let asked: Vec<String> = engine
            .requests()
            .into_iter()
            .filter(|r| r.path().contains(&id) || r.path().contains("/fresh/"))
            .map(|r| r.line())
            .collect();
        if *node == home {
            assert_eq!(asked.len(), 2, "{asked:?}");
        } else {
            assert!(asked.is_empty(), "{node} was asked: {asked:?}");
        }
    }
    gateway.stop().await;
    nodes.stop().await;
}

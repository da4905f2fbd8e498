//! In-process tests of the gateway's create path: the cluster handler
//! (`busbar_gateway::serve::ClusterHandler`) behind busbar's HTTP front on `127.0.0.1:0`, in
//! front of three in-process agents (`busbar_agent::cluster::grpc`, each on its own fake
//! engine that keeps the containers it creates) over the real gRPC hop with mutual TLS. See
//! `busbar_testkit`. Names are reserved in memory (`LocalNames`), wrapped to record each
//! reservation and release in the test kit's sequence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_gateway::cluster::{Cluster, HealthOptions, Member};
use busbar_gateway::model::Health;
use busbar_gateway::names::{LocalNames, NameError, NameStore};
use busbar_gateway::schedule::Strategy;
use busbar_gateway::serve::ClusterHandler;
use busbar_testkit::raw::{self, post_json, RawResponse};
use busbar_testkit::{seq, FakeEngine, GrpcAgent, TestPki, TestServer};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

/// What happened to a name, in the test kit's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameEvent {
    seq: u64,
    what: &'static str,
    name: String,
    node: String,
}

/// The gateway's in-memory name store, recording every reservation and release.
#[derive(Default)]
struct RecordedNames {
    inner: LocalNames,
    events: Mutex<Vec<NameEvent>>,
}

impl RecordedNames {
    fn note(&self, what: &'static str, name: &str, node: &str) {
        self.events.lock().unwrap().push(NameEvent {
            seq: seq::next(),
            what,
            name: name.to_owned(),
            node: node.to_owned(),
        });
    }

    fn events(&self) -> Vec<NameEvent> {
        self.events.lock().unwrap().clone()
    }
}

impl NameStore for RecordedNames {
    fn reserve<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, Result<(), NameError>> {
        Box::pin(async move {
            let result = self.inner.reserve(name, node).await;
            self.note(
                if result.is_ok() { "reserved" } else { "taken" },
                name,
                node,
            );
            result
        })
    }

    fn release<'a>(&'a self, name: &'a str, node: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.inner.release(name, node).await;
            self.note("released", name, node);
        })
    }

    fn free_stale<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        older_than: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, NameError>> {
        Box::pin(async move {
            let freed = self.inner.free_stale(name, owner, older_than).await;
            if freed.as_ref().is_ok_and(|f| *f) {
                self.note("freed as stale", name, owner);
            }
            freed
        })
    }
}

/// Three nodes, each an agent on its own fake engine, behind one gateway.
struct Cluster3 {
    engines: BTreeMap<String, FakeEngine>,
    agents: Vec<GrpcAgent>,
    names: Arc<RecordedNames>,
    gateway: TestServer,
    _pki: TestPki,
}

impl Cluster3 {
    /// Starts the nodes with `existing[i]` containers already on node `i + 1`.
    async fn start(existing: [usize; 3]) -> Cluster3 {
        busbar_testkit::logs();
        let pki = TestPki::new();
        let mut engines = BTreeMap::new();
        let mut agents = vec![];
        let mut members = BTreeMap::new();
        for (i, count) in existing.into_iter().enumerate() {
            let node = format!("node{}", i + 1);
            let engine = FakeEngine::start_docker(&node).await;
            for c in 0..count {
                engine.add_container(&format!("{node}-old{c}"), "busybox");
            }
            let agent = GrpcAgent::start(&pki, &node, &engine, "", &[("zone", "a")]).await;
            members.insert(
                node.clone(),
                Member {
                    addr: agent.addr().to_string(),
                    labels: BTreeMap::new(),
                },
            );
            engines.insert(node, engine);
            agents.push(agent);
        }
        let cluster = Cluster::new(
            pki.gateway_tls(),
            HealthOptions {
                probe_interval: Duration::from_secs(3600),
                probe_timeout: Duration::from_secs(5),
            },
        );
        cluster.set_members(&members);
        cluster.probe_all().await;
        for node in cluster.nodes() {
            let s = node.snapshot();
            assert_eq!(s.health, Health::Healthy, "{}: {:?}", s.name, s.last_error);
        }
        let names = Arc::new(RecordedNames::default());
        let handler = ClusterHandler::new(cluster, Strategy::Spread, Some(names.clone()));
        let gateway = TestServer::start(Arc::new(handler)).await;
        Cluster3 {
            engines,
            agents,
            names,
            gateway,
            _pki: pki,
        }
    }

    async fn create(&self, name: Option<&str>, body: &Value) -> RawResponse {
        let target = match name {
            Some(n) => format!("/v1.41/containers/create?name={n}"),
            None => "/v1.41/containers/create".to_owned(),
        };
        raw::exchange(self.gateway.addr(), &post_json(&target, body)).await
    }

    /// The creates each engine received: node -> targets.
    fn creates(&self) -> BTreeMap<String, Vec<String>> {
        self.engines
            .iter()
            .map(|(node, e)| {
                let got = e
                    .requests_to("POST /*/containers/create")
                    .into_iter()
                    .map(|r| r.target)
                    .collect();
                (node.clone(), got)
            })
            .collect()
    }

    async fn stop(self) {
        self.gateway.stop().await;
        for agent in self.agents {
            agent.stop().await;
        }
        for (_, engine) in self.engines {
            engine.stop().await;
        }
    }
}

/// What `docker run --name NAME busybox echo hi` sends (API 1.41), with extra `Env`.
fn run_body(env: &[&str]) -> Value {
    json!({
        "Hostname": "", "Domainname": "", "User": "",
        "AttachStdin": false, "AttachStdout": true, "AttachStderr": true,
        "Tty": false, "OpenStdin": false, "StdinOnce": false,
        "Env": env, "Cmd": ["echo", "hi"], "Image": "busybox",
        "Volumes": {}, "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": {},
        "HostConfig": {
            "Binds": null, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
            "NetworkMode": "default", "PortBindings": {},
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "AutoRemove": false, "VolumeDriver": "", "VolumesFrom": null,
            "CapAdd": null, "CapDrop": null, "Dns": [], "DnsOptions": [], "DnsSearch": [],
            "ExtraHosts": null, "Privileged": false, "PublishAllPorts": false,
            "ReadonlyRootfs": false, "Memory": 0, "NanoCpus": 0
        },
        "NetworkingConfig": {"EndpointsConfig": {}}
    })
}

#[tokio::test]
async fn a_named_create_goes_to_the_scheduled_node_and_its_name_is_reserved_then_released() {
    // spread: node2 has the fewest containers.
    let c = Cluster3::start([2, 0, 1]).await;

    let rsp = c.create(Some("web"), &run_body(&[])).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    let id = rsp.json()["Id"].as_str().unwrap().to_owned();
    let creates = c.creates();
    assert_eq!(creates["node1"], Vec::<String>::new());
    assert_eq!(creates["node2"], ["/v1.41/containers/create?name=web"]);
    assert_eq!(creates["node3"], Vec::<String>::new());
    let made = c.engines["node2"].container_names();
    assert_eq!(made["web"].id, id, "the client got node2's container ID");
    assert_eq!(made["web"].config["Cmd"], json!(["echo", "hi"]));

    let create_seq = c.engines["node2"].requests_to("POST /*/containers/create")[0].seq;
    let events = c.names.events();
    let shape: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.what, e.name.as_str(), e.node.as_str()))
        .collect();
    assert_eq!(
        shape,
        [("reserved", "web", "node2"), ("released", "web", "node2")]
    );
    assert!(
        events[0].seq < create_seq && create_seq < events[1].seq,
        "reserved before the engine's create, released after: {events:?} create at {create_seq}"
    );

    // From now on the container holds the name: a second create of it is a 409 naming it.
    let again = c.create(Some("web"), &run_body(&[])).await;
    assert_eq!(again.status(), 409, "{}", again.text());
    assert!(
        again.message().contains("\"/web\" is already in use")
            && again.message().contains(&id)
            && again.message().contains("node2"),
        "{}",
        again.message()
    );
    assert_eq!(
        c.creates()["node2"].len(),
        1,
        "no engine saw the second create"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_node_constraint_lands_on_that_node() {
    // node2 is the fullest: spread alone would never pick it.
    let c = Cluster3::start([0, 3, 1]).await;

    let rsp = c
        .create(Some("pinned"), &run_body(&["constraint:node==node2"]))
        .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    let creates = c.creates();
    assert_eq!(creates["node2"], ["/v1.41/containers/create?name=pinned"]);
    assert!(
        creates["node1"].is_empty() && creates["node3"].is_empty(),
        "{creates:?}"
    );
    assert!(c.engines["node2"].container_names().contains_key("pinned"));
    c.stop().await;
}

#[tokio::test]
async fn an_impossible_constraint_is_an_error_naming_it_and_nothing_is_created() {
    let c = Cluster3::start([0, 0, 0]).await;

    let rsp = c
        .create(Some("nowhere"), &run_body(&["constraint:node==node9"]))
        .await;
    assert_eq!(rsp.status(), 500, "{}", rsp.text());
    assert!(
        rsp.message()
            .contains("Unable to find a node that satisfies the following conditions")
            && rsp.message().contains("node==node9"),
        "{}",
        rsp.message()
    );
    let creates = c.creates();
    assert!(creates.values().all(Vec::is_empty), "{creates:?}");
    assert!(c.names.events().is_empty(), "{:?}", c.names.events());
    c.stop().await;
}

#[tokio::test]
async fn two_concurrent_creates_of_one_name_give_one_201_and_one_409() {
    let c = Cluster3::start([0, 0, 0]).await;
    // Creates take a while: both calls are in flight at once.
    for e in c.engines.values() {
        e.slow("POST /*/containers/create", Duration::from_millis(300));
    }

    let body = run_body(&[]);
    let (a, b) = tokio::join!(c.create(Some("dup"), &body), c.create(Some("dup"), &body));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.text(), b.text());
    let conflict = if a.status() == 409 { &a } else { &b };
    assert!(
        conflict.message().contains("\"/dup\" is already in use"),
        "{}",
        conflict.message()
    );
    let made: Vec<String> = c
        .engines
        .values()
        .flat_map(|e| e.containers())
        .filter(|k| k.name == "dup")
        .map(|k| k.id)
        .collect();
    assert_eq!(made.len(), 1, "exactly one container named dup: {made:?}");
    let total_creates: usize = c.creates().values().map(Vec::len).sum();
    assert_eq!(total_creates, 1, "{:?}", c.creates());
    c.stop().await;
}

/// `"NetworkingConfig": 5` on the default network: the gateway reads the body's shape
/// before anything else (a wrong type is dockerd's own 400), so nothing is created and the
/// name is never even reserved.
#[tokio::test]
async fn a_create_body_with_a_malformed_networking_config_is_a_400() {
    let c = Cluster3::start([0, 0, 0]).await;

    let mut body = run_body(&[]);
    body["NetworkingConfig"] = json!(5);
    let rsp = c.create(Some("odd"), &body).await;
    assert_eq!(rsp.status(), 400, "{}", rsp.text());
    assert!(
        rsp.message().contains("NetworkingConfig"),
        "{}",
        rsp.message()
    );
    let made: usize = c.engines.values().map(|e| e.containers().len()).sum();
    assert_eq!(made, 0);
    assert!(c.names.events().is_empty(), "{:?}", c.names.events());
    c.stop().await;
}

/// The same body on a `node/network` network mode, which the gateway itself reads and
/// rewrites (`network_nodes`): it must answer 400 too, not drop the connection.
#[tokio::test]
async fn a_malformed_networking_config_on_a_node_network_is_a_400() {
    let c = Cluster3::start([0, 0, 0]).await;

    let mut body = run_body(&[]);
    body["HostConfig"]["NetworkMode"] = json!("node2/appnet");
    body["NetworkingConfig"] = json!(5);
    let rsp = c.create(Some("odd"), &body).await;
    assert_eq!(rsp.status(), 400, "{}", rsp.text());
    let creates = c.creates();
    assert!(creates.values().all(Vec::is_empty), "{creates:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_create_mounting_a_named_volume_goes_where_the_volume_is() {
    // node3 is the fullest (spread alone would never pick it) and holds the volume `data`.
    let c = Cluster3::start([0, 1, 3]).await;
    c.engines["node3"].route(
        "GET /*/volumes/data",
        busbar_testkit::engine::json(
            200,
            r#"{"Name": "data", "Driver": "local", "Scope": "local", "Mountpoint": "/v/data"}"#,
        ),
    );
    let mut body = run_body(&[]);
    body["HostConfig"]["Binds"] = json!(["data:/data"]);
    let rsp = c.create(Some("writer"), &body).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    // `--mount`, keys in another case (read as the engine reads them).
    let mut body = run_body(&[]);
    body["HostConfig"]["mounts"] = json!([{"type": "volume", "source": "data", "target": "/d"}]);
    let rsp = c.create(Some("reader"), &body).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    let creates = c.creates();
    assert_eq!(creates["node3"].len(), 2, "{creates:?}");
    // A constraint elsewhere wins over the volume.
    let mut body = run_body(&["constraint:node==node1"]);
    body["HostConfig"]["Binds"] = json!(["data:/data"]);
    let rsp = c.create(Some("elsewhere"), &body).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(
        c.creates()["node1"],
        ["/v1.41/containers/create?name=elsewhere"]
    );
    c.stop().await;
}

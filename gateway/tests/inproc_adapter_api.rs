//! In-process tests of what busbar gives adapters beyond Powerstrip's protocol: the node
//! headers on every hook call, and the gateway's adapter API (`/_busbar/v1/...`). Two agents
//! (`busbar_agent::cluster::grpc`, each on a fake engine, the create chain calling a fake
//! adapter) behind the cluster handler on a TLS front (`--tls-listen --tlsverify`), over the
//! real gRPC hop with mutual TLS. What an adapter author would check: the hook call says which
//! node runs it; an adapter certificate reaches any node's engine past the chains (no
//! re-entry); nobody else does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use busbar_gateway::cluster::{Cluster, HealthOptions, Member};
use busbar_gateway::schedule::Strategy;
use busbar_gateway::serve::ClusterHandler;
use busbar_testkit::adapter::pass;
use busbar_testkit::pki::FRONT;
use busbar_testkit::raw::{self, request, tls_exchange, RawResponse};
use busbar_testkit::{json, FakeAdapter, FakeEngine, GrpcAgent, TestPki, TestServer};
use busbar_tls::Role;
use serde_json::Value;

struct Bed {
    pki: TestPki,
    engines: BTreeMap<String, FakeEngine>,
    agents: Vec<GrpcAgent>,
    adapter: FakeAdapter,
    handler: Arc<ClusterHandler>,
    gateway: TestServer,
}

impl Bed {
    async fn start() -> Bed {
        busbar_testkit::logs();
        let pki = TestPki::new();
        let adapter = FakeAdapter::start(pass).await;
        let yaml = format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [who]\nadapters:\n  who: {}\n",
            adapter.url()
        );
        let mut engines = BTreeMap::new();
        let mut agents = vec![];
        let mut members = BTreeMap::new();
        for (node, zone) in [("node1", "a b"), ("node2", "z=2")] {
            let engine = FakeEngine::start_docker(node).await;
            engine.route(
                "POST /*/containers/create",
                json(201, r#"{"Id":"c1","Warnings":[]}"#),
            );
            let agent = GrpcAgent::start(&pki, node, &engine, &yaml, &[("zone", zone)]).await;
            members.insert(
                node.to_owned(),
                Member {
                    addr: agent.addr().to_string(),
                    labels: BTreeMap::new(),
                },
            );
            engines.insert(node.to_owned(), engine);
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
        let handler = Arc::new(ClusterHandler::new(cluster, Strategy::Spread, None));
        let gateway = TestServer::start_tls(handler.clone(), pki.docker_tls()).await;
        Bed {
            pki,
            engines,
            agents,
            adapter,
            handler,
            gateway,
        }
    }

    /// One request from a client whose certificate has `role`.
    async fn call(&self, role: Role, method: &str, target: &str, body: &[u8]) -> RawResponse {
        let me = self.pki.docker_client(Some(("flocker", role)));
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/json")]
        };
        tls_exchange(
            self.gateway.addr(),
            me,
            FRONT,
            &request(method, target, headers, body),
        )
        .await
    }

    fn creates_on(&self, node: &str) -> usize {
        self.engines[node]
            .requests_to("POST /*/containers/create")
            .len()
    }

    async fn stop(self) {
        self.gateway.stop().await;
        for agent in self.agents {
            agent.stop().await;
        }
        for (_, engine) in self.engines {
            engine.stop().await;
        }
        self.adapter.stop().await;
    }
}

const CREATE: &[u8] = br#"{"Image":"busybox"}"#;

#[tokio::test]
async fn a_hook_call_names_the_node_that_runs_it() {
    let bed = Bed::start().await;
    let rsp = bed
        .call(
            Role::Client,
            "POST",
            "/v1.41/containers/create?name=web",
            CREATE,
        )
        .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    let calls = bed.adapter.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    let node = call.header("x-busbar-node").expect("the node header");
    assert_eq!(
        bed.creates_on(node),
        1,
        "the hook ran on the node that created"
    );
    let labels = call
        .header("x-busbar-node-labels")
        .expect("the labels header");
    let expected = match node {
        "node1" => "zone=a%20b",
        _ => "zone=z%3D2",
    };
    assert_eq!(labels, expected);
    assert_eq!(call.header("x-busbar-adapter-api"), Some("1"));
    assert_eq!(call.header("x-busbar-role"), Some("client"));
    bed.stop().await;
}

#[tokio::test]
async fn an_adapter_lists_the_nodes() {
    let bed = Bed::start().await;
    let rsp = bed
        .call(Role::Adapter, "GET", "/_busbar/v1/nodes", b"")
        .await;
    assert_eq!(rsp.status(), 200, "{}", rsp.text());
    let nodes: Value = serde_json::from_str(&rsp.text()).unwrap();
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node1", "node2"]);
    assert_eq!(nodes[0]["labels"]["zone"], "a b");
    assert_eq!(nodes[1]["health"], "Healthy");
    bed.stop().await;
}

#[tokio::test]
async fn an_adapter_reaches_one_node_past_the_chains() {
    let bed = Bed::start().await;
    let rsp = bed
        .call(
            Role::Adapter,
            "POST",
            "/_busbar/v1/nodes/node2/v1.41/containers/create?name=helper",
            CREATE,
        )
        .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(bed.creates_on("node2"), 1);
    assert_eq!(bed.creates_on("node1"), 0);
    let got = &bed.engines["node2"].requests_to("POST /*/containers/create")[0];
    assert_eq!(got.target, "/v1.41/containers/create?name=helper");
    assert!(
        bed.adapter.calls().is_empty(),
        "no chain runs on an adapter's own call"
    );

    // The tail is sent in the canonical path's encoding: decoded once, like any path.
    bed.engines["node1"].route(
        "GET /*/containers/*/json",
        json(404, r#"{"message":"No such container"}"#),
    );
    let rsp = bed
        .call(
            Role::Adapter,
            "GET",
            "/_busbar/v1/nodes/node1/v1.41/containers/a%2541/json",
            b"",
        )
        .await;
    assert_eq!(rsp.status(), 404, "{}", rsp.text());
    let got = &bed.engines["node1"].requests_to("GET /*/containers/*/json")[0];
    assert_eq!(got.target, "/v1.41/containers/a%2541/json");

    let rsp = bed
        .call(
            Role::Adapter,
            "GET",
            "/_busbar/v1/nodes/node9/v1.41/containers/json",
            b"",
        )
        .await;
    assert_eq!(rsp.status(), 404);
    assert!(rsp.text().contains("No such node: node9"), "{}", rsp.text());
    bed.stop().await;
}

#[tokio::test]
async fn only_an_adapter_certificate_opens_the_adapter_api() {
    let bed = Bed::start().await;
    for target in [
        "/_busbar/v1/nodes",
        "/_busbar/v1/nodes/node2/v1.41/containers/json",
    ] {
        let rsp = bed.call(Role::Client, "GET", target, b"").await;
        assert_eq!(rsp.status(), 403, "{target}: {}", rsp.text());
        assert!(rsp.text().contains("adapter role"), "{}", rsp.text());
    }
    let rsp = bed
        .call(
            Role::Client,
            "POST",
            "/_busbar/v1/nodes/node2/v1.41/containers/create",
            CREATE,
        )
        .await;
    assert_eq!(rsp.status(), 403);
    assert_eq!(bed.creates_on("node2"), 0);

    // Without TLS there is no identity: refused as well.
    let plain = TestServer::start(bed.handler.clone()).await;
    let rsp = raw::exchange(plain.addr(), &request("GET", "/_busbar/v1/nodes", &[], b"")).await;
    assert_eq!(rsp.status(), 403);
    plain.stop().await;
    bed.stop().await;
}

#[tokio::test]
async fn the_adapter_kits_client_speaks_the_adapter_api() {
    use busbar_adapter::gateway::Gateway;
    use http::Method;

    let mut bed = Bed::start().await;
    // The kit checks the gateway's certificate as the Docker CLI does: for the URL's host.
    bed.gateway.stop().await;
    bed.gateway =
        TestServer::start_tls(bed.handler.clone(), bed.pki.docker_tls_for("localhost")).await;
    let url = format!("https://localhost:{}", bed.gateway.addr().port());
    let me = bed.pki.issue("flocker", Role::Adapter);
    let gw = Gateway::new(&url, &me.ca, &me.cert, &me.key).unwrap();

    let nodes = gw.nodes().await.unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node1", "node2"]);
    assert_eq!(nodes[1].labels["zone"], "z=2");

    let created = gw
        .engine("node2")
        .json(
            Method::POST,
            "/v1.41/containers/create?name=helper",
            Some(&serde_json::json!({"Image": "busybox"})),
        )
        .await
        .unwrap();
    assert_eq!(created["Id"], "c1");
    assert_eq!(bed.creates_on("node2"), 1);
    assert!(bed.adapter.calls().is_empty());

    // An engine's error comes back typed, with its message.
    bed.engines["node1"].route(
        "GET /*/volumes/*",
        json(404, r#"{"message":"get nope: no such volume"}"#),
    );
    let err = gw
        .engine("node1")
        .json(Method::GET, "/v1.41/volumes/nope", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND));
    assert!(err.to_string().contains("no such volume"), "{err}");

    // A client certificate without the adapter role is refused, with the gateway's reason.
    let alice = bed.pki.issue("alice", Role::Client);
    let err = Gateway::new(&url, &alice.ca, &alice.cert, &alice.key)
        .unwrap()
        .nodes()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::FORBIDDEN), "{err}");

    // A gateway that does not answer: a bounded wait and an error naming it.
    let err = Gateway::new("https://localhost:1", &me.ca, &me.cert, &me.key)
        .unwrap()
        .nodes()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("https://localhost:1"), "{err}");
    bed.stop().await;
}

//! In-process test of how busbar-volumes reaches the engines (`GatewayEngines`): the adapter
//! kit's client, with an adapter certificate, through the real gateway handler on its TLS
//! listener and two agents over the real gRPC hop with mutual TLS, to fake engines (test
//! doubles: no engine runs here). What matters to a move: the archive streams from one node's
//! engine into the other's as `application/x-tar` (the engine refuses it as anything else),
//! byte for byte, and no chain runs on the adapter's own calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use busbar_adapter::gateway::Gateway;
use busbar_gateway::cluster::{Cluster, HealthOptions, Member};
use busbar_gateway::schedule::Strategy;
use busbar_gateway::serve::ClusterHandler;
use busbar_testkit::adapter::pass;
use busbar_testkit::engine::{large_byte, Reply};
use busbar_testkit::{json, FakeAdapter, FakeEngine, GrpcAgent, TestPki, TestServer};
use busbar_tls::Role;
use busbar_volumes::engines::{EngineError, Engines, GatewayEngines, Place};

#[tokio::test]
async fn an_archive_streams_from_one_engine_into_another_as_a_tar() {
    busbar_testkit::logs();
    let pki = TestPki::new();
    // A chain on every archive call, to see that none runs on the adapter's own calls.
    let adapter = FakeAdapter::start(pass).await;
    let yaml = format!(
        "endpoints:\n  \"* /*/containers/*/archive\":\n    pre: [spy]\nadapters:\n  spy: {}\n",
        adapter.url()
    );
    let len: u64 = 3 << 20;
    let mut engines = BTreeMap::new();
    let mut agents = vec![];
    let mut members = BTreeMap::new();
    for node in ["node1", "node2"] {
        let engine = FakeEngine::start_docker(node).await;
        engine.route(
            "GET /*/containers/*/archive",
            Reply::large(200, "application/x-tar", len),
        );
        engine.route("PUT /*/containers/*/archive", json(200, ""));
        let agent = GrpcAgent::start(&pki, node, &engine, &yaml, &[]).await;
        members.insert(
            node.to_owned(),
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
    let handler = Arc::new(ClusterHandler::new(cluster, Strategy::Spread, None));
    let gateway = TestServer::start_tls(handler, pki.docker_tls_for("localhost")).await;
    let me = pki.issue("volumes", Role::Adapter);
    let url = format!("https://localhost:{}", gateway.addr().port());
    let gw = Gateway::new(&url, &me.ca, &me.cert, &me.key).unwrap();
    let engines_api = GatewayEngines::new(gw, Duration::from_secs(10), Duration::from_secs(30));

    let moved = engines_api
        .copy(
            Place {
                node: "node1",
                container: "src",
                path: "/busbar-volume",
            },
            Place {
                node: "node2",
                container: "dst",
                path: "/",
            },
        )
        .await
        .unwrap();
    assert_eq!(moved, len);
    let got = engines["node1"].requests_to("GET /*/containers/*/archive");
    assert_eq!(
        got[0].target,
        "/v1.41/containers/src/archive?path=%2Fbusbar-volume"
    );
    let put = &engines["node2"].requests_to("PUT /*/containers/*/archive")[0];
    assert_eq!(put.target, "/v1.41/containers/dst/archive?path=%2F");
    assert_eq!(put.header("content-type"), Some("application/x-tar"));
    assert_eq!(put.body.len() as u64, len);
    assert!(
        put.body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == large_byte(i as u64)),
        "the archive arrived byte for byte"
    );
    assert!(
        adapter.calls().is_empty(),
        "no chain ran on the adapter's calls"
    );

    // The target refusing (a full disk): the engine's error, naming the node.
    engines["node2"].route(
        "PUT /*/containers/*/archive",
        json(
            500,
            r#"{"message":"write /busbar-volume/f: no space left on device"}"#,
        ),
    );
    let src = Place {
        node: "node1",
        container: "src",
        path: "/busbar-volume",
    };
    let dst = Place {
        node: "node2",
        container: "dst",
        path: "/",
    };
    let err = engines_api
        .copy(src.clone(), dst.clone())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::Status {
            node: "node2".into(),
            status: 500,
            message: "write /busbar-volume/f: no space left on device".into()
        }
    );
    // The source missing: its 404, naming it.
    engines["node1"].route(
        "GET /*/containers/*/archive",
        json(404, r#"{"message":"No such container: src"}"#),
    );
    let err = engines_api.copy(src, dst).await.unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().starts_with("node1:"),
        "{err}"
    );

    gateway.stop().await;
    for agent in agents {
        agent.stop().await;
    }
    for (_, engine) in engines {
        engine.stop().await;
    }
    adapter.stop().await;
}

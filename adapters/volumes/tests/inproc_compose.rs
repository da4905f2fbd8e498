//! In-process test that busbar-volumes composes with another adapter in one chain, in either
//! order, as issue #17 asks of it and a network adapter: a client's create through the real
//! gateway and agents (gRPC hop, mutual TLS) runs a network-style pre-hook (a test double that
//! sets `NetworkingConfig` and a label, as busbar-net does) and busbar-volumes (on test
//! doubles of the engines and etcd, moving the volume); the engine gets both adapters' work.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use busbar_gateway::cluster::{Cluster, HealthOptions, Member};
use busbar_gateway::schedule::Strategy;
use busbar_gateway::serve::ClusterHandler;
use busbar_testkit::adapter::rewrite_body;
use busbar_testkit::pki::FRONT;
use busbar_testkit::raw::{request, tls_exchange};
use busbar_testkit::{json, FakeAdapter, FakeEngine, GrpcAgent, TestPki, TestServer};
use busbar_tls::Role;
use busbar_volumes::store::{MemStore, Record, Store};
use busbar_volumes::{Settings, Volumes};
use serde_json::{json as j, Value};
use support::FakeCluster;
use tokio::net::TcpListener;

#[tokio::test]
async fn the_volume_adapter_and_a_network_adapter_compose_in_either_order() {
    busbar_testkit::logs();
    // The network adapter's double: an address and a label, as busbar-net sets them.
    let net = FakeAdapter::start(rewrite_body(|doc| {
        doc["NetworkingConfig"] =
            j!({"EndpointsConfig": {"busbar": {"IPAMConfig": {"IPv4Address": "10.232.1.20"}}}});
        doc["Labels"]["busbar.net.addr"] = j!("10.232.1.20");
    }))
    .await;
    // busbar-volumes, data1 on node1 with one file.
    let cluster = FakeCluster::new(&["node1", "node2"]);
    let store = MemStore::new();
    cluster.add_container("node1", "seed", "created", "data1");
    cluster.with("node1", |n| {
        n.containers.clear();
        n.volumes
            .get_mut("data1")
            .unwrap()
            .files
            .insert("f".into(), b"hello".to_vec());
    });
    let record = Record {
        name: "data1".into(),
        node: "node1".into(),
        driver: "local".into(),
        options: BTreeMap::new(),
        labels: BTreeMap::new(),
        created_at: 0,
        moved_at: 0,
        moves: 0,
        stale: vec![],
    };
    assert!(store.create(&record).await.unwrap().is_none());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let volumes_url = format!("http://{}/volumes-adapter", listener.local_addr().unwrap());
    let options = busbar_adapter::server::Options::default();
    let stop = options.shutdown.clone();
    let adapter = Volumes::new(store.clone(), cluster.clone(), Settings::default());
    let server = tokio::spawn(busbar_adapter::server::serve(listener, adapter, options));

    let pki = TestPki::new();
    let client = pki.docker_client(Some(("alice", Role::Client)));
    for (order, to) in [("[net, volumes]", "node2"), ("[volumes, net]", "node1")] {
        let yaml = format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: {order}\n    post: [volumes]\n\
             adapters:\n  net: {}\n  volumes: {volumes_url}\n",
            net.url()
        );
        let mut engines = BTreeMap::new();
        let mut agents = vec![];
        let mut members = BTreeMap::new();
        for node in ["node1", "node2"] {
            let engine = FakeEngine::start_docker(node).await;
            engine.route(
                "POST /*/containers/create",
                json(201, r#"{"Id":"c1","Warnings":[]}"#),
            );
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
        let gw = Cluster::new(
            pki.gateway_tls(),
            HealthOptions {
                probe_interval: Duration::from_secs(3600),
                probe_timeout: Duration::from_secs(5),
            },
        );
        gw.set_members(&members);
        gw.probe_all().await;
        let gateway = TestServer::start_tls(
            Arc::new(ClusterHandler::new(gw, Strategy::Spread, None)),
            pki.docker_tls(),
        )
        .await;

        let body = j!({
            "Image": "busybox",
            "Env": [format!("constraint:node=={to}")],
            "Labels": {"app": "web"},
            "HostConfig": {"Binds": ["data1:/data"]}
        });
        let rsp = tls_exchange(
            gateway.addr(),
            client.clone(),
            FRONT,
            &request(
                "POST",
                "/v1.41/containers/create",
                &[("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            ),
        )
        .await;
        assert_eq!(rsp.status(), 201, "{order}: {}", rsp.text());
        let got = engines[to].requests_to("POST /*/containers/create");
        let sent: Value = serde_json::from_slice(&got[0].body).unwrap();
        assert_eq!(
            sent["NetworkingConfig"]["EndpointsConfig"]["busbar"]["IPAMConfig"]["IPv4Address"],
            "10.232.1.20",
            "{order}: the network adapter's rewrite reached the engine"
        );
        assert_eq!(sent["Labels"]["app"], "web", "{order}");
        assert_eq!(sent["Labels"]["busbar.net.addr"], "10.232.1.20", "{order}");
        assert_eq!(sent["HostConfig"]["Binds"], j!(["data1:/data"]), "{order}");
        assert_eq!(
            cluster.holders("data1"),
            [to],
            "{order}: the volume moved to {to}"
        );
        assert_eq!(cluster.files(to, "data1")["f"], b"hello");
        assert_eq!(store.get("data1").await.unwrap().unwrap().record.node, to);
        assert!(
            store.holder("data1").is_none(),
            "{order}: the post-hook released the lock"
        );

        gateway.stop().await;
        for agent in agents {
            agent.stop().await;
        }
        for (_, engine) in engines {
            engine.stop().await;
        }
    }
    net.stop().await;
    stop.cancel();
    server.await.unwrap();
}

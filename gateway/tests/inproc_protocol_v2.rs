//! In-process tests of protocol version 2 and of the hook call log through the gateway -> agent
//! hop: an agent (`busbar_agent::cluster::grpc`, on a fake engine, a test double) whose create
//! chain calls a v2 fake adapter (a test double), behind the cluster handler on a TLS front,
//! over the real gRPC hop with mutual TLS. What a user would check: the adapter's own answer
//! reaches the client whole through the gateway, the engine is never called; and an adapter
//! author reads the node's call log through the gateway (as `busbarctl adapter log` does),
//! following new calls as they come.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use busbar_gateway::cluster::{Cluster, HealthOptions, Member};
use busbar_gateway::schedule::Strategy;
use busbar_gateway::serve::ClusterHandler;
use busbar_testkit::adapter::answer_v2;
use busbar_testkit::raw::{request, tls_exchange, RawResponse};
use busbar_testkit::{json, FakeAdapter, FakeEngine, GrpcAgent, TestPki, TestServer};
use busbar_tls::Role;
use http_body_util::BodyExt;
use serde_json::{json as j, Value};

struct Bed {
    pki: TestPki,
    engine: FakeEngine,
    agent: GrpcAgent,
    adapter: FakeAdapter,
    handler: Arc<ClusterHandler>,
    gateway: TestServer,
    _dir: tempfile::TempDir,
}

impl Bed {
    async fn start() -> Bed {
        busbar_testkit::logs();
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let adapter = FakeAdapter::start(answer_v2(201, j!({"Id": "from-adapter"}))).await;
        let yaml = format!(
            "version: 2\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [answerer]\n\
             adapters:\n  answerer:\n    url: {}\n    protocol: 2\n    debug: true\n",
            adapter.url()
        );
        let engine = FakeEngine::start_docker("node1").await;
        engine.route(
            "POST /*/containers/create",
            json(201, r#"{"Id":"from-engine"}"#),
        );
        let log = dir.path().join("hook-calls.jsonl");
        let agent = GrpcAgent::start_logged(&pki, "node1", &engine, &yaml, &[], Some(&log)).await;
        let members = BTreeMap::from([(
            "node1".to_owned(),
            Member {
                addr: agent.addr().to_string(),
                labels: BTreeMap::new(),
            },
        )]);
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
        let gateway = TestServer::start_tls(handler.clone(), pki.docker_tls_for("localhost")).await;
        Bed {
            pki,
            engine,
            agent,
            adapter,
            handler,
            gateway,
            _dir: dir,
        }
    }

    async fn call(&self, role: Role, method: &str, target: &str, body: &[u8]) -> RawResponse {
        // One name per role: the test PKI issues a name once.
        let name = if role == Role::Client {
            "alice"
        } else {
            "author"
        };
        let me = self.pki.docker_client(Some((name, role)));
        tls_exchange(
            self.gateway.addr(),
            me,
            "localhost",
            &request(
                method,
                target,
                &[("Content-Type", "application/json")],
                body,
            ),
        )
        .await
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.agent.stop().await;
        self.engine.stop().await;
        self.adapter.stop().await;
        drop(self.handler);
    }
}

const CREATE: &[u8] = br#"{"Image":"busybox","Env":["TOKEN=hunter2"]}"#;

#[tokio::test]
async fn a_v2_pre_hooks_own_answer_crosses_the_hop_whole_and_the_engine_is_never_called() {
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
    assert_eq!(rsp.json(), j!({"Id": "from-adapter"}));
    assert_eq!(rsp.header("x-answered-by"), Some("fake-adapter"));
    assert!(
        bed.engine
            .requests_to("POST /*/containers/create")
            .is_empty(),
        "the engine was called"
    );
    let call = &bed.adapter.calls()[0].payload;
    assert_eq!(call["Caller"]["Node"]["Name"], "node1");
    assert_eq!(
        call["Caller"]["Client"],
        j!({"User": "alice", "AuthMethod": "TLS", "Role": "client"})
    );
    bed.stop().await;
}

#[tokio::test]
async fn an_adapter_reads_and_follows_a_nodes_call_log_through_the_gateway() {
    use busbar_adapter::gateway::Gateway;
    use http::Method;

    let bed = Bed::start().await;
    // Only an adapter certificate reads it.
    let refused = bed
        .call(
            Role::Client,
            "GET",
            "/_busbar/v1/nodes/node1/_busbar/hook-log",
            b"",
        )
        .await;
    assert_eq!(refused.status(), 403, "{}", refused.text());

    let url = format!("https://localhost:{}", bed.gateway.addr().port());
    let me = bed.pki.issue("author", Role::Adapter);
    let gw = Gateway::new(&url, &me.ca, &me.cert, &me.key).unwrap();
    let rsp = gw
        .engine("node1")
        .send(
            Method::GET,
            "/_busbar/hook-log?adapter=answerer&follow=1",
            busbar_adapter::gateway::empty(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();

    let created = bed
        .call(Role::Client, "POST", "/v1.41/containers/create", CREATE)
        .await;
    assert_eq!(created.status(), 201, "{}", created.text());

    let mut text = String::new();
    let line: Value = busbar_testkit::within("a followed line", async {
        loop {
            if let Some(line) = text.lines().next() {
                return serde_json::from_str(line).unwrap();
            }
            let frame = body.frame().await.expect("the follow stays open").unwrap();
            if let Some(data) = frame.data_ref() {
                text.push_str(std::str::from_utf8(data).unwrap());
            }
        }
    })
    .await;
    assert_eq!(line["adapter"], "answerer");
    assert_eq!(line["node"], "node1");
    assert_eq!(line["type"], "pre-hook");
    assert_eq!(line["answer"]["Response"]["Code"], 201);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("TOKEN=<redacted>"), "{text}");

    // A node's log read whole, without follow, ends.
    let whole = bed
        .call(
            Role::Adapter,
            "GET",
            "/_busbar/v1/nodes/node1/_busbar/hook-log",
            b"",
        )
        .await;
    assert_eq!(whole.status(), 200, "{}", whole.text());
    assert_eq!(whole.text().lines().count(), 1);
    drop(body);
    bed.stop().await;
}

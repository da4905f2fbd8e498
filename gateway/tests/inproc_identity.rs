//! In-process tests of the client's identity across the hop: a gateway front with TLS for
//! Docker clients (`--tls-listen --tlsverify`), the gateway's hop client, the agent's gRPC
//! service over mutual TLS, its chains and a fake adapter. What a user would check: the
//! adapter behind the agent is told who the client is, and a client that sends the identity
//! headers itself does not get them through, with or without TLS.

use std::sync::Arc;

use busbar_gateway::hop::AgentLink;
use busbar_gateway::remote::Remote;
use busbar_http::body::full;
use busbar_http::{ClientIdentity, RequestCtx};
use busbar_testkit::adapter::pass;
use busbar_testkit::pki::FRONT;
use busbar_testkit::raw::{self, request, tls_exchange};
use busbar_testkit::{json, within, FakeAdapter, FakeEngine, GrpcAgent, TestPki, TestServer};
use busbar_tls::Role;
use http::Request;

/// A create whose client claims to be root.
fn forged_create() -> Vec<u8> {
    request(
        "POST",
        "/v1.41/containers/create",
        &[
            ("Content-Type", "application/json"),
            ("X-Busbar-User", "root"),
            ("X-Busbar-Auth-Method", "TLS"),
        ],
        br#"{"Image":"busybox"}"#,
    )
}

struct Bed {
    pki: TestPki,
    engine: FakeEngine,
    adapter: FakeAdapter,
    agent: GrpcAgent,
}

impl Bed {
    async fn start() -> Bed {
        busbar_testkit::logs();
        let pki = TestPki::new();
        let engine = FakeEngine::start().await;
        engine.route(
            "POST /*/containers/create",
            json(201, r#"{"Id":"c1","Warnings":[]}"#),
        );
        let adapter = FakeAdapter::start(pass).await;
        let yaml = format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [who]\nadapters:\n  who: {}\n",
            adapter.url()
        );
        let agent = GrpcAgent::start(&pki, "node1", &engine, &yaml, &[]).await;
        Bed {
            pki,
            engine,
            adapter,
            agent,
        }
    }

    fn link(&self) -> AgentLink {
        AgentLink::new(
            "node1",
            &self.agent.addr().to_string(),
            self.pki.gateway_tls(),
        )
        .expect("a valid link")
    }

    /// The identity headers the adapter got on its last call.
    fn told(&self) -> (Option<String>, Option<String>) {
        let calls = self.adapter.calls();
        let last = calls.last().expect("the adapter was called");
        (
            last.header("x-busbar-user").map(str::to_owned),
            last.header("x-busbar-auth-method").map(str::to_owned),
        )
    }

    async fn stop(self) {
        self.agent.stop().await;
        self.engine.stop().await;
    }
}

#[tokio::test]
async fn the_adapter_behind_the_agent_is_told_the_gateways_verified_client() {
    let bed = Bed::start().await;
    let front =
        TestServer::start_tls(Arc::new(Remote { agent: bed.link() }), bed.pki.docker_tls()).await;

    let alice = bed.pki.docker_client(Some(("alice", Role::Client)));
    let rsp = tls_exchange(front.addr(), alice, FRONT, &forged_create()).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(bed.told(), (Some("alice".into()), Some("TLS".into())));
    // The engine never sees the identity headers.
    let got = bed.engine.requests();
    assert_eq!(got[0].header("x-busbar-user"), None);
    assert_eq!(got[0].header("x-busbar-auth-method"), None);
    front.stop().await;
    bed.stop().await;
}

#[tokio::test]
async fn a_client_that_sends_the_identity_headers_itself_does_not_get_them_through() {
    let bed = Bed::start().await;
    let front = TestServer::start(Arc::new(Remote { agent: bed.link() })).await;
    let rsp = raw::exchange(front.addr(), &forged_create()).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(bed.told(), (None, None));
    front.stop().await;

    // Even a request that reaches the hop with the headers in it (no front stripped them)
    // carries only the identity of its context.
    let link = bed.link();
    let forged = || {
        Request::post("/v1.41/containers/create")
            .header("content-type", "application/json")
            .header("x-busbar-user", "root")
            .header("x-busbar-auth-method", "TLS")
            .body(full(r#"{"Image":"busybox"}"#))
            .unwrap()
    };
    let req = forged();
    let ctx = RequestCtx::new(&req);
    let rsp = within("the exchange", link.exchange(req, &ctx))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 201);
    assert_eq!(bed.told(), (None, None));
    let req = forged();
    let mut ctx = RequestCtx::new(&req);
    ctx.set_identity(Some(Arc::new(ClientIdentity::tls("Zoë Doe".into()))));
    let rsp = within("the exchange", link.exchange(req, &ctx))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 201);
    assert_eq!(
        bed.told(),
        (Some("Zo%C3%AB%20Doe".into()), Some("TLS".into()))
    );
    bed.stop().await;
}

//! In-process tests of lanes on the gateway <-> agent hop (`busbar_gateway::lanes`, the
//! agent's `busbar_agent::cluster::lane`): the agent's gRPC service in front of a fake engine,
//! with mutual TLS on `127.0.0.1:0`, driven by the gateway's `AgentLink` with lanes on.
//! The agent "without lanes" is a test double of an agent older than lanes
//! (`GrpcAgent::start_without_lanes`: its `Lane` rpc answers UNIMPLEMENTED, as tonic does for
//! a method a server lacks).

use std::time::Duration;

use busbar_gateway::hop::AgentLink;
use busbar_http::body::{empty, full};
use busbar_http::{Body, BoxError, RequestCtx};
use busbar_testkit::engine::large_byte;
use busbar_testkit::{json, within, FakeEngine, GrpcAgent, Reply, TestPki};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};

struct Hop {
    engine: FakeEngine,
    agent: GrpcAgent,
    link: AgentLink,
}

impl Hop {
    /// A link with lanes on, at most `max` of them, idle at most `idle`.
    async fn start(engine: FakeEngine, lanes: bool, max: usize, idle: Duration) -> Hop {
        busbar_testkit::logs();
        let pki = TestPki::new();
        let agent = if lanes {
            GrpcAgent::start(&pki, "node1", &engine, "", &[]).await
        } else {
            GrpcAgent::start_without_lanes(&pki, "node1", &engine).await
        };
        let link = AgentLink::new("node1", &agent.addr().to_string(), pki.gateway_tls())
            .expect("a valid link")
            .with_lanes(true, max, idle);
        Hop {
            engine,
            agent,
            link,
        }
    }

    async fn exchange(&self, req: Request<Body>) -> Response<Body> {
        let ctx = RequestCtx::new(&req);
        within("the exchange", self.link.exchange(req, &ctx))
            .await
            .unwrap_or_else(|e| panic!("exchange failed: {e}"))
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let rsp = self
            .exchange(Request::get(path).body(empty()).unwrap())
            .await;
        let status = rsp.status().as_u16();
        (status, body_text(rsp).await)
    }

    async fn stop(self) {
        drop(self.link);
        self.agent.stop().await;
        self.engine.stop().await;
    }
}

async fn body_text(rsp: Response<Body>) -> String {
    let bytes = within("the body", rsp.into_body().collect())
        .await
        .expect("a whole body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A request body sent in `chunks`, each after a pause (so that it streams on the lane).
fn streamed(chunks: Vec<&'static str>) -> Body {
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut chunks| async move {
        let chunk = chunks.next()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((
            Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(chunk.as_bytes()))),
            chunks,
        ))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

#[tokio::test]
async fn one_lane_carries_successive_exchanges_with_and_without_bodies() {
    let engine = FakeEngine::start().await;
    engine.route("GET /*/containers/json", json(200, "[]"));
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let hop = Hop::start(engine, true, 4, Duration::from_secs(20)).await;
    for i in 0..20 {
        let (status, body) = hop.get("/v1.41/containers/json").await;
        assert_eq!((status, body.as_str()), (200, "[]"), "exchange {i}");
        if i % 5 == 0 {
            // A streamed body, then the next exchange on the same lane.
            let req = Request::post("/v1.41/containers/create?name=web")
                .header("content-type", "application/json")
                .body(streamed(vec![
                    r#"{"Image":"#,
                    r#""busybox","#,
                    r#""Cmd":["true"]}"#,
                ]))
                .unwrap();
            let rsp = hop.exchange(req).await;
            assert_eq!(rsp.status(), 201);
            assert_eq!(body_text(rsp).await, r#"{"Id":"c1","Warnings":[]}"#);
        }
    }
    let (open, idle, unsupported) = hop.link.lane_counts();
    assert_eq!(
        (open, idle, unsupported),
        (1, 1, false),
        "one lane, reused for every exchange"
    );
    let creates = hop.engine.requests_to("POST /*/containers/create");
    assert_eq!(creates.len(), 4);
    for create in creates {
        assert_eq!(create.json()["Image"], "busybox", "the whole body arrived");
    }
    assert_eq!(hop.engine.requests_to("GET /*/containers/json").len(), 20);
    hop.stop().await;
}

#[tokio::test]
async fn an_exchange_cut_mid_body_is_not_reused_and_the_next_one_is_served_whole() {
    let engine = FakeEngine::start().await;
    let len = 4 * 1024 * 1024 + 3;
    engine.route(
        "GET /*/images/*/get",
        Reply::large(200, "application/x-tar", len),
    );
    engine.route("GET /*/containers/json", json(200, r#"[{"Id":"c1"}]"#));
    let hop = Hop::start(engine, true, 4, Duration::from_secs(20)).await;
    let rsp = hop
        .exchange(
            Request::get("/v1.41/images/busybox/get")
                .body(empty())
                .unwrap(),
        )
        .await;
    let mut body = rsp.into_body();
    let first = within("a first chunk", body.frame())
        .await
        .expect("open")
        .expect("a frame");
    assert!(first.is_data());
    assert_eq!(hop.link.lane_counts().0, 1, "the exchange holds its lane");
    drop(body); // the client goes away mid-body
    assert_eq!(
        hop.link.lane_counts(),
        (0, 0, false),
        "the cut lane is dropped, not put back"
    );
    for _ in 0..3 {
        let (status, text) = hop.get("/v1.41/containers/json").await;
        assert_eq!((status, text.as_str()), (200, r#"[{"Id":"c1"}]"#));
        let rsp = hop
            .exchange(
                Request::get("/v1.41/images/busybox/get")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        let bytes = within("the large body", rsp.into_body().collect())
            .await
            .expect("whole")
            .to_bytes();
        assert_eq!(bytes.len() as u64, len);
        assert!(bytes
            .iter()
            .enumerate()
            .all(|(i, b)| *b == large_byte(i as u64)));
    }
    assert_eq!(hop.link.lane_counts(), (1, 1, false));
    hop.stop().await;
}

/// A client's upload that breaks off (the volumes adapter's copy when the source node dies):
/// the agent must learn that the body will not come, or the engine waits for the rest of it
/// for ever, holding the container (`docker rm` of it then hangs too).
#[tokio::test]
async fn a_request_body_that_breaks_off_ends_the_exchange_on_the_agent_too() {
    upload_breaks_off(true).await;
    upload_breaks_off(false).await; // by calls of their own
}

async fn upload_breaks_off(lanes: bool) {
    let engine = FakeEngine::start().await;
    engine.route("PUT /*/containers/*/archive", json(200, ""));
    engine.route("GET /*/containers/json", json(200, "[]"));
    let hop = Hop::start(engine, lanes, 4, Duration::from_secs(20)).await;
    let broken = futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(
        Bytes::from_static(b"the first part of a tar"),
    ))])
    .chain(futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err::<http_body::Frame<Bytes>, BoxError>("the source broke off".into())
    }));
    let req = Request::put("/v1.41/containers/c1/archive?path=/")
        .header("content-type", "application/x-tar")
        .body(BodyExt::boxed(StreamBody::new(broken)))
        .unwrap();
    let ctx = RequestCtx::new(&req);
    match within("the broken upload's answer", hop.link.exchange(req, &ctx)).await {
        Ok(rsp) => {
            let status = rsp.status();
            let text = body_text(rsp).await;
            assert!(status.is_server_error(), "{status} {text}");
        }
        Err(e) => eprintln!("lanes {lanes}: the broken upload failed: {e}"),
    }
    let puts = hop.engine.requests_to("PUT /*/containers/*/archive");
    assert!(
        puts.iter().all(|put| !put.whole),
        "the engine never took a cut upload for a whole one: {puts:?}"
    );
    assert_eq!(
        hop.link.lane_counts(),
        (0, 0, !lanes),
        "the cut lane is dropped, not put back"
    );
    let (status, text) = hop.get("/v1.41/containers/json").await;
    assert_eq!((status, text.as_str()), (200, "[]"));
    hop.stop().await;
}

#[tokio::test]
async fn the_pool_grows_with_concurrency_up_to_its_bound_and_shrinks_when_idle() {
    let engine = FakeEngine::start().await;
    engine.route(
        "GET /*/containers/json",
        json(200, "[]").delayed(Duration::from_millis(300)),
    );
    engine.route("GET /*/version", json(200, "{}"));
    let idle = Duration::from_millis(500);
    let hop = Hop::start(engine, true, 3, idle).await;
    let calls = (0..8).map(|_| hop.get("/v1.41/containers/json"));
    let watch = async {
        let mut most = 0;
        for _ in 0..20 {
            most = most.max(hop.link.lane_counts().0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    };
    let (answers, most) = tokio::join!(futures_util::future::join_all(calls), watch);
    for (status, body) in answers {
        assert_eq!(
            (status, body.as_str()),
            (200, "[]"),
            "past the bound, by a call"
        );
    }
    assert_eq!(most, 3, "the pool grew to its bound and no further");
    assert_eq!(hop.link.lane_counts(), (3, 3, false));
    tokio::time::sleep(idle + Duration::from_millis(100)).await;
    let (status, _) = hop.get("/v1.41/version").await;
    assert_eq!(status, 200);
    assert_eq!(
        hop.link.lane_counts(),
        (1, 1, false),
        "lanes idle past the limit were closed"
    );
    hop.stop().await;
}

#[tokio::test]
async fn an_agent_without_lanes_gets_one_call_per_exchange_remembered() {
    let engine = FakeEngine::start().await;
    engine.route("GET /*/containers/json", json(200, "[]"));
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let hop = Hop::start(engine, false, 4, Duration::from_secs(20)).await;
    for _ in 0..5 {
        let (status, body) = hop.get("/v1.41/containers/json").await;
        assert_eq!((status, body.as_str()), (200, "[]"));
    }
    let req = Request::post("/v1.41/containers/create")
        .header("content-type", "application/json")
        .body(full(r#"{"Image":"busybox"}"#))
        .unwrap();
    assert_eq!(hop.exchange(req).await.status(), 201);
    assert_eq!(
        hop.link.lane_counts(),
        (0, 0, true),
        "no lane, and the agent is remembered as having none"
    );
    hop.stop().await;
}

#[tokio::test]
async fn a_gateway_without_lanes_is_served_by_a_new_agent() {
    let engine = FakeEngine::start().await;
    engine.route("GET /*/containers/json", json(200, "[]"));
    let mut hop = Hop::start(engine, true, 4, Duration::from_secs(20)).await;
    hop.link = hop
        .link
        .clone()
        .with_lanes(false, 4, Duration::from_secs(20));
    for _ in 0..3 {
        let (status, body) = hop.get("/v1.41/containers/json").await;
        assert_eq!((status, body.as_str()), (200, "[]"));
    }
    assert_eq!(hop.link.lane_counts(), (0, 0, false));
    hop.stop().await;
}

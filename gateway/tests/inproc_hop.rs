//! In-process tests of the gateway <-> agent hop: the agent's gRPC service
//! (`busbar_agent::cluster::grpc`, its proxy in front of a fake engine) served with mutual TLS
//! on `127.0.0.1:0`, certificates issued in the test by `busbar_tls::pki`, driven by the
//! gateway's hop client (`busbar_gateway::hop::AgentLink`). See `busbar_testkit`.

use std::time::Duration;

use busbar_gateway::hop::{AgentError, AgentLink};
use busbar_hop::v1::DescribeRequest;
use busbar_http::body::{empty, full};
use busbar_http::hijack::Hijacked;
use busbar_http::{Body, RequestCtx};
use busbar_testkit::engine::large_byte;
use busbar_testkit::{json, within, FakeEngine, GrpcAgent, Hijack, Reply, TestPki};
use busbar_tls::Role;
use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fake engine behind node1's agent, and the gateway's link to it.
struct Hop {
    pki: TestPki,
    engine: FakeEngine,
    agent: GrpcAgent,
    link: AgentLink,
}

impl Hop {
    async fn start(engine: FakeEngine) -> Hop {
        busbar_testkit::logs();
        let pki = TestPki::new();
        let agent = GrpcAgent::start(&pki, "node1", &engine, "", &[("zone", "a")]).await;
        let link = AgentLink::new("node1", &agent.addr().to_string(), pki.gateway_tls())
            .expect("a valid link");
        Hop {
            pki,
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

    /// What the engine received from clients: the agent's own pings (its health watch) left out.
    fn requests(&self) -> Vec<busbar_testkit::Recorded> {
        self.engine
            .requests()
            .into_iter()
            .filter(|r| r.path() != "/_ping")
            .collect()
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

#[tokio::test]
async fn an_exchange_with_a_body_reaches_the_engine_and_its_answer_comes_back() {
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let hop = Hop::start(engine).await;

    let body = r#"{"Image":"busybox","Cmd":["echo","hi"]}"#;
    let req = Request::post("/v1.41/containers/create?name=web")
        .header("content-type", "application/json")
        .header("x-request-id", "hop-req-1")
        .body(full(body))
        .unwrap();
    let rsp = hop.exchange(req).await;
    assert_eq!(rsp.status(), 201);
    assert_eq!(
        rsp.headers().get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(body_text(rsp).await, r#"{"Id":"c1","Warnings":[]}"#);

    let got = hop.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line(), "POST /v1.41/containers/create?name=web");
    assert_eq!(&got[0].body[..], body.as_bytes());
    assert_eq!(got[0].header("x-request-id"), Some("hop-req-1"));
    hop.stop().await;
}

#[tokio::test]
async fn the_trace_crosses_the_hop_with_the_agents_own_span() {
    let engine = FakeEngine::start().await;
    engine.route("GET /*/containers/json", json(200, "[]"));
    let hop = Hop::start(engine).await;
    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = Request::get("/v1.41/containers/json")
        .header("traceparent", CLIENT)
        .body(empty())
        .unwrap();
    // The gateway's context: its own span, a child of the client's.
    let ctx = RequestCtx::new(&req);
    let gateway_span = ctx.trace.span_id.to_string();
    let rsp = within("the exchange", hop.link.exchange(req, &ctx))
        .await
        .unwrap_or_else(|e| panic!("exchange failed: {e}"));
    assert_eq!(rsp.status(), 200);
    let got = hop.requests();
    assert_eq!(got.len(), 1);
    let sent = got[0].header("traceparent").expect("a traceparent");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{sent}");
    assert_ne!(
        parts[2], gateway_span,
        "the agent has a span of its own: {sent}"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "{sent}");
    assert_eq!(parts[3], "01");
    hop.stop().await;
}

#[tokio::test]
async fn a_bodiless_exchange_reaches_the_engine_without_a_body() {
    let engine = FakeEngine::start().await;
    engine.route(
        "GET /*/containers/json",
        json(200, r#"[{"Id":"c1","Names":["/web"]}]"#),
    );
    let hop = Hop::start(engine).await;

    let req = Request::get("/v1.41/containers/json?all=1")
        .body(empty())
        .unwrap();
    let rsp = hop.exchange(req).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(body_text(rsp).await, r#"[{"Id":"c1","Names":["/web"]}]"#);
    let got = hop.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line(), "GET /v1.41/containers/json?all=1");
    assert!(got[0].body.is_empty());

    // And an engine error passes as the engine's answer, not as a hop failure.
    let req = Request::get("/v1.41/nope").body(empty()).unwrap();
    let rsp = hop.exchange(req).await;
    assert_eq!(rsp.status(), 404);
    assert_eq!(body_text(rsp).await, r#"{"message":"page not found"}"#);
    hop.stop().await;
}

#[tokio::test]
async fn a_streamed_answer_comes_as_it_is_made_and_a_large_one_whole() {
    let engine = FakeEngine::start().await;
    engine.route(
        "GET /*/events",
        Reply::endless(
            200,
            "application/json",
            ["{\"status\":\"create\"}\n", "{\"status\":\"start\"}\n"],
        ),
    );
    let len = 8 * 1024 * 1024 + 17;
    engine.route(
        "GET /*/images/*/get",
        Reply::large(200, "application/x-tar", len),
    );
    let hop = Hop::start(engine).await;

    let rsp = hop
        .exchange(Request::get("/v1.41/events").body(empty()).unwrap())
        .await;
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();
    let mut seen = String::new();
    while seen.lines().count() < 2 {
        let frame = within("an event", body.frame())
            .await
            .expect("the stream is open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            seen += &String::from_utf8_lossy(&data);
        }
    }
    assert_eq!(seen, "{\"status\":\"create\"}\n{\"status\":\"start\"}\n");
    drop(body); // the client goes away from an endless stream

    let rsp = hop
        .exchange(
            Request::get("/v1.41/images/busybox/get")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(rsp.status(), 200);
    let bytes = within("the large body", rsp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(bytes.len() as u64, len);
    assert!(bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b == large_byte(i as u64)));
    hop.stop().await;
}

#[tokio::test]
async fn a_hijacked_exchange_keeps_half_close_both_ways() {
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/c1/attach",
        Reply::hijack(Hijack::echo("ready\n", "stdin closed\n")),
    );
    engine.route(
        "POST /*/containers/c2/attach",
        Reply::hijack(Hijack::close_first("all output\n")),
    );
    let hop = Hop::start(engine).await;
    let attach = |id: &str| {
        Request::post(format!(
            "/v1.41/containers/{id}/attach?stream=1&stdin=1&stdout=1"
        ))
        .header("connection", "Upgrade")
        .header("upgrade", "tcp")
        .body(empty())
        .unwrap()
    };

    // The gateway's EOF reaches the engine as a write shutdown; output still flows back.
    let mut rsp = hop.exchange(attach("c1")).await;
    assert_eq!(rsp.status(), 101);
    let mut io = within(
        "the hijacked stream",
        Hijacked::take(&mut rsp).expect("a stream"),
    )
    .await
    .expect("the stream");
    let mut buf = vec![0u8; 6];
    within("the greeting", io.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, b"ready\n");
    io.write_all(b"hello\n").await.unwrap();
    io.flush().await.unwrap();
    within("the echo", io.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, b"hello\n");
    io.shutdown().await.unwrap();
    let mut rest = vec![];
    within("the end", io.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, b"stdin closed\n");
    drop(io);

    // The engine's EOF reaches the gateway while input still flows to the engine.
    let mut rsp = hop.exchange(attach("c2")).await;
    assert_eq!(rsp.status(), 101);
    let mut io = within(
        "the hijacked stream",
        Hijacked::take(&mut rsp).expect("a stream"),
    )
    .await
    .expect("the stream");
    let mut out = vec![];
    within(
        "the engine's output up to its EOF",
        io.read_to_end(&mut out),
    )
    .await
    .unwrap();
    assert_eq!(out, b"all output\n");
    io.write_all(b"late input\n").await.unwrap();
    io.shutdown().await.unwrap();
    hop.engine
        .wait_until("both hijacks end", |_, h| {
            h.len() == 2 && h.iter().all(|h| h.done)
        })
        .await;
    drop(io);

    let h = hop.engine.hijacks();
    assert_eq!(
        h[0].target,
        "/v1.41/containers/c1/attach?stream=1&stdin=1&stdout=1"
    );
    assert_eq!(h[0].received, b"hello\n");
    assert!(h[0].client_eof);
    assert_eq!(h[1].received, b"late input\n");
    assert!(h[1].client_eof);
    hop.stop().await;
}

#[tokio::test]
async fn a_client_certificate_with_the_wrong_role_is_refused_in_the_handshake() {
    let engine = FakeEngine::start().await;
    engine.route("GET /*/containers/json", json(200, "[]"));
    let hop = Hop::start(engine).await;

    for (name, role) in [("node2", Role::Agent), ("operator", Role::Client)] {
        let files = hop.pki.issue(name, role);
        let tls = busbar_tls::client_config(&files, Role::Agent).expect("a client config");
        let link = AgentLink::new("node1", &hop.agent.addr().to_string(), tls).unwrap();
        let req = Request::get("/v1.41/containers/json")
            .body(empty())
            .unwrap();
        let ctx = RequestCtx::new(&req);
        let err = within("the refused exchange", link.exchange(req, &ctx))
            .await
            .expect_err("a certificate with the wrong role must not get through");
        assert!(
            matches!(
                err,
                AgentError::Unreachable { .. } | AgentError::Failed { .. }
            ),
            "{name} ({role}): {err}"
        );
        let text = err.to_string();
        assert!(text.starts_with("node node1 ("), "{text}");

        // The same certificate on a bare TLS connection: the agent ends it before any
        // application byte (TLS 1.3: the client learns it on its first read).
        let tls = busbar_tls::client_config(&files, Role::Agent).unwrap();
        let tcp = tokio::net::TcpStream::connect(hop.agent.addr())
            .await
            .unwrap();
        let server_name = rustls::pki_types::ServerName::try_from("node1").unwrap();
        let refused = match within(
            "the handshake",
            tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp),
        )
        .await
        {
            Err(e) => e.to_string(),
            Ok(mut tls) => {
                let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                let mut buf = [0u8; 64];
                match within("the agent's answer", tls.read(&mut buf)).await {
                    Ok(0) => "closed".to_owned(),
                    Ok(n) => panic!("{name} ({role}) got {n} bytes from the agent"),
                    Err(e) => e.to_string(),
                }
            }
        };
        // (Today the agent drops the connection without a TLS alert: the client reads
        // "peer closed connection without sending TLS close_notify", not why.)
        assert!(!refused.is_empty());
    }
    assert!(hop.requests().is_empty(), "{:?}", hop.requests());

    // The gateway's own certificate gets through the same agent.
    let rsp = hop
        .exchange(
            Request::get("/v1.41/containers/json")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(hop.requests().len(), 1);
    hop.stop().await;
}

#[tokio::test]
async fn describe_reports_the_engines_version_and_info() {
    let engine = FakeEngine::start_docker("node1").await;
    engine.add_container("web", "busybox");
    let hop = Hop::start(engine).await;

    // What a gateway older than the request's fields sends: documents fetched for the call.
    let old_gateway = DescribeRequest::default();
    let d = within(
        "describe",
        hop.link.describe(old_gateway, Duration::from_secs(5)),
    )
    .await
    .unwrap_or_else(|e| panic!("describe failed: {e}"));
    assert!(
        !d.docs_cached,
        "an old gateway gets documents fetched for its call"
    );
    assert_eq!(d.name, "node1");
    assert_eq!(d.advertise, hop.agent.addr().to_string());
    assert_eq!(d.labels.get("zone").map(String::as_str), Some("a"));
    assert!(d.engine_reachable, "{}", d.engine_error);
    let version: Value = serde_json::from_slice(&d.engine_version_json).unwrap();
    assert_eq!(version["Version"], "20.10.24");
    assert_eq!(version["ApiVersion"], "1.41");
    let info: Value = serde_json::from_slice(&d.engine_info_json).unwrap();
    assert_eq!(info["Name"], "node1");
    assert_eq!(info["Containers"], 1);
    assert_eq!(info["NCPU"], 2);
    assert!(hop
        .engine
        .requests()
        .iter()
        .any(|r| r.line() == "GET /version"));
    hop.stop().await;
}

/// A busy engine is not a dead one: the agent answers a probe within the time the probe
/// gives it, from its cache, while `/info` takes seconds (dockerd 20.10's `/info` blocks behind
/// a pull that cannot reach its registry), and the slow fetch still lands for a later probe.
#[tokio::test]
async fn describe_answers_within_its_wait_while_info_is_slow() {
    let engine = FakeEngine::start_docker("node1").await;
    engine.add_container("web", "busybox");
    let hop = Hop::start(engine).await;
    let probe = |wait_ms, max_age_ms| {
        hop.link.describe(
            DescribeRequest {
                wait_ms,
                max_age_ms,
            },
            Duration::from_secs(5),
        )
    };
    let containers = |d: &busbar_hop::v1::NodeDescription| -> i64 {
        serde_json::from_slice::<Value>(&d.engine_info_json).unwrap()["Containers"]
            .as_i64()
            .unwrap()
    };
    let d = within("the first probe", probe(2000, 0)).await.unwrap();
    assert!(d.engine_reachable && !d.docs_cached, "{d:?}");
    assert_eq!(containers(&d), 1);

    hop.engine.slow("GET /*/info", Duration::from_millis(1500));
    hop.engine.add_container("db", "busybox");
    let asked = std::time::Instant::now();
    let d = within("a probe while /info is slow", probe(200, 0))
        .await
        .unwrap();
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    assert!(
        d.engine_reachable,
        "a slow /info is not an unreachable engine: {d:?}"
    );
    assert!(d.docs_cached, "the documents are the cached ones");
    assert_eq!(containers(&d), 1);

    // The fetch it started goes on, and its documents are there for a later probe.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let d = within("a later probe", probe(200, 60_000)).await.unwrap();
    assert_eq!(containers(&d), 2, "{d:?}");
    assert!(d.docs_age_ms >= 1500, "{d:?}");
    hop.stop().await;
}

/// An engine that is gone is reported unreachable by the agent's pings within a couple of
/// seconds, and the probe still answers at once.
#[tokio::test]
async fn describe_reports_an_engine_that_is_gone() {
    let engine = FakeEngine::start_docker("node1").await;
    let hop = Hop::start(engine).await;
    let asked = DescribeRequest {
        wait_ms: 200,
        max_age_ms: 0,
    };
    let d = within("describe", hop.link.describe(asked, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(d.engine_reachable, "{d:?}");
    let Hop {
        engine,
        agent,
        link,
        ..
    } = hop;
    engine.stop().await;
    let gone = std::time::Instant::now();
    loop {
        let d = within("describe", link.describe(asked, Duration::from_secs(5)))
            .await
            .unwrap();
        if !d.engine_reachable {
            assert!(d.engine_error.contains("cannot reach"), "{d:?}");
            break;
        }
        assert!(gone.elapsed() < Duration::from_secs(3), "still reachable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(link);
    agent.stop().await;
}

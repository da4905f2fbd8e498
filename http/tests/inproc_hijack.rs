//! In-process tests of the HTTP front's hijacks: `busbar_http::server::serve` on
//! `127.0.0.1:0` with the agent's proxy as its handler, a fake engine that answers `101` and
//! echoes, and a raw client (see `busbar_testkit`). Checked: the exact bytes the client gets
//! (Docker's `200 application/vnd.docker.raw-stream` for a client that hijacks without asking
//! for an upgrade, a `101` for one that asks), bytes both ways, and the client's EOF reaching
//! the engine as a write shutdown while output still flows back.

use std::time::Duration;

use busbar_testkit::raw::{request, RawClient};
use busbar_testkit::{FakeEngine, Hijack, Reply, TestAgent};

const ATTACH: &str = "/v1.41/containers/c1/attach?stream=1&stdin=1&stdout=1&stderr=1";

async fn engine_that_echoes() -> FakeEngine {
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/*/attach",
        Reply::hijack(Hijack::echo("ready\n", "stdin closed\n")),
    );
    engine.route(
        "POST /*/exec/*/start",
        Reply::hijack(Hijack::echo("", "exec done\n")),
    );
    engine
}

/// Drives an established hijack: input echoed, then the client's EOF, then the engine's
/// last words, then EOF; and checks what the engine saw.
async fn echo_round_trip(c: &mut RawClient, engine: &FakeEngine, greeting: &[u8], last: &[u8]) {
    assert_eq!(&c.read_exact(greeting.len()).await[..], greeting);
    c.send(b"hello\n").await;
    assert_eq!(&c.read_exact(6).await[..], b"hello\n");
    c.shutdown_write().await;
    assert_eq!(
        &c.read_to_end().await[..],
        last,
        "output still flows after the client's EOF"
    );
    engine
        .wait_until("the engine sees the client's EOF", |_, h| {
            h.len() == 1 && h[0].client_eof
        })
        .await;
    let h = &engine.hijacks()[0];
    assert_eq!(h.received, b"hello\n");
}

#[tokio::test]
async fn an_attach_without_upgrade_gets_a_raw_stream_spliced_to_the_engines_101() {
    busbar_testkit::logs();
    let engine = engine_that_echoes().await;
    let agent = TestAgent::start(&engine, "").await;

    let mut c = RawClient::connect(agent.addr()).await;
    c.send(&request("POST", ATTACH, &[], b"")).await;
    let head = c.read_head().await;
    assert_eq!(
        &head.raw[..],
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n",
        "Docker's raw-stream answer, byte for byte"
    );
    echo_round_trip(&mut c, &engine, b"ready\n", b"stdin closed\n").await;

    let got = engine.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line(), format!("POST {ATTACH}"));
    assert_eq!(
        got[0].header("upgrade"),
        Some("tcp"),
        "the engine is asked for the upgrade form"
    );
    assert!(got[0]
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));

    drop(c);
    agent.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn an_attach_with_upgrade_gets_a_101_and_the_same_stream() {
    let engine = engine_that_echoes().await;
    let agent = TestAgent::start(&engine, "").await;

    let mut c = RawClient::connect(agent.addr()).await;
    c.send(&request(
        "POST",
        ATTACH,
        &[("Connection", "Upgrade"), ("Upgrade", "tcp")],
        b"",
    ))
    .await;
    let head = c.read_head().await;
    assert_eq!(head.status, 101, "{:?}", String::from_utf8_lossy(&head.raw));
    assert_eq!(head.header("upgrade"), Some("tcp"));
    assert_eq!(
        head.header("content-type"),
        Some("application/vnd.docker.raw-stream")
    );
    echo_round_trip(&mut c, &engine, b"ready\n", b"stdin closed\n").await;

    drop(c);
    agent.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn a_raw_exec_start_passes_its_body_and_the_bytes_sent_right_after_the_head() {
    let engine = engine_that_echoes().await;
    let agent = TestAgent::start(&engine, "").await;

    let body = br#"{"Detach":false,"Tty":false}"#;
    let mut bytes = request(
        "POST",
        "/v1.41/exec/e1/start",
        &[("Content-Type", "application/json")],
        body,
    );
    // stdin written in the same packet as the request: it must not be lost.
    bytes.extend_from_slice(b"early\n");
    let mut c = RawClient::connect(agent.addr()).await;
    c.send(&bytes).await;
    assert_eq!(c.read_head().await.status, 200);
    assert_eq!(&c.read_exact(6).await[..], b"early\n");
    c.shutdown_write().await;
    assert_eq!(&c.read_to_end().await[..], b"exec done\n");

    let got = engine.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line(), "POST /v1.41/exec/e1/start");
    assert_eq!(&got[0].body[..], body);
    engine
        .wait_until("the engine sees the client's EOF", |_, h| {
            h.len() == 1 && h[0].client_eof
        })
        .await;
    assert_eq!(engine.hijacks()[0].received, b"early\n");

    drop(c);
    agent.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn a_raw_attach_the_engine_refuses_gets_the_error_and_the_connection_closes() {
    let engine = engine_that_echoes().await;
    engine.route(
        "POST /*/containers/gone/attach",
        Reply::error(404, "No such container: gone"),
    );
    let agent = TestAgent::start(&engine, "").await;

    let mut c = RawClient::connect(agent.addr()).await;
    c.send(&request(
        "POST",
        "/v1.41/containers/gone/attach?stream=1",
        &[],
        b"",
    ))
    .await;
    let rsp = c.read_response().await;
    assert_eq!(rsp.status(), 404);
    assert_eq!(rsp.message(), "No such container: gone");
    assert_eq!(rsp.header("connection"), Some("close"));
    assert!(
        c.read_to_end().await.is_empty(),
        "then the connection closes"
    );
    assert!(engine.hijacks().is_empty());

    agent.stop().await;
    engine.stop().await;
}

/// A connection whose first request head never completes is closed after the front's 30 s
/// (`FIRST_HEAD_TIMEOUT`), on tokio's paused clock: no real wait.
#[tokio::test(start_paused = true)]
async fn a_first_request_head_that_never_completes_is_closed_after_30s() {
    let engine = engine_that_echoes().await;
    let agent = TestAgent::start(&engine, "").await;

    let mut c = RawClient::connect(agent.addr()).await;
    c.set_limit(Duration::from_secs(3600));
    let started = tokio::time::Instant::now();
    c.send(b"POST /v1.41/containers/c1/attach HTTP/1.1\r\nHost: docker\r\nX-Slow: ")
        .await;
    let rest = c.read_to_end().await;
    let waited = started.elapsed();
    assert!(rest.is_empty(), "closed without an answer: {rest:?}");
    assert!(
        (Duration::from_secs(30)..Duration::from_secs(31)).contains(&waited),
        "closed after {waited:?}"
    );
    assert!(engine.requests().is_empty(), "{:?}", engine.requests());

    agent.stop().await;
    engine.stop().await;
}

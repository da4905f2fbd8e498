//! The fakes themselves, checked with a raw client and no busbar code in between: a broken
//! fake must not be mistaken for a broken busbar.

use std::time::Duration;

use busbar_testkit::adapter::{pass, refuse};
use busbar_testkit::engine::large_byte;
use busbar_testkit::raw::{self, request, RawClient};
use busbar_testkit::{json, FakeAdapter, FakeEngine, Hijack, Reply};
use serde_json::json as j;

fn tcp(engine: &FakeEngine) -> std::net::SocketAddr {
    match engine.addr() {
        busbar_engine::EngineAddr::Tcp(a) => a.parse().expect("an address"),
        other => panic!("not a TCP engine: {other}"),
    }
}

#[tokio::test]
async fn the_fake_engine_answers_its_routes_records_targets_as_sent_and_404s_the_rest() {
    let engine = FakeEngine::start_tcp().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    let addr = tcp(&engine);

    let rsp = raw::exchange(
        addr,
        &request(
            "POST",
            "/v1.41/containers/create?name=a%20b",
            &[("X-Test", "1")],
            b"{}",
        ),
    )
    .await;
    assert_eq!(rsp.status(), 201);
    assert_eq!(rsp.json(), j!({"Id": "c1"}));
    let rsp = raw::exchange(addr, &request("GET", "/v1.41/cr%65ate", &[], b"")).await;
    assert_eq!(rsp.status(), 404);
    assert_eq!(rsp.json(), j!({"message": "page not found"}));

    let got = engine.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].line(), "POST /v1.41/containers/create?name=a%20b");
    assert_eq!(got[0].header("x-test"), Some("1"));
    assert_eq!(&got[0].body[..], b"{}");
    assert_eq!(
        got[1].target, "/v1.41/cr%65ate",
        "recorded without decoding"
    );
    assert!(got[0].seq < got[1].seq);
    engine.stop().await;
}

#[tokio::test]
async fn the_fake_engine_hijacks_with_101_echoes_and_honours_half_close() {
    let engine = FakeEngine::start_tcp().await;
    engine.route(
        "POST /*/containers/*/attach",
        Reply::hijack(Hijack::echo("hi\n", "bye\n")),
    );
    let mut c = RawClient::connect(tcp(&engine)).await;
    c.send(&request(
        "POST",
        "/v1.41/containers/c1/attach?stream=1&stdin=1",
        &[("Connection", "Upgrade"), ("Upgrade", "tcp")],
        b"",
    ))
    .await;
    let head = c.read_head().await;
    assert_eq!((head.status, head.reason.as_str()), (101, "UPGRADED"));
    assert_eq!(head.header("upgrade"), Some("tcp"));
    assert_eq!(&c.read_exact(3).await[..], b"hi\n");
    c.send(b"ping\n").await;
    assert_eq!(&c.read_exact(5).await[..], b"ping\n");
    c.shutdown_write().await;
    assert_eq!(&c.read_to_end().await[..], b"bye\n");
    engine
        .wait_until("the hijack ends", |_, h| h.len() == 1 && h[0].done)
        .await;
    let h = &engine.hijacks()[0];
    assert_eq!(h.received, b"ping\n");
    assert!(h.client_eof);

    // Without an upgrade the fake refuses: busbar always asks the engine for one.
    let rsp = raw::exchange(
        tcp(&engine),
        &request("POST", "/v1.41/containers/c1/attach", &[], b""),
    )
    .await;
    assert_eq!(rsp.status(), 400);
    engine.stop().await;
}

#[tokio::test]
async fn the_fake_engine_streams_endless_and_large_bodies_and_stop_ends_them() {
    let engine = FakeEngine::start_tcp().await;
    engine.route(
        "GET /*/events",
        Reply::endless(200, "application/json", ["{\"a\":1}\n", "{\"a\":2}\n"]),
    );
    engine.route(
        "GET /*/images/*/get",
        Reply::large(200, "application/x-tar", 1_000_000),
    );
    let addr = tcp(&engine);

    let rsp = raw::exchange(addr, &request("GET", "/v1.41/images/x/get", &[], b"")).await;
    assert_eq!(rsp.body.len(), 1_000_000);
    assert!(rsp
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == large_byte(i as u64)));

    let mut c = RawClient::connect(addr).await;
    c.send(&request("GET", "/v1.41/events", &[], b"")).await;
    assert_eq!(c.read_head().await.status, 200);
    assert_eq!(&c.read_chunk().await.unwrap()[..], b"{\"a\":1}\n");
    assert_eq!(&c.read_chunk().await.unwrap()[..], b"{\"a\":2}\n");
    engine.stop().await; // ends the endless stream and joins its task
    let rest = c.read_to_end().await;
    assert!(
        !rest.windows(5).any(|w| w == b"{\"a\":"),
        "nothing more after the stop: {rest:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_fake_engine_answers_late_or_never() {
    let engine = FakeEngine::start_tcp().await;
    engine.route(
        "GET /*/slow",
        json(200, "{}").delayed(Duration::from_secs(60)),
    );
    engine.route("GET /*/never", Reply::never());
    let addr = tcp(&engine);
    let started = tokio::time::Instant::now();
    let mut c = RawClient::connect(addr).await;
    c.set_limit(Duration::from_secs(3600));
    c.send(&request("GET", "/v1.41/slow", &[], b"")).await;
    assert_eq!(c.read_response().await.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(60));

    let mut c = RawClient::connect(addr).await;
    c.set_limit(Duration::from_secs(3600));
    c.send(&request("GET", "/v1.41/never", &[], b"")).await;
    let waited = tokio::time::timeout(Duration::from_secs(600), c.read_some()).await;
    assert!(waited.is_err(), "no answer after ten (paused) minutes");
    engine.stop().await;
}

#[tokio::test]
async fn the_fake_adapter_answers_by_its_closure_and_records_calls() {
    let ok = FakeAdapter::start(pass).await;
    let no = FakeAdapter::start(refuse(403, r#"{"message":"no"}"#)).await;
    let payload = j!({
        "PowerstripProtocolVersion": 1,
        "Type": "pre-hook",
        "ClientRequest": {"Method": "POST", "Request": "/v1.41/containers/create", "Body": "{\"Image\":\"x\"}"},
    });
    let url = |a: &FakeAdapter| -> std::net::SocketAddr {
        a.url()
            .trim_start_matches("http://")
            .trim_end_matches("/adapter")
            .parse()
            .unwrap()
    };
    let post = raw::post_json("/adapter", &payload);
    let rsp = raw::exchange(url(&ok), &post).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        rsp.json()["ModifiedClientRequest"],
        payload["ClientRequest"]
    );
    let rsp = raw::exchange(url(&no), &post).await;
    assert_eq!(rsp.status(), 403);
    assert_eq!(rsp.text(), r#"{"message":"no"}"#);
    let calls = ok.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].kind(), "pre-hook");
    assert_eq!(calls[0].client_body(), Some(j!({"Image": "x"})));
    ok.stop().await;
    no.stop().await;
}

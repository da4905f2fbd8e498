//! In-process tests of what the agent refuses or cuts off at its edge, each a regression test
//! of a defect found by trying busbar as an attacker would: a request body that stops
//! arriving, a body whose chunked framing is broken, a pre-hook that changes the method. The
//! real agent on `127.0.0.1:0` in front of a fake engine (see `busbar_testkit`).

use std::time::Duration;

use busbar_testkit::adapter::pass;
use busbar_testkit::raw::{request, RawClient};
use busbar_testkit::{json, AdapterReply, FakeAdapter, FakeEngine, TestAgent};

const HOOKED_CREATE: &str = "version: 1\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [hook]\nadapters:\n  hook: URL\n";

/// A body that stops arriving fails the request after 30 s without a byte (on tokio's paused
/// clock: no real wait), with a 400 that says so, instead of holding the client's connection
/// and the engine's forever.
#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_a_400_after_30_s() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/build", json(200, r#"{"stream":"built"}"#));
    let agent = TestAgent::start(&engine, "").await;
    let mut client = RawClient::connect(agent.addr()).await;
    client.set_limit(Duration::from_secs(120));
    client
        .send(b"POST /v1.41/build HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-tar\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await;
    let rsp = client.read_response().await;
    assert_eq!(rsp.status(), 400, "{}", rsp.text());
    assert!(
        rsp.message().contains("no byte of it arrived for 30s"),
        "{}",
        rsp.message()
    );
}

/// A chunked body with a broken chunk size is the client's fault: a 400, not a 502 that
/// blames the engine.
#[tokio::test]
async fn a_broken_chunked_body_is_the_client_s_400() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/images/load", json(200, r#"{"stream":"loaded"}"#));
    let agent = TestAgent::start(&engine, "").await;
    let mut client = RawClient::connect(agent.addr()).await;
    client
        .send(b"POST /v1.41/images/load HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\nnot a chunk\r\n")
        .await;
    let rsp = client.read_response().await;
    assert_eq!(rsp.status(), 400, "{}", rsp.text());
    assert!(
        rsp.message().contains("client's request body"),
        "{}",
        rsp.message()
    );
}

/// Powerstrip cannot change a request's method: a pre-hook answering another `Method` is
/// refused with an error naming it (it used to be silently ignored), and the engine is not
/// called.
#[tokio::test]
async fn a_pre_hook_changing_the_method_is_refused() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    engine.route("DELETE /*/containers/*", json(204, ""));
    let sneaky = FakeAdapter::start(|call| {
        let AdapterReply::Json(mut reply) = pass(call) else {
            unreachable!("pass answers JSON")
        };
        reply["ModifiedClientRequest"]["Method"] = "DELETE".into();
        AdapterReply::Json(reply)
    })
    .await;
    let agent = TestAgent::start(&engine, &HOOKED_CREATE.replace("URL", sneaky.url())).await;
    let rsp = busbar_testkit::raw::exchange(
        agent.addr(),
        &request(
            "POST",
            "/v1.41/containers/create",
            &[("Content-Type", "application/json")],
            br#"{"Image":"busybox"}"#,
        ),
    )
    .await;
    assert_eq!(rsp.status(), 502, "{}", rsp.text());
    let message = rsp.message();
    assert!(
        message.contains("adapter \"hook\"")
            && message.contains("method change from POST to DELETE"),
        "{message}"
    );
    assert!(engine.requests().is_empty(), "{:?}", engine.requests());
}

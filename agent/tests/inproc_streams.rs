//! In-process tests of how the agent hands a streamed answer (chunked: `docker logs`,
//! `events`, a build's progress) to its HTTP clients: the real agent on `127.0.0.1:0` in front
//! of a fake engine (see `busbar_testkit`), read chunk by chunk by a raw client.

use std::time::Duration;

use busbar_testkit::raw::RawClient;
use busbar_testkit::{FakeEngine, Reply, TestAgent};

/// The engine writes `docker logs` a line at a time, a chunk each; the agent passes the lines
/// on whole and in order, joined into fewer chunks (each chunk it writes costs a system call;
/// HAProxy, which users run in front of the socket too, reads what has arrived at once).
#[tokio::test]
async fn a_stream_of_small_chunks_reaches_the_client_whole_in_fewer_chunks() {
    let lines: Vec<String> = (0..5_000)
        .map(|i| format!("line {i:05} of a container's log\n"))
        .collect();
    let engine = FakeEngine::start().await;
    engine.route(
        "GET /*/containers/*/logs",
        Reply::stream(200, "text/plain", lines.clone()),
    );
    let agent = TestAgent::start(&engine, "").await;
    let mut client = RawClient::connect(agent.addr()).await;
    client
        .send(b"GET /v1.41/containers/c1/logs?stdout=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let head = client.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let (mut got, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = client.read_chunk().await {
        got.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert_eq!(String::from_utf8(got).unwrap(), lines.concat());
    assert!(
        chunks < lines.len() / 2,
        "{} lines came in {chunks} chunks: not joined",
        lines.len()
    );
}

/// Joining never holds a line back: on a stream that stays open (`logs -f` of a quiet
/// container), the one line written reaches the client at once.
#[tokio::test]
async fn a_lone_line_of_an_open_stream_is_not_held_back() {
    let engine = FakeEngine::start().await;
    engine.route(
        "GET /*/containers/*/logs",
        Reply::endless(200, "text/plain", ["the only line\n"]),
    );
    let agent = TestAgent::start(&engine, "").await;
    let mut client = RawClient::connect(agent.addr()).await;
    client
        .send(b"GET /v1.41/containers/c1/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(client.read_head().await.status, 200);
    let line = tokio::time::timeout(Duration::from_secs(5), client.read_chunk())
        .await
        .expect("the line arrives while the stream stays open");
    assert_eq!(line.as_deref(), Some(&b"the only line\n"[..]));
}

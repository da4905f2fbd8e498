//! In-process tests of the access log: one `info` line per request (target `busbar::access`)
//! with the request id, method, path template, status, time and bytes; the raw path only at
//! `debug`. The real agent (listener, proxy) on `127.0.0.1:0` in front of a fake engine; no
//! root, no engine.

use busbar_testkit::raw::{exchange, request};
use busbar_testkit::{json, text, CapturedLogs, FakeEngine, TestAgent};

fn access_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("busbar::access"))
        .collect()
}

#[tokio::test]
async fn a_hundred_requests_make_a_hundred_access_lines_that_name_no_container() {
    let logs = CapturedLogs::start("info");
    let engine = FakeEngine::start().await;
    engine.route("GET /*/_ping", text(200, "OK"));
    engine.route("GET /*/containers/json", json(200, "[]"));
    engine.route(
        "GET /*/containers/*/json",
        json(404, r#"{"message":"No such container: secret-name"}"#),
    );
    let agent = TestAgent::start(&engine, "").await;

    for i in 0..100 {
        let target = match i % 3 {
            0 => "/_ping",
            1 => "/v1.41/containers/json?all=1",
            _ => "/v1.41/containers/secret-name/json",
        };
        let id = format!("ops-{i}");
        let rsp = exchange(
            agent.addr(),
            &request("GET", target, &[("X-Request-Id", &id)], b""),
        )
        .await;
        assert!(
            rsp.status() == 200 || rsp.status() == 404,
            "{}",
            rsp.status()
        );
    }

    let text = logs.text();
    let lines = access_lines(&text);
    assert_eq!(lines.len(), 100, "one access line per request:\n{text}");
    for i in 0..100 {
        let id = format!("req.id=ops-{i} ");
        let line = lines
            .iter()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("no access line for ops-{i}:\n{text}"));
        let (path, status, bytes) = match i % 3 {
            0 => ("path=/_ping", "status=200", "bytes=2"),
            1 => ("path=/containers/json", "status=200", "bytes=2"),
            _ => ("path=/containers/{id}/json", "status=404", "bytes="),
        };
        for want in ["method=GET", path, status, bytes, " ms="] {
            assert!(line.contains(want), "{want} missing from {line}");
        }
    }
    assert!(
        !text.contains("secret-name"),
        "a container's name reached an info line:\n{text}"
    );
}

#[tokio::test]
async fn the_raw_path_is_logged_at_debug() {
    let logs = CapturedLogs::start("debug");
    let engine = FakeEngine::start().await;
    engine.route("GET /*/containers/*/json", json(200, "{}"));
    let agent = TestAgent::start(&engine, "").await;
    let rsp = exchange(
        agent.addr(),
        &request("GET", "/v1.41/containers/web1/json", &[], b""),
    )
    .await;
    assert_eq!(rsp.status(), 200);
    let text = logs.text();
    assert!(
        text.contains("path=\"/v1.41/containers/web1/json\"")
            || text.contains("path=/v1.41/containers/web1/json"),
        "{text}"
    );
    assert_eq!(access_lines(&text).len(), 1, "{text}");
}

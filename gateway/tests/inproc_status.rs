//! In-process tests of an embedded gateway's status (`busbar_gateway::status`): the agent's
//! real proxy behind busbar's HTTP front on `127.0.0.1:0`, on a fake engine
//! (`FakeEngine::start_docker`, a test double), with a pre-hook on creates (a fake adapter that
//! refuses some and answers others with garbage), and the status pages the metrics listener
//! serves, read as `busbarctl status` and a browser read them. No root, no engine.
//!
//! The process's metrics are global: this binary holds one test, so the counts are its own.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use busbar_chains::scoped::ChainStatus;
use busbar_gateway::status::embedded::{LocalNode, PROBE_EVERY, PROBE_TIMEOUT};
use busbar_gateway::status::StatusPages;
use busbar_http::observe::Pages;
use busbar_status::Status;
use busbar_testkit::server::agent_proxy;
use busbar_testkit::{raw, AdapterReply, FakeAdapter, FakeEngine, TestServer};

/// Polls `pages` until `ok` holds for its status, for at most `within`.
async fn until(pages: &StatusPages, within: Duration, ok: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + within;
    loop {
        let s = pages.status();
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the status never became as expected within {within:?}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn body(pages: &StatusPages, path: &str) -> (String, String) {
    let rsp = pages
        .get(path)
        .unwrap_or_else(|| panic!("{path} not served"));
    assert_eq!(rsp.status(), 200, "{path}");
    let ctype = rsp.headers()["content-type"].to_str().unwrap().to_owned();
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    (ctype, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_status_shows_the_engine_the_chain_and_a_burst_of_hook_calls() {
    let engine = FakeEngine::start_docker("box").await;
    let adapter = FakeAdapter::start(|call| {
        if call.request().contains("name=bad-") {
            AdapterReply::Garbage("not the protocol".into())
        } else {
            AdapterReply::Status {
                status: 403,
                content_type: None,
                body: "no creates here".into(),
            }
        }
    })
    .await;
    let yaml = format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [guard]\nadapters:\n  guard: {}\n",
        adapter.url()
    );
    let proxy = agent_proxy(&engine, &yaml);
    let server = TestServer::start(proxy.clone()).await;
    let (_chains_tx, chains) = watch::channel(ChainStatus {
        source: "file".into(),
        file: Some("/etc/busbar/adapters.yml".into()),
        ..ChainStatus::default()
    });
    let pages = StatusPages::embedded(LocalNode::new(proxy, chains), Duration::from_secs(60));
    let shutdown = CancellationToken::new();
    pages.spawn(&shutdown);

    // The engine as probed, the chain as it runs; the window's first sample taken.
    let s = until(&pages, Duration::from_secs(5), |s| {
        s.nodes.first().is_some_and(|n| n.health == "Healthy") && s.gateway.recent.is_some()
    })
    .await;
    assert_eq!(s.gateway.mode, "embedded");
    assert_eq!(s.gateway.window_s, 60.0);
    assert_eq!(s.nodes.len(), 1);
    let n = &s.nodes[0];
    assert_eq!(n.name, "box", "the engine's Name");
    assert_eq!(n.engine_version.as_deref(), Some("20.10.24"));
    assert_eq!(n.containers, Some(0));
    assert!(n.probe_ms.is_some_and(|ms| ms > 0.0), "{n:?}");
    let c = n.chains.as_ref().unwrap();
    assert_eq!(
        (c.source.as_str(), c.file.as_deref()),
        ("file", Some("/etc/busbar/adapters.yml"))
    );
    assert_eq!(c.endpoints.len(), 1);
    assert_eq!(c.endpoints[0].key, "POST /*/containers/create");
    assert_eq!(c.endpoints[0].pre, ["guard"]);
    assert!(n.adapters.is_empty(), "no call yet: {n:?}");

    // The burst: 3 refused creates (403), 2 the adapter answers with garbage (502).
    for (name, status) in [
        ("no-1", 403),
        ("no-2", 403),
        ("no-3", 403),
        ("bad-1", 502),
        ("bad-2", 502),
    ] {
        let rsp = raw::exchange(
            server.addr(),
            &raw::post_json(
                &format!("/v1.41/containers/create?name={name}"),
                &json!({"Image": "busybox"}),
            ),
        )
        .await;
        assert_eq!(rsp.status(), status, "{name}: {}", rsp.text());
    }
    let s = pages.status();
    let a = &s.nodes[0].adapters[0];
    assert_eq!(a.adapter, "guard");
    assert_eq!((a.calls, a.errors, a.timeouts, a.refusals), (5, 2, 0, 3));
    let r = a.recent.as_ref().expect("the window's figures");
    assert_eq!((r.calls, r.errors, r.refusals), (5, 2, 3));
    assert_eq!(r.error_percent(), Some(40.0));
    let g = s.gateway.recent.as_ref().unwrap();
    assert_eq!((g.requests, g.requests_4xx, g.requests_5xx), (5, 3, 2));
    assert_eq!(s.errors.len(), 5);
    assert_eq!(s.errors[0].status, 502);

    // As served: the JSON busbarctl reads, the page, its fragment; nothing else.
    let (ctype, text) = body(&pages, "/status.json").await;
    assert_eq!(ctype, "application/json");
    let doc: Status = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc.nodes[0].adapters[0].recent.as_ref().unwrap().refusals,
        3
    );
    let (ctype, page) = body(&pages, "/status").await;
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(
        page.contains("<tr data-node=\"box\" data-health=\"Healthy\">"),
        "{page}"
    );
    assert!(page.contains("embedded (one machine)"), "{page}");
    assert!(page.contains("(3 4xx, 2 5xx)"), "{page}");
    let (_, fragment) = body(&pages, "/status/fragment").await;
    assert!(fragment.contains("<table id=\"hooks\">"), "{fragment}");
    assert!(pages.get("/status/nope").is_none());

    // The engine goes away: the node turns unhealthy within a probe, saying why.
    engine.stop().await;
    let s = until(&pages, PROBE_EVERY + PROBE_TIMEOUT * 2, |s| {
        s.nodes[0].health == "Unhealthy"
    })
    .await;
    let why = s.nodes[0].last_error.as_deref().unwrap_or_default();
    assert!(why.contains("Docker engine"), "{why}");
    assert_eq!(s.nodes[0].engine_version.as_deref(), Some("20.10.24"));

    shutdown.cancel();
    server.stop().await;
    adapter.stop().await;
}

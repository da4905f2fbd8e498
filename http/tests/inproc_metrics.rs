//! In-process tests of the metrics: requests through `busbar_http::server::serve` (the
//! agent's proxy on a fake engine, a test double) counted by endpoint class with no name or
//! id of the client's in any label; the metrics listener's `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use busbar_http::listen::ListenAddr;
use busbar_http::observe::{self, Check, Readiness};
use busbar_testkit::engine::json;
use busbar_testkit::raw::{exchange, post_json, request};
use busbar_testkit::{FakeEngine, TestAgent};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn requests_are_counted_by_class_and_name_no_object() {
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"0123456789abcdef","Warnings":[]}"#),
    );
    engine.route("POST /*/containers/*/start", json(204, ""));
    let agent = TestAgent::start(&engine, "").await;
    let create = post_json(
        "/v1.41/containers/create?name=secret-web",
        &serde_json::json!({"Image": "busybox"}),
    );
    assert_eq!(exchange(agent.addr(), &create).await.status(), 201);
    let start = request("POST", "/v1.41/containers/0123456789abcdef/start", &[], b"");
    assert_eq!(exchange(agent.addr(), &start).await.status(), 204);
    let odd = request("BREW", "/v1.41/containers/0123456789abcdef/frob", &[], b"");
    exchange(agent.addr(), &odd).await;

    let text = busbar_metrics::global().render();
    let line = |series: &str| {
        text.lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .to_owned()
    };
    assert!(line(
        r#"busbar_requests_total{endpoint="container_create",method="POST",status="2xx",node=""}"#
    )
    .ends_with(" 1"));
    assert!(line(
        r#"busbar_requests_total{endpoint="container_start",method="POST",status="2xx",node=""}"#
    )
    .ends_with(" 1"));
    line(r#"busbar_requests_total{endpoint="other",method="other","#);
    line(r#"busbar_engine_duration_seconds_count{endpoint="container_create"} 1"#);
    assert!(!text.contains("secret-web") && !text.contains("0123456789abcdef"));
    assert!(!text.contains("frob") && !text.contains("BREW"));
}

struct EngineDown;

impl Readiness for EngineDown {
    fn checks(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async {
            vec![
                Check::failed(
                    "engine",
                    "cannot reach the Docker engine at unix:///nowhere",
                ),
                Check::ok("chains", "loaded"),
            ]
        })
    }
}

#[tokio::test]
async fn the_metrics_listener_serves_metrics_health_and_readiness_only() {
    let listener = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
        .bind()
        .await
        .unwrap();
    let ListenAddr::Tcp(addr) = listener.local_addr() else {
        unreachable!()
    };
    let stop = CancellationToken::new();
    let server = tokio::spawn(observe::serve(listener, Arc::new(EngineDown), stop.clone()));

    let get = |path: &str| request("GET", path, &[], b"");
    let metrics = exchange(addr, &get("/metrics")).await;
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(metrics.text().contains("# TYPE process_open_fds gauge"));
    assert!(metrics.text().ends_with("# EOF\n"));
    assert_eq!(exchange(addr, &get("/healthz")).await.status(), 200);
    let ready = exchange(addr, &get("/readyz")).await;
    assert_eq!(ready.status(), 503);
    let doc = ready.json();
    assert_eq!(doc["ready"], false);
    assert_eq!(
        doc["reason"],
        "engine: cannot reach the Docker engine at unix:///nowhere"
    );
    assert_eq!(
        exchange(addr, &get("/v1.41/containers/json"))
            .await
            .status(),
        404
    );
    let post = request("POST", "/metrics", &[], b"");
    assert_eq!(exchange(addr, &post).await.status(), 405);

    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the listener stops when asked")
        .unwrap();
}

/// A page of its own on the listener (as the gateway's status page).
struct OnePage;

impl observe::Pages for OnePage {
    fn get(&self, path: &str) -> Option<http::Response<http_body_util::Full<bytes::Bytes>>> {
        (path == "/status").then(|| http::Response::new("the status\n".into()))
    }

    fn paths(&self) -> &'static str {
        "/status"
    }
}

#[tokio::test]
async fn pages_are_served_beside_the_metrics() {
    let listener = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
        .bind()
        .await
        .unwrap();
    let ListenAddr::Tcp(addr) = listener.local_addr() else {
        unreachable!()
    };
    let stop = CancellationToken::new();
    let server = tokio::spawn(observe::serve_with(
        listener,
        Arc::new(EngineDown),
        Some(Arc::new(OnePage)),
        stop.clone(),
    ));
    let get = |path: &str| request("GET", path, &[], b"");
    let page = exchange(addr, &get("/status")).await;
    assert_eq!((page.status(), page.text().as_str()), (200, "the status\n"));
    assert_eq!(exchange(addr, &get("/metrics")).await.status(), 200);
    let other = exchange(addr, &get("/other")).await;
    assert_eq!(other.status(), 404);
    assert!(other.text().contains("/readyz and /status are served here"));
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the listener stops when asked")
        .unwrap();
}

#[tokio::test]
async fn error_answers_are_kept_with_their_request_id_and_message() {
    let engine = FakeEngine::start().await;
    engine.route(
        "GET /*/containers/*/json",
        json(404, r#"{"message":"No such container: kept-404"}"#),
    );
    let agent = TestAgent::start(&engine, "").await;
    let inspect = request(
        "GET",
        "/v1.41/containers/kept-404/json",
        &[("X-Request-Id", "req-kept-404")],
        b"",
    );
    assert_eq!(exchange(agent.addr(), &inspect).await.status(), 404);
    let mut kept = None;
    for _ in 0..100 {
        kept = busbar_metrics::global()
            .recent
            .errors()
            .into_iter()
            .find(|e| e.request_id == "req-kept-404");
        if kept.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let e = kept.expect("the 404 is among the last errors");
    assert_eq!(
        (e.status, e.method, e.endpoint),
        (404, "GET", "container_inspect")
    );
    assert_eq!(e.message, "No such container: kept-404");
    assert!(e.at_ms > 0);
}

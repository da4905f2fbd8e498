//! In-process test of what an adapter built with the kit logs: its lines, and the kit's, carry
//! the request's W3C trace id (`trace_id` in the `hook` span), from the `traceparent` the real
//! agent proxy sends (`busbar_testkit::TestAgent`, on a fake engine). Alone in its binary:
//! logs are captured per thread ([`CapturedLogs`]), which tests running beside it would
//! disturb.

use busbar_adapter::hook::{Call, PreAnswer};
use busbar_adapter::server::{serve, Options};
use busbar_adapter::v1::PreHookRequest;
use busbar_adapter::Adapter;
use busbar_testkit::raw::{self, request};
use busbar_testkit::{json, CapturedLogs, FakeEngine, TestAgent};
use tokio::net::TcpListener;

/// Passes every create on, saying so in its log.
struct Stamp;

impl Adapter for Stamp {
    async fn pre_hook(&self, call: Call<PreHookRequest>) -> PreAnswer {
        tracing::info!("stamped");
        Ok(call.unchanged())
    }
}

#[tokio::test]
async fn the_adapters_log_lines_carry_the_requests_trace_id() {
    let logs = CapturedLogs::start("info,busbar_adapter=debug");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = Options::default();
    let stop = options.shutdown.clone();
    tokio::spawn(serve(listener, Stamp, options));
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let yaml = format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [stamp]\nadapters:\n  stamp: http://{addr}/\n"
    );
    let agent = TestAgent::start(&engine, &yaml).await;
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let rsp = raw::exchange(
        agent.addr(),
        &request(
            "POST",
            "/v1.41/containers/create",
            &[
                ("Content-Type", "application/json"),
                ("traceparent", &traceparent),
            ],
            br#"{"Image":"busybox"}"#,
        ),
    )
    .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    // The access line is written when the answer's body ends, which may be just after the
    // client read it: waited for (the agent's tasks run on this thread meanwhile).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !logs.text().contains("busbar::access") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let text = logs.text();
    let line = |what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line {what:?} in:\n{text}"))
            .to_owned()
    };
    // The adapter's own line and the kit's: inside the `hook` span, with the trace id.
    for l in [line("stamped"), line("hook call")] {
        assert!(l.contains(&format!("trace_id={TRACE}")), "{l}");
    }
    // The agent's access line: the same trace.
    assert!(line("busbar::access").contains(&format!("trace_id={TRACE}")));
    agent.stop().await;
    engine.stop().await;
    stop.cancel();
}

//! In-process tests of an adapter built with the kit, called by busbar's real agent proxy
//! (`busbar_testkit::TestAgent`, on a fake engine): what an adapter author would check is
//! that the rewrite reaches the engine, the refusal reaches the client as Docker words it,
//! and that calls which are not hook calls are answered with a reason.

use busbar_adapter::hook::{Call, PostAnswer, PreAnswer, Refusal};
use busbar_adapter::server::{serve, Options};
use busbar_adapter::v1::{PostHookRequest, PreHookRequest};
use busbar_adapter::Adapter;
use busbar_testkit::raw::{self, post_json, request};
use busbar_testkit::{json, FakeEngine, TestAgent};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Labels every container it is shown, refuses the image `evil`, and adds a warning to the
/// engine's answer.
struct Stamp;

impl Adapter for Stamp {
    async fn pre_hook(&self, call: Call<PreHookRequest>) -> PreAnswer {
        let mut body = call.body_json().unwrap_or(json!({}));
        if body["Image"] == "evil" {
            return Err(Refusal::forbidden("stamp: the image evil is not allowed"));
        }
        body["Labels"]["stamped"] = json!(call.context.adapter_api.clone().unwrap_or_default());
        Ok(call.with_body(&body))
    }

    async fn post_hook(&self, call: Call<PostHookRequest>) -> PostAnswer {
        let mut body = call.body_json().unwrap_or(json!({}));
        body["Warnings"] = json!(["stamped"]);
        let mut answer = call.unchanged();
        answer.body = Some(body.to_string());
        Ok(answer)
    }
}

async fn start_stamp(options: Options) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = options.shutdown.clone();
    tokio::spawn(serve(listener, Stamp, options));
    (addr, stop)
}

#[tokio::test]
async fn a_kit_adapter_rewrites_and_refuses_through_the_agent() {
    busbar_testkit::logs();
    let (addr, stop) = start_stamp(Options::default()).await;
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let yaml = format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [stamp]\n    post: [stamp]\nadapters:\n  stamp: http://{addr}/\n"
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(
        agent.addr(),
        &post_json("/v1.41/containers/create", &json!({"Image": "busybox"})),
    )
    .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(rsp.json()["Warnings"], json!(["stamped"]));
    let sent: serde_json::Value =
        serde_json::from_slice(&engine.requests_to("POST /*/containers/create")[0].body).unwrap();
    assert_eq!(
        sent["Labels"]["stamped"], "1",
        "the rewrite, with busbar's header"
    );

    let rsp = raw::exchange(
        agent.addr(),
        &post_json("/v1.41/containers/create", &json!({"Image": "evil"})),
    )
    .await;
    assert_eq!(rsp.status(), 403);
    assert_eq!(
        rsp.json()["message"],
        "stamp: the image evil is not allowed"
    );
    assert_eq!(engine.requests_to("POST /*/containers/create").len(), 1);

    agent.stop().await;
    engine.stop().await;
    stop.cancel();
}

#[tokio::test]
async fn what_is_not_a_hook_call_gets_a_reason() {
    let options = Options {
        max_body: 1024,
        ..Options::default()
    };
    let (addr, stop) = start_stamp(options).await;
    let big = vec![b' '; 4096];
    let cases: [(&str, &[u8], u16, &str); 4] = [
        ("POST", b"<html>oops</html>", 400, "not JSON"),
        ("POST", br#"{"Type":"mid-hook"}"#, 400, "pre-hook"),
        ("GET", b"", 405, "POST"),
        ("POST", &big, 413, "larger than 1024"),
    ];
    for (method, body, status, says) in cases {
        let rsp = raw::exchange(
            addr,
            &request(method, "/", &[("Content-Type", "application/json")], body),
        )
        .await;
        assert_eq!(rsp.status(), status, "{method} {}", rsp.text());
        assert!(
            rsp.json()["message"].as_str().unwrap().contains(says),
            "{}",
            rsp.text()
        );
    }
    stop.cancel();
}

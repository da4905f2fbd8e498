//! In-process tests of a protocol-2 adapter built with the kit, called by busbar's real agent
//! proxy (`busbar_testkit::TestAgent`) in front of a fake engine (a test double): a pre-hook
//! that answers the client itself, and one that undoes its work when the engine refuses.

use std::sync::{Arc, Mutex};

use busbar_adapter::hook::{Call, PreAnswerV2};
use busbar_adapter::server::{serve, Options};
use busbar_adapter::v2::{PreHookReply, PreHookRequest, Response, UnwindRequest};
use busbar_adapter::Adapter;
use busbar_testkit::raw::{self, post_json};
use busbar_testkit::{json, FakeEngine, TestAgent};
use serde_json::json;
use tokio::net::TcpListener;

/// Allocates an address for every create (a label), answers the create of the image
/// `cached` itself, and frees the address again when told to unwind.
#[derive(Clone, Default)]
struct Ipam {
    allocated: Arc<Mutex<Vec<String>>>,
    unwound: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Adapter for Ipam {
    async fn pre_hook_v2(&self, call: Call<PreHookRequest>) -> PreAnswerV2 {
        let r = &call.request.client_request;
        let mut body: serde_json::Value =
            serde_json::from_str(r.body.as_deref().unwrap_or("{}")).unwrap_or(json!({}));
        if body["Image"] == "cached" {
            return Ok(PreHookReply::Respond(Response {
                code: Some(201),
                content_type: Some("application/json".into()),
                body: Some(json!({"Id": "cached-by-ipam", "Warnings": []}).to_string()),
                ..Default::default()
            }));
        }
        let address = format!("10.0.0.{}", self.allocated.lock().unwrap().len() + 2);
        self.allocated.lock().unwrap().push(address.clone());
        body["Labels"]["ipam.address"] = json!(address);
        Ok(PreHookReply::Continue(
            busbar_adapter::v1::ModifiedClientRequest {
                body: Some(body.to_string()),
                request: Some(r.request.clone()),
                method: None,
            },
        ))
    }

    async fn unwind(&self, call: Call<UnwindRequest>) {
        let body: serde_json::Value = serde_json::from_str(
            call.request
                .modified_client_request
                .body
                .as_deref()
                .unwrap_or("{}"),
        )
        .unwrap_or_default();
        let address = body["Labels"]["ipam.address"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        self.allocated.lock().unwrap().retain(|a| *a != address);
        self.unwound
            .lock()
            .unwrap()
            .push((address, call.request.failure.code));
    }
}

#[tokio::test]
async fn a_kit_v2_adapter_answers_itself_and_unwinds_through_the_agent() {
    busbar_testkit::logs();
    let ipam = Ipam::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = Options::default();
    let stop = options.shutdown.clone();
    tokio::spawn(serve(listener, ipam.clone(), options));
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(404, r#"{"message":"No such image: nothere:latest"}"#),
    );
    let yaml = format!(
        "version: 2\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [ipam]\n\
         adapters:\n  ipam:\n    url: http://{addr}/\n    protocol: 2\n"
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(
        agent.addr(),
        &post_json("/v1.41/containers/create", &json!({"Image": "cached"})),
    )
    .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(rsp.json()["Id"], "cached-by-ipam");
    assert!(engine.requests().is_empty(), "the engine was called");

    let rsp = raw::exchange(
        agent.addr(),
        &post_json("/v1.41/containers/create", &json!({"Image": "nothere"})),
    )
    .await;
    assert_eq!(rsp.status(), 404, "{}", rsp.text());
    assert_eq!(
        ipam.unwound.lock().unwrap().clone(),
        [("10.0.0.2".to_owned(), 404)],
        "the address given was freed"
    );
    assert!(ipam.allocated.lock().unwrap().is_empty());

    agent.stop().await;
    stop.cancel();
    engine.stop().await;
}

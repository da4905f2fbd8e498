//! The hello-world adapters, in Rust (`examples/hello.rs`, built on the kit) and in Python
//! with the standard library only (`examples/hello.py`): each takes a pre-hook and a post-hook
//! call as busbar sends them, waits its delay, and passes the call on unchanged, as
//! powerstrip-slowreq did; and the Python one works behind busbar's real agent proxy. Needs
//! `python3` (no package).

use std::process::Stdio;
use std::time::Duration;

use busbar_adapter::testing::{post_call, pre_call, HookClient, TestAdapter};
use busbar_testkit::raw::{self, post_json};
use busbar_testkit::{json, FakeEngine, TestAgent};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[path = "../examples/hello.rs"]
#[allow(dead_code)]
mod hello;

const CREATE: &str =
    r#"{"Image":"busybox","Cmd":["echo","hello"],"HostConfig":{"Binds":["/data:/data"]}}"#;

/// What powerstrip-slowreq's own tests checked: after the delay, the call comes back as it
/// went, for both phases.
async fn echoes_after_its_delay(client: &HookClient, delay: Duration) {
    let started = std::time::Instant::now();
    let pre = pre_call("POST", "/v1.41/containers/create?name=web", Some(CREATE));
    let reply = client.pre(&pre).await.expect("a valid pre-hook reply");
    let m = reply.modified_client_request;
    assert_eq!(m.body.as_deref(), Some(CREATE));
    assert_eq!(
        m.request.as_deref(),
        Some("/v1.41/containers/create?name=web")
    );
    assert!(
        started.elapsed() >= delay,
        "it waits its delay, as slowreq did"
    );

    let bodiless = pre_call("GET", "/v1.41/containers/json", None);
    let reply = client.pre(&bodiless).await.expect("a valid pre-hook reply");
    assert_eq!(reply.modified_client_request.body, None);

    let post = post_call("POST", "/v1.41/containers/c1/start", None, 204, None, "");
    let reply = client.post(&post).await.expect("a valid post-hook reply");
    let m = reply.modified_server_response;
    assert_eq!(
        (m.code, m.content_type, m.body.as_deref()),
        (Some(204), None, Some(""))
    );

    let not_found = r#"{"message":"No such image: busybox:latest"}"#;
    let post = post_call(
        "POST",
        "/v1.41/containers/create",
        Some(CREATE),
        404,
        Some("application/json"),
        not_found,
    );
    let m = client
        .post(&post)
        .await
        .expect("a valid post-hook reply")
        .modified_server_response;
    assert_eq!((m.code, m.body.as_deref()), (Some(404), Some(not_found)));
}

#[tokio::test]
async fn the_rust_hello_world() {
    let delay = Duration::from_millis(50);
    let adapter = TestAdapter::start(hello::Hello { delay })
        .await
        .expect("bind");
    echoes_after_its_delay(&adapter.client(), delay).await;
    adapter.stop().await;
}

/// `python3 examples/hello.py --port 0`, and the URL it says it listens on.
pub async fn start_python_hello(delay: &str) -> (Child, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.py");
    let mut child = Command::new("python3")
        .args([script, "--port", "0", "--delay", delay])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (the Python hello-world needs it)");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("hello.py says where it listens within 20 s")
        .expect("read its output")
        .expect("a first line");
    let url = first
        .strip_prefix("hello: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    // Keep reading its output, so that its prints never block on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

#[tokio::test]
async fn the_python_hello_world() {
    let (mut child, url) = start_python_hello("0.05").await;
    let client = HookClient::new(&url).expect("a URL");
    echoes_after_its_delay(&client, Duration::from_millis(50)).await;
    // A document that is not a hook call gets a Docker-style reason.
    let answer = client.send(b"<html>").await.expect("an answer");
    assert_eq!(answer.status, 400);
    let doc: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert!(
        doc["message"].as_str().unwrap().starts_with("hello: "),
        "{doc}"
    );
    child.kill().await.expect("stop hello.py");
}

#[tokio::test]
async fn the_python_hello_world_behind_the_agent() {
    let (mut child, url) = start_python_hello("0").await;
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let yaml = format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [hello]\n    post: [hello]\nadapters:\n  hello: {url}\n"
    );
    let agent = TestAgent::start(&engine, &yaml).await;
    let create = json!({"Image": "busybox", "Cmd": ["echo", "hello"]});
    let rsp = raw::exchange(
        agent.addr(),
        &post_json("/v1.41/containers/create?name=web", &create),
    )
    .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(rsp.json()["Id"], "c1");
    let sent = engine.requests_to("POST /*/containers/create");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].json(), create, "the engine gets the body unchanged");
    assert_eq!(sent[0].query(), Some("name=web"));
    agent.stop().await;
    engine.stop().await;
    child.kill().await.expect("stop hello.py");
}

//! In-process tests of the agent's hook phases and of path canonicalisation: the real agent
//! (HTTP front, proxy, chains, adapter calls, engine client) on `127.0.0.1:0`, between a raw
//! HTTP client and a fake engine, with fake adapters. No root, no engine (see
//! `busbar_testkit`). What each test checks is what a user would: the status and body the
//! client got, what the engine received (or that it received nothing), what the adapter saw.

use std::time::{Duration, Instant};

use busbar_testkit::adapter::{pass, refuse, rewrite_body, rewrite_response};
use busbar_testkit::raw::{self, post_json, request, RawClient};
use busbar_testkit::{json, AdapterReply, FakeAdapter, FakeEngine, Reply, TestAgent};
use serde_json::{json as j, Value};

/// A chain file: each endpoint with its pre- and post-hooks, then the adapters (name, and
/// the rest of its YAML: a URL, or a mapping).
fn chains(endpoints: &[(&str, &[&str], &[&str])], adapters: &[(&str, String)]) -> String {
    let mut y = String::from("version: 1\nendpoints:\n");
    for (key, pre, post) in endpoints {
        y += &format!("  \"{key}\":\n");
        if !pre.is_empty() {
            y += &format!("    pre: [{}]\n", pre.join(", "));
        }
        if !post.is_empty() {
            y += &format!("    post: [{}]\n", post.join(", "));
        }
    }
    y += "adapters:\n";
    for (name, def) in adapters {
        y += &format!("  {name}: {def}\n");
    }
    y
}

const CREATE_BODY: &str = r#"{"Image":"busybox","Cmd":["true"]}"#;

fn create_request(target: &str) -> Vec<u8> {
    request(
        "POST",
        target,
        &[
            ("Content-Type", "application/json"),
            ("X-Request-Id", "inproc-req-1"),
        ],
        CREATE_BODY.as_bytes(),
    )
}

// === Hook phases ===

#[tokio::test]
async fn a_pre_hook_rewrites_the_create_body_and_the_engine_receives_it_rewritten() {
    busbar_testkit::logs();
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let adder = FakeAdapter::start(rewrite_body(|doc| doc["Env"] = j!(["HOOKED=yes"]))).await;
    let yaml = chains(
        &[("POST /*/containers/create", &["adder"], &[])],
        &[("adder", adder.url().to_owned())],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(
        agent.addr(),
        &create_request("/v1.41/containers/create?name=web"),
    )
    .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(rsp.json()["Id"], "c1");

    let got = engine.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].line(), "POST /v1.41/containers/create?name=web");
    assert_eq!(
        got[0].json(),
        j!({"Image": "busybox", "Cmd": ["true"], "Env": ["HOOKED=yes"]})
    );
    assert_eq!(
        got[0].header("content-length"),
        Some(got[0].body.len().to_string().as_str()),
        "the rewritten body goes with its own length"
    );
    assert_eq!(got[0].header("x-request-id"), Some("inproc-req-1"));

    let calls = adder.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].kind(), "pre-hook");
    assert_eq!(calls[0].payload["PowerstripProtocolVersion"], 1);
    assert_eq!(calls[0].payload["ClientRequest"]["Method"], "POST");
    assert_eq!(calls[0].request(), "/v1.41/containers/create?name=web");
    assert_eq!(
        calls[0].client_body(),
        Some(serde_json::from_str::<Value>(CREATE_BODY).unwrap())
    );
    assert_eq!(calls[0].header("x-request-id"), Some("inproc-req-1"));
    assert!(
        calls[0].seq < got[0].seq,
        "the hook ran before the engine call"
    );

    agent.stop().await;
    adder.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn a_chunked_json_body_is_given_to_the_pre_hook_and_sent_on_with_a_length() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    let adder = FakeAdapter::start(rewrite_body(|doc| doc["Labels"] = j!({"hooked": "1"}))).await;
    let yaml = chains(
        &[("POST /*/containers/create", &["adder"], &[])],
        &[("adder", adder.url().to_owned())],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let mut bytes = b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n\
Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    let (a, b) = CREATE_BODY.split_at(10);
    for part in [a, b] {
        bytes.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let rsp = raw::exchange(agent.addr(), &bytes).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(
        adder.calls()[0].client_body(),
        Some(serde_json::from_str::<Value>(CREATE_BODY).unwrap()),
        "the hook saw the whole de-chunked body"
    );
    let got = engine.requests();
    assert_eq!(
        got[0].json(),
        j!({"Image": "busybox", "Cmd": ["true"], "Labels": {"hooked": "1"}})
    );
    assert_eq!(
        got[0].header("content-length"),
        Some(got[0].body.len().to_string().as_str())
    );
    assert_eq!(got[0].header("transfer-encoding"), None);

    agent.stop().await;
    adder.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn a_refusal_that_is_not_a_docker_error_is_wrapped_as_one_naming_the_adapter() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    let werkzeug = "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n<p>The server encountered an internal error.</p>\n";
    for (status, content_type, body, message) in [
        (403, None, "", "adapter guard refused: 403 Forbidden"),
        (
            500,
            Some("text/html"),
            werkzeug,
            "adapter guard refused: 500 Internal Server Error (500 Internal Server Error)",
        ),
    ] {
        let guard =
            FakeAdapter::start(
                move |_: &busbar_testkit::AdapterCall| AdapterReply::Status {
                    status,
                    content_type: content_type.map(str::to_owned),
                    body: body.to_owned(),
                },
            )
            .await;
        let yaml = chains(
            &[("POST /*/containers/create", &["guard"], &[])],
            &[("guard", guard.url().to_owned())],
        );
        let agent = TestAgent::start(&engine, &yaml).await;
        let rsp = raw::exchange(agent.addr(), &create_request("/v1.41/containers/create")).await;
        assert_eq!(rsp.status(), status, "the adapter's status is kept");
        assert_eq!(rsp.header("content-type"), Some("application/json"));
        assert_eq!(rsp.json()["message"], message, "{}", rsp.text());
        agent.stop().await;
        guard.stop().await;
    }
    assert!(engine.requests().is_empty(), "{:?}", engine.requests());
}

#[tokio::test]
async fn a_pre_hook_refusal_reaches_the_client_and_the_engine_is_never_called() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    let refusal = r#"{"message":"privileged containers are not allowed here"}"#;
    let guard = FakeAdapter::start(refuse(403, refusal)).await;
    let yaml = chains(
        &[("POST /*/containers/create", &["guard"], &[])],
        &[("guard", guard.url().to_owned())],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(agent.addr(), &create_request("/v1.41/containers/create")).await;
    assert_eq!(rsp.status(), 403);
    assert_eq!(rsp.text(), refusal, "the adapter's body, byte for byte");
    assert_eq!(rsp.header("content-type"), Some("application/json"));
    assert_eq!(guard.calls().len(), 1);
    assert!(engine.requests().is_empty(), "{:?}", engine.requests());

    agent.stop().await;
    guard.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn a_post_hook_rewrites_the_engines_answer() {
    let engine = FakeEngine::start().await;
    let inspect = r#"{"Id":"c1","Name":"/web","Config":{"Labels":{}}}"#;
    engine.route("GET /*/containers/*/json", json(200, inspect));
    let stamper = FakeAdapter::start(rewrite_response(|_, doc| {
        doc["Config"]["Labels"]["audited"] = j!("yes");
    }))
    .await;
    let yaml = chains(
        &[("GET /*/containers/*/json", &[], &["stamper"])],
        &[("stamper", stamper.url().to_owned())],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(
        agent.addr(),
        &request("GET", "/v1.41/containers/c1/json", &[], b""),
    )
    .await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        rsp.json(),
        j!({"Id": "c1", "Name": "/web", "Config": {"Labels": {"audited": "yes"}}})
    );
    assert_eq!(
        rsp.header("content-length"),
        Some(rsp.body.len().to_string().as_str())
    );
    assert_eq!(engine.requests().len(), 1);
    let calls = stamper.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].kind(), "post-hook");
    assert_eq!(calls[0].payload["ServerResponse"]["Code"], 200);
    assert_eq!(calls[0].payload["ServerResponse"]["Body"], inspect);
    assert_eq!(
        calls[0].payload["ServerResponse"]["ContentType"],
        "application/json"
    );

    agent.stop().await;
    stamper.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn pre_hooks_are_skipped_for_a_tar_body_which_reaches_the_engine_untouched() {
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/build",
        Reply::stream(
            200,
            "application/json",
            ["{\"stream\":\"Step 1/1\"}\n", "{\"stream\":\"done\"}\n"],
        ),
    );
    let watcher = FakeAdapter::start(pass).await;
    let yaml = chains(
        &[("POST /*/build", &["watcher"], &[])],
        &[("watcher", watcher.url().to_owned())],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    // Not a real tar: bytes that are neither JSON nor text, as a build context is.
    let context: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let rsp = raw::exchange(
        agent.addr(),
        &request(
            "POST",
            "/v1.41/build?t=x",
            &[("Content-Type", "application/x-tar")],
            &context,
        ),
    )
    .await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        rsp.text(),
        "{\"stream\":\"Step 1/1\"}\n{\"stream\":\"done\"}\n"
    );
    let got = engine.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.len(), context.len());
    assert!(
        got[0].body == context,
        "the build context arrived byte for byte"
    );
    assert!(watcher.calls().is_empty(), "{:?}", watcher.calls());

    agent.stop().await;
    watcher.stop().await;
    engine.stop().await;
}

/// Reads the head and the first chunk of a streamed answer: it arrives while the engine's
/// stream is still open, so nothing buffered it.
async fn first_chunk(agent: &TestAgent, target: &str) -> (u16, String, RawClient) {
    let mut c = RawClient::connect(agent.addr()).await;
    c.send(&request("GET", target, &[], b"")).await;
    let head = c.read_head().await;
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let chunk = c.read_chunk().await.expect("a first chunk");
    (head.status, String::from_utf8_lossy(&chunk).into_owned(), c)
}

#[tokio::test]
async fn post_hooks_are_skipped_for_endless_streams_which_stream_through() {
    let engine = FakeEngine::start().await;
    engine.route(
        "GET /*/events",
        Reply::endless(
            200,
            "application/json",
            ["{\"status\":\"start\",\"id\":\"c1\"}\n"],
        ),
    );
    // Plain text on purpose: only the follow flag, not the content type, tells it is endless.
    engine.route(
        "GET /*/containers/c1/logs?*follow=1*",
        Reply::endless(200, "text/plain", ["line 1\n"]),
    );
    engine.route(
        "GET /*/containers/c1/logs?stdout=1",
        Reply::stream(200, "text/plain", ["line 1\n", "line 2\n"]),
    );
    let watcher = FakeAdapter::start(pass).await;
    let yaml = chains(
        &[
            ("GET /*/events", &[], &["watcher"]),
            ("GET /*/containers/*/logs", &[], &["watcher"]),
        ],
        &[("watcher", watcher.url().to_owned())],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let (status, chunk, events) = first_chunk(&agent, "/v1.41/events").await;
    assert_eq!(status, 200);
    assert_eq!(chunk, "{\"status\":\"start\",\"id\":\"c1\"}\n");
    let (status, chunk, logs) =
        first_chunk(&agent, "/v1.41/containers/c1/logs?stdout=1&follow=1").await;
    assert_eq!(status, 200);
    assert_eq!(chunk, "line 1\n");
    assert!(watcher.calls().is_empty(), "{:?}", watcher.calls());
    drop((events, logs));

    // The same endpoint without follow is finite: the post-hook runs on it.
    let rsp = raw::exchange(
        agent.addr(),
        &request("GET", "/v1.41/containers/c1/logs?stdout=1", &[], b""),
    )
    .await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.text(), "line 1\nline 2\n");
    let calls = watcher.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].request(), "/v1.41/containers/c1/logs?stdout=1");

    engine.stop().await;
    agent.stop().await;
    watcher.stop().await;
}

#[tokio::test]
async fn an_adapter_that_does_not_answer_in_time_is_a_504_naming_it() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    let slow = FakeAdapter::start(|call| {
        AdapterReply::Slow(Duration::from_secs(30), Box::new(pass(call)))
    })
    .await;
    let yaml = chains(
        &[("POST /*/containers/create", &["sluggish"], &[])],
        &[(
            "sluggish",
            format!("{{url: \"{}\", timeout: 200ms}}", slow.url()),
        )],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let started = Instant::now();
    let rsp = raw::exchange(agent.addr(), &create_request("/v1.41/containers/create")).await;
    assert_eq!(rsp.status(), 504, "{}", rsp.text());
    let message = rsp.message();
    assert!(
        message.contains("\"sluggish\"") && message.contains("no reply within 200ms"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout took {:?}",
        started.elapsed()
    );
    assert!(engine.requests().is_empty(), "{:?}", engine.requests());

    agent.stop().await;
    slow.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn an_unreachable_adapter_is_a_502_naming_it() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    let url = FakeAdapter::unreachable_url().await;
    let yaml = chains(
        &[("POST /*/containers/create", &["gone"], &[])],
        &[("gone", url.clone())],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(agent.addr(), &create_request("/v1.41/containers/create")).await;
    assert_eq!(rsp.status(), 502, "{}", rsp.text());
    let message = rsp.message();
    assert!(
        message.contains("\"gone\"")
            && message.contains("cannot connect")
            && message.contains(&url),
        "{message}"
    );
    assert!(engine.requests().is_empty(), "{:?}", engine.requests());

    agent.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn an_adapter_answering_garbage_or_hanging_up_is_a_502_naming_it() {
    let cases: [(&str, AdapterReply, &str); 3] = [
        (
            "garbage",
            AdapterReply::Garbage("<html>surprise</html>".into()),
            "invalid reply",
        ),
        (
            "wrongjson",
            AdapterReply::Json(j!({"PowerstripProtocolVersion": 1})),
            "invalid reply",
        ),
        ("hangup", AdapterReply::HangUp, "\"hangup\""),
    ];
    for (name, reply, expected) in cases {
        let engine = FakeEngine::start().await;
        engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
        let adapter = FakeAdapter::start(move |_| reply.clone()).await;
        let yaml = chains(
            &[("POST /*/containers/create", &[name], &[])],
            &[(name, adapter.url().to_owned())],
        );
        let agent = TestAgent::start(&engine, &yaml).await;

        let rsp = raw::exchange(agent.addr(), &create_request("/v1.41/containers/create")).await;
        assert_eq!(rsp.status(), 502, "{name}: {}", rsp.text());
        let message = rsp.message();
        assert!(
            message.contains(&format!("\"{name}\"")) && message.contains(expected),
            "{name}: {message}"
        );
        assert!(
            engine.requests().is_empty(),
            "{name}: {:?}",
            engine.requests()
        );

        agent.stop().await;
        adapter.stop().await;
        engine.stop().await;
    }
}

#[tokio::test]
async fn on_error_skip_goes_on_without_the_failing_adapter() {
    let engine = FakeEngine::start().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    let gone = FakeAdapter::unreachable_url().await;
    let adder = FakeAdapter::start(rewrite_body(|doc| doc["Env"] = j!(["AFTER_SKIP=1"]))).await;
    let yaml = chains(
        &[("POST /*/containers/create", &["optional", "adder"], &[])],
        &[
            ("optional", format!("{{url: \"{gone}\", on_error: skip}}")),
            ("adder", adder.url().to_owned()),
        ],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(agent.addr(), &create_request("/v1.41/containers/create")).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    let got = engine.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["Env"], j!(["AFTER_SKIP=1"]));
    assert_eq!(
        adder.calls().len(),
        1,
        "the chain went on after the skipped adapter"
    );

    agent.stop().await;
    adder.stop().await;
    engine.stop().await;
}

// === Path canonicalisation ===

/// An agent with a pass-through pre-hook on `POST /*/containers/create`, in front of an
/// engine that answers creates.
struct Guarded {
    engine: FakeEngine,
    hook: FakeAdapter,
    agent: TestAgent,
}

impl Guarded {
    async fn start() -> Guarded {
        let engine = FakeEngine::start().await;
        engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
        let hook = FakeAdapter::start(pass).await;
        let yaml = chains(
            &[("POST /*/containers/create", &["hook"], &[])],
            &[("hook", hook.url().to_owned())],
        );
        let agent = TestAgent::start(&engine, &yaml).await;
        Guarded {
            engine,
            hook,
            agent,
        }
    }

    async fn send(&self, bytes: &[u8]) -> raw::RawResponse {
        raw::exchange(self.agent.addr(), bytes).await
    }

    /// Asserts the request was refused with a 400 before the hook and the engine.
    fn assert_refused(&self, rsp: &raw::RawResponse, what: &str) {
        assert_eq!(rsp.status(), 400, "{what}: {}", rsp.text());
        assert!(
            self.engine.requests().is_empty(),
            "{what}: {:?}",
            self.engine.requests()
        );
        assert!(
            self.hook.calls().is_empty(),
            "{what}: {:?}",
            self.hook.calls()
        );
    }

    async fn stop(self) {
        self.agent.stop().await;
        self.hook.stop().await;
        self.engine.stop().await;
    }
}

#[tokio::test]
async fn an_escaped_slash_in_the_path_is_refused() {
    let g = Guarded::start().await;
    let rsp = g
        .send(&post_json(
            "/v1.41/containers%2Fcreate",
            &j!({"Image": "busybox"}),
        ))
        .await;
    g.assert_refused(&rsp, "%2F");
    assert!(rsp.message().contains("%2F"), "{}", rsp.message());
    g.stop().await;
}

#[tokio::test]
async fn an_escaped_letter_runs_the_create_hook_and_the_engine_gets_the_canonical_path() {
    let g = Guarded::start().await;
    let rsp = g
        .send(&post_json(
            "/v1.41/containers/cr%65ate",
            &j!({"Image": "busybox"}),
        ))
        .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    let calls = g.hook.calls();
    assert_eq!(calls.len(), 1, "the create hook ran");
    assert_eq!(calls[0].request(), "/v1.41/containers/create");
    let got = g.engine.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/v1.41/containers/create");
    g.stop().await;
}

#[tokio::test]
async fn a_version_written_with_three_numbers_is_refused() {
    let g = Guarded::start().await;
    let rsp = g
        .send(&post_json(
            "/v1.41.0/containers/create",
            &j!({"Image": "busybox"}),
        ))
        .await;
    g.assert_refused(&rsp, "/v1.41.0/");
    assert!(rsp.message().contains("vMAJOR.MINOR"), "{}", rsp.message());
    g.stop().await;
}

#[tokio::test]
async fn a_form_body_on_post_is_refused() {
    let g = Guarded::start().await;
    let rsp = g
        .send(&request(
            "POST",
            "/v1.41/containers/create",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"Image=busybox",
        ))
        .await;
    g.assert_refused(&rsp, "form body");
    assert!(
        rsp.message().contains("application/x-www-form-urlencoded"),
        "{}",
        rsp.message()
    );
    g.stop().await;
}

#[tokio::test]
async fn a_query_with_a_semicolon_is_refused() {
    let g = Guarded::start().await;
    let rsp = g
        .send(&post_json(
            "/v1.41/containers/create?name=a;b",
            &j!({"Image": "busybox"}),
        ))
        .await;
    g.assert_refused(&rsp, "';' in the query");
    assert!(rsp.message().contains("';'"), "{}", rsp.message());
    g.stop().await;
}

/// Every spelling of the create endpoint either runs the create hook, with the engine
/// receiving the canonical target, or is refused with the engine receiving nothing: no
/// spelling reaches the engine's create handler past the hook.
#[tokio::test]
async fn every_spelling_of_create_is_hooked_with_the_canonical_path_or_refused() {
    // (target as sent, Some(target the engine must receive) or None for refused)
    let table: &[(&str, Option<&str>)] = &[
        ("/v1.41/containers/create", Some("/v1.41/containers/create")),
        ("/containers/create", Some("/containers/create")),
        (
            "/v1.41/containers/create?name=web",
            Some("/v1.41/containers/create?name=web"),
        ),
        (
            "/v1.41/containers/cr%65ate",
            Some("/v1.41/containers/create"),
        ),
        (
            "/v1.41/%63ontainers/create",
            Some("/v1.41/containers/create"),
        ),
        (
            "/%761.41/containers/create",
            Some("/v1.41/containers/create"),
        ),
        (
            "/v1%2E41/containers/create",
            Some("/v1.41/containers/create"),
        ),
        (
            "/v1.41/containers/create?name=%77eb",
            Some("/v1.41/containers/create?name=%77eb"),
        ),
        ("/v1.41/containers%2Fcreate", None),
        ("/v1.41/containers%2fcreate", None),
        ("/v1.41%2Fcontainers/create", None),
        ("/v1.41//containers/create", None),
        ("//v1.41/containers/create", None),
        ("/v1.41/./containers/create", None),
        ("/v1.41/containers/../containers/create", None),
        ("/v1.41/x/%2E%2E/containers/create", None),
        ("/v1.41/containers/create%00", None),
        ("/v1.41/containers/create%0A", None),
        ("/v1.41/containers/cr%zzate", None),
        ("/v1.41.0/containers/create", None),
        ("/v01.41/containers/create", None),
        ("/v1.041/containers/create", None),
        ("/v1.41/containers/create?name=a;b", None),
        ("/v1.41/containers/create?name=%zz", None),
        ("http://docker/v1.41/containers/create", None),
        ("*", None),
    ];
    let g = Guarded::start().await;
    let mut failures = vec![];
    for (target, expected) in table {
        let (engine_before, hook_before) = (g.engine.requests().len(), g.hook.calls().len());
        let rsp = g.send(&post_json(target, &j!({"Image": "busybox"}))).await;
        let engine_got: Vec<String> = g.engine.requests()[engine_before..]
            .iter()
            .map(|r| r.target.clone())
            .collect();
        let hooked = g.hook.calls().len() - hook_before;
        let outcome = format!(
            "{target}: status {}, hook calls {hooked}, engine got {engine_got:?} ({})",
            rsp.status(),
            rsp.message()
        );
        let ok = match expected {
            Some(canonical) => {
                rsp.status() == 201 && hooked == 1 && engine_got == [canonical.to_string()]
            }
            None => rsp.status() == 400 && hooked == 0 && engine_got.is_empty(),
        };
        if !ok {
            failures.push(format!("expected {expected:?}; {outcome}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    g.stop().await;
}

// === W3C trace context ===

/// The trace id and parent id of a `traceparent` value.
fn trace_parts(value: Option<&str>) -> (String, String) {
    let v = value.expect("a traceparent header");
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00", "{v}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_clients_traceparent_reaches_the_engine_and_the_adapter_as_the_agents_child() {
    busbar_testkit::logs();
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let adapter = FakeAdapter::start(pass).await;
    let yaml = chains(
        &[("POST /*/containers/create", &["a"], &[])],
        &[("a", adapter.url().to_owned())],
    );
    let agent = TestAgent::start(&engine, &yaml).await;
    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let send = |headers: Vec<(&'static str, &'static str)>| {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend(headers);
        request(
            "POST",
            "/v1.41/containers/create",
            &all,
            CREATE_BODY.as_bytes(),
        )
    };
    // A valid one, with a tracestate: the trace goes on, with the agent's own span.
    let rsp = raw::exchange(
        agent.addr(),
        &send(vec![
            ("traceparent", CLIENT),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ]),
    )
    .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    // An invalid one (upper-case hex): ignored, a new trace, the request served all the same.
    let rsp = raw::exchange(
        agent.addr(),
        &send(vec![
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            ),
            ("tracestate", "rojo=1"),
        ]),
    )
    .await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());

    let got = engine.requests();
    let calls = adapter.calls();
    assert_eq!((got.len(), calls.len()), (2, 2), "{got:?}");
    let (engine_trace, engine_parent) = trace_parts(got[0].header("traceparent"));
    let (hook_trace, hook_parent) = trace_parts(calls[0].header("traceparent"));
    assert_eq!(engine_trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hook_trace, engine_trace);
    assert_ne!(engine_parent, "00f067aa0ba902b7", "the agent's own span");
    assert_eq!(hook_parent, engine_parent, "one span per process");
    assert_eq!(got[0].header("tracestate"), Some("rojo=00f067aa0ba902b7"));
    assert_eq!(calls[0].header("tracestate"), Some("rojo=00f067aa0ba902b7"));

    let (new_trace, _) = trace_parts(got[1].header("traceparent"));
    assert_ne!(new_trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace_parts(calls[1].header("traceparent")).0, new_trace);
    assert_eq!(
        got[1].header("tracestate"),
        None,
        "dropped with its traceparent"
    );

    agent.stop().await;
    adapter.stop().await;
    engine.stop().await;
}

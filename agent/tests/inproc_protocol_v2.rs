//! In-process tests of protocol version 2 and of the hook call log: the real agent (HTTP
//! front, proxy, chains, adapter calls, engine client) on `127.0.0.1:0`, between a raw HTTP
//! client and a fake engine (a test double), with fake adapters (test doubles). What each
//! test checks is what a user or an adapter author would: the status and body the client
//! got, whether the engine was called, what each adapter received and in which order, what
//! the call log holds.

use std::time::Duration;

use busbar_testkit::adapter::{answer_v2, pass, pass_v2, refuse};
use busbar_testkit::raw::{self, request};
use busbar_testkit::{json, AdapterCall, FakeAdapter, FakeEngine, TestAgent};
use serde_json::{json as j, Value};

const CREATE_BODY: &str =
    r#"{"Image":"busybox","Cmd":["true"],"Env":["SECRET_TOKEN=hunter2","MODE=test"]}"#;

/// A create as the Docker CLI sends it, with credentials in its headers.
fn create_request() -> Vec<u8> {
    request(
        "POST",
        "/v1.41/containers/create?name=web",
        &[
            ("Content-Type", "application/json"),
            ("X-Request-Id", "inproc-v2-1"),
            ("Authorization", "Bearer s3cret-bearer"),
            ("X-Registry-Auth", "c2VjcmV0LXJlZ2lzdHJ5"),
            ("User-Agent", "Docker-Client/24.0.7 (linux)"),
        ],
        CREATE_BODY.as_bytes(),
    )
}

/// A chain file of version 2: the create's pre-hooks, then each adapter with its URL and
/// protocol (and `debug: true` when asked).
fn chains(pre: &[&str], adapters: &[(&str, &FakeAdapter, u32, bool)]) -> String {
    let mut y = format!(
        "version: 2\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [{}]\nadapters:\n",
        pre.join(", ")
    );
    for (name, adapter, protocol, debug) in adapters {
        y += &format!(
            "  {name}:\n    url: {}\n    protocol: {protocol}\n    debug: {debug}\n",
            adapter.url()
        );
    }
    y
}

/// The exact bytes busbar's v1 pre-hook call for [`create_request`] is, as Powerstrip wrote it.
fn v1_create_call() -> String {
    format!(
        r#"{{"PowerstripProtocolVersion":1,"Type":"pre-hook","ClientRequest":{{"Method":"POST","Request":"/v1.41/containers/create?name=web","Body":{}}}}}"#,
        serde_json::to_string(CREATE_BODY).unwrap()
    )
}

fn kinds(calls: &[AdapterCall]) -> Vec<&str> {
    calls.iter().map(AdapterCall::kind).collect()
}

#[tokio::test]
async fn a_v2_pre_hook_answers_the_client_itself_and_the_engine_is_never_called() {
    busbar_testkit::logs();
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"from-engine"}"#),
    );
    let legacy = FakeAdapter::start(pass).await;
    let answerer =
        FakeAdapter::start(answer_v2(201, j!({"Id": "from-adapter", "Warnings": []}))).await;
    let after = FakeAdapter::start(pass_v2).await;
    let yaml = chains(
        &["legacy", "answerer", "after"],
        &[
            ("legacy", &legacy, 1, false),
            ("answerer", &answerer, 2, false),
            ("after", &after, 2, false),
        ],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(agent.addr(), &create_request()).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(rsp.json(), j!({"Id": "from-adapter", "Warnings": []}));
    assert_eq!(rsp.header("x-answered-by"), Some("fake-adapter"));
    assert_eq!(rsp.header("content-type"), Some("application/json"));

    assert!(
        engine.requests().is_empty(),
        "the engine was called: {:?}",
        engine.requests()
    );
    assert!(
        after.calls().is_empty(),
        "the chain went on after the answer"
    );
    let calls = answerer.calls();
    assert_eq!(kinds(&calls), ["pre-hook"]);
    assert_eq!(calls[0].payload["PowerstripProtocolVersion"], 2);
    // The v1 adapter before it saw exactly Powerstrip's message.
    let legacy_calls = legacy.calls();
    assert_eq!(legacy_calls.len(), 1);
    assert_eq!(
        std::str::from_utf8(&legacy_calls[0].body).unwrap(),
        v1_create_call()
    );

    agent.stop().await;
    for a in [legacy, answerer, after] {
        a.stop().await;
    }
    engine.stop().await;
}

#[tokio::test]
async fn a_create_refused_by_the_engine_unwinds_both_v2_pre_hooks_in_reverse_order() {
    busbar_testkit::logs();
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(
            409,
            r#"{"message":"Conflict. The container name \"/web\" is already in use"}"#,
        ),
    );
    let first = FakeAdapter::start(pass_v2).await;
    let legacy = FakeAdapter::start(pass).await;
    let second = FakeAdapter::start(pass_v2).await;
    let yaml = chains(
        &["first", "legacy", "second"],
        &[
            ("first", &first, 2, false),
            ("legacy", &legacy, 1, false),
            ("second", &second, 2, false),
        ],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(agent.addr(), &create_request()).await;
    assert_eq!(rsp.status(), 409, "{}", rsp.text());
    assert!(
        rsp.json()["message"]
            .as_str()
            .unwrap()
            .contains("already in use"),
        "{}",
        rsp.text()
    );
    assert_eq!(engine.requests().len(), 1);

    let (f, s) = (first.calls(), second.calls());
    assert_eq!(kinds(&f), ["pre-hook", "unwind"]);
    assert_eq!(kinds(&s), ["pre-hook", "unwind"]);
    assert!(
        s[1].seq < f[1].seq,
        "unwind in reverse order: second ({}) before first ({})",
        s[1].seq,
        f[1].seq
    );
    assert!(
        engine.requests()[0].seq < s[1].seq,
        "unwound after the engine"
    );
    for unwind in [&f[1], &s[1]] {
        let failure = &unwind.payload["Failure"];
        assert_eq!(failure["Stage"], "engine");
        assert_eq!(failure["Code"], 409);
        assert_eq!(failure["Adapter"], Value::Null);
        assert!(failure["Body"].as_str().unwrap().contains("already in use"));
        assert_eq!(unwind.payload["PowerstripProtocolVersion"], 2);
        assert_eq!(unwind.payload["Caller"]["RequestId"], "inproc-v2-1");
        assert_eq!(
            unwind.payload["ClientRequest"]["Request"],
            "/v1.41/containers/create?name=web"
        );
        assert!(unwind.payload["ModifiedClientRequest"]["Body"].is_string());
    }
    // What v2 adds: headers, credentials redacted; who calls.
    let pre = &f[0].payload;
    let headers = &pre["ClientRequest"]["Headers"];
    assert_eq!(headers["authorization"], j!(["<redacted>"]));
    assert_eq!(headers["x-registry-auth"], j!(["<redacted>"]));
    assert_eq!(headers["user-agent"], j!(["Docker-Client/24.0.7 (linux)"]));
    assert_eq!(headers["x-request-id"], j!(["inproc-v2-1"]));
    assert_eq!(
        pre["Caller"],
        j!({"RequestId": "inproc-v2-1", "Node": null, "Client": null})
    );
    assert!(!f[0].body.windows(6).any(|w| w == b"s3cret"));
    // The v1 adapter between them: exactly the v1 message, and no unwind call.
    let l = legacy.calls();
    assert_eq!(l.len(), 1, "{:?}", kinds(&l));
    assert_eq!(std::str::from_utf8(&l[0].body).unwrap(), v1_create_call());

    agent.stop().await;
    for a in [first, legacy, second] {
        a.stop().await;
    }
    engine.stop().await;
}

#[tokio::test]
async fn a_later_pre_hook_that_refuses_unwinds_the_v2_pre_hooks_before_it() {
    let engine = FakeEngine::start().await;
    let first = FakeAdapter::start(pass_v2).await;
    let quota = FakeAdapter::start(refuse(403, r#"{"message":"quota exceeded"}"#)).await;
    let yaml = chains(
        &["first", "quota"],
        &[("first", &first, 2, false), ("quota", &quota, 1, false)],
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(agent.addr(), &create_request()).await;
    assert_eq!(rsp.status(), 403, "{}", rsp.text());
    assert_eq!(rsp.json()["message"], "quota exceeded");
    assert!(engine.requests().is_empty());
    let f = first.calls();
    assert_eq!(kinds(&f), ["pre-hook", "unwind"]);
    assert_eq!(
        f[1].payload["Failure"],
        j!({"Stage": "pre-hook", "Adapter": "quota", "Code": 403,
            "ContentType": "application/json", "Body": "{\"message\":\"quota exceeded\"}"})
    );

    agent.stop().await;
    first.stop().await;
    quota.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn a_v2_post_hook_sees_both_sides_headers_and_a_v1_one_exactly_v1() {
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let v2 = FakeAdapter::start(pass_v2).await;
    let v1 = FakeAdapter::start(pass).await;
    let yaml = format!(
        "version: 2\nendpoints:\n  \"POST /*/containers/create\":\n    post: [v2, v1]\n\
         adapters:\n  v2:\n    url: {}\n    protocol: 2\n    reveal_headers: [X-Registry-Auth]\n  v1: {}\n",
        v2.url(),
        v1.url()
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    let rsp = raw::exchange(agent.addr(), &create_request()).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    assert_eq!(rsp.json()["Id"], "c1");
    let call = &v2.calls()[0].payload;
    assert_eq!(call["Type"], "post-hook");
    assert_eq!(call["ServerResponse"]["Code"], 201);
    assert_eq!(
        call["ServerResponse"]["Headers"]["content-type"],
        j!(["application/json"])
    );
    let headers = &call["ClientRequest"]["Headers"];
    assert_eq!(headers["authorization"], j!(["<redacted>"]));
    assert_eq!(
        headers["x-registry-auth"],
        j!(["c2VjcmV0LXJlZ2lzdHJ5"]),
        "revealed by the chain"
    );
    let v1_call = &v1.calls()[0];
    assert_eq!(
        std::str::from_utf8(&v1_call.body).unwrap(),
        format!(
            r#"{{"PowerstripProtocolVersion":1,"Type":"post-hook","ClientRequest":{{"Method":"POST","Request":"/v1.41/containers/create?name=web","Body":{}}},"ServerResponse":{{"ContentType":"application/json","Body":"{{\"Id\":\"c1\",\"Warnings\":[]}}","Code":201}}}}"#,
            serde_json::to_string(CREATE_BODY).unwrap()
        )
    );

    agent.stop().await;
    v2.stop().await;
    v1.stop().await;
    engine.stop().await;
}

/// The call log's lines, once `n` are there (the log is written by a thread of its own).
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    busbar_testkit::within("the hook call log's lines", async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("each line is JSON"))
                .collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn the_call_log_of_a_create_shows_request_and_answer_with_credentials_and_env_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/hook-calls.jsonl");
    let engine = FakeEngine::start().await;
    engine.route("POST /*/containers/create", json(201, r#"{"Id":"c1"}"#));
    let audited = FakeAdapter::start(pass_v2).await;
    let quiet = FakeAdapter::start(pass).await;
    let yaml = chains(
        &["audited", "quiet"],
        &[("audited", &audited, 2, true), ("quiet", &quiet, 1, false)],
    );
    let agent = TestAgent::start_logged(&engine, &yaml, &log, false).await;

    let rsp = raw::exchange(agent.addr(), &create_request()).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    // The adapter itself was given the values; only the log hides them.
    assert!(audited.calls()[0].client_body().unwrap()["Env"][0] == "SECRET_TOKEN=hunter2");

    let lines = log_lines(&log, 1).await;
    assert_eq!(
        lines.len(),
        1,
        "only the adapter with debug: true: {lines:?}"
    );
    let line = &lines[0];
    assert_eq!(line["adapter"], "audited");
    assert_eq!(line["type"], "pre-hook");
    assert_eq!(line["protocol"], 2);
    assert_eq!(line["request_id"], "inproc-v2-1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["error"], Value::Null);
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    let request = &line["call"]["ClientRequest"];
    assert_eq!(request["Headers"]["authorization"], j!(["<redacted>"]));
    assert_eq!(request["Request"], "/v1.41/containers/create?name=web");
    let body: Value = serde_json::from_str(request["Body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["Env"],
        j!(["SECRET_TOKEN=<redacted>", "MODE=<redacted>"])
    );
    assert_eq!(body["Image"], "busybox");
    let answered: Value = serde_json::from_str(
        line["answer"]["ModifiedClientRequest"]["Body"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        answered["Env"],
        j!(["SECRET_TOKEN=<redacted>", "MODE=<redacted>"])
    );
    assert_eq!(line["call_headers"]["x-request-id"], j!(["inproc-v2-1"]));
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in ["hunter2", "s3cret-bearer", "c2VjcmV0LXJlZ2lzdHJ5"] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log is its owner's only");

    agent.stop().await;
    audited.stop().await;
    quiet.stop().await;
    engine.stop().await;
}

#[tokio::test]
async fn debug_hooks_logs_every_adapter_and_a_failed_call_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook-calls.jsonl");
    let engine = FakeEngine::start().await;
    let unreachable = FakeAdapter::unreachable_url().await;
    let yaml = format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [gone]\nadapters:\n  gone: {unreachable}\n"
    );
    let agent = TestAgent::start_logged(&engine, &yaml, &log, true).await;

    let rsp = raw::exchange(agent.addr(), &create_request()).await;
    assert_eq!(rsp.status(), 502, "{}", rsp.text());
    let lines = log_lines(&log, 1).await;
    assert_eq!(lines[0]["adapter"], "gone");
    assert_eq!(lines[0]["protocol"], 1);
    assert_eq!(lines[0]["status"], Value::Null);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{}",
        lines[0]
    );
    assert!(!std::fs::read_to_string(&log).unwrap().contains("hunter2"));

    agent.stop().await;
    engine.stop().await;
}

/// A version 2 chain for the create with `pre` and `post` hooks, every adapter of protocol 2.
fn chains_with_post(adapters: &[(&str, &FakeAdapter)], pre: &str, post: &str) -> String {
    let mut y = format!(
        "version: 2\nendpoints:\n  \"POST /*/containers/create\":\n    pre: [{pre}]\n    post: [{post}]\nadapters:\n"
    );
    for (name, adapter) in adapters {
        y += &format!("  {name}:\n    url: {}\n    protocol: 2\n", adapter.url());
    }
    y
}

/// docs/protocol.md, "Unwinding": post-hooks take no part in it. A post-hook that refuses
/// after the engine succeeded unwinds no pre-hook; when the engine fails, the pre-hooks are
/// unwound first, then the post-hooks run on the engine's error as always, and no post-hook
/// ever gets an unwind call.
#[tokio::test]
async fn post_hooks_take_no_part_in_unwinding() {
    // The engine succeeds, the post-hook refuses: the client gets the refusal, and nothing
    // is unwound (the engine did the work; the pre-hook's part of it stands).
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let first = FakeAdapter::start(pass_v2).await;
    let late = FakeAdapter::start(refuse(500, r#"{"message":"late: audit store down"}"#)).await;
    let yaml = chains_with_post(&[("first", &first), ("late", &late)], "first", "late");
    let agent = TestAgent::start(&engine, &yaml).await;
    let rsp = raw::exchange(agent.addr(), &create_request()).await;
    assert_eq!(rsp.status(), 500, "{}", rsp.text());
    assert_eq!(rsp.json()["message"], "late: audit store down");
    assert_eq!(
        engine.requests().len(),
        1,
        "the engine created the container"
    );
    assert_eq!(
        kinds(&first.calls()),
        ["pre-hook"],
        "no unwind after the engine succeeded"
    );
    assert_eq!(kinds(&late.calls()), ["post-hook"]);
    agent.stop().await;
    for a in [first, late] {
        a.stop().await;
    }
    engine.stop().await;

    // The engine refuses: the pre-hook is unwound before the post-hook runs, and the post-hook
    // (a v2 adapter too) gets the engine's error, and no unwind call.
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(
            409,
            r#"{"message":"Conflict. The container name \"/web\" is already in use"}"#,
        ),
    );
    let first = FakeAdapter::start(pass_v2).await;
    let after = FakeAdapter::start(pass_v2).await;
    let yaml = chains_with_post(&[("first", &first), ("after", &after)], "first", "after");
    let agent = TestAgent::start(&engine, &yaml).await;
    let rsp = raw::exchange(agent.addr(), &create_request()).await;
    assert_eq!(rsp.status(), 409, "{}", rsp.text());
    let (f, a) = (first.calls(), after.calls());
    assert_eq!(kinds(&f), ["pre-hook", "unwind"]);
    assert_eq!(kinds(&a), ["post-hook"], "a post-hook gets no unwind call");
    assert!(
        f[1].seq < a[0].seq,
        "the unwind ({}) comes before the post-hook ({})",
        f[1].seq,
        a[0].seq
    );
    assert_eq!(a[0].payload["ServerResponse"]["Code"], 409);
    agent.stop().await;
    for x in [first, after] {
        x.stop().await;
    }
    engine.stop().await;
}

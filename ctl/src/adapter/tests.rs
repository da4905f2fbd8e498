//! `busbarctl adapter test` in-process: it passes the Rust and the Python hello-world adapters
//! (the kit's examples), in protocol versions 1 and 2, and fails each deliberately broken
//! adapter with a clear reason. The broken adapters are test doubles (`*Double`): small servers
//! that answer one canned reply (one to hook calls, another to unwind calls), since no real
//! adapter is broken in exactly one way.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use busbar_adapter::testing::TestAdapter;

use super::*;

#[path = "../../../adapter-kit/examples/hello.rs"]
#[allow(dead_code)]
mod hello;

fn args(url: &str, phase: Phase) -> TestArgs {
    TestArgs {
        url: url.to_owned(),
        endpoint: "POST /*/containers/create".to_owned(),
        phase,
        protocol: 1,
        timeout: Duration::from_secs(10),
    }
}

fn printed(report: &Report) -> String {
    let mut out = Vec::new();
    print(report, false, &mut out).expect("print");
    String::from_utf8(out).expect("UTF-8")
}

async fn passes(url: &str) {
    for protocol in [1, 2] {
        for phase in [Phase::Pre, Phase::Post] {
            let mut a = args(url, phase);
            a.protocol = protocol;
            let report = test(&a).await.expect("the suite runs");
            let text = printed(&report);
            assert_eq!(report.problems(), 0, "v{protocol} {phase:?}:\n{text}");
            assert!(report.outcomes.len() >= 7, "{text}");
            let unwinds = report
                .outcomes
                .iter()
                .filter(|o| o.name.contains("unwind"))
                .count();
            // Only v2 pre-hooks are unwound.
            let expected = if protocol == 2 && phase == Phase::Pre {
                3
            } else {
                0
            };
            assert_eq!(unwinds, expected, "{text}");
            assert!(text.contains(&format!("(protocol {protocol},")), "{text}");
        }
    }
}

#[tokio::test]
async fn the_rust_hello_world_passes() {
    let adapter = TestAdapter::start(hello::Hello {
        delay: Duration::ZERO,
    })
    .await
    .expect("bind");
    passes(&adapter.url()).await;
    adapter.stop().await;
}

#[tokio::test]
async fn the_python_hello_world_passes() {
    use tokio::io::AsyncBufReadExt;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../adapter-kit/examples/hello.py"
    );
    let mut child = tokio::process::Command::new("python3")
        .args([script, "--port", "0", "--delay", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (the Python hello-world needs it)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("hello.py starts within 20 s")
        .expect("read")
        .expect("a line");
    let url = first
        .strip_prefix("hello: listening on ")
        .expect("its URL")
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    passes(&url).await;
    child.kill().await.expect("stop hello.py");
}

/// One canned answer of a [`Double`]: status, content type, body, and a wait before it.
#[derive(Clone, Copy)]
struct Canned(u16, &'static str, &'static str, Duration);

/// A v2 pre-hook answer that goes on with the client's body as it is in the suite's calls.
const GO_ON_V2: Canned = Canned(
    200,
    "application/json",
    r#"{"PowerstripProtocolVersion": 2, "ModifiedClientRequest": {"Body": "{}"}}"#,
    Duration::ZERO,
);
const UNWOUND: Canned = Canned(200, "application/json", "{}", Duration::ZERO);

/// A test double: an HTTP/1.1 server that answers every hook call with the same status,
/// content type and body, and every unwind call with another.
struct Double {
    url: String,
    stop: CancellationToken,
}

impl Double {
    async fn start(status: u16, content_type: &'static str, body: &'static str) -> Double {
        let canned = Canned(status, content_type, body, Duration::ZERO);
        Double::start_v2(canned, canned).await
    }

    /// Answers `hook` to pre- and post-hook calls and `unwind` to unwind calls.
    async fn start_v2(hook: Canned, unwind: Canned) -> Double {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/adapter", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => accepted.expect("accept"),
                };
                tokio::spawn(async move {
                    while let Some(call) = read_request(&mut conn).await {
                        let is_unwind = serde_json::from_slice::<Value>(&call)
                            .is_ok_and(|c| c["Type"] == "unwind");
                        let Canned(status, content_type, body, delay) =
                            if is_unwind { unwind } else { hook };
                        tokio::time::sleep(delay).await;
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Double { url, stop }
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reads one request (head and a Content-Length body) and gives its body; `None` at the end
/// of the connection.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf[end + 4..end + 4 + len].to_vec());
        }
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The suite fails against the adapter at `url`, every failing line carries the call and a
/// hint, and the problems include `expected`.
async fn fails_with(url: &str, phase: Phase, timeout: Duration, expected: &str) -> Report {
    fails_with_v(url, phase, 1, timeout, expected).await
}

/// [`fails_with`] for a protocol version.
async fn fails_with_v(
    url: &str,
    phase: Phase,
    protocol: u32,
    timeout: Duration,
    expected: &str,
) -> Report {
    let mut a = args(url, phase);
    a.timeout = timeout;
    a.protocol = protocol;
    let report = test(&a).await.expect("the suite runs");
    let text = printed(&report);
    assert!(report.problems() > 0, "{text}");
    assert!(
        report.problem_lines().iter().any(|l| l.contains(expected)),
        "expected a problem saying {expected:?}:\n{text}"
    );
    assert!(
        text.contains("FAIL  ") && text.contains("      call: ") && text.contains("      hint: "),
        "{text}"
    );
    report
}

const TEN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_invalid_json_double_fails() {
    let double = Double::start(
        200,
        "application/json",
        r#"{"ModifiedClientRequest": {"Body": "#,
    )
    .await;
    let report = fails_with(&double.url, Phase::Pre, TEN, "the answer is not JSON").await;
    assert_eq!(report.problems(), report.outcomes.len(), "every call fails");
}

#[tokio::test]
async fn a_wrong_field_name_double_fails() {
    let double = Double::start(
        200,
        "application/json",
        r#"{"PowerstripProtocolVersion": 1, "ModifiedClientRequest": {"body": "{}"}}"#,
    )
    .await;
    let report = fails_with(
        &double.url,
        Phase::Pre,
        TEN,
        "wrong field name \"body\": busbar reads \"Body\", and ignores \"body\"",
    )
    .await;
    // And what it costs: the engine would get no body.
    assert!(report
        .problem_lines()
        .iter()
        .any(|l| l.contains("busbar sends the engine an empty body")));
}

#[tokio::test]
async fn a_post_hook_shape_answered_to_a_pre_hook_fails() {
    let double = Double::start(
        200,
        "application/json",
        r#"{"PowerstripProtocolVersion": 1, "ModifiedServerResponse": {"ContentType": "application/json", "Body": "{}", "Code": 201}}"#,
    )
    .await;
    fails_with(
        &double.url,
        Phase::Pre,
        TEN,
        "a post-hook answer (ModifiedServerResponse) to a pre-hook call",
    )
    .await;
    // And the other way round.
    let double = Double::start(
        200,
        "application/json",
        r#"{"PowerstripProtocolVersion": 1, "ModifiedClientRequest": {"Body": null}}"#,
    )
    .await;
    fails_with(
        &double.url,
        Phase::Post,
        TEN,
        "a pre-hook answer (ModifiedClientRequest) to a post-hook call",
    )
    .await;
}

#[tokio::test]
async fn an_html_error_page_double_fails() {
    let double = Double::start(
        500,
        "text/html; charset=utf-8",
        "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>",
    )
    .await;
    fails_with(
        &double.url,
        Phase::Pre,
        TEN,
        "answered 500 with an HTML page",
    )
    .await;
}

#[tokio::test]
async fn a_body_that_is_an_object_fails() {
    let double = Double::start(
        200,
        "application/json",
        r#"{"PowerstripProtocolVersion": 1, "ModifiedClientRequest": {"Body": {"Image": "busybox"}}}"#,
    )
    .await;
    fails_with(
        &double.url,
        Phase::Pre,
        TEN,
        "ModifiedClientRequest.Body must be a string or null, found an object \
         (Powerstrip bodies are JSON text inside a string, e.g. json.dumps(body))",
    )
    .await;
}

#[tokio::test]
async fn an_answer_after_the_timeout_fails() {
    // The hello-world itself, slower than the timeout it is tested with.
    let slow = TestAdapter::start(hello::Hello {
        delay: Duration::from_millis(600),
    })
    .await
    .expect("bind");
    let report = fails_with(
        &slow.url(),
        Phase::Pre,
        Duration::from_millis(200),
        "no answer within 200ms",
    )
    .await;
    assert_eq!(
        report.problems(),
        report.outcomes.len(),
        "every call times out"
    );
    slow.stop().await;
}

#[tokio::test]
async fn a_rewrite_that_leaves_the_endpoint_fails_and_a_refusal_is_a_note() {
    let double = Double::start(
        200,
        "application/json",
        r#"{"ModifiedClientRequest": {"Body": "{}", "Request": "/v1.41/containers/web/start"}}"#,
    )
    .await;
    fails_with(
        &double.url,
        Phase::Pre,
        TEN,
        "which changes which endpoints match",
    )
    .await;

    let double = Double::start(
        403,
        "application/json",
        r#"{"message": "image busybox is not allowed"}"#,
    )
    .await;
    let report = test(&args(&double.url, Phase::Pre)).await.expect("runs");
    assert_eq!(report.problems(), 0, "{}", printed(&report));
    assert!(
        printed(&report).contains("note: refused with 403"),
        "{}",
        printed(&report)
    );
}

#[test]
fn the_command_exits_1_on_problems_and_64_on_usage_errors() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    let double = runtime.block_on(Double::start(200, "text/plain", "sadness for you, today."));
    let mut out = Vec::new();
    let err = run_adapter(&args(&double.url, Phase::Pre), false, &mut out).expect_err("problems");
    assert!(!err.is_usage());
    assert!(
        err.to_string()
            .ends_with("problems found: the adapter does not follow protocol version 1 yet"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out).contains("\"sadness for you, today.\""));

    let mut two = args(&double.url, Phase::Pre);
    two.protocol = 2;
    let err = run_adapter(&two, false, &mut out).expect_err("problems");
    assert!(
        !err.is_usage()
            && err
                .to_string()
                .ends_with("the adapter does not follow protocol version 2 yet"),
        "{err}"
    );
    let mut three = args(&double.url, Phase::Pre);
    three.protocol = 3;
    let err = run_adapter(&three, false, &mut out).expect_err("usage");
    assert!(
        err.is_usage() && err.to_string().contains("1 and 2"),
        "{err}"
    );
    let mut never = args(&double.url, Phase::Pre);
    never.endpoint = "post /x".into();
    let err = run_adapter(&never, false, &mut out).expect_err("usage");
    assert!(
        err.is_usage() && err.to_string().contains("methods are uppercase"),
        "{err}"
    );
    drop(double);
}

#[tokio::test]
async fn a_password_in_the_url_is_never_printed() {
    let double = Double::start(200, "text/plain", "nope").await;
    let url = double.url.replace("http://", "http://hook:s3cret@");
    let report = test(&args(&url, Phase::Pre)).await.expect("runs");
    let mut out = Vec::new();
    print(&report, true, &mut out).expect("print");
    let text = printed(&report) + &String::from_utf8(out).expect("UTF-8");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("http://***@127.0.0.1:"), "{text}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    assert!(
        parse_duration("0s").is_err()
            && parse_duration("ten").is_err()
            && parse_duration("5h").is_err()
    );
}

// ---- protocol 2 ----

/// The suite against a double answering `hook` and `unwind` fails, and says `expected`.
async fn v2_fails(hook: Canned, unwind: Canned, expected: &str) -> Report {
    let double = Double::start_v2(hook, unwind).await;
    fails_with_v(&double.url, Phase::Pre, 2, TEN, expected).await
}

#[tokio::test]
async fn the_v2_calls_carry_headers_a_caller_and_unwinds() {
    let target = Target::new("POST /*/containers/create", "http://a/hook").expect("target");
    let checks = suite(&target, Phase::Pre, 2).expect("a v2 suite");
    let docs: Vec<Value> = checks
        .iter()
        .map(|c| serde_json::from_slice(&c.document).expect("JSON"))
        .collect();
    for doc in &docs {
        assert_eq!(doc["PowerstripProtocolVersion"], 2, "{doc}");
        assert!(doc["ClientRequest"]["Headers"].is_object(), "{doc}");
        assert!(doc["Caller"]["RequestId"].is_string(), "{doc}");
    }
    // Each is a document busbar's own types read (the agent writes them with those).
    let first: v2::PreHookRequest = serde_json::from_value(docs[0].clone()).expect("v2 pre");
    assert_eq!(
        first.client_request.headers["authorization"],
        ["<redacted>"]
    );
    assert_eq!(first.caller.client.expect("a client").user, "alice");
    let unwinds: Vec<v2::UnwindRequest> = docs
        .iter()
        .filter(|d| d["Type"] == "unwind")
        .map(|d| serde_json::from_value(d.clone()).expect("an unwind call"))
        .collect();
    assert_eq!(unwinds.len(), 3);
    assert!(unwinds.iter().any(|u| u.failure.stage == v2::Stage::Engine));
    assert!(unwinds
        .iter()
        .any(|u| u.failure.stage == v2::Stage::PreHook
            && u.failure.adapter.as_deref() == Some("quota")));
    assert!(unwinds.iter().any(|u| u.failure.body.is_none()));
    // Post-hooks get the engine's headers, and no unwind.
    let post = suite(&target, Phase::Post, 2).expect("a v2 post suite");
    for c in &post {
        let call: v2::PostHookRequest = serde_json::from_slice(&c.document).expect("v2 post");
        assert_eq!(call.server_response.headers["api-version"], ["1.41"]);
    }
    // And v1 stays v1: not a key of v2.
    for c in suite(&target, Phase::Pre, 1).expect("v1") {
        let doc: Value = serde_json::from_slice(&c.document).expect("JSON");
        assert_eq!(doc["PowerstripProtocolVersion"], 1);
        assert!(doc.get("Caller").is_none() && doc["ClientRequest"].get("Headers").is_none());
    }
}

#[tokio::test]
async fn a_v2_double_that_refuses_unwind_calls_fails() {
    // What a v1-only adapter does with a Type it does not know.
    let report = v2_fails(
        GO_ON_V2,
        Canned(
            400,
            "application/json",
            r#"{"message": "Type must be \"pre-hook\" or \"post-hook\""}"#,
            Duration::ZERO,
        ),
        "the unwind call was answered 400",
    )
    .await;
    assert_eq!(
        report.problems(),
        3,
        "the three unwind calls, and only them"
    );
    assert!(printed(&report).contains("answer any 2xx ({} will do)"));
}

#[tokio::test]
async fn a_v1_only_adapter_that_drops_the_connection_on_unwind_fails() {
    // A test double of an adapter that knows only pre- and post-hooks: it reads an unwind
    // call as a post-hook, fails on the missing ServerResponse and closes the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/adapter", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                while let Some(call) = read_request(&mut conn).await {
                    let call: Value = serde_json::from_slice(&call).unwrap_or(Value::Null);
                    if call["Type"] == "unwind" {
                        return; // dropped: the connection closes with no answer
                    }
                    let body = GO_ON_V2.2;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let report = fails_with_v(&url, Phase::Pre, 2, TEN, "connection closed").await;
    assert_eq!(report.problems(), 3, "{}", printed(&report));
    assert!(
        printed(&report).contains("does the adapter fail on a call whose Type is \"unwind\""),
        "{}",
        printed(&report)
    );
    server.abort();
}

#[tokio::test]
async fn a_v2_double_that_unwinds_with_an_html_error_fails() {
    v2_fails(
        GO_ON_V2,
        Canned(
            500,
            "text/html",
            "<html><body>Internal Server Error</body></html>",
            Duration::ZERO,
        ),
        "the unwind call was answered 500 with an HTML page",
    )
    .await;
}

#[tokio::test]
async fn a_v2_double_that_unwinds_after_the_timeout_fails() {
    let double = Double::start_v2(
        GO_ON_V2,
        Canned(200, "application/json", "{}", Duration::from_millis(600)),
    )
    .await;
    let report = fails_with_v(
        &double.url,
        Phase::Pre,
        2,
        Duration::from_millis(300),
        "no answer to the unwind call within 300ms",
    )
    .await;
    assert_eq!(report.problems(), 3, "{}", printed(&report));
}

#[tokio::test]
async fn a_v2_double_that_both_goes_on_and_answers_fails() {
    v2_fails(
        Canned(
            200,
            "application/json",
            r#"{"PowerstripProtocolVersion": 2, "ModifiedClientRequest": {"Body": "{}"}, "Response": {"Code": 201, "Body": "{}"}}"#,
            Duration::ZERO,
        ),
        UNWOUND,
        "reply has both \"ModifiedClientRequest\" (go on) and \"Response\" (answer the client): give one",
    )
    .await;
}

#[tokio::test]
async fn a_v2_double_whose_response_is_malformed_fails() {
    v2_fails(
        Canned(
            200,
            "application/json",
            r#"{"Response": {"Code": "201"}}"#,
            Duration::ZERO,
        ),
        UNWOUND,
        "Response.Code must be an HTTP status code (100-599) or null, found the string \"201\"",
    )
    .await;
    v2_fails(
        Canned(
            200,
            "application/json",
            r#"{"Response": {"Code": 201, "Body": {"Id": "x"}}}"#,
            Duration::ZERO,
        ),
        UNWOUND,
        "Response.Body must be a string or null, found an object",
    )
    .await;
    v2_fails(
        Canned(
            200,
            "application/json",
            r#"{"Response": {"Code": 200, "ContentType": "application/json", "Body": "cached!"}}"#,
            Duration::ZERO,
        ),
        UNWOUND,
        "get a Response.Body that is not JSON",
    )
    .await;
    v2_fails(
        Canned(
            200,
            "application/json",
            r#"{"PowerstripProtocolVersion": 2, "response": {"Code": 201}}"#,
            Duration::ZERO,
        ),
        UNWOUND,
        "wrong field name \"response\": busbar reads \"Response\"",
    )
    .await;
}

#[tokio::test]
async fn a_v2_double_answering_the_client_itself_passes_with_a_note() {
    let double = Double::start_v2(
        Canned(
            200,
            "application/json",
            r#"{"PowerstripProtocolVersion": 2, "Response": {"Code": 201, "ContentType": "application/json", "Body": "{\"Id\":\"cached\",\"Warnings\":[]}", "Headers": {"X-Served-By": "cache"}}}"#,
            Duration::ZERO,
        ),
        UNWOUND,
    )
    .await;
    let mut a = args(&double.url, Phase::Pre);
    a.protocol = 2;
    let report = test(&a).await.expect("runs");
    let text = printed(&report);
    assert_eq!(report.problems(), 0, "{text}");
    assert!(
        text.contains("note: answers the client itself with 201"),
        "{text}"
    );
}

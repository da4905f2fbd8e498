//! `busbarctl adapter test` in-process: it passes the Rust and the Python hello-world adapters
//! (the kit's examples), and fails each deliberately broken adapter with a clear reason. The
//! broken adapters are test doubles (`*Double`): small servers that answer one canned reply,
//! since no real adapter is broken in exactly one way.

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
    for phase in [Phase::Pre, Phase::Post] {
        let report = test(&args(url, phase)).await.expect("the suite runs");
        assert_eq!(report.problems(), 0, "{phase:?}:\n{}", printed(&report));
        assert!(report.outcomes.len() >= 7, "{}", printed(&report));
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

/// A test double: an HTTP/1.1 server that answers every call with the same status, content
/// type and body, after `delay`.
struct Double {
    url: String,
    stop: CancellationToken,
}

impl Double {
    async fn start(status: u16, content_type: &'static str, body: &'static str) -> Double {
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
                    while read_request(&mut conn).await.is_some() {
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

/// Reads one request (head and a Content-Length body); `None` at the end of the connection.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<()> {
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
            return Some(());
        }
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The suite fails against the adapter at `url`, every failing line carries the call and a
/// hint, and the problems include `expected`.
async fn fails_with(url: &str, phase: Phase, timeout: Duration, expected: &str) -> Report {
    let mut a = args(url, phase);
    a.timeout = timeout;
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
    let err = run_adapter(
        &AdapterCmd::Test(args(&double.url, Phase::Pre)),
        false,
        &mut out,
    )
    .expect_err("problems");
    assert!(!err.is_usage());
    assert!(
        err.to_string()
            .ends_with("problems found: the adapter does not follow protocol version 1 yet"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out).contains("\"sadness for you, today.\""));

    let mut two = args(&double.url, Phase::Pre);
    two.protocol = 2;
    assert!(run_adapter(&AdapterCmd::Test(two), false, &mut out)
        .expect_err("usage")
        .is_usage());
    let mut never = args(&double.url, Phase::Pre);
    never.endpoint = "post /x".into();
    let err = run_adapter(&AdapterCmd::Test(never), false, &mut out).expect_err("usage");
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

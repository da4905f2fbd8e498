//! `busbarctl adapter test URL`: checks an adapter against the protocol, from outside, in any
//! language, before it goes into a chain.
//!
//! It sends the adapter a suite of real-shaped hook calls for one endpoint and phase (a create
//! with a body, the same unversioned, a null body, a bodiless GET, unknown fields, a large
//! body, a query to rewrite; for post-hooks an engine 404 and an empty 204 too) and judges each
//! answer as busbar's agent would take it: the status, that it is JSON of the right shape with
//! the right (case-sensitive) field names and types, a `Body` that is a string or null, a
//! rewritten `Request` that stays on the same endpoints, a `Method` left alone, the time taken
//! against the timeout. Every problem is printed with the call that provoked it and a hint;
//! the command fails (exit 1) if there is any. Notes (a refusal, a slow answer) do not fail it.
//!
//! With `--protocol 2` every call has its v2 shape (`PowerstripProtocolVersion: 2`, the
//! request's and the engine's headers with credentials redacted, a `Caller`), a pre-hook's
//! answer may also be a `Response` of its own (judged as the client would get it), and a
//! pre-hook gets `unwind` calls too, each of which must be answered with a 2xx in time.
//!
//! # Layout
//! - [`suite`]: the calls ([`Check`]) for an endpoint, a phase and a protocol version. A new
//!   protocol version adds its calls there, and its reading of answers to [`judge`] (each
//!   check says what answer it expects: [`Expect`]).
//! - [`run`]: sends every check and judges the answers into a [`Report`]; [`print`] shows it.

use std::io::Write;
use std::time::Duration;

use busbar_adapter::redact::REDACTED;
use busbar_adapter::testing::{post_call, pre_call, Answer, HookClient, HookClientError};
use busbar_adapter::v1::{
    PostHookReply, PostHookRequest, PreHookReply, PreHookRequest, ReplyError,
};
use busbar_adapter::v2;
use busbar_chains::matcher::KeyPattern;
use busbar_chains::ChainSet;
use clap::{Args, Subcommand, ValueEnum};
use http::Method;
use serde_json::{json, Value};

/// `busbarctl adapter ...`
#[derive(Debug, Subcommand)]
pub enum AdapterCmd {
    /// Send an adapter a suite of real-shaped hook calls and check every answer against the
    /// protocol; exits 1 if any answer has a problem.
    Test(TestArgs),
    /// Print a node's hook call log (adapters with debug: true, or all with the agent's
    /// --debug-hooks), read through a gateway's adapter API.
    Log(crate::adapter_log::LogArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// The adapter's URL, as the chain names it (http://HOST:PORT/PATH).
    pub url: String,
    /// The endpoint key the adapter is meant for, as in adapters.yml.
    #[arg(long, default_value = "POST /*/containers/create")]
    pub endpoint: String,
    /// Which hook the adapter is meant to be.
    #[arg(long, value_enum, default_value_t = Phase::Pre)]
    pub phase: Phase,
    /// The protocol version the adapter speaks.
    #[arg(long, default_value_t = 1)]
    pub protocol: u32,
    /// The adapter's timeout in the chain (busbar's default is 10s): "10s", "500ms", "2m", or
    /// seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Pre,
    Post,
}

/// Why the command could not test, or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdapterTestError {
    #[error("{0}")]
    Usage(String),
    #[error("{problems} problem{} found: the adapter does not follow protocol version {protocol} yet", if *.problems == 1 { "" } else { "s" })]
    Problems { problems: usize, protocol: u32 },
    #[error("cannot write to standard output: {0}")]
    Output(#[from] std::io::Error),
}

impl AdapterTestError {
    pub fn is_usage(&self) -> bool {
        matches!(self, AdapterTestError::Usage(_))
    }
}

/// Runs `busbarctl adapter ...`.
pub fn run_adapter(
    args: &TestArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdapterTestError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(test(args))?;
    print(&report, json, out)?;
    match report.problems() {
        0 => Ok(()),
        problems => Err(AdapterTestError::Problems {
            problems,
            protocol: args.protocol,
        }),
    }
}

/// Builds the suite for `args` and runs it.
pub async fn test(args: &TestArgs) -> Result<Report, AdapterTestError> {
    let client = HookClient::new(&args.url)
        .map_err(|e| AdapterTestError::Usage(e.to_string()))?
        .with_timeout(args.timeout);
    let target = Target::new(&args.endpoint, &args.url)?;
    let checks = suite(&target, args.phase, args.protocol)?;
    Ok(run(&client, &target, args, &checks).await)
}

/// `10s`, `500ms`, `2m` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if !(seconds > 0.0 && seconds < 86_400.0) {
        return Err(format!("{text:?} must be positive and under a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

// ---- what is being tested ----

/// The endpoint under test: its key, a one-endpoint chain to judge rewrites with, and the
/// requests of the suite that it matches.
pub struct Target {
    key: String,
    chain: ChainSet,
    adapter_path: String,
    /// Real-shaped requests the key matches, best first: `(method, path)`.
    requests: Vec<(Method, String)>,
}

/// Requests a Docker client sends, the suite's material: those the endpoint matches are used.
const REQUESTS: &[(&str, &str)] = &[
    ("POST", "/v1.41/containers/create"),
    ("POST", "/v1.41/containers/web/start"),
    ("POST", "/v1.41/containers/web/stop"),
    ("POST", "/v1.41/containers/web/restart"),
    ("POST", "/v1.41/containers/web/kill"),
    ("DELETE", "/v1.41/containers/web"),
    ("GET", "/v1.41/containers/json"),
    ("GET", "/v1.41/containers/web/json"),
    ("POST", "/v1.41/networks/create"),
    ("POST", "/v1.41/volumes/create"),
    ("GET", "/v1.41/volumes"),
    ("GET", "/v1.41/volumes/web"),
    ("DELETE", "/v1.41/volumes/web"),
    ("POST", "/v1.41/volumes/prune"),
    ("GET", "/v1.41/images/busybox/json"),
    ("GET", "/v1.41/info"),
    ("GET", "/v1.41/version"),
    ("GET", "/_ping"),
];

impl Target {
    pub fn new(endpoint: &str, url: &str) -> Result<Target, AdapterTestError> {
        let pattern = KeyPattern::parse(endpoint);
        if pattern.never_matches() {
            return Err(AdapterTestError::Usage(format!(
                "--endpoint {endpoint:?}: {}",
                pattern.warnings().join("; ")
            )));
        }
        let yaml = format!(
            "endpoints:\n  {}:\n    pre: [t]\nadapters:\n  t: http://adapter.test/\n",
            serde_json::to_string(endpoint).expect("a string serializes")
        );
        let chain = ChainSet::from_yaml(&yaml)
            .map_err(|e| AdapterTestError::Usage(format!("--endpoint {endpoint:?}: {e}")))?;
        let mut requests: Vec<(Method, String)> = REQUESTS
            .iter()
            .map(|(m, p)| (m.parse().expect("a known method"), (*p).to_owned()))
            .filter(|(m, p)| pattern.matches(m, p))
            .collect();
        if requests.is_empty() {
            let made = example(endpoint);
            match made {
                Some((m, p)) if pattern.matches(&m, &p) => requests.push((m, p)),
                _ => {
                    return Err(AdapterTestError::Usage(format!(
                    "--endpoint {endpoint:?}: no Docker API request this tool knows matches it; \
                         give an endpoint such as \"POST /*/containers/create\""
                )))
                }
            }
        }
        let adapter_path = url
            .parse::<http::Uri>()
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        Ok(Target {
            key: endpoint.to_owned(),
            chain,
            adapter_path,
            requests,
        })
    }

    /// The request the suite is built around: the first one that carries a body, if any.
    fn primary(&self) -> &(Method, String) {
        self.requests
            .iter()
            .find(|(m, _)| *m == Method::POST || *m == Method::PUT)
            .unwrap_or(&self.requests[0])
    }

    /// A bodiless GET, and its name in the report: one the endpoint matches, else a list of
    /// containers (an adapter shared by several endpoints sees those too, and must pass what
    /// it does not care about).
    fn get(&self) -> (String, String) {
        match self.requests.iter().find(|(m, _)| *m == Method::GET) {
            Some((_, path)) => (path.clone(), "a bodiless GET".to_owned()),
            None => (
                "/v1.41/containers/json".to_owned(),
                "a bodiless GET (of another endpoint)".to_owned(),
            ),
        }
    }

    /// Whether `rewritten` stays on the endpoints `original` matches, as busbar requires.
    fn same_endpoints(&self, method: &str, original: &str, rewritten: &str) -> bool {
        let Ok(method) = method.parse::<Method>() else {
            return false;
        };
        self.chain
            .matches_same_endpoints(&method, original, rewritten)
    }
}

/// A request made from the key itself: `*` and `?` become `x`, a class its first member.
fn example(key: &str) -> Option<(Method, String)> {
    let (method, path) = key.split_once(' ')?;
    let method = if method.contains(['*', '?', '[']) {
        "POST"
    } else {
        method
    };
    let mut out = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => out.push('x'),
            '[' => {
                let class: String = chars.by_ref().take_while(|&c| c != ']').collect();
                out.push(class.chars().find(|&c| c != '!').unwrap_or('x'));
            }
            c => out.push(c),
        }
    }
    Some((method.parse().ok()?, out))
}

/// A body a client would send on `path` (`None` for a bodiless request).
fn body_for(method: &Method, path: &str) -> Option<Value> {
    if !(*method == Method::POST || *method == Method::PUT) {
        return None;
    }
    Some(if path.ends_with("/containers/create") {
        json!({
            "Hostname": "", "Image": "busybox", "Cmd": ["echo", "hello"], "Env": ["HELLO=world"],
            "Labels": {"app": "web"}, "AttachStdout": true, "AttachStderr": true, "Tty": false,
            "HostConfig": {"Binds": ["/data:/data"], "NetworkMode": "default", "RestartPolicy": {"Name": "no"}},
            "NetworkingConfig": {"EndpointsConfig": {}},
        })
    } else if path.ends_with("/networks/create") || path.ends_with("/volumes/create") {
        json!({"Name": "web", "Labels": {"app": "web"}})
    } else {
        json!({})
    })
}

/// What the engine answers a successful `method path`: status, content type, body, as
/// Docker 24 does.
fn engine_answer(method: &Method, path: &str) -> (u16, Option<&'static str>, String) {
    let json = Some("application/json");
    let volume = json!({
        "CreatedAt": "2026-12-07T14:03:07Z", "Driver": "local", "Labels": {"app": "web"},
        "Mountpoint": "/var/lib/docker/volumes/web/_data", "Name": "web", "Options": null,
        "Scope": "local",
    });
    let path = unversioned(path).unwrap_or_else(|| path.to_owned());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["containers", "create"]) => (
            201,
            json,
            r#"{"Id":"4fa6e0f0c6786287e131c3852c58a2e01cc697a68231826813597e4994f1d6e2","Warnings":[]}"#.to_owned(),
        ),
        ("POST", ["networks", "create"]) => (
            201,
            json,
            r#"{"Id":"22be93d5babb089c5aab8dbc369042fad48ff791584ca2da2100db837a1c7c30","Warning":""}"#.to_owned(),
        ),
        ("POST", ["volumes", "create"]) => (201, json, volume.to_string()),
        ("GET", ["volumes"]) => (
            200,
            json,
            json!({"Volumes": [volume], "Warnings": null}).to_string(),
        ),
        ("GET", ["volumes", _]) => (200, json, volume.to_string()),
        ("POST", ["volumes", "prune"]) => (
            200,
            json,
            r#"{"VolumesDeleted":null,"SpaceReclaimed":0}"#.to_owned(),
        ),
        ("DELETE", _) | ("POST", ["containers", _, _]) => (204, None, String::new()),
        ("GET", ["containers", "json"]) => (200, json, "[]".to_owned()),
        _ => (200, json, "{}".to_owned()),
    }
}

fn unversioned(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v")?;
    let at = rest.find('/')?;
    rest[..at]
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.')
        .then(|| rest[at..].to_owned())
}

// ---- the suite ----

/// One call of the suite.
pub struct Check {
    /// What the call is, for the report: `a create with a body`.
    pub name: String,
    /// The document sent (any bytes: a check may add unknown fields).
    pub document: Vec<u8>,
    /// One line saying what was sent, for the report.
    pub shown: String,
    /// busbar's headers that say where the call runs and for whom (`X-Busbar-Node`, ...),
    /// beside those of every call (`X-Busbar-Adapter-Api`, `X-Request-Id`).
    pub headers: Vec<(&'static str, &'static str)>,
    pub expect: Expect,
}

/// The request id of every call (`X-Request-Id`, and a v2 call's `Caller.RequestId`).
const REQUEST_ID: &str = "0b9e5c6a-busbarctl-adapter-test";

/// The headers a cluster agent adds for a client with a verified certificate, matching
/// [`caller`]`(true)`.
const CLUSTER_HEADERS: &[(&str, &str)] = &[
    (busbar_adapter::headers::NODE, "node2"),
    (busbar_adapter::headers::NODE_LABELS, "zone=a"),
    (busbar_adapter::headers::USER, "alice"),
    (busbar_adapter::headers::AUTH_METHOD, "TLS"),
    (busbar_adapter::headers::ROLE, "client"),
];

/// What answer a check expects, and so how [`judge`] reads it.
pub enum Expect {
    /// A protocol-1 pre-hook answer to this call.
    PreV1(PreHookRequest),
    /// A protocol-1 post-hook answer to this call.
    PostV1(PostHookRequest),
    /// A protocol-2 pre-hook answer: `ModifiedClientRequest` (go on, judged as in v1: the
    /// call's v1 part is kept here) or a `Response` of the adapter's own.
    PreV2(PreHookRequest),
    /// A protocol-2 post-hook answer: `ModifiedServerResponse`, as in v1.
    PostV2(PostHookRequest),
    /// The answer to a v2 `unwind` call: any 2xx, its body not read (docs/protocol.md).
    Unwind,
}

/// The calls for `target`, `phase` and `protocol`.
pub fn suite(target: &Target, phase: Phase, protocol: u32) -> Result<Vec<Check>, AdapterTestError> {
    let v1 = match phase {
        Phase::Pre => pre_suite_v1(target),
        Phase::Post => post_suite_v1(target),
    };
    match protocol {
        1 => Ok(v1),
        2 => Ok(suite_v2(target, phase, v1)),
        other => Err(AdapterTestError::Usage(format!(
            "--protocol {other}: busbar speaks protocol versions 1 and 2"
        ))),
    }
}

fn pre_check(name: &str, call: PreHookRequest, extra: Option<Value>) -> Check {
    let c = &call.client_request;
    let shown = format!(
        "pre-hook {} {}, Body {}",
        c.method,
        c.request,
        c.body
            .as_ref()
            .map_or("null".to_owned(), |b| format!("of {} bytes", b.len()))
    );
    Check {
        name: name.to_owned(),
        document: with_extra(call.to_json(), extra),
        shown,
        headers: Vec::new(),
        expect: Expect::PreV1(call),
    }
}

fn post_check(name: &str, call: PostHookRequest, extra: Option<Value>) -> Check {
    let (c, s) = (&call.client_request, &call.server_response);
    let shown = format!(
        "post-hook {} {}, engine answered {} {} with {} bytes",
        c.method,
        c.request,
        s.code,
        s.content_type.as_deref().unwrap_or("(no Content-Type)"),
        s.body.len()
    );
    Check {
        name: name.to_owned(),
        document: with_extra(call.to_json(), extra),
        shown,
        headers: Vec::new(),
        expect: Expect::PostV1(call),
    }
}

/// The document with `extra`'s members merged in (top level and `ClientRequest`).
fn with_extra(document: Vec<u8>, extra: Option<Value>) -> Vec<u8> {
    let Some(Value::Object(extra)) = extra else {
        return document;
    };
    let mut doc: Value = serde_json::from_slice(&document).expect("we wrote JSON");
    for (k, v) in extra {
        match (k.as_str(), &v) {
            ("ClientRequest", Value::Object(inner)) => {
                for (ik, iv) in inner {
                    doc["ClientRequest"][ik] = iv.clone();
                }
            }
            _ => doc[k] = v,
        }
    }
    serde_json::to_vec(&doc).expect("JSON")
}

/// Members a later busbar may add: an adapter must ignore what it does not know.
fn unknown_fields() -> Value {
    json!({"BusbarTestUnknownField": {"a": [1, 2]}, "ClientRequest": {"BusbarTestUnknownField": true}})
}

fn large(body: Option<Value>) -> String {
    let mut body = body.unwrap_or_else(|| json!({}));
    let env: Vec<String> = (0..16_384)
        .map(|i| format!("LARGE_{i:05}={:0>48}", i))
        .collect();
    body["Env"] = json!(env);
    body.to_string()
}

fn pre_suite_v1(target: &Target) -> Vec<Check> {
    let (method, path) = target.primary();
    let m = method.as_str();
    let body = body_for(method, path).map(|b| b.to_string());
    let mut checks = vec![pre_check(
        &format!(
            "{m} {} with {}",
            short(path),
            if body.is_some() { "a body" } else { "no body" }
        ),
        pre_call(m, &format!("{path}?name=web"), body.as_deref()),
        None,
    )];
    if let Some(bare) = unversioned(path) {
        checks.push(pre_check(
            "the same, unversioned (as docker-py and kubelet send it)",
            pre_call(m, &bare, body.as_deref()),
            None,
        ));
    }
    checks.push(pre_check("a null body", pre_call(m, path, None), None));
    let (get, get_name) = target.get();
    checks.push(pre_check(
        &get_name,
        pre_call("GET", &format!("{get}?all=1"), None),
        None,
    ));
    checks.push(pre_check(
        "unknown fields in the call",
        pre_call(m, path, body.as_deref()),
        Some(unknown_fields()),
    ));
    if body.is_some() {
        let big = large(body_for(method, path));
        checks.push(pre_check(
            "a large body (1 MiB)",
            pre_call(m, path, Some(&big)),
            None,
        ));
    }
    checks.push(pre_check(
        "a query to rewrite",
        pre_call(
            m,
            &format!("{path}?name=web&labels=%7B%7D&force=1"),
            body.as_deref(),
        ),
        None,
    ));
    checks
}

fn post_suite_v1(target: &Target) -> Vec<Check> {
    let (method, path) = target.primary();
    let m = method.as_str();
    let body = body_for(method, path).map(|b| b.to_string());
    let body = body.as_deref();
    let json_ct = Some("application/json");
    let (code, content_type, answered) = engine_answer(method, path);
    let created = answered.as_str();
    let mut checks = vec![post_check(
        &format!(
            "{m} {} answered {code}{}",
            short(path),
            if created.is_empty() {
                ", no body"
            } else {
                " with a body"
            }
        ),
        post_call(
            m,
            &format!("{path}?name=web"),
            body,
            code,
            content_type,
            created,
        ),
        None,
    )];
    checks.push(post_check(
        "an engine 404",
        post_call(
            m,
            path,
            body,
            404,
            json_ct,
            r#"{"message":"No such image: busybox:latest"}"#,
        ),
        None,
    ));
    checks.push(post_check(
        "an empty 204 (as start answers)",
        post_call(m, path, None, 204, None, ""),
        None,
    ));
    if let Some(bare) = unversioned(path) {
        checks.push(post_check(
            "the same, unversioned (as docker-py and kubelet send it)",
            post_call(m, &bare, body, code, content_type, created),
            None,
        ));
    }
    checks.push(post_check(
        "a null client body",
        post_call(m, path, None, code, content_type, created),
        None,
    ));
    let (get, get_name) = target.get();
    checks.push(post_check(
        &get_name,
        post_call("GET", &format!("{get}?all=1"), None, 200, json_ct, "[]"),
        None,
    ));
    checks.push(post_check(
        "unknown fields in the call",
        post_call(m, path, body, code, content_type, created),
        Some(unknown_fields()),
    ));
    checks.push(post_check(
        "a large answer (1 MiB)",
        post_call(m, path, body, 200, json_ct, &large(None)),
        None,
    ));
    checks
}

// ---- protocol 2 ----

/// The v2 suite: every v1 call in its v2 shape (`PowerstripProtocolVersion: 2`, the request's
/// headers with the credentials redacted, the engine's headers for post-hooks, a `Caller` that
/// is a cluster node and a verified client on one call, a standalone agent with no client
/// certificate on the next), then, for pre-hooks, the `unwind` calls a v2 pre-hook gets when a
/// later pre-hook or the engine fails. Post-hooks get no unwind call.
fn suite_v2(target: &Target, phase: Phase, v1: Vec<Check>) -> Vec<Check> {
    let mut checks: Vec<Check> = v1
        .into_iter()
        .enumerate()
        .map(|(i, check)| to_v2(check, i % 2 == 0))
        .collect();
    if phase == Phase::Pre {
        checks.extend(unwind_checks(target));
    }
    checks
}

/// A `Caller`: a node of a cluster and a client with a verified certificate, or a standalone
/// agent's call for a client without one (`null`s).
fn caller(cluster: bool) -> Value {
    if cluster {
        json!({
            "RequestId": REQUEST_ID,
            "Node": {"Name": "node2", "Labels": {"zone": "a"}},
            "Client": {"User": "alice", "AuthMethod": "TLS", "Role": "client"},
        })
    } else {
        json!({"RequestId": REQUEST_ID, "Node": null, "Client": null})
    }
}

/// The headers of a client's request as a v2 adapter gets them: lower-case, lists of values,
/// credentials redacted (on the cluster call, as a client with `docker login` sends them).
fn request_headers(body: bool, cluster: bool) -> Value {
    let mut h = json!({
        "host": ["api.moby.localhost"],
        "user-agent": ["Docker-Client/24.0.7 (linux)"],
        "x-request-id": [REQUEST_ID],
    });
    if body {
        h["content-type"] = json!(["application/json"]);
    }
    if cluster {
        h["authorization"] = json!([REDACTED]);
        h["x-registry-auth"] = json!([REDACTED]);
        h["cookie"] = json!([REDACTED]);
        h["accept"] = json!(["application/json", "*/*"]);
    }
    h
}

/// The engine's response headers, as a v2 post-hook gets them.
fn response_headers(content_type: Option<&str>) -> Value {
    let mut h = json!({
        "api-version": ["1.41"],
        "date": ["Mon, 07 Dec 2026 14:03:07 GMT"],
        "docker-experimental": ["false"],
        "ostype": ["linux"],
        "server": ["Docker/24.0.7 (linux)"],
    });
    if let Some(ct) = content_type {
        h["content-type"] = json!([ct]);
    }
    h
}

/// `check` in its v2 shape.
fn to_v2(check: Check, cluster: bool) -> Check {
    let mut doc: Value = serde_json::from_slice(&check.document).expect("we wrote JSON");
    doc["PowerstripProtocolVersion"] = json!(2);
    let body = !doc["ClientRequest"]["Body"].is_null();
    doc["ClientRequest"]["Headers"] = request_headers(body, cluster);
    doc["Caller"] = caller(cluster);
    let expect = match check.expect {
        Expect::PreV1(call) | Expect::PreV2(call) => Expect::PreV2(call),
        Expect::PostV1(call) | Expect::PostV2(call) => {
            doc["ServerResponse"]["Headers"] =
                response_headers(call.server_response.content_type.as_deref());
            Expect::PostV2(call)
        }
        Expect::Unwind => Expect::Unwind,
    };
    let who = if cluster {
        "node2, client alice (TLS)"
    } else {
        "a standalone agent, no client certificate"
    };
    Check {
        name: check.name,
        document: serde_json::to_vec(&doc).expect("JSON"),
        shown: format!("v2 {}, Caller: {who}", check.shown),
        headers: if cluster {
            CLUSTER_HEADERS.to_vec()
        } else {
            Vec::new()
        },
        expect,
    }
}

/// The unwind calls a v2 pre-hook gets: after the engine refused, after a later pre-hook
/// refused, and with a failure whose body is `null` (not text, or too long to carry).
fn unwind_checks(target: &Target) -> Vec<Check> {
    let (method, path) = target.primary();
    let m = method.as_str();
    let request = format!("{path}?name=web");
    let body = body_for(method, path).map(|b| b.to_string());
    let conflict = json!({"message": "Conflict. The container name \"/web\" is already in use by container \"4fa6e0f0c678\". You have to remove (or rename) that container to be able to reuse that name."}).to_string();
    let refused = json!({"message": "quota: node2 runs 40 containers, its limit"}).to_string();
    let failures = [
        (
            "an unwind after the engine refused (409)",
            json!({"Stage": "engine", "Adapter": null, "Code": 409,
                   "ContentType": "application/json", "Body": conflict}),
        ),
        (
            "an unwind after a later pre-hook refused (403)",
            json!({"Stage": "pre-hook", "Adapter": "quota", "Code": 403,
                   "ContentType": "application/json", "Body": refused}),
        ),
        (
            "an unwind whose failure has no body (Body null)",
            json!({"Stage": "engine", "Adapter": null, "Code": 500,
                   "ContentType": "application/octet-stream", "Body": null}),
        ),
    ];
    failures
        .into_iter()
        .enumerate()
        .map(|(i, (name, failure))| {
            let cluster = i % 2 == 0;
            let doc = json!({
                "PowerstripProtocolVersion": 2,
                "Type": "unwind",
                "ClientRequest": {
                    "Method": m, "Request": request, "Body": body,
                    "Headers": request_headers(body.is_some(), cluster),
                },
                "ModifiedClientRequest": {"Body": body, "Request": request},
                "Failure": failure,
                "Caller": caller(cluster),
            });
            Check {
                name: name.to_owned(),
                shown: format!(
                    "v2 unwind of {m} {request}, Failure: {} {} from {}",
                    failure["Code"],
                    if failure["Body"].is_null() {
                        "with Body null"
                    } else {
                        "with a message"
                    },
                    failure["Stage"].as_str().unwrap_or_default()
                ),
                document: serde_json::to_vec(&doc).expect("JSON"),
                headers: if cluster {
                    CLUSTER_HEADERS.to_vec()
                } else {
                    Vec::new()
                },
                expect: Expect::Unwind,
            }
        })
        .collect()
}

fn short(path: &str) -> String {
    unversioned(path).unwrap_or_else(|| path.to_owned())
}

// ---- running and judging ----

/// What one check gave.
pub struct Outcome {
    pub name: String,
    pub shown: String,
    /// The status and time taken, when there was an answer.
    pub answer: Option<(u16, Duration)>,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
}

/// Something busbar would not take, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub hint: String,
}

fn problem(what: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem {
        what: what.into(),
        hint: hint.into(),
    }
}

pub struct Report {
    pub url: String,
    pub endpoint: String,
    pub phase: Phase,
    pub protocol: u32,
    pub timeout: Duration,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.outcomes.iter().map(|o| o.problems.len()).sum()
    }

    /// Every problem's text, `check: what`.
    #[cfg(test)]
    pub fn problem_lines(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .flat_map(|o| {
                o.problems
                    .iter()
                    .map(move |p| format!("{}: {}", o.name, p.what))
            })
            .collect()
    }
}

/// Sends every check in turn and judges its answer.
pub async fn run(
    client: &HookClient,
    target: &Target,
    args: &TestArgs,
    checks: &[Check],
) -> Report {
    use busbar_adapter::headers as h;
    let mut outcomes = Vec::with_capacity(checks.len());
    for check in checks {
        // As busbar's agent calls: its headers beside the JSON (README, "What adapters are
        // told"), the request id the same as in a v2 call's Caller and Headers.
        let mut client = client
            .clone()
            .header(
                http::HeaderName::from_static(h::ADAPTER_API_HEADER),
                http::HeaderValue::from_static(h::ADAPTER_API),
            )
            .header(
                http::HeaderName::from_static(h::REQUEST_ID),
                http::HeaderValue::from_static(REQUEST_ID),
            );
        for (name, value) in &check.headers {
            client = client.header(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        let answer = client.send(&check.document).await;
        let mut outcome = Outcome {
            name: check.name.clone(),
            shown: check.shown.clone(),
            answer: answer.as_ref().ok().map(|a| (a.status.as_u16(), a.elapsed)),
            problems: Vec::new(),
            notes: Vec::new(),
        };
        judge(check, answer, target, args.timeout, &mut outcome);
        outcomes.push(outcome);
    }
    Report {
        url: client.url().to_owned(),
        endpoint: target.key.clone(),
        phase: args.phase,
        protocol: args.protocol,
        timeout: args.timeout,
        outcomes,
    }
}

/// Judges one answer into `outcome`'s problems and notes.
pub fn judge(
    check: &Check,
    answer: Result<Answer, HookClientError>,
    target: &Target,
    timeout: Duration,
    outcome: &mut Outcome,
) {
    let unwind = matches!(check.expect, Expect::Unwind);
    let answer = match answer {
        Ok(answer) => answer,
        Err(HookClientError::Timeout { after, .. }) if unwind => {
            outcome.problems.push(problem(
                format!("no answer to the unwind call within {after:?}, the adapter's timeout"),
                "busbar waits for each unwind call before it answers the client, then logs a \
                 warning and goes on: undo quickly (or later, in the background) and answer {}",
            ));
            return;
        }
        Err(HookClientError::Timeout { after, .. }) => {
            outcome.problems.push(problem(
                format!("no answer within {after:?}, the adapter's timeout"),
                "busbar fails the client's request with a 504 naming the adapter: answer sooner, \
                 or give the adapter a longer `timeout:` in the chain (and here with --timeout)",
            ));
            return;
        }
        Err(e) if unwind => {
            outcome.problems.push(problem(
                e.to_string(),
                "busbar logs a warning and the pre-hook's work is not undone: does the adapter \
                 fail on a call whose Type is \"unwind\" (it has no ServerResponse)? Answer it \
                 with any 2xx ({} will do)",
            ));
            return;
        }
        Err(e) => {
            outcome.problems.push(problem(
                e.to_string(),
                "busbar fails the client's request with a 502 naming the adapter: is it listening \
                 at that URL, and does it answer HTTP/1.1?",
            ));
            return;
        }
    };
    if answer.elapsed > timeout / 2 {
        outcome.notes.push(format!(
            "answered in {:?}, more than half its timeout of {timeout:?}",
            answer.elapsed
        ));
    }
    if unwind {
        if !answer.status.is_success() {
            outcome.problems.push(problem(
                format!(
                    "the unwind call was answered {} with {}: busbar logs a warning, and the \
                     client's request failed with whatever this pre-hook did left in place",
                    answer.status.as_u16(),
                    what_body(&answer)
                ),
                "a protocol-2 pre-hook gets {\"Type\": \"unwind\", ..., \"Failure\": {...}} \
                 when a later pre-hook or the engine fails: undo what the pre-hook did and answer \
                 any 2xx ({} will do), also when there is nothing to undo (docs/protocol.md, \
                 Unwinding)",
            ));
        }
        return;
    }
    if !answer.status.is_success() {
        refusal(&answer, outcome);
        return;
    }
    let doc: Value = match serde_json::from_slice(&answer.body) {
        Ok(doc) => doc,
        Err(e) => {
            outcome.problems.push(problem(
                format!(
                    "the answer is not JSON ({}{}): {e}",
                    what_body(&answer),
                    answer
                        .content_type
                        .as_deref()
                        .map(|ct| format!(", Content-Type {ct}"))
                        .unwrap_or_default()
                ),
                "answer Powerstrip JSON with Content-Type: application/json; busbar fails the \
                 client's request with a 502 naming the adapter",
            ));
            return;
        }
    };
    match &check.expect {
        Expect::PreV1(call) => judge_pre_v1(call, &doc, target, outcome),
        Expect::PostV1(call) => judge_post(call, &doc, 1, outcome),
        Expect::PreV2(call) => judge_pre_v2(call, &doc, target, outcome),
        Expect::PostV2(call) => judge_post(call, &doc, 2, outcome),
        Expect::Unwind => {}
    }
}

/// A non-2xx answer: busbar stops the chain and gives the client this status and body.
fn refusal(answer: &Answer, outcome: &mut Outcome) {
    let status = answer.status.as_u16();
    let message = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|d| d.get("message").and_then(Value::as_str).map(str::to_owned));
    match message {
        Some(message) if answer.status.is_client_error() => outcome.notes.push(format!(
            "refused with {status}: {message:?} (busbar stops the chain and the client gets \
             this; fine if the adapter means to refuse this call)"
        )),
        Some(message) => outcome.problems.push(problem(
            format!("failed with {status}: {message:?}"),
            "a 5xx says the adapter itself failed on an ordinary call; busbar gives the client \
             this error",
        )),
        None => outcome.problems.push(problem(
            format!("answered {status} with {}", what_body(answer)),
            "answer errors as JSON {\"message\": \"...\"}, as Docker words them (the docker CLI \
             prints the message); busbar passes the body to the client as it is",
        )),
    }
}

/// What an answer's body looks like, in a few words.
fn what_body(answer: &Answer) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    let t = text.trim_start();
    let html = t.get(..1) == Some("<")
        || answer
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("text/html"));
    if t.is_empty() {
        "an empty body".to_owned()
    } else if html {
        "an HTML page".to_owned()
    } else {
        let head: String = t.chars().take(40).collect();
        format!(
            "{head:?}{}",
            if t.chars().count() > 40 { "..." } else { "" }
        )
    }
}

/// The names of the answers' members, version 1's (version 2 adds [`V2_NAMES`]).
const V1_NAMES: &[&str] = &[
    "PowerstripProtocolVersion",
    "ModifiedClientRequest",
    "ModifiedServerResponse",
    "Body",
    "Request",
    "Method",
    "ContentType",
    "Code",
];
const V2_NAMES: &[&str] = &["Response", "Headers"];

/// Members of `object` that are a known name written with other case (`body` for `Body`).
fn miscased(object: &Value, known: &[&str], protocol: u32) -> Vec<(String, &'static str)> {
    let Value::Object(map) = object else {
        return Vec::new();
    };
    let names = V1_NAMES
        .iter()
        .chain(V2_NAMES.iter().filter(|_| protocol >= 2));
    map.keys()
        .filter(|k| !known.contains(&k.as_str()))
        .filter_map(|k| {
            names
                .clone()
                .find(|n| {
                    **n != k.as_str()
                        && (n.eq_ignore_ascii_case(k)
                            || n.eq_ignore_ascii_case(&k.replace(['_', '-'], "")))
                })
                .map(|n| (k.clone(), *n))
        })
        .collect()
}

/// Wrongly written member names of an answer: at the top (`top`, besides the version) and in
/// each of `members` (its name, and the fields it has).
fn field_name_problems(
    doc: &Value,
    members: &[(&str, &[&str])],
    protocol: u32,
    outcome: &mut Outcome,
) {
    let mut top = vec!["PowerstripProtocolVersion"];
    top.extend(members.iter().map(|(m, _)| *m));
    let mut found = miscased(doc, &top, protocol);
    for (member, fields) in members {
        let inner = doc.get(*member).cloned().unwrap_or(Value::Null);
        found.extend(miscased(&inner, fields, protocol));
    }
    for (found, meant) in found {
        outcome.problems.push(problem(
            format!("wrong field name {found:?}: busbar reads {meant:?}, and ignores {found:?}"),
            "field names are CamelCase and case-sensitive, exactly as in Powerstrip's protocol",
        ));
    }
}

fn reply_problem(
    e: ReplyError,
    doc: &Value,
    wanted: &str,
    other: &str,
    phase: &str,
    protocol: u32,
) -> Problem {
    match e {
        ReplyError::Missing(_) if doc.get(other).is_some() => problem(
            format!("a {} answer ({other}) to a {phase} call", if phase == "pre-hook" { "post-hook" } else { "pre-hook" }),
            format!("the call's Type says the phase: answer a {phase} with {wanted}"),
        ),
        e => problem(
            e.to_string(),
            format!("a {phase} answer is {{\"PowerstripProtocolVersion\": {protocol}, \"{wanted}\": {{...}}}}{}; busbar fails the client's request with a 502 naming the adapter",
                if protocol >= 2 && phase == "pre-hook" { ", or {\"Response\": {...}} to answer the client itself" } else { "" }),
        ),
    }
}

const MODIFIED_CLIENT_REQUEST: (&str, &[&str]) =
    ("ModifiedClientRequest", &["Body", "Request", "Method"]);

fn judge_pre_v1(call: &PreHookRequest, doc: &Value, target: &Target, outcome: &mut Outcome) {
    field_name_problems(doc, &[MODIFIED_CLIENT_REQUEST], 1, outcome);
    let reply = match PreHookReply::try_from(doc.clone()) {
        Ok(reply) => reply,
        Err(e) => {
            let p = reply_problem(
                e,
                doc,
                "ModifiedClientRequest",
                "ModifiedServerResponse",
                "pre-hook",
                1,
            );
            outcome.problems.push(p);
            return;
        }
    };
    judge_modified(call, reply.modified_client_request, target, outcome);
}

/// A v2 pre-hook's answer: go on (judged as v1's), or a response of the adapter's own.
fn judge_pre_v2(call: &PreHookRequest, doc: &Value, target: &Target, outcome: &mut Outcome) {
    field_name_problems(
        doc,
        &[
            MODIFIED_CLIENT_REQUEST,
            ("Response", &["Code", "ContentType", "Body", "Headers"]),
        ],
        2,
        outcome,
    );
    match v2::PreHookReply::try_from(doc.clone()) {
        Ok(v2::PreHookReply::Continue(m)) => judge_modified(call, m, target, outcome),
        Ok(v2::PreHookReply::Respond(r)) => judge_own_response(&r, outcome),
        Err(e) => {
            let p = reply_problem(
                e,
                doc,
                "ModifiedClientRequest",
                "ModifiedServerResponse",
                "pre-hook",
                2,
            );
            outcome.problems.push(p);
        }
    }
}

/// A v2 pre-hook's `Response`: what the client gets instead of the engine's answer.
fn judge_own_response(r: &v2::Response, outcome: &mut Outcome) {
    let code = r.code.unwrap_or(200);
    if code < 200 {
        outcome.problems.push(problem(
            format!("Response.Code is {code}: an informational status cannot end a request"),
            "answer the client with a final status (200 if Code is left out)",
        ));
        return;
    }
    outcome.notes.push(format!(
        "answers the client itself with {code} (Response): the engine, later pre-hooks and \
         the post-hooks are not called{}",
        if code >= 400 {
            "; the v2 pre-hooks before it are unwound"
        } else {
            ""
        }
    ));
    let body = r.body.as_deref().unwrap_or_default();
    if r.content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/json"))
        && !body.is_empty()
        && serde_json::from_str::<Value>(body).is_err()
    {
        outcome.problems.push(problem(
            "the client would be told application/json but get a Response.Body that is not JSON",
            "Body is the answer's JSON document serialized into a string (json.dumps(body)); or set ContentType",
        ));
    }
    if let Some(name) = r
        .headers
        .keys()
        .find(|n| http::HeaderName::from_bytes(n.as_bytes()).is_err())
    {
        outcome.problems.push(problem(
            format!("Response.Headers has {name:?}, which is not a header name: busbar drops it"),
            "header names are tokens: letters, digits and -",
        ));
    }
}

/// A `ModifiedClientRequest`, of either version, against the call it answers.
fn judge_modified(
    call: &PreHookRequest,
    m: busbar_adapter::v1::ModifiedClientRequest,
    target: &Target,
    outcome: &mut Outcome,
) {
    let sent = &call.client_request;
    match (&sent.body, &m.body) {
        (Some(_), None) => outcome.problems.push(problem(
            "ModifiedClientRequest.Body is null or missing, but the client sent a body: busbar \
             sends the engine an empty body",
            "pass ClientRequest.Body on as it came (a string), or your rewrite of it",
        )),
        (_, Some(body)) if !body.is_empty() && serde_json::from_str::<Value>(body).is_err() => {
            outcome.problems.push(problem(
                "ModifiedClientRequest.Body is not JSON text: the engine would refuse the request",
                "Body is the Docker JSON document serialized into a string (json.dumps(body))",
            ))
        }
        _ => {}
    }
    if let Some(method) = m.method.filter(|m| *m != sent.method) {
        outcome.problems.push(problem(
            format!("ModifiedClientRequest.Method is {method:?}, not {:?}: busbar refuses a changed method (502)", sent.method),
            "leave Method out, or send it back unchanged",
        ));
    }
    if let Some(request) = m.request.filter(|r| *r != sent.request) {
        let path = request.split('?').next().unwrap_or_default();
        if path == target.adapter_path {
            outcome.notes.push(format!(
                "Request is the adapter's own URL path {path:?} (as powerstrip-flocker answers): busbar ignores it"
            ));
        } else if !target.same_endpoints(&sent.method, &sent.request, &request) {
            outcome.problems.push(problem(
                format!("rewrites Request to {request:?}, which changes which endpoints match (the call was {:?}): busbar refuses it (502)", sent.request),
                "a pre-hook may change the query, or the path only so that the same endpoints match",
            ));
        } else if request.split('?').next() != sent.request.split('?').next() {
            outcome.notes.push(format!(
                "rewrites the path to {request:?}, on the same endpoints"
            ));
        } else {
            outcome
                .notes
                .push(format!("rewrites the query: {request:?}"));
        }
    }
}

/// A post-hook's answer, the same in both versions.
fn judge_post(call: &PostHookRequest, doc: &Value, protocol: u32, outcome: &mut Outcome) {
    field_name_problems(
        doc,
        &[("ModifiedServerResponse", &["Body", "ContentType", "Code"])],
        protocol,
        outcome,
    );
    let reply = match PostHookReply::try_from(doc.clone()) {
        Ok(reply) => reply,
        Err(e) => {
            let p = reply_problem(
                e,
                doc,
                "ModifiedServerResponse",
                "ModifiedClientRequest",
                "post-hook",
                protocol,
            );
            outcome.problems.push(p);
            return;
        }
    };
    let m = reply.modified_server_response;
    let engine = &call.server_response;
    if m.body.is_none() {
        outcome.notes.push(
            "ModifiedServerResponse.Body is null or missing: busbar keeps the engine's body".into(),
        );
    }
    let content_type = m.content_type.as_ref().or(engine.content_type.as_ref());
    let body = m.body.as_ref().unwrap_or(&engine.body);
    if content_type.is_some_and(|ct| ct.starts_with("application/json"))
        && !body.is_empty()
        && serde_json::from_str::<Value>(body).is_err()
    {
        outcome.problems.push(problem(
            "the client would be told application/json but get a Body that is not JSON",
            "Body is the answer's JSON document serialized into a string (json.dumps(body)); or set ContentType",
        ));
    }
}

// ---- the report ----

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pre => "pre",
        Phase::Post => "post",
    }
}

/// Prints the report: one line per call, then its problems (with hints) and notes.
pub fn print(report: &Report, as_json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if as_json {
        let calls: Vec<Value> = report
            .outcomes
            .iter()
            .map(|o| {
                json!({
                    "check": o.name, "call": o.shown,
                    "status": o.answer.map(|a| a.0),
                    "elapsed_ms": o.answer.map(|a| a.1.as_secs_f64() * 1000.0),
                    "problems": o.problems.iter().map(|p| json!({"problem": p.what, "hint": p.hint})).collect::<Vec<_>>(),
                    "notes": o.notes,
                })
            })
            .collect();
        let doc = json!({
            "url": report.url, "endpoint": report.endpoint, "phase": phase_name(report.phase),
            "protocol": report.protocol, "timeout_ms": report.timeout.as_millis() as u64,
            "calls": calls, "problems": report.problems(),
        });
        return writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("JSON"));
    }
    writeln!(
        out,
        "testing {} as a {}-hook for {:?} (protocol {}, timeout {:?})",
        report.url,
        phase_name(report.phase),
        report.endpoint,
        report.protocol,
        report.timeout
    )?;
    for o in &report.outcomes {
        let verdict = if o.problems.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        let answer = match o.answer {
            Some((status, elapsed)) => {
                format!("{status} in {:.1} ms", elapsed.as_secs_f64() * 1000.0)
            }
            None => "no answer".to_owned(),
        };
        writeln!(out, "{verdict}  {}: {answer}", o.name)?;
        if !o.problems.is_empty() {
            writeln!(out, "      call: {}", o.shown)?;
        }
        for p in &o.problems {
            writeln!(out, "      problem: {}", p.what)?;
            writeln!(out, "      hint: {}", p.hint)?;
        }
        for n in &o.notes {
            writeln!(out, "      note: {n}")?;
        }
    }
    let problems = report.problems();
    writeln!(
        out,
        "{} calls, {problems} problem{}",
        report.outcomes.len(),
        if problems == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests;

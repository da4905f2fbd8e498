//! In-process tests of what the agent tells whom: TLS for Docker clients (`--tls-listen
//! --tlsverify`), the client's identity given to adapters as headers (never in the
//! Powerstrip JSON, never forgeable by the client), and credentials that reach neither
//! adapters nor the logs. The real agent (TLS listener, proxy, chains, adapter calls) on
//! `127.0.0.1:0` between a client and a fake engine, with fake adapters; no root, no engine.

use std::collections::BTreeSet;

use busbar_testkit::adapter::pass;
use busbar_testkit::pki::FRONT;
use busbar_testkit::raw::{self, request, tls_exchange, tls_refusal};
use busbar_testkit::{json, CapturedLogs, FakeAdapter, FakeEngine, TestAgent, TestPki};
use busbar_tls::Role;
use serde_json::Value;

const CREATE_BODY: &str = r#"{"Image":"busybox","Cmd":["true"]}"#;

/// A create as a client that tries to name itself and carries credentials sends it.
fn forged_create() -> Vec<u8> {
    request(
        "POST",
        "/v1.41/containers/create?name=web",
        &[
            ("Content-Type", "application/json"),
            ("X-Busbar-User", "root"),
            ("X-Busbar-Auth-Method", "TLS"),
            ("Authorization", "Bearer secret-bearer-token"),
            ("X-Registry-Auth", "c2VjcmV0LXJlZ2lzdHJ5LWF1dGg="),
            ("Cookie", "session=secret-cookie"),
        ],
        CREATE_BODY.as_bytes(),
    )
}

/// Pre- and post-hooks on create, to `adapter`.
fn create_chain(adapter: &FakeAdapter) -> String {
    format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [who]\n    post: [who]\nadapters:\n  who: {}\n",
        adapter.url()
    )
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_verified_client_is_named_to_adapters_in_headers_and_the_json_stays_powerstrip_v1() {
    busbar_testkit::logs();
    let pki = TestPki::new();
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let adapter = FakeAdapter::start(pass).await;
    let agent = TestAgent::start_tls(&engine, &create_chain(&adapter), pki.docker_tls()).await;

    let alice = pki.docker_client(Some(("alice", Role::Client)));
    let rsp = tls_exchange(agent.addr(), alice, FRONT, &forged_create()).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());

    let calls = adapter.calls();
    assert_eq!(calls.len(), 2, "a pre- and a post-hook call");
    for call in &calls {
        assert_eq!(
            call.header("x-busbar-user"),
            Some("alice"),
            "{}",
            call.kind()
        );
        assert_eq!(call.header("x-busbar-auth-method"), Some("TLS"));
        for secret in ["authorization", "x-registry-auth", "cookie"] {
            assert_eq!(call.header(secret), None, "{secret} reached the adapter");
        }
        let expected: &[&str] = if call.kind() == "pre-hook" {
            &["ClientRequest", "PowerstripProtocolVersion", "Type"]
        } else {
            &[
                "ClientRequest",
                "PowerstripProtocolVersion",
                "ServerResponse",
                "Type",
            ]
        };
        assert_eq!(
            keys(&call.payload),
            expected.iter().map(|s| s.to_string()).collect()
        );
        assert_eq!(
            keys(&call.payload["ClientRequest"]),
            ["Body", "Method", "Request"].map(String::from).into()
        );
    }
    // The engine gets what the client sent, less the identity headers it tried to forge.
    let got = engine.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-busbar-user"), None);
    assert_eq!(got[0].header("x-busbar-auth-method"), None);
    assert_eq!(
        got[0].header("x-registry-auth"),
        Some("c2VjcmV0LXJlZ2lzdHJ5LWF1dGg=")
    );
    agent.stop().await;
}

#[tokio::test]
async fn without_a_client_certificate_of_the_ca_the_handshake_refuses() {
    busbar_testkit::logs();
    let pki = TestPki::new();
    let engine = FakeEngine::start().await;
    let agent = TestAgent::start_tls(&engine, "", pki.docker_tls()).await;

    let err = tls_refusal(agent.addr(), pki.docker_client(None), FRONT).await;
    assert!(err.contains("CertificateRequired"), "{err}");
    // The CA is busbar's: a node's own certificate is not a client's.
    let node = pki.docker_client(Some(("node1", Role::Agent)));
    let err = tls_refusal(agent.addr(), node, FRONT).await;
    assert!(err.contains("HandshakeFailure"), "{err}");
    // A client certificate of another CA (the client trusts ours for the server's).
    let other = TestPki::new();
    let err = tls_refusal(agent.addr(), mixed_client(&pki, &other), FRONT).await;
    assert!(err.contains("UnknownCA"), "{err}");
    assert!(engine.requests().is_empty(), "nothing reached the engine");
    agent.stop().await;
}

/// A client that trusts `ours` for the server and presents a client certificate of `theirs`.
fn mixed_client(ours: &TestPki, theirs: &TestPki) -> std::sync::Arc<rustls::ClientConfig> {
    let files = theirs.issue("mallory", Role::Client);
    let mut roots = rustls::RootCertStore::empty();
    let ca = ours.issue(FRONT, Role::Gateway).ca;
    for c in busbar_tls::read_certs("CA", &ca).unwrap() {
        roots.add(c).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            busbar_tls::read_certs("cert", &files.cert).unwrap(),
            rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key).unwrap(),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn a_client_without_a_certificate_cannot_name_itself() {
    busbar_testkit::logs();
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let adapter = FakeAdapter::start(pass).await;
    let agent = TestAgent::start(&engine, &create_chain(&adapter)).await;

    let rsp = raw::exchange(agent.addr(), &forged_create()).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    for call in adapter.calls() {
        let busbar: Vec<_> = call
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-busbar-") && *k != "x-busbar-adapter-api")
            .collect();
        assert!(
            busbar.is_empty(),
            "the forged identity got through: {busbar:?}"
        );
    }
    assert_eq!(engine.requests()[0].header("x-busbar-user"), None);
    agent.stop().await;
}

#[tokio::test]
async fn credentials_of_login_and_pull_reach_neither_adapters_nor_debug_logs() {
    let logs = CapturedLogs::start("debug");
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/auth",
        json(
            200,
            r#"{"Status":"Login Succeeded","IdentityToken":"secret-identity-token"}"#,
        ),
    );
    engine.route(
        "POST /*/images/create",
        json(200, r#"{"status":"Pulling from library/busybox"}"#),
    );
    engine.route("GET /*/containers/json", json(200, "[]"));
    let adapter = FakeAdapter::start(pass).await;
    // Hooks on every call: a catch-all chain does not get credentials either.
    let yaml = format!(
        "endpoints:\n  \"* /*\":\n    pre: [all]\n    post: [all]\nadapters:\n  all: {}\n",
        adapter.url()
    );
    let agent = TestAgent::start(&engine, &yaml).await;

    // docker login: the password in the body, an identity token in the answer.
    let login = request(
        "POST",
        "/v1.41/auth",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Basic c2VjcmV0LWJhc2ljLWF1dGg="),
        ],
        br#"{"username":"bob","password":"secret-login-password","serveraddress":"registry.example"}"#,
    );
    let rsp = raw::exchange(agent.addr(), &login).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.json()["IdentityToken"], "secret-identity-token");
    assert!(
        adapter.calls().is_empty(),
        "no adapter sees a login: {:?}",
        adapter.calls()
    );
    // docker pull: X-Registry-Auth is base64 JSON with the password.
    let pull = request(
        "POST",
        "/v1.41/images/create?fromImage=busybox&tag=latest",
        &[(
            "X-Registry-Auth",
            "eyJ1c2VybmFtZSI6ImJvYiIsInBhc3N3b3JkIjoic2VjcmV0LXB1bGwtcGFzc3dvcmQifQ==",
        )],
        b"",
    );
    let rsp = raw::exchange(agent.addr(), &pull).await;
    assert_eq!(rsp.status(), 200, "{}", rsp.text());
    let calls = adapter.calls();
    assert_eq!(calls.len(), 2, "the pull's pre- and post-hook");
    for call in &calls {
        assert_eq!(call.header("x-registry-auth"), None);
        assert!(
            !call.payload.to_string().contains("secret"),
            "{}",
            call.payload
        );
    }
    // A query the front refuses is answered, and not logged.
    let rsp = raw::exchange(
        agent.addr(),
        &request(
            "GET",
            "/v1.41/containers/json?token=secret-query;x",
            &[],
            b"",
        ),
    )
    .await;
    assert_eq!(rsp.status(), 400);
    assert!(
        rsp.text().contains("secret-query"),
        "the client is told its own query"
    );
    agent.stop().await;

    let text = logs.text();
    assert!(
        text.contains("hooks skipped"),
        "the log says why login ran no hook:\n{text}"
    );
    assert!(text.contains("request refused"), "{text}");
    for secret in [
        "secret",
        "c2VjcmV0",
        "eyJ1c2VybmFtZSI6ImJvYiIsInBhc3N3b3JkIjoic2VjcmV0",
        "Basic",
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} is in the debug log:\n{text}"
        );
    }
}

#[tokio::test]
async fn an_adapter_url_with_credentials_authenticates_and_never_shows_them() {
    let logs = CapturedLogs::start("debug");
    let engine = FakeEngine::start().await;
    engine.route(
        "POST /*/containers/create",
        json(201, r#"{"Id":"c1","Warnings":[]}"#),
    );
    let adapter = FakeAdapter::start(pass).await;
    let with_creds = adapter
        .url()
        .replacen("http://", "http://flocker:s3cret-pw@", 1);
    let yaml = format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [who]\nadapters:\n  who: {with_creds}\n"
    );
    let agent = TestAgent::start(&engine, &yaml).await;
    let rsp = raw::exchange(agent.addr(), &forged_create()).await;
    assert_eq!(rsp.status(), 201, "{}", rsp.text());
    // base64("flocker:s3cret-pw")
    assert_eq!(
        adapter.calls()[0].header("authorization"),
        Some("Basic ZmxvY2tlcjpzM2NyZXQtcHc=")
    );
    agent.stop().await;

    // The same adapter, gone: the client's error names it, without the password.
    adapter.stop().await;
    let agent = TestAgent::start(&engine, &yaml).await;
    let rsp = raw::exchange(agent.addr(), &forged_create()).await;
    assert_eq!(rsp.status(), 502, "{}", rsp.text());
    assert!(rsp.text().contains("who"), "{}", rsp.text());
    assert!(!rsp.text().contains("s3cret-pw"), "{}", rsp.text());
    agent.stop().await;
    engine.stop().await;
    let logged = logs.text();
    assert!(!logged.contains("s3cret-pw"), "{logged}");
}

//! The gateway <-> agent hop: `docker` CLI -> gateway -> gRPC over mutual TLS -> agent (in its
//! own network namespace, a separate "host") -> engine. The passthrough suite runs across it;
//! then what only the hop has: certificates and roles, and an agent that dies mid-stream.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{make_certs, tls_args, Front, Process};
use testbed::{docker, docker_ok, unique_name, wait_until, Testbed};

/// The shared bed's cluster certificates (removed with the bed).
fn certs() -> PathBuf {
    static CERTS: OnceLock<PathBuf> = OnceLock::new();
    CERTS
        .get_or_init(|| {
            let bed = Testbed::shared();
            let dir = bed.dir().join("certs");
            let addr = bed.hosts()[0].addr().unwrap().to_string();
            make_certs(&dir, &[("node1", &addr), ("node2", &addr)]);
            dir
        })
        .clone()
}

fn setup() -> (String, Front) {
    let host = &Testbed::shared().hosts()[0];
    let front = Front::remote(host, "node1", &certs());
    (host.docker_url(), front)
}

mod passthrough {
    include!("cases/passthrough.rs");
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_agent_refuses_peers_without_the_gateway_role() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let certs = certs();
    let (agent, addr) = Process::agent_in(host, "node1", &certs, &[]);
    // A client-role and an agent-role certificate, presented as if they were a gateway's.
    for who in ["ops", "node2"] {
        let files = busbar_tls::TlsFiles::new(
            certs.join("ca.pem"),
            certs.join(format!("{who}.pem")),
            certs.join(format!("{who}-key.pem")),
        );
        let config = busbar_tls::client_config(&files, busbar_tls::Role::Agent).unwrap();
        let refusal = tokio::runtime::Runtime::new().unwrap().block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("node1").unwrap();
            match tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
            {
                Err(e) => Some(e.to_string()),
                // TLS 1.3: the server judges our certificate after the client's handshake ends;
                // its refusal arrives as an alert on the first read.
                Ok(mut s) => {
                    let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                    let mut buf = [0u8; 64];
                    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => None,
                        Ok(Ok(_)) => Some("closed without a word".into()),
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("no answer".into()),
                    }
                }
            }
        });
        let Some(refusal) = refusal else {
            panic!("the agent accepted a {who} certificate as a gateway");
        };
        // The agent's alert reaches the peer (it used to stay in a buffer under TLS), so the
        // refused side can tell a refusal from a crash.
        assert!(
            refusal.contains("alert"),
            "a {who} certificate was refused without an alert: {refusal}"
        );
    }
    let logged = wait_until(Duration::from_secs(5), || {
        let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
        log.contains("CN=ops")
            && log.contains("has role client")
            && log.contains("CN=node2")
            && log.contains("has role agent")
    });
    assert!(
        logged,
        "the agent's log does not say why:\n{}",
        agent.log_tail()
    );
}

#[test]
fn the_gateway_refuses_the_wrong_node_or_a_foreign_ca() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let certs = certs();
    let (_agent, addr) = Process::agent_in(host, "node1", &certs, &[]);
    // We meant node2, but node1 answers: its certificate does not name node2.
    let mut args = vec!["--agent".to_string(), format!("node2={addr}")];
    args.extend(tls_args(&certs, "gateway"));
    let gateway = spawn_gateway_unchecked(&args);
    let out = docker(
        &gateway.url,
        &["version", "--format", "{{.Server.Version}}"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("node node2"), "{}", stderr(&out));
    drop(gateway);

    // A gateway from another cluster (another CA) is refused, and refuses the agent.
    let other = Testbed::shared().dir().join(unique_name("other-ca"));
    make_certs(&other, &[("node1", "127.0.0.1")]);
    let mut args = vec!["--agent".to_string(), format!("node1={addr}")];
    args.extend(tls_args(&other, "gateway"));
    let gateway = spawn_gateway_unchecked(&args);
    let out = docker(
        &gateway.url,
        &["version", "--format", "{{.Server.Version}}"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("node node1"), "{}", stderr(&out));
    let log = std::fs::read_to_string(&gateway.log).unwrap_or_default();
    assert!(
        log.to_lowercase().contains("certificate"),
        "the gateway log does not say why:\n{log}"
    );
}

#[test]
fn only_a_gateway_certificate_can_run_a_gateway_and_tls_is_required() {
    testbed::e2e!();
    let certs = certs();
    for (who, expect) in [("ops", "gateway role"), ("node1", "gateway role")] {
        let mut args = vec![
            "--listen".to_string(),
            "tcp://127.0.0.1:1".into(),
            "--agent".into(),
            "node1=127.0.0.1:1".into(),
        ];
        args.extend(tls_args(&certs, who));
        let out = std::process::Command::new(support::binary("busbar-gateway"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{who}");
        assert!(stderr(&out).contains(expect), "{who}: {}", stderr(&out));
    }
    let out = std::process::Command::new(support::binary("busbar-gateway"))
        .args(["--agent", "node1=127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("mutual TLS"), "{}", stderr(&out));
}

#[test]
fn an_agent_killed_mid_stream_ends_the_stream_and_the_gateway_reconnects() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let mut front = Front::remote(host, "node1", &certs());
    let engine = host.docker_url();
    let support::Ticking {
        name, mut follow, ..
    } = support::ticking_logs(&engine, &front.url, "midstream");
    // Kill the agent: the client's stream must end, with an error, within a bounded time.
    front.behind()[0].kill();
    let killed = Instant::now();
    let ended = wait_until(Duration::from_secs(20), || {
        follow.try_wait().ok().flatten().is_some()
    });
    let status = follow.try_wait().ok().flatten();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        ended,
        "docker logs -f still running {:?} after the agent died",
        killed.elapsed()
    );
    assert!(
        !status.unwrap().success(),
        "the stream ended as if it were complete"
    );
    // While the agent is down, calls fail fast with a message naming the node, in words (not
    // rustls' close_notify text and a link to its manual).
    let out = docker(&front.url, &["version", "--format", "{{.Server.Version}}"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("node node1"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("close_notify") && !stderr(&out).contains("docs.rs"),
        "{}",
        stderr(&out)
    );
    // The agent comes back on the same address: the gateway reconnects by itself.
    let addr = front.agent_addr().to_owned();
    let mut restarted = host.command_in(support::binary("busbar-agent"));
    restarted
        .args(["--docker", &engine, "--grpc-listen", &addr])
        .args(tls_args(&certs(), "node1"));
    front.behind()[0] = Process::start_cmd(restarted);
    let back = wait_until(Duration::from_secs(20), || {
        docker(&front.url, &["version", "--format", "{{.Server.Version}}"])
            .status
            .success()
    });
    docker_ok(&engine, &["rm", "-f", &name]);
    assert!(back, "the gateway did not reconnect to the restarted agent");
}

/// A gateway whose agent may be unusable (its `/_ping` then answers an error, which is enough
/// to know it is up).
fn spawn_gateway_unchecked(args: &[String]) -> Process {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::gateway(&args)
}

/// SIGTERM with a gateway stream open: the agent gives open calls `--shutdown-grace`, then
/// closes them and exits; the client's `logs -f` ends with an error. (It used to wait for the
/// stream forever: the client went silent and the agent never stopped.)
#[test]
fn an_agent_told_to_stop_ends_gateway_streams_after_its_grace() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let certs = certs();
    let (mut agent, addr) = Process::agent_in(host, "node1", &certs, &["--shutdown-grace", "2"]);
    let mut args = vec!["--agent".to_string(), format!("node1={addr}")];
    args.extend(tls_args(&certs, "gateway"));
    let gateway = spawn_gateway_unchecked(&args);
    let engine = host.docker_url();
    let support::Ticking {
        name, mut follow, ..
    } = support::ticking_logs(&engine, &gateway.url, "graceful");
    let asked = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status()
        .unwrap();
    let stopped = wait_until(Duration::from_secs(20), || agent.exited().is_some());
    let took = asked.elapsed();
    let ended = wait_until(Duration::from_secs(10), || {
        follow.try_wait().ok().flatten().is_some()
    });
    let status = follow.try_wait().ok().flatten();
    let _ = follow.kill();
    let _ = follow.wait();
    docker_ok(&engine, &["rm", "-f", &name]);
    assert!(stopped, "the agent is still running {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(8),
        "the agent took {took:?} to stop with a 2 s grace"
    );
    assert!(
        ended,
        "docker logs -f still running after the agent stopped"
    );
    assert!(
        !status.unwrap().success(),
        "the stream ended as if it were complete"
    );
}

/// A gateway started with an expired certificate is refused at start (exit 64, naming the
/// file and the date); it used to start and then see every connection reset.
#[test]
fn a_gateway_with_an_expired_certificate_does_not_start() {
    testbed::e2e!();
    let certs = certs();
    let dir = Testbed::shared().dir().join(unique_name("expired"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca-key.pem")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        ca_key,
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gateway");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "busbar-gateway");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("old.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("old-key.pem"), key.serialize_pem()).unwrap();
    let out = std::process::Command::new(support::binary("busbar-gateway"))
        .args([
            "--listen",
            "tcp://127.0.0.1:1",
            "--agent",
            "node1=127.0.0.1:1",
        ])
        .args(["--tls-ca", certs.join("ca.pem").to_str().unwrap()])
        .args(["--tls-cert", dir.join("old.pem").to_str().unwrap()])
        .args(["--tls-key", dir.join("old-key.pem").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("old.pem expired on") && stderr(&out).contains("2021"),
        "{}",
        stderr(&out)
    );
}

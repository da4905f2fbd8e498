//! The gateway <-> agent hop: `docker` CLI -> gateway -> gRPC over mutual TLS -> agent (in its
//! own network namespace, a separate "host") -> engine. The passthrough suite runs across it;
//! then what only the hop has: certificates and roles, and an agent that dies mid-stream.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
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
        let refused = tokio::runtime::Runtime::new().unwrap().block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("node1").unwrap();
            match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
                Err(_) => true,
                // TLS 1.3: the server judges our certificate after the client's handshake ends;
                // its refusal arrives as an alert on the first read.
                Ok(mut s) => {
                    let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                    let mut buf = [0u8; 64];
                    !matches!(tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await, Ok(Ok(n)) if n > 0)
                }
            }
        });
        assert!(
            refused,
            "the agent accepted a {who} certificate as a gateway"
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
    let name = unique_name("midstream");
    let engine = host.docker_url();
    docker_ok(
        &engine,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.2; done",
        ],
    );
    let mut follow = testbed::docker_command(&front.url, &["logs", "-f", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "tick");
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
    // While the agent is down, calls fail fast with a message naming the node.
    let out = docker(&front.url, &["version", "--format", "{{.Server.Version}}"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("node node1"), "{}", stderr(&out));
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

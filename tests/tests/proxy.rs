//! The agent as a plain proxy (no adapter chains): every Docker CLI workflow gives the same
//! result through the agent as directly against the engine (the passthrough suite in
//! `cases/passthrough.rs`), plus what only a standalone agent does. Real dockerd, real `docker`
//! CLI.

mod support;

use std::time::{Duration, Instant};

use support::{Front, Process};
use testbed::{docker, docker_ok, unique_name, Testbed};

/// The shared engine's URL, and an agent in front of it.
fn setup() -> (String, Front) {
    let engine = Testbed::shared().hosts()[0].docker_url();
    let agent = Front::agent(&engine);
    (engine, agent)
}

mod passthrough {
    include!("cases/passthrough.rs");
}

#[test]
fn unix_socket_listener() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique_name("agent")));
    let url = format!("unix://{}", sock.display());
    let _agent = Process::agent(&engine, &["--listen", &url]);
    assert_eq!(
        docker_ok(&url, &["run", "--rm", "busybox", "echo", "via-unix"]),
        "via-unix"
    );
}

#[test]
fn refuses_plain_tcp_beyond_loopback_without_the_flag() {
    testbed::e2e!();
    let out = std::process::Command::new(support::binary("busbar-agent"))
        .args(["--listen", "tcp://0.0.0.0:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.0.0.0:1") && err.contains("--allow-remote-plaintext"),
        "{err}"
    );
}

#[test]
fn engine_outage_gives_a_clear_error_and_the_agent_recovers() {
    testbed::e2e!();
    let bed = Testbed::start(testbed::TestbedSpec {
        hosts: 1,
        netns: true,
        etcd: false,
    })
    .unwrap();
    let host = &bed.hosts()[0];
    let agent = Process::agent(&host.docker_url(), &["--engine-connect-timeout", "2"]);
    assert_eq!(
        docker_ok(&agent.url, &["run", "--rm", "busybox", "echo", "before"]),
        "before"
    );
    host.stop_engine().unwrap();
    let started = Instant::now();
    let out = docker(&agent.url, &["ps"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the Docker engine at {}",
            host.docker_url()
        )),
        "{err}"
    );
    host.start_engine().unwrap();
    assert_eq!(
        docker_ok(&agent.url, &["run", "--rm", "busybox", "echo", "after"]),
        "after"
    );
    assert!(agent.open_fds() > 0, "the agent kept running");
}

//! What an operator sees and does: the access log (one line per request, JSON with
//! `--log-format json`, no colour codes in files), SIGHUP, which reloads a replaced
//! certificate while a `docker logs -f` across the hop goes on, and the `--config` chains and
//! the `--log-level-file` of a standalone agent and of an embedded gateway while a `docker logs -f` through it goes on
//! (an invalid file refused, the old one kept), and an adapter's refusal that
//! is not a Docker error, which the CLI prints as one readable line. Real engine, real agent in its
//! own network namespace, the real `docker` CLI and `openssl s_client`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::adapters::{Answer, FakeAdapter};
use support::{http_raw, make_certs, Front, Process, TempDir};
use testbed::{docker, docker_ok, wait_until, Testbed};

#[test]
fn the_access_log_has_a_json_line_per_request_and_no_colour_codes() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    let gateway = Process::gateway(&["--docker", &engine, "--log-format", "json"]);
    docker_ok(&gateway.url, &["run", "--rm", "busybox", "true"]);
    for i in 0..100 {
        let req = format!(
            "GET /v1.41/containers/json HTTP/1.1\r\nHost: t\r\nX-Request-Id: ops-{i}\r\nConnection: close\r\n\r\n"
        );
        let rsp = http_raw(gateway.port, &req).expect("the gateway answers");
        assert!(
            rsp.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&rsp)
        );
    }
    let ours = |log: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "busbar::access")
            .filter(|v| {
                v["span"]["req.id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("ops-"))
            })
            .count()
    };
    wait_until(Duration::from_secs(5), || ours(&gateway.log_text()) >= 100);
    let log = gateway.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|v| v["target"] == "busbar::access")
        .collect();
    assert_eq!(ours(&log), 100, "one access line per request:\n{log}");
    for v in access.iter().filter(|v| {
        v["span"]["req.id"]
            .as_str()
            .is_some_and(|id| id.starts_with("ops-"))
    }) {
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["span"]["method"], "GET", "{v}");
        assert_eq!(v["span"]["path"], "/containers/json", "{v}");
        assert!(v["bytes"].as_u64().is_some_and(|b| b >= 2), "{v}");
        assert!(v["ms"].as_f64().is_some(), "{v}");
    }
    // The docker CLI's run (--rm: the engine removes it): its create, start and wait are there,
    // by template.
    for (method, path, status) in [
        ("POST", "/containers/create", 201),
        ("POST", "/containers/{id}/start", 204),
        ("POST", "/containers/{id}/wait", 200),
    ] {
        assert!(
            access.iter().any(|v| v["span"]["method"] == method
                && v["span"]["path"] == path
                && v["status"] == status),
            "no access line for {method} {path} {status}:\n{log}"
        );
    }
}

/// The serial number of the certificate `openssl` shows for `pem`, or that a TLS server at
/// `addr` presents (the handshake may then fail for want of a client certificate).
fn serial_of_file(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem)
        .output()
        .expect("openssl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn serial_presented(addr: &str) -> String {
    let shown = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "node1"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl runs");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    use std::io::Write;
    x509.stdin.take().unwrap().write_all(&shown.stdout).unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn sighup_reloads_a_replaced_certificate_while_a_stream_goes_on() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let dir = TempDir::new();
    let san = host.addr().unwrap().to_string();
    make_certs(&dir.0, &[("node1", &san)]);
    let mut front = Front::remote(host, "node1", &dir.0);
    let agent_addr = front.agent_addr().to_owned();
    let before = serial_presented(&agent_addr);
    assert_eq!(before, serial_of_file(&dir.join("node1.pem")));

    let engine = host.docker_url();
    let support::Ticking {
        name,
        mut follow,
        mut lines,
    } = support::ticking_logs(&engine, &front.url, "sighup");

    let issued = Command::new(support::binary("busbarctl"))
        .args(["certs", "issue", "--dir"])
        .arg(&dir.0)
        .args([
            "--name", "node1", "--role", "agent", "--san", &san, "--force",
        ])
        .output()
        .unwrap();
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let renewed = serial_of_file(&dir.join("node1.pem"));
    assert_ne!(renewed, before, "busbarctl issued the same serial");

    let agent = &mut front.behind()[0];
    let hup = Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let reloaded = wait_until(Duration::from_secs(10), || {
        agent.log_text().contains("TLS certificate reloaded")
    });
    assert!(
        reloaded,
        "no reload in the agent's log:\n{}",
        agent.log_tail()
    );
    assert!(agent.exited().is_none(), "SIGHUP ended the agent");
    assert_eq!(
        serial_presented(&agent_addr),
        renewed,
        "new connections show the old certificate"
    );

    // The stream across the hop goes on, and so do new calls.
    for _ in 0..3 {
        assert_eq!(lines.next().unwrap().unwrap(), "tick");
    }
    assert!(docker(&front.url, &["ps", "-q"]).status.success());
    let _ = follow.kill();
    let _ = follow.wait();
    docker_ok(&engine, &["rm", "-f", &name]);
}

/// One pre-hook on `docker create`, by the adapter named `name` at `url`.
fn chains_with(name: &str, url: &str) -> String {
    format!(
        "endpoints:\n  \"POST /*/containers/create\":\n    pre: [{name}]\nadapters:\n  {name}: {url}\n"
    )
}

/// Sends SIGHUP to `busbar` and waits until its log, after what it held before, has a line for
/// which `done` holds; returns the log written since the signal.
fn hangup(busbar: &mut Process, done: impl Fn(&str) -> bool) -> String {
    let before = busbar.log_text().len();
    let hup = Command::new("kill")
        .args(["-HUP", &busbar.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let since = |a: &Process| a.log_text().get(before..).unwrap_or("").to_owned();
    let seen = wait_until(Duration::from_secs(10), || done(&since(busbar)));
    assert!(
        seen,
        "the log after SIGHUP lacks what was expected:\n{}",
        since(busbar)
    );
    assert!(busbar.exited().is_none(), "SIGHUP ended the process");
    since(busbar)
}

#[test]
fn sighup_reloads_the_chains_and_the_log_level_of_an_agent_while_a_stream_goes_on() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    reloads_chains_and_level(&engine, |args| Process::agent(&engine, args));
}

/// The same of the embedded gateway (an agent in-process), which reloads as the agent does.
#[test]
fn sighup_reloads_the_chains_and_the_log_level_of_an_embedded_gateway() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    reloads_chains_and_level(&engine, |args| {
        let mut all = vec!["--docker", &engine];
        all.extend(args);
        Process::gateway(&all)
    });
}

/// Started by `start` with `--config` and `--log-level-file`, a busbar process on `engine`
/// reloads both on SIGHUP (refusing invalid files) while a `docker logs -f` through it goes on.
fn reloads_chains_and_level(engine: &str, start: impl Fn(&[&str]) -> Process) {
    let first = FakeAdapter::start(support::adapters::null);
    let second = FakeAdapter::start(support::adapters::null);
    let dir = TempDir::new();
    let chains = dir.join("adapters.yml");
    let level = dir.join("log-level");
    std::fs::write(&chains, chains_with("first", &first.url)).unwrap();
    std::fs::write(&level, "info\n").unwrap();
    let mut busbar = start(&[
        "--config",
        chains.to_str().unwrap(),
        "--log-level-file",
        level.to_str().unwrap(),
    ]);
    let support::Ticking {
        name,
        mut follow,
        mut lines,
    } = support::ticking_logs(engine, &busbar.url, "hup");
    docker_ok(
        &busbar.url,
        &["create", "--name", &format!("{name}-1"), "busybox"],
    );
    assert_eq!(first.requests("pre-hook").len(), 1);
    assert!(second.calls().is_empty());
    assert!(
        !busbar.log_text().contains(" DEBUG "),
        "debug lines at level info:\n{}",
        busbar.log_tail()
    );

    // The chains: the file now names the second adapter; SIGHUP applies it (the file is also
    // watched, so the change may already be in: then SIGHUP says the chains are unchanged).
    std::fs::write(&chains, chains_with("second", &second.url)).unwrap();
    let log = hangup(&mut busbar, |l| l.contains("SIGHUP: adapter chains"));
    assert!(
        log.contains("SIGHUP: adapter chains reloaded")
            || (busbar.log_text().contains("adapter chains reloaded")
                && log.contains("SIGHUP: adapter chains unchanged")),
        "{log}"
    );
    assert!(log.contains("SIGHUP: log level unchanged"), "{log}");
    docker_ok(
        &busbar.url,
        &["create", "--name", &format!("{name}-2"), "busybox"],
    );
    assert_eq!(
        second.requests("pre-hook").len(),
        1,
        "the new chain did not run"
    );
    assert_eq!(
        first.requests("pre-hook").len(),
        1,
        "the old chain still ran"
    );

    // An invalid file is refused, saying why, and the chains in use stay.
    std::fs::write(
        &chains,
        chains_with("second", &second.url).replace("pre: [second]", "pre: [nope]"),
    )
    .unwrap();
    let log = hangup(&mut busbar, |l| {
        l.contains("SIGHUP: invalid adapter config")
            || l.contains("SIGHUP: adapter config still invalid")
    });
    assert!(log.contains("nope"), "the refusal does not say why:\n{log}");
    docker_ok(
        &busbar.url,
        &["create", "--name", &format!("{name}-3"), "busybox"],
    );
    assert_eq!(
        second.requests("pre-hook").len(),
        2,
        "the last good chain stopped running"
    );

    // The log level: debug lines appear once the file says `debug`; a typo is refused.
    std::fs::write(&level, "debg\n").unwrap();
    let log = hangup(&mut busbar, |l| l.contains("SIGHUP: log level refused"));
    assert!(log.contains("debg"), "{log}");
    std::fs::write(&level, "# raised for a look\ndebug\n").unwrap();
    let log = hangup(&mut busbar, |l| l.contains("SIGHUP: log level changed"));
    assert!(!log.contains(" DEBUG "), "{log}");
    let before = busbar.log_text().len();
    assert!(docker(&busbar.url, &["ps", "-q"]).status.success());
    let debug = wait_until(Duration::from_secs(5), || {
        busbar
            .log_text()
            .get(before..)
            .is_some_and(|l| l.contains(" DEBUG "))
    });
    assert!(
        debug,
        "no debug line after the level changed:\n{}",
        busbar.log_tail()
    );

    // The stream through the process went on across every SIGHUP.
    for _ in 0..3 {
        assert_eq!(lines.next().unwrap().unwrap(), "tick");
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let containers: Vec<String> = (1..=3).map(|i| format!("{name}-{i}")).collect();
    let mut rm = vec!["rm", "-f", &name];
    rm.extend(containers.iter().map(String::as_str));
    docker_ok(engine, &rm);
}

#[test]
fn an_adapter_refusing_with_an_empty_body_reads_as_one_line_in_the_cli() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    let guard = FakeAdapter::start(|_| Answer {
        status: 403,
        body: String::new(),
        delay: Duration::ZERO,
    });
    let dir = TempDir::new();
    let chains = dir.join("adapters.yml");
    std::fs::write(
        &chains,
        format!(
            "endpoints:\n  \"POST /*/containers/create\":\n    pre: [guard]\nadapters:\n  guard: {}\n",
            guard.url
        ),
    )
    .unwrap();
    let gateway = Process::gateway(&["--docker", &engine, "--config", chains.to_str().unwrap()]);
    let out = docker(&gateway.url, &["run", "--rm", "busybox", "true"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error response from daemon: adapter guard refused: 403 Forbidden"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("API version"),
        "the CLI guessed at a version problem: {stderr}"
    );
}

//! Lanes on the gateway <-> agent hop, end to end: `busbar-gateway --hop-lanes on` in front of
//! a `busbar-agent` in its own network namespace (a real engine behind it), and the real
//! `docker` CLI or raw HTTP/1.1 clients in front.
//!
//! - Many clients at once with a slow reader among them: 1,000 requests from 64 clients, all
//!   answered right, while one client reads a 128 MiB archive a little at a time; the
//!   gateway's and the agent's memory stay bounded (flow control reaches the engine).
//! - Versions: a gateway with lanes against an agent without them, and a gateway without
//!   lanes against an agent with them. The agent "without lanes" is a test double of an agent
//!   older than lanes: the hidden `--no-lanes` flag makes its `Lane` rpc answer UNIMPLEMENTED,
//!   as tonic answers for a method a server lacks.
//!
//! The rest of the hop's suites (gateway.rs, cluster.rs, faults.rs, faithful.rs, load.rs, ...)
//! run through lanes too, lanes being the default (`BUSBAR_HOP_LANES=off` runs them on one
//! call per exchange).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::{make_certs, tls_args, Process};
use testbed::{docker_ok, unique_name, Testbed};

/// The shared bed's cluster certificates (removed with the bed).
fn certs() -> PathBuf {
    static CERTS: OnceLock<PathBuf> = OnceLock::new();
    CERTS
        .get_or_init(|| {
            let bed = Testbed::shared();
            let dir = bed.dir().join("lanes-certs");
            let addr = bed.hosts()[0].addr().unwrap().to_string();
            make_certs(&dir, &[("node1", &addr)]);
            dir
        })
        .clone()
}

/// An agent in the shared host's namespace (with `agent_args`), and a gateway in front of it
/// with `--hop-lanes` set to `lanes`.
fn pair(lanes: &str, agent_args: &[&str]) -> (Process, Process) {
    let host = &Testbed::shared().hosts()[0];
    let certs = certs();
    let (agent, addr) = Process::agent_in(host, "node1", &certs, agent_args);
    let mut args = vec![
        "--agent".to_string(),
        format!("node1={addr}"),
        "--hop-lanes".to_string(),
        lanes.to_string(),
    ];
    args.extend(tls_args(&certs, "gateway"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Process::gateway(&args), agent)
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// One HTTP/1.1 request on a kept-alive connection; returns the status and body (both
/// `Content-Length` and chunked answers).
fn call(conn: &mut BufReader<TcpStream>, target: &str) -> Result<(u16, Vec<u8>), String> {
    let req = format!("GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n");
    conn.get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    conn.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).map_err(|e| e.to_string())?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = vec![];
    if chunked {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            let mut chunk = vec![0; n + 2];
            conn.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        conn.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    Ok((status, body))
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    BufReader::new(s)
}

#[test]
fn a_thousand_requests_from_64_clients_with_a_slow_reader_among_them() {
    testbed::e2e!();
    let host = &Testbed::shared().hosts()[0];
    let engine = host.docker_url();
    // A stopped container holding a 128 MiB file, for the slow reader.
    let name = unique_name("lanes-big");
    docker_ok(
        &engine,
        &[
            "run",
            "--name",
            &name,
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/big",
            "bs=1M",
            "count=128",
        ],
    );
    let (gateway, agent) = pair("on", &[]);
    let port = gateway.port;
    let before = (rss_kib(gateway.pid()), rss_kib(agent.pid()));

    // The slow reader: asks for the archive and reads 16 KiB every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let stop = stop.clone();
        let target = format!("/v1.41/containers/{name}/archive?path=/big");
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            write!(s, "GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n").unwrap();
            let mut buf = vec![0u8; 16 * 1024];
            let mut read = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => read += n as u64,
                    Err(e) => panic!("the slow reader's stream broke after {read} bytes: {e}"),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            read
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // 64 clients, 1,000 requests in all: pings and lists, each answer checked.
    let peak = Arc::new(std::sync::Mutex::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        let pids = (gateway.pid(), agent.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let mut p = peak.lock().unwrap();
                p.0 = p.0.max(rss_kib(pids.0));
                p.1 = p.1.max(rss_kib(pids.1));
                drop(p);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let clients: Vec<_> = (0..64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut conn = connect(port);
                let n = if c < 40 { 16 } else { 15 }; // 40×16 + 24×15 = 1,000
                let mut answered = 0;
                for i in 0..n {
                    let target = if i % 2 == 0 {
                        "/_ping"
                    } else {
                        "/v1.41/containers/json?all=1"
                    };
                    let (status, body) =
                        call(&mut conn, target).unwrap_or_else(|e| panic!("{target}: {e}"));
                    assert_eq!(status, 200, "{target}: {}", String::from_utf8_lossy(&body));
                    if target == "/_ping" {
                        assert_eq!(body, b"OK");
                    } else {
                        let list: serde_json::Value = serde_json::from_slice(&body)
                            .unwrap_or_else(|e| panic!("{target}: {e}"));
                        assert!(list.is_array(), "{list}");
                    }
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, 1000);
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let read = slow.join().unwrap();
    assert!(read > 0, "the slow reader got nothing");
    let peak = *peak.lock().unwrap();
    let grown = (
        peak.0.saturating_sub(before.0) / 1024,
        peak.1.saturating_sub(before.1) / 1024,
    );
    println!(
        "slow reader read {} KiB of 128 MiB; RSS gateway {} -> peak {} MiB, agent {} -> peak {} MiB",
        read / 1024,
        before.0 / 1024,
        peak.0 / 1024,
        before.1 / 1024,
        peak.1 / 1024
    );
    // Unbounded buffering would hold most of the 128 MiB the engine can send at once.
    assert!(
        grown.0 < 64 && grown.1 < 64,
        "memory grew by {} MiB (gateway) and {} MiB (agent) with a slow reader",
        grown.0,
        grown.1
    );
    // The gateway still serves, and its log names no failure.
    let mut conn = connect(port);
    assert_eq!(call(&mut conn, "/_ping").unwrap().0, 200);
    docker_ok(&engine, &["rm", "-f", &name]);
}

/// `docker run`, `ps`, `logs` and an interactive exec through `gateway`.
fn docker_works(gateway: &Process) {
    let out = docker_ok(
        &gateway.url,
        &["run", "--rm", "busybox", "echo", "hello through the hop"],
    );
    assert_eq!(out.trim(), "hello through the hop");
    let name = unique_name("lanes-ver");
    docker_ok(
        &gateway.url,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "echo ready; sleep 300",
        ],
    );
    let ps = docker_ok(&gateway.url, &["ps", "--format", "{{.Names}}"]);
    assert!(ps.lines().any(|l| l.ends_with(&name)), "{ps}");
    let logs = docker_ok(&gateway.url, &["logs", &name]);
    assert_eq!(logs.trim(), "ready");
    let exec = docker_ok(&gateway.url, &["exec", &name, "echo", "exec ok"]);
    assert_eq!(exec.trim(), "exec ok");
    docker_ok(&gateway.url, &["rm", "-f", &name]);
}

#[test]
fn a_gateway_with_lanes_talks_to_an_agent_without_them() {
    testbed::e2e!();
    let (gateway, _agent) = pair("on", &["--no-lanes"]);
    docker_works(&gateway);
    let log = gateway.log_text();
    assert!(
        log.contains("the agent has no lanes"),
        "the gateway did not say it fell back:\n{log}"
    );
}

#[test]
fn a_gateway_without_lanes_talks_to_an_agent_with_them() {
    testbed::e2e!();
    let (gateway, _agent) = pair("off", &[]);
    docker_works(&gateway);
    assert!(!gateway.log_text().contains("lanes"));
}

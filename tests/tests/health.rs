//! Node health in the cluster as a busy production cluster meets it: a node that is slow is
//! not a dead node, a restarted gateway never answers as if it had no node, etcd is a source
//! of members and not the judge of health, and a node that stops answering costs one probe
//! timeout, once. Three hosts (network namespaces), an agent on each, real engines, a real
//! etcd where the test needs one, the real `docker` CLI.
//!
//! Wall times on 2 vCPUs, each test alone (bed start included, about 10 s): stuck pull ~35 s,
//! restarted gateway ~25 s, etcd stall ~30 s, agent cut off from etcd ~25 s, gateway started
//! without etcd ~25 s, stopped agent ~20 s.

mod support;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{binary, make_certs, registration_leases, tls_args, Process, TempDir};
use testbed::{docker, docker_ok, free_port, unique_name, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn bed(etcd: bool) -> Testbed {
    Testbed::start(TestbedSpec {
        hosts: 3,
        netns: true,
        etcd,
    })
    .unwrap()
}

/// An agent on each host (node1..3), registered in etcd when the bed has one.
struct Nodes {
    agents: Vec<Process>,
    addrs: Vec<String>,
    certs: TempDir,
}

impl Nodes {
    fn start(bed: &Testbed) -> Nodes {
        let certs = TempDir::new();
        let sans: Vec<(String, String)> = NODES
            .iter()
            .zip(bed.hosts())
            .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
            .collect();
        let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        make_certs(&certs.0, &sans);
        let (mut agents, mut addrs) = (vec![], vec![]);
        for (i, host) in bed.hosts().iter().enumerate() {
            let mut extra: Vec<String> = vec![];
            if let Some(etcd) = host.etcd_url() {
                let state = certs.join(&format!("state-{}", NODES[i]));
                extra.extend([
                    "--etcd".into(),
                    etcd.to_owned(),
                    "--registration-ttl".into(),
                    "2".into(),
                    "--state-dir".into(),
                    state.display().to_string(),
                ]);
            }
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let (agent, addr) = Process::agent_in(host, NODES[i], &certs.0, &extra);
            agents.push(agent);
            addrs.push(addr);
        }
        Nodes {
            agents,
            addrs,
            certs,
        }
    }

    /// The gateway's arguments: the nodes as `--agent` flags (or `--etcd URL` when given),
    /// its certificate, probes every `interval` s with a `timeout` s timeout, then `extra`.
    fn gateway_args(&self, etcd: Option<&str>, probe: (&str, &str), extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![];
        match etcd {
            Some(url) => args.extend(["--etcd".into(), url.to_owned()]),
            None => {
                for (node, addr) in NODES.iter().zip(&self.addrs) {
                    args.extend(["--agent".into(), format!("{node}={addr}")]);
                }
            }
        }
        args.extend(tls_args(&self.certs.0, "gateway"));
        args.extend([
            "--probe-interval".into(),
            probe.0.into(),
            "--probe-timeout".into(),
            probe.1.into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// A gateway (waiting until it answers `/_ping` and sees every node healthy).
    fn gateway(&self, etcd: Option<&str>, probe: (&str, &str)) -> Process {
        let args = self.gateway_args(etcd, probe, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let g = Process::gateway(&args);
        let healthy = wait_until(Duration::from_secs(20), || healthy(&g.url) == 3);
        assert!(healthy, "not every node became healthy:\n{}", info(&g.url));
        g
    }
}

fn info(url: &str) -> String {
    let out = docker(url, &["info"]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// How many nodes `docker info` shows healthy.
fn healthy(url: &str) -> usize {
    info(url).matches("Status: Healthy").count()
}

/// A raw `GET path` on 127.0.0.1:`port`: status, headers (lowercase names) and body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, BTreeMap<String, String>, String)> {
    let raw = support::http_raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // Bodies here are small: a chunked one is one chunk.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split_once("\r\n")
            .map(|(_, rest)| rest.rsplit_once("\r\n0\r\n").map_or(rest, |(b, _)| b))
            .unwrap_or(body)
            .to_owned()
    } else {
        body.to_owned()
    };
    Ok((status, headers, body))
}

/// Polls the gateway's health from its log: lines saying a node went unhealthy or
/// disconnected.
fn downs_in_log(gateway: &Process) -> Vec<String> {
    std::fs::read_to_string(&gateway.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("node unhealthy") || l.contains("node disconnected"))
        .map(str::to_owned)
        .collect()
}

/// Samples `docker info` every 300 ms on a thread while `f` runs; returns what `f` returned
/// and every sample in which some node was not healthy.
fn watching_health<T>(url: &str, f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(Mutex::new(vec![]));
    let watcher = {
        let (stop, bad, url) = (stop.clone(), bad.clone(), url.to_owned());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let info = info(&url);
                if info.matches("Status: Healthy").count() != 3 {
                    bad.lock().unwrap().push(info);
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let bad = bad.lock().unwrap().clone();
    (out, bad)
}

/// A registry address that never answers: a listener in the root namespace, reachable from
/// every host at its link's address, that accepts connections and then says nothing (a
/// registry "that cannot be reached", without sending a packet beyond the bed). Lives as long
/// as the test process.
fn silent_registry(bed: &Testbed) -> String {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = vec![];
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    format!("{}:{port}", bed.hosts()[0].gateway_addr().unwrap())
}

/// During a pull that cannot reach its registry (sent to every node through the gateway),
/// dockerd 20.10's `/info` blocks for seconds: no node goes unhealthy, and `docker ps` keeps
/// working all the while.
#[test]
fn a_pull_that_cannot_reach_its_registry_leaves_every_node_healthy() {
    testbed::e2e!();
    let t0 = Instant::now();
    let bed = bed(false);
    let nodes = Nodes::start(&bed);
    let g = nodes.gateway(None, ("0.5", "1"));
    let registry = silent_registry(&bed);
    let image = format!("{registry}/busbar/never:1");
    let pull = {
        let url = g.url.clone();
        std::thread::spawn(move || {
            let mut cmd = testbed::docker_command(&url, &["pull", &image]);
            testbed::output_with_timeout(&mut cmd, None, Duration::from_secs(25))
        })
    };
    let ((), unhealthy) = watching_health(&g.url, || {
        let until = Instant::now() + Duration::from_secs(12);
        let mut n = 0;
        while Instant::now() < until {
            let ps = docker(&g.url, &["ps", "-a"]);
            assert!(
                ps.status.success(),
                "docker ps failed during the pull: {}",
                String::from_utf8_lossy(&ps.stderr)
            );
            n += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("{n} docker ps during the pull");
    });
    assert!(
        unhealthy.is_empty(),
        "a node was not healthy during the pull:\n{}",
        unhealthy.join("\n---\n")
    );
    assert_eq!(downs_in_log(&g), Vec::<String>::new());
    // The pull itself ends in an error (or is still stuck): either way, it is not the point.
    let _ = pull.join();
    eprintln!("stuck pull test: {:?}", t0.elapsed());
}

/// A gateway restarted while `docker ps -a` is polled in a loop never answers `200 []`, nor a
/// partial list without the failed-nodes header: it waits until it knows its nodes, or says
/// that it is starting (503). Nodes from etcd: the registry too must answer first.
#[test]
fn a_restarted_gateway_never_answers_an_empty_or_silently_partial_list() {
    testbed::e2e!();
    let t0 = Instant::now();
    let bed = bed(true);
    let nodes = Nodes::start(&bed);
    let etcd = bed.etcd().unwrap().to_owned();
    let port = free_port();
    let args = nodes.gateway_args(
        Some(&etcd),
        ("0.5", "1"),
        &["--listen", &format!("tcp://127.0.0.1:{port}")],
    );
    let start = || {
        let mut cmd = Command::new(binary("busbar-gateway"));
        cmd.args(&args);
        Process::start_cmd(cmd)
    };
    let mut g = start();
    let url = format!("tcp://127.0.0.1:{port}");
    assert!(wait_until(Duration::from_secs(20), || healthy(&url) == 3));
    // One container per node.
    let tag = unique_name("restart");
    for node in NODES {
        docker_ok(
            &url,
            &[
                "create",
                "--label",
                &tag,
                "-e",
                &format!("constraint:node=={node}"),
                "busybox",
                "true",
            ],
        );
    }
    let path =
        format!("/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22{tag}%22%5D%7D");
    let (status, _, body) = get(port, &path).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.matches("\"Id\"").count(), 3, "{body}");

    for round in 0..3 {
        g.kill();
        let polled = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (polled, stop, path) = (polled.clone(), stop.clone(), path.clone());
            std::thread::spawn(move || {
                let mut wrong = vec![];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((status, headers, body)) = get(port, &path) else {
                        *polled.lock().unwrap().entry("refused".into()).or_default() += 1;
                        continue;
                    };
                    let seen = body.matches("\"Id\"").count();
                    let marked = headers.contains_key("x-busbar-failed-nodes");
                    let what = match status {
                        200 if seen == 3 => "200 complete".to_owned(),
                        200 if marked => "200 partial, marked".to_owned(),
                        200 => {
                            wrong.push(format!(
                                "200 with {seen} of 3 and no failed-nodes header: {body}"
                            ));
                            "200 WRONG".to_owned()
                        }
                        503 if body.contains("the gateway is starting") => {
                            "503 starting".to_owned()
                        }
                        s => {
                            wrong.push(format!("{s}: {body}"));
                            format!("{s} WRONG")
                        }
                    };
                    *polled.lock().unwrap().entry(what).or_default() += 1;
                }
                wrong
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let restarted = Instant::now();
        g = start();
        let complete = wait_until(Duration::from_secs(10), || {
            polled.lock().unwrap().contains_key("200 complete")
        });
        let known_after = restarted.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let wrong = poller.join().unwrap();
        eprintln!(
            "round {round}: complete list {known_after:?} after the restart; answers {:?}",
            polled.lock().unwrap()
        );
        assert!(
            complete,
            "no complete list after the restart:\n{}",
            g.log_tail()
        );
        assert!(wrong.is_empty(), "wrong answers: {wrong:#?}");
        assert!(
            known_after < Duration::from_secs(3),
            "the gateway took {known_after:?} to know its nodes"
        );
    }
    eprintln!("restart test: {:?}", t0.elapsed());
}

/// The pid of the bed's etcd (found by its data directory, inside the bed's).
fn etcd_pid(bed: &Testbed) -> u32 {
    let dir = bed.dir().display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("etcd"))
            && args.iter().any(|a| a.starts_with(&dir))
        {
            return pid;
        }
    }
    panic!("no etcd process of the bed in {dir}");
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// etcd stalls (SIGSTOP) for longer than the registration TTL: on resume every lease has
/// expired at once. The registry is a source of members, not the judge of health: every node
/// the gateway reaches stays served throughout, and registers again.
#[test]
fn an_etcd_stall_longer_than_the_ttl_keeps_every_reachable_node_served() {
    testbed::e2e!();
    let t0 = Instant::now();
    let bed = bed(true);
    let nodes = Nodes::start(&bed);
    let g = nodes.gateway(Some(bed.etcd().unwrap()), ("0.5", "1"));
    let etcd = etcd_pid(&bed);
    let before = registration_leases(bed.etcd().unwrap(), "/busbar");
    assert_eq!(before.len(), 3, "not every node registered: {before:?}");
    let ((), unhealthy) = watching_health(&g.url, || {
        signal(etcd, "STOP");
        std::thread::sleep(Duration::from_secs(6)); // three TTLs
        signal(etcd, "CONT");
        // Resumed: the leases expire, the agents register again.
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            docker_ok(&g.url, &["ps"]);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    assert!(
        unhealthy.is_empty(),
        "a node was not healthy around the etcd stall:\n{}",
        unhealthy.join("\n---\n")
    );
    // The stall did take the registrations away: etcd holds every node under a new lease
    // (whether the gateway's watch saw the deletions or only the new registrations is a race
    // of no consequence).
    let after = registration_leases(bed.etcd().unwrap(), "/busbar");
    for node in NODES {
        assert!(
            after.get(node).is_some_and(|l| before.get(node) != Some(l)),
            "{node} kept its lease through the stall (before {before:?}, after {after:?})"
        );
    }
    assert_eq!(downs_in_log(&g), Vec::<String>::new());
    // Every node still takes new containers.
    for node in NODES {
        docker_ok(
            &g.url,
            &[
                "run",
                "--rm",
                "-e",
                &format!("constraint:node=={node}"),
                "busybox",
                "true",
            ],
        );
    }
    eprintln!("etcd stall test: {:?}", t0.elapsed());
}

/// An agent whose access to etcd alone is cut loses its registration (the lease expires),
/// yet it still answers the gateway: it stays served.
#[test]
fn an_agent_cut_off_from_etcd_alone_stays_served() {
    testbed::e2e!();
    let t0 = Instant::now();
    let bed = bed(true);
    let nodes = Nodes::start(&bed);
    let g = nodes.gateway(Some(bed.etcd().unwrap()), ("0.5", "1"));
    let host = &bed.hosts()[1];
    let etcd_port = host
        .etcd_url()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .trim_end_matches('/')
        .to_owned();
    let iptables = |op: &str| {
        let out = host
            .command_in("iptables")
            .args([
                op,
                "OUTPUT",
                "-p",
                "tcp",
                "--dport",
                &etcd_port,
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "iptables {op}: {out:?}");
    };
    iptables("-A");
    let registered = |node: &str| {
        let out = support::busbarctl(&["--etcd", bed.etcd().unwrap(), "nodes"]);
        String::from_utf8_lossy(&out.stdout).contains(node)
    };
    let ((), unhealthy) = watching_health(&g.url, || {
        let gone = wait_until(Duration::from_secs(15), || !registered("node2"));
        assert!(gone, "node2's registration did not expire");
        std::thread::sleep(Duration::from_secs(2));
        docker_ok(
            &g.url,
            &[
                "run",
                "--rm",
                "-e",
                "constraint:node==node2",
                "busybox",
                "true",
            ],
        );
    });
    iptables("-D");
    assert!(
        unhealthy.is_empty(),
        "a node was not healthy while node2 was cut off from etcd:\n{}",
        unhealthy.join("\n---\n")
    );
    assert!(
        wait_until(Duration::from_secs(15), || registered("node2")),
        "node2 did not register again"
    );
    eprintln!("agent cut off from etcd test: {:?}", t0.elapsed());
}

/// A gateway started while etcd is down starts (it does not exit), says that it is starting
/// and why, and serves every node once etcd is back.
#[test]
fn a_gateway_started_while_etcd_is_down_serves_once_etcd_is_back() {
    testbed::e2e!();
    let t0 = Instant::now();
    let bed = bed(true);
    let nodes = Nodes::start(&bed);
    bed.stop_etcd().unwrap();
    let args = nodes.gateway_args(Some(bed.etcd().unwrap()), ("0.5", "1"), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut g = Process::gateway(&args);
    let out = docker(&g.url, &["ps"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the gateway is starting") && err.contains("etcd"),
        "{out:?}"
    );
    assert!(
        g.exited().is_none(),
        "the gateway exited:\n{}",
        g.log_tail()
    );
    bed.start_etcd().unwrap();
    let back = Instant::now();
    let served = wait_until(Duration::from_secs(20), || healthy(&g.url) == 3);
    assert!(
        served,
        "not every node served after etcd came back:\n{}",
        info(&g.url)
    );
    eprintln!("nodes served {:?} after etcd was back", back.elapsed());
    docker_ok(&g.url, &["ps"]);
    docker_ok(
        &g.url,
        &[
            "run",
            "--rm",
            "--name",
            &unique_name("named"),
            "busybox",
            "true",
        ],
    );
    eprintln!("gateway without etcd test: {:?}", t0.elapsed());
}

/// A stopped agent (SIGSTOP: its connections stay open, nothing answers) costs `docker ps`
/// about one probe timeout, once: the node is named in the failed-nodes header and not waited
/// for again until a probe finds it back.
#[test]
fn a_stopped_agent_costs_docker_ps_one_probe_timeout_once() {
    testbed::e2e!();
    let t0 = Instant::now();
    let bed = bed(false);
    let nodes = Nodes::start(&bed);
    // Slow probes: the call itself must find the node silent, not the next probe round.
    let g = nodes.gateway(None, ("5", "2"));
    let port = g.port;
    let (status, _, _) = get(port, "/v1.41/containers/json").unwrap();
    assert_eq!(status, 200);
    let agent = nodes.agents[1].pid();
    signal(agent, "STOP");
    let asked = Instant::now();
    let (status, headers, _) = get(port, "/v1.41/containers/json").unwrap();
    let first = asked.elapsed();
    let asked = Instant::now();
    let ps = docker(&g.url, &["ps"]);
    let second = asked.elapsed();
    let (_, headers2, _) = get(port, "/v1.41/containers/json").unwrap();
    signal(agent, "CONT");
    eprintln!("with node2 stopped: ps {first:?}, then {second:?}");
    assert_eq!(status, 200);
    assert!(
        headers
            .get("x-busbar-failed-nodes")
            .is_some_and(|h| h.contains("node2")),
        "{headers:?}"
    );
    assert!(
        headers2
            .get("x-busbar-failed-nodes")
            .is_some_and(|h| h.contains("node2")),
        "{headers2:?}"
    );
    assert!(ps.status.success(), "{ps:?}");
    assert!(
        first < Duration::from_millis(3500),
        "the first ps took {first:?}"
    );
    assert!(
        second < Duration::from_secs(1),
        "the second ps took {second:?}"
    );
    let back = wait_until(Duration::from_secs(15), || healthy(&g.url) == 3);
    assert!(back, "node2 did not come back:\n{}", info(&g.url));
    eprintln!("stopped agent test: {:?}", t0.elapsed());
}

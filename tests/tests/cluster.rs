//! The cluster: three hosts (network namespaces), an agent on each, one gateway in front,
//! driven by the real `docker` CLI, after Swarm classic's acceptance checklist. Placement-sensitive tests
//! get a bed of their own; the others share one.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{make_certs, tls_args, Process, TempDir};
use testbed::{docker, docker_ok, unique_name, wait_until, Testbed, TestbedSpec};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Three agents (node1..3, one per host) and a gateway serving them as one cluster.
struct Cluster {
    gateway: Process,
    agents: Vec<Process>,
    addrs: Vec<String>,
    certs: TempDir,
    engines: Vec<String>,
}

impl Cluster {
    fn start(bed: &Testbed, gateway_args: &[&str]) -> Cluster {
        let certs = cluster_certs(bed);
        let hosts = bed.hosts();
        let mut agents = vec![];
        let mut addrs = vec![];
        for (i, host) in hosts.iter().enumerate() {
            let zone = if i == 0 { "zone=a" } else { "zone=b" };
            let (agent, addr) = Process::agent_in(host, NODES[i], &certs.0, &["--label", zone]);
            agents.push(agent);
            addrs.push(addr);
        }
        let mut args: Vec<String> = vec![];
        for (node, addr) in NODES.iter().zip(&addrs) {
            args.extend(["--agent".into(), format!("{node}={addr}")]);
        }
        args.extend(tls_args(&certs.0, "gateway"));
        // Fast probes, unless the test sets its own interval.
        if !gateway_args.contains(&"--probe-interval") {
            args.extend(["--probe-interval".into(), "0.5".into()]);
        }
        args.extend(["--probe-timeout".into(), "1".into()]);
        args.extend(gateway_args.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gateway = Process::gateway(&args);
        let engines = hosts.iter().map(|h| h.docker_url()).collect();
        let c = Cluster {
            gateway,
            agents,
            addrs,
            certs,
            engines,
        };
        let all_healthy = wait_until(Duration::from_secs(20), || {
            c.info().matches("Healthy").count() == 3
        });
        assert!(all_healthy, "not every node became healthy:\n{}", c.info());
        c
    }

    fn info(&self) -> String {
        let out = docker(&self.gateway.url, &["info"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Starts agent `i` again (after a kill), as it was started.
    fn restart_agent(&mut self, bed: &Testbed, i: usize) {
        let host = &bed.hosts()[i];
        let zone = if i == 0 { "zone=a" } else { "zone=b" };
        let mut cmd = host.command_in(support::binary("busbar-agent"));
        cmd.args([
            "--docker",
            &host.docker_url(),
            "--grpc-listen",
            &self.addrs[i],
            "--label",
            zone,
        ])
        .args(tls_args(&self.certs.0, NODES[i]));
        self.agents[i] = Process::start_cmd(cmd);
    }

    /// The node a container runs on, from the gateway's inspect.
    fn node_of(&self, container: &str) -> String {
        docker_ok(
            &self.gateway.url,
            &["inspect", "-f", "{{.Node.Name}}", container],
        )
    }
}

/// Three agents registered in etcd and two gateways that find them there.
struct EtcdCluster {
    gateways: Vec<Process>,
    agents: Vec<Process>,
    _certs: TempDir,
}

impl EtcdCluster {
    fn start(bed: &Testbed) -> EtcdCluster {
        let certs = cluster_certs(bed);
        let hosts = bed.hosts();
        let agents = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let etcd = host
                    .etcd_url()
                    .expect("etcd reachable from the host")
                    .to_owned();
                let state = certs.join(&format!("state-{}", NODES[i]));
                let state = state.to_str().unwrap();
                Process::agent_in(
                    host,
                    NODES[i],
                    &certs.0,
                    &[
                        "--etcd",
                        &etcd,
                        "--registration-ttl",
                        "2",
                        "--state-dir",
                        state,
                    ],
                )
                .0
            })
            .collect();
        let gateways = (0..2)
            .map(|_| {
                let mut args: Vec<String> = vec!["--etcd".into(), bed.etcd().unwrap().to_owned()];
                args.extend(tls_args(&certs.0, "gateway"));
                args.extend([
                    "--probe-interval".into(),
                    "0.5".into(),
                    "--probe-timeout".into(),
                    "1".into(),
                ]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Process::gateway(&args)
            })
            .collect();
        let c = EtcdCluster {
            gateways,
            agents,
            _certs: certs,
        };
        for g in &c.gateways {
            let ok = wait_until(Duration::from_secs(20), || {
                info_of(&g.url).matches("Status: Healthy").count() == 3
            });
            assert!(
                ok,
                "gateway {} does not see 3 healthy nodes:\n{}",
                g.url,
                info_of(&g.url)
            );
        }
        c
    }
}

fn info_of(url: &str) -> String {
    let out = docker(url, &["info"]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn three_hosts_etcd() -> TestbedSpec {
    TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: true,
    }
}

#[test]
fn etcd_registry_two_gateways_one_name_winner_and_a_node_that_leaves() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts_etcd()).unwrap();
    let mut c = EtcdCluster::start(&bed);
    // Concurrent `run --name x` through two gateways: exactly one winner.
    let name = unique_name("shared");
    let runs: Vec<_> = (0..6)
        .map(|i| {
            let (url, name) = (c.gateways[i % 2].url.clone(), name.clone());
            std::thread::spawn(move || {
                docker(
                    &url,
                    &["run", "-d", "--name", &name, "busybox", "sleep", "60"],
                )
            })
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        outs.iter().filter(|o| o.status.success()).count(),
        1,
        "{outs:?}"
    );
    assert!(
        outs.iter()
            .filter(|o| !o.status.success())
            .all(|o| String::from_utf8_lossy(&o.stderr).contains("Conflict")),
        "{outs:?}"
    );
    // Both gateways serve the same view.
    let ps = |url: &str| {
        docker_ok(
            url,
            &[
                "ps",
                "--format",
                "{{.Names}}",
                "--filter",
                &format!("name={name}"),
            ],
        )
    };
    assert_eq!(ps(&c.gateways[0].url), ps(&c.gateways[1].url));
    // A reservation left behind by a gateway that died mid-create (an hour old, for node1,
    // which has no such container) no longer blocks the name: the claim asks node1 and frees
    // it. (It used to be a false "already in use on node1" for two minutes.)
    let stale = unique_name("stale");
    let put = |name: &str, node: &str| {
        let reserved_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3600;
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", bed.etcd().unwrap(), "put"])
            .arg(format!("/busbar/names/{name}"))
            .arg(format!(
                r#"{{"node":"{node}","reserved_at":{reserved_at}}}"#
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    put(&stale, "node1");
    assert_eq!(
        docker_ok(
            &c.gateways[0].url,
            &["run", "--rm", "--name", &stale, "busybox", "echo", "freed"]
        ),
        "freed"
    );
    // One whose node does hold a container of that name is the container's conflict, named.
    let holder = docker_ok(
        &c.gateways[0].url,
        &["inspect", "--format", "{{.Node.Name}}", &name],
    );
    put(&name, &holder);
    let out = docker(
        &c.gateways[1].url,
        &["run", "-d", "--name", &name, "busybox", "true"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Conflict") && err.contains(&format!("on node {holder}")),
        "{err}"
    );
    // An agent that dies: unhealthy at once (probes), disconnected when its lease expires.
    c.agents[2].kill();
    let gone = wait_until(Duration::from_secs(15), || {
        info_of(&c.gateways[0].url).contains("Status: Disconnected")
    });
    assert!(
        gone,
        "node3 not disconnected:\n{}",
        info_of(&c.gateways[0].url)
    );
    // The others keep serving.
    assert_eq!(
        docker_ok(
            &c.gateways[1].url,
            &["run", "--rm", "busybox", "echo", "still-up"]
        ),
        "still-up"
    );
}

/// A cluster CA with an agent certificate per node (its host's address as SAN) and a gateway's.
fn cluster_certs(bed: &Testbed) -> TempDir {
    let certs = TempDir::new();
    let sans: Vec<(String, String)> = NODES
        .iter()
        .zip(bed.hosts())
        .map(|(n, h)| (n.to_string(), h.addr().unwrap().to_string()))
        .collect();
    let sans: Vec<(&str, &str)> = sans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    make_certs(&certs.0, &sans);
    certs
}

fn three_hosts() -> TestbedSpec {
    TestbedSpec {
        hosts: 3,
        netns: true,
        etcd: false,
    }
}

#[test]
fn info_lists_three_healthy_nodes_with_their_labels() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &[]);
    let info = c.info();
    assert!(info.contains("Nodes: 3"), "{info}");
    for node in NODES {
        assert!(info.contains(node), "{node} missing:\n{info}");
    }
    assert!(info.contains("zone=a") && info.contains("zone=b"), "{info}");
    let fmt = docker_ok(
        &c.gateway.url,
        &["info", "--format", "{{.NCPU}} {{.ServerVersion}}"],
    );
    assert!(fmt.contains("busbar/"), "{fmt}");
}

#[test]
fn nine_runs_spread_three_three_three_and_constraints_pin() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &[]);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..9 {
        let name = format!("spread{i}");
        docker_ok(
            &c.gateway.url,
            &["run", "-d", "--name", &name, "busybox", "sleep", "300"],
        );
        *per_node.entry(c.node_of(&name)).or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [3, 3, 3],
        "{per_node:?}"
    );
    // `ps` shows them all, node-qualified.
    let ps = docker_ok(&c.gateway.url, &["ps", "--format", "{{.Names}}"]);
    for node in NODES {
        assert_eq!(
            ps.lines()
                .filter(|l| l.starts_with(&format!("{node}/spread")))
                .count(),
            3,
            "{ps}"
        );
    }
    let only2 = docker_ok(
        &c.gateway.url,
        &["ps", "--filter", "node=node2", "--format", "{{.Names}}"],
    );
    assert_eq!(only2.lines().count(), 3, "{only2}");
    // Constraints: on a node name, on an agent label, and an impossible one.
    docker_ok(
        &c.gateway.url,
        &[
            "run",
            "-d",
            "--name",
            "pinned",
            "-e",
            "constraint:node==node2",
            "busybox",
            "sleep",
            "300",
        ],
    );
    assert_eq!(c.node_of("pinned"), "node2");
    assert!(docker_ok(&c.engines[1], &["ps", "--format", "{{.Names}}"])
        .lines()
        .any(|l| l == "pinned"));
    docker_ok(
        &c.gateway.url,
        &[
            "run",
            "-d",
            "--name",
            "zoned",
            "-e",
            "constraint:zone==a",
            "busybox",
            "sleep",
            "300",
        ],
    );
    assert_eq!(c.node_of("zoned"), "node1");
    let out = docker(
        &c.gateway.url,
        &[
            "run",
            "-d",
            "--name",
            "nowhere",
            "-e",
            "constraint:node==node9",
            "busybox",
            "true",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node==node9"), "{err}");
    assert!(
        docker_ok(
            &c.gateway.url,
            &["ps", "-a", "-q", "--filter", "name=nowhere"]
        )
        .is_empty(),
        "something was created"
    );
}

/// `docker info` answers from the probes' documents, yet a change made through the gateway
/// shows at once (issue #5): the probes here are 30 s apart, so without the gateway marking a
/// node it changed stale, every count below would still be the one before the change.
#[test]
fn info_counts_are_exact_right_after_changes_through_the_gateway() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &["--probe-interval", "30"]);
    let g = &c.gateway.url;
    let totals = || -> [i64; 3] {
        let out = docker_ok(
            g,
            &[
                "info",
                "--format",
                "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}}",
            ],
        );
        let n: Vec<i64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
        [n[0], n[1], n[2]]
    };
    // A line of node2's block: `└ Containers: N (R Running, P Paused, S Stopped)`, ...
    let node2_line = |field: &str| -> String {
        let info = c.info();
        let block = info
            .lines()
            .skip_while(|l| l.trim_start() != format!("node2: {}", c.addrs[1]))
            .skip(1);
        let line = block
            .take_while(|l| l.contains('└'))
            .find(|l| l.contains(&format!("└ {field}:")))
            .map(str::to_owned);
        line.unwrap_or_else(|| panic!("no {field} in node2's block:\n{info}"))
            .split_once(&format!("{field}:"))
            .unwrap()
            .1
            .trim()
            .to_owned()
    };
    let on_node2 = || node2_line("Containers");
    // `└ Reserved CPUs: 0.5 / 2` and `└ Reserved Memory: 64 MiB / 1.9 GiB`: the reserved part.
    let reserved = || {
        let part = |field: &str| node2_line(field).split(" / ").next().unwrap().to_owned();
        (part("Reserved CPUs"), part("Reserved Memory"))
    };
    let [all, running, stopped] = totals();
    assert_eq!(on_node2(), "0 (0 Running, 0 Paused, 0 Stopped)");
    assert_eq!(reserved(), ("0".to_owned(), "0 B".to_owned()));

    docker_ok(
        g,
        &[
            "run",
            "-d",
            "--name",
            "fresh-up",
            "-e",
            "constraint:node==node2",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "busybox",
            "sleep",
            "300",
        ],
    );
    assert_eq!(totals(), [all + 1, running + 1, stopped]);
    assert_eq!(on_node2(), "1 (1 Running, 0 Paused, 0 Stopped)");
    // What the container reserves shows on its node at once (as Swarm showed it).
    assert_eq!(reserved(), ("0.5".to_owned(), "64 MiB".to_owned()));
    // In the foreground: the container has exited when `docker run` returns.
    docker_ok(
        g,
        &[
            "run",
            "--name",
            "fresh-done",
            "-e",
            "constraint:node==node2",
            "busybox",
            "true",
        ],
    );
    assert_eq!(totals(), [all + 2, running + 1, stopped + 1]);
    docker_ok(g, &["stop", "-t", "1", "fresh-up"]);
    assert_eq!(totals(), [all + 2, running, stopped + 2]);
    assert_eq!(on_node2(), "2 (0 Running, 0 Paused, 2 Stopped)");
    docker_ok(g, &["rm", "fresh-up", "fresh-done"]);
    assert_eq!(totals(), [all, running, stopped]);
    assert_eq!(on_node2(), "0 (0 Running, 0 Paused, 0 Stopped)");
    assert_eq!(reserved(), ("0".to_owned(), "0 B".to_owned()));
}

#[test]
fn a_container_on_another_node_is_fully_usable() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &[]);
    let g = &c.gateway.url;
    let id = docker_ok(
        g,
        &[
            "run",
            "-d",
            "-i",
            "--name",
            "far",
            "-e",
            "constraint:node==node3",
            "busybox",
            "sh",
            "-c",
            "echo started; while read l; do echo got:$l; done",
        ],
    );
    assert_eq!(c.node_of("far"), "node3");
    // inspect by name, short ID, full ID, and node/name.
    for reference in ["far", &id[..12], &id, "node3/far"] {
        assert_eq!(
            docker_ok(g, &["inspect", "-f", "{{.Id}}", reference]),
            id,
            "{reference}"
        );
    }
    assert!(wait_until(Duration::from_secs(10), || docker_ok(
        g,
        &["logs", "far"]
    ) == "started"));
    assert_eq!(docker_ok(g, &["exec", "far", "echo", "exec-ok"]), "exec-ok");
    let out = testbed::docker_with_stdin(g, &["exec", "-i", "far", "cat"], b"piped\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n");
    // attach: a line in, its echo out.
    let mut attach = testbed::docker_command(g, &["attach", "far"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(attach.stdin.as_mut().unwrap(), "hello").unwrap();
    let mut lines = BufReader::new(attach.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "got:hello");
    let _ = attach.kill();
    let _ = attach.wait();
    docker_ok(g, &["stop", "-t", "1", "far"]);
    assert_eq!(
        docker_ok(
            &c.engines[2],
            &["inspect", "-f", "{{.State.Running}}", "far"]
        ),
        "false"
    );
    docker_ok(g, &["rm", "far"]);
    assert!(docker_ok(&c.engines[2], &["ps", "-aq", "--filter", "name=far"]).is_empty());
    let out = docker(g, &["inspect", "far"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such"),
        "{out:?}"
    );
}

#[test]
fn events_stream_from_every_node_tagged_with_it() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &[]);
    let mut events = testbed::docker_command(
        &c.gateway.url,
        &[
            "events",
            "--filter",
            "event=start",
            "--format",
            "{{.Actor.Attributes.name}} {{index .Actor.Attributes \"node.name\"}}",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let rx = support::line_channel(events.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(700));
    docker_ok(
        &c.gateway.url,
        &[
            "run",
            "-d",
            "--name",
            "ev1",
            "-e",
            "constraint:node==node1",
            "busybox",
            "true",
        ],
    );
    docker_ok(
        &c.gateway.url,
        &[
            "run",
            "-d",
            "--name",
            "ev3",
            "-e",
            "constraint:node==node3",
            "busybox",
            "true",
        ],
    );
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 && Instant::now() < deadline {
        if let Ok((line, _)) = rx.recv_timeout(Duration::from_secs(1)) {
            seen.push(line);
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    seen.sort();
    assert_eq!(seen, ["ev1 node1", "ev3 node3"]);
}

/// `docker events` through the gateway loses nothing when a node's agent restarts: the
/// gateway follows the node again once it is healthy, from its last event, and the engine
/// replays what happened meanwhile (here a container started behind the gateway's back),
/// each event once.
#[test]
fn docker_events_loses_no_event_of_a_node_whose_agent_restarts() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let mut c = Cluster::start(&bed, &[]);
    let mut events = testbed::docker_command(
        &c.gateway.url,
        &[
            "events",
            "--filter",
            "event=start",
            "--format",
            "{{.Actor.Attributes.name}} {{index .Actor.Attributes \"node.name\"}}",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let rx = support::line_channel(events.stdout.take().unwrap());
    let mut seen = vec![];
    let wait_for = |line: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !seen.iter().any(|l| l == line) && Instant::now() < deadline {
            if let Ok((l, _)) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(l);
            }
        }
        assert!(seen.iter().any(|l| l == line), "no {line:?} in {seen:?}");
    };
    std::thread::sleep(Duration::from_millis(700));
    let on_node2 = ["-e", "constraint:node==node2", "busybox", "true"];
    docker_ok(
        &c.gateway.url,
        &[&["run", "-d", "--name", "before"][..], &on_node2].concat(),
    );
    wait_for("before node2", &mut seen);
    c.agents[1].kill();
    assert!(
        wait_until(Duration::from_secs(10), || c.info().contains("Unhealthy")),
        "node2 not reported unhealthy:\n{}",
        c.info()
    );
    docker_ok(
        &c.engines[1],
        &["run", "-d", "--name", "during", "busybox", "true"],
    );
    c.restart_agent(&bed, 1);
    assert!(
        wait_until(Duration::from_secs(20), || !c.info().contains("Unhealthy")),
        "node2 did not come back:\n{}",
        c.info()
    );
    wait_for("during node2", &mut seen);
    docker_ok(
        &c.gateway.url,
        &[&["run", "-d", "--name", "after"][..], &on_node2].concat(),
    );
    wait_for("after node2", &mut seen);
    // Nothing twice (the replay starts at the last event sent).
    std::thread::sleep(Duration::from_secs(1));
    while let Ok((l, _)) = rx.try_recv() {
        seen.push(l);
    }
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(seen, ["before node2", "during node2", "after node2"]);
}

#[test]
fn concurrent_runs_with_one_name_have_exactly_one_winner() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &[]);
    let name = unique_name("dup");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (url, name) = (c.gateway.url.clone(), name.clone());
            std::thread::spawn(move || {
                docker(
                    &url,
                    &["run", "-d", "--name", &name, "busybox", "sleep", "60"],
                )
            })
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        outs.iter().filter(|o| o.status.success()).count(),
        1,
        "{outs:?}"
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Conflict"),
            "{o:?}"
        );
    }
    let total: usize = c
        .engines
        .iter()
        .map(|e| {
            docker_ok(e, &["ps", "-aq", "--filter", &format!("name=^{name}$")])
                .lines()
                .count()
        })
        .sum();
    assert_eq!(total, 1);
}

#[test]
fn a_killed_agent_turns_unhealthy_and_comes_back() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let mut c = Cluster::start(&bed, &[]);
    c.agents[1].kill();
    let killed = Instant::now();
    let unhealthy = wait_until(Duration::from_secs(10), || c.info().contains("Unhealthy"));
    assert!(unhealthy, "node2 not reported unhealthy:\n{}", c.info());
    assert!(killed.elapsed() < Duration::from_secs(10));
    // The others keep serving, and new containers avoid the dead node.
    for i in 0..3 {
        let name = format!("while-down{i}");
        docker_ok(
            &c.gateway.url,
            &["run", "-d", "--name", &name, "busybox", "sleep", "60"],
        );
        assert_ne!(c.node_of(&name), "node2");
    }
    c.restart_agent(&bed, 1);
    let back = wait_until(Duration::from_secs(20), || {
        c.info().matches("Healthy").count() == 3 && !c.info().contains("Unhealthy")
    });
    assert!(back, "node2 did not come back:\n{}", c.info());
}

#[test]
fn images_load_everywhere_tag_and_rmi_on_every_holder_build_where_constrained() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &[]);
    let g = &c.gateway.url;
    let dir = TempDir::new();
    // An image only node1 has, saved to a tar.
    let tag = format!("{}:v1", unique_name("img"));
    docker_ok(&c.engines[0], &["tag", "busybox", &tag]);
    let tar = dir.join("img.tar");
    docker_ok(&c.engines[0], &["save", "-o", tar.to_str().unwrap(), &tag]);
    docker_ok(&c.engines[0], &["rmi", &tag]);
    // load through the gateway: every node gets it.
    docker_ok(g, &["load", "-i", tar.to_str().unwrap()]);
    for engine in &c.engines {
        assert!(
            docker(engine, &["image", "inspect", &tag]).status.success(),
            "{engine} lacks {tag}"
        );
    }
    // `docker images` groups the three copies into one entry.
    let listed = docker_ok(
        g,
        &[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &format!("reference={tag}"),
        ],
    );
    assert_eq!(listed, tag);
    // tag and rmi reach every holder.
    let second = format!("{tag}-again");
    docker_ok(g, &["tag", &tag, &second]);
    assert!(c
        .engines
        .iter()
        .all(|e| docker(e, &["image", "inspect", &second]).status.success()));
    docker_ok(g, &["rmi", &second, &tag]);
    assert!(c
        .engines
        .iter()
        .all(|e| !docker(e, &["image", "inspect", &tag]).status.success()));
    // build with a node constraint: the image exists on that node only.
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nRUN echo built > /built\n",
    )
    .unwrap();
    let built = format!("{}:built", unique_name("img"));
    let mut build = testbed::docker_command(
        g,
        &[
            "build",
            "-q",
            "-t",
            &built,
            "--build-arg",
            "constraint:node==node3",
            dir.0.to_str().unwrap(),
        ],
    );
    build.env("DOCKER_BUILDKIT", "0");
    let out = testbed::output_with_timeout(&mut build, None, Duration::from_secs(120)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let holders: Vec<bool> = c
        .engines
        .iter()
        .map(|e| docker(e, &["image", "inspect", &built]).status.success())
        .collect();
    assert_eq!(holders, [false, false, true]);
}

#[test]
fn containers_on_a_user_network_run_where_the_network_is() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &[]);
    let g = &c.gateway.url;
    let net = unique_name("net");
    docker_ok(g, &["network", "create", &net]);
    let holders: Vec<usize> = (0..3)
        .filter(|&i| {
            docker(&c.engines[i], &["network", "inspect", &net])
                .status
                .success()
        })
        .collect();
    assert_eq!(holders.len(), 1, "the network should live on one node");
    let home = NODES[holders[0]];
    // Spread would put these on three different nodes; the network pins them to its node.
    for i in 0..3 {
        let name = format!("{net}-c{i}");
        docker_ok(
            g,
            &[
                "run", "-d", "--name", &name, "--net", &net, "busybox", "sleep", "60",
            ],
        );
        assert_eq!(c.node_of(&name), home);
    }
    // node/network pins explicitly; an unknown network is refused before anything is created.
    docker_ok(
        g,
        &[
            "run",
            "-d",
            "--name",
            &format!("{net}-pinned"),
            "--net",
            &format!("{home}/{net}"),
            "busybox",
            "sleep",
            "60",
        ],
    );
    assert_eq!(c.node_of(&format!("{net}-pinned")), home);
    let out = docker(
        g,
        &[
            "run",
            "-d",
            "--name",
            &format!("{net}-lost"),
            "--net",
            "no-such-net",
            "busybox",
            "true",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("network no-such-net not found"),
        "{out:?}"
    );
}

/// The client's mistakes are the client's 4xx through the cluster, as on one engine: an
/// invalid container name, a malformed `filters`, a broken chunked body. (They came back as
/// 503 "cannot reserve the name", 503 "no node could list its containers" and a 502 blaming
/// the engine.)
#[test]
fn client_mistakes_are_client_errors_through_the_cluster() {
    testbed::e2e!();
    let bed = Testbed::start(three_hosts()).unwrap();
    let c = Cluster::start(&bed, &[]);
    let status_of = |raw: &[u8]| -> (u16, String) {
        let text = String::from_utf8_lossy(raw).into_owned();
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (code, text)
    };
    let body = r#"{"Image":"busybox"}"#;
    let (code, text) = status_of(
        &support::http_raw(
            c.gateway.port,
            &format!("POST /v1.41/containers/create?name=%00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        )
        .unwrap(),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("Invalid container name"), "{text}");

    // A malformed filter: what one engine answers (dockerd 20.10: a 500 with the JSON
    // parser's words), the cluster answers too, not an outage.
    let list = "GET /v1.41/containers/json?filters=notjson HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (direct, direct_text) = status_of(&engine_raw(&c.engines[0], list));
    let (code, text) = status_of(&support::http_raw(c.gateway.port, list).unwrap());
    assert_eq!(code, direct, "{text}\ndirect:\n{direct_text}");
    let message = |t: &str| t.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_owned());
    assert_eq!(message(&text), message(&direct_text));

    let (code, text) = status_of(
        &support::http_raw(
            c.gateway.port,
            "POST /v1.41/images/load HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\nbroken\r\n",
        )
        .unwrap(),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("client's request body"), "{text}");
}

/// Raw HTTP/1.1 bytes to an engine's unix socket (`unix:///...`), its answer to the end.
fn engine_raw(engine: &str, request: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let path = engine.strip_prefix("unix://").expect("a unix engine");
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = vec![];
    let _ = s.read_to_end(&mut out);
    out
}
